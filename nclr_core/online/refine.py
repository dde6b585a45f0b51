"""Training-free refinement of `T_cam_lidar` over a window of frames (the `refine` stage).

Depth edges of the LiDAR clouds are aligned with the images' edges (Levinson & Thrun 2013;
`refine_features`, `refine_objective`), all frames of the window at once, coarse to fine.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize

from nclr_core.geometry.camera import CameraModel
from nclr_core.geometry.projection import project_points_with_camera
from nclr_core.online.lidar_edges import ContourSettings, contour_points
from nclr_core.online.pose import PoseEstimate, apply_delta
from nclr_core.online.refine_features import grey_level, image_edges, spread_edges
from nclr_core.online.refine_objective import EdgeFrame, WindowObjective


@dataclass(frozen=True, eq=False)
class RefineFrame:
    """One synchronised frame: image (H, W, 3) uint8 RGB as the camera gave it (distorted),
    points (N, 4) float32 x y z intensity in the LiDAR frame, the camera (its lens model is
    used), and the ring (laser index) of each point (N,) when the driver gives one."""

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


@dataclass(frozen=True)
class RefineSettings:
    """Every constant of the refinement."""

    max_rotation_deg: float = 6.0
    """Bound: the estimate may turn at most this far (geodesic, deg) from the start pose."""
    max_translation_m: float = 0.3
    """Bound: the estimate may move at most this far (m) from the start pose."""
    min_jump_m: float = 0.5
    """Two neighbouring LiDAR returns are an occluding contour when the far one is at least
    this much farther (m) (`lidar_edges`)."""
    max_jump_m: float = 10.0
    """Jumps are capped here before the square root (a point in front of the sky is no more
    an edge than one 10 m in front of a wall)."""
    clutter_window: int = 5
    """Clutter test: the scan-line neighbour pairs looked at on each side of an edge point."""
    max_breaks: int = 2
    """An edge point with more depth breaks (pairs differing by min_jump_m) than this among
    its 2 * clutter_window neighbour pairs is clutter (foliage), not an object's contour."""
    beam_divergence_deg: float = 0.15
    """The LiDAR's beam divergence (deg): where between a near and a far return the contour
    is placed (`lidar_edges`). Mechanical spinning LiDARs have 0.1-0.2 deg (2-3 mrad); a
    ray-cast simulator has 0."""
    neighbour_gap_steps: float = 3.0
    """Scan-line neighbours farther apart than this many azimuth steps are not neighbours."""
    min_depth_m: float = 1.0
    """Edge points nearer to the camera than this (m, at the start pose) are not used."""
    grid_points: int = 13
    """Coarsest level: the rotation is first searched on a grid of this many points per axis
    spanning +-max_rotation_deg; the grid step is also that level's kernel (decay below)."""
    finest_decay_deg: float = 0.15
    """Finest level's kernel: the image edges' reward halves every this many degrees of view
    angle (converted to pixels with each camera's focal length)."""
    level_ratio: float = 2.5
    """Coarse to fine: each level's kernel is this much narrower than the previous one."""
    blur_fraction: float = 0.0
    """Each level's image is smoothed (Gaussian sigma) by this fraction of its decay before
    its edges are taken: coarse levels see coarse edges (an image pyramid in effect)."""
    local_mean_decays: float = 8.0
    """When positive, the spread edge map has its local mean (a box of +-this many decays)
    subtracted instead of its global mean: landing in a textured region scores no better
    than its surroundings, only edges that stand out attract."""
    self_weight: float = 1.0 / 3.0
    """Share of the raw edge map in the spread map (Levinson & Thrun's alpha)."""
    starts: int = 4
    """Coarsest level: the local search starts from the best this many grid cells."""
    restarts: int = 3
    """Nelder-Mead restarts from its own result with a fresh simplex while it still improves
    (a collapsed simplex stops early in the flat valleys of this objective)."""
    x_tolerance: float = 0.05
    """Nelder-Mead stops when its simplex is this small, in units of the level's kernel (the
    kernel's angle for rotations, that angle times the points' median depth for
    translations)."""
    j_tolerance: float = 1e-4
    """... and its objective values differ by less than this (J is a mean edge score, ~1)."""
    hypotheses: int = 3
    """Distinct maxima carried from each level to the next (the finest level picks the
    best): a wider kernel's maximum may be biased by nearby texture edges."""
    cell_px: int = 64
    """Image tiles (px) that group points for the clustered statistics (the covariance and the
    improvement test): errors of nearby points are correlated, those of distant tiles less."""
    min_edge_points: int = 300
    """Refuse when the window has fewer depth-edge points in view at the start."""
    min_improvement_t: float = 3.0
    """Refuse unless the objective rose at the estimate by this many standard errors
    (paired over image tiles) above its value at the start."""
    max_sigma_fraction: float = 0.5
    """Refuse as flat when a rotation sigma exceeds this fraction of max_rotation_deg or a
    translation sigma this fraction of max_translation_m."""


