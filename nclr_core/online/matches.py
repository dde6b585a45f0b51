"""`FrameMatches`: one frame's point-to-pixel matches, the unit the joint solve pools.

Pixels are in the *undistorted* input image of the camera's pinhole K (raw matched pixels go
through `CameraModel.undistort_points` first), so frames of one camera pool with one K and no
lens model inside the solver.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nclr_core.geometry.camera import CameraModel
from nclr_core.inference import CalibrationResult


@dataclass(frozen=True)
class FrameMatches:
    """K matches of one frame.

    points: (K, 3) float64, LiDAR frame, metres.
    pixels: (K, 2) float64 (u, v), undistorted input-image pixels of the pinhole `K`.
    weights: (K,) float64 >= 0, the match's prior weight in the solve (0: unused).
    K: (3, 3) float64 pinhole intrinsics of the input image.
    pixel_scale: input-image pixels per matching pixel (1 / A[0, 0] for matches made on the
        network image; 1.0 when matched at the input resolution): the joint solve states
        its match-noise and match-bias settings in matching pixels, the same for any camera.
    """

    points: np.ndarray
    pixels: np.ndarray
    weights: np.ndarray
    K: np.ndarray
    pixel_scale: float = 1.0

    def __post_init__(self) -> None:
        points = np.asarray(self.points, dtype=np.float64)
        pixels = np.asarray(self.pixels, dtype=np.float64)
        weights = np.asarray(self.weights, dtype=np.float64)
        K = np.asarray(self.K, dtype=np.float64)
        n = len(points)
        if points.shape != (n, 3) or pixels.shape != (n, 2) or weights.shape != (n,):
            raise ValueError(f"FrameMatches needs points (K, 3), pixels (K, 2), weights (K,); "
                             f"got {points.shape}, {pixels.shape}, {weights.shape}")
        if K.shape != (3, 3) or not np.all(np.isfinite(K)):
            raise ValueError(f"FrameMatches: K must be a finite (3, 3), got {K.shape}")
        if not (np.all(np.isfinite(points)) and np.all(np.isfinite(pixels))):
            raise ValueError("FrameMatches: points and pixels must be finite")
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("FrameMatches: weights must be finite and >= 0")
        if not 0 < self.pixel_scale < np.inf:
            raise ValueError(f"FrameMatches: pixel_scale must be positive, got {self.pixel_scale}")
        for name, value in (("points", points), ("pixels", pixels), ("weights", weights),
                            ("K", K)):
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return len(self.points)

    @classmethod
    def from_global(cls, result: CalibrationResult, camera: CameraModel, pixel_scale: float
                    ) -> FrameMatches:
        """The `global` stage's RANSAC inliers of a `CalibrationResult`, weight 1 each
        (`pixel_scale`: `NetworkFeatures.pixel_scale` of the forward)."""
        inliers = result.matches.inliers
        pixels = result.matches.pixels[inliers]
        if camera.distortion != "none":
            pixels = camera.undistort_points(pixels)
        finite = np.all(np.isfinite(pixels), axis=1)
        return cls(result.matches.points[inliers][finite], pixels[finite],
                   np.ones(int(finite.sum())), camera.K, pixel_scale)
