"""Pose error metrics for image-to-point-cloud registration and calibration (METHOD.md §8).

NumPy float64, batched over leading axes: rotations (..., 3, 3), translations (..., 3),
transforms (..., 4, 4). Per-pose results have the batch shape; a single pose gives a
np.float64 scalar (a Python float). Errors are reported in degrees and metres.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial.transform import Rotation

FloatArray = NDArray[np.float64]

# Euler order of the RRE reported by CorrI2P and the papers that compare with it.
RRE_EULER_ORDER = "xzy"


def _check_pair(pred: ArrayLike, gt: ArrayLike, tail: tuple[int, ...], what: str):
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.shape[pred.ndim - len(tail) :] != tail:
        shape = "(..., " + ", ".join(map(str, tail)) + ")"
        raise ValueError(
            f"{what}: prediction {pred.shape} and ground truth {gt.shape} must both be {shape}"
        )
    if not (np.all(np.isfinite(pred)) and np.all(np.isfinite(gt))):
        raise ValueError(f"{what}: inputs contain NaN or infinite values")
    return pred, gt


def _relative_rotations(R_pred: ArrayLike, R_gt: ArrayLike) -> tuple[Rotation, tuple[int, ...]]:
    """R_diff = R_pred^T R_gt as Rotation objects (M,), plus the batch shape."""
    R_pred, R_gt = _check_pair(R_pred, R_gt, (3, 3), "rotations")
    R_diff = np.swapaxes(R_pred, -1, -2) @ R_gt
    return Rotation.from_matrix(R_diff.reshape(-1, 3, 3)), R_pred.shape[:-2]


def rre_euler_deg(R_pred: ArrayLike, R_gt: ArrayLike) -> FloatArray | float:
    """Relative rotation error as the field reports it (CorrI2P lineage), in degrees.

    Sum of |Euler angles| of R_diff = R_pred^T R_gt from scipy's as_euler('xzy'). Not a
    metric on SO(3): it depends on the axes and exceeds the geodesic angle for mixed rotations.
    R_pred, R_gt: (..., 3, 3). Returns (...).
    """
    rotations, batch_shape = _relative_rotations(R_pred, R_gt)
    angles = rotations.as_euler(RRE_EULER_ORDER, degrees=True)
    return np.abs(angles).sum(axis=-1).reshape(batch_shape)[()]


def rre_geodesic_deg(R_pred: ArrayLike, R_gt: ArrayLike) -> FloatArray | float:
    """Geodesic rotation error: the angle of R_pred^T R_gt in degrees, in [0, 180].

    R_pred, R_gt: (..., 3, 3). Returns (...).
    """
    rotations, batch_shape = _relative_rotations(R_pred, R_gt)
    return np.degrees(rotations.magnitude()).reshape(batch_shape)[()]


def rte_m(t_pred: ArrayLike, t_gt: ArrayLike) -> FloatArray | float:
    """Relative translation error ||t_gt - t_pred|| in metres. t_pred, t_gt: (..., 3) -> (...)."""
    t_pred, t_gt = _check_pair(t_pred, t_gt, (3,), "translations")
    return np.linalg.norm(t_gt - t_pred, axis=-1)[()]


def registration_success(
    rre_deg: ArrayLike,
    rte_m: ArrayLike,
    max_rre_deg: float = 5.0,
    max_rte_m: float = 2.0,
) -> NDArray[np.bool_] | bool:
    """Success flags (...) bool: RRE < max_rre_deg and RTE < max_rte_m (strict, as in the
    registration protocol). NaN errors (failed solves) count as failures.
    """
    rre_deg = np.asarray(rre_deg, dtype=np.float64)
    rte = np.asarray(rte_m, dtype=np.float64)
    if rre_deg.shape != rte.shape:
        raise ValueError(f"rre_deg {rre_deg.shape} and rte_m {rte.shape} must have equal shapes")
    with np.errstate(invalid="ignore"):
        return ((rre_deg < max_rre_deg) & (rte < max_rte_m))[()]


def recall_curve(errors: ArrayLike, thresholds: ArrayLike) -> FloatArray:
    """Fraction of errors (N,) that are <= each threshold (T,); returns (T,) in [0, 1].

    NaN errors (failed solves) stay in the denominator and never count as recalled.
    """
    errors = np.asarray(errors, dtype=np.float64).reshape(-1)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if errors.size == 0:
        raise ValueError("recall_curve needs at least one error")
    if thresholds.ndim != 1 or not np.all(np.isfinite(thresholds)):
        raise ValueError(f"thresholds must be a finite 1-D array, got shape {thresholds.shape}")
    with np.errstate(invalid="ignore"):
        return (errors[None, :] <= thresholds[:, None]).mean(axis=1)


def pose_errors(T_pred: ArrayLike, T_gt: ArrayLike) -> dict[str, FloatArray | float]:
    """RRE (Euler-sum and geodesic, degrees) and RTE (metres) between transforms (..., 4, 4).

    Returns {"rre_euler_deg", "rre_geodesic_deg", "rte_m"}, each of the batch shape.
    """
    T_pred, T_gt = _check_pair(T_pred, T_gt, (4, 4), "transforms")
    R_pred, R_gt = T_pred[..., :3, :3], T_gt[..., :3, :3]
    return {
        "rre_euler_deg": rre_euler_deg(R_pred, R_gt),
        "rre_geodesic_deg": rre_geodesic_deg(R_pred, R_gt),
        "rte_m": rte_m(T_pred[..., :3, 3], T_gt[..., :3, 3]),
    }
