"""Point-to-pixel matching from a similarity matrix (paper §3.4, Eqs. 4-5, METHOD.md §4).

`SoftMatcher`: the predicted pixel of point i is Ĉ_i = Σ_j w_ij C_j with
w_ij = softmax_j(s_ij / τ_m) over the allowed cells (differentiable).
`HardMatcher`: the pixel of the arg-max cell (the ablation of paper Table 8).
Both return a confidence per point, max_j w_ij, used as an EPnP weight factor.
"""
from __future__ import annotations

import torch
from torch import nn

MATCHING_MODES = ("soft", "hard")


def _check_inputs(
    similarity: torch.Tensor, cell_pixels: torch.Tensor, cell_mask: torch.Tensor
) -> None:
    if similarity.dim() != 2:
        raise ValueError(f"similarity must be (N, M), got shape {tuple(similarity.shape)}")
    m = similarity.shape[1]
    if cell_pixels.shape != (m, 2):
        raise ValueError(f"cell_pixels must be ({m}, 2), got shape {tuple(cell_pixels.shape)}")
    if cell_mask.shape != (m,) or cell_mask.dtype != torch.bool:
        raise ValueError(
            f"cell_mask must be a ({m},) bool tensor, got {cell_mask.dtype} "
            f"{tuple(cell_mask.shape)}"
        )
    if not bool(cell_mask.any()):
        raise ValueError("cell_mask allows no cell: nothing to match against")


def _masked_weights(
    similarity: torch.Tensor, cell_mask: torch.Tensor, temperature: float
) -> torch.Tensor:
    """(N, M) softmax over the allowed cells; disallowed cells get weight exactly 0."""
    logits = (similarity / temperature).masked_fill(~cell_mask, float("-inf"))
    return torch.softmax(logits, dim=1)


class _Matcher(nn.Module):
    """Holds the matching temperature τ_m (> 0) shared by both matchers."""

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"matching temperature must be positive, got {temperature}")
        self.temperature = float(temperature)


class SoftMatcher(_Matcher):
    """Soft assignment: pixels as the similarity-weighted mean of allowed cell centres.

    Args:
        temperature: τ_m applied to the (already τ-scaled) similarity [1.0].
    """

    def forward(
        self, similarity: torch.Tensor, cell_pixels: torch.Tensor, cell_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Match N points to M cells of one frame.

        Args:
            similarity: (N, M) scaled similarity of points with cells.
            cell_pixels: (M, 2) cell centres (u, v) in network-image pixels.
            cell_mask: (M,) bool, cells allowed as matches (the predicted image overlap).
        Returns:
            pixels (N, 2) predicted (u, v); confidence (N,) max_j w_ij in (0, 1].
        """
        _check_inputs(similarity, cell_pixels, cell_mask)
        weights = _masked_weights(similarity, cell_mask, self.temperature)
        pixels = weights @ cell_pixels.to(weights.dtype)
        return pixels, weights.max(dim=1).values


class HardMatcher(_Matcher):
    """Hard assignment: the centre of the most similar allowed cell (not differentiable).

    The confidence is still the softmax weight of that cell, so EPnP weights keep a gradient.

    Args:
        temperature: τ_m of the softmax giving the confidence [1.0].
    """

    def forward(
        self, similarity: torch.Tensor, cell_pixels: torch.Tensor, cell_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Same contract as `SoftMatcher.forward`; pixels are exact cell centres."""
        _check_inputs(similarity, cell_pixels, cell_mask)
        weights = _masked_weights(similarity, cell_mask, self.temperature)
        confidence, best = weights.max(dim=1)
        return cell_pixels[best].to(weights.dtype), confidence


def build_matcher(mode: str, temperature: float = 1.0) -> nn.Module:
    """The matcher named `mode` ("soft" | "hard")."""
    if mode == "soft":
        return SoftMatcher(temperature)
    if mode == "hard":
        return HardMatcher(temperature)
    raise ValueError(f"matching mode must be one of {MATCHING_MODES}, got {mode!r}")
