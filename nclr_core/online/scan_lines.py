"""Scan lines of a spinning LiDAR cloud, and the depth discontinuities along them.

A scan line is the set of returns of one laser in one sweep; two returns that follow each
other in azimuth on the same line are horizontal neighbours. Clouds come in three forms:
- with a ring (laser index) per point (nuScenes, most ROS drivers): the lines are the rings;
- without rings but stored line by line, each line one sweep in azimuth order (KITTI .bin):
  a new line starts where the azimuth wraps around (jumps back by more than half a turn);
- without rings in another order (column by column, or shuffled): the lines are the
  clusters of the elevation angle, split where sorted elevations leave a gap.
Each way is checked (enough lines, each line a real sweep) before it is used; a cloud none
of them explains raises a `ValueError` that asks for the ring field.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

# A cloud stored line by line wraps its azimuth once per line: between MIN_LINES and
# MAX_LINES wraps, and consecutive points a small azimuth step apart (median below
# MAX_ORDERED_STEP_DEG), else the storage order is not line by line.
MIN_LINES = 4
MAX_LINES = 512
MAX_ORDERED_STEP_DEG = 1.0
# Elevation clustering: a gap wider than ELEVATION_GAP_DEG between sorted elevation angles
# separates two lines; a line is kept as a sweep when it covers at least MIN_SWEEP_DEG of
# azimuth (returns behind the vehicle or towards the sky may be missing).
ELEVATION_GAP_DEG = 0.08
MIN_SWEEP_DEG = 90.0
# Lines must hold this share of the points for the derivation to count as explaining the cloud:
# lines that are sweeps, whose azimuth step (median between neighbours) is within a factor
# STEP_CONSISTENCY of the cloud's typical step (two lasers merged into one line halve it; one
# laser split into several multiplies it).
MIN_SHARE_IN_SWEEPS = 0.8
STEP_CONSISTENCY = 1.5


def _azimuth_deg(points: NDArray) -> NDArray[np.float64]:
    return np.degrees(np.arctan2(points[:, 1], points[:, 0]))


def _elevation_deg(points: NDArray) -> NDArray[np.float64]:
    return np.degrees(np.arctan2(points[:, 2], np.hypot(points[:, 0], points[:, 1])))


def _lines_from_storage_order(azimuth: NDArray) -> NDArray[np.int64] | None:
    """Line index (N,) when the cloud is stored line by line, else None."""
    step = np.diff(azimuth)
    if len(step) == 0 or np.median(np.abs(step)) > MAX_ORDERED_STEP_DEG:
        return None
    direction = np.sign(np.median(step))
    wraps = direction * step < -180.0
    if not MIN_LINES - 1 <= wraps.sum() <= MAX_LINES:
        return None
    return np.concatenate(([0], np.cumsum(wraps))).astype(np.int64)


def _lines_from_elevation(elevation: NDArray) -> NDArray[np.int64]:
    """Line index (N,) from gaps between the sorted elevation angles."""
    order = np.argsort(elevation, kind="stable")
    starts = np.diff(elevation[order]) > ELEVATION_GAP_DEG
    lines = np.empty(len(elevation), dtype=np.int64)
    lines[order] = np.concatenate(([0], np.cumsum(starts)))
    return lines


def _line_steps(lines: NDArray, azimuth: NDArray) -> tuple[NDArray, NDArray]:
    """Per line (L,): azimuth span (deg) and median step between azimuth neighbours (deg)."""
    order = np.lexsort((azimuth, lines))
    az, line = azimuth[order], lines[order]
    count = int(line[-1]) + 1
    starts = np.searchsorted(line, np.arange(count))
    ends = np.searchsorted(line, np.arange(count), side="right")
    span = np.zeros(count)
    step = np.full(count, np.inf)
    for k, (a, b) in enumerate(zip(starts, ends, strict=True)):
        if b - a >= 2:
            span[k] = az[b - 1] - az[a]
            step[k] = np.median(np.diff(az[a:b]))
    return span, step


def _explains_cloud(lines: NDArray, azimuth: NDArray) -> bool:
    """Whether `lines` look like real scan lines (see MIN_SHARE_IN_SWEEPS)."""
    count = int(lines.max()) + 1
    if not MIN_LINES <= count <= MAX_LINES:
        return False
    span, step = _line_steps(lines, azimuth)
    sweep = span >= MIN_SWEEP_DEG
    if not np.any(sweep):
        return False
    typical = np.median(step[sweep])
    good = sweep & (step <= STEP_CONSISTENCY * typical) & (step >= typical / STEP_CONSISTENCY)
    return float(np.mean(good[lines])) >= MIN_SHARE_IN_SWEEPS


def azimuth_step_deg(lines: NDArray, points: NDArray) -> float:
    """The cloud's horizontal resolution (deg): median over the sweeps of the median azimuth
    step between neighbours on a line."""
    span, step = _line_steps(lines, _azimuth_deg(np.asarray(points)))
    sweep = span >= MIN_SWEEP_DEG
    return float(np.median(step[sweep] if np.any(sweep) else step))


def scan_lines(points: NDArray, ring: NDArray | None = None) -> NDArray[np.int64]:
    """Scan-line index (N,) int64 of each point of a LiDAR-frame cloud (N, >= 3).

    `ring` (N,), when the driver gives one, is used as it is. Raises ValueError when the
    cloud has no ring and neither its storage order nor its elevation angles show lines.
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(f"points must be (N, >= 3), got {points.shape}")
    if ring is not None:
        ring = np.asarray(ring)
        if ring.shape != (len(points),):
            raise ValueError(f"ring must be ({len(points)},), got {ring.shape}")
        return np.unique(ring, return_inverse=True)[1].astype(np.int64)
    azimuth = _azimuth_deg(points)
    ordered = _lines_from_storage_order(azimuth)
    if ordered is not None and _explains_cloud(ordered, azimuth):
        return ordered
    clustered = _lines_from_elevation(_elevation_deg(points))
    if _explains_cloud(clustered, azimuth):
        return clustered
    raise ValueError(
        "cannot tell the LiDAR's scan lines: the cloud has no ring field, is not stored line "
        "by line, and its elevation angles do not form separate lines; pass the ring "
        "(laser index) of each point")


