"""The NCLR model: 2D-3D neural calibration as a pretext task (paper §3, METHOD.md §2-§5).

Pipeline of `CalibrationNet.forward` on a batch of B frames (layout of
`nclr_core.data.collate.collate_pairs`):

1. image encoder (ResNet) and point encoder (sparse U-Net) down to their bottlenecks;
2. cross-modal fusion of the bottleneck voxels and the stride-32 image map;
3. decoders: F^I (B, C, h, w) at stride 4 and F^P (N_total, C) per point;
4. overlap heads: S^P per point, S^I per feature cell;
5. per frame, soft (or hard) matching of the points of the predicted overlap to the cells of
   the predicted image overlap, with the LTA similarity; with `fine_matching`, each coarse
   match refined to sub-pixel at stride 2 (`nclr_core.models.fine_matching`);
6. only when a pose is asked for (`with_pose`, or the pose loss): weighted differentiable
   EPnP on the matches, the pose T_cam_lidar of the (augmented) cloud. For the pose loss the
   EPnP's support is the points of the ground-truth overlap (METHOD.md §9), weighted by the
   network; otherwise the matches of the predicted overlap;
7. losses, when the batch carries the ground truth: L_f (InfoNCE), L_o (overlap BCE), with
   the fine stage L_fine, and when asked L_p (pose), weighted into `loss`.

Inference outside `forward` (e.g. matching inside windows): `extract_features`, then
`match_points` for coarse (+ fine) matches of any points, or `refine_matches` for coarse
pixels found elsewhere. Steps 5-6 live in `nclr_core.models.calibration_matching`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from nclr_core.losses import (
    frame_info_nce,
    mean_or_zero,
    overlap_loss,
    pose_loss,
    pose_loss_frames,
    sample_indices,
    weighted_total,
)
from nclr_core.models.alignment import TransformationAlignment
from nclr_core.models.calibration_matching import MatchingMixin
from nclr_core.models.feature_grid import CELL_CONVENTIONS, cell_centers
from nclr_core.models.fine_matching import FineMatcher
from nclr_core.models.fusion import CrossModalFusion
from nclr_core.models.heads import OverlapHead
from nclr_core.models.image_encoder import ImageEncoder
from nclr_core.models.matching import build_matcher
from nclr_core.models.point_encoder import DEFAULT_RANGE, PointEncoder

GT_KEYS = ("point_overlap", "point_pixel", "image_overlap", "T_gt")


def _offsets_to_slices(offset: torch.Tensor, total: int) -> list[slice]:
    """Frame slices of the concatenated points from the cumulative `offset` (B,)."""
    ends = [int(e) for e in offset.tolist()]
    if not ends or ends[-1] != total or any(b < a for a, b in zip([0] + ends, ends, strict=False)):
        raise ValueError(f"offset {ends} must be non-decreasing and end at the {total} points")
    return [slice(a, b) for a, b in zip([0] + ends[:-1], ends, strict=True)]


class CalibrationNet(MatchingMixin, nn.Module):
    """NCLR calibration network; plain keyword arguments with METHOD.md defaults.

    Args:
        image_depth: ResNet depth of the image branch (18, 34, 50).
        image_base_channels: ResNet stem width (64 = standard; smaller for CPU configs).
        fpn_channels: width of the FPN top-down path.
        point_variant: "minkunet18" | "minkunet34".
        point_base_channels: stem width of the sparse U-Net (32 = MinkUNet).
        voxel_size: metres; point_range: (x_min, y_min, z_min, x_max, y_max, z_max) metres.
        channels: C of F^I and F^P.
        fusion_d_model, fusion_heads, fusion_layers, fusion_keypoints: the cross-modal fusion
            (attention width, heads, L layers, N_E keypoints per frame).
        similarity: "lta" | "cosine"; temperature: τ of the similarity.
        matching: "soft" | "hard"; match_temperature: τ_m on the already-scaled similarity.
        use_overlap: overlap detection on (heads, L_o, predicted-overlap filtering) or off
            (every point / cell may match, no L_o).
        use_pose_loss: the L_p term exists at all (it is added only when `forward` is also
            called with `pose_loss_enabled=True`).
        point_threshold, image_threshold: θ_p, θ_i on S^P, S^I.
        max_match_points: K_pts, cap on the matched points per frame (highest S^P).
        min_match_points: fewer points than this above θ_p -> take the K_pts highest scores.
        min_match_cells: no cell above θ_i -> take this many highest-scoring cells.
        info_nce_points: M, overlap points sampled per frame for L_f.
        info_nce_cells: overlap cells sampled per frame for the image→point direction.
        max_negatives: cap on the negatives per anchor (None: all).
        r_p, r_n: positive / negative radii of L_f, in feature cells.
        loss_weights: (λ_f, λ_o, λ_p).
        pose_huber_delta: δ of the Huber pose loss.
        pose_loss_gate: (degrees, metres): L_p counts only frames whose EPnP pose is that
            close to the truth (`nclr_core.losses.pose_loss`); None: every valid frame.
        refine_steps: unrolled Gauss-Newton steps of the EPnP.
        fine_matching: add the fine stage (sub-pixel refinement of every match, L_fine).
        fine_channels, fine_window_radius, fine_temperature, fine_sigma_px,
            fine_train_jitter_px: the fine stage's C_f, window radius r (stride-2 cells),
            τ_f, Gaussian-target σ (px) and training window jitter (px); see `FineMatcher`.
        fine_loss_weight: λ_fine of L_fine.
        fpn_upsampling: "aligned" (the cell convention) | "legacy" (the FPN of models trained
            before it, for fine-tuning them; see `ImageEncoder`).
        cell_convention: "stem" (cell j at pixel s*j) | "legacy" (s*j + (s - 1)/2, what
            models trained before issue 12 learned; with `fpn_upsampling="legacy"` such a
            model runs as it was trained). The fine stage always uses "stem".
    """

    # modules a checkpoint of an earlier architecture may lack (they then start fresh)
    optional_modules = ("fine_matcher",)

    def __init__(
        self,
        *,
        image_depth: int = 18,
        image_base_channels: int = 64,
        fpn_channels: int = 128,
        point_variant: str = "minkunet18",
        point_base_channels: int = 32,
        voxel_size: float = 0.05,
        point_range: Sequence[float] = DEFAULT_RANGE,
        channels: int = 64,
        fusion_d_model: int = 256,
        fusion_heads: int = 8,
        fusion_layers: int = 2,
        fusion_keypoints: int = 1024,
        similarity: str = "lta",
        temperature: float = 0.07,
        matching: str = "soft",
        match_temperature: float = 1.0,
        use_overlap: bool = True,
        use_pose_loss: bool = True,
        point_threshold: float = 0.5,
        image_threshold: float = 0.5,
        max_match_points: int = 256,
        min_match_points: int = 16,
        min_match_cells: int = 64,
        info_nce_points: int = 1024,
        info_nce_cells: int = 1024,
        max_negatives: int | None = None,
        r_p: float = 1.0,
        r_n: float = 3.0,
        loss_weights: Sequence[float] = (1.0, 0.5, 0.2),
        pose_huber_delta: float = 1.0,
        pose_loss_gate: Sequence[float] | None = (20.0, 2.0),
        refine_steps: int = 5,
        fine_matching: bool = False,
        fine_channels: int = 32,
        fine_window_radius: int = 5,
        fine_temperature: float = 0.1,
        fine_sigma_px: float = 1.0,
        fine_train_jitter_px: float = 6.0,
        fine_loss_weight: float = 1.0,
        fpn_upsampling: str = "aligned",
        cell_convention: str = "stem",
    ) -> None:
        super().__init__()
        if len(loss_weights) != 3:
            raise ValueError(f"loss_weights must be (λ_f, λ_o, λ_p), got {loss_weights}")
        if not 0 <= r_p <= r_n:
            raise ValueError(f"radii must satisfy 0 <= r_p <= r_n, got r_p={r_p}, r_n={r_n}")
        if min(max_match_points, min_match_points, min_match_cells) < 1:
            raise ValueError("max_match_points, min_match_points, min_match_cells must be >= 1")
        if info_nce_points < 1 or info_nce_cells < 1:
            raise ValueError("info_nce_points and info_nce_cells must be >= 1")
        if cell_convention not in CELL_CONVENTIONS:
            raise ValueError(f"cell_convention must be one of {CELL_CONVENTIONS}, got "
                             f"{cell_convention!r}")
        self.cell_convention = cell_convention
        self.image_encoder = ImageEncoder(image_depth, channels, fpn_channels,
                                          image_base_channels, fpn_upsampling)
        self.point_encoder = PointEncoder(
            point_variant,
            in_channels=4,
            out_channels=channels,
            voxel_size=voxel_size,
            base_channels=point_base_channels,
            point_range=tuple(point_range),
        )
        self.fusion = CrossModalFusion(
            self.point_encoder.bottleneck_channels,
            self.image_encoder.bottleneck_channels,
            d_model=fusion_d_model,
            num_heads=fusion_heads,
            num_layers=fusion_layers,
            num_keypoints=fusion_keypoints,
            cell_convention=cell_convention,
        )
        self.use_overlap = bool(use_overlap)
        if self.use_overlap:
            self.point_overlap_head = OverlapHead(channels)
            self.image_overlap_head = OverlapHead(channels)
        self.alignment = TransformationAlignment(channels, similarity, temperature)
        self.matcher = build_matcher(matching, match_temperature)
        self.stride = ImageEncoder.output_stride
        self.use_pose_loss = bool(use_pose_loss)
        self.point_threshold = float(point_threshold)
        self.image_threshold = float(image_threshold)
        self.max_match_points = int(max_match_points)
        self.min_match_points = int(min_match_points)
        self.min_match_cells = int(min_match_cells)
        self.info_nce_points = int(info_nce_points)
        self.info_nce_cells = int(info_nce_cells)
        self.max_negatives = None if max_negatives is None else int(max_negatives)
        self.r_p, self.r_n = float(r_p), float(r_n)
        self.loss_weights = dict(zip(("feature", "overlap", "pose"), map(float, loss_weights),
                                     strict=True))
        self.pose_huber_delta = float(pose_huber_delta)
        if pose_loss_gate is not None and (len(pose_loss_gate) != 2
                                           or not min(pose_loss_gate) > 0):
            raise ValueError(f"pose_loss_gate must be (degrees, metres) > 0, got {pose_loss_gate}")
        self.pose_loss_gate = None if pose_loss_gate is None else tuple(map(float, pose_loss_gate))
        self.refine_steps = int(refine_steps)
        self.fine_matcher = None
        if fine_matching:
            self.fine_matcher = FineMatcher(
                channels, self.image_encoder.stem_channels, fine_channels, fine_window_radius,
                fine_temperature, fine_sigma_px, fine_train_jitter_px)
            self.loss_weights["fine"] = float(fine_loss_weight)

    # -- features -------------------------------------------------------------------------
    def extract_features(
        self, image: torch.Tensor, points: torch.Tensor, offset: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Fused decoder features (and the fine map with the fine stage).

        Args:
            image: (B, 3, H, W) normalised images.
            points: (N_total, 4) x y z intensity, LiDAR frame; offset (B,) cumulative ends.
        Returns:
            `point_feats` F_P (N_total, C), `image_feats` F_I (B, C, h, w), h = ceil(H / 4),
            w = ceil(W / 4); with the fine stage `fine_image_feats` (B, C_f, ceil(H / 2),
            ceil(W / 2)).
        """
        stem, stages = self.image_encoder.encode_with_stem(image)
        state = self.point_encoder.encode(points, offset)
        voxel_feats, voxel_xyz, voxel_batch = self.point_encoder.bottleneck(state)
        fused_voxels, fused_map = self.fusion(voxel_feats, voxel_xyz, voxel_batch, stages[-1])
        image_feats = self.image_encoder.decode([*stages[:-1], fused_map])
        out = {"point_feats": self.point_encoder.decode(state, fused_voxels),
               "image_feats": image_feats}
        if self.fine_matcher is not None:
            out["fine_image_feats"] = self.fine_matcher.image_features(stem, image_feats)
        return out

    # -- losses ---------------------------------------------------------------------------
    def _feature_losses(
        self,
        batch: Mapping[str, Any],
        slices: list[slice],
        feats: Mapping[str, torch.Tensor],
        image_flat: torch.Tensor,
        cells_uv: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """L_f = L_f^P + L_f^I, each averaged over all anchors of the batch; with the fine
        stage also L_fine, averaged over the same sampled overlap points."""
        point_feats = feats["point_feats"]
        fine = feats.get("fine_image_feats")
        point_overlap = batch["point_overlap"].to(torch.bool)
        point_pixel = batch["point_pixel"]
        image_overlap = batch["image_overlap"].to(torch.bool)
        per_point, per_cell, per_fine = [], [], []
        for b, sl in enumerate(slices):
            idx = sample_indices(point_overlap[sl], self.info_nce_points) + sl.start
            if idx.numel() == 0:
                continue
            sim = self.alignment.similarity(point_feats[idx], image_flat[b])
            truth = point_pixel[idx].float()
            loss_p, loss_i = frame_info_nce(
                sim, truth, cells_uv, image_overlap[b].reshape(-1),
                self.stride, self.r_p, self.r_n, self.info_nce_cells, self.max_negatives,
            )
            per_point.append(loss_p)
            per_cell.append(loss_i)
            if fine is not None:
                per_fine.append(self.fine_matcher.loss(
                    self.fine_matcher.point_features(point_feats[idx]), fine[b], truth))
        empty = point_feats.new_zeros(0)
        lp = mean_or_zero(torch.cat(per_point) if per_point else empty, point_feats)
        li = mean_or_zero(torch.cat(per_cell) if per_cell else empty, image_flat)
        terms = {"feature": lp + li}
        if fine is not None:
            terms["fine"] = mean_or_zero(torch.cat(per_fine) if per_fine else empty, fine)
        return terms

    def _check_batch(self, batch: Mapping[str, Any], h: int, w: int) -> None:
        b = batch["image"].shape[0]
        if batch["offset"].shape != (b,):
            raise ValueError(f"offset must be ({b},), got {tuple(batch['offset'].shape)}")
        if batch["K"].shape != (b, 3, 3):
            raise ValueError(f"K must be ({b}, 3, 3), got {tuple(batch['K'].shape)}")
        n = batch["points"].shape[0]
        expected = {
            "point_overlap": (n,),
            "point_pixel": (n, 2),
            "image_overlap": (b, h, w),
            "T_gt": (b, 4, 4),
        }
        for key, shape in expected.items():
            if key in batch and tuple(batch[key].shape) != shape:
                raise ValueError(
                    f"batch[{key!r}] must be {shape} (feature map {h}x{w}), "
                    f"got {tuple(batch[key].shape)}"
                )

    # -- forward --------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, Any], pose_loss_enabled: bool = False,
                with_pose: bool = False) -> dict:
        """Run the model on a collated batch.

        Args:
            batch: `image` (B, 3, H, W), `K` (B, 3, 3), `points` (N_total, 4), `offset` (B,);
                for the losses also `point_overlap` (N_total,), `point_pixel` (N_total, 2),
                `image_overlap` (B, h, w) and `T_gt` (B, 4, 4).
            pose_loss_enabled: add L_p (if the model has `use_pose_loss` and the batch its
                ground truth): the EPnP runs, with its graph, on matches of ground-truth
                overlap points (METHOD.md §9).
            with_pose: run the (differentiable, RANSAC-free) EPnP on the predicted matches
                and return its pose; without it and without L_p no EPnP runs.
        Returns:
            dict with `point_feats` (N_total, C), `image_feats` (B, C, h, w) (and with the
            fine stage `fine_image_feats` (B, C_f, 2h, 2w)); with overlap detection
            `point_logits`/`point_scores` (N_total,), `image_logits`/`image_scores`
            (B, h, w); `matches` (list of B dicts: `point_index` (K_b,) into the batch
            points, `pixels` (K_b, 2) (fine-refined with the fine stage, which adds
            `coarse_pixels` (K_b, 2) and `fine_spread` (K_b,) px), `weights` (K_b,)); when
            an EPnP ran: `R` (B, 3, 3), `t` (B, 3), `T_pred` (B, 4, 4) T_cam_lidar of the
            input cloud, `pose_valid` (B,), `reproj_error` (B,) px; when the ground truth is
            present `loss`, `loss_feature`, `loss_overlap` (with overlap detection),
            `loss_fine` (fine stage), and with L_p `loss_pose` and `pose_loss_frames` (frames
            that passed the gate).
        """
        feats = self.extract_features(batch["image"], batch["points"], batch["offset"])
        # heads, similarities, EPnP and losses in float32 even under mixed precision
        with torch.autocast(feats["image_feats"].device.type, enabled=False):
            return self._predict(batch, {k: v.float() for k, v in feats.items()},
                                 pose_loss_enabled, with_pose)

    def _predict(
        self,
        batch: Mapping[str, Any],
        feats: dict[str, torch.Tensor],
        pose_loss_enabled: bool,
        with_pose: bool,
    ) -> dict:
        """Everything after the decoders (see `forward`)."""
        points, offset = batch["points"], batch["offset"]
        point_feats, image_feats = feats["point_feats"], feats["image_feats"]
        bsz, _, h, w = image_feats.shape
        self._check_batch(batch, h, w)
        slices = _offsets_to_slices(offset, points.shape[0])
        image_flat = image_feats.flatten(2).transpose(1, 2)  # (B, h*w, C)
        cells_uv = cell_centers(h, w, self.stride, convention=self.cell_convention,
                                device=image_feats.device)
        out: dict[str, Any] = dict(feats)

        point_scores = image_scores = None
        if self.use_overlap:
            out["point_logits"] = self.point_overlap_head(point_feats)
            out["image_logits"] = self.image_overlap_head(image_feats.permute(0, 2, 3, 1))
            out["point_scores"] = point_scores = torch.sigmoid(out["point_logits"])
            out["image_scores"] = image_scores = torch.sigmoid(out["image_logits"])
        flat_scores = None if image_scores is None else image_scores.flatten(1)

        with_pose_loss = (self.use_pose_loss and pose_loss_enabled and "T_gt" in batch
                          and "point_overlap" in batch)
        with torch.set_grad_enabled(torch.is_grad_enabled() and with_pose_loss):
            out["matches"] = self._frame_matches(
                slices, feats, image_flat, point_scores, flat_scores, cells_uv,
                self._pose_support(batch, slices) if with_pose_loss else None)
            if with_pose_loss or with_pose:
                pose = self._solve(points, out["matches"], batch["K"])
                out["R"], out["t"] = pose.R, pose.t
                bottom = pose.R.new_tensor([0.0, 0.0, 0.0, 1.0]).expand(bsz, 1, 4)
                out["T_pred"] = torch.cat(
                    (torch.cat((pose.R, pose.t.unsqueeze(-1)), dim=2), bottom), 1)
                out["pose_valid"], out["reproj_error"] = pose.valid, pose.reproj_error

        if all(key in batch for key in GT_KEYS):
            terms = self._feature_losses(batch, slices, feats, image_flat, cells_uv)
            if self.use_overlap:
                terms["overlap"] = overlap_loss(
                    out["point_logits"], batch["point_overlap"].to(torch.bool),
                    out["image_logits"], batch["image_overlap"].to(torch.bool),
                )
            if with_pose_loss:
                terms["pose"] = pose_loss(
                    pose.R, pose.t, batch["T_gt"], pose.valid, self.pose_huber_delta,
                    self.pose_loss_gate,
                )
                out["pose_loss_frames"] = pose_loss_frames(
                    pose.R.detach(), pose.t.detach(), batch["T_gt"], pose.valid,
                    self.pose_loss_gate).sum()
            for key, value in terms.items():
                out[f"loss_{key}"] = value
            out["loss"] = weighted_total(terms, self.loss_weights)
        return out


def build_calibration_net(model_kwargs: Mapping[str, Any],
                          point_range: Sequence[float]) -> CalibrationNet:
    """CalibrationNet of a resolved pre-training config: its `model` keyword arguments and its
    `data.point_range` (one value serves the point cropping and the voxel grid).

    A `point_range` inside `model_kwargs` must equal `point_range`; raises ValueError if not.
    """
    kwargs = dict(model_kwargs)
    own = kwargs.pop("point_range", None)
    if own is not None and [float(v) for v in own] != [float(v) for v in point_range]:
        raise ValueError(f"model point_range {list(own)} differs from data.point_range "
                         f"{list(point_range)}; set data.point_range only")
    return CalibrationNet(**kwargs, point_range=tuple(point_range))

