"""One processed image/cloud pair of the calibration node, as text key-values and back.

The node publishes a `FrameRecord` per processed pair on `~/frame_estimates` (a
`diagnostic_msgs/DiagnosticArray` with one status whose values are `to_values()`), so a
recorder (`nclr-bag eval --live`) sees every per-frame estimate, rejected ones included.
`nclr-bag eval` builds the same records offline. Floats are written with `repr`, which reads
back to the identical double, so live and offline records compare exactly.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

STATUS_SUFFIX = ": frame estimate"


def _matrix_text(T: np.ndarray | None) -> str:
    if T is None:
        return ""
    return " ".join(repr(float(v)) for v in np.asarray(T, dtype=np.float64).reshape(16))


def _matrix(text: str, key: str) -> np.ndarray | None:
    if not text:
        return None
    values = [float(v) for v in text.split()]
    if len(values) != 16:
        raise ValueError(f"frame record {key}: expected 16 numbers, got {len(values)}")
    return np.asarray(values, dtype=np.float64).reshape(4, 4)


def _bool(text: str, key: str) -> bool:
    if text not in ("True", "False"):
        raise ValueError(f"frame record {key}: expected True or False, got {text!r}")
    return text == "True"


@dataclass(frozen=True)
class FrameRecord:
    """What the node made of one pair.

    image_stamp, cloud_stamp: header stamps of the pair, seconds.
    valid: the Calibrator's estimate passed its checks; accepted: it also entered the
        temporal estimator; reason: why not ("" when accepted).
    num_inliers, reprojection_error_px (RMS over inliers, NaN without a pose),
        overlap_ratio (NaN when the frame could not be calibrated).
    T_cam_lidar: (4, 4) per-frame estimate (identity when no pose was solved; None when the
        input could not be calibrated at all).
    aggregate: (4, 4) temporal estimate after this frame, None before there is one.
    latency_s: time from the pair forming to its estimate, seconds.
    """

    image_stamp: float
    cloud_stamp: float
    valid: bool
    accepted: bool
    reason: str
    num_inliers: int
    reprojection_error_px: float
    overlap_ratio: float
    T_cam_lidar: np.ndarray | None
    aggregate: np.ndarray | None
    latency_s: float

    def to_values(self) -> dict[str, str]:
        """Text key-values (exact: floats as repr)."""
        return {
            "image_stamp": repr(float(self.image_stamp)),
            "cloud_stamp": repr(float(self.cloud_stamp)),
            "valid": str(bool(self.valid)),
            "accepted": str(bool(self.accepted)),
            "reason": self.reason,
            "num_inliers": str(int(self.num_inliers)),
            "reprojection_error_px": repr(float(self.reprojection_error_px)),
            "overlap_ratio": repr(float(self.overlap_ratio)),
            "T_cam_lidar": _matrix_text(self.T_cam_lidar),
            "aggregate": _matrix_text(self.aggregate),
            "latency_s": repr(float(self.latency_s)),
        }

    @classmethod
    def from_values(cls, values: Mapping[str, str]) -> FrameRecord:
        """Parse `to_values()` output; ValueError naming a missing or malformed key."""
        missing = [k for k in cls.__dataclass_fields__ if k not in values]
        if missing:
            raise ValueError(f"frame record lacks {', '.join(missing)}")
        return cls(
            image_stamp=float(values["image_stamp"]),
            cloud_stamp=float(values["cloud_stamp"]),
            valid=_bool(values["valid"], "valid"),
            accepted=_bool(values["accepted"], "accepted"),
            reason=values["reason"],
            num_inliers=int(values["num_inliers"]),
            reprojection_error_px=float(values["reprojection_error_px"]),
            overlap_ratio=float(values["overlap_ratio"]),
            T_cam_lidar=_matrix(values["T_cam_lidar"], "T_cam_lidar"),
            aggregate=_matrix(values["aggregate"], "aggregate"),
            latency_s=float(values["latency_s"]),
        )

    @classmethod
    def input_error(cls, image_stamp: float, cloud_stamp: float, reason: str,
                    aggregate: np.ndarray | None, latency_s: float) -> FrameRecord:
        """A pair the Calibrator refused (bad input): no estimate."""
        return cls(image_stamp, cloud_stamp, False, False, reason, 0, math.nan, math.nan,
                   None, aggregate, latency_s)
