"""Pictures for people: LiDAR points drawn over camera images.

NumPy/OpenCV only; used by the calibration node's `~/overlay` and the bag evaluation's
overlay images.
"""
from __future__ import annotations

import cv2
import numpy as np

from nclr_core.geometry.camera import CameraModel
from nclr_core.geometry.projection import project_points_with_camera


def depth_overlay(image: np.ndarray, points: np.ndarray, T_cam_lidar: np.ndarray,
                  camera: CameraModel, radius: int = 1) -> np.ndarray:
    """RGB (H, W, 3) copy of `image` with the points (N, >=3, LiDAR frame) that project into
    it under T_cam_lidar drawn in colour by depth (near red, far blue), farthest first."""
    projection = project_points_with_camera(points, T_cam_lidar, camera)
    out = image.copy()
    hit = projection.in_image
    if not hit.any():
        return out
    depth = projection.depth[hit]
    uv = projection.pixels()[hit]
    order = np.argsort(-depth)  # near points drawn last, on top
    span = max(float(depth.max() - depth.min()), 1e-6)
    level = (255.0 * (depth - depth.min()) / span).astype(np.uint8)
    colours = cv2.applyColorMap(255 - level[:, None], cv2.COLORMAP_JET)[:, 0, ::-1]
    h, w = out.shape[:2]
    for du in range(-radius, radius + 1):
        for dv in range(-radius, radius + 1):
            u = np.clip(uv[order, 0] + du, 0, w - 1)
            v = np.clip(uv[order, 1] + dv, 0, h - 1)
            out[v, u] = colours[order]
    return out
