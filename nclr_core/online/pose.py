"""A `T_cam_lidar` with its uncertainty, and priors at an exact distance from a pose.

Uncertainty convention (every stage uses it): a small error of an estimate `T = [R | t]` is
δ = (ω, ρ) ∈ R⁶ with the true pose `[exp(ω×) R | t + ρ]`: ω (rad) is a rotation about the
camera's x, y, z axes and ρ (m) a translation along them (camera optical frame: x right,
y down, z forward). `covariance` is the (6, 6) covariance of δ in that order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from nclr_core.geometry.se3 import make_transform


def apply_delta(T_cam_lidar: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """(4, 4) `[exp(ω×) R | t + ρ]` for δ = (ω, ρ) (6,) in the convention above."""
    delta = np.asarray(delta, dtype=np.float64)
    if delta.shape != (6,):
        raise ValueError(f"delta must be (6,) = (omega, rho), got {delta.shape}")
    R = Rotation.from_rotvec(delta[:3]).as_matrix() @ T_cam_lidar[:3, :3]
    return make_transform(R, T_cam_lidar[:3, 3] + delta[3:])


def pose_delta(T_from: np.ndarray, T_to: np.ndarray) -> np.ndarray:
    """δ (6,) with `apply_delta(T_from, δ) == T_to` (inverse of `apply_delta`)."""
    omega = Rotation.from_matrix(T_to[:3, :3] @ T_from[:3, :3].T).as_rotvec()
    return np.concatenate((omega, T_to[:3, 3] - T_from[:3, 3]))


@dataclass(frozen=True)
class PoseEstimate:
    """A solved `T_cam_lidar` (4, 4) and the (6, 6) covariance of its error δ (see above)."""

    T_cam_lidar: np.ndarray
    covariance: np.ndarray

    def __post_init__(self) -> None:
        T = np.asarray(self.T_cam_lidar, dtype=np.float64)
        C = np.asarray(self.covariance, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError(f"T_cam_lidar must be a finite (4, 4) transform, got {T.shape}")
        if C.shape != (6, 6) or np.any(np.isnan(C)):
            raise ValueError(f"covariance must be (6, 6) without NaN, got {C.shape}")
        object.__setattr__(self, "T_cam_lidar", T)
        object.__setattr__(self, "covariance", C)

    @property
    def sigma_rot_deg(self) -> np.ndarray:
        """(3,) standard deviation of the rotation about the camera x, y, z axes, degrees."""
        return np.degrees(np.sqrt(np.clip(np.diag(self.covariance)[:3], 0.0, None)))

    @property
    def sigma_trans_m(self) -> np.ndarray:
        """(3,) standard deviation of the translation along the camera x, y, z axes, m."""
        return np.sqrt(np.clip(np.diag(self.covariance)[3:], 0.0, None))


def at_least(covariance: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """(6, 6) `covariance` with each axis' σ raised to at least that of `floor` (its
    correlations kept); `floor` itself where `covariance` is not finite (nothing measured)."""
    covariance, floor = np.asarray(covariance, np.float64), np.asarray(floor, np.float64)
    if not np.all(np.isfinite(covariance)):
        return floor.copy()
    diagonal = np.diag(covariance)
    ratio = np.divide(np.diag(floor), diagonal, out=np.ones(6), where=diagonal > 0)
    gain = np.sqrt(np.maximum(ratio, 1.0))
    raised = covariance * np.outer(gain, gain)
    # an axis with no variance at all cannot be scaled up: its floor is added
    return raised + np.diag(np.maximum(np.diag(floor) - np.diag(raised), 0.0))


def prior_at_distance(T_cam_lidar: np.ndarray, rotation_deg: float, translation_m: float,
                      rng: np.random.Generator) -> np.ndarray:
    """(4, 4) prior rotated by exactly `rotation_deg` (about a random axis, applied in the
    camera frame) and shifted by exactly `translation_m` (in a random direction) from
    `T_cam_lidar`: the online-calibration protocol of the evaluations."""
    if not 0.0 <= rotation_deg <= 180.0 or not 0.0 <= translation_m < math.inf:
        raise ValueError(f"prior must be 0..180 deg and >= 0 m from the truth, got "
                         f"{rotation_deg} deg, {translation_m} m")
    axis, direction = rng.normal(size=3), rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    direction /= np.linalg.norm(direction)
    delta = np.concatenate((axis * math.radians(rotation_deg), direction * translation_m))
    return apply_delta(np.asarray(T_cam_lidar, dtype=np.float64), delta)
