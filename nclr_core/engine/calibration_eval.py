"""Calibration evaluation in the two regimes of METHOD.md §1, with the metrics of §8.

Both regimes turn a frame into the `(outputs, batch)` pair that
`nclr_core.engine.evaluation.PretextAccumulator` reads, so the matching error (network
pixels, matched points with a ground-truth projection), 5-px accuracy, overlap IoU and the
pose errors are computed by one piece of code, the same as training's validation:

- **registration** (`registration_outputs`): pair batches of `PairDataset` (the cloud moved by
  a random z-rotation and x-y translation, pretext ground truth) through `CalibrationNet`;
  the pose is the inference-time robust solve (RANSAC-PnP on each frame's matches, the
  network-resolution K) instead of the differentiable EPnP of training. *(decision)* The
  Calibrator is not used here: it fits raw frames, crops points in the frame it is given
  (the moved cloud) and bounds |t| like a vehicle mount, none of which suits this protocol.
  When the model's differentiable EPnP ran (`with_pose`), its pose errors are kept per frame
  as `epnp_*` diagnostics.
- **online calibration** (`online_frame`): the raw reader frame (cloud not moved) through
  the online pipeline from a prior (`nclr_core.engine.online_eval`) — exactly what the
  vehicle runs. A frame's output is its per-frame pose when the pipeline accepted it,
  otherwise the prior (the vehicle keeps what it had). The network-pixel
  metrics use the ground truth of the points the Calibrator fed to the network, projected
  with the network-resolution K; the predicted image overlap is the Calibrator's
  input-size mask read at each feature cell's centre (equal to the cell's thresholded
  score up to the mask's interpolation between neighbouring cells).

`correspondence_similarities` gives the LTA check of METHOD.md §8 (paper Table 7) on the
registration batches. `summarize` adds regime-level figures to
`PretextAccumulator.summary`; `write_frames_csv` and `plot_recall_curves` (paper Fig. 9)
write the per-frame table and the curves.
"""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from nclr_core.atomic_write import atomic_path
from nclr_core.data.pairs import overlap_ground_truth
from nclr_core.engine.evaluation import PretextAccumulator, dense_match_errors, ransac_poses
from nclr_core.geometry.metrics import pose_errors, recall_curve
from nclr_core.inference import (
    CalibrationResult,
    Calibrator,
    NetworkFeatures,
    SolverSettings,
)
from nclr_core.models.feature_grid import cell_centers, pixel_to_cell

REGIMES = ("registration", "online")

# Recall-curve thresholds per regime: (RTE metres, RRE degrees) from 0 to these, in steps.
# Registration errors live on the scale of the pretext motion (metres, degrees); online
# calibration starts within ±10° / ±25 cm, so its curves need a finer range.
# (A ±10° prior has an Euler-sum RRE of up to ~17°.)
RECALL_RANGES: dict[str, tuple[float, float]] = {"registration": (10.0, 20.0),
                                                 "online": (0.5, 20.0)}
RECALL_STEPS = 101


def registration_outputs(outputs: Mapping[str, Any], batch: Mapping[str, Any],
                         settings: SolverSettings) -> tuple[dict, list[dict]]:
    """Replace the pose of a `CalibrationNet` output by RANSAC-PnP (`ransac_poses`).

    Args:
        outputs: model outputs on `batch` (`matches`; `T_pred` (B, 4, 4) when the model's
            EPnP ran, `with_pose`).
        batch: the collated pair batch (`points` (N_total, 4), `K` (B, 3, 3) network
            resolution, `T_gt` (B, 4, 4)).
        settings: RANSAC threshold (network pixels here), iterations, confidence, seed and
            `min_inliers`; the vehicle bounds (`max_translation_m`, prior bounds) do not apply.
    Returns:
        A copy of `outputs` with `T_pred` (B, 4, 4) float64, `pose_valid` (B,) and
        `reproj_error` (B,) from the robust solve, and per frame the extra record fields
        `num_inliers` and, when the outputs had an EPnP pose, its errors
        `epnp_rre_euler_deg`, `epnp_rte_m`.
    """
    robust, inliers = ransac_poses(outputs, batch, settings)
    extras = [{"num_inliers": count} for count in inliers]
    if "T_pred" in outputs:
        epnp = pose_errors(outputs["T_pred"].detach().double().cpu().numpy(),
                           batch["T_gt"].double().cpu().numpy())
        for b, extra in enumerate(extras):
            extra["epnp_rre_euler_deg"] = float(np.atleast_1d(epnp["rre_euler_deg"])[b])
            extra["epnp_rte_m"] = float(np.atleast_1d(epnp["rte_m"])[b])
    return robust, extras