@dataclass(frozen=True, eq=False)
class RefineResult:
    """What `refine` found: `estimate` (None when refused), `solved`, `reason` (why refused,
    or "solved"), the objective at the start and at the end, frames and points used, and
    `T_found` (4, 4), the maximum the search reached (for diagnostics: when refused it is
    not an estimate; None when no search ran)."""

    estimate: PoseEstimate | None
    solved: bool
    reason: str
    objective_start: float
    objective_end: float
    frames_used: int
    points_used: int
    T_found: NDArray | None = None


def _edge_points(frame: RefineFrame, T_start: NDArray, settings: RefineSettings
                 ) -> tuple[NDArray, NDArray]:
    """LiDAR-frame contour points (M, 3) in view at T_start and their weights (M,)."""
    contours = contour_points(frame.points, frame.ring, ContourSettings(
        min_jump_m=settings.min_jump_m, max_jump_m=settings.max_jump_m,
        neighbour_gap_steps=settings.neighbour_gap_steps,
        clutter_window=settings.clutter_window, max_breaks=settings.max_breaks,
        beam_divergence_deg=settings.beam_divergence_deg))
    view = project_points_with_camera(contours.points, T_start, frame.camera,
                                      settings.min_depth_m)
    return contours.points[view.in_image], contours.weights[view.in_image]


