"""`nclr-bag eval`: evaluate an NCLR checkpoint as an online calibrator on a bag.

Both modes use the calibration node's parameter defaults
(`nclr_ros.calibration_parameters.PARAMETERS`, with the stages asked for) for the pairer,
the Calibrator and the pipeline, so offline and live agree:

- **offline**: `BagFrames` pairs the bag's messages with the node's pairer and settings; each
  pair goes through `nclr_core.online.pipeline.OnlineCalibration.process`, the object the
  node itself calls.
- **live** (`nclr_ros.bag_live`): the node runs as a subprocess
  (`python -m nclr_ros.calibration_node`) in a random
  ROS domain (100..200, localhost discovery) with reliable subscriptions, and its per-pair
  records (`~/frame_estimates`, `nclr_core.online.records.FrameRecord`) and diagnostics are
  recorded.
  *(decision)* The node calibrates only the newest pair and drops a pair that arrives while
  it is busy, so a timed playback would make the processed set depend on the machine's load.
  The bag is therefore played **in lock-step**: its raw CDR messages are published in bag
  order (ties: CameraInfo, image, cloud, as `BagFrames` orders them), and after each one the
  player waits until the node's diagnostics (at 20 Hz) count it as received and show no pair
  pending or in progress, and until every processed pair's record has arrived. Every pair
  is then calibrated, in order, with nothing dropped, and the per-frame estimates equal the
  offline ones up to floating point.

*(measured)* Multi-threaded CPU inference is not bit-reproducible (float summation order
changes from run to run, even in one process), and RANSAC-PnP can turn that last-bit noise
into a different inlier set, most visibly with a weak model. `threads=1` (`--threads 1`)
runs the offline Calibrator and the node single-threaded (`torch.set_num_threads`,
`OMP_NUM_THREADS` for the node), which makes both deterministic and equal.

Ground truth is the bag's /tf_static (`T_cam_lidar` of each pair) or a calibration file
(`--ground-truth`, YAML or JSON of `nclr_core.io.calibration_files`). With `prior_deg` and
`prior_m` the node's online regime is used: the prior is the ground truth of the first pair
rotated by exactly `prior_deg` degrees about a random axis and shifted by exactly `prior_m`
metres in a random direction (`seed`).

Writes into `out`: `frames.csv` (one row per pair), `metrics.json` (per-frame metrics and
their summary, the aggregated estimate's errors and per-axis sigmas, the final estimate of
each stage and its errors (`stages`), processed/dropped counts, latency: live,
from the pair forming in the node to its estimate; offline, the Calibrator and estimator),
`error_over_time.png`, `recall_curves.png` and `overlays/frame_NNNN.png` (points coloured by
depth under the aggregated estimate, above the same under the ground truth), from
`nclr_ros.bag_report`.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nclr_core.checkpoint import CheckpointError
from nclr_core.data.rosbag.messages import BagError, BagTopics
from nclr_core.data.rosbag.reader import BagFrames
from nclr_core.engine.calibration_eval import plot_recall_curves, write_frames_csv
from nclr_core.engine.metrics_file import write_metrics_json
from nclr_core.engine.online_eval import NO_CHECKPOINT
from nclr_core.inference import Calibrator
from nclr_core.io.calibration_files import load_calibration_file
from nclr_core.online.pipeline import Frame, OnlineCalibration
from nclr_core.online.pose import prior_at_distance
from nclr_ros.bag_live import node_prior, run_live
from nclr_ros.bag_report import (
    Pass,
    finite_points,
    frame_rows,
    match_truths,
    plot_errors_over_time,
    spread,
    stats,
    summarize,
    write_overlays,
)
from nclr_ros.calibration_parameters import (
    defaults,
    needs_network,
    online_settings,
    solver_settings,
)

LOG = logging.getLogger(__name__)

MODES = ("offline", "live")


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate.

    checkpoint: NCLR checkpoint (.pt), or "none" with the refine stage alone. out: output
        folder. topics: bag topic names.
    ground_truth: calibration file (YAML/JSON); None: the bag's /tf_static.
    live: run the node instead of the Calibrator in-process.
    prior_deg, prior_m: prior's exact rotation (degrees) / translation (metres) from the
        ground truth (both or neither; neither: no prior). seed: the prior's directions.
    device: torch device. overlays: overlay images written (evenly spaced frames).
    timeout_s: live: longest wait for the node to take one message or finish one pair.
    threads: torch CPU threads of the Calibrator (offline) and the node (live); None: torch's
        default. 1 makes the estimates reproducible (see the module docstring).
    stages: the pipeline's stages, comma-separated (the node's `stages` parameter).
    """

    checkpoint: Path
    out: Path
    topics: BagTopics = field(default_factory=BagTopics)
    ground_truth: Path | None = None
    live: bool = False
    prior_deg: float | None = None
    prior_m: float | None = None
    seed: int = 0
    device: str = "cpu"
    overlays: int = 3
    timeout_s: float = 120.0
    threads: int | None = None
    stages: str = "global"

    def __post_init__(self) -> None:
        if (self.prior_deg is None) != (self.prior_m is None):
            raise ValueError("give both --prior-deg and --prior-m, or neither (no prior)")
        if self.prior_deg is not None and not (0.0 <= self.prior_deg <= 180.0
                                               and 0.0 <= self.prior_m < math.inf):
            raise ValueError(f"prior must be 0..180 deg and >= 0 m, got {self.prior_deg} deg, "
                             f"{self.prior_m} m")
        if self.overlays < 0 or not self.timeout_s > 0:
            raise ValueError("overlays must be >= 0 and timeout_s > 0")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


