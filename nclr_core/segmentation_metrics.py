"""Segmentation metrics: confusion-matrix IoU (semantic) and PQ / SQ / RQ (panoptic).

Semantic (`ConfusionMatrix`): points whose ground truth is the ignore index are left out;
IoU_c = TP_c / (TP_c + FP_c + FN_c); a class absent from both prediction and ground truth
has IoU NaN and is left out of the mean (mIoU = nan-mean over classes).

Panoptic (`PanopticQuality`, the SemanticKITTI protocol of Behley et al. 2021): per frame and
per class, a segment is the set of points with one (class, instance id); instance id 0 is a
segment too, so a stuff class is one segment per frame. Points whose ground truth is the
ignore index are left out of both sides. A predicted and a ground-truth segment of a class
match when their IoU exceeds 0.5 (unique by construction). Unmatched ground-truth segments
of at least `min_points` points are false negatives, unmatched predicted segments of at least
`min_points` points false positives. Per class SQ = Σ IoU(TP) / TP, RQ = TP / (TP + FP/2 +
FN/2), PQ = SQ · RQ; classes without any TP, FP or FN are NaN and left out of the means.
"""
from __future__ import annotations

import numpy as np

MATCH_IOU = 0.5


def _as_labels(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D integer array, got {array.dtype} {array.shape}")
    return array.astype(np.int64, copy=False)


def _check_pair(pred: np.ndarray, target: np.ndarray) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {target.shape} differ")


class ConfusionMatrix:
    """Accumulates a (num_classes, num_classes) confusion matrix, rows = ground truth.

    Args:
        num_classes: K; valid labels are 0..K-1.
        ignore_index: ground-truth label left out of the counts.
    """

    def __init__(self, num_classes: int, ignore_index: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add one batch: pred (N,) in 0..K-1, target (N,) in 0..K-1 or the ignore index."""
        pred, target = _as_labels(pred, "pred"), _as_labels(target, "target")
        _check_pair(pred, target)
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        k = self.num_classes
        for name, values in (("pred", pred), ("target", target)):
            if values.size and (values.min() < 0 or values.max() >= k):
                raise ValueError(f"{name} labels must lie in 0..{k - 1} (or the ignore index "
                                 f"{self.ignore_index} for target), got {values.min()}.."
                                 f"{values.max()}")
        self.matrix += np.bincount(target * k + pred, minlength=k * k).reshape(k, k)

    def iou(self) -> np.ndarray:
        """(K,) float64 IoU per class, NaN where the class is absent from both sides."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def miou(self) -> float:
        """Mean IoU over the classes present in prediction or ground truth (NaN if none)."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


class PanopticQuality:
    """Accumulates PQ / SQ / RQ per class over frames (see the module docstring).

    Args:
        num_classes: K semantic classes 0..K-1.
        ignore_index: ground-truth semantic label left out.
        min_points: unmatched segments smaller than this count neither as FP nor FN.
    """

    def __init__(self, num_classes: int, ignore_index: int, min_points: int = 50) -> None:
        if num_classes < 1 or min_points < 0:
            raise ValueError(f"bad num_classes {num_classes} or min_points {min_points}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.min_points = int(min_points)
        self.tp = np.zeros(num_classes, dtype=np.int64)
        self.fp = np.zeros(num_classes, dtype=np.int64)
        self.fn = np.zeros(num_classes, dtype=np.int64)
        self.iou_sum = np.zeros(num_classes, dtype=np.float64)

    def update(self, pred_sem: np.ndarray, pred_inst: np.ndarray, gt_sem: np.ndarray,
               gt_inst: np.ndarray) -> None:
        """Add one frame: per-point semantic labels and instance ids (N,) of each side."""
        arrays = [_as_labels(a, n) for a, n in ((pred_sem, "pred_sem"), (pred_inst, "pred_inst"),
                                                (gt_sem, "gt_sem"), (gt_inst, "gt_inst"))]
        for other in arrays[1:]:
            _check_pair(arrays[0], other)
        pred_sem, pred_inst, gt_sem, gt_inst = arrays
        keep = gt_sem != self.ignore_index
        pred_sem, pred_inst, gt_sem, gt_inst = (a[keep] for a in arrays)
        if (pred_inst < 0).any() or (gt_inst < 0).any():
            raise ValueError("instance ids must be non-negative")
        for cls in range(self.num_classes):
            self._update_class(cls, pred_inst[pred_sem == cls], pred_sem == cls,
                               gt_inst, gt_sem == cls)

    def _update_class(self, cls: int, pred_ids: np.ndarray, pred_mask: np.ndarray,
                      gt_inst: np.ndarray, gt_mask: np.ndarray) -> None:
        pred_seg, pred_area = np.unique(pred_ids, return_counts=True)
        gt_seg, gt_area = np.unique(gt_inst[gt_mask], return_counts=True)
        if pred_seg.size == 0 and gt_seg.size == 0:
            return
        both = pred_mask & gt_mask
        # Intersections of (gt segment, pred segment) pairs via a combined key.
        stride = int(max(pred_seg.max(initial=0), 0)) + 1
        pred_all = np.zeros(gt_inst.shape[0], dtype=np.int64)
        pred_all[pred_mask] = pred_ids
        combo, inter = np.unique(gt_inst[both] * stride + pred_all[both], return_counts=True)
        gi = np.searchsorted(gt_seg, combo // stride)
        pj = np.searchsorted(pred_seg, combo % stride)
        iou = inter / (gt_area[gi] + pred_area[pj] - inter)
        hit = iou > MATCH_IOU
        matched_gt = np.zeros(gt_seg.size, dtype=bool)
        matched_pred = np.zeros(pred_seg.size, dtype=bool)
        matched_gt[gi[hit]] = True
        matched_pred[pj[hit]] = True
        self.tp[cls] += int(hit.sum())
        self.iou_sum[cls] += float(iou[hit].sum())
        self.fn[cls] += int((~matched_gt & (gt_area >= self.min_points)).sum())
        self.fp[cls] += int((~matched_pred & (pred_area >= self.min_points)).sum())

    def per_class(self) -> dict[str, np.ndarray]:
        """`pq`, `sq`, `rq` (K,) float64 per class, NaN for classes never seen."""
        tp = self.tp.astype(np.float64)
        seen = (self.tp + self.fp + self.fn) > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            sq = np.where(self.tp > 0, self.iou_sum / np.maximum(tp, 1), 0.0)
            rq = tp / (tp + 0.5 * self.fp + 0.5 * self.fn)
        sq = np.where(seen, sq, np.nan)
        rq = np.where(seen, rq, np.nan)
        return {"pq": sq * rq, "sq": sq, "rq": rq}

    def summary(self) -> dict[str, float]:
        """Class means `pq`, `sq`, `rq` over the classes seen (NaN when none)."""
        out = {}
        for key, values in self.per_class().items():
            out[key] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        return out
