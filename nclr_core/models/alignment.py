"""Learnable transformation alignment (LTA, paper §3.3, METHOD.md §3).

The similarity between a point feature and an image feature is

    s(p_i, I_j) = F̃ᴾ_i · W_f · F̃ᴵ_jᵀ / τ,    W_f = Q D Qᵀ,

with F̃ the L2-normalised features, Q orthogonal and D a learnable diagonal. W_f is symmetric
by construction, so one matrix serves both matching directions. At initialisation Q = I and
D = 1, so W_f = I and the similarity is exactly the cosine similarity divided by τ.
`mode="cosine"` keeps W_f = I for good (the ablation of paper Table 6).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import orthogonal

SIMILARITY_MODES = ("lta", "cosine")


class _OrthogonalMatrix(nn.Module):
    """Holds a (C, C) matrix `weight` kept orthogonal by a parametrization; starts at I."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(channels))


class TransformationAlignment(nn.Module):
    """Scaled bilinear similarity F̃ᴾ W_f F̃ᴵᵀ / τ between point and image features.

    Args:
        channels: feature width C shared by both modalities.
        mode: "lta" (learnable W_f = Q D Qᵀ) or "cosine" (W_f = I, no parameters).
        temperature: τ > 0 dividing the similarity.
    """

    def __init__(self, channels: int, mode: str = "lta", temperature: float = 0.07) -> None:
        super().__init__()
        if mode not in SIMILARITY_MODES:
            raise ValueError(f"similarity mode must be one of {SIMILARITY_MODES}, got {mode!r}")
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.channels = int(channels)
        self.mode = mode
        self.temperature = float(temperature)
        if mode == "lta":
            self.q = orthogonal(_OrthogonalMatrix(channels), "weight")
            self.d = nn.Parameter(torch.ones(channels))

    @property
    def W(self) -> torch.Tensor:  # noqa: N802 (the paper's name)
        """W_f (C, C): Q diag(D) Qᵀ, symmetrised so it is symmetric to the last bit."""
        if self.mode == "cosine":
            return torch.eye(self.channels)
        q = self.q.weight
        w = (q * self.d) @ q.transpose(0, 1)
        return 0.5 * (w + w.transpose(0, 1))

    def similarity(self, point_feats: torch.Tensor, image_feats: torch.Tensor) -> torch.Tensor:
        """Scaled similarity of every point feature with every image feature.

        Args:
            point_feats: (..., N, C) point features (any scale; normalised here).
            image_feats: (..., M, C) image features, same leading dimensions.
        Returns:
            (..., N, M) similarity F̃ᴾ W_f F̃ᴵᵀ / τ.
        """
        if point_feats.shape[-1] != self.channels or image_feats.shape[-1] != self.channels:
            raise ValueError(
                f"features must have {self.channels} channels, got point "
                f"{tuple(point_feats.shape)} and image {tuple(image_feats.shape)}"
            )
        p = F.normalize(point_feats, dim=-1)
        i = F.normalize(image_feats, dim=-1)
        if self.mode == "lta":
            p = p @ self.W.to(p.dtype)
        return (p @ i.transpose(-1, -2)) / self.temperature

    def forward(self, point_feats: torch.Tensor, image_feats: torch.Tensor) -> torch.Tensor:
        """Same as `similarity`."""
        return self.similarity(point_feats, image_feats)
