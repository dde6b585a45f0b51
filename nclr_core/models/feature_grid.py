"""Pixel <-> feature-cell convention shared by every stride-s feature map.

Pixel centres sit at integer coordinates (u = column, v = row). Cell (i, j) of a stride-s map
covers pixels [s*j, s*j + s - 1] x [s*i, s*i + s - 1], so its centre is at
(u, v) = (s*j + (s - 1)/2, s*i + (s - 1)/2); for s = 4 that is (4j + 1.5, 4i + 1.5).
"""
from __future__ import annotations

import numpy as np
import torch


def _check_stride(stride: int) -> None:
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")


def cell_centers(
    h: int,
    w: int,
    stride: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Pixel centre (u, v) of every cell of an (h, w) stride-`stride` map.

    Returns:
        (h*w, 2) tensor, row-major: entry i*w + j is cell (row i, column j).
    """
    _check_stride(stride)
    if h < 0 or w < 0:
        raise ValueError(f"feature map size must be non-negative, got ({h}, {w})")
    half = (stride - 1) / 2.0
    rows = torch.arange(h, dtype=dtype, device=device) * stride + half
    cols = torch.arange(w, dtype=dtype, device=device) * stride + half
    v, u = torch.meshgrid(rows, cols, indexing="ij")
    return torch.stack((u.reshape(-1), v.reshape(-1)), dim=-1)


def pixel_to_cell(uv: torch.Tensor | np.ndarray, stride: int) -> torch.Tensor | np.ndarray:
    """Continuous cell coordinates (col, row) of pixels (u, v).

    Inverse of `cell_centers`: a cell centre maps to its integer (j, i); `round()` of the
    result gives the cell a pixel falls in (pixel u in [s*j, s*j + s - 1] -> j).

    Args:
        uv: (..., 2) pixel coordinates (u, v), a torch tensor or a NumPy array.
    Returns:
        (..., 2) float (col, row), of the same kind (tensor or array) as `uv`.
    """
    _check_stride(stride)
    if uv.shape[-1] != 2:
        raise ValueError(f"uv must have a last dimension of 2, got shape {tuple(uv.shape)}")
    if isinstance(uv, np.ndarray):
        if not np.issubdtype(uv.dtype, np.floating):
            uv = uv.astype(np.float64)
    elif not torch.is_floating_point(uv):
        uv = uv.to(torch.float32)
    return (uv - (stride - 1) / 2.0) / stride
