"""Raw camera images -> pinhole images with the same K, for training on distorted cameras.

Training pairs project with K alone (`nclr_core.data.pairs`), so an image taken through a
lens with distortion is resampled first: each pixel of the pinhole image takes the raw
image's value where the camera's lens model (`CameraModel.project`) images the same ray.
"""
from __future__ import annotations

import cv2
import numpy as np

from nclr_core.geometry.camera import CameraModel


def rectify_image(image: np.ndarray, camera: CameraModel) -> np.ndarray:
    """(H, W, C) image of the distortion-free camera with `camera`'s K and size (bilinear;
    0 where the raw image saw nothing). The image itself when `camera` has no distortion.

    Raises ValueError when the image size is not the camera's.
    """
    height, width = image.shape[:2]
    if (width, height) != (camera.width, camera.height):
        raise ValueError(f"image is {width} x {height}, its CameraInfo says "
                         f"{camera.width} x {camera.height}")
    if camera.distortion == "none":
        return image
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    pixels = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], axis=1)
    rays = pixels @ np.linalg.inv(camera.K).T  # (H * W, 3) rays with z = 1
    raw_uv, _ = camera.project(rays)
    raw_uv = np.where(np.isfinite(raw_uv), raw_uv, -1.0).astype(np.float32)
    maps = raw_uv.reshape(height, width, 2)
    return cv2.remap(image, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)