def line_spacing_deg(lines: NDArray, points: NDArray) -> float:
    """The cloud's vertical resolution (deg): median gap between the median elevations of
    lines adjacent in elevation."""
    elevation = _elevation_deg(np.asarray(points))
    count = int(lines.max()) + 1
    medians = np.array([np.median(elevation[lines == k]) for k in range(count)
                        if np.any(lines == k)])
    gaps = np.diff(np.sort(medians))
    gaps = gaps[gaps > 0.0]
    if len(gaps) == 0:
        raise ValueError("the cloud has a single scan line: no vertical resolution")
    return float(np.median(gaps))


def depth_jumps(points: NDArray, lines: NDArray, max_gap_deg: float,
                max_elevation_deg: float, min_jump_m: float, window: int
                ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Depth discontinuities along the scan lines of a cloud (N, >= 3).

    Returns `jump` (N,) float64, how much farther (m) the farther of a point's two horizontal
    neighbours is than the point itself (0 when neither is farther), and `breaks` (N,) int64,
    how many of the `2 * window` neighbour pairs around the point (`window` on each side)
    differ in range by more than `min_jump_m`.

    Neighbours are the previous and next returns in azimuth on the same line, taken only when
    they lie within `max_gap_deg` of azimuth (a missing return is no evidence of an edge)
    and within `max_elevation_deg` of elevation (a line stored across the sweep's seam holds
    two lasers there; half the line spacing tells them apart). The point with the jump is
    the near side of a depth edge: the occluding contour, which the camera also sees. An
    object's contour has one or two breaks around it (a pole: two); the scattered returns
    of foliage have many.
    """
    points = np.asarray(points, dtype=np.float64)
    rng = np.linalg.norm(points[:, :3], axis=1)
    azimuth = _azimuth_deg(points)
    elevation = _elevation_deg(points)
    order = np.lexsort((azimuth, lines))
    r, az, el, line = rng[order], azimuth[order], elevation[order], lines[order]
    same = ((line[1:] == line[:-1]) & (np.abs(az[1:] - az[:-1]) <= max_gap_deg)
            & (np.abs(el[1:] - el[:-1]) <= max_elevation_deg))
    diff = np.where(same, r[1:] - r[:-1], 0.0)  # pair j: point j+1 minus point j
    jump = np.zeros(len(r))
    jump[:-1] = np.maximum(jump[:-1], diff)  # the next point is farther
    jump[1:] = np.maximum(jump[1:], -diff)  # the previous point is farther
    is_break = np.concatenate(([0], np.cumsum(np.abs(diff) > min_jump_m)))
    index = np.arange(len(r))
    low = np.clip(index - window, 0, len(diff))
    high = np.clip(index + window, 0, len(diff))
    breaks = is_break[high] - is_break[low]
    out_jump, out_breaks = np.empty_like(jump), np.empty_like(breaks)
    out_jump[order] = jump
    out_breaks[order] = breaks
    return out_jump, out_breaks
