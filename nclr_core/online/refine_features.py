"""The image side of the refinement (after Levinson & Thrun 2013): the grey-level gradient
magnitude (Sobel), spread by an inverse distance transform so that a projected LiDAR contour
point (`lidar_edges`) is rewarded for landing near an image edge, not only on it.
"""
from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray


def grey_level(image: NDArray[np.uint8]) -> NDArray[np.float32]:
    """(H, W) float32 grey level of an RGB image (H, W, 3) uint8."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)


def image_edges(grey: NDArray[np.float32]) -> NDArray[np.float32]:
    """(H, W) float32 Sobel gradient magnitude of a grey image (H, W), divided by its mean
    over the image so that frames of different contrast weigh alike. (Smoothing the image
    before, as an image pyramid would at coarse levels, was tried: it keeps broad shading
    and drops thin contours, and misled the search on the real KITTI frames.)"""
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = np.sqrt(gx * gx + gy * gy)
    mean = float(magnitude.mean())
    return magnitude / mean if mean > 0.0 else magnitude


def _decay_sweep(lines: NDArray[np.float32], gamma: np.float32) -> None:
    """In place, rows of `lines` (R, C): lines[i] = max(lines[i], gamma * lines[i -+ 1]),
    downwards then upwards."""
    for i in range(1, len(lines)):
        np.maximum(lines[i], gamma * lines[i - 1], out=lines[i])
    for i in range(len(lines) - 2, -1, -1):
        np.maximum(lines[i], gamma * lines[i + 1], out=lines[i])


def spread_edges(edges: NDArray[np.float32], decay_px: float, self_weight: float,
                 local_mean_px: float = 0.0) -> NDArray[np.float32]:
    """Inverse distance transform (H, W) float32 of an edge map (H, W), mean subtracted.

    `max_q E(q) gamma^d(p, q)` over pixels q at city-block distance d, gamma =
    0.5^(1/decay_px) (an edge's reward halves every `decay_px` pixels; computed exactly by
    four sweeps), mixed as `self_weight E + (1 - self_weight) spread`. The mean over the image
    is subtracted, so a point landing anywhere at random scores 0 in expectation: moving
    points out of view (they score 0) is never rewarded in itself.
    """
    if decay_px <= 0.0:
        raise ValueError(f"decay_px must be positive, got {decay_px}")
    gamma = np.float32(0.5 ** (1.0 / decay_px))
    spread = np.ascontiguousarray(edges.T, dtype=np.float32)
    _decay_sweep(spread, gamma)  # along the rows of the image
    spread = np.ascontiguousarray(spread.T)
    _decay_sweep(spread, gamma)  # along its columns
    mixed = self_weight * edges + (1.0 - self_weight) * spread
    if local_mean_px > 0.0:
        size = 2 * int(round(local_mean_px)) + 1
        return (mixed - cv2.blur(mixed, (size, size), borderType=cv2.BORDER_REFLECT)
                ).astype(np.float32)
    return (mixed - mixed.mean()).astype(np.float32)
