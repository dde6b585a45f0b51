"""Calibration inference: CalibrationNet per stage, and `Calibrator.calibrate` end to end.

Two inputs: a KITTI-size frame (1242 x 375, ~120k points) through the paper configuration
(`training/configs/semantickitti.yaml`), and the same frame fitted to the CPU configuration
(`training/configs/synthetic_cpu.yaml`). The frame is fitted to the network as the pipeline
does (`nclr_core.data.datasets.pair_transform`, validation mode: point range crop, at most
`max_points`, resize to cover + centre crop). Weights are random (seed 0): the timing of the
network does not depend on them, but the adaptive stop of the `Calibrator`'s RANSAC does, so
a trained model's end-to-end figure may differ.

Stages, timed in one pass with `torch.no_grad()`: image encoder (ResNet + FPN decoder, and
the fine stage's stride-2 map when the model has one), point encoder (voxelisation + sparse
U-Net encoder and decoder), fusion, matching (overlap heads, similarity, soft matching and
the fine refinement: the post-decoder forward, which runs no EPnP) and PnP (the weighted
EPnP on the matches, as training's pose loss runs it, not part of the forward any more);
total = the whole forward.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.inputs import CPU_CONFIG, FULL_CONFIG, REPO, config, kitti_size_frame
from benchmarks.timing import PeakMemory, measure, median_of, now
from nclr_core.data.collate import batch_to, collate_pairs
from nclr_core.data.datasets import pair_transform
from nclr_core.engine.trainer import build_model
from nclr_core.geometry.camera import CameraModel
from nclr_core.geometry.epnp import solve_epnp
from nclr_core.inference import Calibrator, NetworkInput, SolverSettings
from nclr_core.models.calibration_net import CalibrationNet

NETWORK_KEYS = ("image", "points", "offset", "K")


def network_batch(frame: dict[str, Any], cfg_path: Path, device: torch.device
                  ) -> dict[str, torch.Tensor]:
    """One-frame batch fitted to the config's network input (no ground-truth keys)."""
    cfg = config(cfg_path)
    sample = pair_transform(cfg.data, train=False)(dict(frame))
    batch = collate_pairs([sample])
    return batch_to({k: batch[k] for k in NETWORK_KEYS}, device)


def stage_seconds(model: CalibrationNet, batch: dict[str, torch.Tensor],
                  device: torch.device) -> dict[str, float]:
    """Seconds of each stage of one forward pass (see the module docstring)."""
    t0 = now(device)
    stem, stages = model.image_encoder.encode_with_stem(batch["image"])
    t1 = now(device)
    state = model.point_encoder.encode(batch["points"], batch["offset"])
    voxel_feats, voxel_xyz, voxel_batch = model.point_encoder.bottleneck(state)
    t2 = now(device)
    fused_voxels, fused_map = model.fusion(voxel_feats, voxel_xyz, voxel_batch, stages[-1])
    t3 = now(device)
    feats = {"image_feats": model.image_encoder.decode([*stages[:-1], fused_map]).float()}
    if model.fine_matcher is not None:
        feats["fine_image_feats"] = model.fine_matcher.image_features(
            stem, feats["image_feats"]).float()
    t4 = now(device)
    feats["point_feats"] = model.point_encoder.decode(state, fused_voxels).float()
    t5 = now(device)
    out = model._predict(batch, feats, False, False)
    t6 = now(device)
    match = out["matches"][0]
    solve_epnp(batch["points"][match["point_index"], :3].float()[None],
               match["pixels"][None], batch["K"].float(), match["weights"][None],
               model.refine_steps)
    t7 = now(device)
    return {"image_encoder_s": (t1 - t0) + (t4 - t3), "point_encoder_s": (t2 - t1) + (t5 - t4),
            "fusion_s": t3 - t2, "matching_s": t6 - t5, "pnp_s": t7 - t6,
            "total_s": t6 - t0}


def _case(frame: dict[str, Any], source: str, cfg_path: Path, device: torch.device,
          repeats: int, calibrator_repeats: int, warmup: int) -> dict[str, Any]:
    cfg = config(cfg_path)
    torch.manual_seed(0)
    model = build_model(cfg).to(device).eval()
    batch = network_batch(frame, cfg_path, device)
    samples: list[dict[str, float]] = []
    with torch.no_grad():
        for _ in range(warmup):
            stage_seconds(model, batch, device)
        with PeakMemory(device) as memory:
            for _ in range(repeats):
                samples.append(stage_seconds(model, batch, device))
    stages = median_of(samples)
    calibrator = Calibrator(model, NetworkInput.from_config(cfg.data),
                            SolverSettings(), device)
    height, width = frame["image"].shape[:2]
    camera = CameraModel(frame["K"], width, height)
    with PeakMemory(device) as calibrator_memory:
        timing = measure(lambda: calibrator.calibrate(frame["image"], frame["points"], camera),
                         calibrator_repeats, warmup=0, device=device)
    return {
        "config": str(cfg_path.relative_to(REPO)),
        "input": source,
        "raw_points": int(len(frame["points"])), "raw_image_wh": [width, height],
        "network_points": int(batch["points"].shape[0]),
        "network_image_wh": [int(batch["image"].shape[3]), int(batch["image"].shape[2])],
        "matches": int(model.max_match_points),
        "stages_median_s": stages,
        "frames_per_s": 1.0 / stages["total_s"],
        "repeats": repeats, "warmup": warmup,
        "memory": memory.result(),
        "calibrator": {"seconds_median": timing.median_s, "frames_per_s": 1 / timing.median_s,
                       "repeats": calibrator_repeats, "memory": calibrator_memory.result()},
    }


def run(quick: bool, synthetic_root: Path) -> dict[str, Any]:
    """The inference section: CPU cases, and the same on CUDA when there is a device."""
    frame, source = kitti_size_frame(synthetic_root)
    result: dict[str, Any] = {}
    devices = [("cpu", torch.device("cpu"))]
    if torch.cuda.is_available():
        devices.append(("gpu", torch.device("cuda")))
    else:
        result["gpu"] = {"skipped": "no CUDA device"}
    for name, device in devices:
        # the small case first: peak RSS is a process high-water mark that never goes down
        cases: dict[str, Any] = {"cpu_config": _case(
            frame, source, CPU_CONFIG, device, repeats=1 if quick else 5,
            calibrator_repeats=1 if quick else 3, warmup=0 if quick else 1)}
        if quick and device.type == "cpu":
            cases["kitti_size_full_config"] = {
                "skipped": "full run only (--quick): the paper configuration is too slow "
                           "on a CPU for CI"}
        else:
            cases["kitti_size_full_config"] = _case(frame, source, FULL_CONFIG, device,
                                                    repeats=3, calibrator_repeats=1, warmup=1)
        result[name] = cases
    return result
