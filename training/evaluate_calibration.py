"""Evaluate an NCLR checkpoint as a LiDAR-camera calibrator (METHOD.md §1, §8).

    python training/evaluate_calibration.py \
        [--checkpoint runs/synthetic_cpu/<stamp>/checkpoints/best.pt | none] \
        --data data/synthetic --split 03 --out runs/eval/nclr [--dataset synthetic] \
        [--regime both] [--baseline cosine_hard] [--max-frames 24] [--seed 0] [--untrained]
        [--prior-deg 10 --prior-m 0.25] [--priors-per-frame 1] [--stages global]
        [--group-by-calibration [--window-frames N]] [--priors-per-window K]
        [--refine-window N]

The default checkpoint is the shipped models/nclr_synthetic.pt; `none` runs the online
regime without a network (`--stages refine`).

Regimes (`nclr_core.engine.calibration_eval`): `registration` — each cloud randomly rotated
about z and moved in x-y as in pre-training, the pose solved by RANSAC-PnP on the network's
matches; `online` — the cloud as recorded, calibrated by the online pipeline the node runs
(`nclr_core.online.pipeline.OnlineCalibration`, --stages) from priors exactly --prior-deg
degrees and --prior-m metres from the truth, over windows of frames (each frame alone, or
with --group-by-calibration the frames sharing a calibration together;
`nclr_core.engine.online_eval`). A refused estimate leaves the prior in place.
The image size, point range and point cap come from the checkpoint's config; --data,
--dataset and --split replace its data source. With `--dataset rosbag`, --data is a bag or a
folder of bags and --split names the bags evaluated (whole, by folder name); the truth is
each bag's /tf_static chain, or --calibration FILE (a YAML/JSON calibration the node or
`nclr-bag calibrate` wrote) when the bag has none.

`--baseline cosine_hard` evaluates the CorrI2P recipe on the same frames: the same weights
with the similarity W_f = I (cosine) and hard arg-max matching, then RANSAC-PnP.
`--untrained` evaluates a freshly initialised model of the checkpoint's architecture
(seeded by --seed) instead of its weights: the "untrained" reference.

Both regimes also match every ground-truth overlap point fed to the network (not only the
K the network chose) and report `dense_match_acc_{1,3,5}px`, `dense_match_err_px_median`
and `dense_match_bias_px` [u, v] in network pixels (`nclr_core.engine.evaluation`).

Writes into --out: `metrics.json` (per regime and method: the §8 metrics, recall curves,
and for registration the LTA check `lta_check`: similarity of corresponding point and pixel
features with and without W_f; online, per call: `num_calls`, `accepted_rate`,
`estimate_rre_geodesic_deg_median|p90`, `estimate_rte_m_median|p90`,
`worse_than_prior_rate`, `better_than_prior_rotation_rate`, `coverage_3sigma`,
`aggregate` and the same per stage under `stages`; per frame: the §8 metrics and
`frame_accepted_rate`; plus the command line and the checkpoint), `frames.csv` (one row
per method, regime and frame; online, per frame of every call and per call) and
`recall_curves.png` (recall vs RTE and RRE thresholds, paper Fig. 9).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from nclr_core.checkpoint import CheckpointError, load_checkpoint
from nclr_core.config import ConfigError
from nclr_core.data.collate import batch_to, collate_pairs
from nclr_core.data.config import DataConfig
from nclr_core.data.datasets import PairDataset, build_reader, pair_transform
from nclr_core.data.rosbag.messages import BagError
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
from nclr_core.engine.evaluation import PretextAccumulator, dense_match_errors
from nclr_core.engine.metrics_file import write_metrics_json
from nclr_core.engine.online_eval import (
    NO_CHECKPOINT,
    FeatureCache,
    make_windows,
    run_calls,
    sample_frame,
    summarize_calls,
)
from nclr_core.engine.pretrain_config import PretrainConfig
from nclr_core.engine.trainer import build_model, config_from_checkpoint
from nclr_core.geometry.metrics import pose_errors
from nclr_core.inference import Calibrator, NetworkInput, SolverSettings
from nclr_core.models.calibration_net import CalibrationNet
from nclr_core.online.pipeline import STAGES, OnlineCalibration, OnlineSettings
from nclr_core.online.refine import RefineSettings

log = logging.getLogger("nclr.evaluate_calibration")

METHOD = "nclr"
SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "models" / "nclr_synthetic.pt"
BASELINE = "baseline_cosine_hard"
DATASETS = ("synthetic", "semantickitti", "kitti_object", "nuscenes", "nuscenes_keyframe",
            "rosbag")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(SHIPPED_MODEL),
                        help=f"pre-training checkpoint (.pt; default: the shipped model), or "
                        f"{NO_CHECKPOINT!r}: no network (online regime, --stages refine, "
                        "--dataset needed)")
    parser.add_argument("--data", required=True, help="dataset root")
    parser.add_argument("--dataset", choices=DATASETS,
                        help="reader (default: the checkpoint's data.dataset)")
    parser.add_argument("--split", required=True, nargs="+",
                        help="sequences / split names / nuScenes scene names or tokens / "
                        "bag folder names")
    parser.add_argument("--calibration",
                        help="--dataset rosbag: the reference calibration file (YAML/JSON) "
                        "instead of the bags' /tf_static")
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
    parser.add_argument("--prior-deg", type=float, default=10.0,
                        help="online regime: the prior's rotation from the truth, exactly "
                        "(degrees, about a random axis)")
    parser.add_argument("--prior-m", type=float, default=0.25,
                        help="online regime: the prior's translation from the truth, exactly "
                        "(metres, in a random direction)")
    parser.add_argument("--priors-per-frame", type=int, default=1,
                        help="online regime: calls per window = this x its frame count")
    parser.add_argument("--priors-per-window", type=int,
                        help="online regime: calls per window instead (long drives)")
    parser.add_argument("--group-by-calibration", action="store_true",
                        help="online regime: calibrate the frames that share a calibration "
                        "together, as one window (else each frame alone)")
    parser.add_argument("--window-frames", type=int,
                        help="online regime, with --group-by-calibration: split each group "
                        "into windows of this many consecutive frames")
    parser.add_argument("--stages", nargs="+", default=["global"], choices=STAGES,
                        help="online regime: the pipeline's stages")
    parser.add_argument("--beam-divergence-deg", type=float,
                        default=RefineSettings.beam_divergence_deg,
                        help="online regime, refine stage: the LiDAR's beam divergence "
                        "(0 for our simulator, which casts thin rays)")
    parser.add_argument("--refine-window", type=int,
                        help="online regime: frames the refine stage aligns at once (default: "
                        "the whole window)")
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
    if args.checkpoint == NO_CHECKPOINT:
        if args.regime != "online" or args.baseline or args.untrained or args.dataset is None:
            parser.error(f"--checkpoint {NO_CHECKPOINT} evaluates the online regime only "
                         "(--regime online, no --baseline or --untrained) and needs --dataset")
    if args.calibration is not None and args.dataset != "rosbag":
        parser.error("--calibration is for --dataset rosbag (other data sets carry their own)")
    if min(args.priors_per_frame, args.priors_per_window or 1, args.window_frames or 1) < 1:
        parser.error("--priors-per-frame, --priors-per-window and --window-frames must be at "
                     "least 1")
    return args


def _config(checkpoint: dict, args: argparse.Namespace) -> PretrainConfig:
    """The checkpoint's config with the data source replaced by the command line's."""
    if not isinstance(checkpoint.get("config"), dict) or "model" not in checkpoint:
        raise CheckpointError(f"{args.checkpoint}: no 'config' and 'model' (not a "
                              "pre-training checkpoint)")
    cfg = config_from_checkpoint(checkpoint, [])
    return dataclasses.replace(cfg, data=_data_source(cfg.data, args))


def _data_source(data: DataConfig, args: argparse.Namespace) -> DataConfig:
    """`data` reading the command line's frames: --data, --dataset, --split and (rosbag)
    --calibration; a calibration the training run was given never carries over."""
    dataset = args.dataset or data.dataset
    rosbag = data.rosbag
    if dataset == "rosbag":  # the named bags whole, as a validation part
        rosbag = dataclasses.replace(rosbag, train_bags=[], val_bags=list(args.split))
    return dataclasses.replace(data, root=args.data, val_split=list(args.split),
                               dataset=dataset, rosbag=rosbag, calibration=args.calibration,
                               T_cam_lidar=None)


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


def _frame_ids(batch: dict, b: int | None = None) -> dict[str, str]:
    """sequence and frame_id of frame b of a batch (or of a sample: b None)."""
    return {key: str(batch[key] if b is None else batch[key][b])
            for key in ("sequence", "frame_id") if key in batch}


def evaluate_registration(models: dict[str, CalibrationNet], cfg: PretrainConfig,
                          args: argparse.Namespace, settings: SolverSettings,
                          device: torch.device) -> tuple[dict, list[dict]]:
    """Per method: the registration summary; plus the per-frame rows."""
    dataset = PairDataset(build_reader(cfg.data, train=False),
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
            with_w, without_w = correspondence_similarities(
                outputs, batch, model.alignment.W, model.stride, model.cell_convention)
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
    """Per method: the online-calibration summary (`nclr_core.engine.online_eval`: calls
    over windows from priors at an exact distance, per stage; plus the per-frame figures of
    the network's stage); and the rows (per frame of every call, then per call)."""
    reader = build_reader(cfg.data, train=False)
    count = len(reader) if args.max_frames is None else min(len(reader), args.max_frames)
    if count == 0:
        raise ValueError("the dataset split holds no frames")
    samples = [reader[i] for i in tqdm(range(count), desc="reading")]
    windows = make_windows(samples, args.group_by_calibration, args.window_frames)
    network_input = NetworkInput.from_config(cfg.data)
    longest = max(len(w.indices) for w in windows)
    window_frames = longest if args.refine_window is None else args.refine_window
    online = OnlineSettings(stages=tuple(args.stages), min_frames=1, window=longest,
                            joint_window=longest, refine_window=window_frames,
                            refine=RefineSettings(beam_divergence_deg=args.beam_divergence_deg),
                            refine_every=window_frames,
                            max_rotation_from_prior_deg=settings.max_rotation_from_prior_deg,
                            max_translation_from_prior_m=settings.max_translation_from_prior_m)
    summaries, rows = {}, []
    for name, model in models.items():
        calibrator = None if model is None else FeatureCache(
            Calibrator(model, network_input, settings, device), online.window)
        accumulator = PretextAccumulator(
            threshold=0.5 if model is None else model.point_threshold)
        calls = []
        for call in tqdm(run_calls(windows, samples.__getitem__,
                                   lambda prior, c=calibrator: OnlineCalibration(c, online, prior),
                                   args.prior_deg, args.prior_m, args.priors_per_frame,
                                   args.seed, args.priors_per_window),
                         desc=f"online ({name})"):
            calls.append(call)
            for index, outcome in zip(call.window.indices, call.outcomes, strict=True):
                record = _frame_record(calibrator, samples[index], call.prior, outcome,
                                       cfg.data.overlap_radius_cells, accumulator)
                if record is not None:
                    rows.append({"method": name, "regime": "online", "window": call.window.name,
                                 "call": call.call, **_frame_ids(samples[index]), **record})
        per_frame = summarize(accumulator, "online") if accumulator.records else {}
        per_frame["frame_accepted_rate"] = per_frame.pop("accepted_rate", math.nan)
        per_call, call_rows = summarize_calls(calls)
        summaries[name] = {**per_frame, **per_call}
        rows += [{"method": name, "regime": "online_call", **row} for row in call_rows]
    return summaries, rows


def _frame_record(calibrator: Calibrator, sample: dict, prior, outcome,
                  overlap_radius_cells: int, accumulator: PretextAccumulator) -> dict | None:
    """Add one frame of a call to the per-frame figures; its record (None when the network
    did not run on it)."""
    if outcome.network is None:
        return None
    record = outcome.record
    T_gt = np.asarray(sample["T_cam_lidar"], dtype=np.float64)
    T_out = record.T_cam_lidar if record.accepted else prior
    frame = sample_frame(sample)  # the cache holds the call's forward of this image
    features = calibrator.features(frame.image, frame.points, frame.camera)
    outputs, batch = online_frame(calibrator, features, outcome.network, sample, T_out,
                                  record.accepted, overlap_radius_cells)
    accumulator.add(outputs, batch)
    accumulator.add_dense(outputs["dense_errors"])
    prior_errors = pose_errors(prior, T_gt)
    estimate = pose_errors(record.T_cam_lidar, T_gt) if record.solved else {
        "rre_euler_deg": math.nan, "rte_m": math.nan}
    accumulator.records[-1].update(
        accepted=record.accepted, num_inliers=record.num_inliers,
        prior_rre_euler_deg=float(prior_errors["rre_euler_deg"]),
        prior_rte_m=float(prior_errors["rte_m"]),
        estimate_rre_euler_deg=float(estimate["rre_euler_deg"]),
        estimate_rte_m=float(estimate["rte_m"]),
        worse_than_prior=bool(record.accepted and (
            estimate["rre_geodesic_deg"] > prior_errors["rre_geodesic_deg"]
            or estimate["rte_m"] > prior_errors["rte_m"])))
    return {**accumulator.records[-1], "reason": record.reason}


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Evaluate as `args` say; write metrics.json, frames.csv, recall_curves.png."""
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        device = torch.device("cuda")
    else:
        device = torch.device("cpu")
    if args.checkpoint == NO_CHECKPOINT:
        checkpoint: dict[str, Any] = {}
        cfg = PretrainConfig(data=_data_source(DataConfig(), args))
        models: dict[str, CalibrationNet | None] = {METHOD: None}
    else:
        checkpoint = load_checkpoint(args.checkpoint)
        cfg = _config(checkpoint, args)
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
        "weights": "untrained" if args.untrained else (
            "none" if args.checkpoint == NO_CHECKPOINT else "checkpoint"),
        "model": {"similarity": cfg.model.get("similarity", "lta"),
                  "matching": cfg.model.get("matching", "soft"),
                  "fine_matching": bool(cfg.model.get("fine_matching", False))},
        "dataset": cfg.data.dataset, "data": cfg.data.root, "split": cfg.data.val_split,
        "seed": args.seed, "max_frames": args.max_frames,
        "prior": {"rotation_deg": args.prior_deg, "translation_m": args.prior_m,
                  "priors_per_frame": args.priors_per_frame,
                  "priors_per_window": args.priors_per_window},
        "windows": {"group_by_calibration": args.group_by_calibration,
                    "window_frames": args.window_frames},
        "stages": list(args.stages), "beam_divergence_deg": args.beam_divergence_deg,
        "solver": dataclasses.asdict(settings),
        "files": {"frames_csv": "frames.csv", "recall_png": "recall_curves.png"},
    }
    for regime, per_method in summaries.items():
        metrics[regime] = per_method[METHOD]
        if BASELINE in per_method:
            metrics.setdefault(BASELINE, {})[regime] = per_method[BASELINE]
    write_frames_csv(out / "frames.csv", rows)
    # per-frame recall curves (none when no network ran: refine alone)
    curves = {regime: {name: summary["recall_curves"] for name, summary in per_method.items()}
              for regime, per_method in summaries.items()
              if "recall_curves" in per_method[METHOD]}
    if "online" in curves:
        curves["online"]["prior T_init"] = summaries["online"][METHOD]["prior_recall_curves"]
    if curves:
        plot_recall_curves(out / "recall_curves.png", curves)
    else:
        del metrics["files"]["recall_png"]
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
    except (BagError, CheckpointError, ConfigError, FileNotFoundError, ValueError) as err:
        print(f"evaluate_calibration.py: error: {err}", file=sys.stderr)
        return 2
    if "registration" in metrics:
        m = metrics["registration"]
        print(f"registration: {m['num_frames']} frames, RRE {m['rre_euler_deg_mean']:.2f} deg, "
              f"RTE {m['rte_m_mean']:.3f} m, success {m['success_rate']:.3f}, "
              f"match acc@5px {m['match_acc_5px']:.3f}, dense acc@1/5px "
              f"{m['dense_match_acc_1px']:.3f}/{m['dense_match_acc_5px']:.3f}, median "
              f"{m['dense_match_err_px_median']:.2f} px")
    if "online" in metrics:
        m = metrics["online"]
        print(f"online: {m['num_calls']} calls, accepted {m['accepted_rate']:.3f}, median "
              f"{m['estimate_rre_geodesic_deg_median']:.3f} deg / "
              f"{m['estimate_rte_m_median']:.4f} m (prior "
              f"{m['prior_rre_geodesic_deg_median']:.2f} deg / "
              f"{m['prior_rte_m_median']:.3f} m), worse than the prior "
              f"{m['worse_than_prior_rate']:.3f}")
        for stage, figures in m["stages"].items():
            print(f"  {stage}: median {figures['estimate_rre_geodesic_deg_median']:.3f} deg / "
                  f"{figures['estimate_rte_m_median']:.4f} m, accepted "
                  f"{figures['accepted_rate']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
