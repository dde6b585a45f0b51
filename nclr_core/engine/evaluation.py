"""Pretext metrics of a CalibrationNet on pair batches (METHOD.md §8).

Per frame: RRE (Euler-sum 'xzy' and geodesic, degrees), RTE (m), success (RTE < 2 m and
RRE < 5°), matching error of the matched points that have a ground-truth projection
(network-image pixels) and the share under 5 px. Over the set: overlap precision, recall
and IoU of S^P (points) and S^I (stride-4 cells) at θ = 0.5, and the area under the ROC
curve of S^P (ranking quality, independent of θ).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from nclr_core.data.collate import batch_to, collate_pairs
from nclr_core.geometry.metrics import pose_errors, registration_success

MATCH_ACCURACY_PX = 5.0


@dataclass
class OverlapCounts:
    """True/false positives and false negatives of a binary overlap prediction."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, predicted: torch.Tensor, truth: torch.Tensor) -> None:
        self.tp += int((predicted & truth).sum())
        self.fp += int((predicted & ~truth).sum())
        self.fn += int((~predicted & truth).sum())

    def summary(self, prefix: str) -> dict[str, float]:
        def ratio(a: int, b: int) -> float:
            return a / b if b else float("nan")
        return {f"{prefix}_precision": ratio(self.tp, self.tp + self.fp),
                f"{prefix}_recall": ratio(self.tp, self.tp + self.fn),
                f"{prefix}_iou": ratio(self.tp, self.tp + self.fp + self.fn)}


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a random positive > that of a random negative),
    ties counted half; NaN without both classes. scores, truth: (N,)."""
    truth = np.asarray(truth, dtype=bool)
    positives, negatives = int(truth.sum()), int((~truth).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    sorted_scores = np.asarray(scores)[order]
    ranks = np.empty(len(order), dtype=np.float64)
    ranks[order] = np.arange(1, len(order) + 1)
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    mean_rank = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(mean_rank, counts)
    return float((ranks[truth].sum() - positives * (positives + 1) / 2.0)
                 / (positives * negatives))


@dataclass
class PretextAccumulator:
    """Per-frame records and overlap counts gathered over batches."""

    records: list[dict] = field(default_factory=list)
    points: OverlapCounts = field(default_factory=OverlapCounts)
    cells: OverlapCounts = field(default_factory=OverlapCounts)
    point_scores: list[np.ndarray] = field(default_factory=list)
    point_truth: list[np.ndarray] = field(default_factory=list)
    threshold: float = 0.5

    def add(self, outputs: dict, batch: dict) -> None:
        """Add a model output dict and the batch it was computed on (same device)."""
        errors = pose_errors(outputs["T_pred"].detach().double().cpu().numpy(),
                             batch["T_gt"].double().cpu().numpy())
        point_overlap = batch["point_overlap"].bool()
        for b, match in enumerate(outputs["matches"]):
            index = match["point_index"]
            with_truth = point_overlap[index]
            err = torch.linalg.norm(match["pixels"].detach()[with_truth]
                                    - batch["point_pixel"][index[with_truth]], dim=1)
            record = {key: float(value[b]) for key, value in errors.items()}
            record.update(
                pose_valid=bool(outputs["pose_valid"][b]),
                success=bool(registration_success(record["rre_euler_deg"], record["rte_m"])),
                reproj_error_px=float(outputs["reproj_error"][b]),
                num_matches=int(index.numel()),
                matches_in_overlap=float(with_truth.float().mean()) if index.numel() else 0.0,
                match_err_px=float(err.mean()) if err.numel() else float("nan"),
                match_acc_5px=(float((err < MATCH_ACCURACY_PX).float().mean())
                               if err.numel() else 0.0),
            )
            self.records.append(record)
        if "point_scores" in outputs:
            scores = outputs["point_scores"].detach()
            self.points.add(scores > self.threshold, point_overlap)
            self.point_scores.append(scores.float().cpu().numpy())
            self.point_truth.append(point_overlap.cpu().numpy())
            self.cells.add(outputs["image_scores"].detach() > self.threshold,
                           batch["image_overlap"].bool())

    def summary(self) -> dict[str, float]:
        """Means/medians over frames and set-level overlap scores."""
        if not self.records:
            raise ValueError("no frames were evaluated")
        column = {key: np.array([r[key] for r in self.records], dtype=np.float64)
                  for key in self.records[0]}
        out = {
            "num_frames": len(self.records),
            "rre_euler_deg_mean": float(column["rre_euler_deg"].mean()),
            "rre_euler_deg_median": float(np.median(column["rre_euler_deg"])),
            "rre_geodesic_deg_mean": float(column["rre_geodesic_deg"].mean()),
            "rte_m_mean": float(column["rte_m"].mean()),
            "rte_m_median": float(np.median(column["rte_m"])),
            "success_rate": float(column["success"].mean()),
            "pose_valid_rate": float(column["pose_valid"].mean()),
            "match_err_px_mean": float(np.nanmean(column["match_err_px"]))
            if np.isfinite(column["match_err_px"]).any() else float("nan"),
            "match_acc_5px": float(column["match_acc_5px"].mean()),
        }
        out.update(self.points.summary("point_overlap"))
        out.update(self.cells.summary("image_overlap"))
        if self.point_scores:
            out["point_overlap_auc"] = roc_auc(np.concatenate(self.point_scores),
                                               np.concatenate(self.point_truth))
        out["score"] = out["success_rate"] + out["match_acc_5px"]
        return out


@torch.no_grad()
def evaluate_pretext(model: torch.nn.Module, dataset: Dataset, device: torch.device,
                     batch_size: int) -> dict[str, float]:
    """Run `model` (eval mode) over `dataset` and summarise (see PretextAccumulator)."""
    was_training = model.training
    model.eval()
    accumulator = PretextAccumulator()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        collate_fn=collate_pairs)
    for batch in loader:
        batch = batch_to(batch, device)
        accumulator.add(model(batch), batch)
    model.train(was_training)
    return accumulator.summary()
