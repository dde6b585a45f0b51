"""Fine matching: coarse point-to-pixel matches refined to sub-pixel (METHOD.md §4, §9).

The coarse stage (stride-4 F^I, InfoNCE, soft or hard matching) finds the cell a point
projects into, not where inside it. This stage refines each coarse pixel at stride 2:

- image side: F^I_fine (B, C_f, ceil(H/2), ceil(W/2)) = head(lateral(stem) + up(lateral(F^I)))
  from the ResNet's stride-2 stem map and the fused stride-4 F^I (the cell convention of
  `nclr_core.models.feature_grid`: fine cell j centred on pixel 2j);
- point side: F^P_fine (P, C_f) = MLP(F^P);
- refinement: the (2r+1)² fine cells around the one nearest to the coarse pixel,
  p_k = softmax_k(F̃ᴾ_fine · F̃ᴵ_fine,k / τ_f) (features L2-normalised, cells outside the image
  left out); the refined pixel is the expectation Σ_k p_k c_k of the cell centres c_k (a
  soft-argmax, continuous, hence sub-pixel), and its spread sqrt(Σ_k p_k |c_k − x̂|² / 2) px;
- training (`loss`): the window is centred on the ground-truth projection moved by a random
  offset (uniform in ±`train_jitter_px` per axis, the coarse stage's error) *(decision)*,
  and each point costs the cross-entropy of p to a Gaussian target centred on the truth
  (σ = `sigma_px`) plus the L1 distance of the expectation to the truth in fine cells.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nclr_core.models.feature_grid import upsample_to_stride

FINE_STRIDE = 2


class FineMatcher(nn.Module):
    """The fine stage: features at stride 2 and the window soft-argmax (see module docstring).

    Args:
        coarse_channels: C of F^P and F^I.
        stem_channels: channels of the ResNet stem map.
        channels: C_f of the fine features.
        window_radius: r, fine cells on each side of the window's centre cell.
        temperature: τ_f of the window softmax on cosine similarities.
        sigma_px: σ of the Gaussian training target, pixels.
        train_jitter_px: largest per-axis offset of the training window's centre from the
            truth, pixels (< r · 2, so that the truth stays inside the window).
    """

    stride = FINE_STRIDE

    def __init__(self, coarse_channels: int, stem_channels: int, channels: int = 32,
                 window_radius: int = 5, temperature: float = 0.1, sigma_px: float = 1.0,
                 train_jitter_px: float = 6.0) -> None:
        super().__init__()
        if min(coarse_channels, stem_channels, channels, window_radius) < 1:
            raise ValueError("fine matching channels and window_radius must be >= 1")
        if not (temperature > 0 and sigma_px > 0):
            raise ValueError(f"fine temperature and sigma_px must be positive, got "
                             f"{temperature}, {sigma_px}")
        if not 0 <= train_jitter_px < window_radius * self.stride:
            raise ValueError(f"fine train_jitter_px must lie in [0, {window_radius * self.stride})"
                             f" px (the window's half-width), got {train_jitter_px}")
        self.channels = channels
        self.radius = int(window_radius)
        self.temperature = float(temperature)
        self.sigma_px = float(sigma_px)
        self.train_jitter_px = float(train_jitter_px)
        self.stem_lateral = nn.Conv2d(stem_channels, channels, 1)
        self.coarse_lateral = nn.Conv2d(coarse_channels, channels, 1)
        self.image_head = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1),
        )
        self.point_head = nn.Sequential(
            nn.Linear(coarse_channels, channels), nn.ReLU(inplace=True),
            nn.Linear(channels, channels),
        )
        offsets = torch.arange(-self.radius, self.radius + 1)
        rows, cols = torch.meshgrid(offsets, offsets, indexing="ij")
        self.register_buffer("window_offsets", torch.stack((cols.reshape(-1), rows.reshape(-1)),
                                                           -1), persistent=False)

    def image_features(self, stem: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """F^I_fine (B, C_f, h2, w2) from the stem map (B, C_stem, h2, w2) and F^I (B, C, h, w)."""
        up = upsample_to_stride(self.coarse_lateral(coarse), stem.shape[-2:])
        return self.image_head(self.stem_lateral(stem) + up)

    def point_features(self, point_feats: torch.Tensor) -> torch.Tensor:
        """F^P_fine (P, C_f) from F^P (P, C)."""
        return self.point_head(point_feats)

    def _window(self, point_fine: torch.Tensor, image_fine: torch.Tensor, centres: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Window logits (P, K), cell centres (P, K, 2) px and in-image mask (P, K) bool.

        point_fine (P, C_f); image_fine (C_f, h2, w2) of the points' frame; centres (P, 2) px.
        """
        h2, w2 = image_fine.shape[-2:]
        centre = torch.round(centres.detach() / self.stride).long()
        centre[:, 0] = centre[:, 0].clamp(0, w2 - 1)
        centre[:, 1] = centre[:, 1].clamp(0, h2 - 1)
        cells = centre.unsqueeze(1) + self.window_offsets.to(centre.device)  # (P, K, 2)
        inside = ((cells[..., 0] >= 0) & (cells[..., 0] < w2)
                  & (cells[..., 1] >= 0) & (cells[..., 1] < h2))
        flat = cells[..., 1].clamp(0, h2 - 1) * w2 + cells[..., 0].clamp(0, w2 - 1)
        feats = F.normalize(image_fine.flatten(1).transpose(0, 1), dim=-1)[flat]  # (P, K, C_f)
        logits = (feats @ F.normalize(point_fine, dim=-1).unsqueeze(-1)).squeeze(-1)
        logits = (logits / self.temperature).masked_fill(~inside, float("-inf"))
        return logits, (cells * self.stride).to(point_fine.dtype), inside

    def refine(self, point_fine: torch.Tensor, image_fine: torch.Tensor,
               coarse_pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Refined pixels (P, 2) and their spread (P,) px, from coarse pixels (P, 2) px.

        point_fine (P, C_f) = `point_features`; image_fine (C_f, h2, w2) of their frame.
        Differentiable in the features (not in the coarse pixels, which only place windows).
        """
        if coarse_pixels.shape != (point_fine.shape[0], 2):
            raise ValueError(f"coarse_pixels must be ({point_fine.shape[0]}, 2), got "
                             f"{tuple(coarse_pixels.shape)}")
        if image_fine.dim() != 3 or image_fine.shape[0] != point_fine.shape[-1]:
            raise ValueError(f"image_fine must be ({point_fine.shape[-1]}, h, w), got "
                             f"{tuple(image_fine.shape)}")
        logits, uv, _ = self._window(point_fine, image_fine, coarse_pixels)
        p = torch.softmax(logits, dim=1)
        pixels = (p.unsqueeze(-1) * uv).sum(1)
        spread = ((p * ((uv - pixels.unsqueeze(1)) ** 2).sum(-1)).sum(1) / 2).clamp_min(0).sqrt()
        return pixels, spread

    def loss(self, point_fine: torch.Tensor, image_fine: torch.Tensor,
             true_pixels: torch.Tensor) -> torch.Tensor:
        """Per-point fine loss (P,): Gaussian-target cross-entropy + L1 (fine cells) of the
        soft-argmax, on windows centred on the truth (P, 2) px moved by the training jitter."""
        jitter = (torch.rand(true_pixels.shape, device=true_pixels.device) * 2 - 1)
        logits, uv, inside = self._window(point_fine, image_fine,
                                          true_pixels + jitter * self.train_jitter_px)
        log_p = torch.log_softmax(logits, dim=1).masked_fill(~inside, 0.0)
        d2 = ((uv - true_pixels.unsqueeze(1)) ** 2).sum(-1)
        target = torch.softmax((-d2 / (2 * self.sigma_px ** 2)).masked_fill(~inside,
                                                                             float("-inf")), 1)
        cross_entropy = -(target * log_p).sum(1)
        expected = (log_p.exp().masked_fill(~inside, 0.0).unsqueeze(-1) * uv).sum(1)
        regression = (expected - true_pixels).abs().sum(-1) / self.stride
        return cross_entropy + regression