def correspondence_similarities(outputs: Mapping[str, Any], batch: Mapping[str, Any],
                                W: torch.Tensor, stride: int, convention: str = "stem"
                                ) -> tuple[np.ndarray, np.ndarray]:
    """Similarity of corresponding point and pixel features, with and without W_f.

    Every point in the ground-truth overlap is paired with the stride-s feature cell that
    contains its ground-truth projection; both features are L2-normalised and the
    similarities F̃ᴾ W_f F̃ᴵᵀ and F̃ᴾ F̃ᴵᵀ are returned unscaled by τ (paper Table 7).

    Args:
        outputs: `point_feats` (N_total, C), `image_feats` (B, C, h, w) of `CalibrationNet`.
        batch: `offset` (B,), `point_overlap` (N_total,), `point_pixel` (N_total, 2).
        W: (C, C) W_f of the model's alignment (the identity for cosine similarity).
        stride: pixels per feature cell of `image_feats`; convention: of its cell centres.
    Returns:
        (P,) with W_f and (P,) without, float64, P = points in the overlap.
    """
    image_feats = outputs["image_feats"].detach()
    h, w = image_feats.shape[-2:]
    ends = batch["offset"].tolist()
    with_w, without_w = [], []
    for b, (start, end) in enumerate(zip([0, *ends[:-1]], ends, strict=True)):
        inside = batch["point_overlap"][start:end].bool()
        if not bool(inside.any()):
            continue
        cells = torch.round(pixel_to_cell(batch["point_pixel"][start:end][inside].double(),
                                          stride, convention)).long()
        col, row = cells[:, 0].clamp(0, w - 1), cells[:, 1].clamp(0, h - 1)
        f_i = torch.nn.functional.normalize(image_feats[b, :, row, col].T.double(), dim=1)
        f_p = torch.nn.functional.normalize(
            outputs["point_feats"].detach()[start:end][inside].double(), dim=1)
        without_w.append((f_p * f_i).sum(1))
        with_w.append(((f_p @ W.detach().to(f_p)) * f_i).sum(1))
    if not with_w:
        return np.zeros(0), np.zeros(0)
    return torch.cat(with_w).cpu().numpy(), torch.cat(without_w).cpu().numpy()


