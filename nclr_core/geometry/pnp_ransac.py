"""Robust PnP for inference: OpenCV's USAC consensus, then Levenberg–Marquardt on the inliers.

`solve_pnp_ransac` replaced a RANSAC over our batched EPnP: on the same matches (the shipped
model's on 120 held-out frames, and benchmarks/bench_epnp.py's synthetic problems) OpenCV's
USAC with graph-cut local optimisation, followed by `cv2.solvePnPRefineLM` on the inliers,
was as accurate or more and 5–40× faster (BENCHMARKS.md). Not differentiable; training keeps
`nclr_core.geometry.epnp.solve_epnp`.
"""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
from numpy.typing import ArrayLike

MIN_POINTS = 6  # fewest usable correspondences (and inliers) that define a pose
_REFINE_ROUNDS = 2  # LM on the inliers, re-select the inliers, this many times


class PnPRansacResult(NamedTuple):
    """Robust single-problem pose estimate (float64 NumPy).

    R: (3, 3) rotation, object frame -> camera frame (identity when not valid).
    t: (3,) translation in metres (zero when not valid).
    inliers: (N,) bool, points in front of the camera within the threshold of the pose.
    valid: a consensus of at least MIN_POINTS inliers and a finite pose.
    reproj_error: RMS reprojection error over the inliers, pixels (NaN when not valid).
    """

    R: np.ndarray
    t: np.ndarray
    inliers: np.ndarray
    valid: bool
    reproj_error: float


def _as_float64(value: ArrayLike) -> np.ndarray:
    """A float64 array from an array or a torch tensor (on any device)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def _usac_params(threshold_px: float, iterations: int, confidence: float, seed: int
                 ) -> cv2.UsacParams:
    params = cv2.UsacParams()
    params.sampler = cv2.SAMPLING_UNIFORM
    params.score = cv2.SCORE_METHOD_MSAC
    params.loMethod = cv2.LOCAL_OPTIM_GC
    params.final_polisher = cv2.LSQ_POLISHER
    params.threshold = float(threshold_px)
    params.confidence = float(confidence)
    params.maxIterations = int(iterations)
    params.randomGeneratorState = int(seed)
    params.isParallel = False
    return params


def reprojection_errors(x3d: np.ndarray, x2d: np.ndarray, K: np.ndarray, R: np.ndarray,
                        t: np.ndarray) -> np.ndarray:
    """(N,) pixel distance of π(K (R x3d + t)) to x2d; inf where the point is not in front."""
    cam = x3d @ R.T + t
    depth = cam[:, 2]
    safe = np.where(depth > 0, depth, 1.0)
    uv = (cam @ K.T)[:, :2] / safe[:, None]
    return np.where(depth > 0, np.linalg.norm(uv - x2d, axis=1), np.inf)


def solve_pnp_ransac(
    x3d: ArrayLike,
    x2d: ArrayLike,
    K: ArrayLike,
    reproj_threshold_px: float = 8.0,
    iterations: int = 1000,
    confidence: float = 0.999,
    seed: int = 0,
) -> PnPRansacResult:
    """Pose `(R, t)` with `x2d ≈ π(K (R x3d + t))` robust to outlying correspondences.

    Args:
        x3d: (N, 3) object-frame points; x2d: (N, 2) pixels of a pinhole camera
            (undistorted); K: (3, 3); arrays or torch tensors. Rows with a non-finite value
            are unused.
        reproj_threshold_px: inlier threshold on the reprojection distance, pixels.
        iterations, confidence: USAC's budget and early-stop confidence.
        seed: USAC's random state; the result is deterministic for a given seed.
    """
    X, uv, Kd = _as_float64(x3d), _as_float64(x2d), _as_float64(K)
    if X.ndim != 2 or X.shape[1] != 3:
        raise ValueError(f"solve_pnp_ransac: x3d must be (N, 3), got {X.shape}")
    if uv.shape != (len(X), 2):
        raise ValueError(f"solve_pnp_ransac: x2d must be ({len(X)}, 2), got {uv.shape}")
    if Kd.shape != (3, 3):
        raise ValueError(f"solve_pnp_ransac: K must be (3, 3), got {Kd.shape}")
    if not reproj_threshold_px > 0 or iterations < 1 or not 0.0 < confidence < 1.0:
        raise ValueError("solve_pnp_ransac: needs reproj_threshold_px > 0, iterations >= 1 "
                         f"and confidence in (0, 1), got {reproj_threshold_px}, {iterations}, "
                         f"{confidence}")
    usable = np.isfinite(X).all(1) & np.isfinite(uv).all(1)
    failed = PnPRansacResult(np.eye(3), np.zeros(3), np.zeros(len(X), dtype=bool), False,
                             float("nan"))
    if usable.sum() < MIN_POINTS:
        return failed
    try:
        ok, _, rvec, tvec, _ = cv2.solvePnPRansac(
            np.ascontiguousarray(X[usable]), np.ascontiguousarray(uv[usable]), Kd.copy(), None,
            params=_usac_params(reproj_threshold_px, iterations, confidence, seed))
    except cv2.error:
        return failed
    if not ok or not (np.all(np.isfinite(rvec)) and np.all(np.isfinite(tvec))):
        return failed
    for _ in range(_REFINE_ROUNDS):
        R = cv2.Rodrigues(rvec)[0]
        inliers = usable & (reprojection_errors(X, uv, Kd, R, tvec.reshape(3))
                            < reproj_threshold_px)
        if inliers.sum() < MIN_POINTS:
            break
        rvec, tvec = cv2.solvePnPRefineLM(X[inliers], uv[inliers], Kd, None, rvec, tvec)
    R, t = cv2.Rodrigues(rvec)[0], tvec.reshape(3).astype(np.float64)
    errors = reprojection_errors(X, uv, Kd, R, t)
    inliers = usable & (errors < reproj_threshold_px)
    if inliers.sum() < MIN_POINTS or not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
        return failed._replace(inliers=inliers)
    return PnPRansacResult(R, t, inliers, True, float(np.sqrt(np.mean(errors[inliers] ** 2))))
