"""Projection of LiDAR points into a pinhole image: pixel coordinates, visibility masks and
sparse depth images.

`[u, v, 1]^T ~ K (R p + t)` with (R, t) from T_cam_lidar; u is the column, v the row, pixel
centres at integer coordinates. A point is in the image when its depth exceeds min_depth and
its nearest pixel centre, floor(u + 0.5), floor(v + 0.5), lies in [0, W) x [0, H).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from nclr_core.geometry.camera import CameraModel, check_intrinsics
from nclr_core.geometry.se3 import transform_points

FloatArray = NDArray[np.float64]

# A distorted projection is trusted when its pixel undistorts back to the point's own ray
# within this distance in normalised coordinates (1e-6 is 1e-3 px at a 1000 px focal length).
PROJECTION_RAY_TOLERANCE = 1e-6


@dataclass(frozen=True, eq=False)
class Projection:
    """Result of project_points / project_points_with_camera for N points.

    uv: (N, 2) float64 pixel coordinates (column, row); NaN where depth <= min_depth.
    depth: (N,) float64 camera-frame Z in metres.
    in_image: (N,) bool, depth > min_depth and nearest pixel centre inside the image.
    """

    uv: FloatArray
    depth: FloatArray
    in_image: NDArray[np.bool_]

    def pixels(self) -> NDArray[np.int64]:
        """Nearest pixel centres (N, 2) int64 (column, row); (-1, -1) where not in_image."""
        pixels = np.full(self.uv.shape, -1, dtype=np.int64)
        pixels[self.in_image] = np.floor(self.uv[self.in_image] + 0.5).astype(np.int64)
        return pixels


def _check_image_hw(image_hw: tuple[int, int]) -> tuple[int, int]:
    if len(image_hw) != 2:
        raise ValueError(f"image_hw must be (H, W), got {image_hw}")
    height, width = image_hw
    if int(height) != height or int(width) != width or height <= 0 or width <= 0:
        raise ValueError(f"image_hw must be two positive integers (H, W), got {image_hw}")
    return int(height), int(width)


def _points_in_camera(
    points: ArrayLike, T_cam_lidar: ArrayLike, min_depth: float
) -> tuple[FloatArray, NDArray[np.bool_]]:
    """Camera-frame points (N, 3) and the mask depth > min_depth (N,), with input checks."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(f"points must have shape (N, 3) or (N, C >= 3), got {points.shape}")
    T_cam_lidar = np.asarray(T_cam_lidar, dtype=np.float64)
    if T_cam_lidar.shape != (4, 4):
        raise ValueError(f"T_cam_lidar must have shape (4, 4), got {T_cam_lidar.shape}")
    if not (np.isfinite(min_depth) and min_depth >= 0.0):
        raise ValueError(f"min_depth must be finite and >= 0, got {min_depth}")
    points_cam = transform_points(T_cam_lidar, points[:, :3])
    return points_cam, points_cam[:, 2] > min_depth


def _in_image(
    uv: FloatArray, valid: NDArray[np.bool_], height: int, width: int
) -> NDArray[np.bool_]:
    """valid points (N,) whose nearest pixel centre of uv (N, 2) is inside the image."""
    with np.errstate(invalid="ignore"):
        nearest = np.floor(uv + 0.5)
        return (
            valid
            & (nearest[:, 0] >= 0)
            & (nearest[:, 0] < width)
            & (nearest[:, 1] >= 0)
            & (nearest[:, 1] < height)
        )


def project_points(
    points: ArrayLike,
    T_cam_lidar: ArrayLike,
    K: ArrayLike,
    image_hw: tuple[int, int],
    min_depth: float = 1e-3,
) -> Projection:
    """Project LiDAR-frame points into the image of a pinhole camera (no lens distortion).

    points: (N, 3), or (N, C >= 3) whose first three columns are x y z (e.g. a sample's
    (N, 4) x y z intensity), in the LiDAR frame, metres.
    T_cam_lidar: (4, 4), LiDAR frame -> camera frame. K: (3, 3). image_hw: (H, W).
    """
    K = check_intrinsics(K)
    height, width = _check_image_hw(image_hw)
    points_cam, in_front = _points_in_camera(points, T_cam_lidar, min_depth)
    uv = np.full((len(points_cam), 2), np.nan)
    homogeneous = points_cam[in_front] @ K.T
    uv[in_front] = homogeneous[:, :2] / homogeneous[:, 2:3]
    in_image = _in_image(uv, in_front, height, width)
    return Projection(uv=uv, depth=points_cam[:, 2], in_image=in_image)


def project_points_with_camera(
    points: ArrayLike,
    T_cam_lidar: ArrayLike,
    camera: CameraModel,
    min_depth: float = 1e-3,
) -> Projection:
    """Project LiDAR-frame points (N, 3 or more) into the raw (distorted) image of `camera`.

    Like project_points, with the camera's lens distortion and image size. A point also needs
    its ray to lie where the lens model is one-to-one: strong radial distortion folds rays from
    far outside the field of view back into the image, and those points are marked not
    in_image (their pixel must undistort back to their own ray, within PROJECTION_RAY_TOLERANCE
    in normalised coordinates).
    """
    points_cam, in_front = _points_in_camera(points, T_cam_lidar, min_depth)
    uv = np.full((len(points_cam), 2), np.nan)
    uv[in_front], _ = camera.project(points_cam[in_front])
    in_image = _in_image(uv, in_front, camera.height, camera.width)
    if camera.distortion != "none":
        hits = np.flatnonzero(in_image)
        ray = points_cam[hits, :2] / points_cam[hits, 2:3]
        back = camera.unproject(uv[hits], np.ones(len(hits)))[:, :2]
        with np.errstate(invalid="ignore"):
            same_ray = np.max(np.abs(back - ray), axis=1) < PROJECTION_RAY_TOLERANCE
        in_image[hits] = same_ray
    return Projection(uv=uv, depth=points_cam[:, 2], in_image=in_image)


def depth_image(
    points: ArrayLike,
    T_cam_lidar: ArrayLike,
    K: ArrayLike,
    image_hw: tuple[int, int],
    min_depth: float = 1e-3,
) -> NDArray[np.float32]:
    """Sparse depth image (H, W) float32 in metres from LiDAR-frame points (N, 3 or more).

    Each in-image point writes its camera Z to its nearest pixel; where several points share
    a pixel the nearest (smallest depth) wins; 0 means no return.
    """
    height, width = _check_image_hw(image_hw)
    projection = project_points(points, T_cam_lidar, K, (height, width), min_depth)
    pixels = projection.pixels()[projection.in_image]
    depth = projection.depth[projection.in_image]
    flat = pixels[:, 1] * width + pixels[:, 0]
    order = np.lexsort((depth, flat))  # by pixel, then by increasing depth
    flat_sorted = flat[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = flat_sorted[1:] != flat_sorted[:-1]
    image = np.zeros(height * width, dtype=np.float32)
    image[flat_sorted[first]] = depth[order][first]
    return image.reshape(height, width)
