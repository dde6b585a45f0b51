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
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from nclr_core.online.scan_lines import ScanLines, scan_lines


@dataclass(frozen=True)
class ContourSettings:
    """What counts as an occluding contour (see the module docstring)."""

    min_jump_m: float = 0.5
    max_jump_m: float = 10.0
    neighbour_gap_steps: float = 3.0
    clutter_window: int = 5
    max_breaks: int = 2
    beam_divergence_deg: float = 0.15


@dataclass(frozen=True, eq=False)
class ContourPoints:
    """points (M, 3) float64 on the contours (LiDAR frame), weights (M,) float64, and the
    cloud's azimuth step (deg): how finely the contours are sampled."""

    points: NDArray[np.float64]
    weights: NDArray[np.float64]
    azimuth_step_deg: float


def _horizontal_pairs(lines: ScanLines, order: NDArray, settings: ContourSettings
                      ) -> tuple[NDArray, NDArray, NDArray]:
    """Neighbour pairs along the lines: (first, second) indices (P,) into the cloud, and
    the number of breaks (N,) around each point (see the module docstring)."""
    az = lines.azimuth_deg[order]
    el = lines.elevation_deg[order]
    line = lines.line[order]
    r = lines.range_m[order]
    gap = settings.neighbour_gap_steps * lines.azimuth_step_deg
    # two returns of one line more than half the line spacing apart in elevation are not
    # neighbours: a line stored across the sweep's seam holds two lasers there
    same = ((line[1:] == line[:-1]) & (np.abs(az[1:] - az[:-1]) <= gap)
            & (np.abs(el[1:] - el[:-1]) <= 0.5 * lines.line_spacing_deg))
    is_break = same & (np.abs(r[1:] - r[:-1]) > settings.min_jump_m)
    cumulative = np.concatenate(([0], np.cumsum(is_break)))
    index = np.arange(len(order))
    low = np.clip(index - settings.clutter_window, 0, len(is_break))
    high = np.clip(index + settings.clutter_window, 0, len(is_break))
    breaks = np.empty(len(order), dtype=np.int64)
    breaks[order] = cumulative[high] - cumulative[low]
    pairs = np.flatnonzero(same)
    return order[pairs], order[pairs + 1], breaks


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
    """Occluding-contour points of a LiDAR-frame cloud (N, >= 3) (see the module docstring);
    ring (N,) or None (then derived, see `scan_lines`)."""
    points = np.asarray(points, dtype=np.float64)[:, :3]
    lines = scan_lines(points, ring)
    r = lines.range_m
    order = np.lexsort((lines.azimuth_deg, lines.line))
    first, second, breaks = _horizontal_pairs(lines, order, settings)
    near_h = np.where(r[first] <= r[second], first, second)
    far_h = np.where(r[first] <= r[second], second, first)
    keep = (r[far_h] - r[near_h] > settings.min_jump_m) & (breaks[near_h] <= settings.max_breaks)
    return _contour_points(points, near_h[keep], far_h[keep], lines, settings)
