"""Sparse convolution on the CPU: the point encoder of the CPU configuration alone.

Forward (inference, `torch.no_grad()`), forward with autograd, and backward of the summed
output, on the points of one real training batch (synthetic pairs, `collate_pairs`), through
spconv's CPU path (`nclr_core.spconv_compat`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_training import training_batches
from benchmarks.inputs import CPU_CONFIG, REPO, config
from benchmarks.timing import PeakMemory, measure, median_of, now
from nclr_core.engine.trainer import build_model


def run(quick: bool, synthetic_root: Path) -> dict[str, Any]:
    """The spconv section (CPU only: it is the CPU path's cost that is asked)."""
    device = torch.device("cpu")
    cfg = config(CPU_CONFIG, synthetic_root)
    torch.manual_seed(cfg.seed)
    encoder = build_model(cfg).point_encoder.to(device).train()
    batch = training_batches(cfg, 1, device)[0]
    points, offset = batch["points"], batch["offset"]
    repeats, warmup = (1, 0) if quick else (7, 1)

    def inference() -> None:
        with torch.no_grad():
            encoder(points, offset)

    def train_step() -> dict[str, float]:
        t0 = now()
        out = encoder(points, offset)
        t1 = now()
        out.sum().backward()
        t2 = now()
        encoder.zero_grad(set_to_none=True)
        return {"forward_s": t1 - t0, "backward_s": t2 - t1}

    encoder.eval()
    with PeakMemory() as inference_memory:
        forward = measure(inference, repeats, warmup)
    encoder.train()
    for _ in range(warmup):
        train_step()
    with PeakMemory() as train_memory:
        train = median_of([train_step() for _ in range(repeats)])
    with torch.no_grad():
        voxels = encoder.encode(points, offset).voxels
    return {
        "config": str(CPU_CONFIG.relative_to(REPO)),
        "points": int(points.shape[0]), "frames": int(offset.shape[0]),
        "voxels": int(voxels.indices.shape[0]),
        "voxel_size_m": float(encoder.voxel_size),
        "forward_inference_s": forward.as_dict(),
        "forward_train_s_median": train["forward_s"],
        "backward_s_median": train["backward_s"],
        "repeats": repeats, "warmup": warmup,
        "memory_inference": inference_memory.result(),
        "memory_train": train_memory.result(),
    }
