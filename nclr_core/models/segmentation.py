"""Semantic and panoptic segmentation on the NCLR point backbone (METHOD.md §7).

- Semantic: `PointEncoder` (the pre-trained sparse U-Net, run encode -> decode on its own
  bottleneck features, no fusion) + a linear classifier on the per-point features.
- Panoptic: + an instance head (C -> C -> 3 MLP) regressing each point's offset to the centre
  of its instance (the mean of the instance's points). At inference the "thing" points are
  shifted by their predicted offsets and clustered by flat-kernel mean shift (bandwidth
  [1.2 m], clusters under [50] points dropped); each instance's points then take the
  majority semantic class of the instance.

Loss (`SegmentationNet.loss`; the forward returns it given labels, `{"loss": ...}` as every
model the training loop runs): cross-entropy with an ignore label, plus (panoptic) the
Euclidean norm of the offset error, averaged over thing points that carry an instance id
(> 0). An instance is one (frame, class, instance id).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nclr_core.models.point_encoder import PointEncoder
from nclr_core.models.voxelize import batch_index_from_offset


class SegmentationNet(nn.Module):
    """Point backbone + linear semantic classifier (+ optional instance offset head).

    Args:
        backbone: PointEncoder keyword arguments (see `nclr_core.models.backbone_checkpoint`).
        num_classes: K semantic classes (train ids 0..K-1).
        ignore_index: label left out of the loss.
        instance_head: add the offset head (panoptic segmentation).
        thing_classes: train ids with instances (panoptic only).
        offset_loss_weight: weight of the offset loss against the cross-entropy.
        cluster_bandwidth: mean-shift bandwidth, metres.
        cluster_min_points: smallest instance kept by the clustering.
    """

    def __init__(
        self,
        backbone: dict[str, Any],
        num_classes: int,
        ignore_index: int = 255,
        instance_head: bool = False,
        thing_classes: Sequence[int] = (),
        offset_loss_weight: float = 1.0,
        cluster_bandwidth: float = 1.2,
        cluster_min_points: int = 50,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        bad = [c for c in thing_classes if not 0 <= c < num_classes]
        if bad:
            raise ValueError(f"thing_classes {bad} are not in 0..{num_classes - 1}")
        if instance_head and not thing_classes:
            raise ValueError("the instance head needs thing_classes")
        self.backbone = PointEncoder(**{**backbone, "point_range": tuple(backbone["point_range"])})
        channels = self.backbone.out_channels
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.classifier = nn.Linear(channels, num_classes)
        self.offset_head = (
            nn.Sequential(nn.Linear(channels, channels), nn.ReLU(inplace=True),
                          nn.Linear(channels, 3))
            if instance_head else None
        )
        self.register_buffer("thing_classes", torch.tensor(sorted(set(thing_classes)),
                                                           dtype=torch.long), persistent=False)
        self.offset_loss_weight = float(offset_loss_weight)
        self.cluster_bandwidth = float(cluster_bandwidth)
        self.cluster_min_points = int(cluster_min_points)

    @property
    def has_instance_head(self) -> bool:
        return self.offset_head is not None

    def forward(self, points: torch.Tensor, offset: torch.Tensor,
                labels: torch.Tensor | None = None, instances: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """Args: points (N, 4) x y z intensity, LiDAR frame; offset (B,) cumulative ends;
        labels, instances: (N,) as in `loss`, for training.

        Returns:
            `logits` (N, K); with the instance head, `offsets` (N, 3) metres, predicted
            instance centre minus point; given labels, also the losses of `loss` (`loss`,
            `loss_sem`, `loss_offset`).
        """
        features = self.backbone(points, offset)
        out = {"logits": self.classifier(features)}
        if self.offset_head is not None:
            out["offsets"] = self.offset_head(features)
        if labels is not None:
            out.update(self.loss(out, points, offset, labels, instances))
        return out

    def is_thing(self, labels: torch.Tensor) -> torch.Tensor:
        """(N,) bool: the label is a thing class."""
        return torch.isin(labels, self.thing_classes.to(labels.device))

    def loss(self, outputs: dict[str, torch.Tensor], points: torch.Tensor, offset: torch.Tensor,
             labels: torch.Tensor, instances: torch.Tensor | None = None
             ) -> dict[str, torch.Tensor]:
        """`loss` (total), `loss_sem`, and with the instance head `loss_offset`.

        Args:
            outputs: from `forward`; points (N, 4); offset (B,);
            labels: (N,) int64 train ids or the ignore index;
            instances: (N,) int64 instance ids (0 = none), needed with the instance head.
        """
        logits = outputs["logits"]
        if labels.shape != logits.shape[:1]:
            raise ValueError(f"labels {tuple(labels.shape)} do not match {logits.shape[0]} "
                             "points")
        if bool((labels == self.ignore_index).all()):
            loss_sem = logits.sum() * 0.0
        else:
            loss_sem = F.cross_entropy(logits, labels, ignore_index=self.ignore_index)
        result = {"loss_sem": loss_sem}
        total = loss_sem
        if self.offset_head is not None:
            if instances is None:
                raise ValueError("the instance head needs per-point instance ids")
            batch = batch_index_from_offset(offset, points.shape[0])
            valid = self.is_thing(labels) & (instances > 0)
            target = instance_center_offsets(points[:, :3], batch, labels, instances, valid)
            predicted = outputs["offsets"]
            if bool(valid.any()):
                loss_offset = (predicted[valid] - target[valid]).norm(dim=1).mean()
            else:
                loss_offset = predicted.sum() * 0.0
            result["loss_offset"] = loss_offset
            total = total + self.offset_loss_weight * loss_offset
        result["loss"] = total
        return result

    @torch.no_grad()
    def predict_instances(self, points: torch.Tensor, semantic: torch.Tensor,
                          offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Panoptic labels of ONE frame.

        Args:
            points: (N, >=3) LiDAR frame; semantic (N,) predicted train ids; offsets (N, 3).
        Returns:
            semantic (N,) with each instance's points set to its majority class, and
            instance ids (N,) int64: 1..I for clustered thing points, 0 elsewhere.
        """
        things = torch.nonzero(self.is_thing(semantic)).squeeze(1)
        instance = torch.zeros_like(semantic)
        semantic = semantic.clone()
        if things.numel() == 0:
            return semantic, instance
        shifted = points[things, :3].float() + offsets[things].float()
        ids = mean_shift(shifted, self.cluster_bandwidth, self.cluster_min_points)
        instance[things] = ids
        clustered = ids > 0
        if bool(clustered.any()):
            cls = semantic[things][clustered]
            ids_c = ids[clustered]
            votes = torch.zeros(int(ids_c.max()) + 1, self.num_classes, dtype=torch.long,
                                device=semantic.device)
            votes.index_put_((ids_c, cls), torch.ones_like(cls), accumulate=True)
            semantic[things[clustered]] = votes.argmax(dim=1)[ids_c]
        return semantic, instance


