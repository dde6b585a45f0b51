"""The `guided` stage: matching restricted to windows around a reference pose's projections.

From a reference `T_ref` (the prior or the running estimate) and one network forward
(`NetworkFeatures`):
1. the points the network saw that `T_ref` puts in view (in front, inside the network
   image) are drawn stratified over depth: equal shares from log-spaced depth bins, so
   near points (translation) and far points (rotation) both count;
2. each round matches every chosen point inside a disc of `windows_cells[k]` feature cells
   around its projection (the window matcher, replaceable: a model with a fine matching
   head may bring its own), then solves the frame's robust pose (`solve_joint` on this one
   frame) and re-projects with it; the windows shrink from round to round and the last
   radius repeats `final_rounds` times;
3. the frame's matches of the last round come back, `poolable` when the matching held:
   a pose was solved, it converged (the last round moved the points less than
   `max_last_step_px`), enough matches agree with it and it lies within the bounds from
   `T_ref`; the frame's own pose comes back (`solved`) only when it is also precise enough
   to stand alone (σ within the settings): learned matches of one frame share regional
   biases, so a frame alone often cannot beat its prior in translation; it is then refused
   rather than degrade the prior, and its matches still serve a joint window.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from nclr_core.geometry.camera import CameraModel
from nclr_core.geometry.se3 import transform_points
from nclr_core.inference import NetworkFeatures
from nclr_core.models.feature_grid import cell_offset, pixel_to_cell
from nclr_core.network_input import to_input_pixels
from nclr_core.online.joint import JointSettings, solve_joint
from nclr_core.online.matches import FrameMatches
from nclr_core.online.pose import PoseEstimate, pose_delta


class CoarseWindowMatcher:
    """Soft matching of chosen points restricted to windows of the stride-s feature map.

    The match of point i in a window of radius r cells around a centre c (network px) is
    the soft-argmax Σ_j softmax_j(s_ij) C_j over the cells C_j within r·stride of c: the
    paper's soft matching with the window as its overlap. The similarity of the chosen
    points with every cell is computed once, at construction, for all rounds.

    Args:
        features: the frame's network forward; rows: (P,) indices into its used points.
    """

    def __init__(self, features: NetworkFeatures, rows: np.ndarray) -> None:
        C, self.h, self.w = features.image_feats.shape
        self.stride = features.stride
        self.convention = features.cell_convention
        self.offset = cell_offset(self.stride, self.convention)
        with torch.inference_mode():
            self.logits = features.similarity(
                features.point_feats[torch.as_tensor(rows, dtype=torch.long)],
                features.image_feats.reshape(C, -1).T).float()  # (P, h*w)

    def __call__(self, centres: np.ndarray, radius_cells: float) -> np.ndarray:
        """Matched network pixels (P, 2) float64 for window centres (P, 2) network px;
        NaN where a window holds no cell."""
        reach = int(math.ceil(radius_cells)) + 1
        steps = np.arange(-reach, reach + 1)
        di, dj = (a.reshape(-1) for a in np.meshgrid(steps, steps, indexing="ij"))
        centre_cell = np.rint(pixel_to_cell(np.nan_to_num(centres, nan=-1e6), self.stride,
                                            self.convention))
        rows = centre_cell[:, 1:2] + di[None, :]  # (P, D) cell rows and columns
        cols = centre_cell[:, 0:1] + dj[None, :]
        du = cols * self.stride + self.offset - centres[:, 0:1]
        dv = rows * self.stride + self.offset - centres[:, 1:2]
        inside = ((du * du + dv * dv <= (radius_cells * self.stride) ** 2)
                  & (rows >= 0) & (rows < self.h) & (cols >= 0) & (cols < self.w))
        index = np.where(inside, rows * self.w + cols, 0).astype(np.int64)
        logits = torch.gather(self.logits, 1, torch.from_numpy(index)).double().numpy()
        logits = np.where(inside, logits, -np.inf)
        empty = ~inside.any(1)
        logits[empty] = 0.0
        weights = np.exp(logits - logits.max(1, keepdims=True))
        weights /= weights.sum(1, keepdims=True)
        pixels = np.stack(((weights * (cols * self.stride + self.offset)).sum(1),
                           (weights * (rows * self.stride + self.offset)).sum(1)), axis=1)
        pixels[empty] = np.nan
        return pixels


# The window matcher seam: built per frame from (features, rows); called with window
# centres (P, 2) network px (NaN: not matched this round) and a radius in cells, it returns
# matched network pixels (P, 2) (NaN where it found none). A model with a fine
# (sub-pixel) matching head brings its own.
WindowMatcher = Callable[[NetworkFeatures, np.ndarray], Callable[[np.ndarray, float], np.ndarray]]


@dataclass(frozen=True)
class GuidedSettings:
    """The guided stage (windows in feature cells; pixels are network pixels).

    num_points: points matched per frame; min_points: fewer in view under T_ref -> refused.
    depth_bins: log-spaced depth bins between min_depth_m and max_depth_m for the draw.
    windows_cells: window radius per round (cells), shrinking; final_rounds: how many
        times the last radius runs (re-centred each time).
    border_margin_cells: a point is matched in a round only if its projection lies this far
        inside the network image: a window cut by the border, or a point truly outside the
        image, pulls its match inwards (a contraction, read as a translation along z).
    solve: the per-frame robust solve (`JointSettings` on one frame).
    min_inlier_ratio: fewer inliers than this share of the matches -> refused.
    max_sigma_rot_deg, max_sigma_trans_m: a larger σ on any camera axis -> refused.
    max_rotation_from_ref_deg, max_translation_from_ref_m: farther from T_ref -> refused.
    max_last_step_px: the last round moved the matched points' projections by more than
        this (median, network px) -> refused as not converged.
    seed: random state of the draw within a depth bin.
    """

    num_points: int = 1000
    min_points: int = 300
    depth_bins: int = 6
    min_depth_m: float = 1.0
    max_depth_m: float = 80.0
    windows_cells: tuple[float, ...] = (12.0, 6.0, 3.0)
    final_rounds: int = 2
    border_margin_cells: float = 1.0
    solve: JointSettings = JointSettings()
    min_inlier_ratio: float = 0.3
    max_sigma_rot_deg: float = 1.0
    max_sigma_trans_m: float = 0.05
    max_rotation_from_ref_deg: float = 15.0
    max_translation_from_ref_m: float = 0.5
    max_last_step_px: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_points < 6 or not 6 <= self.min_points <= self.num_points:
            raise ValueError("need 6 <= min_points <= num_points")
        if self.depth_bins < 1 or not 0 < self.min_depth_m < self.max_depth_m:
            raise ValueError("need depth_bins >= 1 and 0 < min_depth_m < max_depth_m")
        if not self.windows_cells or min(self.windows_cells) <= 0 or self.final_rounds < 1:
            raise ValueError("windows_cells must be positive radii, final_rounds >= 1")
        if not 0 <= self.min_inlier_ratio <= 1:
            raise ValueError("min_inlier_ratio must lie in [0, 1]")


@dataclass(frozen=True)
class GuidedResult:
    """One frame's guided matching.

    matches: the last round's matches (None when too few points were in view).
    inliers: (K,) bool, matches within the solve's inlier bound under the frame's pose.
    poolable: the matching held (see the module docstring): the matches may join a window.
    estimate: the frame's own pose with its covariance when `poolable`, else None.
    solved: the frame's pose is also precise enough to stand alone (use it only then);
        reason: why not ("" when solved).
    num_in_view: points of the forward that T_ref put in view.
    """

    matches: FrameMatches | None
    inliers: np.ndarray
    poolable: bool
    estimate: PoseEstimate | None
    solved: bool
    reason: str
    num_in_view: int


def _network_pixels(T: np.ndarray, xyz: np.ndarray, camera: CameraModel, A: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Network pixels (P, 2) of LiDAR points (P, 3) under T (NaN behind), and depth (P,)."""
    cam = transform_points(T, xyz)
    raw, depth = camera.project(cam)
    return raw @ A[:2, :2].T + A[:2, 2], depth


