"""Pixel <-> feature-cell convention shared by every stride-s feature map.

Pixel centres sit at integer coordinates (u = column, v = row). Cell (i, j) of a stride-s map
is centred at pixel (u, v) = (s*j, s*i): that is where the ResNet stem puts it (a k x k
convolution or pooling of stride 2 with padding (k - 1) / 2 centres output j on input 2j, so
every stage of stride s centres cell j on pixel s*j), and `upsample_to_stride` keeps the FPN's
top-down path on the same grid. A cell "contains" the pixels nearest to its centre,
[s*j - s/2, s*j + s/2).

`convention="legacy"` gives the centres s*j + (s - 1)/2 that models trained before this
convention (the shipped model up to issue 12) learned with; they keep them (model config
`cell_convention: legacy`).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

CELL_CONVENTIONS = ("stem", "legacy")


def _check_stride(stride: int) -> None:
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")


def cell_centers(
    h: int,
    w: int,
    stride: int,
    *,
    convention: str = "stem",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Pixel centre (u, v) = (stride*j, stride*i) of every cell of an (h, w) map (plus
    (stride - 1)/2 with `convention="legacy"`).

    Returns:
        (h*w, 2) tensor, row-major: entry i*w + j is cell (row i, column j).
    """
    if h < 0 or w < 0:
        raise ValueError(f"feature map size must be non-negative, got ({h}, {w})")
    offset = cell_offset(stride, convention)
    rows = torch.arange(h, dtype=dtype, device=device) * stride + offset
    cols = torch.arange(w, dtype=dtype, device=device) * stride + offset
    v, u = torch.meshgrid(rows, cols, indexing="ij")
    return torch.stack((u.reshape(-1), v.reshape(-1)), dim=-1)


def cell_offset(stride: int, convention: str = "stem") -> float:
    """Pixel coordinate of cell 0's centre on either axis: 0, or (stride - 1)/2 (legacy)."""
    _check_stride(stride)
    if convention not in CELL_CONVENTIONS:
        raise ValueError(f"cell convention must be one of {CELL_CONVENTIONS}, got "
                         f"{convention!r}")
    return (stride - 1) / 2.0 if convention == "legacy" else 0.0


def pixel_to_cell(uv: torch.Tensor | np.ndarray, stride: int, convention: str = "stem"
                  ) -> torch.Tensor | np.ndarray:
    """Continuous cell coordinates (col, row) = ((u, v) - offset) / stride of pixels (u, v),
    offset = `cell_offset(stride, convention)`.

    Inverse of `cell_centers`: a cell centre maps to its integer (j, i); `round()` of the
    result gives the cell whose centre is nearest.

    Args:
        uv: (..., 2) pixel coordinates (u, v), a torch tensor or a NumPy array.
    Returns:
        (..., 2) float (col, row), of the same kind (tensor or array) as `uv`.
    """
    offset = cell_offset(stride, convention)
    if uv.shape[-1] != 2:
        raise ValueError(f"uv must have a last dimension of 2, got shape {tuple(uv.shape)}")
    if isinstance(uv, np.ndarray):
        if not np.issubdtype(uv.dtype, np.floating):
            uv = uv.astype(np.float64)
    elif not torch.is_floating_point(uv):
        uv = uv.to(torch.float32)
    return (uv - offset) / stride


def upsample_to_stride(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear x2 upsampling of a stride-2s map to stride s on the grid of `cell_centers`.

    Output cell j sits at input coordinate j / 2 (even j: an input cell, odd j: the mean of
    two neighbours; the last row / column is repeated past the border). `F.interpolate`'s
    `align_corners=False` assumes cell centres at s*j + (s - 1)/2 instead and would shift
    every upsampled map by s/4 pixels.

    Args:
        x: (B, C, h, w) map.
        size: (h_out, w_out) with h_out <= 2h + 1 and w_out <= 2w + 1.
    Returns:
        (B, C, h_out, w_out).
    """
    h, w = x.shape[-2:]
    h_out, w_out = size
    if not (0 < h_out <= 2 * h + 1 and 0 < w_out <= 2 * w + 1):
        raise ValueError(f"cannot upsample a {h}x{w} map x2 to {h_out}x{w_out}")
    padded = F.pad(x, (0, 1, 0, 1), mode="replicate")
    up = F.interpolate(padded, size=(2 * h + 1, 2 * w + 1), mode="bilinear", align_corners=True)
    return up[..., :h_out, :w_out]