def instance_center_offsets(xyz: torch.Tensor, batch: torch.Tensor, labels: torch.Tensor,
                            instances: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Offset from each point to the centre (mean) of its instance, i.e. of the points with
    the same (frame, class, instance id).

    Args:
        xyz: (N, 3) metres; batch (N,) frame index; labels (N,) semantic class;
        instances (N,) instance ids; valid: (N,) bool, the points that belong to an instance.
    Returns:
        (N, 3) centre - xyz for valid points, 0 elsewhere.
    """
    target = torch.zeros_like(xyz)
    if not bool(valid.any()):
        return target
    key = torch.stack((batch[valid], labels[valid], instances[valid]), dim=1)
    _, group = torch.unique(key, dim=0, return_inverse=True)
    count = torch.bincount(group).to(xyz.dtype)
    sums = xyz.new_zeros((count.numel(), 3)).index_add_(0, group, xyz[valid])
    target[valid] = sums[group] / count[group, None] - xyz[valid]
    return target


def _chunked_neighbour_mean(seeds: torch.Tensor, points: torch.Tensor, weights: torch.Tensor,
                            radius: float, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean of the points within `radius` of each seed, and their total weight."""
    means, totals = [], []
    for start in range(0, seeds.shape[0], chunk):
        near = (torch.cdist(seeds[start:start + chunk], points) <= radius).to(points.dtype)
        near = near * weights
        total = near.sum(dim=1)
        means.append((near @ points) / total.clamp(min=1).unsqueeze(1))
        totals.append(total)
    return torch.cat(means), torch.cat(totals)


def _grid_means(points: torch.Tensor, cell: float) -> tuple[torch.Tensor, torch.Tensor,
                                                            torch.Tensor]:
    """Mean point and point count of each occupied cell of edge `cell`, and each point's cell."""
    _, inverse = torch.unique(torch.floor(points / cell).long(), dim=0, return_inverse=True)
    count = torch.bincount(inverse).to(points.dtype)
    means = points.new_zeros((count.numel(), 3)).index_add_(0, inverse, points) / count[:, None]
    return means, count, inverse


def mean_shift(points: torch.Tensor, bandwidth: float, min_points: int, max_iter: int = 30,
               chunk: int = 1024) -> torch.Tensor:
    """Flat-kernel mean-shift clustering (bin-seeded, like scikit-learn's `bin_seeding`).

    For speed the points are first summarised by the mean and count of each cell of a grid
    of edge bandwidth / 4 (the kernel then weighs each summary by its count). Seeds are the
    means of the points in each cell of a grid of edge `bandwidth`; each seed moves to the
    weighted mean of the summaries within `bandwidth` until no seed moves more than 1e-3 of
    the bandwidth, or `max_iter`; seeds that meet (within 1e-2 of the bandwidth) are merged
    on the way. Modes are then merged greedily, densest first: a mode within `bandwidth` of a
    kept one is dropped. Each point joins the nearest kept mode.

    Args:
        points: (M, 3) float, e.g. thing points shifted by their predicted offsets.
        bandwidth: kernel radius, metres.
        min_points: clusters with fewer points get id 0.
    Returns:
        (M,) int64 cluster ids: 1..I ordered by decreasing size, 0 for dropped points.
    """
    if points.dim() != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (M, 3), got {tuple(points.shape)}")
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    m = points.shape[0]
    ids = torch.zeros(m, dtype=torch.long, device=points.device)
    if m == 0:
        return ids
    points = points.float()
    summary, weight, summary_of_point = _grid_means(points, bandwidth / 4)
    seeds, strength, _ = _grid_means(points, bandwidth)
    for _ in range(max_iter):
        moved, strength = _chunked_neighbour_mean(seeds, summary, weight, bandwidth, chunk)
        shift = (moved - seeds).norm(dim=1).max()
        _, first = _unique_rows(torch.round(moved / (1e-2 * bandwidth)).long())
        seeds, strength = moved[first], strength[first]
        if float(shift) < 1e-3 * bandwidth:
            break
    order = torch.argsort(strength, descending=True, stable=True)
    seeds = seeds[order]
    close = (torch.cdist(seeds, seeds) <= bandwidth).cpu()  # the greedy loop runs on the CPU
    suppressed = torch.zeros(seeds.shape[0], dtype=torch.bool)
    keep = []
    for i in range(seeds.shape[0]):
        if not bool(suppressed[i]):
            keep.append(i)
            suppressed |= close[i]
    modes = seeds[torch.tensor(keep, device=seeds.device)]
    nearest_summary = torch.cat([torch.cdist(summary[s:s + chunk], modes).argmin(dim=1)
                                 for s in range(0, summary.shape[0], chunk)])
    nearest = nearest_summary[summary_of_point]
    sizes = torch.bincount(nearest, minlength=modes.shape[0])
    rank = torch.argsort(sizes, descending=True, stable=True)
    new_id = torch.zeros_like(sizes)
    big = sizes[rank] >= min_points
    new_id[rank[big]] = torch.arange(1, int(big.sum()) + 1, device=points.device)
    return new_id[nearest]


def _unique_rows(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique rows of an (S, D) integer tensor and the first index of each."""
    unique, inverse = torch.unique(keys, dim=0, return_inverse=True)
    positions = torch.arange(keys.shape[0], device=keys.device)
    first = torch.full((unique.shape[0],), keys.shape[0], dtype=torch.long, device=keys.device)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    return unique, first
