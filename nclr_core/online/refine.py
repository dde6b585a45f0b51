"""Training-free refinement of `T_cam_lidar` over a window of frames (the `refine` stage).

The occluding contours of the LiDAR clouds (`lidar_edges`) are aligned with the images'
edges (`refine_features`) after Levinson & Thrun (2013): all frames of the window at once
(`refine_objective`), coarse to fine from a grid over the rotation bounds
(`refine_search`). The estimate carries the sandwich covariance of the objective's maximum
(`refine_uncertainty`); it is refused, with the reason, when the window has too few
contours, the maximum lies on the bounds or is flat, it is not significantly better than
the start, or another maximum scores alike.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from nclr_core.geometry.camera import CameraModel
from nclr_core.geometry.projection import project_points_with_camera
from nclr_core.online.lidar_edges import ContourSettings, contour_points
from nclr_core.online.pose import PoseEstimate, apply_delta
from nclr_core.online.refine_features import grey_level, image_edges, spread_edges
from nclr_core.online.refine_objective import EdgeFrame, WindowObjective
from nclr_core.online.refine_search import SearchSettings, search, within_bounds
from nclr_core.online.refine_uncertainty import (
    cluster_gradients,
    hessian,
    paired_t,
    sandwich_covariance,
)


@dataclass(frozen=True, eq=False)
class RefineFrame:
    """One synchronised frame: image (H, W, 3) uint8 RGB as the camera gave it (distorted),
    points (N, >= 3) float32 x y z [intensity ...] in the LiDAR frame, the camera (its lens
    model is used), and the ring (laser index) of each point (N,) when the driver gives one
    (else the scan lines are derived, see `scan_lines`)."""

    image: NDArray[np.uint8]
    points: NDArray[np.float32]
    camera: CameraModel
    ring: NDArray | None = None

    def __post_init__(self) -> None:
        image, points = np.asarray(self.image), np.asarray(self.points)
        if image.shape != (self.camera.height, self.camera.width, 3) or image.dtype != np.uint8:
            raise ValueError(f"image must be ({self.camera.height}, {self.camera.width}, 3) "
                             f"uint8 RGB as the camera model says, got {image.shape} "
                             f"{image.dtype}")
        if points.ndim != 2 or points.shape[1] < 3 or not np.all(np.isfinite(points[:, :3])):
            raise ValueError(f"points must be finite (N, >= 3), got {points.shape}")
        if self.ring is not None and np.shape(self.ring) != (len(points),):
            raise ValueError(f"ring must be ({len(points)},), got {np.shape(self.ring)}")


@dataclass(frozen=True)
class RefineSettings:
    """Every constant of the refinement."""

    max_rotation_deg: float = 6.0
    """Bound: the estimate may turn at most this far (geodesic, deg) from the start pose.
    Set it a little above the start's expected error: the search grid spans it."""
    max_translation_m: float = 0.3
    """Bound: the estimate may move at most this far (m) from the start pose."""
    min_jump_m: float = 0.5
    """Two neighbouring LiDAR returns on a scan line are an occluding contour when the far
    one is at least this much farther (m) (`lidar_edges`)."""
    max_jump_m: float = 10.0
    """Jumps are capped here before the square root that weights a contour point."""
    neighbour_gap_steps: float = 3.0
    """Scan-line neighbours farther apart than this many azimuth steps are not neighbours."""
    clutter_window: int = 5
    """Clutter test: the scan-line neighbour pairs looked at on each side of a contour."""
    max_breaks: int = 2
    """A contour whose near return has more range breaks (pairs differing by min_jump_m)
    among its 2 * clutter_window neighbour pairs is foliage clutter, not an object's
    contour (a pole has two: its left and right side)."""
    beam_divergence_deg: float = 0.15
    """The LiDAR's beam divergence (deg): where between a near and a far return the contour
    is placed (`lidar_edges`). Mechanical spinning LiDARs have 0.1-0.2 deg (2-3 mrad); a
    ray-cast simulator has 0."""
    reflectance_jump: float = 0.3
    """Two neighbouring returns on one surface whose intensities (each cloud scaled by its
    99th percentile, `lidar_edges.normalised_intensity`) differ by more than this are a
    reflectance edge (painted lines, signs)."""
    reflectance_weight: float = 1.0
    """Weight of a reflectance edge per unit of intensity jump (0: depth contours only; a
    depth contour weighs 0.7-3.2). Painted lines constrain what vertical contours cannot (the
    roll, the translation)."""
    min_depth_m: float = 1.0
    """Contour points nearer to the camera than this (m, at the start pose) are not used."""
    grid_points: int = 13
    """Coarsest level: the rotation is first searched on a grid of this many points per axis
    spanning +-max_rotation_deg; the grid step is also that level's kernel (decay below)."""
    finest_decay_deg: float = 0.15
    """Finest level's kernel: the image edges' reward halves every this many degrees of view
    angle (converted to pixels with each camera's focal length)."""
    min_decay_px: float = 1.5
    """No kernel is narrower than this many pixels (a small image's edges are not sharper)."""
    level_ratio: float = 2.5
    """Coarse to fine: each level's kernel is about this much narrower than the previous."""
    local_mean_decays: float = 8.0
    """The spread edge map has its local mean (a box of +-this many kernels) subtracted:
    landing in a textured region scores no better than its surroundings, only edges that
    stand out attract (a wide kernel otherwise pulls points into foliage)."""
    self_weight: float = 1.0 / 3.0
    """Share of the raw edge map in the spread map (Levinson & Thrun's alpha)."""
    starts: int = 6
    """Coarsest level: the local search starts from the best this many grid maxima."""
    hypotheses: int = 3
    """Distinct maxima carried from each level to the next (the finest level picks the
    best): a wider kernel's maximum may be off by more than the next kernel reaches."""
    restarts: int = 3
    """Nelder-Mead restarts from its own result with a fresh simplex while it improves."""
    x_tolerance: float = 0.05
    """Nelder-Mead stops when its simplex is this small, in units of the level's kernel (its
    angle for rotations, that angle times the points' median depth for translations)."""
    j_tolerance: float = 1e-4
    """... and its objective values differ by less than this (J is a mean edge score)."""
    valley_directions: int = 2
    """After each local search, J is also scanned along this many directions where it
    curves least (Hessian eigenvectors): flat valleys stall Nelder-Mead."""
    valley_reach: float = 6.0
    """... out to this many of the level's kernels on either side ..."""
    valley_points: int = 25
    """... at this many points."""
    tile_px: int = 64
    """Image tiles (px) that group points into clusters for the covariance and the paired
    tests: errors of nearby points are correlated, those of distant tiles less."""
    min_edge_points: int = 300
    """Refuse when the window has fewer contour points in view at the start."""
    min_improvement_t: float = 3.0
    """Refuse unless J at the estimate beats J at the start by this many standard errors
    (paired over the clusters)."""
    min_ambiguity_t: float = 3.0
    """Refuse when another maximum, distinct from the estimate, is not beaten by this many
    standard errors (paired over the clusters)."""
    ambiguity_kernels: float = 3.0
    """... counting only maxima farther than this many finest kernels in some coordinate."""
    floor_azimuth_steps: float = 0.5
    """The covariance's systematic floor, added to the sandwich: a contour is only known to
    within the LiDAR's azimuth step, and that error is shared by all the points of a
    contour, so no amount of points averages it out. Each rotation axis gets a sigma of
    this many azimuth steps, each translation axis that angle times the contours' median
    depth."""
    max_sigma_fraction: float = 0.5
    """Refuse as flat when a rotation sigma exceeds this fraction of max_rotation_deg or a
    translation sigma this fraction of max_translation_m."""


