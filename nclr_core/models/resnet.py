"""ResNet-18/34/50 (He et al. 2016) returning its four stage maps (strides 4, 8, 16, 32).

Parameter names follow torchvision's layout (`conv1`, `bn1`, `layer1.0.conv1`,
`layer1.0.downsample.0`, ...), so a torchvision-format state dict saved on disk loads with
`load_torchvision_state_dict`; the classifier (`fc.*`) is not part of this network.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H/stride, W/stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand (x4) with a residual connection (ResNet-50)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H/stride, W/stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    """1x1 projection + BN when the residual changes shape, else None (identity)."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


# depth -> (block type, blocks per stage)
RESNET_SPECS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}
STAGE_WIDTHS = (1, 2, 4, 8)  # stage planes as multiples of the stem width


class ResNet(nn.Module):
    """ResNet trunk without classifier; `forward` returns the four stage maps.

    `base_channels` is the stem width (64 = the standard ResNet, whose torchvision weights
    load; smaller values make the narrow variants that CPU configs use).

    Attributes:
        stem_channels: channels of the stride-2 stem map (`base_channels`).
        stage_channels: channels of the four stage outputs, e.g. (64, 128, 256, 512) for
            ResNet-18/34 and (256, 512, 1024, 2048) for ResNet-50 at base 64.
    """

    def __init__(self, depth: int = 18, base_channels: int = 64) -> None:
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_SPECS)}, got {depth}")
        if base_channels < 1:
            raise ValueError(f"base_channels must be positive, got {base_channels}")
        block, counts = RESNET_SPECS[depth]
        stage_planes = tuple(base_channels * w for w in STAGE_WIDTHS)
        self.conv1 = nn.Conv2d(3, base_channels, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_channels = base_channels
        stages = []
        for i, (planes, count) in enumerate(zip(stage_planes, counts, strict=True)):
            blocks = []
            for k in range(count):
                stride = 2 if (k == 0 and i > 0) else 1
                blocks.append(block(in_channels, planes, stride))
                in_channels = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.stage_channels = tuple(p * block.expansion for p in stage_planes)
        self.stem_channels = base_channels
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stem(self, images: torch.Tensor) -> torch.Tensor:
        """The stride-2 stem map (7x7/2 convolution, BN, ReLU; before the max-pool).

        Args:
            images: (B, 3, H, W) float.
        Returns:
            (B, base_channels, ceil(H/2), ceil(W/2)); cell j is centred on pixel 2j.
        """
        return self.relu(self.bn1(self.conv1(images)))

    def stages(self, stem: torch.Tensor) -> list[torch.Tensor]:
        """The four stage maps from the stem map: (B, C_s, ceil(H/s), ceil(W/s)) for
        s = 4, 8, 16, 32; cell j of every stage is centred on pixel s*j."""
        x = self.maxpool(stem)
        outs = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            outs.append(x)
        return outs

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Stage maps of a batch of images.

        Args:
            images: (B, 3, H, W) float.
        Returns:
            4 maps (B, C_s, ceil(H/s), ceil(W/s)) for s = 4, 8, 16, 32.
        """
        return self.stages(self.stem(images))

    def load_torchvision_state_dict(self, path: str | Path) -> None:
        """Load a torchvision-format ResNet state dict from a local file (`fc.*` ignored).

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: the file's keys or shapes do not match this network.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ResNet weights not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        own = self.state_dict()
        # Older torchvision files carry no BatchNorm step counters: keep ours for those.
        for key, value in own.items():
            if key.endswith("num_batches_tracked"):
                state.setdefault(key, value)
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(
                f"{path}: not a matching torchvision ResNet state dict "
                f"({len(missing)} missing keys, e.g. {missing[:3]}; "
                f"{len(unexpected)} unexpected keys, e.g. {unexpected[:3]})"
            )
        bad = [k for k, v in state.items() if v.shape != own[k].shape]
        if bad:
            raise ValueError(f"{path}: shape mismatch for {bad[:5]}")
        self.load_state_dict(state)