def _apply(A: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """(K, 2) pixels mapped by the affine pixel map A (3, 3)."""
    return uv @ A[:2, :2].T + A[:2, 2]


def online_frame(calibrator: Calibrator, features: NetworkFeatures, result: CalibrationResult,
                 sample: Mapping[str, Any], T_out: np.ndarray, accepted: bool,
                 overlap_radius_cells: int) -> tuple[dict, dict]:
    """One raw frame's per-frame online result, expressed for `PretextAccumulator`.

    Args:
        calibrator: the Calibrator that produced `result` (its network input and model).
        features: its network forward on `sample` (`Calibrator.features`).
        result: its global solve on `sample` from those features.
        sample: a reader sample (`image` uint8 (H, W, 3), `points` (N, 4), `K` (3, 3) of a
            rectified (distortion-free) image, `T_cam_lidar` (4, 4) ground truth).
        T_out: (4, 4) what the frame yields: its pose when accepted, else the prior.
        accepted: whether the per-frame pose was accepted.
        overlap_radius_cells: r_o of the image-overlap ground truth (the training value).
    Returns:
        `outputs`: `T_pred` (1, 4, 4) = T_out, `pose_valid` (1,), `reproj_error` (1,),
        `matches` (network pixels, indices into the used points), `point_scores` (N_used,),
        `image_scores` (1, h, w) in {0, 1}, `dense_errors` (a list of one (P, 2) array for
        `PretextAccumulator.add_dense`: every ground-truth overlap point of the used points
        matched by the model from the same forward, `evaluation.dense_match_errors`);
        `batch`: `T_gt` (1, 4, 4), `point_overlap` (N_used,), `point_pixel` (N_used, 2),
        `image_overlap` (1, h, w), all at the network resolution.
    """
    image, points, K = sample["image"], sample["points"], np.asarray(sample["K"], np.float64)
    T_gt = np.asarray(sample["T_cam_lidar"], dtype=np.float64)
    height, width = image.shape[:2]
    used = np.flatnonzero(result.point_used)
    net = calibrator.network_input
    A = features.A
    stride = calibrator.model.stride
    truth = overlap_ground_truth(points[used, :3].astype(np.float64), T_gt, A @ K,
                                 (net.image_height, net.image_width), stride,
                                 overlap_radius_cells)
    h, w = truth.image_overlap.shape
    centres = cell_centers(h, w, stride, convention=features.cell_convention,
                           dtype=torch.float64).numpy()
    at_input = np.rint(_apply(np.linalg.inv(A), centres)).astype(np.int64)
    cols = np.clip(at_input[:, 0], 0, width - 1)
    rows = np.clip(at_input[:, 1], 0, height - 1)
    image_scores = (result.image_overlap_mask[rows, cols] > 0).reshape(1, h, w)
    matches = result.matches
    forward = {"point_feats": features.point_feats, "image_feats": features.image_feats[None],
               "image_scores": torch.as_tensor(features.image_scores)[None]}
    if features.fine_image_feats is not None:
        forward["fine_image_feats"] = features.fine_image_feats[None]
    dense_errors = dense_match_errors(
        calibrator.model, forward,
        {"offset": torch.tensor([len(used)]),
         "point_overlap": torch.from_numpy(truth.point_overlap).to(features.point_feats.device),
         "point_pixel": torch.from_numpy(truth.point_pixel).to(features.point_feats.device)})
    outputs = {
        "T_pred": torch.from_numpy(np.asarray(T_out, np.float64)[None]),
        "pose_valid": torch.tensor([accepted]),
        "reproj_error": torch.tensor([result.quality.reprojection_error_px]),
        "matches": [{"point_index": torch.from_numpy(np.searchsorted(used, matches.point_index)),
                     "pixels": torch.from_numpy(_apply(A, matches.pixels))}],
        "point_scores": torch.from_numpy(result.point_overlap[used]),
        "image_scores": torch.from_numpy(image_scores.astype(np.float32)),
        "dense_errors": dense_errors,
    }
    batch = {"T_gt": torch.from_numpy(T_gt[None]),
             "point_overlap": torch.from_numpy(truth.point_overlap),
             "point_pixel": torch.from_numpy(truth.point_pixel).double(),
             "image_overlap": torch.from_numpy(truth.image_overlap[None])}
    return outputs, batch


def recall_curves(records: Sequence[Mapping[str, Any]], regime: str) -> dict[str, list[float]]:
    """Registration recall against RTE and RRE thresholds (paper Fig. 9).

    Returns `rte_thresholds_m`, `recall_rte`, `rre_thresholds_deg`, `recall_rre` (lists of
    RECALL_STEPS numbers); the RRE is the Euler-sum RRE of the tables.
    """
    if regime not in RECALL_RANGES:
        raise ValueError(f"regime must be one of {tuple(RECALL_RANGES)}, got {regime!r}")
    rte_max, rre_max = RECALL_RANGES[regime]
    rte_t = np.linspace(0.0, rte_max, RECALL_STEPS)
    rre_t = np.linspace(0.0, rre_max, RECALL_STEPS)
    rte = [r["rte_m"] for r in records]
    rre = [r["rre_euler_deg"] for r in records]
    return {"rte_thresholds_m": rte_t.tolist(), "recall_rte": recall_curve(rte, rte_t).tolist(),
            "rre_thresholds_deg": rre_t.tolist(), "recall_rre": recall_curve(rre, rre_t).tolist()}


def similarity_summary(with_w: Sequence[np.ndarray], without_w: Sequence[np.ndarray]
                       ) -> dict[str, float]:
    """Mean ± std over all pairs of `correspondence_similarities` outputs (paper Table 7)."""
    a = np.concatenate([np.zeros(0), *with_w])
    b = np.concatenate([np.zeros(0), *without_w])
    if a.size == 0:
        return {"num_pairs": 0}
    return {"num_pairs": int(a.size),
            "with_W_mean": float(a.mean()), "with_W_std": float(a.std()),
            "without_W_mean": float(b.mean()), "without_W_std": float(b.std())}


def summarize(accumulator: PretextAccumulator, regime: str) -> dict[str, Any]:
    """`PretextAccumulator.summary()` plus the recall curves and, for the online regime,
    the acceptance rate, the mean errors of the prior and of the raw estimates, and the
    prior's recall curves (the reference an estimate should beat)."""
    out: dict[str, Any] = accumulator.summary()
    records = accumulator.records
    if regime == "online":
        def mean(key: str) -> float:
            values = np.array([r[key] for r in records], dtype=np.float64)
            return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
        out["accepted_rate"] = float(np.mean([r["accepted"] for r in records]))
        if "worse_than_prior" in records[0]:
            out["frame_worse_than_prior_rate"] = float(
                np.mean([r["worse_than_prior"] for r in records]))
        for key in ("prior_rre_euler_deg", "prior_rte_m", "estimate_rre_euler_deg",
                    "estimate_rte_m"):
            out[f"{key}_mean"] = mean(key)
        out["prior_recall_curves"] = recall_curves(
            [{"rte_m": r["prior_rte_m"], "rre_euler_deg": r["prior_rre_euler_deg"]}
             for r in records], regime)
    out["recall_curves"] = recall_curves(records, regime)
    return out


def write_frames_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
    """Per-frame table (one row per method, regime and frame), written atomically.

    Columns are the union of the rows' keys in first-seen order; missing cells are empty.
    """
    if not rows:
        raise ValueError("no per-frame rows to write")
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


def plot_recall_curves(path: str | os.PathLike,
                       curves: Mapping[str, Mapping[str, Mapping[str, list[float]]]]) -> None:
    """Recall vs RTE and vs RRE thresholds, one row of two panels per regime, one line per
    method (paper Fig. 9). `curves[regime][method]` is a `recall_curves` dict."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    if not curves:
        raise ValueError("no recall curves to plot")
    fig, axes = plt.subplots(len(curves), 2, figsize=(10, 3.6 * len(curves)), squeeze=False)
    for row, (regime, methods) in enumerate(curves.items()):
        for method, curve in methods.items():
            axes[row, 0].plot(curve["rte_thresholds_m"], curve["recall_rte"], label=method)
            axes[row, 1].plot(curve["rre_thresholds_deg"], curve["recall_rre"], label=method)
        for col, unit in enumerate(("RTE threshold (m)", "RRE threshold (deg, Euler sum)")):
            ax = axes[row, col]
            ax.set_xlabel(unit)
            ax.set_ylabel("registration recall")
            ax.set_ylim(0.0, 1.02)
            ax.set_title(regime)
            ax.grid(True, alpha=0.3)
            ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
