"""Scan lines of a spinning LiDAR cloud.

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

from dataclasses import dataclass

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


@dataclass(frozen=True, eq=False)
class ScanLines:
    """A cloud's (N points) scan lines and the angles of its points.

    line (N,) int64: the point's line, numbered by median elevation (0 the lowest);
    azimuth_deg, elevation_deg, range_m (N,) float64 as seen from the LiDAR's origin;
    azimuth_step_deg: horizontal resolution (median over the sweeps of the median azimuth
    step between neighbours on a line); line_spacing_deg: vertical resolution (median gap
    between the median elevations of adjacent lines).
    """

    line: NDArray[np.int64]
    azimuth_deg: NDArray[np.float64]
    elevation_deg: NDArray[np.float64]
    range_m: NDArray[np.float64]
    azimuth_step_deg: float
    line_spacing_deg: float


def _describe(points: NDArray, lines: NDArray, azimuth: NDArray) -> ScanLines:
    """ScanLines of a cloud (N, >= 3) from any line labels (N,) int >= 0."""
    elevation = _elevation_deg(points)
    labels, lines = np.unique(lines, return_inverse=True)
    medians = np.array([np.median(elevation[lines == k]) for k in range(len(labels))])
    rank = np.empty(len(labels), dtype=np.int64)
    rank[np.argsort(medians, kind="stable")] = np.arange(len(labels))
    gaps = np.diff(np.sort(medians))
    gaps = gaps[gaps > 0.0]
    if len(gaps) == 0:
        raise ValueError("the cloud has a single scan line: no vertical resolution")
    span, step = _line_steps(lines, azimuth)
    sweep = span >= MIN_SWEEP_DEG
    return ScanLines(line=rank[lines], azimuth_deg=azimuth, elevation_deg=elevation,
                     range_m=np.linalg.norm(points[:, :3], axis=1),
                     azimuth_step_deg=float(np.median(step[sweep] if np.any(sweep) else step)),
                     line_spacing_deg=float(np.median(gaps)))


def scan_lines(points: NDArray, ring: NDArray | None = None) -> ScanLines:
    """The scan lines of a LiDAR-frame cloud (N, >= 3) (see ScanLines).

    `ring` (N,), when the driver gives one, is used as it is. Raises ValueError when the
    cloud has no ring and neither its storage order nor its elevation angles show lines.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(f"points must be (N, >= 3), got {points.shape}")
    if ring is not None:
        ring = np.asarray(ring)
        if ring.shape != (len(points),):
            raise ValueError(f"ring must be ({len(points)},), got {ring.shape}")
        return _describe(points, ring, _azimuth_deg(points))
    azimuth = _azimuth_deg(points)
    ordered = _lines_from_storage_order(azimuth)
    if ordered is not None and _explains_cloud(ordered, azimuth):
        return _describe(points, ordered, azimuth)
    clustered = _lines_from_elevation(_elevation_deg(points))
    if _explains_cloud(clustered, azimuth):
        return _describe(points, clustered, azimuth)
    raise ValueError(
        "cannot tell the LiDAR's scan lines: the cloud has no ring field, is not stored line "
        "by line, and its elevation angles do not form separate lines; pass the ring "
        "(laser index) of each point")