def choose_points(depth: np.ndarray, count: int, settings: GuidedSettings,
                  rng: np.random.Generator) -> np.ndarray:
    """Indices of up to `count` entries of `depth` (P,), stratified over log-spaced depth
    bins: each bin gets an equal share, a bin with fewer points gives its rest to others."""
    edges = np.geomspace(settings.min_depth_m, settings.max_depth_m, settings.depth_bins + 1)
    which = np.clip(np.searchsorted(edges, depth, side="right") - 1, 0,
                    settings.depth_bins - 1)
    members = [rng.permutation(np.flatnonzero(which == b)) for b in range(settings.depth_bins)]
    quota = np.zeros(settings.depth_bins, dtype=np.int64)
    sizes = np.array([len(m) for m in members])
    left = min(count, int(sizes.sum()))
    while left > 0:  # water-filling: equal shares, capped by what each bin holds
        open_bins = np.flatnonzero(quota < sizes)
        share = max(left // len(open_bins), 1)
        for b in open_bins:
            take = min(share, sizes[b] - quota[b], left)
            quota[b] += take
            left -= take
            if left == 0:
                break
    return np.sort(np.concatenate([m[:q] for m, q in zip(members, quota, strict=True)]))


def _match_refusal(estimate: PoseEstimate, inlier_share: float, last_step_px: float,
                   T_ref: np.ndarray, s: GuidedSettings) -> str:
    """Why the frame's matching did not hold ("" when it did)."""
    delta = pose_delta(T_ref, estimate.T_cam_lidar)
    rotation, translation = math.degrees(np.linalg.norm(delta[:3])), np.linalg.norm(delta[3:])
    checks = (
        (last_step_px > s.max_last_step_px,
         f"not converged: the last round moved the points {last_step_px:.1f} px"),
        (inlier_share < s.min_inlier_ratio,
         f"inlier share {inlier_share:.2f} < min_inlier_ratio {s.min_inlier_ratio}"),
        (rotation > s.max_rotation_from_ref_deg,
         f"{rotation:.2f} deg from the reference > {s.max_rotation_from_ref_deg}"),
        (translation > s.max_translation_from_ref_m,
         f"{translation:.3f} m from the reference > {s.max_translation_from_ref_m}"),
    )
    return next((text for failed, text in checks if failed), "")


def _precision_refusal(estimate: PoseEstimate, s: GuidedSettings) -> str:
    """Why the frame's pose is too imprecise to stand alone ("" when it is not)."""
    if estimate.sigma_rot_deg.max() > s.max_sigma_rot_deg:
        return (f"rotation sigma {estimate.sigma_rot_deg.max():.3f} deg > "
                f"max_sigma_rot_deg {s.max_sigma_rot_deg}")
    if estimate.sigma_trans_m.max() > s.max_sigma_trans_m:
        return (f"translation sigma {estimate.sigma_trans_m.max():.3f} m > "
                f"max_sigma_trans_m {s.max_sigma_trans_m}")
    return ""


def match_guided(features: NetworkFeatures, points: np.ndarray, camera: CameraModel,
                 T_ref: np.ndarray, settings: GuidedSettings | None = None,
                 matcher: WindowMatcher = CoarseWindowMatcher) -> GuidedResult:
    """The guided stage on one frame (see the module docstring).

    Args:
        features: the network forward on this frame (`Calibrator.features`).
        points: (N, 4) the frame's input points (those of the forward).
        camera: the frame's camera (the raw image the network saw).
        T_ref: (4, 4) reference T_cam_lidar whose projections centre the first windows.
        settings: the stage's settings; matcher: the window matcher (the seam for a fine,
            sub-pixel matching head).
    """
    s = settings or GuidedSettings()
    T_ref = np.asarray(T_ref, dtype=np.float64)
    if T_ref.shape != (4, 4) or not np.all(np.isfinite(T_ref)):
        raise ValueError(f"T_ref must be a finite (4, 4) transform, got {T_ref.shape}")
    xyz = points[features.used, :3].astype(np.float64)
    h, w = features.image_scores.shape
    margin = s.border_margin_cells * features.stride
    low, high = margin - 0.5, np.array([w, h]) * features.stride - 0.5 - margin

    def in_view(T: np.ndarray, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Network pixels of the points `which` under T, NaN unless in view (in front,
        inside the image by the border margin)."""
        net_px, depth = _network_pixels(T, xyz[which], camera, features.A)
        seen = (depth > s.min_depth_m) & np.all((net_px > low) & (net_px < high), axis=1)
        return np.where(seen[:, None], net_px, np.nan), depth

    centres, depth = in_view(T_ref, np.arange(len(xyz)))
    seen = np.flatnonzero(np.isfinite(centres[:, 0]))
    if len(seen) < s.min_points:
        return GuidedResult(None, np.zeros(0, dtype=bool), False, None, False,
                            f"only {len(seen)} points in view under the reference, fewer than "
                            f"min_points={s.min_points}", len(seen))
    rng = np.random.default_rng(s.seed)
    rows = seen[choose_points(depth[seen], s.num_points, s, rng)]
    centres = centres[rows]
    radii = (*s.windows_cells, *(s.windows_cells[-1],) * (s.final_rounds - 1))
    frame, solution, last_step, T = None, None, math.inf, None
    match = matcher(features, rows)
    for radius in radii:
        matched = match(centres, radius)
        found = np.all(np.isfinite(matched), axis=1)
        pixels = to_input_pixels(features.A, matched[found])
        if camera.distortion != "none":
            pixels = camera.undistort_points(pixels)
        usable = np.all(np.isfinite(pixels), axis=1)
        frame = FrameMatches(xyz[rows][found][usable], pixels[usable],
                             np.ones(int(usable.sum())), camera.K, features.pixel_scale)
        solution = solve_joint([frame], replace(s.solve, seed=s.seed), T)
        if not solution.solved:
            return GuidedResult(frame, solution.inlier_masks[0], False, None, False,
                                f"radius {radius:g} cells: {solution.reason}", len(seen))
        T = solution.estimate.T_cam_lidar
        moved, _ = in_view(T, rows)
        last_step = float(np.nanmedian(np.linalg.norm(moved - centres, axis=1)))
        centres = moved
    inliers = solution.inlier_masks[0]
    reason = _match_refusal(solution.estimate, float(inliers.mean()), last_step, T_ref, s)
    poolable = not reason
    reason = reason or _precision_refusal(solution.estimate, s)
    return GuidedResult(frame, inliers, poolable, solution.estimate if poolable else None,
                        not reason, reason, len(seen))

