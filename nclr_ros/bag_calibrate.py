"""`nclr-bag calibrate`: calibrate a vehicle from a bag and a rough prior, offline.

The bag's pairs go, in order, through the node's own `OnlineCalibration` (the node's
parameter defaults, the stages asked for) from the prior `T_cam_lidar` of a calibration
file (YAML or JSON of `nclr_core.io.calibration_files`: a CAD drawing, a tape measure, last
month's calibration written by hand into that format); the final estimate is written as the
calibration files the node writes (YAML, JSON, URDF joint, static-transform command), with
its per-axis sigmas and the drift test against the prior in the YAML's quality. No ground
truth is needed (that is `nclr-bag eval`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nclr_core.checkpoint import CheckpointError
from nclr_core.data.rosbag.messages import BagError, BagTopics
from nclr_core.data.rosbag.reader import BagFrames
from nclr_core.engine.online_eval import NO_CHECKPOINT
from nclr_core.inference import Calibrator
from nclr_core.io.calibration_files import (
    CalibrationRecord,
    load_calibration_file,
    write_calibration_files,
)
from nclr_core.online.pipeline import Frame, OnlineCalibration
from nclr_core.online.records import CalibrationEstimate
from nclr_ros.calibration_parameters import (
    defaults,
    needs_network,
    online_settings,
    solver_settings,
)


@dataclass(frozen=True)
class CalibrateOptions:
    """prior: calibration file of the rough T_cam_lidar. out: folder of the calibration
    files. checkpoint: NCLR checkpoint, or "none" (refine alone). stages: comma-separated.
    topics: bag topic names. device: torch device. file_stem: base name of the files."""

    prior: Path
    out: Path
    checkpoint: Path = Path(NO_CHECKPOINT)
    stages: str = "refine"
    topics: BagTopics = field(default_factory=BagTopics)
    device: str = "cpu"
    file_stem: str = "nclr_calibration"


@dataclass(frozen=True)
class Calibrated:
    """What came out: the final estimate, the files written (empty when not solved), the
    drift test against the prior (None without an estimate), pairs processed, wall time."""

    estimate: CalibrationEstimate
    files: dict[str, Path]
    drift: Any
    pairs: int
    wall_time_s: float


def calibrate_bag(bag: str | Path, options: CalibrateOptions) -> Calibrated:
    """Calibrate from `bag` (see the module docstring); BagError / ValueError on bad input."""
    started = time.monotonic()
    params = {**defaults(), "stages": options.stages}
    prior = load_calibration_file(options.prior, "prior calibration file")
    calibrator = None
    if needs_network(params):
        if str(options.checkpoint) == NO_CHECKPOINT:
            raise ValueError(f"stages {options.stages} need a network: give a checkpoint")
        try:
            calibrator = Calibrator.from_checkpoint(options.checkpoint, options.device,
                                                    solver_settings(params))
        except CheckpointError as err:
            raise ValueError(str(err)) from err
    pipeline = OnlineCalibration(calibrator, online_settings(params), prior)
    frames = BagFrames(bag, options.topics, slop=params["sync_slop_s"],
                       queue_size=params["sync_queue_size"])
    pairs, last = 0, None
    for sample in frames:
        pairs += 1
        last = sample
        pipeline.process(Frame(sample["image"], sample["points"], sample["camera"],
                               sample["camera_stamp"], sample["stamp"], sample.get("ring")))
    if last is None:
        raise BagError(f"{bag}: no image/cloud pair formed")
    estimate = pipeline.estimate()
    drift = pipeline.drift()
    files: dict[str, Path] = {}
    if estimate.solved:
        quality = estimate.as_values()
        if drift is not None:
            quality.update(drifted_from_prior=drift.drifted, drift=drift.describe())
        record = CalibrationRecord(
            T_cam_lidar=estimate.T_cam_lidar, camera_frame=last["camera_frame"],
            lidar_frame=last["lidar_frame"], stamp=float(last["stamp"]),
            frame_count=estimate.num_frames, quality=quality, camera=last["camera"])
        Path(options.out).mkdir(parents=True, exist_ok=True)
        files = write_calibration_files(record, options.out, options.file_stem)
    return Calibrated(estimate, files, drift, pairs, time.monotonic() - started)