@dataclass(frozen=True, eq=False)
class RefineResult:
    """What `refine` found: `estimate` (None when refused), `solved`, `reason` (why refused,
    or "solved"), the objective at the start and at the end, frames and points used, and
    `T_found` (4, 4), the maximum the search reached, and `tests`, the statistics the
    refusal looked at (`t_improvement`, `t_ambiguity`: paired t statistics; for diagnostics:
    when refused, T_found is not an estimate; None / empty when no search ran)."""

    estimate: PoseEstimate | None
    solved: bool
    reason: str
    objective_start: float
    objective_end: float
    frames_used: int
    points_used: int
    T_found: NDArray | None = None
    tests: dict[str, float] = field(default_factory=dict)


def _contours_in_view(frame: RefineFrame, T_start: NDArray, settings: RefineSettings
                      ) -> tuple[NDArray, NDArray, float]:
    """LiDAR-frame contour points (M, 3) in view at T_start, their weights (M,), and the
    cloud's azimuth step (deg)."""
    contours = contour_points(frame.points, frame.ring, ContourSettings(
        min_jump_m=settings.min_jump_m, max_jump_m=settings.max_jump_m,
        neighbour_gap_steps=settings.neighbour_gap_steps,
        clutter_window=settings.clutter_window, max_breaks=settings.max_breaks,
        beam_divergence_deg=settings.beam_divergence_deg,
        reflectance_jump=settings.reflectance_jump,
        reflectance_weight=settings.reflectance_weight))
    view = project_points_with_camera(contours.points, T_start, frame.camera,
                                      settings.min_depth_m)
    return (contours.points[view.in_image], contours.weights[view.in_image],
            contours.azimuth_step_deg)


