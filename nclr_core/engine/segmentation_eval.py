"""Segmentation evaluation over a data set: mIoU, per-class IoU, the confusion matrix and,
with an instance head, PQ / SQ / RQ (METHOD.md §7; metrics in `nclr_core.segmentation_metrics`).

Shared by fine-tuning (validation and the held-out evaluation) and
`training/evaluate_segmentation.py`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from nclr_core.data.collate import batch_to
from nclr_core.data.segmentation_dataset import SegmentationDataset, collate_points
from nclr_core.models.segmentation import SegmentationNet
from nclr_core.segmentation_metrics import ConfusionMatrix, PanopticQuality


def evenly_spaced(count: int, limit: int | None) -> list[int]:
    """`limit` indices spread evenly over range(count) (all of them when limit is None or
    not smaller): consecutive scans of a drive are alike, spread ones are not."""
    if limit is None or limit >= count:
        return list(range(count))
    if limit < 1:
        raise ValueError(f"a frame limit must be positive, got {limit}")
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, limit)})


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


@torch.no_grad()
def evaluate_segmentation(model: SegmentationNet, dataset: SegmentationDataset,
                          device: torch.device, names: Sequence[str], pq_min_points: int,
                          panoptic: bool = True) -> dict[str, Any]:
    """Metrics of `model` over every scan of `dataset` (one scan at a time).

    Returns `miou`, `per_class_iou` (name -> IoU, None for classes absent from both
    prediction and ground truth), `confusion_matrix` ((K, K) counts as nested lists, rows =
    ground truth, columns = prediction, ignored points left out), `num_points`; with the
    instance head and `panoptic`: `pq`, `sq`, `rq`, `pq_things`, `pq_stuff` (class means
    over the thing / stuff classes seen) and `per_class_pq`.
    """
    model.eval()
    confusion = ConfusionMatrix(model.num_classes, model.ignore_index)
    quality = (PanopticQuality(model.num_classes, model.ignore_index, pq_min_points)
               if panoptic and model.has_instance_head else None)
    loader = DataLoader(dataset, batch_size=1, collate_fn=collate_points)
    for batch in tqdm(loader, desc="evaluate", leave=False):
        batch = batch_to(batch, device)
        out = model(batch["points"], batch["offset"])
        semantic = out["logits"].argmax(dim=1)
        labels = batch["labels"].cpu().numpy()
        confusion.update(semantic.cpu().numpy(), labels)
        if quality is not None:
            sem, inst = model.predict_instances(batch["points"], semantic, out["offsets"])
            quality.update(sem.cpu().numpy(), inst.cpu().numpy(), labels,
                           batch["instances"].cpu().numpy())
    iou = confusion.iou()
    metrics: dict[str, Any] = {
        "miou": _nan_to_none(confusion.miou()),
        "per_class_iou": {n: _nan_to_none(v) for n, v in zip(names, iou, strict=True)},
        "confusion_matrix": confusion.matrix.tolist(),
        "num_points": int(confusion.matrix.sum()),
    }
    if quality is not None:
        metrics.update({k: _nan_to_none(v) for k, v in quality.summary().items()})
        per_class_pq = quality.per_class()["pq"]
        things = np.isin(np.arange(model.num_classes), model.thing_classes.cpu().numpy())
        for key, group in (("pq_things", things), ("pq_stuff", ~things)):
            values = per_class_pq[group]
            metrics[key] = (float(np.nanmean(values)) if np.isfinite(values).any() else None)
        metrics["per_class_pq"] = {n: _nan_to_none(v) for n, v in
                                   zip(names, per_class_pq, strict=True)}
    return metrics
