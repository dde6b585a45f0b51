"""Image branch: ResNet encoder + FPN top-down decoder giving F^I at stride 4 (METHOD.md §2).

`encode` and `decode` are separate so that the cross-modal fusion can replace the deepest
(stride-32) map between them. Every map keeps the cell convention of
`nclr_core.models.feature_grid` (cell j of a stride-s map centred on pixel s*j), the
top-down path included (`upsampling="aligned"`). `upsampling="legacy"` is the top-down path
of models trained before that convention (`F.interpolate(align_corners=False)`, which moves
each upsampled level by stride/4 pixels): their weights learned to compensate for it, so
they keep it when fine-tuned.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nclr_core.models.feature_grid import upsample_to_stride
from nclr_core.models.resnet import ResNet

STAGE_STRIDES = (4, 8, 16, 32)
UPSAMPLING_MODES = ("aligned", "legacy")


class ImageEncoder(nn.Module):
    """ResNet-18/34/50 + FPN; output `out_channels` features at stride 4.

    Attributes:
        stem_channels: channels of the stride-2 stem map (`encode_with_stem`).
        bottleneck_channels: channels of the deepest (stride-32) stage map.
        stage_channels: channels of the four stage maps.
        output_stride: stride of `decode`'s output (4).
    """

    output_stride = STAGE_STRIDES[0]
    bottleneck_stride = STAGE_STRIDES[-1]

    def __init__(self, depth: int = 18, out_channels: int = 64, fpn_channels: int = 128,
                 base_channels: int = 64, upsampling: str = "aligned") -> None:
        super().__init__()
        if out_channels < 1 or fpn_channels < 1:
            raise ValueError(
                f"channels must be positive, got out={out_channels} fpn={fpn_channels}"
            )
        if upsampling not in UPSAMPLING_MODES:
            raise ValueError(f"upsampling must be one of {UPSAMPLING_MODES}, got {upsampling!r}")
        self.upsampling = upsampling
        self.backbone = ResNet(depth, base_channels)
        self.stage_channels = self.backbone.stage_channels
        self.stem_channels = self.backbone.stem_channels
        self.bottleneck_channels = self.stage_channels[-1]
        self.out_channels = out_channels
        self.lateral = nn.ModuleList(
            nn.Conv2d(c, fpn_channels, 1) for c in self.stage_channels
        )
        self.head = nn.Sequential(
            nn.Conv2d(fpn_channels, fpn_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(fpn_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(fpn_channels, out_channels, 1),
        )

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """ResNet stage maps.

        Args:
            images: (B, 3, H, W) float, normalised.
        Returns:
            4 maps (B, C_s, ceil(H/s), ceil(W/s)) for strides s = 4, 8, 16, 32.
        """
        return self.encode_with_stem(images)[1]

    def encode_with_stem(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The stride-2 stem map (B, base_channels, ceil(H/2), ceil(W/2)) and the 4 stage
        maps of `encode`."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        stem = self.backbone.stem(images)
        return stem, self.backbone.stages(stem)

    def decode(self, stages: list[torch.Tensor]) -> torch.Tensor:
        """FPN top-down path: deepest map upsampled (`upsample_to_stride`) and summed with
        each lateral projection.

        Args:
            stages: the 4 maps of `encode` (the last one may be the fused bottleneck map,
                same shape).
        Returns:
            F_I (B, out_channels, h4, w4), the stride-4 feature map.
        """
        if len(stages) != len(self.lateral):
            raise ValueError(f"decode needs {len(self.lateral)} stage maps, got {len(stages)}")
        for stage, channels in zip(stages, self.stage_channels, strict=True):
            if stage.dim() != 4 or stage.shape[1] != channels:
                raise ValueError(
                    f"stage map must be (B, {channels}, h, w), got {tuple(stage.shape)}"
                )
        top = self.lateral[-1](stages[-1])
        for stage, lateral in zip(stages[-2::-1], list(self.lateral)[-2::-1], strict=True):
            if self.upsampling == "aligned":
                up = upsample_to_stride(top, stage.shape[-2:])
            else:
                up = F.interpolate(top, size=stage.shape[-2:], mode="bilinear",
                                   align_corners=False)
            top = lateral(stage) + up
        return self.head(top)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Encode + decode without fusion: (B, 3, H, W) -> (B, out_channels, H/4, W/4)."""
        return self.decode(self.encode(images))

    def load_torchvision_state_dict(self, path: str | Path) -> None:
        """Initialise the ResNet trunk from a local torchvision-format state dict file."""
        self.backbone.load_torchvision_state_dict(path)