def node_parameters(options: EvalOptions) -> dict[str, Any]:
    """The calibration node's parameters for this evaluation: its defaults, the stages."""
    return {**defaults(), "stages": options.stages}


def _ground_truth_of(bag: Path, options: EvalOptions) -> Callable[[dict], np.ndarray]:
    fixed = None if options.ground_truth is None else load_calibration_file(options.ground_truth,
                                                          "ground-truth calibration file")

    def truth(sample: dict) -> np.ndarray:
        if fixed is not None:
            return fixed
        if "T_cam_lidar" not in sample:
            raise BagError(
                f"{bag}: pair {sample['frame_id']} has no ground truth: no "
                f"{options.topics.tf_static} transform {sample['camera_frame']!r} -> "
                f"{sample['lidar_frame']!r} before it; pass --ground-truth FILE")
        return sample["T_cam_lidar"]

    return truth


def run_offline(frames: BagFrames, pipeline: OnlineCalibration) -> Pass:
    """Calibrate every pair of `frames` through the pipeline, as the node does."""
    records = []
    for sample in frames:
        start = time.monotonic()
        frame = Frame(sample["image"], finite_points(sample["points"]), sample["camera"],
                      sample["camera_stamp"], sample["stamp"])
        record = pipeline.process(frame).record
        records.append(dataclasses.replace(record, latency_s=time.monotonic() - start))
    c = frames.counters
    counts = {"pairs": len(records), "processed": len(records), "dropped_pairs": 0,
              "dropped_images": c.dropped_images, "dropped_clouds": c.dropped_clouds,
              "images_without_info": frames.images_without_info}
    drift = pipeline.drift()
    return Pass(records, counts, None if drift is None else {"drifted": drift.drifted,
                                                             "drift": drift.describe()})


def evaluate(bag: str | Path, options: EvalOptions, command: str = "") -> dict[str, Any]:
    """Evaluate `options.checkpoint` on `bag`; writes the outputs and returns the metrics."""
    threads = torch.get_num_threads()
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    try:
        return _evaluate(Path(bag), options, command)
    finally:
        torch.set_num_threads(threads)


