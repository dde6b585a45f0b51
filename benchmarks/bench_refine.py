"""The training-free `refine` stage: time and peak memory of one window.

The window: the first 10 real KITTI object frames that share the 2011_09_26 calibration
(`../shared/data/real`) when they are beside the repository, else the benchmark's synthetic
frames (thin-ray simulator: beam divergence 0). The start: a prior exactly 5 deg / 20 cm
from the truth (seeded), default `RefineSettings` bounds (6 deg / 0.3 m). Wall time, the
process's CPU time (less sensitive to other processes on the cores) and the resident-set
peak of the call; the estimate's errors to show the timed call did its job.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.inputs import REAL_DATA, SEQUENCE
from benchmarks.timing import PeakMemory, measure
from nclr_core.data.kitti import KittiObjectDataset
from nclr_core.data.semantickitti import SemanticKittiDataset
from nclr_core.geometry.camera import CameraModel
from nclr_core.geometry.metrics import pose_errors
from nclr_core.online.pose import prior_at_distance
from nclr_core.online.refine import RefineFrame, RefineSettings, refine

WINDOW = 10
KITTI_FX = 721.5377  # the 2011_09_26 calibration of 11 of the 12 shared frames
PRIOR_DEG, PRIOR_M = 5.0, 0.2


def _frame(sample: dict[str, Any]) -> RefineFrame:
    image = sample["image"]
    return RefineFrame(image, sample["points"],
                       CameraModel(sample["K"], image.shape[1], image.shape[0]))


def window(synthetic_root: Path, size: int) -> tuple[list[RefineFrame], np.ndarray, str,
                                                     RefineSettings]:
    """Frames, their true T_cam_lidar, where they come from, and the settings for them."""
    kitti = REAL_DATA / "kitti_object"
    if kitti.is_dir():
        samples = []
        for split in ("training", "testing"):
            dataset = KittiObjectDataset(kitti, split)
            samples += [dataset[i] for i in range(len(dataset))]
        samples = [s for s in samples if abs(s["K"][0, 0] - KITTI_FX) < 1e-3][:size]
        return ([_frame(s) for s in samples], samples[0]["T_cam_lidar"],
                "real KITTI object frames (2011_09_26 calibration)", RefineSettings())
    dataset = SemanticKittiDataset(synthetic_root, sequences=(SEQUENCE,))
    samples = [dataset[i] for i in range(min(size, len(dataset)))]
    return ([_frame(s) for s in samples], samples[0]["T_cam_lidar"],
            f"synthetic sequence {SEQUENCE} (real KITTI sample absent)",
            RefineSettings(beam_divergence_deg=0.0))


def run(quick: bool, synthetic_root: Path) -> dict[str, Any]:
    """The refine section."""
    frames, T_true, source, settings = window(synthetic_root, 3 if quick else WINDOW)
    T_prior = prior_at_distance(T_true, PRIOR_DEG, PRIOR_M, np.random.default_rng(0))
    cpu: list[float] = []
    results = []

    def call() -> None:
        start = time.process_time()
        results.append(refine(frames, T_prior, settings))
        cpu.append(time.process_time() - start)

    with PeakMemory() as memory:
        timing = measure(call, repeats=1 if quick else 3, warmup=0)
    result = results[-1]
    out: dict[str, Any] = {
        "source": source, "frames": len(frames),
        "points_per_frame_median": float(np.median([len(f.points) for f in frames])),
        "image_hw": list(frames[0].image.shape[:2]), "prior_deg": PRIOR_DEG,
        "prior_m": PRIOR_M, "settings": asdict(settings),
        "wall_s": timing.as_dict(), "cpu_s_median": float(np.median(cpu)),
        "memory": memory.result(), "solved": result.solved, "reason": result.reason,
        "contour_points": result.points_used}
    if result.T_found is not None:
        errors = pose_errors(result.T_found, T_true)
        out["rotation_error_deg"] = float(errors["rre_geodesic_deg"])
        out["translation_error_m"] = float(errors["rte_m"])
    return out
