"""The pre-training loop (METHOD.md §6): AdamW, cosine schedule with linear warm-up, pose
loss after a warm-up fraction, validation, `last`/`best` checkpoints, exact resume, DDP.

Logged every `log_every` steps (train.log and TensorBoard `train/`): each loss term, the
learning rate, the norm of each weighted loss term's gradient at the decoder features
(`grad_norm_<term>`: what each term asks of the backbones, e.g. L_p beside L_f) and, with
the pose loss on, `pose_loss_frames` (frames of the batch that passed the pose-loss gate).
Validation (`nclr_core.engine.evaluation.evaluate_pretext`) selects `best.pt` on RANSAC
registration success plus dense matching accuracy.

Run layout: `<output_root>/<name>/<timestamp>/{config.yaml, train.log, tb/, checkpoints/,
metrics.json}`.
"""
from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from nclr_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from nclr_core.config import ConfigError, apply_overrides, from_dict, save_config, to_dict
from nclr_core.data.collate import batch_to, collate_pairs
from nclr_core.data.datasets import PairDataset, build_pair_dataset
from nclr_core.engine.distributed import DistInfo, all_reduce_mean, barrier, init_distributed
from nclr_core.engine.evaluation import evaluate_pretext
from nclr_core.engine.metrics_file import write_metrics_json
from nclr_core.engine.pretrain_config import PretrainConfig
from nclr_core.engine.run_dir import create_run_dir, setup_logging
from nclr_core.models.calibration_net import CalibrationNet, build_calibration_net

log = logging.getLogger("nclr.train")


def cosine_with_warmup(total_steps: int, warmup_steps: int):
    """LR factor: linear 0 -> 1 over `warmup_steps`, then cosine 1 -> 0 at `total_steps`."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


class _SkipSampler(Sampler):
    """The first `skip` indices of an epoch left out: resume mid-epoch on the same order."""

    def __init__(self, sampler: DistributedSampler, skip: int) -> None:
        self.sampler = sampler
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        for position, index in enumerate(self.sampler):
            if position >= self.skip:
                yield index

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def build_model(cfg: PretrainConfig) -> CalibrationNet:
    """CalibrationNet from the config's `model` section and `data.point_range`."""
    try:
        return build_calibration_net(cfg.model, cfg.data.point_range)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model: {err}") from err


def parameter_groups(model: CalibrationNet, weight_decay: float, lr: float,
                     fresh_modules: tuple[str, ...] = (), pretrained_lr_scale: float = 1.0
                     ) -> list[dict]:
    """AdamW groups: weight decay everywhere but the LTA (its D would be pulled towards 0,
    shrinking every similarity, and Q is an orthogonal parametrisation); learning rate `lr`
    for the modules named in `fresh_modules` (started fresh in a run from `init_weights`),
    `lr * pretrained_lr_scale` for every other parameter. Empty groups are left out."""
    if not pretrained_lr_scale > 0:
        raise ValueError(f"train.pretrained_lr_scale must be positive, got {pretrained_lr_scale}")
    alignment = {id(p) for p in model.alignment.parameters()}
    fresh = {id(p) for name in fresh_modules for p in getattr(model, name).parameters()}
    groups = [
        {"params": [p for p in model.parameters() if id(p) not in alignment | fresh],
         "weight_decay": weight_decay, "lr": lr * pretrained_lr_scale},
        {"params": [p for p in model.parameters() if id(p) in fresh],
         "weight_decay": weight_decay, "lr": lr},
        {"params": list(model.alignment.parameters()), "weight_decay": 0.0,
         "lr": lr * pretrained_lr_scale},
    ]
    return [group for group in groups if group["params"]]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


FEATURE_KEYS = ("point_feats", "image_feats", "fine_image_feats")


def _loss_scalars(outputs: dict) -> dict[str, float]:
    keys = [k for k in outputs if k.startswith("loss") or k == "pose_loss_frames"]
    return {k: float(outputs[k].detach()) for k in keys
            if torch.is_tensor(outputs[k]) and outputs[k].dim() == 0}


def feature_gradient_norms(outputs: dict, loss_weights: dict[str, float]) -> dict[str, float]:
    """`grad_norm_<term>`: L2 norm of the gradient of λ_term · L_term with respect to the
    decoder features (`point_feats`, `image_feats`, `fine_image_feats` of the outputs), for
    every loss term present. Keeps the graph for the backward pass that follows."""
    feats = [outputs[k] for k in FEATURE_KEYS if k in outputs and outputs[k].requires_grad]
    norms = {}
    for term, weight in loss_weights.items():
        loss = outputs.get(f"loss_{term}")
        if loss is None or not loss.requires_grad:
            continue
        grads = torch.autograd.grad(weight * loss, feats, retain_graph=True,
                                    allow_unused=True)
        squares = sum(float(g.double().pow(2).sum()) for g in grads if g is not None)
        norms[f"grad_norm_{term}"] = math.sqrt(squares)
    return norms


