"""Pretext metrics of a CalibrationNet on pair batches (METHOD.md §8, §9).

Per frame: RRE (Euler-sum 'xzy' and geodesic, degrees), RTE (m), success (RTE < 2 m and
RRE < 5°) of the pose in the outputs (RANSAC-PnP on the matches: `ransac_poses`), matching
error of the matched points that have a ground-truth projection (network-image pixels) and
the share under 5 px. Over the set: overlap precision, recall and IoU of S^P (points) and
S^I (stride-4 cells) at θ = 0.5, the area under the ROC curve of S^P (ranking quality,
independent of θ), and the dense matching metrics (`DenseMatchStats`): every point of the
ground-truth overlap matched, not only the K the network chose.

Model selection in training (`evaluate_pretext`'s `score`) is what a calibrator needs: the
RANSAC registration success plus the dense matching accuracy (mean of the 1-px and 5-px
shares), never the RANSAC-free EPnP.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from nclr_core.data.collate import batch_to, collate_pairs
from nclr_core.geometry.metrics import pose_errors, registration_success
from nclr_core.geometry.pnp_ransac import solve_pnp_ransac
from nclr_core.geometry.se3 import make_transform
from nclr_core.inference import SolverSettings

MATCH_ACCURACY_PX = 5.0
DENSE_THRESHOLDS_PX = (1.0, 3.0, 5.0)
DENSE_CHUNK_POINTS = 4096  # points matched at once (bounds the (P, h*w) similarity)


def ransac_poses(outputs: Mapping[str, Any], batch: Mapping[str, Any],
                 settings: SolverSettings) -> tuple[dict, list[int]]:
    """The outputs with each frame's pose solved by RANSAC-PnP on its matches.

    Args:
        outputs: model outputs on `batch` (`matches`).
        batch: the collated pair batch (`points` (N_total, 4), `K` (B, 3, 3) network
            resolution).
        settings: RANSAC threshold (network pixels here), iterations, confidence, seed and
            `min_inliers`; the vehicle bounds (`max_translation_m`, prior bounds) do not apply.
    Returns:
        A copy of `outputs` with `T_pred` (B, 4, 4) float64 (identity when not valid),
        `pose_valid` (B,) and `reproj_error` (B,) px; and the inlier count of each frame.
    """
    poses, valid, error, inliers = [], [], [], []
    for b, match in enumerate(outputs["matches"]):
        result = solve_pnp_ransac(
            batch["points"][match["point_index"], :3], match["pixels"].detach(), batch["K"][b],
            reproj_threshold_px=settings.reprojection_threshold_px,
            iterations=settings.ransac_iterations, confidence=settings.ransac_confidence,
            seed=settings.seed)
        count = int(result.inliers.sum())
        ok = bool(result.valid) and count >= settings.min_inliers
        poses.append(make_transform(result.R, result.t) if ok else np.eye(4))
        valid.append(ok)
        error.append(float(result.reproj_error) if ok else math.nan)
        inliers.append(count)
    robust = dict(outputs)
    robust["T_pred"] = torch.from_numpy(np.stack(poses))
    robust["pose_valid"] = torch.tensor(valid)
    robust["reproj_error"] = torch.tensor(error, dtype=torch.float64)
    return robust, inliers


@torch.no_grad()
def dense_match_errors(model: torch.nn.Module, outputs: Mapping[str, Any],
                       batch: Mapping[str, Any]) -> list[np.ndarray]:
    """Signed matching error of every ground-truth overlap point, per frame.

    Each point of the ground-truth overlap is matched by `model.match_points` exactly as the
    network's own matches are (the LTA similarity, the model's matcher over the cells of the
    predicted image overlap, and the fine stage when the model has one).

    Args:
        model: the `CalibrationNet` that produced `outputs`.
        outputs: `point_feats` (N_total, C), `image_feats` (B, C, h, w), and when present
            `image_scores` (B, h, w), `fine_image_feats` (B, C_f, h2, w2).
        batch: `offset` (B,), `point_overlap` (N_total,), `point_pixel` (N_total, 2) network px.
    Returns:
        B arrays (P_b, 2) float64: matched minus true (u, v), network pixels.
    """
    ends = batch["offset"].tolist()
    overlap = batch["point_overlap"].bool()
    errors = []
    for b, (start, end) in enumerate(zip([0, *ends[:-1]], ends, strict=True)):
        index = torch.nonzero(overlap[start:end]).squeeze(1) + start
        chunks = []
        for part in index.split(DENSE_CHUNK_POINTS):
            pixels, _ = model.match_points(
                outputs["point_feats"][part].detach(), outputs["image_feats"][b].detach(),
                outputs["image_scores"][b].detach() if "image_scores" in outputs else None,
                (outputs["fine_image_feats"][b].detach() if "fine_image_feats" in outputs
                 else None))
            chunks.append((pixels.double() - batch["point_pixel"][part].double()).cpu())
        errors.append(torch.cat(chunks).numpy() if chunks else np.zeros((0, 2)))
    return errors


@dataclass
class DenseMatchStats:
    """Signed dense matching errors (P, 2) network px, pooled over frames."""

    errors: list[np.ndarray] = field(default_factory=list)

    def add(self, errors: np.ndarray) -> None:
        self.errors.append(np.asarray(errors, dtype=np.float64).reshape(-1, 2))

    def summary(self) -> dict[str, Any]:
        """`dense_match_points`, `dense_match_acc_{1,3,5}px` (share of points whose match is
        within 1 / 3 / 5 px of the truth), `dense_match_err_px_median`, and
        `dense_match_bias_px` [u, v]: the mean signed error of the matches within 5 px
        *(decision: the outliers, hundreds of pixels off, would otherwise swamp a sub-pixel
        bias; a constant shift under 5 px shows exactly)*. NaN without points."""
        e = np.concatenate([np.zeros((0, 2)), *self.errors])
        distance = np.linalg.norm(e, axis=1)
        out: dict[str, Any] = {"dense_match_points": int(len(e))}
        for t in DENSE_THRESHOLDS_PX:
            out[f"dense_match_acc_{t:.0f}px"] = (float(np.mean(distance < t)) if len(e)
                                                 else math.nan)
        out["dense_match_err_px_median"] = float(np.median(distance)) if len(e) else math.nan
        near = e[distance < MATCH_ACCURACY_PX]
        out["dense_match_bias_px"] = (near.mean(0).tolist() if len(near)
                                      else [math.nan, math.nan])
        return out


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
    dense: DenseMatchStats = field(default_factory=DenseMatchStats)
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

    def add_dense(self, errors: list[np.ndarray]) -> None:
        """Add the per-frame signed dense errors of `dense_match_errors`."""
        for frame in errors:
            self.dense.add(frame)

    def summary(self) -> dict[str, Any]:
        """Means/medians over frames, set-level overlap scores, and the dense matching
        metrics when `add_dense` was called."""
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
        if self.dense.errors:
            out.update(self.dense.summary())
        return out


def selection_score(summary: Mapping[str, Any]) -> float:
    """Training's model-selection score: RANSAC registration success + the dense matching
    accuracy (mean of the 1-px and 5-px shares); each in [0, 1]."""
    return float(summary["success_rate"]
                 + 0.5 * (summary["dense_match_acc_1px"] + summary["dense_match_acc_5px"]))


@torch.no_grad()
def evaluate_pretext(model: torch.nn.Module, dataset: Dataset, device: torch.device,
                     batch_size: int, settings: SolverSettings | None = None
                     ) -> dict[str, Any]:
    """Run `model` (eval mode) over `dataset`: poses by RANSAC-PnP (`ransac_poses`, network
    pixels, `settings` or the defaults), dense matching metrics, and `score`
    (`selection_score`). See PretextAccumulator for the rest."""
    settings = settings or SolverSettings()
    was_training = model.training
    model.eval()
    accumulator = PretextAccumulator()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        collate_fn=collate_pairs)
    for batch in loader:
        batch = batch_to(batch, device)
        outputs = model(batch)
        accumulator.add(ransac_poses(outputs, batch, settings)[0], batch)
        accumulator.add_dense(dense_match_errors(model, outputs, batch))
    model.train(was_training)
    summary = accumulator.summary()
    summary["score"] = selection_score(summary)
    return summary
