"""NCLR pre-training losses (paper Eqs. 1, 3, 7; METHOD.md §3-§5).

- Feature discrimination `L_f`: bidirectional multi-positive InfoNCE. A pair (point, cell) is
  positive when the point's ground-truth projection lies within `r_p` cells of the cell centre,
  negative when it lies farther than `r_n` cells; the band between is ignored. Distances are
  Euclidean, in cells (pixels / stride) *(decision)*.
- Overlap detection `L_o` (Eq. 3): binary cross-entropy (on logits) of the point overlap
  scores plus that of the image-cell overlap scores, each averaged over its elements.
- Pose `L_p` (Eq. 7): element-wise Huber (δ) of `R_gtᵀ R̂ − I` plus of `t_gt − t̂`, summed over
  the elements (the paper writes a norm) and averaged over the frames with a valid pose
  *(decision)*; 0, still attached to the graph, when no frame is valid.
- Fine matching `L_fine` (METHOD.md §9): per-point loss of the fine stage, defined beside
  it (`nclr_core.models.fine_matching.FineMatcher.loss`).
- Total: `λ_f L_f + λ_o L_o + λ_p L_p (+ λ_fine L_fine)` over the terms present.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

DEFAULT_LOSS_WEIGHTS = {"feature": 1.0, "overlap": 0.5, "pose": 0.2}


def sample_indices(
    mask: torch.Tensor, max_count: int | None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Indices of at most `max_count` True entries of `mask`, drawn without replacement.

    Args:
        mask: (N,) bool.
        max_count: cap on the number drawn; None keeps every True entry.
    Returns:
        (K,) int64 indices into `mask`, in random order when subsampled.
    """
    idx = torch.nonzero(mask, as_tuple=False).squeeze(1)
    if max_count is None or idx.numel() <= max_count:
        return idx
    device = idx.device if generator is None else generator.device
    perm = torch.randperm(idx.numel(), generator=generator, device=device)[:max_count]
    return idx[perm.to(idx.device)]


def cell_distances(pixels: torch.Tensor, cell_pixels: torch.Tensor, stride: int) -> torch.Tensor:
    """Euclidean distance, in cells, from each pixel to each cell centre.

    Args:
        pixels: (A, 2) pixel coordinates (u, v).
        cell_pixels: (M, 2) cell centres (u, v) in the same pixels.
        stride: pixels per cell.
    Returns:
        (A, M) distances in cells.
    """
    return torch.cdist(pixels.float(), cell_pixels.float()) / float(stride)


def _subsample_negatives(
    negative: torch.Tensor, max_negatives: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Keep at most `max_negatives` random negatives per row of the (A, K) bool mask."""
    if int(negative.sum(dim=1).max()) <= max_negatives:
        return negative
    device = negative.device if generator is None else generator.device
    scores = torch.rand(negative.shape, generator=generator, device=device).to(negative.device)
    scores = scores.masked_fill(~negative, -1.0)
    keep = torch.zeros_like(negative)
    keep.scatter_(1, scores.topk(max_negatives, dim=1).indices, True)
    return keep & negative


def multi_positive_info_nce(
    logits: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    max_negatives: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-anchor multi-positive InfoNCE, `−log(Σ_pos e^s / (Σ_pos e^s + Σ_neg e^s))`.

    Computed with log-sum-exp. Pairs neither positive nor negative are ignored; anchors
    without a positive are dropped.

    Args:
        logits: (A, K) scaled similarities of A anchors with K candidates.
        positive: (A, K) bool positive pairs.
        negative: (A, K) bool negative pairs (must not overlap `positive`).
        max_negatives: keep at most this many random negatives per anchor (None: all).
    Returns:
        (A',) loss of each anchor with at least one positive.
    """
    if logits.shape != positive.shape or logits.shape != negative.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)}, positive {tuple(positive.shape)} and negative "
            f"{tuple(negative.shape)} must have the same (A, K) shape"
        )
    if bool((positive & negative).any()):
        raise ValueError("a pair cannot be both positive and negative")
    if max_negatives is not None:
        negative = _subsample_negatives(negative, max_negatives, generator)
    has_pos = positive.any(dim=1)
    logits, positive, negative = logits[has_pos], positive[has_pos], negative[has_pos]
    neg_inf = torch.finfo(logits.dtype).min
    log_pos = torch.logsumexp(logits.masked_fill(~positive, neg_inf), dim=1)
    log_all = torch.logsumexp(logits.masked_fill(~(positive | negative), neg_inf), dim=1)
    return log_all - log_pos


