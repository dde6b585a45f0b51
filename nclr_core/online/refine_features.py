"""What the training-free refinement aligns: LiDAR depth edges and image edges.

LiDAR side (after Levinson & Thrun 2013): a point on the near side of a depth jump along its
scan line is on an occluding contour; its weight is sqrt(jump), jumps capped. Image side:
the grey-level gradient magnitude (Sobel), spread by an inverse distance transform so that a
projected edge point is rewarded for landing near an image edge, not only on it.
"""
from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from nclr_core.online.scan_lines import (
    azimuth_step_deg,
    depth_jumps,
    line_spacing_deg,
    scan_lines,
)


def depth_edge_weights(points: NDArray, ring: NDArray | None, min_jump_m: float,
                       max_jump_m: float, neighbour_gap_steps: float,
                       clutter_window: int, max_breaks: int) -> NDArray[np.float64]:
    """(N,) weight sqrt(min(jump, max_jump_m)) of the points whose depth jump (see
    `scan_lines.depth_jumps`) exceeds `min_jump_m`, 0 elsewhere.

    points (N, >= 3) LiDAR frame; ring (N,) or None (then derived, see `scan_lines`).
    Neighbours farther apart than `neighbour_gap_steps` times the cloud's azimuth resolution
    are not neighbours, nor are two returns more than half the line spacing apart in elevation.
    """
    lines = scan_lines(points, ring)
    gap = neighbour_gap_steps * azimuth_step_deg(lines, points)
    jump, breaks = depth_jumps(points, lines, gap, 0.5 * line_spacing_deg(lines, points),
                               min_jump_m, clutter_window)
    edge = (jump > min_jump_m) & (breaks <= max_breaks)
    return np.where(edge, np.sqrt(np.minimum(jump, max_jump_m)), 0.0)


def grey_level(image: NDArray[np.uint8]) -> NDArray[np.float32]:
    """(H, W) float32 grey level of an RGB image (H, W, 3) uint8."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)


def image_edges(grey: NDArray[np.float32], blur_px: float) -> NDArray[np.float32]:
    """(H, W) float32 Sobel gradient magnitude of a grey image (H, W) smoothed by a Gaussian
    of sigma `blur_px` (0: none), divided by its mean over the image so that frames of
    different contrast weigh alike. Smoothing first keeps the edges of the scale being
    searched (object contours) and drops finer texture (foliage, gravel)."""
    if blur_px > 0.0:
        grey = cv2.GaussianBlur(grey, (0, 0), blur_px)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = np.sqrt(gx * gx + gy * gy)
    mean = float(magnitude.mean())
    return magnitude / mean if mean > 0.0 else magnitude


def spread_edges(edges: NDArray[np.float32], decay_px: float, self_weight: float
                 ) -> NDArray[np.float32]:
    """Inverse distance transform (H, W) float32 of an edge map (H, W), mean subtracted.

    `max_q E(q) gamma^d(p, q)` over pixels q at chessboard distance d, gamma = 0.5^(1/decay_px)
    (an edge's reward halves every `decay_px` pixels), mixed as
    `self_weight E + (1 - self_weight) spread`. The mean over the image is subtracted, so a
    point landing anywhere at random scores 0 in expectation: moving points out of view (they
    score 0) is never rewarded in itself.
    """
    if decay_px <= 0.0:
        raise ValueError(f"decay_px must be positive, got {decay_px}")
    gamma = float(0.5 ** (1.0 / decay_px))
    kernel = np.ones((3, 3), np.uint8)
    spread = edges.astype(np.float32).copy()
    # every step reaches one pixel farther; beyond 8 half-lives the reward is below 0.4 %
    for _ in range(int(np.ceil(8 * decay_px))):
        grown = cv2.dilate(spread, kernel) * gamma
        if not np.any(grown > spread):
            break
        np.maximum(spread, grown, out=spread)
    mixed = self_weight * edges + (1.0 - self_weight) * spread
    return (mixed - mixed.mean()).astype(np.float32)
