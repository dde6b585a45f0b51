"""The one training loop of pre-training (`engine.trainer`) and fine-tuning
(`engine.finetune`), and what both need around it.

A model's forward returns a dict with the total `loss` (a 0-dim tensor) and its terms
(`loss_<term>`, other 0-dim scalars such as `pose_loss_frames`); the loop only calls
`TrainingHooks.forward`, steps the optimiser (AMP scaler, gradient clipping, LR schedule),
logs every `log_every` steps (train.log and TensorBoard `train/`) and hands each step and
each epoch's end to the hooks, where validation, checkpoints and early stopping live.
"""
from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from nclr_core.data.collate import batch_to
from nclr_core.engine.distributed import all_reduce_mean

log = logging.getLogger("nclr.train")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cosine_with_warmup(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR factor: linear 0 -> 1 over `warmup_steps`, then cosine 1 -> 0 at `total_steps`."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def loss_scalars(outputs: dict) -> dict[str, float]:
    """The 0-dim `loss*` and `pose_loss_frames` entries of a forward's outputs, as floats."""
    keys = [k for k in outputs if k.startswith("loss") or k == "pose_loss_frames"]
    return {k: float(outputs[k].detach()) for k in keys
            if torch.is_tensor(outputs[k]) and outputs[k].dim() == 0}


@dataclass
class Optimisation:
    """What a step updates and how: `model` (DDP-wrapped or not), the optimiser, its LR
    `scheduler` (stepped every step), the AMP `scaler` (disabled: plain fp32 steps),
    `grad_clip_norm` (None: no clipping) and `use_amp` (autocast around the forward)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    grad_clip_norm: float | None
    use_amp: bool = False

    def state(self) -> dict[str, Any]:
        """Optimizer, scheduler and scaler states, for a checkpoint."""
        return {"optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state(self, checkpoint: dict[str, Any]) -> None:
        """Restore what `state` wrote."""
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])


class TrainingHooks:
    """What differs between the runs that share the loop; the defaults do nothing more."""

    def forward(self, model: torch.nn.Module, batch: dict, step: int) -> dict:
        """The model's outputs (with `loss`) on one batch, at `step` (0-based, before it)."""
        return model(batch)

    def extra_scalars(self, outputs: dict) -> dict[str, float]:
        """More scalars logged with the losses (computed before the backward pass)."""
        return {}

    def after_step(self, step: int) -> bool:
        """Called after step `step` (1-based) was taken and logged; True stops the run."""
        return False

    def after_epoch(self, step: int) -> None:
        """Called when an epoch's batches end, or the run stops, after step `step`."""


def run_loop(opt: Optimisation, hooks: TrainingHooks,
             epoch_batches: Callable[[int, int], Iterable[dict]], batches_per_epoch: int,
             step: int, stop_step: int, device: torch.device, log_every: int,
             writer: SummaryWriter | None, description: str, show_progress: bool = True
             ) -> int:
    """Train from `step` until `stop_step` (or a hook stops it); returns the last step.

    `epoch_batches(epoch, skip)` gives that epoch's batches without its first `skip` ones
    (a resumed run continues mid-epoch on the same order). Scalars are averaged over the
    processes (`all_reduce_mean`); `writer` is None on the processes that do not log.
    """
    progress = tqdm(total=stop_step, initial=step, disable=not show_progress, desc=description)
    while step < stop_step:
        epoch, skip = divmod(step, batches_per_epoch)
        for batch in epoch_batches(epoch, skip):
            opt.model.train()
            batch = batch_to(batch, device)
            with torch.autocast(device.type, enabled=opt.use_amp):
                outputs = hooks.forward(opt.model, batch, step)
            logging_now = (step + 1) % log_every == 0 or step + 1 == stop_step
            extra = hooks.extra_scalars(outputs) if logging_now else {}
            opt.optimizer.zero_grad(set_to_none=True)
            opt.scaler.scale(outputs["loss"]).backward()
            if opt.grad_clip_norm:
                opt.scaler.unscale_(opt.optimizer)
                torch.nn.utils.clip_grad_norm_(opt.model.parameters(), opt.grad_clip_norm)
            opt.scaler.step(opt.optimizer)
            opt.scaler.update()
            opt.scheduler.step()
            step += 1
            progress.update(1)
            if logging_now:
                scalars = all_reduce_mean({**loss_scalars(outputs), **extra}, device)
                if writer is not None:
                    for key, value in scalars.items():
                        writer.add_scalar(f"train/{key}", value, step)
                    writer.add_scalar("train/lr", opt.scheduler.get_last_lr()[0], step)
                log.info("step %d %s", step,
                         " ".join(f"{k}={v:.4f}" for k, v in sorted(scalars.items())))
            if hooks.after_step(step):
                stop_step = step
            if step >= stop_step:
                break
        hooks.after_epoch(step)
    progress.close()
    return step
