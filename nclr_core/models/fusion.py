"""Transformer fusion of point keypoints and image tokens at the bottleneck (METHOD.md §2).

Per frame, N_E keypoints are sampled from the point encoder's bottleneck voxels
(farthest-point or random) and the image encoder's deepest map is flattened into tokens.
L fusion layers each apply, pre-LayerNorm with residuals: self-attention per modality,
cross-attention in both directions (separate weights), a feed-forward network per modality.
Sinusoidal encodings of the keypoints' metric coordinates and of the image tokens' pixel
centres are added to the queries and keys of every attention. The fused keypoints are
propagated back to all bottleneck voxels of their frame by 3-NN inverse-distance
interpolation; both outputs are residual updates of the inputs, projected back to their
channel widths, so they replace the bottleneck features in the decoders.

Frames hold different numbers of keypoints: tokens are padded to the largest count and
key padding masks keep every frame's attention inside the frame.
"""
from __future__ import annotations

import torch
from torch import nn

from nclr_core.models.feature_grid import cell_centers
from nclr_core.models.position_encoding import SinusoidalEncoding

SAMPLING_METHODS = ("fps", "random")


def pad_by_frame(batch_index: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices of each frame's elements, padded to the largest frame.

    Args:
        batch_index: (M,) int64 frame of each element.
    Returns:
        index (B, M_max) int64 rows into the M elements (0 where padded),
        valid (B, M_max) bool, False on padding.
    """
    counts = torch.bincount(batch_index, minlength=batch_size)
    order = torch.argsort(batch_index, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    sorted_batch = batch_index[order]
    position = torch.arange(batch_index.numel(), device=batch_index.device) - starts[sorted_batch]
    width = int(counts.max()) if batch_index.numel() else 0
    index = batch_index.new_zeros((batch_size, width))
    valid = torch.zeros((batch_size, width), dtype=torch.bool, device=batch_index.device)
    index[sorted_batch, position] = order
    valid[sorted_batch, position] = True
    return index, valid


def farthest_point_sampling(xyz: torch.Tensor, valid: torch.Tensor, num: int) -> torch.Tensor:
    """Farthest-point sampling, vectorised over frames; starts from each frame's first point.

    Args:
        xyz: (B, M, 3) padded coordinates.
        valid: (B, M) bool, False on padding; every frame needs one valid element first.
        num: samples per frame (K <= M).
    Returns:
        (B, K) int64 positions into M. A frame with fewer than K valid elements lists all
        of them first (distinct when their coordinates are), then repeats.
    """
    batch_size = xyz.shape[0]
    rows = torch.arange(batch_size, device=xyz.device)
    chosen = xyz.new_zeros((batch_size, num), dtype=torch.long)
    dist = torch.full(valid.shape, float("inf"), dtype=xyz.dtype, device=xyz.device)
    dist = dist.masked_fill(~valid, -1.0)
    last = torch.zeros(batch_size, dtype=torch.long, device=xyz.device)
    for k in range(num):
        chosen[:, k] = last
        d = (xyz - xyz[rows, last].unsqueeze(1)).square().sum(-1)
        dist = torch.minimum(dist, d).masked_fill(~valid, -1.0)
        last = dist.argmax(dim=1)
    return chosen


def sample_keypoints(
    xyz: torch.Tensor, batch_index: torch.Tensor, batch_size: int, num: int, method: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick up to `num` keypoints per frame among M voxels.

    Args:
        xyz: (M, 3) voxel centres.
        batch_index: (M,) int64 frame of each voxel.
        method: "fps" (deterministic farthest-point) or "random" (uniform, without
            replacement, torch's global generator).
    Returns:
        index (B, K) int64 rows into M, valid (B, K) bool; K = min(num, largest frame) and a
        frame with fewer than K voxels takes all of them, the rest is padding.
    """
    if method not in SAMPLING_METHODS:
        raise ValueError(f"unknown keypoint sampling {method!r}; use one of {SAMPLING_METHODS}")
    frame_index, frame_valid = pad_by_frame(batch_index, batch_size)
    counts = frame_valid.sum(dim=1)
    k = min(num, frame_index.shape[1])
    if method == "fps":
        pos = farthest_point_sampling(xyz[frame_index], frame_valid, k)
    else:
        scores = torch.rand(frame_valid.shape, device=xyz.device).masked_fill(~frame_valid, -1.0)
        pos = scores.topk(k, dim=1).indices
    index = torch.gather(frame_index, 1, pos)
    valid = torch.arange(k, device=xyz.device).unsqueeze(0) < counts.unsqueeze(1)
    return index, valid


def idw_interpolate(
    query_xyz: torch.Tensor,
    query_batch: torch.Tensor,
    key_xyz: torch.Tensor,
    key_feats: torch.Tensor,
    key_valid: torch.Tensor,
    k: int = 3,
    chunk: int = 4096,
) -> torch.Tensor:
    """k-NN inverse-distance interpolation of keypoint features onto query points, per frame.

    A query at (numerically) zero distance from a keypoint receives exactly that keypoint's
    feature. Frames with fewer than k keypoints use all of theirs.

    Args:
        query_xyz: (M, 3) query coordinates.
        query_batch: (M,) int64 frame of each query.
        key_xyz: (B, K, 3) keypoint coordinates (padded).
        key_feats: (B, K, C) keypoint features (padded).
        key_valid: (B, K) bool, False on padding; every frame with queries needs a keypoint.
        k: neighbours; chunk: queries per distance block (memory bound).
    Returns:
        (M, C) interpolated features.
    """
    out = key_feats.new_zeros((query_xyz.shape[0], key_feats.shape[-1]))
    for b in range(key_xyz.shape[0]):
        rows = torch.nonzero(query_batch == b).squeeze(1)
        if rows.numel() == 0:
            continue
        keys = key_xyz[b][key_valid[b]]
        feats = key_feats[b][key_valid[b]]
        if keys.shape[0] == 0:
            raise ValueError(f"frame {b} has queries but no keypoints to interpolate from")
        kk = min(k, keys.shape[0])
        for start in range(0, rows.numel(), chunk):
            part = rows[start:start + chunk]
            dist, nn_idx = torch.cdist(query_xyz[part], keys).topk(kk, dim=1, largest=False)
            exact = dist <= 1e-6
            weights = torch.where(
                exact.any(dim=1, keepdim=True), exact.to(dist.dtype), 1.0 / dist.clamp_min(1e-6)
            )
            weights = weights / weights.sum(dim=1, keepdim=True)
            out[part] = (feats[nn_idx] * weights.unsqueeze(-1).to(feats.dtype)).sum(dim=1)
    return out


class FeedForward(nn.Module):
    """Pre-LN position-wise MLP d -> ffn -> d (its residual is added by the caller)."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, ffn_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_dim, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FusionLayer(nn.Module):
    """Self-attention per modality, cross-attention both ways (separate weights), FFNs.

    All sub-layers are pre-LN with residuals; position encodings are added to queries and
    keys of every attention, not to values.
    """

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()

        def attention() -> nn.MultiheadAttention:
            return nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)

        self.norm_self_point = nn.LayerNorm(d_model)
        self.norm_self_image = nn.LayerNorm(d_model)
        self.self_attn_point = attention()
        self.self_attn_image = attention()
        self.norm_cross_point = nn.LayerNorm(d_model)
        self.norm_cross_image = nn.LayerNorm(d_model)
        self.cross_attn_point_from_image = attention()
        self.cross_attn_image_from_point = attention()
        self.ffn_point = FeedForward(d_model, ffn_dim, dropout)
        self.ffn_image = FeedForward(d_model, ffn_dim, dropout)

    def forward(
        self,
        point: torch.Tensor,
        image: torch.Tensor,
        point_pos: torch.Tensor,
        image_pos: torch.Tensor,
        point_pad: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """point (B, K, d), image (B, T, d), encodings alike, point_pad (B, K) True = padding."""
        p = self.norm_self_point(point)
        q = p + point_pos
        point = point + self.self_attn_point(
            q, q, p, key_padding_mask=point_pad, need_weights=False
        )[0]
        i = self.norm_self_image(image)
        q = i + image_pos
        image = image + self.self_attn_image(q, q, i, need_weights=False)[0]

        p = self.norm_cross_point(point)
        i = self.norm_cross_image(image)
        p_q, i_q = p + point_pos, i + image_pos
        point_update = self.cross_attn_point_from_image(p_q, i_q, i, need_weights=False)[0]
        image_update = self.cross_attn_image_from_point(
            i_q, p_q, p, key_padding_mask=point_pad, need_weights=False
        )[0]
        point = point + point_update
        image = image + image_update

        point = point + self.ffn_point(point)
        image = image + self.ffn_image(image)
        return point, image


class CrossModalFusion(nn.Module):
    """Bottleneck fusion of point voxels and the deepest image map.

    Args:
        point_channels: Cp of the bottleneck voxel features.
        image_channels: Ci of the deepest image map.
        d_model: token width inside the transformer.
        num_heads: attention heads (d_model must be divisible by it).
        num_layers: L fusion layers.
        num_keypoints: N_E keypoints per frame.
        ffn_dim: hidden width of the feed-forward networks (default 4 * d_model).
        dropout: dropout inside attention and FFN.
        sampling: "fps" or "random" keypoint sampling.
        image_stride: stride of the image map (for the tokens' pixel centres).
        cell_convention: where those centres are (`nclr_core.models.feature_grid`).
        point_wavelengths: (min, max) wavelengths in metres of the 3-D encoding.
        pixel_wavelengths: (min, max) wavelengths in pixels of the 2-D encoding.
        interpolation_k: neighbours of the inverse-distance propagation.
    """

    def __init__(
        self,
        point_channels: int,
        image_channels: int,
        d_model: int = 256,
        num_heads: int = 8,
        num_layers: int = 2,
        num_keypoints: int = 1024,
        ffn_dim: int | None = None,
        dropout: float = 0.0,
        sampling: str = "fps",
        image_stride: int = 32,
        cell_convention: str = "stem",
        point_wavelengths: tuple[float, float] = (1.0, 256.0),
        pixel_wavelengths: tuple[float, float] = (16.0, 2048.0),
        interpolation_k: int = 3,
    ) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        if sampling not in SAMPLING_METHODS:
            raise ValueError(f"unknown keypoint sampling {sampling!r}; use {SAMPLING_METHODS}")
        if num_keypoints < 1 or num_layers < 1 or interpolation_k < 1:
            raise ValueError("num_keypoints, num_layers and interpolation_k must be positive")
        self.point_channels = point_channels
        self.image_channels = image_channels
        self.num_keypoints = num_keypoints
        self.sampling = sampling
        self.image_stride = image_stride
        self.cell_convention = cell_convention
        self.interpolation_k = interpolation_k
        self.point_in = nn.Linear(point_channels, d_model)
        self.image_in = nn.Linear(image_channels, d_model)
        self.point_pos = SinusoidalEncoding(3, d_model, *point_wavelengths)
        self.image_pos = SinusoidalEncoding(2, d_model, *pixel_wavelengths)
        self.layers = nn.ModuleList(
            FusionLayer(d_model, num_heads, ffn_dim or 4 * d_model, dropout)
            for _ in range(num_layers)
        )
        self.point_out = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, point_channels))
        self.image_out = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, image_channels))

    def forward(
        self,
        point_feats: torch.Tensor,
        point_xyz: torch.Tensor,
        point_batch: torch.Tensor,
        image_map: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fuse the two bottlenecks.

        Args:
            point_feats: (M, Cp) bottleneck voxel features.
            point_xyz: (M, 3) metric voxel centres, LiDAR frame.
            point_batch: (M,) int64 frame of each voxel; every frame needs a voxel.
            image_map: (B, Ci, h, w) deepest image map (stride `image_stride`).
        Returns:
            point_feats (M, Cp) and image_map (B, Ci, h, w), fused.
        """
        if image_map.dim() != 4 or image_map.shape[1] != self.image_channels:
            raise ValueError(
                f"image_map must be (B, {self.image_channels}, h, w), got {tuple(image_map.shape)}"
            )
        num = point_feats.shape[0]
        if point_feats.shape != (num, self.point_channels) or point_xyz.shape != (num, 3):
            raise ValueError(
                f"point_feats must be (M, {self.point_channels}) and point_xyz (M, 3), got "
                f"{tuple(point_feats.shape)} and {tuple(point_xyz.shape)}"
            )
        batch_size, _, h, w = image_map.shape
        point_batch = point_batch.long()
        if point_batch.shape != (num,):
            raise ValueError(f"point_batch must be ({num},), got {tuple(point_batch.shape)}")
        if num and (int(point_batch.min()) < 0 or int(point_batch.max()) >= batch_size):
            raise ValueError(
                f"point_batch values must lie in [0, {batch_size}) for {batch_size} image maps, "
                f"got [{int(point_batch.min())}, {int(point_batch.max())}]"
            )
        counts = torch.bincount(point_batch, minlength=batch_size)
        if bool((counts == 0).any()):
            raise ValueError(
                f"every one of the {batch_size} frames needs bottleneck voxels; "
                f"voxels per frame: {counts.tolist()}"
            )

        key_index, key_valid = sample_keypoints(
            point_xyz, point_batch, batch_size, self.num_keypoints, self.sampling
        )
        key_xyz = point_xyz[key_index]
        pad = ~key_valid
        point_tok = self.point_in(point_feats[key_index]).masked_fill(pad.unsqueeze(-1), 0.0)
        point_pos = self.point_pos(key_xyz).masked_fill(pad.unsqueeze(-1), 0.0)
        image_tok = self.image_in(image_map.flatten(2).transpose(1, 2))
        pixels = cell_centers(h, w, self.image_stride, convention=self.cell_convention,
                              device=image_map.device)
        image_pos = self.image_pos(pixels).unsqueeze(0).expand(batch_size, -1, -1)

        for layer in self.layers:
            point_tok, image_tok = layer(point_tok, image_tok, point_pos, image_pos, pad)

        point_update = idw_interpolate(
            point_xyz, point_batch, key_xyz, self.point_out(point_tok), key_valid,
            self.interpolation_k,
        )
        image_update = self.image_out(image_tok).transpose(1, 2).reshape(image_map.shape)
        return point_feats + point_update, image_map + image_update