def _scalar_items(metrics: dict) -> Iterator[tuple[str, float]]:
    """(name, value) of every number in `metrics`; a list [u, v] gives name_0, name_1."""
    for key, value in metrics.items():
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                yield f"{key}_{i}", float(item)
        elif isinstance(value, (int, float)):
            yield key, float(value)


def pretrain(cfg: PretrainConfig, resume: str | Path | None = None,
             checkpoint: dict | None = None) -> Path | None:
    """Train CalibrationNet as `cfg` says; returns the run folder (rank 0) or None.

    `resume` is a `checkpoints/last.pt` of an earlier run, which continues in its folder;
    `checkpoint` is that file already loaded, if the caller has it (then it is not read
    again). Bad splits, data or initial weights raise before a run folder is made.
    """
    dist = init_distributed(cfg.train.device)
    if resume and checkpoint is None:
        checkpoint = load_checkpoint(resume)
    _seed_everything(cfg.seed + dist.rank)
    model = build_model(cfg)
    fresh: tuple[str, ...] = ()
    # before the run folder exists: weights or data that cannot be used leave nothing
    # behind (building the data sets checks the splits, `check_splits`)
    if cfg.train.init_weights:
        fresh = _load_initial_weights(model, cfg.train.init_weights, load=checkpoint is None)
    train_set = build_pair_dataset(cfg.data, train=True, seed=cfg.seed)
    val_set = build_pair_dataset(cfg.data, train=False, seed=cfg.seed) if dist.is_main else None
    run_dir = Path(resume).resolve().parents[1] if resume else None
    if dist.is_main and run_dir is None:
        run_dir = create_run_dir(cfg.output_root, cfg.name)
    if dist.is_main:
        save_config(cfg, run_dir / "config.yaml")
    setup_logging(run_dir / "train.log" if dist.is_main else None, dist.rank)
    if checkpoint is None and cfg.train.init_weights:
        log.info("initial weights from %s%s", cfg.train.init_weights,
                 f" ({', '.join(fresh)} not in it: freshly initialised)" if fresh else "")
    try:
        return _train(cfg, dist, run_dir, checkpoint, model, fresh, train_set, val_set)
    finally:
        barrier()


