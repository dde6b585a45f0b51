"""Robust aggregation of per-frame `T_cam_lidar` estimates over a sliding window.

Per-frame estimates from single image/cloud pairs are noisy and sometimes wrong (few
overlapping points, a bad match set). The estimator keeps the last `window` accepted
estimates, finds a robust centre (medoid rotation, component-wise median translation),
rejects outliers by a MAD-scaled threshold with a floor, and returns the weighted chordal
mean of the inliers with its spread and the covariance of that mean (`nclr_core.online.pose`
convention): the inliers' weighted covariance about the mean times Σ w_i² (normalised
weights), i.e. the statistical uncertainty of a mean of independent estimates. It is blind to
an error that all frames share; with one inlier it is unknown (infinite). With a prior
`T_init`, estimates farther than `max_rotation_from_prior_deg` /
`max_translation_from_prior_m` are refused on arrival.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from nclr_core.online.pose import PoseEstimate, pose_delta

MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class AggregateEstimate:
    """The aggregated `T_cam_lidar` (4,4), the covariance of its error and how well the
    window agrees on it."""

    pose: PoseEstimate
    num_frames: int
    num_inliers: int
    rotation_spread_deg: float  # RMS geodesic distance of inliers to the mean
    translation_spread_m: float  # RMS distance of inlier translations to the mean

    @property
    def T_cam_lidar(self) -> np.ndarray:
        return self.pose.T_cam_lidar


def _geodesic_rad(R_a: np.ndarray, R_b: np.ndarray) -> np.ndarray:
    """Angle of R_aᵀ R_b for (..., 3, 3) stacks, radians."""
    rel = np.swapaxes(R_a, -1, -2) @ R_b
    cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.arccos(np.clip(cos, -1.0, 1.0))


def _project_to_so3(M: np.ndarray) -> np.ndarray:
    """Closest rotation (Frobenius) to a 3×3 matrix."""
    U, _, Vt = np.linalg.svd(M)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def _covariance_of_mean(T_mean: np.ndarray, R: np.ndarray, t: np.ndarray,
                        weights: np.ndarray) -> np.ndarray:
    """(6, 6) covariance of the weighted mean T_mean of poses (R (n, 3, 3), t (n, 3)) with
    normalised weights (n,): unbiased weighted covariance of δ_i times Σ w_i²."""
    spread = 1.0 - float(np.sum(weights ** 2))
    if spread <= 1e-12:  # one estimate (or all weight on one): nothing to measure it by
        return np.diag(np.full(6, np.inf))
    deltas = np.stack([pose_delta(T_mean, np.vstack((np.hstack((Ri, ti[:, None])),
                                                      [0.0, 0.0, 0.0, 1.0])))
                       for Ri, ti in zip(R, t, strict=True)])
    covariance = (deltas * weights[:, None]).T @ deltas / spread
    return covariance * float(np.sum(weights ** 2))


class TemporalEstimator:
    """Sliding-window robust mean of `T_cam_lidar` estimates (see the module docstring)."""

    def __init__(self, window: int = 50, min_frames: int = 3,
                 outlier_rotation_deg: float = 1.0, outlier_translation_m: float = 0.05,
                 outlier_mad_scale: float = 3.0, T_init: np.ndarray | None = None,
                 max_rotation_from_prior_deg: float | None = None,
                 max_translation_from_prior_m: float | None = None) -> None:
        if window < 1 or min_frames < 1:
            raise ValueError("window and min_frames must be at least 1")
        self.window = window
        self.min_frames = min_frames
        self.outlier_rotation_rad = np.deg2rad(outlier_rotation_deg)
        self.outlier_translation_m = outlier_translation_m
        self.outlier_mad_scale = outlier_mad_scale
        self.T_init = None if T_init is None else np.asarray(T_init, dtype=np.float64)
        self.max_rotation_from_prior_rad = (
            None if max_rotation_from_prior_deg is None
            else np.deg2rad(max_rotation_from_prior_deg))
        self.max_translation_from_prior_m = max_translation_from_prior_m
        self._rotations: deque[np.ndarray] = deque(maxlen=window)
        self._translations: deque[np.ndarray] = deque(maxlen=window)
        self._weights: deque[float] = deque(maxlen=window)
        self.num_rejected_by_prior = 0

    def reset(self) -> None:
        """Forget every estimate (e.g. after the sensors were moved)."""
        self._rotations.clear()
        self._translations.clear()
        self._weights.clear()
        self.num_rejected_by_prior = 0

    def __len__(self) -> int:
        return len(self._rotations)

    def add(self, T_cam_lidar: np.ndarray, weight: float = 1.0) -> bool:
        """Add one per-frame estimate (4,4); False when the prior bound refuses it."""
        T = np.asarray(T_cam_lidar, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError(f"expected a finite (4, 4) transform, got shape {T.shape}")
        if not weight > 0:
            raise ValueError(f"weight must be positive, got {weight}")
        if self.T_init is not None and not self._within_prior(T):
            self.num_rejected_by_prior += 1
            return False
        self._rotations.append(_project_to_so3(T[:3, :3]))
        self._translations.append(T[:3, 3].copy())
        self._weights.append(float(weight))
        return True

    def _within_prior(self, T: np.ndarray) -> bool:
        angle = _geodesic_rad(self.T_init[:3, :3], T[:3, :3])
        offset = np.linalg.norm(self.T_init[:3, 3] - T[:3, 3])
        max_angle = self.max_rotation_from_prior_rad
        max_offset = self.max_translation_from_prior_m
        return ((max_angle is None or angle <= max_angle)
                and (max_offset is None or offset <= max_offset))

    def estimate(self) -> AggregateEstimate | None:
        """The robust mean of the window, or None with fewer than `min_frames` estimates."""
        n = len(self._rotations)
        if n < self.min_frames:
            return None
        R = np.stack(self._rotations)
        t = np.stack(self._translations)
        w = np.asarray(self._weights)
        pairwise = _geodesic_rad(R[:, None], R[None, :])  # (n, n)
        R_centre = R[np.argmin(pairwise.sum(axis=1))]
        t_centre = np.median(t, axis=0)
        rot_dev = _geodesic_rad(R_centre[None], R)
        trans_dev = np.linalg.norm(t - t_centre, axis=1)
        rot_limit = max(self.outlier_rotation_rad,
                        self.outlier_mad_scale * MAD_TO_SIGMA * np.median(rot_dev))
        trans_limit = max(self.outlier_translation_m,
                          self.outlier_mad_scale * MAD_TO_SIGMA * np.median(trans_dev))
        inliers = (rot_dev <= rot_limit) & (trans_dev <= trans_limit)
        wi = w[inliers] / w[inliers].sum()
        R_mean = _project_to_so3(np.einsum("n,nij->ij", wi, R[inliers]))
        t_mean = wi @ t[inliers]
        rot_spread = np.sqrt(np.mean(_geodesic_rad(R_mean[None], R[inliers]) ** 2))
        trans_spread = np.sqrt(np.mean(np.sum((t[inliers] - t_mean) ** 2, axis=1)))
        T = np.eye(4)
        T[:3, :3] = R_mean
        T[:3, 3] = t_mean
        pose = PoseEstimate(T, _covariance_of_mean(T, R[inliers], t[inliers], wi))
        return AggregateEstimate(pose=pose, num_frames=n, num_inliers=int(inliers.sum()),
                                 rotation_spread_deg=float(np.rad2deg(rot_spread)),
                                 translation_spread_m=float(trans_spread))

