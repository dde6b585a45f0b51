"""What online calibration reports: one `FrameRecord` per processed pair and the current
`CalibrationEstimate` of each stage.

A `FrameRecord` also travels as text key-values (`to_values` / `from_values`): the node
publishes it on `~/frame_estimates` and `nclr-bag eval` rebuilds the same records offline.
Floats are written with `repr`, which reads back to the identical double, so live and offline
records compare exactly. Nothing is an identity sentinel: a missing pose is `None`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nclr_core.online.pose import PoseEstimate


@dataclass(frozen=True)
class CalibrationEstimate:
    """A stage's current estimate of `T_cam_lidar`.

    solved: a pose exists (`pose` is not None); otherwise `reason` says why not.
    stage: the stage that produced it ("global", "guided", "joint", "refine").
    num_frames: frames it rests on. warnings: e.g. a poorly constrained direction.
    """

    solved: bool
    pose: PoseEstimate | None
    stage: str
    num_frames: int = 0
    reason: str = ""
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.solved != (self.pose is not None):
            raise ValueError("an estimate has a pose exactly when it is solved")

    @classmethod
    def unsolved(cls, stage: str, reason: str, num_frames: int = 0) -> CalibrationEstimate:
        return cls(False, None, stage, num_frames, reason)

    @property
    def T_cam_lidar(self) -> np.ndarray | None:
        """(4, 4) or None."""
        return None if self.pose is None else self.pose.T_cam_lidar

    def as_values(self) -> dict[str, Any]:
        """Plain key-values: stage, frames, per-axis sigmas (camera frame), warnings (for
        diagnostics and calibration files); empty when not solved."""
        if self.pose is None:
            return {}
        values: dict[str, Any] = {"estimate_stage": self.stage,
                                  "estimate_frames": self.num_frames}
        for axis, deg, m in zip("xyz", self.pose.sigma_rot_deg, self.pose.sigma_trans_m,
                                strict=True):
            values[f"sigma_rot_{axis}_deg"] = float(deg)
            values[f"sigma_trans_{axis}_m"] = float(m)
        if self.warnings:
            values["estimate_warnings"] = "; ".join(self.warnings)
        return values


def _floats_text(values: np.ndarray | None) -> str:
    if values is None:
        return ""
    return " ".join(repr(float(v)) for v in np.asarray(values, dtype=np.float64).reshape(-1))


def _floats(text: str, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
    if not text:
        return None
    values = [float(v) for v in text.split()]
    if len(values) != int(np.prod(shape)):
        raise ValueError(f"frame record {key}: expected {int(np.prod(shape))} numbers, got "
                         f"{len(values)}")
    return np.asarray(values, dtype=np.float64).reshape(shape)


def _bool(text: str, key: str) -> bool:
    if text not in ("True", "False"):
        raise ValueError(f"frame record {key}: expected True or False, got {text!r}")
    return text == "True"


NO_SIGMA = np.full(3, math.nan)
ESTIMATE_PREFIX = "estimate."


@dataclass(frozen=True)
class FrameRecord:
    """What the pipeline made of one pair.

    image_stamp, cloud_stamp: header stamps of the pair, seconds.
    stage: the per-frame stage whose pose this is ("" when none ran).
    T_cam_lidar: (4, 4) per-frame pose, None when none was solved (or the input was bad).
    valid: the per-frame pose passed its checks; accepted: it also entered the window;
        reason: why not ("" when accepted).
    num_inliers, reprojection_error_px (RMS over inliers, NaN without a pose),
        overlap_ratio (NaN when the network did not run).
    aggregate: (4, 4) the pipeline's estimate after this frame (None before there is one),
        from `aggregate_stage`, with its per-axis sigmas (camera frame; NaN without).
    stage_estimates: stage -> (4, 4) each solved stage's estimate after this frame.
    latency_s: time from the pair forming to this record, seconds.
    """

    image_stamp: float
    cloud_stamp: float
    stage: str
    T_cam_lidar: np.ndarray | None
    valid: bool
    accepted: bool
    reason: str
    num_inliers: int
    reprojection_error_px: float
    overlap_ratio: float
    aggregate: np.ndarray | None
    aggregate_stage: str = ""
    aggregate_sigma_rot_deg: np.ndarray = field(default_factory=lambda: NO_SIGMA.copy())
    aggregate_sigma_trans_m: np.ndarray = field(default_factory=lambda: NO_SIGMA.copy())
    stage_estimates: Mapping[str, np.ndarray] = field(default_factory=dict)
    latency_s: float = math.nan

    @property
    def solved(self) -> bool:
        """A per-frame pose exists."""
        return self.T_cam_lidar is not None

    def quality(self) -> dict[str, Any]:
        """The frame's quality figures: valid, reason, num_inliers, reprojection_error_px,
        overlap_ratio (for diagnostics and calibration files)."""
        return {"valid": self.valid, "reason": self.reason, "num_inliers": self.num_inliers,
                "reprojection_error_px": self.reprojection_error_px,
                "overlap_ratio": self.overlap_ratio}

    def to_values(self) -> dict[str, str]:
        """Text key-values (exact: floats as repr)."""
        values = {
            "image_stamp": repr(float(self.image_stamp)),
            "cloud_stamp": repr(float(self.cloud_stamp)),
            "stage": self.stage,
            "T_cam_lidar": _floats_text(self.T_cam_lidar),
            "valid": str(bool(self.valid)),
            "accepted": str(bool(self.accepted)),
            "reason": self.reason,
            "num_inliers": str(int(self.num_inliers)),
            "reprojection_error_px": repr(float(self.reprojection_error_px)),
            "overlap_ratio": repr(float(self.overlap_ratio)),
            "aggregate": _floats_text(self.aggregate),
            "aggregate_stage": self.aggregate_stage,
            "aggregate_sigma_rot_deg": _floats_text(self.aggregate_sigma_rot_deg),
            "aggregate_sigma_trans_m": _floats_text(self.aggregate_sigma_trans_m),
            "latency_s": repr(float(self.latency_s)),
        }
        for stage, T in self.stage_estimates.items():
            values[ESTIMATE_PREFIX + stage] = _floats_text(T)
        return values

    @classmethod
    def from_values(cls, values: Mapping[str, str]) -> FrameRecord:
        """Parse `to_values()` output; ValueError naming a missing or malformed key."""
        required = [name for name in cls.__dataclass_fields__ if name != "stage_estimates"]
        missing = [k for k in required if k not in values]
        if missing:
            raise ValueError(f"frame record lacks {', '.join(missing)}")
        return cls(
            image_stamp=float(values["image_stamp"]),
            cloud_stamp=float(values["cloud_stamp"]),
            stage=values["stage"],
            T_cam_lidar=_floats(values["T_cam_lidar"], "T_cam_lidar", (4, 4)),
            valid=_bool(values["valid"], "valid"),
            accepted=_bool(values["accepted"], "accepted"),
            reason=values["reason"],
            num_inliers=int(values["num_inliers"]),
            reprojection_error_px=float(values["reprojection_error_px"]),
            overlap_ratio=float(values["overlap_ratio"]),
            aggregate=_floats(values["aggregate"], "aggregate", (4, 4)),
            aggregate_stage=values["aggregate_stage"],
            aggregate_sigma_rot_deg=_floats(values["aggregate_sigma_rot_deg"],
                                            "aggregate_sigma_rot_deg", (3,)),
            aggregate_sigma_trans_m=_floats(values["aggregate_sigma_trans_m"],
                                            "aggregate_sigma_trans_m", (3,)),
            stage_estimates={key[len(ESTIMATE_PREFIX):]: _floats(text, key, (4, 4))
                             for key, text in values.items()
                             if key.startswith(ESTIMATE_PREFIX)},
            latency_s=float(values["latency_s"]),
        )
