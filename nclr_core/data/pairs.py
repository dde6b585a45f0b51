"""Pretext pairs and their ground truth (METHOD.md §1).

`PairSampler` applies a random rigid motion `T_r` to the LiDAR cloud (rotation about the
LiDAR z axis, translation in x-y) and derives the ground truth the network learns:
`T_gt = T_raw · T_r⁻¹`, so that projecting `p_aug = T_r p` with `T_gt` equals projecting `p`
with `T_raw`; plus the overlap masks on points and on stride-s feature cells.
`PerturbedPrior` is the online-calibration regime: a prior `T_init` near the ground truth.

Both run on numpy samples at the network image resolution (after resize / crop), before
batching by `nclr_core.data.collate.collate_pairs`.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import cv2
import numpy as np

from nclr_core.data.transforms import RandomTransform, Sample
from nclr_core.geometry.projection import project_points
from nclr_core.geometry.se3 import compose, invert, make_transform, random_perturbation
from nclr_core.models.feature_grid import pixel_to_cell


class OverlapGroundTruth(NamedTuple):
    """Overlap ground truth of one frame.

    point_overlap: (N,) bool, the point projects inside the image with positive depth.
    point_pixel: (N, 2) float32 projection (u, v) in pixels; zero where not in the overlap.
    image_overlap: (H/s, W/s) bool, cells within `radius_cells` of a hit cell.
    """

    point_overlap: np.ndarray
    point_pixel: np.ndarray
    image_overlap: np.ndarray


def image_size(sample: Sample) -> tuple[int, int]:
    """(H, W) of the sample's image: uint8 (H, W, 3) or normalised float (3, H, W)."""
    image = sample.get("image")
    if not isinstance(image, np.ndarray) or image.ndim != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"sample 'image' must be a 3-D array, got shape {shape}")
    if image.dtype == np.uint8 and image.shape[2] == 3:
        return int(image.shape[0]), int(image.shape[1])
    if np.issubdtype(image.dtype, np.floating) and image.shape[0] == 3:
        return int(image.shape[1]), int(image.shape[2])
    raise ValueError(
        f"sample 'image' must be uint8 (H, W, 3) or float (3, H, W), "
        f"got {image.dtype} {image.shape}"
    )


def hit_cells(pixels: np.ndarray, grid_size: tuple[int, int], stride: int) -> np.ndarray:
    """(h, w) bool mask of the stride-`stride` cells that contain at least one pixel.

    Args:
        pixels: (N, 2) (u, v) inside the image; the cell of pixel u is floor(u / s + 0.5),
            the one whose centre s*j is nearest (`nclr_core.models.feature_grid`), clipped
            to the map.
    """
    h, w = grid_size
    cells = np.floor(pixel_to_cell(np.asarray(pixels, dtype=np.float64), stride) + 0.5)
    col = np.clip(cells[:, 0].astype(np.int64), 0, w - 1)
    row = np.clip(cells[:, 1].astype(np.int64), 0, h - 1)
    mask = np.zeros((h, w), dtype=bool)
    mask[row, col] = True
    return mask


