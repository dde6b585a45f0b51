"""Occluding contours in a spinning LiDAR cloud: where a near surface ends in front of a
farther one. The camera sees them as edges whatever the texture.

Two successive returns in azimuth on one scan line (after Levinson & Thrun 2013) are a
contour pair when they differ in range by more than `min_jump_m`: poles, trunks, the sides of
cars and buildings. (Pairs of adjacent lines were tried for horizontal contours: on rough
ground seen at a grazing angle they fire everywhere, and they biased the synthetic drives.)

Each pair gives one edge point at the near range, on a direction between the two rays: the
contour lies between them. A thin ray finds it on average midway; a real beam of divergence
beta (its footprint) still returns from the near surface while its centre is up to beta / 2
past the contour, so the contour lies `(1 - beta / step) / 2` of the way from the near to
the far direction (clipped to 0..0.5; step: the azimuth step). Weight sqrt(min(jump,
max_jump_m)). Foliage scatters returns so that nearly every pair is a jump; a near return
with more than `max_breaks` jumps among the `clutter_window` neighbour pairs on either side
along its line is clutter, not a contour (an object's contour has one or two: a pole's
left and right side).

Reflectance edges (painted lines, the border of a sign) are neighbours on one surface (no
range break around them) whose intensities differ by more than `reflectance_jump` after each
cloud is scaled by its own 99th percentile (`normalised_intensity`: drivers give 0-1 or
0-255); the edge point is their midpoint, weighted `reflectance_weight` times the jump.
They constrain what vertical contours cannot: the roll and the translation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from nclr_core.online.scan_lines import ScanLines, scan_lines


@dataclass(frozen=True)
class ContourSettings:
    """What counts as a contour (see the module docstring and `refine.RefineSettings`)."""

    min_jump_m: float = 0.5
    max_jump_m: float = 10.0
    neighbour_gap_steps: float = 3.0
    clutter_window: int = 5
    max_breaks: int = 2
    beam_divergence_deg: float = 0.15
    reflectance_jump: float = 0.3
    reflectance_weight: float = 1.0


@dataclass(frozen=True, eq=False)
class ContourPoints:
    """points (M, 3) float64 on the contours (LiDAR frame), weights (M,) float64, and the
    cloud's azimuth step (deg): how finely the contours are sampled."""

    points: NDArray[np.float64]
    weights: NDArray[np.float64]
    azimuth_step_deg: float


def _neighbour_pairs(lines: ScanLines, order: NDArray, settings: ContourSettings
                     ) -> NDArray[np.bool_]:
    """(N - 1,) whether sorted points k and k + 1 (`order` sorts the cloud by line, then
    azimuth) are neighbours on a line."""
    az = lines.azimuth_deg[order]
    el = lines.elevation_deg[order]
    line = lines.line[order]
    gap = settings.neighbour_gap_steps * lines.azimuth_step_deg
    # two returns of one line more than half the line spacing apart in elevation are not
    # neighbours: a line stored across the sweep's seam holds two lasers there
    return ((line[1:] == line[:-1]) & (np.abs(az[1:] - az[:-1]) <= gap)
            & (np.abs(el[1:] - el[:-1]) <= 0.5 * lines.line_spacing_deg))


def _breaks(values: NDArray, order: NDArray, same: NDArray, threshold: float, window: int
            ) -> NDArray[np.int64]:
    """(N,) how many of the 2 * window neighbour pairs around each point differ in `values`
    (N,) by more than threshold."""
    sorted_values = values[order]
    is_break = same & (np.abs(sorted_values[1:] - sorted_values[:-1]) > threshold)
    cumulative = np.concatenate(([0], np.cumsum(is_break)))
    index = np.arange(len(order))
    low = np.clip(index - window, 0, len(is_break))
    high = np.clip(index + window, 0, len(is_break))
    breaks = np.empty(len(order), dtype=np.int64)
    breaks[order] = cumulative[high] - cumulative[low]
    return breaks


def normalised_intensity(intensity: NDArray) -> NDArray[np.float64] | None:
    """Intensity (N,) divided by its 99th percentile and clipped to 0..1, or None when the
    cloud has no positive intensity: drivers give 0-1 (KITTI) or 0-255 (nuScenes, many
    others), and a robust per-cloud scale makes either the same."""
    intensity = np.asarray(intensity, dtype=np.float64)
    scale = np.percentile(intensity, 99.0) if len(intensity) else 0.0
    if not np.isfinite(scale) or scale <= 0.0:
        return None
    return np.clip(intensity / scale, 0.0, 1.0)


def _contour_points(points: NDArray, near: NDArray, far: NDArray, lines: ScanLines,
                    settings: ContourSettings) -> ContourPoints:
    """Edge points at the near range, between each pair's near and far directions."""
    ranges = lines.range_m
    toward_far = float(np.clip(
        0.5 * (1.0 - settings.beam_divergence_deg / lines.azimuth_step_deg), 0.0, 0.5))
    unit = points / np.maximum(ranges, 1e-9)[:, None]
    middle = unit[near] + toward_far * (unit[far] - unit[near])
    middle /= np.linalg.norm(middle, axis=1, keepdims=True)
    jump = ranges[far] - ranges[near]
    return ContourPoints(middle * ranges[near, None],
                         np.sqrt(np.minimum(jump, settings.max_jump_m)), lines.azimuth_step_deg)


def contour_points(points: NDArray, ring: NDArray | None,
                   settings: ContourSettings = ContourSettings()) -> ContourPoints:
    """Contour points of a LiDAR-frame cloud (N, >= 3) x y z [intensity] (see the module
    docstring: reflectance edges need the intensity column); ring (N,) or None (then
    derived, see `scan_lines`)."""
    cloud = np.asarray(points, dtype=np.float64)
    points = cloud[:, :3]
    lines = scan_lines(points, ring)
    r = lines.range_m
    order = np.lexsort((lines.azimuth_deg, lines.line))
    same = _neighbour_pairs(lines, order, settings)
    pairs = np.flatnonzero(same)
    first, second = order[pairs], order[pairs + 1]
    breaks = _breaks(r, order, same, settings.min_jump_m, settings.clutter_window)
    near = np.where(r[first] <= r[second], first, second)
    far = np.where(r[first] <= r[second], second, first)
    keep = (r[far] - r[near] > settings.min_jump_m) & (breaks[near] <= settings.max_breaks)
    contours = _contour_points(points, near[keep], far[keep], lines, settings)
    intensity = (normalised_intensity(cloud[:, 3])
                 if cloud.shape[1] > 3 and settings.reflectance_weight > 0.0 else None)
    if intensity is None:
        return contours
    # reflectance edges: a painted line, a sign's border; on one surface (no range break)
    jump = np.abs(intensity[first] - intensity[second])
    flicker = _breaks(intensity, order, same, settings.reflectance_jump, settings.clutter_window)
    keep = ((jump > settings.reflectance_jump)
            & (np.abs(r[first] - r[second]) < settings.min_jump_m)
            & (breaks[first] == 0) & (flicker[first] <= settings.max_breaks)
            & (flicker[second] <= settings.max_breaks))
    middle = 0.5 * (points[first[keep]] + points[second[keep]])
    return ContourPoints(np.concatenate([contours.points, middle]),
                         np.concatenate([contours.weights,
                                         settings.reflectance_weight * jump[keep]]),
                         contours.azimuth_step_deg)