def _tiles(uv: NDArray, camera: CameraModel, cell_px: int) -> tuple[NDArray, int]:
    """Tile index (M,) of pixels uv (M, 2) and the number of tiles."""
    columns = int(np.ceil(camera.width / cell_px))
    rows = int(np.ceil(camera.height / cell_px))
    col = np.clip((uv[:, 0] // cell_px).astype(np.int64), 0, columns - 1)
    row = np.clip((uv[:, 1] // cell_px).astype(np.int64), 0, rows - 1)
    return row * columns + col, rows * columns


class _Window:
    """The window's fixed edge points around T_start and its objective at each level."""

    def __init__(self, frames: Sequence[RefineFrame], T_start: NDArray,
                 settings: RefineSettings) -> None:
        self.T_start = T_start
        self.settings = settings
        R = T_start[:3, :3]
        self.parts = []
        self.cell_count = 0
        for frame in frames:
            points, weights = _edge_points(frame, T_start, settings)
            if len(points) == 0:
                continue
            uv, depth = frame.camera.project(points @ R.T + T_start[:3, 3])
            cells, count = _tiles(uv, frame.camera, settings.cell_px)
            self.cell_count = max(self.cell_count, count)
            self.parts.append((frame, points @ R.T, weights, cells, depth,
                               grey_level(np.asarray(frame.image))))
        self.points_used = sum(len(p[1]) for p in self.parts)

    def median_depth(self) -> float:
        return float(np.median(np.concatenate([p[4] for p in self.parts])))

    def objective(self, decay_deg: float) -> WindowObjective:
        """J at a level whose edge reward halves every `decay_deg` of view angle."""
        frames = []
        for frame, rotated, weights, cells, _, grey in self.parts:
            decay_px = abs(frame.camera.K[0, 0]) * np.radians(decay_deg)
            edges = image_edges(grey, self.settings.blur_fraction * decay_px)
            score = spread_edges(edges, decay_px, self.settings.self_weight,
                                 self.settings.local_mean_decays * decay_px)
            frames.append(EdgeFrame(rotated, weights, cells, frame.camera, score))
        return WindowObjective(frames, self.T_start[:3, 3], self.cell_count)


def _within_bounds(delta: NDArray, settings: RefineSettings) -> bool:
    return (np.degrees(np.linalg.norm(delta[:3])) <= settings.max_rotation_deg
            and np.linalg.norm(delta[3:]) <= settings.max_translation_m)


def _local_search(J: WindowObjective, start: NDArray, scale: NDArray,
                  settings: RefineSettings) -> tuple[NDArray, float]:
    """Nelder-Mead from δ = start (6,) in units of `scale` (6,); outside the bounds the
    objective is -inf. Returns the best δ and J there."""
    def negative(x: NDArray) -> float:
        delta = x * scale
        return np.inf if not _within_bounds(delta, settings) else -J(delta)

    x, value = start / scale, negative(start / scale)
    for _ in range(1 + settings.restarts):
        simplex = np.vstack([x, x + np.eye(6)])
        result = minimize(negative, x, method="Nelder-Mead",
                          options={"initial_simplex": simplex, "xatol": settings.x_tolerance,
                                   "fatol": settings.j_tolerance, "maxfev": 1500})
        improved = value - result.fun > settings.j_tolerance
        x, value = result.x, min(value, float(result.fun))
        if not improved:
            break
    return x * scale, -value


def decay_schedule(settings: RefineSettings) -> list[float]:
    """The levels' kernels (deg), coarse to fine: from the grid step to finest_decay_deg in
    equal ratios, the number of steps the one that brings the ratio nearest level_ratio."""
    coarsest = 2.0 * settings.max_rotation_deg / (settings.grid_points - 1)
    span = np.log(max(coarsest, settings.finest_decay_deg) / settings.finest_decay_deg)
    steps = max(int(round(span / np.log(settings.level_ratio))), 1)
    return [float(d) for d in np.exp(np.log(coarsest) - span * np.arange(steps + 1) / steps)]


def _grid_maxima(J: WindowObjective, settings: RefineSettings) -> list[NDArray]:
    """δ (6,) of the best `settings.starts` local maxima of J on a grid of rotations within
    the bounds (zero translation), best first."""
    axis = np.linspace(-settings.max_rotation_deg, settings.max_rotation_deg,
                       settings.grid_points)
    omega_deg = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1)
    inside = np.linalg.norm(omega_deg, axis=-1) <= settings.max_rotation_deg
    values = np.full(inside.shape, -np.inf)
    for index in zip(*np.nonzero(inside), strict=True):
        values[index] = J(np.concatenate([np.radians(omega_deg[index]), np.zeros(3)]))
    padded = np.pad(values, 1, constant_values=-np.inf)
    neighbours = np.max([np.roll(padded, (a, b, c), axis=(0, 1, 2))[1:-1, 1:-1, 1:-1]
                         for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)
                         if (a, b, c) != (0, 0, 0)], axis=0)
    maxima = np.flatnonzero(inside & (values >= neighbours))
    best = maxima[np.argsort(values.reshape(-1)[maxima])[::-1][: settings.starts]]
    return [np.concatenate([np.radians(omega_deg.reshape(-1, 3)[k]), np.zeros(3)])
            for k in best]


def _hessian(J: WindowObjective, delta: NDArray, step: NDArray) -> NDArray:
    """(6, 6) central finite-difference Hessian of J at δ with steps `step` (6,)."""
    H = np.zeros((6, 6))
    center = J(delta)
    E = np.diag(step)
    for i in range(6):
        H[i, i] = (J(delta + E[i]) - 2.0 * center + J(delta - E[i])) / step[i] ** 2
        for j in range(i + 1, 6):
            H[i, j] = H[j, i] = (J(delta + E[i] + E[j]) - J(delta + E[i] - E[j])
                                 - J(delta - E[i] + E[j]) + J(delta - E[i] - E[j])) / (
                4.0 * step[i] * step[j])
    return H


def _cluster_gradients(J: WindowObjective, delta: NDArray, step: NDArray) -> NDArray:
    """(C, 6) gradient of each cluster's share of J at δ (central differences)."""
    gradients = []
    for i in range(6):
        e = np.zeros(6)
        e[i] = step[i]
        gradients.append((J.cluster_sums(delta + e) - J.cluster_sums(delta - e))
                         / (2.0 * step[i]))
    return np.stack(gradients, axis=1)


def refine(frames: Sequence[RefineFrame], T_start: NDArray,
           settings: RefineSettings = RefineSettings()) -> RefineResult:
    """Refine `T_cam_lidar` (4, 4) from `T_start` over `frames` that share it."""
    T_start = np.asarray(T_start, dtype=np.float64)
    if T_start.shape != (4, 4):
        raise ValueError(f"T_start must be (4, 4), got {T_start.shape}")
    if len(frames) == 0:
        raise ValueError("refine needs at least one frame")
    window = _Window(frames, T_start, settings)

    def refused(reason: str, j_start: float = float("nan"), j_end: float = float("nan"),
                T_found: NDArray | None = None) -> RefineResult:
        return RefineResult(None, False, reason, j_start, j_end, len(window.parts),
                            window.points_used, T_found)

    if window.points_used < settings.min_edge_points:
        return refused(f"too few depth-edge points in view: {window.points_used} < "
                       f"{settings.min_edge_points}")
    depth = window.median_depth()
    hypotheses: list[NDArray] = []
    for level, decay_deg in enumerate(decay_schedule(settings)):
        J = window.objective(decay_deg)
        decay = np.radians(decay_deg)
        scale = np.array([decay] * 3 + [decay * depth] * 3)
        if level == 0:
            hypotheses = _grid_maxima(J, settings)
        found = sorted((_local_search(J, h, scale, settings) for h in hypotheses),
                       key=lambda c: -c[1])
        hypotheses = []
        for candidate, _ in found:  # distinct maxima, best first
            if all(np.max(np.abs(candidate - h) / scale) > 1.0 for h in hypotheses):
                hypotheses.append(candidate)
        hypotheses = hypotheses[: settings.hypotheses]
    delta = hypotheses[0]
    j_start, j_end = J(np.zeros(6)), J(delta)
    T_found = apply_delta(T_start, delta)
    # statistics at the finest level
    step = np.array([decay] * 3 + [decay * depth] * 3) * 0.5
    H = _hessian(J, delta, step)
    G = _cluster_gradients(J, delta, step)
    gain = J.cluster_sums(delta) - J.cluster_sums(np.zeros(6))
    cells = np.count_nonzero(gain)
    t_gain = gain.sum() / (np.sqrt(cells / max(cells - 1, 1)) * np.linalg.norm(gain) + 1e-300)
    if not _within_bounds(delta * 1.02, settings):
        return refused("the maximum lies on the bounds", j_start, j_end, T_found)
    eigenvalues = np.linalg.eigvalsh(H)
    if not np.all(eigenvalues < 0.0):
        return refused("flat maximum: the objective's curvature is not negative definite",
                       j_start, j_end, T_found)
    H_inv = np.linalg.inv(H)
    covariance = H_inv @ (G.T @ G) @ H_inv
    estimate = PoseEstimate(apply_delta(T_start, delta), covariance)
    if (estimate.sigma_rot_deg.max() > settings.max_sigma_fraction * settings.max_rotation_deg
            or estimate.sigma_trans_m.max()
            > settings.max_sigma_fraction * settings.max_translation_m):
        return refused("flat maximum: the uncertainty spans the bounds", j_start, j_end, T_found)
    if t_gain < settings.min_improvement_t:
        return refused(f"no significant improvement over the start (t = {t_gain:.1f})",
                       j_start, j_end, T_found)
    return RefineResult(estimate, True, "solved", j_start, j_end, len(window.parts),
                        window.points_used, T_found)