def _tiles(uv: NDArray, camera: CameraModel, tile_px: int) -> tuple[NDArray, int]:
    """Tile index (M,) of pixels uv (M, 2) and the number of tiles."""
    columns = int(np.ceil(camera.width / tile_px))
    rows = int(np.ceil(camera.height / tile_px))
    col = np.clip((uv[:, 0] // tile_px).astype(np.int64), 0, columns - 1)
    row = np.clip((uv[:, 1] // tile_px).astype(np.int64), 0, rows - 1)
    return row * columns + col, rows * columns


@dataclass(frozen=True, eq=False)
class _FrameContours:
    """One frame's contour points fixed at T_start: rotated (M, 3) by T_start's rotation
    (not yet translated), weights (M,), tiles (M,) (clusters), depth (M,) at T_start, and
    the frame's edge map (H, W)."""

    frame: RefineFrame
    rotated: NDArray[np.float64]
    weights: NDArray[np.float64]
    tiles: NDArray[np.int64]
    depth: NDArray[np.float64]
    edges: NDArray[np.float32]


class _Window:
    """The window's contour points, fixed at T_start (those in view there, so that no pose
    can score by bringing more points into view), and its objective at each level."""

    def __init__(self, frames: Sequence[RefineFrame], T_start: NDArray,
                 settings: RefineSettings) -> None:
        self.T_start = T_start
        self.settings = settings
        R = T_start[:3, :3]
        self.parts: list[_FrameContours] = []
        self.tile_count = 0
        steps = []
        for frame in frames:
            points, weights, step = _contours_in_view(frame, T_start, settings)
            steps.append(step)
            if len(points) == 0:
                continue
            uv, depth = frame.camera.project(points @ R.T + T_start[:3, 3])
            tiles, count = _tiles(uv, frame.camera, settings.tile_px)
            self.tile_count = max(self.tile_count, count)
            self.parts.append(_FrameContours(frame, points @ R.T, weights, tiles, depth,
                                             image_edges(grey_level(np.asarray(frame.image)))))
        self.points_used = sum(len(p.weights) for p in self.parts)
        self.azimuth_step_deg = float(np.median(steps))
        self._maps: dict[tuple[float, int], NDArray] = {}

    def median_depth(self) -> float:
        return float(np.median(np.concatenate([p.depth for p in self.parts])))

    def _score_map(self, part: _FrameContours, decay_deg: float) -> NDArray[np.float32]:
        """The frame's spread edge map at a level (cached: every level is built twice)."""
        key = (decay_deg, id(part))
        if key not in self._maps:
            decay_px = max(abs(part.frame.camera.K[0, 0]) * np.radians(decay_deg),
                           self.settings.min_decay_px)
            self._maps[key] = spread_edges(part.edges, decay_px, self.settings.self_weight,
                                           self.settings.local_mean_decays * decay_px)
        return self._maps[key]

    def objective(self, decay_deg: float, min_depth_m: float) -> WindowObjective:
        """J at a level whose edge reward halves every `decay_deg` of view angle, over the
        points at least `min_depth_m` deep at T_start (all of them when fewer than
        min_edge_points are)."""
        deep = [p.depth >= min_depth_m for p in self.parts]
        if sum(int(d.sum()) for d in deep) < self.settings.min_edge_points:
            deep = [np.ones(len(p.depth), dtype=bool) for p in self.parts]
        frames = [EdgeFrame(p.rotated[keep], p.weights[keep], p.tiles[keep], p.frame.camera,
                            self._score_map(p, decay_deg))
                  for p, keep in zip(self.parts, deep, strict=True)]
        return WindowObjective(frames, self.T_start[:3, 3], self.tile_count)


def _search_settings(settings: RefineSettings) -> SearchSettings:
    return SearchSettings(
        max_rotation_deg=settings.max_rotation_deg,
        max_translation_m=settings.max_translation_m, grid_points=settings.grid_points,
        finest_decay_deg=settings.finest_decay_deg, level_ratio=settings.level_ratio,
        starts=settings.starts, hypotheses=settings.hypotheses, restarts=settings.restarts,
        x_tolerance=settings.x_tolerance, j_tolerance=settings.j_tolerance,
        valley_directions=settings.valley_directions, valley_reach=settings.valley_reach,
        valley_points=settings.valley_points)


def refine(frames: Sequence[RefineFrame], T_start: NDArray,
           settings: RefineSettings = RefineSettings()) -> RefineResult:
    """Refine `T_cam_lidar` (4, 4) from `T_start` over `frames` that share it."""
    T_start = np.asarray(T_start, dtype=np.float64)
    if T_start.shape != (4, 4) or not np.all(np.isfinite(T_start)):
        raise ValueError(f"T_start must be a finite (4, 4) transform, got {T_start.shape}")
    if len(frames) == 0:
        raise ValueError("refine needs at least one frame")
    window = _Window(frames, T_start, settings)

    tests: dict[str, float] = {}

    def result(reason: str, j_start: float = float("nan"), j_end: float = float("nan"),
               T_found: NDArray | None = None, estimate: PoseEstimate | None = None
               ) -> RefineResult:
        return RefineResult(estimate, estimate is not None, reason, j_start, j_end,
                            len(window.parts), window.points_used, T_found, dict(tests))

    if window.points_used < settings.min_edge_points:
        return result(f"too few contour points in view: {window.points_used} < "
                      f"{settings.min_edge_points}")
    search_settings = _search_settings(settings)
    depth = window.median_depth()
    maxima, J, scale = search(window.objective, depth, search_settings)
    best = maxima[0]
    zero = np.zeros(6)
    j_start = J(zero)
    T_found = apply_delta(T_start, best.delta)
    found = (j_start, best.value, T_found)
    t_gain = paired_t(J, best.delta, zero)
    tests["t_improvement"] = t_gain
    distinct = [m for m in maxima[1:]
                if np.max(np.abs(m.delta - best.delta) / scale) > settings.ambiguity_kernels]
    t_others = [paired_t(J, best.delta, m.delta) for m in distinct]
    tests["t_ambiguity"] = min(t_others, default=float("inf"))
    if not within_bounds(best.delta, search_settings, margin=0.98):
        return result("the maximum lies on the bounds", *found)
    step = 0.5 * scale
    H = hessian(J, best.delta, step)
    if not np.all(np.linalg.eigvalsh(H) < 0.0):
        return result("flat maximum: the objective's curvature is not negative definite",
                      *found)
    floor = np.radians(settings.floor_azimuth_steps * window.azimuth_step_deg)
    covariance = (sandwich_covariance(H, cluster_gradients(J, best.delta, step))
                  + np.diag([floor**2] * 3 + [(floor * depth) ** 2] * 3))
    estimate = PoseEstimate(T_found, covariance)
    if (estimate.sigma_rot_deg.max() > settings.max_sigma_fraction * settings.max_rotation_deg
            or estimate.sigma_trans_m.max()
            > settings.max_sigma_fraction * settings.max_translation_m):
        return result("flat maximum: the uncertainty spans the bounds", *found)
    if t_gain < settings.min_improvement_t:
        return result(f"no significant improvement over the start (t = {t_gain:.1f})", *found)
    for other, t_other in zip(distinct, t_others, strict=True):
        if t_other < settings.min_ambiguity_t:
            away = other.delta - best.delta
            return result(f"ambiguous: another maximum {np.degrees(np.linalg.norm(away[:3])):.2f}"
                          f" deg / {np.linalg.norm(away[3:]):.3f} m away scores alike "
                          f"(t = {t_other:.1f})", *found)
    return result("solved", *found, estimate=estimate)
