"""Point branch: MinkUNet-style sparse residual U-Net on spconv (METHOD.md §2).

Layout follows MinkowskiEngine's MinkUNet18/34 (stem, four stride-2 downsamplings with
residual blocks, four transposed upsamplings concatenating the encoder skip, residual
blocks), with the per-stage widths (32, 64, 128, 256, 256, 128, 96, 96) scaled by
`base_channels / 32`. `encode` stops at the stride-16 bottleneck so that the cross-modal
fusion can rewrite its features; `decode` finishes the U-Net and returns one feature per
input point: the decoder's voxel feature gathered back to the point plus a point-wise MLP on
the point's own fine features (extra columns such as intensity, and its offset in the voxel).

Points outside `point_range` are clamped onto its boundary for voxelisation (see
`nclr_core.models.voxelize`): they still receive a feature, `PointEncoderState.voxels.in_range`
marks them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nclr_core.models.voxelize import Voxels, grid_shape, voxel_centers, voxelize
from nclr_core.spconv_compat import spconv

# variant -> residual blocks per stage (4 encoder stages, then 4 decoder stages)
MINKUNET_BLOCKS: dict[str, tuple[int, ...]] = {
    "minkunet18": (2, 2, 2, 2, 2, 2, 2, 2),
    "minkunet34": (2, 3, 4, 6, 2, 2, 2, 2),
}
MINKUNET_PLANES = (32, 64, 128, 256, 256, 128, 96, 96)  # at base_channels = 32
NUM_DOWN = 4
DEFAULT_RANGE = (-51.2, -51.2, -3.0, 51.2, 51.2, 1.0)


class SparseBasicBlock(nn.Module):
    """Two 3x3x3 submanifold convolutions + BN with a residual (1x1 projection if needed)."""

    def __init__(self, in_channels: int, out_channels: int, indice_key: str) -> None:
        super().__init__()
        self.conv1 = spconv.SubMConv3d(
            in_channels, out_channels, 3, padding=1, bias=False, indice_key=indice_key
        )
        self.bn1 = nn.BatchNorm1d(out_channels)
        self.conv2 = spconv.SubMConv3d(
            out_channels, out_channels, 3, padding=1, bias=False, indice_key=indice_key
        )
        self.bn2 = nn.BatchNorm1d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = (
            None
            if in_channels == out_channels
            else nn.Sequential(
                nn.Linear(in_channels, out_channels, bias=False), nn.BatchNorm1d(out_channels)
            )
        )

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        """Sparse tensor with (M, C_in) features -> same sites, (M, C_out) features."""
        identity = x.features if self.shortcut is None else self.shortcut(x.features)
        out = self.conv1(x)
        out = out.replace_feature(self.relu(self.bn1(out.features)))
        out = self.conv2(out)
        return out.replace_feature(self.relu(self.bn2(out.features) + identity))


class SparseConvBNReLU(nn.Module):
    """A sparse convolution (any spconv conv module) followed by BatchNorm1d and ReLU."""

    def __init__(self, conv: nn.Module, channels: int) -> None:
        super().__init__()
        self.conv = conv
        self.bn = nn.BatchNorm1d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        out = self.conv(x)
        return out.replace_feature(self.relu(self.bn(out.features)))


def _stage(in_channels: int, out_channels: int, count: int, indice_key: str) -> nn.Sequential:
    blocks = [SparseBasicBlock(in_channels, out_channels, indice_key)]
    blocks += [SparseBasicBlock(out_channels, out_channels, indice_key) for _ in range(count - 1)]
    return nn.Sequential(*blocks)


@dataclass
class PointEncoderState:
    """What `PointEncoder.encode` keeps for `decode`.

    Attributes:
        voxels: the voxelisation (point -> voxel map, fine features, in-range mask).
        skips: encoder outputs at strides 1, 2, 4, 8 (sparse tensors).
        bottleneck: encoder output at stride 16 (sparse tensor, `bottleneck_channels`).
    """

    voxels: Voxels
    skips: list[spconv.SparseConvTensor]
    bottleneck: spconv.SparseConvTensor


class PointEncoder(nn.Module):
    """Sparse residual U-Net producing per-point features F^P (N, out_channels).

    Args:
        variant: "minkunet18" or "minkunet34".
        in_channels: columns of the input points: x y z then in_channels - 3 extra features
            (4 = x y z intensity). Voxel input features = the extra columns + the 3-D offset
            of the point inside its voxel (in voxel units), averaged per voxel.
        out_channels: C of the per-point output.
        voxel_size: voxel edge in metres.
        base_channels: width of the stem; every stage width scales with it (32 = MinkUNet).
        point_range: (x_min, y_min, z_min, x_max, y_max, z_max) metres, LiDAR frame.
        stem_kernel: kernel size of the stem submanifold convolution (MinkUNet: 5).

    Attributes:
        bottleneck_channels: feature width at the stride-16 bottleneck.
        bottleneck_stride: 16.
    """

    bottleneck_stride = 2**NUM_DOWN

    def __init__(
        self,
        variant: str = "minkunet18",
        in_channels: int = 4,
        out_channels: int = 64,
        voxel_size: float = 0.05,
        base_channels: int = 32,
        point_range: tuple[float, float, float, float, float, float] = DEFAULT_RANGE,
        stem_kernel: int = 5,
    ) -> None:
        super().__init__()
        if variant not in MINKUNET_BLOCKS:
            raise ValueError(
                f"unknown point backbone {variant!r}; use one of {list(MINKUNET_BLOCKS)}"
            )
        if in_channels < 3:
            raise ValueError(f"in_channels counts x y z plus extra features, got {in_channels}")
        if base_channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be positive, got {base_channels}, {out_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.voxel_size = float(voxel_size)
        self.point_range = tuple(float(v) for v in point_range)
        if len(self.point_range) != 6:
            raise ValueError(f"point_range needs 6 values, got {point_range}")
        self.spatial_shape = grid_shape(self.point_range, self.voxel_size, self.bottleneck_stride)
        blocks = MINKUNET_BLOCKS[variant]
        planes = [max(1, round(p * base_channels / 32)) for p in MINKUNET_PLANES]
        feat_channels = in_channels - 3 + 3  # extra columns + in-voxel offset
        self.fine_channels = feat_channels

        self.stem = SparseConvBNReLU(
            spconv.SubMConv3d(
                feat_channels, base_channels, stem_kernel, padding=stem_kernel // 2,
                bias=False, indice_key="stem",
            ),
            base_channels,
        )
        self.downs = nn.ModuleList()
        self.enc_stages = nn.ModuleList()
        channels = base_channels
        skip_channels = [base_channels]
        for level in range(NUM_DOWN):
            stride = 2 ** (level + 1)
            self.downs.append(SparseConvBNReLU(
                spconv.SparseConv3d(
                    channels, channels, 2, stride=2, bias=False, indice_key=f"down{stride}"
                ),
                channels,
            ))
            self.enc_stages.append(_stage(channels, planes[level], blocks[level], f"subm{stride}"))
            channels = planes[level]
            skip_channels.append(channels)
        self.bottleneck_channels = channels
        self.ups = nn.ModuleList()
        self.dec_stages = nn.ModuleList()
        for level in range(NUM_DOWN):
            stride = 2 ** (NUM_DOWN - level)  # the stride being undone
            out = planes[NUM_DOWN + level]
            self.ups.append(SparseConvBNReLU(
                spconv.SparseInverseConv3d(
                    channels, out, 2, bias=False, indice_key=f"down{stride}"
                ),
                out,
            ))
            skip = skip_channels[NUM_DOWN - 1 - level]
            self.dec_stages.append(
                _stage(out + skip, out, blocks[NUM_DOWN + level], f"subm{stride // 2}")
            )
            channels = out
        self.voxel_head = nn.Linear(channels, out_channels)
        self.point_mlp = nn.Sequential(
            nn.Linear(feat_channels, out_channels, bias=False),
            nn.BatchNorm1d(out_channels),
            nn.ReLU(inplace=True),
            nn.Linear(out_channels, out_channels),
        )

    def encode(self, points: torch.Tensor, offset: torch.Tensor) -> PointEncoderState:
        """Voxelise and run the encoder down to the stride-16 bottleneck.

        Args:
            points: (N, in_channels) float32, x y z (LiDAR frame, metres) then features.
            offset: (B,) int64 cumulative end index per frame.
        """
        if points.dim() != 2 or points.shape[1] != self.in_channels:
            raise ValueError(
                f"points must be (N, {self.in_channels}), got {tuple(points.shape)}"
            )
        voxels = voxelize(points, offset, self.voxel_size, self.point_range, self.spatial_shape)
        x = spconv.SparseConvTensor(
            voxels.voxel_features.float(), voxels.indices, list(self.spatial_shape),
            voxels.batch_size,
        )
        x = self.stem(x)
        skips = [x]
        for down, stage in zip(self.downs, self.enc_stages, strict=True):
            x = stage(down(x))
            skips.append(x)
        return PointEncoderState(voxels=voxels, skips=skips[:-1], bottleneck=skips[-1])

    def bottleneck(
        self, state: PointEncoderState
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Bottleneck voxels for the fusion.

        Returns:
            feats (M, bottleneck_channels), xyz (M, 3) float32 metric voxel centres in the
            LiDAR frame, batch_index (M,) int64 frame of each voxel.
        """
        indices = state.bottleneck.indices
        xyz = voxel_centers(indices, self.voxel_size, self.bottleneck_stride, self.point_range)
        return state.bottleneck.features, xyz, indices[:, 0].long()

    def decode(self, state: PointEncoderState, bottleneck_feats: torch.Tensor) -> torch.Tensor:
        """Run the decoder from (possibly fused) bottleneck features to per-point features.

        Args:
            state: from `encode`.
            bottleneck_feats: (M, bottleneck_channels), rows in the order of `bottleneck`.
        Returns:
            F_P (N, out_channels), rows in the order of the input points.
        """
        expected = tuple(state.bottleneck.features.shape)
        if tuple(bottleneck_feats.shape) != expected:
            raise ValueError(
                f"bottleneck_feats must be {expected}, got {tuple(bottleneck_feats.shape)}"
            )
        x = state.bottleneck.replace_feature(bottleneck_feats)
        for up, stage, skip in zip(self.ups, self.dec_stages, state.skips[::-1], strict=True):
            x = up(x)
            x = stage(x.replace_feature(torch.cat((x.features, skip.features), dim=1)))
        voxels = state.voxels
        voxel_part = self.voxel_head(x.features)[voxels.point_to_voxel]
        point_part = self.point_mlp(voxels.point_features.to(voxel_part.dtype))
        return voxel_part + point_part

    def forward(self, points: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """Encode + decode without fusion: (N, in_channels) -> (N, out_channels)."""
        state = self.encode(points, offset)
        return self.decode(state, state.bottleneck.features)
