"""Sparse convolution on the CPU: the point encoder of the CPU configuration alone.

Forward (inference, `torch.no_grad()`), forward with autograd, and backward of the summed
output, on the points of one real training batch (synthetic pairs, `collate_pairs`), through
spconv's CPU path (`nclr_core.spconv_compat`). The full run measures it with one intra-op
thread and with every usable CPU, in the same run: the CPU path runs many small parallel
regions, so its speed depends on the thread count (and on whether other processes take the
cores) far more than dense layers do. `--quick` measures the process's thread count only.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_training import training_batches
from benchmarks.inputs import CPU_CONFIG, REPO, config
from benchmarks.timing import PeakMemory, measure, median_of, now
from nclr_core.engine.trainer import build_model
from nclr_core.models.point_encoder import PointEncoder


def _measure(encoder: PointEncoder, points: torch.Tensor, offset: torch.Tensor, repeats: int,
             warmup: int) -> dict[str, Any]:
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
    return {
        "forward_inference_s": forward.as_dict(),
        "forward_train_s_median": train["forward_s"],
        "backward_s_median": train["backward_s"],
        "repeats": repeats, "warmup": warmup,
        "memory_inference": inference_memory.result(),
        "memory_train": train_memory.result(),
    }


def run(quick: bool, synthetic_root: Path) -> dict[str, Any]:
    """The spconv section (CPU only: it is the CPU path's cost that is asked)."""
    cfg = config(CPU_CONFIG, synthetic_root)
    torch.manual_seed(cfg.seed)
    encoder = build_model(cfg).point_encoder
    batch = training_batches(cfg, 1, torch.device("cpu"))[0]
    points, offset = batch["points"], batch["offset"]
    repeats, warmup = (1, 0) if quick else (7, 1)
    own = torch.get_num_threads()
    counts = [own] if quick else sorted({1, len(os.sched_getaffinity(0))})
    by_threads = {}
    try:
        for count in counts:
            torch.set_num_threads(count)
            by_threads[str(count)] = _measure(encoder, points, offset, repeats, warmup)
    finally:
        torch.set_num_threads(own)
    with torch.no_grad():
        voxels = encoder.encode(points, offset).voxels
    result: dict[str, Any] = {
        "config": str(CPU_CONFIG.relative_to(REPO)),
        "points": int(points.shape[0]), "frames": int(offset.shape[0]),
        "voxels": int(voxels.indices.shape[0]),
        "voxel_size_m": float(encoder.voxel_size),
        "by_threads": by_threads,
    }
    if len(counts) > 1:
        one, most = by_threads[str(counts[0])], by_threads[str(counts[-1])]
        result["speedup_most_threads_over_one"] = {
            "forward_inference": (one["forward_inference_s"]["median_s"]
                                  / most["forward_inference_s"]["median_s"]),
            "backward": one["backward_s_median"] / most["backward_s_median"],
        }
    return result
