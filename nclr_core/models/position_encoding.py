"""Sinusoidal position encodings for fusion tokens: 3-D metric point coordinates (metres) and
2-D pixel coordinates (u, v) of image tokens (Vaswani et al. 2017, per axis).

Each axis gets `channels // (2 * num_dims)` frequencies with wavelengths spaced
geometrically between `min_wavelength` and `max_wavelength` (in the coordinates' units),
encoded as (sin, cos) pairs; channels left over are zero.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalEncoding(nn.Module):
    """Fixed (parameter-free) sinusoidal encoding of D-dimensional coordinates.

    Args:
        num_dims: D (3 for points, 2 for pixels).
        channels: output width; must be at least 2 * D.
        min_wavelength, max_wavelength: shortest and longest wavelength, coordinate units.
    """

    def __init__(
        self, num_dims: int, channels: int, min_wavelength: float, max_wavelength: float
    ) -> None:
        super().__init__()
        if num_dims < 1 or channels < 2 * num_dims:
            raise ValueError(
                f"need channels >= 2 * num_dims, got channels={channels} num_dims={num_dims}"
            )
        if not 0 < min_wavelength <= max_wavelength:
            raise ValueError(
                f"need 0 < min_wavelength <= max_wavelength, got {min_wavelength}, "
                f"{max_wavelength}"
            )
        self.num_dims = num_dims
        self.channels = channels
        num_freqs = channels // (2 * num_dims)
        ratios = torch.linspace(0.0, 1.0, num_freqs, dtype=torch.float64)  # [0.] when one
        wavelengths = min_wavelength * (max_wavelength / min_wavelength) ** ratios
        self.register_buffer(
            "angular_freqs", (2.0 * math.pi / wavelengths).to(torch.float32), persistent=False
        )

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., D) coordinates -> (..., channels) encoding."""
        if coords.shape[-1] != self.num_dims:
            raise ValueError(
                f"expected coordinates with last dimension {self.num_dims}, "
                f"got {tuple(coords.shape)}"
            )
        phases = coords.to(self.angular_freqs.dtype).unsqueeze(-1) * self.angular_freqs
        enc = torch.cat((phases.sin(), phases.cos()), dim=-1).flatten(-2)  # (..., D * 2F)
        missing = self.channels - enc.shape[-1]
        if missing:
            enc = torch.cat((enc, enc.new_zeros((*enc.shape[:-1], missing))), dim=-1)
        return enc