def dilate_cells(mask: np.ndarray, radius_cells: int) -> np.ndarray:
    """Square dilation: a cell is set when a set cell lies within `radius_cells` in row and
    column (Chebyshev distance). (h, w) bool -> (h, w) bool."""
    if radius_cells < 0:
        raise ValueError(f"radius_cells must be >= 0, got {radius_cells}")
    if radius_cells == 0:
        return mask.copy()
    kernel = np.ones((2 * radius_cells + 1, 2 * radius_cells + 1), dtype=np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def overlap_ground_truth(
    xyz: np.ndarray,
    T_cam_lidar: np.ndarray,
    K: np.ndarray,
    size: tuple[int, int],
    feature_stride: int,
    radius_cells: int,
) -> OverlapGroundTruth:
    """Point and cell overlap of a cloud under an extrinsic.

    Args:
        xyz: (N, 3) points in the LiDAR frame of `T_cam_lidar`.
        T_cam_lidar: (4, 4); K: (3, 3) at the image resolution; size: (H, W), both divisible
            by `feature_stride`.
    """
    H, W = size
    if H % feature_stride or W % feature_stride:
        raise ValueError(f"image size {H}x{W} is not divisible by feature stride {feature_stride}")
    proj = project_points(xyz, T_cam_lidar, K, (H, W))
    overlap = proj.in_image  # positive depth and nearest pixel centre inside the image
    pixel = np.zeros((len(xyz), 2), dtype=np.float32)
    pixel[overlap] = proj.uv[overlap]
    grid = (H // feature_stride, W // feature_stride)
    hits = hit_cells(pixel[overlap], grid, feature_stride)
    return OverlapGroundTruth(overlap, pixel, dilate_cells(hits, radius_cells))


def z_motion(angle: float, tx: float, ty: float) -> np.ndarray:
    """(4, 4) rotation by `angle` (rad) about z, then translation (tx, ty, 0)."""
    c, s = math.cos(angle), math.sin(angle)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return make_transform(R, np.array([tx, ty, 0.0]))


class PairSampler(RandomTransform):
    """Random rigid augmentation of the LiDAR cloud and its pretext ground truth.

    Reads `points` (N, 4), `T_cam_lidar` (4, 4) = T_raw, `K` (3, 3) and `image`. Writes
    - `points`: (N, 4) float32, xyz replaced by `T_r · p` (intensity kept);
    - `T_aug`: (4, 4) float64 = T_r (raw LiDAR frame -> augmented frame);
    - `T_gt` and `T_cam_lidar`: (4, 4) float64 = T_raw · T_r⁻¹, so `T_cam_lidar` keeps
      meaning "the extrinsic of `points`" (T_raw = T_gt · T_aug);
    - `point_overlap` (N,) bool, `point_pixel` (N, 2) float32, `image_overlap`
      (H/s, W/s) bool: see `overlap_ground_truth`.

    The rotation angle is uniform in [-rotation_range, rotation_range] (rad), the x and y
    translations uniform in [-translation_range, translation_range] (m); z is untouched.
    Zero ranges give the identity motion (ground truth only).
    """

    def __init__(
        self,
        rotation_range: float = math.pi,
        translation_range: float = 15.0,
        overlap_radius_cells: int = 1,
        feature_stride: int = 4,
        seed: int | None = None,
    ) -> None:
        super().__init__(seed)
        if not 0.0 <= rotation_range <= math.pi:
            raise ValueError(f"rotation_range must be in [0, pi], got {rotation_range}")
        if translation_range < 0:
            raise ValueError(f"translation_range must be >= 0, got {translation_range}")
        if feature_stride < 1 or overlap_radius_cells < 0:
            raise ValueError(
                f"need feature_stride >= 1 and overlap_radius_cells >= 0, "
                f"got {feature_stride}, {overlap_radius_cells}"
            )
        self.rotation_range = float(rotation_range)
        self.translation_range = float(translation_range)
        self.overlap_radius_cells = int(overlap_radius_cells)
        self.feature_stride = int(feature_stride)

    def sample_motion(self, rng: np.random.Generator) -> np.ndarray:
        """Draw T_r (4, 4)."""
        angle = rng.uniform(-self.rotation_range, self.rotation_range)
        tx, ty = rng.uniform(-self.translation_range, self.translation_range, size=2)
        return z_motion(angle, tx, ty)

    def __call__(self, sample: Sample) -> Sample:
        points = np.asarray(sample["points"])
        if points.ndim != 2 or points.shape[1] < 3:
            raise ValueError(f"sample 'points' must be (N, >=3), got {points.shape}")
        T_raw = np.asarray(sample["T_cam_lidar"], dtype=np.float64)
        T_r = self.sample_motion(self.rng(sample))
        T_gt = compose(T_raw, invert(T_r))
        xyz = points[:, :3].astype(np.float64) @ T_r[:3, :3].T + T_r[:3, 3]
        augmented = points.astype(np.float32, copy=True)
        augmented[:, :3] = xyz
        gt = overlap_ground_truth(
            xyz, T_gt, sample["K"], image_size(sample), self.feature_stride,
            self.overlap_radius_cells,
        )
        sample.update(
            points=augmented,
            T_aug=T_r,
            T_gt=T_gt,
            T_cam_lidar=T_gt,
            point_overlap=gt.point_overlap,
            point_pixel=gt.point_pixel,
            image_overlap=gt.image_overlap,
        )
        return sample


class PerturbedPrior(RandomTransform):
    """Online-calibration regime: write a prior `T_init` (4, 4) near the ground truth.

    The cloud is not moved. `T_init = T_gt · ΔT` with ΔT a random motion of the LiDAR frame
    (`nclr_core.geometry.se3.random_perturbation`): rotation about a uniform axis by an
    angle uniform in [0, max_angle_deg], translation per axis within ±max_translation_m
    (`translation_region="box"`) or inside that ball ("ball"). Hence the prior's rotation
    error is that angle and its translation error |Δt|. `T_gt` is taken from the sample
    (e.g. written by `PairSampler`) or, absent, set to `T_cam_lidar`.
    """

    def __init__(
        self,
        max_angle_deg: float = 10.0,
        max_translation_m: float = 0.25,
        translation_region: str = "box",
        seed: int | None = None,
    ) -> None:
        super().__init__(seed)
        if not 0.0 <= max_angle_deg <= 180.0:
            raise ValueError(f"max_angle_deg must be in [0, 180], got {max_angle_deg}")
        if max_translation_m < 0:
            raise ValueError(f"max_translation_m must be >= 0, got {max_translation_m}")
        if translation_region not in ("ball", "box"):
            raise ValueError(
                f"translation_region must be 'ball' or 'box', got {translation_region!r}"
            )
        self.max_angle_rad = math.radians(max_angle_deg)
        self.max_translation_m = float(max_translation_m)
        self.translation_region = translation_region

    def __call__(self, sample: Sample) -> Sample:
        T_gt = np.asarray(sample.get("T_gt", sample["T_cam_lidar"]), dtype=np.float64)
        delta = random_perturbation(
            self.max_angle_rad, self.max_translation_m, self.rng(sample), self.translation_region
        )
        sample["T_gt"] = T_gt
        sample["T_init"] = compose(T_gt, delta)
        return sample