def _train(cfg: PretrainConfig, dist: DistInfo, run_dir: Path | None,
           checkpoint: dict | None, model: CalibrationNet, fresh: tuple[str, ...],
           train_set: PairDataset, val_set: PairDataset | None) -> Path | None:
    """The training loop of `pretrain`; `fresh`: modules not in `train.init_weights`;
    `val_set` on the main process only."""
    device = dist.device
    sampler = DistributedSampler(train_set, num_replicas=dist.world_size, rank=dist.rank,
                                 shuffle=True, seed=cfg.seed, drop_last=True)
    batches_per_epoch = len(sampler) // cfg.train.batch_size
    if batches_per_epoch == 0:
        raise ValueError(f"{len(train_set)} training frames are fewer than one batch of "
                         f"{cfg.train.batch_size} per process ({dist.world_size} processes)")
    total_steps = cfg.train.epochs * batches_per_epoch
    stop_step = min(total_steps, cfg.train.max_steps or total_steps)
    pose_start = int(cfg.train.pose_loss_start_fraction * total_steps)

    scale = cfg.train.pretrained_lr_scale if cfg.train.init_weights else 1.0
    model = model.to(device)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, cfg.train.weight_decay, cfg.train.lr, fresh, scale),
        lr=cfg.train.lr)
    warmup = max(1, int(cfg.train.warmup_fraction * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  cosine_with_warmup(total_steps, warmup))
    use_amp = cfg.train.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    step, best = 0, -math.inf
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        step, best = checkpoint["step"], checkpoint["best_score"]
        torch.set_rng_state(checkpoint["torch_rng_state"])
        log.info("resumed from step %d", step)
    if dist.world_size > 1:
        model = DistributedDataParallel(model, find_unused_parameters=True)

    writer = SummaryWriter(str(run_dir / "tb")) if dist.is_main else None
    log.info("%d training frames, %d steps per epoch, %d steps planned, stopping at %d, "
             "pose loss from step %d", len(train_set), batches_per_epoch, total_steps,
             stop_step, pose_start)
    progress = tqdm(total=stop_step, initial=step, disable=not dist.is_main, desc="pretrain")
    metrics: dict = {}
    while step < stop_step:
        epoch, skip = divmod(step, batches_per_epoch)
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        loader = DataLoader(train_set, batch_size=cfg.train.batch_size, drop_last=True,
                            sampler=_SkipSampler(sampler, skip * cfg.train.batch_size),
                            collate_fn=collate_pairs, num_workers=cfg.data.num_workers,
                            # own generator: iterators must not draw from the global RNG,
                            # or a resumed run would diverge from an uninterrupted one
                            generator=torch.Generator().manual_seed(cfg.seed + epoch))
        model.train()
        for batch in loader:
            batch = batch_to(batch, device)
            with torch.autocast(device.type, enabled=use_amp):
                outputs = model(batch, pose_loss_enabled=step >= pose_start)
            logging_now = (step + 1) % cfg.train.log_every == 0 or step + 1 == stop_step
            grad_norms = (feature_gradient_norms(outputs, _unwrap(model).loss_weights)
                          if logging_now else {})
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(outputs["loss"]).backward()
            if cfg.train.grad_clip_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            progress.update(1)
            if logging_now:
                scalars = all_reduce_mean({**_loss_scalars(outputs), **grad_norms}, device)
                if writer is not None:
                    for key, value in scalars.items():
                        writer.add_scalar(f"train/{key}", value, step)
                    writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                log.info("step %d %s", step,
                         " ".join(f"{k}={v:.4f}" for k, v in sorted(scalars.items())))
            if step >= stop_step:
                break
        epoch_done = step % batches_per_epoch == 0
        if dist.is_main:
            if epoch_done and (step // batches_per_epoch) % cfg.train.val_every_epochs == 0:
                metrics = evaluate_pretext(_unwrap(model), val_set, device,
                                           cfg.train.batch_size)
                for key, value in _scalar_items(metrics):
                    writer.add_scalar(f"val/{key}", value, step)
                log.info("validation at step %d: %s", step, json.dumps(metrics))
                if metrics["score"] > best:
                    best = metrics["score"]
                    _save(run_dir / "checkpoints" / "best.pt", cfg, model, optimizer,
                          scheduler, scaler, step, best, metrics)
            _save(run_dir / "checkpoints" / "last.pt", cfg, model, optimizer, scheduler,
                  scaler, step, best, metrics)
        barrier()
    progress.close()
    if dist.is_main:
        write_metrics_json(run_dir / "metrics.json",
                           {"step": step, "best_score": best, "last_validation": metrics})
        writer.close()
        log.info("run folder: %s", run_dir)
    return run_dir


def _load_initial_weights(model: CalibrationNet, path: str, load: bool = True
                          ) -> tuple[str, ...]:
    """Copy the `model` weights of checkpoint `path` into `model` (float16 ones are cast);
    return the names of the modules that start fresh. With `load=False` (a resumed run,
    whose own checkpoint holds the weights) only find those names.

    A module of `CalibrationNet.optional_modules` (the fine stage) that the checkpoint has
    no weights for at all starts fresh; a model with cosine similarity (W_f = I, no
    parameters) leaves the checkpoint's LTA weights out; any other difference is an error.
    """
    payload = load_checkpoint(path)
    if "model" not in payload:
        raise CheckpointError(f"{path}: checkpoint has no 'model' weights")
    state = payload["model"]
    if model.alignment.mode == "cosine":
        state = {k: v for k, v in state.items() if not k.startswith("alignment.")}
    fresh = [name for name in model.optional_modules
             if getattr(model, name) is not None
             and not any(key.startswith(f"{name}.") for key in state)]
    if not load:
        return tuple(fresh)
    own = model.state_dict()
    state = {**state, **{k: v for k, v in own.items() if k.split(".")[0] in fresh}}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the configured model: {err}") from err
    return tuple(fresh)


def _save(path: Path, cfg: PretrainConfig, model: torch.nn.Module, optimizer, scheduler,
          scaler, step: int, best: float, metrics: dict) -> None:
    save_checkpoint(path, model=_unwrap(model).state_dict(), optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), step=step,
                    best_score=best, config=to_dict(cfg), metrics=dict(metrics),
                    torch_rng_state=torch.get_rng_state())


def config_from_checkpoint(checkpoint: dict, overrides: list[str]) -> PretrainConfig:
    """The run's own config from a checkpoint, with `--set` overrides applied on top."""
    return from_dict(PretrainConfig, apply_overrides(checkpoint["config"], overrides))
