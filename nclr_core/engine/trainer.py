"""Pre-training (METHOD.md §6): AdamW, cosine schedule with linear warm-up, pose loss after
a warm-up fraction, validation, `last`/`best` checkpoints, exact resume, DDP; the steps are
the shared training loop's (`nclr_core.engine.training_loop`).

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
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from torch.utils.tensorboard import SummaryWriter

from nclr_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from nclr_core.config import ConfigError, apply_overrides, from_dict, save_config, to_dict
from nclr_core.data.collate import collate_pairs
from nclr_core.data.datasets import PairDataset, build_pair_datasets
from nclr_core.engine.distributed import DistInfo, barrier, init_distributed
from nclr_core.engine.evaluation import evaluate_pretext
from nclr_core.engine.metrics_file import write_metrics_json
from nclr_core.engine.pretrain_config import PretrainConfig
from nclr_core.engine.run_dir import create_run_dir, setup_logging
from nclr_core.engine.training_loop import (
    Optimisation,
    TrainingHooks,
    cosine_with_warmup,
    run_loop,
    seed_everything,
)
from nclr_core.models.calibration_net import CalibrationNet, build_calibration_net

log = logging.getLogger("nclr.train")


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


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


FEATURE_KEYS = ("point_feats", "image_feats", "fine_image_feats")


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
    seed_everything(cfg.seed + dist.rank)
    model = build_model(cfg)
    fresh: tuple[str, ...] = ()
    # before the run folder exists: weights or data that cannot be used leave nothing
    # behind (building the data sets checks the splits, `check_splits`)
    if cfg.train.init_weights:
        fresh = _load_initial_weights(model, cfg.train.init_weights, load=checkpoint is None)
    setup_logging(None, dist.rank)  # the console until the run folder holds train.log
    train_set, val_set = build_pair_datasets(cfg.data, cfg.seed, validation=dist.is_main)
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
    opt = Optimisation(model, optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=use_amp),
                       cfg.train.grad_clip_norm, use_amp)
    step, best = 0, -math.inf
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        opt.load_state(checkpoint)
        step, best = checkpoint["step"], checkpoint["best_score"]
        torch.set_rng_state(checkpoint["torch_rng_state"])
        log.info("resumed from step %d", step)
    if dist.world_size > 1:
        opt.model = DistributedDataParallel(model, find_unused_parameters=True)

    writer = SummaryWriter(str(run_dir / "tb")) if dist.is_main else None
    log.info("%d training frames, %d steps per epoch, %d steps planned, stopping at %d, "
             "pose loss from step %d", len(train_set), batches_per_epoch, total_steps,
             stop_step, pose_start)

    def epoch_batches(epoch: int, skip: int) -> DataLoader:
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        return DataLoader(train_set, batch_size=cfg.train.batch_size, drop_last=True,
                          sampler=_SkipSampler(sampler, skip * cfg.train.batch_size),
                          collate_fn=collate_pairs, num_workers=cfg.data.num_workers,
                          # own generator: iterators must not draw from the global RNG,
                          # or a resumed run would diverge from an uninterrupted one
                          generator=torch.Generator().manual_seed(cfg.seed + epoch))

    hooks = _PretrainHooks(cfg, dist, run_dir, opt, writer, val_set, pose_start,
                           batches_per_epoch, best)
    step = run_loop(opt, hooks, epoch_batches, batches_per_epoch, step, stop_step, device,
                    cfg.train.log_every, writer, "pretrain", show_progress=dist.is_main)
    if dist.is_main:
        write_metrics_json(run_dir / "metrics.json", {"step": step, "best_score": hooks.best,
                                                      "last_validation": hooks.metrics})
        writer.close()
        log.info("run folder: %s", run_dir)
    return run_dir


class _PretrainHooks(TrainingHooks):
    """Pre-training's part of the loop: the pose-loss gate, the feature-gradient norms,
    validation every `val_every_epochs` epochs (`best.pt` on the score) and `last.pt` at
    each epoch's end (main process)."""

    def __init__(self, cfg: PretrainConfig, dist: DistInfo, run_dir: Path | None,
                 opt: Optimisation, writer: SummaryWriter | None, val_set: PairDataset | None,
                 pose_start: int, batches_per_epoch: int, best: float) -> None:
        self.cfg, self.dist, self.run_dir, self.opt = cfg, dist, run_dir, opt
        self.writer, self.val_set = writer, val_set
        self.pose_start, self.batches_per_epoch = pose_start, batches_per_epoch
        self.best, self.metrics = best, {}

    def forward(self, model: torch.nn.Module, batch: dict, step: int) -> dict:
        return model(batch, pose_loss_enabled=step >= self.pose_start)

    def extra_scalars(self, outputs: dict) -> dict[str, float]:
        return feature_gradient_norms(outputs, _unwrap(self.opt.model).loss_weights)

    def after_epoch(self, step: int) -> None:
        if self.dist.is_main:
            epoch_done = step % self.batches_per_epoch == 0
            if epoch_done and (step // self.batches_per_epoch) % self.cfg.train.val_every_epochs \
                    == 0:
                self._validate(step)
            self._save("last.pt", step)
        barrier()

    def _validate(self, step: int) -> None:
        model = _unwrap(self.opt.model)
        self.metrics = evaluate_pretext(model, self.val_set, self.dist.device,
                                        self.cfg.train.batch_size)
        for key, value in _scalar_items(self.metrics):
            self.writer.add_scalar(f"val/{key}", value, step)
        log.info("validation at step %d: %s", step, json.dumps(self.metrics))
        if self.metrics["score"] > self.best:
            self.best = self.metrics["score"]
            self._save("best.pt", step)

    def _save(self, name: str, step: int) -> None:
        save_checkpoint(self.run_dir / "checkpoints" / name,
                        model=_unwrap(self.opt.model).state_dict(), **self.opt.state(),
                        step=step, best_score=self.best, config=to_dict(self.cfg),
                        metrics=dict(self.metrics), torch_rng_state=torch.get_rng_state())


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


def config_from_checkpoint(checkpoint: dict, overrides: list[str]) -> PretrainConfig:
    """The run's own config from a checkpoint, with `--set` overrides applied on top."""
    return from_dict(PretrainConfig, apply_overrides(checkpoint["config"], overrides))