def frame_info_nce(
    similarity: torch.Tensor,
    point_pixel: torch.Tensor,
    cell_pixels: torch.Tensor,
    cell_overlap: torch.Tensor,
    stride: int,
    r_p: float = 1.0,
    r_n: float = 3.0,
    max_cells: int | None = 1024,
    max_negatives: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both InfoNCE directions for one frame.

    Point→image: every sampled point is an anchor against all cells. Image→point: up to
    `max_cells` cells of the ground-truth image overlap that have a positive among the
    sampled points are anchors against the sampled points.

    Args:
        similarity: (S, M) scaled similarity of S sampled overlap points with all M cells.
        point_pixel: (S, 2) ground-truth projections (u, v) of those points, in pixels.
        cell_pixels: (M, 2) cell centres (u, v), in pixels.
        cell_overlap: (M,) bool ground-truth image overlap of the cells.
        stride: pixels per cell; r_p, r_n: positive / negative radii in cells.
    Returns:
        per-anchor losses (A_P,) point→image and (A_I,) image→point.
    """
    if not 0 <= r_p <= r_n:
        raise ValueError(f"radii must satisfy 0 <= r_p <= r_n, got r_p={r_p}, r_n={r_n}")
    s, m = similarity.shape
    if point_pixel.shape != (s, 2) or cell_pixels.shape != (m, 2) or cell_overlap.shape != (m,):
        raise ValueError(
            f"shape mismatch: similarity {(s, m)}, point_pixel {tuple(point_pixel.shape)}, "
            f"cell_pixels {tuple(cell_pixels.shape)}, cell_overlap {tuple(cell_overlap.shape)}"
        )
    dist = cell_distances(point_pixel, cell_pixels, stride)
    positive = dist <= r_p
    negative = dist > r_n
    loss_p = multi_positive_info_nce(similarity, positive, negative, max_negatives, generator)
    anchors = sample_indices(cell_overlap & positive.any(dim=0), max_cells, generator)
    loss_i = multi_positive_info_nce(
        similarity[:, anchors].transpose(0, 1),
        positive[:, anchors].transpose(0, 1),
        negative[:, anchors].transpose(0, 1),
        max_negatives,
        generator,
    )
    return loss_p, loss_i


def mean_or_zero(values: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """Mean of `values`, or a zero attached to `anchor`'s graph when `values` is empty."""
    if values.numel() == 0:
        return anchor.sum() * 0.0
    return values.mean()


def overlap_loss(
    point_logits: torch.Tensor,
    point_overlap: torch.Tensor,
    image_logits: torch.Tensor,
    image_overlap: torch.Tensor,
) -> torch.Tensor:
    """Eq. 3: mean BCE over points + mean BCE over image cells, on logits.

    Args:
        point_logits: (N,) overlap logits of all points of the batch.
        point_overlap: (N,) bool ground truth.
        image_logits: (B, h, w) overlap logits of the feature cells.
        image_overlap: (B, h, w) bool ground truth.
    """
    if point_logits.shape != point_overlap.shape or image_logits.shape != image_overlap.shape:
        raise ValueError(
            f"overlap logits and ground truth differ in shape: points "
            f"{tuple(point_logits.shape)} vs {tuple(point_overlap.shape)}, image "
            f"{tuple(image_logits.shape)} vs {tuple(image_overlap.shape)}"
        )
    loss_p = F.binary_cross_entropy_with_logits(point_logits, point_overlap.to(point_logits.dtype))
    loss_i = F.binary_cross_entropy_with_logits(image_logits, image_overlap.to(image_logits.dtype))
    return loss_p + loss_i


def _within_gate(R: torch.Tensor, t: torch.Tensor, T_gt: torch.Tensor,  # noqa: N803
                 max_deg: float, max_m: float) -> torch.Tensor:
    """(B,) bool: geodesic rotation error <= max_deg and translation error <= max_m."""
    trace = (T_gt[:, :3, :3].transpose(1, 2) @ R).diagonal(dim1=1, dim2=2).sum(-1)
    angle = torch.rad2deg(torch.arccos(((trace - 1) / 2).clamp(-1.0, 1.0)))
    return (angle <= max_deg) & ((T_gt[:, :3, 3] - t).norm(dim=1) <= max_m)


def pose_loss_frames(
    R: torch.Tensor,  # noqa: N803 (rotation matrix)
    t: torch.Tensor,
    T_gt: torch.Tensor,  # noqa: N803 (project frame naming)
    valid: torch.Tensor,
    gate: tuple[float, float] | None = None,
) -> torch.Tensor:
    """(B,) bool: the frames `pose_loss` counts (valid, finite, and within `gate`).

    R (B, 3, 3), t (B, 3), T_gt (B, 4, 4), valid (B,); gate = (degrees, metres) or None.
    """
    b = R.shape[0]
    if R.shape != (b, 3, 3) or t.shape != (b, 3) or T_gt.shape != (b, 4, 4) or valid.shape != (b,):
        raise ValueError(
            f"pose shapes must be R (B,3,3), t (B,3), T_gt (B,4,4), valid (B,); got "
            f"{tuple(R.shape)}, {tuple(t.shape)}, {tuple(T_gt.shape)}, {tuple(valid.shape)}"
        )
    kept = valid.to(torch.bool) & torch.isfinite(R).all(dim=(1, 2)) & torch.isfinite(t).all(1)
    if gate is not None:
        kept = kept & _within_gate(R.detach(), t.detach(), T_gt.to(R.dtype), *gate)
    return kept


def pose_loss(
    R: torch.Tensor,  # noqa: N803 (rotation matrix)
    t: torch.Tensor,
    T_gt: torch.Tensor,  # noqa: N803 (project frame naming)
    valid: torch.Tensor,
    delta: float = 1.0,
    gate: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Eq. 7: Huber(R_gtᵀ R̂ − I) + Huber(t_gt − t̂), over the frames with a valid pose.

    The EPnP that L_p trains through sees only points of the ground-truth overlap
    (`CalibrationNet`, METHOD.md §9): on the network's own top-K points, 39 % lay behind the
    camera and the solve was invalid or degenerate on most frames, which wrecked every run
    (measured: L_f 2.5 -> 11 within 20 steps of enabling L_p, `RESULTS.md`).
    *(decision)* `gate` = (degrees, metres) further keeps only frames whose pose is already
    that close to the truth (geodesic rotation error, translation error), so that a frame
    whose matches are still mostly wrong adds no noise: L_p refines poses that are nearly
    right. `pose_loss_frames` says which frames count.

    Args:
        R: (B, 3, 3) predicted rotation of T_cam_lidar.
        t: (B, 3) predicted translation.
        T_gt: (B, 4, 4) ground-truth T_cam_lidar.
        valid: (B,) bool, frames whose predicted pose is usable.
        gate: (max rotation error deg, max translation error m), or None for every frame.
    Returns:
        scalar: per-frame sum of element-wise Huber terms, averaged over the frames kept; a
        zero attached to the graph of R and t when none is kept (never NaN).
    """
    valid = pose_loss_frames(R, t, T_gt, valid, gate)
    R_v, t_v = R[valid], t[valid]  # noqa: N806
    if R_v.shape[0] == 0:
        return (R_v.sum() + t_v.sum()) * 0.0
    T_v = T_gt[valid].to(R_v.dtype)  # noqa: N806
    rot_err = T_v[:, :3, :3].transpose(1, 2) @ R_v - torch.eye(3, dtype=R_v.dtype, device=R.device)
    trans_err = T_v[:, :3, 3] - t_v
    zero_r, zero_t = torch.zeros_like(rot_err), torch.zeros_like(trans_err)
    huber_r = F.huber_loss(rot_err, zero_r, reduction="none", delta=delta).sum(dim=(1, 2))
    huber_t = F.huber_loss(trans_err, zero_t, reduction="none", delta=delta).sum(dim=1)
    return (huber_r + huber_t).mean()


def weighted_total(
    terms: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None = None
) -> torch.Tensor:
    """`Σ λ_k L_k` over the terms present (keys "feature", "overlap", "pose", "fine").

    Args:
        terms: scalar losses by name; at least one.
        weights: λ by name [DEFAULT_LOSS_WEIGHTS]; every term needs one.
    """
    weights = DEFAULT_LOSS_WEIGHTS if weights is None else weights
    if not terms:
        raise ValueError("no loss terms to add")
    missing = sorted(set(terms) - set(weights))
    if missing:
        raise ValueError(f"no loss weight for terms {missing}")
    return sum(weights[k] * v for k, v in terms.items())
