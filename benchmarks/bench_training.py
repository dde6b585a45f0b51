"""Training step: forward + backward + optimizer step of the pre-training loop.

The CPU configuration (`training/configs/synthetic_cpu.yaml`) on real pairs of a temporary
synthetic data set (`build_pair_dataset` + `collate_pairs`, batch size of the config), the
pose loss as the config has it (after its warm-up), AdamW on the trainer's parameter
groups with its gradient clipping, float32 (no AMP). On CUDA also the paper configuration
(`training/configs/semantickitti.yaml`) on the same synthetic frames.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.inputs import CPU_CONFIG, FULL_CONFIG, REPO, config
from benchmarks.timing import PeakMemory, measure
from nclr_core.data.collate import batch_to, collate_pairs
from nclr_core.data.datasets import build_pair_dataset
from nclr_core.engine.pretrain_config import PretrainConfig
from nclr_core.engine.trainer import build_model, parameter_groups


def training_batches(cfg: PretrainConfig, count: int, device: torch.device) -> list[dict]:
    """`count` collated training batches of the config's batch size (frames reused in turn)."""
    dataset = build_pair_dataset(cfg.data, train=True, seed=cfg.seed)
    size = cfg.train.batch_size
    if len(dataset) < size:
        raise ValueError(f"{len(dataset)} frames are fewer than one batch of {size}")
    starts = [(i * size) % (len(dataset) - size + 1) for i in range(count)]
    return [batch_to(collate_pairs([dataset[s + j] for j in range(size)]), device)
            for s in starts]


def step_benchmark(cfg_path: Path, synthetic_root: Path, device: torch.device, repeats: int,
                   warmup: int) -> dict[str, Any]:
    """Median seconds and peak memory of one training step (warm-up steps excluded)."""
    cfg = config(cfg_path, synthetic_root)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device).train()
    optimizer = torch.optim.AdamW(
        parameter_groups(model, cfg.train.weight_decay, cfg.train.lr), lr=cfg.train.lr)
    batches = training_batches(cfg, warmup + repeats, device)
    cursor = iter(batches)
    losses: list[str] = []

    def step() -> None:
        outputs = model(next(cursor), pose_loss_enabled=True)
        losses[:] = sorted(k.removeprefix("loss_") for k in outputs if k.startswith("loss_"))
        optimizer.zero_grad(set_to_none=True)
        outputs["loss"].backward()
        if cfg.train.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip_norm)
        optimizer.step()

    with PeakMemory(device) as memory:
        timing = measure(step, repeats, warmup, device=device)
    return {
        "config": str(cfg_path.relative_to(REPO)),
        "batch_size": cfg.train.batch_size,
        "points_per_batch": int(batches[0]["points"].shape[0]),
        "image_hw": [int(v) for v in batches[0]["image"].shape[2:]],
        "losses": losses,
        "step_s": timing.as_dict(),
        "warmup_steps": warmup,
        "steps_per_s": 1.0 / timing.median_s,
        "memory": memory.result(),
    }


def run(quick: bool, synthetic_root: Path) -> dict[str, Any]:
    """The training section: CPU config on the CPU; CUDA cases when there is a device."""
    repeats, warmup = (1, 0) if quick else (5, 1)
    result: dict[str, Any] = {
        "cpu": {"cpu_config": step_benchmark(CPU_CONFIG, synthetic_root,
                                             torch.device("cpu"), repeats,
                                             warmup)}}
    if torch.cuda.is_available():
        device = torch.device("cuda")
        result["gpu"] = {name: step_benchmark(path, synthetic_root, device, repeats, warmup)
                         for name, path in (("cpu_config", CPU_CONFIG),
                                            ("full_config", FULL_CONFIG))}
    else:
        result["gpu"] = {"skipped": "no CUDA device"}
    return result
