"""Voxelisation of offset-batched point clouds with torch ops (unique over integer coordinates).

Points outside the point-cloud range are clamped onto the range boundary before
voxelisation (decision): every point keeps a voxel and therefore a feature, far points share
the border voxels, and `Voxels.in_range` marks which points were inside.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Voxels:
    """Result of `voxelize` for N points in B frames, M occupied voxels.

    Attributes:
        indices: (M, 4) int32 contiguous (batch, z, y, x) voxel indices, sorted.
        point_to_voxel: (N,) int64 row of `indices` holding each point.
        point_features: (N, F + 3) per-point fine features: the point's extra columns
            (e.g. intensity) then its offset from the voxel centre in voxel units ([-0.5, 0.5]).
        voxel_features: (M, F + 3) mean of `point_features` over the points of each voxel.
        in_range: (N,) bool, the point lies inside the point-cloud range.
        batch_index: (N,) int64 frame of each point.
        spatial_shape: (Z, Y, X) grid size in voxels.
        batch_size: number of frames B.
    """

    indices: torch.Tensor
    point_to_voxel: torch.Tensor
    point_features: torch.Tensor
    voxel_features: torch.Tensor
    in_range: torch.Tensor
    batch_index: torch.Tensor
    spatial_shape: tuple[int, int, int]
    batch_size: int


def batch_index_from_offset(offset: torch.Tensor, num_points: int) -> torch.Tensor:
    """Frame index of each point from the cumulative end indices (Pointcept convention).

    Args:
        offset: (B,) int64, frame b owns points[offset[b-1]:offset[b]].
        num_points: N, must equal offset[-1].
    Returns:
        (N,) int64 frame index.
    Raises:
        ValueError: offset is not 1-D, not strictly increasing, or does not end at N.
    """
    if offset.dim() != 1 or offset.numel() == 0:
        raise ValueError(f"offset must be a non-empty 1-D tensor, got {tuple(offset.shape)}")
    if offset.dtype.is_floating_point:
        raise ValueError(f"offset must be an integer tensor, got {offset.dtype}")
    counts = torch.diff(offset, prepend=offset.new_zeros(1))
    if bool((counts <= 0).any()):
        raise ValueError(f"every frame needs at least one point; offset = {offset.tolist()}")
    if int(offset[-1]) != num_points:
        raise ValueError(f"offset[-1] = {int(offset[-1])} but there are {num_points} points")
    return torch.repeat_interleave(
        torch.arange(offset.numel(), device=offset.device), counts.long()
    )


def grid_shape(
    point_range: tuple[float, float, float, float, float, float],
    voxel_size: float,
    multiple: int = 1,
) -> tuple[int, int, int]:
    """(Z, Y, X) voxel grid covering the range, each rounded up to a multiple of `multiple`.

    Args:
        point_range: (x_min, y_min, z_min, x_max, y_max, z_max) metres.
        voxel_size: voxel edge, metres.
        multiple: e.g. 2**(number of stride-2 downsamplings), so that no voxel is lost.
    """
    lo, hi = point_range[:3], point_range[3:]
    if voxel_size <= 0 or any(h <= low for low, h in zip(lo, hi, strict=True)):
        raise ValueError(f"bad voxel grid: range {point_range}, voxel size {voxel_size}")
    # round() first: (51.2 - -51.2) / 0.05 is 2048.0000000000002 in floating point
    sizes = [math.ceil(round((h - low) / voxel_size, 6)) for low, h in zip(lo, hi, strict=True)]
    sizes = [-(-s // multiple) * multiple for s in sizes]
    return sizes[2], sizes[1], sizes[0]


def voxelize(
    points: torch.Tensor,
    offset: torch.Tensor,
    voxel_size: float,
    point_range: tuple[float, float, float, float, float, float],
    spatial_shape: tuple[int, int, int],
) -> Voxels:
    """Assign points to voxels of a regular grid and average their fine features per voxel.

    Args:
        points: (N, 3 + F) float, x y z (metres, LiDAR frame) then F extra features.
        offset: (B,) int64 cumulative end index per frame.
        voxel_size: voxel edge, metres.
        point_range: (x_min, y_min, z_min, x_max, y_max, z_max); voxel (x, y, z) index i
            spans [min + i * voxel_size, min + (i + 1) * voxel_size).
        spatial_shape: (Z, Y, X) grid size (see `grid_shape`).
    """
    if points.dim() != 2 or points.shape[1] < 3:
        raise ValueError(f"points must be (N, 3 + F), got {tuple(points.shape)}")
    if not bool(torch.isfinite(points).all()):
        raise ValueError("points contain NaN or infinite values")
    batch = batch_index_from_offset(offset, points.shape[0])
    xyz = points[:, :3]
    lo = xyz.new_tensor(point_range[:3])
    hi = xyz.new_tensor(point_range[3:])
    in_range = ((xyz >= lo) & (xyz < hi)).all(dim=1)
    # Clamp onto the range; a point on the upper bound stays in the last voxel of the range.
    extent = (hi - lo) / voxel_size
    rel = ((xyz - lo) / voxel_size).clamp(min=torch.zeros_like(extent), max=extent)
    last = xyz.new_tensor(grid_shape(point_range, voxel_size)[::-1]) - 1
    if bool((last >= xyz.new_tensor(spatial_shape[::-1])).any()):
        raise ValueError(f"spatial_shape {spatial_shape} does not cover range {point_range}")
    cell = rel.floor().clamp(max=last)
    point_offset = (rel - cell - 0.5).clamp(-0.5, 0.5)
    cell = cell.long()
    size_z, size_y, size_x = spatial_shape
    key = ((batch * size_z + cell[:, 2]) * size_y + cell[:, 1]) * size_x + cell[:, 0]
    unique_keys, point_to_voxel = torch.unique(key, sorted=True, return_inverse=True)
    x = unique_keys % size_x
    y = (unique_keys // size_x) % size_y
    z = (unique_keys // (size_x * size_y)) % size_z
    b = unique_keys // (size_x * size_y * size_z)
    indices = torch.stack((b, z, y, x), dim=1).to(torch.int32).contiguous()

    point_features = torch.cat((points[:, 3:], point_offset), dim=1)
    num_voxels = unique_keys.numel()
    sums = point_features.new_zeros((num_voxels, point_features.shape[1]))
    sums.index_add_(0, point_to_voxel, point_features)
    counts = torch.bincount(point_to_voxel, minlength=num_voxels).to(sums.dtype)
    return Voxels(
        indices=indices,
        point_to_voxel=point_to_voxel,
        point_features=point_features,
        voxel_features=sums / counts.unsqueeze(1),
        in_range=in_range,
        batch_index=batch,
        spatial_shape=tuple(spatial_shape),
        batch_size=int(offset.numel()),
    )


def voxel_centers(
    indices: torch.Tensor,
    voxel_size: float,
    stride: int,
    point_range: tuple[float, float, float, float, float, float],
) -> torch.Tensor:
    """Metric centres (x, y, z) of voxels given by (batch, z, y, x) indices at a tensor stride.

    A stride-s voxel with index i covers fine voxels [s*i, s*(i+1)), so its centre is
    min + (s*i + s/2) * voxel_size.

    Args:
        indices: (M, 4) int (batch, z, y, x).
    Returns:
        (M, 3) float32 metres in the LiDAR frame.
    """
    zyx = indices[:, 1:].to(torch.float32)
    xyz = zyx.flip(1)
    lo = xyz.new_tensor(point_range[:3])
    return lo + (xyz * stride + stride / 2.0) * voxel_size
