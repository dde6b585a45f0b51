"""Overlap heads (METHOD.md §4): a small MLP giving one overlap logit per point or pixel cell."""
from __future__ import annotations

import torch
from torch import nn


class OverlapHead(nn.Module):
    """MLP C -> C -> 1 on the last dimension; returns logits (apply sigmoid for scores S^P, S^I).

    Image maps (B, C, h, w) must be moved to channels-last first, e.g.
    `head(F_I.permute(0, 2, 3, 1))` -> (B, h, w).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}")
        self.channels = channels
        self.mlp = nn.Sequential(
            nn.Linear(channels, channels), nn.ReLU(inplace=True), nn.Linear(channels, 1)
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(..., C) features -> (...) overlap logits."""
        if feats.shape[-1] != self.channels:
            raise ValueError(
                f"expected features with last dimension {self.channels}, got {tuple(feats.shape)}"
            )
        return self.mlp(feats).squeeze(-1)
