"""The refinement's objective: how well a window's LiDAR depth edges land on image edges.

For a pose `apply_delta(T_ref, δ)` (δ = (ω, ρ), `nclr_core.online.pose`), every frame's
edge points are projected through its camera (lens distortion included) and read off the
frame's spread edge map (mean subtracted, `refine_features.spread_edges`) by bilinear
interpolation. The objective is the weighted mean of those scores over all the window's
points; a point that leaves the image scores 0, what a random pixel scores on average.
The point set is fixed when the objective is built (the points in view at `T_ref`), so
that the objective cannot grow by bringing more points into view.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from nclr_core.geometry.camera import CameraModel


@dataclass(frozen=True, eq=False)
class EdgeFrame:
    """One frame's fixed edge points and its spread edge map.

    points_rotated: (M, 3) LiDAR edge points rotated into the camera frame by T_ref's
    rotation (not yet translated); weights (M,); tiles (M,) int64 the image tile each point
    falls in at T_ref (for the clustered statistics); score_map (H, W) float32 of the
    camera's image size.
    """

    points_rotated: NDArray[np.float64]
    weights: NDArray[np.float64]
    tiles: NDArray[np.int64]
    camera: CameraModel
    score_map: NDArray[np.float32]


def _same_camera(a: CameraModel, b: CameraModel) -> bool:
    return (a.width == b.width and a.height == b.height and a.distortion == b.distortion
            and np.array_equal(a.K, b.K) and np.array_equal(a.D, b.D))


# cv2.remap takes images of fewer than 32767 rows: frames are stacked up to this many rows.
MAX_STACKED_ROWS = 32000


@dataclass(frozen=True, eq=False)
class _CameraGroup:
    """Frames seen through one camera, stacked: points (M, 3), weights (M,), each point's
    first row (M,) in `maps` (the frames' score maps (H, W) stacked into (F * H, W)), and
    each point's cluster (M,) over the whole window."""

    camera: CameraModel
    points: NDArray[np.float64]
    weights: NDArray[np.float64]
    rows: NDArray[np.float64]
    clusters: NDArray[np.int64]
    maps: NDArray[np.float32]


def _group_by_camera(frames: Sequence[EdgeFrame], tile_count: int) -> list[_CameraGroup]:
    groups: list[list[tuple[int, EdgeFrame]]] = []
    for index, frame in enumerate(frames):
        for group in groups:
            if (_same_camera(group[0][1].camera, frame.camera)
                    and (len(group) + 1) * frame.camera.height <= MAX_STACKED_ROWS):
                group.append((index, frame))
                break
        else:
            groups.append([(index, frame)])
    out = []
    for group in groups:
        height = group[0][1].camera.height
        out.append(_CameraGroup(
            camera=group[0][1].camera,
            points=np.concatenate([f.points_rotated for _, f in group]),
            weights=np.concatenate([f.weights for _, f in group]),
            rows=np.concatenate([np.full(len(f.weights), float(k * height))
                                 for k, (_, f) in enumerate(group)]),
            clusters=np.concatenate([f.tiles + i * tile_count for i, f in group]),
            maps=np.concatenate([f.score_map for _, f in group])))
    return out


def _bilinear(group: _CameraGroup, uv: NDArray[np.float64]) -> NDArray[np.float64]:
    """Values (M,) of each point's score map at its pixel uv (M, 2), bilinear (cv2.remap,
    1/32 px steps); 0 outside the image or for NaN uv."""
    width, height = group.camera.width, group.camera.height
    u, v = uv[:, 0], uv[:, 1]
    with np.errstate(invalid="ignore"):
        inside = (u >= 0.0) & (u <= width - 1.0) & (v >= 0.0) & (v <= height - 1.0)
    map_u = np.where(inside, u, -2.0).astype(np.float32)
    map_v = np.where(inside, v + group.rows, -2.0).astype(np.float32)
    values = cv2.remap(group.maps, map_u[None], map_v[None], cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return values[0].astype(np.float64)


def _rotation_matrix(omega: NDArray[np.float64]) -> NDArray[np.float64]:
    """exp(omega x) (3, 3) by Rodrigues' formula (here called thousands of times per window:
    scipy's Rotation costs more than the rest of an evaluation)."""
    angle = float(np.sqrt(omega @ omega))
    K = np.array([[0.0, -omega[2], omega[1]], [omega[2], 0.0, -omega[0]],
                  [-omega[1], omega[0], 0.0]])
    if angle < 1e-12:
        return np.eye(3) + K
    return (np.eye(3) + (np.sin(angle) / angle) * K
            + ((1.0 - np.cos(angle)) / angle**2) * (K @ K))


class WindowObjective:
    """J(δ) over a window of `EdgeFrame`s sharing one extrinsic, around `t_ref` (3,) (the
    translation of T_ref; rotations are already applied to the frames' points).
    `tile_count`: tiles per frame (the clusters of `cluster_sums`)."""

    def __init__(self, frames: Sequence[EdgeFrame], t_ref: NDArray[np.float64],
                 tile_count: int) -> None:
        self.t_ref = np.asarray(t_ref, dtype=np.float64)
        self.cluster_count = tile_count * len(frames)
        self.groups = _group_by_camera(frames, tile_count)
        self.total_weight = float(sum(g.weights.sum() for g in self.groups))
        if self.total_weight <= 0.0:
            raise ValueError("the window has no weighted edge points")
        self.cluster_weights = sum(
            np.bincount(g.clusters, g.weights, minlength=self.cluster_count)
            for g in self.groups)

    def _scores(self, delta: NDArray) -> list[NDArray[np.float64]]:
        """Per camera group, each point's weighted score (M,) at δ (6,)."""
        delta = np.asarray(delta, dtype=np.float64)
        R = _rotation_matrix(delta[:3])
        t = self.t_ref + delta[3:]
        scores = []
        for g in self.groups:
            uv, _ = g.camera.project(g.points @ R.T + t)
            scores.append(g.weights * _bilinear(g, uv))
        return scores

    def __call__(self, delta: NDArray) -> float:
        """J(δ): weighted mean score of the window's edge points."""
        return float(sum(s.sum() for s in self._scores(delta))) / self.total_weight

    def cluster_sums(self, delta: NDArray) -> NDArray[np.float64]:
        """(frames * tiles,) each (frame, image tile)'s share of J(δ); they sum to J."""
        sums = np.zeros(self.cluster_count)
        for g, scores in zip(self.groups, self._scores(delta), strict=True):
            sums += np.bincount(g.clusters, scores, minlength=self.cluster_count)
        return sums / self.total_weight
