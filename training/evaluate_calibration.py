"""Evaluate an NCLR checkpoint as a LiDAR-camera calibrator (METHOD.md §1, §8).

    python training/evaluate_calibration.py \
        --checkpoint runs/synthetic_cpu/<stamp>/checkpoints/best.pt \
        --data data/synthetic --split 03 --out runs/eval/nclr [--dataset synthetic] \
        [--regime both] [--baseline cosine_hard] [--max-frames 24] [--seed 0] [--untrained]

Regimes (`nclr_core.engine.calibration_eval`): `registration` — each cloud randomly rotated
about z and moved in x-y as in pre-training, the pose solved by RANSAC-PnP on the network's
matches; `online` — the cloud as recorded, a prior T_init = ground truth perturbed by up to
--prior-angle-deg / --prior-translation-m, calibrated by `nclr_core.inference.Calibrator`
(the ROS node's path, with its gates; a rejected estimate leaves the prior in place).
The image size, point range and point cap come from the checkpoint's config; --data,
--dataset and --split replace its data source.

`--baseline cosine_hard` evaluates the CorrI2P recipe on the same frames: the same weights
with the similarity W_f = I (cosine) and hard arg-max matching, then RANSAC-PnP.
`--untrained` evaluates a freshly initialised model of the checkpoint's architecture
(seeded by --seed) instead of its weights: the "untrained" reference.

Both regimes also match every ground-truth overlap point fed to the network (not only the
K the network chose) and report `dense_match_acc_{1,3,5}px`, `dense_match_err_px_median`
and `dense_match_bias_px` [u, v] in network pixels (`nclr_core.engine.evaluation`).

Writes into --out: `metrics.json` (per regime and method: the §8 metrics, recall curves,
and for registration the LTA check `lta_check`: similarity of corresponding point and pixel
features with and without W_f; plus the command line and the checkpoint), `frames.csv`
(one row per method, regime and frame) and `recall_curves.png` (recall vs RTE and RRE
thresholds, paper Fig. 9).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from nclr_core.config import ConfigError, to_dict
from nclr_core.data.collate import batch_to, collate_pairs
from nclr_core.data.datasets import PairDataset, build_reader, pair_transform
from nclr_core.data.pairs import PerturbedPrior
from nclr_core.data.transforms import RNG_KEY, sample_rng
from nclr_core.engine.calibration_eval import (
    REGIMES,
    correspondence_similarities,
    online_frame,
    plot_recall_curves,
    registration_outputs,
    similarity_summary,
    summarize,
    write_frames_csv,
)
from nclr_core.engine.checkpoint import CheckpointError, load_checkpoint
from nclr_core.engine.evaluation import PretextAccumulator, dense_match_errors
from nclr_core.engine.metrics_file import write_metrics_json
from nclr_core.engine.pretrain_config import PretrainConfig
from nclr_core.engine.trainer import build_model, config_from_checkpoint
from nclr_core.inference import Calibrator, NetworkInput, SolverSettings
from nclr_core.models.calibration_net import CalibrationNet

log = logging.getLogger("nclr.evaluate_calibration")

METHOD = "nclr"
BASELINE = "baseline_cosine_hard"
DATASETS = ("synthetic", "semantickitti", "kitti_object", "nuscenes")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="pre-training checkpoint (.pt)")
    parser.add_argument("--data", required=True, help="dataset root")
    parser.add_argument("--dataset", choices=DATASETS,
                        help="reader (default: the checkpoint's data.dataset)")
    parser.add_argument("--split", required=True, nargs="+",
                        help="sequences / split names / nuScenes scene names or tokens")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--regime", choices=(*REGIMES, "both"), default="both")
    parser.add_argument("--baseline", choices=("cosine_hard",),
                        help="also evaluate the cosine + hard-matching baseline")
    parser.add_argument("--max-frames", type=int, help="evaluate the first N frames only")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the pretext motions, the priors and --untrained")
    parser.add_argument("--untrained", action="store_true",
                        help="random weights of the checkpoint's architecture")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="frames per forward pass in the registration regime")
    parser.add_argument("--prior-angle-deg", type=float, default=10.0,
                        help="online regime: largest rotation of the prior from the truth")
    parser.add_argument("--prior-translation-m", type=float, default=0.25,
                        help="online regime: largest per-axis translation of the prior")
    parser.add_argument("--ransac-threshold-px", type=float,
                        default=SolverSettings.reprojection_threshold_px,
                        help="RANSAC inlier threshold (network pixels for registration, "
                        "input pixels online)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = parser.parse_args(argv)
    if args.max_frames is not None and args.max_frames < 1:
        parser.error("--max-frames must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    return args


def _config(checkpoint: dict, args: argparse.Namespace) -> PretrainConfig:
    """The checkpoint's config with the data source replaced by the command line's."""
    if not isinstance(checkpoint.get("config"), dict) or "model" not in checkpoint:
        raise CheckpointError(f"{args.checkpoint}: no 'config' and 'model' (not a "
                              "pre-training checkpoint)")
    cfg = config_from_checkpoint(checkpoint, [])
    data = dataclasses.replace(cfg.data, root=args.data, val_split=list(args.split),
                               dataset=args.dataset or cfg.data.dataset)
    return dataclasses.replace(cfg, data=data)


def _models(cfg: PretrainConfig, state: dict, args: argparse.Namespace
            ) -> dict[str, CalibrationNet]:
    """The evaluated model and, if asked, the cosine + hard baseline with the same weights."""
    torch.manual_seed(args.seed)
    models = {METHOD: build_model(cfg)}
    if not args.untrained:
        models[METHOD].load_state_dict(state)
    if args.baseline == "cosine_hard":
        baseline_cfg = dataclasses.replace(
            cfg, model={**cfg.model, "similarity": "cosine", "matching": "hard"})
        baseline = build_model(baseline_cfg)
        # W_f = I has no parameters: drop the LTA's, load everything else strictly
        weights = models[METHOD].state_dict()
        baseline.load_state_dict({k: v for k, v in weights.items()
                                  if not k.startswith("alignment.")})
        models[BASELINE] = baseline
    return models


def _frame_ids(batch: dict, b: int) -> dict[str, str]:
    return {key: batch[key][b] for key in ("sequence", "frame_id") if key in batch}


def evaluate_registration(models: dict[str, CalibrationNet], cfg: PretrainConfig,
                          args: argparse.Namespace, settings: SolverSettings,
                          device: torch.device) -> tuple[dict, list[dict]]:
    """Per method: the registration summary; plus the per-frame rows."""
    dataset = PairDataset(build_reader(cfg.data, cfg.data.val_split),
                          pair_transform(cfg.data, train=False), args.seed, args.max_frames)
    accumulators = {name: PretextAccumulator(threshold=model.point_threshold)
                    for name, model in models.items()}
    similarities: dict[str, tuple[list, list]] = {name: ([], []) for name in models}
    rows: list[dict] = []
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=False,
                                         collate_fn=collate_pairs)
    for batch in tqdm(loader, desc="registration"):
        batch = batch_to(batch, device)
        for name, model in models.items():
            accumulator = accumulators[name]
            outputs = model(batch)
            with_w, without_w = correspondence_similarities(outputs, batch,
                                                            model.alignment.W, model.stride)
            similarities[name][0].append(with_w)
            similarities[name][1].append(without_w)
            robust, extras = registration_outputs(outputs, batch, settings)
            first = len(accumulator.records)
            accumulator.add(robust, batch)
            accumulator.add_dense(dense_match_errors(model, outputs, batch))
            for b, extra in enumerate(extras):
                accumulator.records[first + b].update(extra)
                rows.append({"method": name, "regime": "registration",
                             **_frame_ids(batch, b), **accumulator.records[first + b]})
    summaries = {}
    for name, accumulator in accumulators.items():
        summaries[name] = summarize(accumulator, "registration")
        summaries[name]["lta_check"] = similarity_summary(*similarities[name])
    return summaries, rows


def evaluate_online(models: dict[str, CalibrationNet], cfg: PretrainConfig,
                    args: argparse.Namespace, settings: SolverSettings,
                    device: torch.device) -> tuple[dict, list[dict]]:
    """Per method: the online-calibration summary; plus the per-frame rows."""
    reader = build_reader(cfg.data, cfg.data.val_split)
    count = len(reader) if args.max_frames is None else min(len(reader), args.max_frames)
    if count == 0:
        raise ValueError("the dataset split holds no frames")
    network_input = NetworkInput.from_config(to_dict(cfg.data))
    calibrators = {name: Calibrator(model, network_input, settings, device)
                   for name, model in models.items()}
    prior = PerturbedPrior(args.prior_angle_deg, args.prior_translation_m)
    accumulators = {name: PretextAccumulator(threshold=model.point_threshold)
                    for name, model in models.items()}
    rows: list[dict] = []
    for index in tqdm(range(count), desc="online"):
        sample = reader[index]
        drawn = prior({**sample, RNG_KEY: sample_rng(args.seed, 0, index)})
        for name, calibrator in calibrators.items():
            outputs, batch, extra = online_frame(calibrator, sample, drawn["T_init"],
                                                 cfg.data.overlap_radius_cells)
            reason = extra.pop("reason")  # text: the CSV's, not the accumulator's
            accumulator = accumulators[name]
            accumulator.add(outputs, batch)
            accumulator.add_dense(outputs["dense_errors"])
            accumulator.records[-1].update(extra)
            rows.append({"method": name, "regime": "online",
                         **{k: str(sample[k]) for k in ("sequence", "frame_id") if k in sample},
                         **accumulator.records[-1], "reason": reason})
    return {name: summarize(acc, "online") for name, acc in accumulators.items()}, rows


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Evaluate as `args` say; write metrics.json, frames.csv, recall_curves.png."""
    checkpoint = load_checkpoint(args.checkpoint)
    cfg = _config(checkpoint, args)
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        device = torch.device("cuda")
    else:
        device = torch.device("cpu")
    models = {name: model.to(device).eval()
              for name, model in _models(cfg, checkpoint["model"], args).items()}
    settings = SolverSettings(reprojection_threshold_px=args.ransac_threshold_px,
                              seed=args.seed)
    regimes = REGIMES if args.regime == "both" else (args.regime,)
    evaluate = {"registration": evaluate_registration, "online": evaluate_online}
    summaries: dict[str, dict] = {}
    rows: list[dict] = []
    with torch.inference_mode():
        for regime in regimes:
            log.info("%s regime on %s %s", regime, cfg.data.root, cfg.data.val_split)
            summaries[regime], regime_rows = evaluate[regime](models, cfg, args, settings, device)
            rows += regime_rows

    out = Path(args.out)
    metrics: dict[str, Any] = {
        "command": command,
        "checkpoint": str(args.checkpoint),
        "checkpoint_step": checkpoint.get("step"),
        "weights": "untrained" if args.untrained else "checkpoint",
        "model": {"similarity": cfg.model.get("similarity", "lta"),
                  "matching": cfg.model.get("matching", "soft"),
                  "fine_matching": bool(cfg.model.get("fine_matching", False))},
        "dataset": cfg.data.dataset, "data": cfg.data.root, "split": cfg.data.val_split,
        "seed": args.seed, "max_frames": args.max_frames,
        "prior": {"max_angle_deg": args.prior_angle_deg,
                  "max_translation_m": args.prior_translation_m},
        "solver": dataclasses.asdict(settings),
        "files": {"frames_csv": "frames.csv", "recall_png": "recall_curves.png"},
    }
    for regime, per_method in summaries.items():
        metrics[regime] = per_method[METHOD]
        if BASELINE in per_method:
            metrics.setdefault(BASELINE, {})[regime] = per_method[BASELINE]
    write_frames_csv(out / "frames.csv", rows)
    curves = {regime: {name: summary["recall_curves"] for name, summary in per_method.items()}
              for regime, per_method in summaries.items()}
    if "online" in summaries:
        curves["online"]["prior T_init"] = summaries["online"][METHOD]["prior_recall_curves"]
    plot_recall_curves(out / "recall_curves.png", curves)
    write_metrics_json(out / "metrics.json", metrics)
    log.info("written to %s", out)
    return metrics


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    command = shlex.join(["python", "training/evaluate_calibration.py", *argv])
    try:
        metrics = run(args, command)
    except (CheckpointError, ConfigError, FileNotFoundError, ValueError) as err:
        print(f"evaluate_calibration.py: error: {err}", file=sys.stderr)
        return 2
    for regime in REGIMES:
        if regime in metrics:
            m = metrics[regime]
            print(f"{regime}: {m['num_frames']} frames, RRE {m['rre_euler_deg_mean']:.2f} deg, "
                  f"RTE {m['rte_m_mean']:.3f} m, success {m['success_rate']:.3f}, "
                  f"match acc@5px {m['match_acc_5px']:.3f}, dense acc@1/5px "
                  f"{m['dense_match_acc_1px']:.3f}/{m['dense_match_acc_5px']:.3f}, median "
                  f"{m['dense_match_err_px_median']:.2f} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