def _evaluate(bag: Path, options: EvalOptions, command: str) -> dict[str, Any]:
    started = time.monotonic()
    params = node_parameters(options)
    frames = BagFrames(bag, options.topics, slop=params["sync_slop_s"],
                       queue_size=params["sync_queue_size"])
    truth = _ground_truth_of(bag, options)
    calibrator = None
    if needs_network(params):
        if str(options.checkpoint) == NO_CHECKPOINT:
            raise ValueError(f"stages {options.stages} need a network: give a checkpoint")
        try:  # live too: a bad checkpoint is reported here, before the node starts
            calibrator = Calibrator.from_checkpoint(options.checkpoint, options.device,
                                                    solver_settings(params))
        except CheckpointError as err:
            raise ValueError(str(err)) from err
    pairs: list[tuple[float, np.ndarray]] = []
    for sample in frames:  # ground truth per pair (and a first check of the whole bag)
        pairs.append((sample["camera_stamp"], np.asarray(truth(sample), dtype=np.float64)))
    if not pairs:
        c = frames.counters
        raise BagError(f"{bag}: no image/cloud pair formed ({c.received_images} images, "
                       f"{c.received_clouds} clouds, {frames.images_without_info} images "
                       f"before any CameraInfo)")
    prior = None
    if options.prior_deg is not None:
        prior = node_prior(prior_at_distance(pairs[0][1], options.prior_deg, options.prior_m,
                                             np.random.default_rng(options.seed)))
    mode = "live" if options.live else "offline"
    LOG.info("%s evaluation of %s on %d pairs of %s", mode, options.checkpoint, len(pairs), bag)
    if options.live:
        result = run_live(bag, frames, options, params, prior)
    else:
        result = run_offline(frames, OnlineCalibration(calibrator, online_settings(params),
                                                       prior))
    if not result.records:
        raise BagError(f"{bag}: no pair was calibrated")
    truths = match_truths(bag, result.records, pairs)
    rows = frame_rows(result.records, truths)
    final_aggregate = result.records[-1].aggregate
    out = options.out
    metrics: dict[str, Any] = {
        "command": command, "mode": mode, "bag": str(bag),
        "checkpoint": str(options.checkpoint), "device": options.device,
        "threads": options.threads,
        "ground_truth": str(options.ground_truth) if options.ground_truth
        else options.topics.tf_static,
        "prior": None if prior is None else {"rotation_deg": options.prior_deg,
                                             "translation_m": options.prior_m,
                                             "seed": options.seed,
                                             "T_cam_lidar": prior.tolist()},
        "node_parameters": {k: params[k] for k in (
            "sync_slop_s", "sync_queue_size", "reprojection_threshold_px",
            "ransac_iterations", "ransac_confidence", "min_inliers", "max_translation_m",
            "prior_max_rotation_deg", "prior_max_translation_m", "window", "min_frames",
            "outlier_rotation_deg", "outlier_translation_m", "stages")},
        "counts": {**result.counts, "valid": sum(r.valid for r in result.records),
                   "accepted": sum(r.accepted for r in result.records)},
        "latency_s": stats([r.latency_s for r in result.records]),
        "drift": result.drift,
        **summarize(rows, result.records[-1], truths[-1]),
        "per_frame": rows,
        "files": {"frames_csv": "frames.csv", "error_plot": "error_over_time.png",
                  "recall_png": "recall_curves.png", "overlays": "overlays/"},
    }
    write_frames_csv(out / "frames.csv", rows)
    plot_errors_over_time(out / "error_over_time.png", rows)
    plot_recall_curves(out / "recall_curves.png",
                       {"per-frame estimates": {"nclr": metrics["per_frame_summary"]
                                                ["recall_curves"]}})
    overlays = write_overlays(frames, spread(len(pairs), options.overlays), final_aggregate,
                              truth, out / "overlays")
    metrics["overlay_images"] = [str(p.relative_to(out)) for p in overlays]
    metrics["wall_time_s"] = time.monotonic() - started
    write_metrics_json(out / "metrics.json", metrics)
    return metrics
