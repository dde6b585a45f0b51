"""Segmentation fine-tuning (METHOD.md §7): label subset, evaluation; the steps are the
shared training loop's (`nclr_core.engine.training_loop`).

`finetune(cfg, out_dir)` writes into `out_dir` (by default a new run folder
`<output_root>/<name>/<timestamp>`, the layout of pre-training runs): `config.yaml`
(resolved), `train.log`, `tb/` (TensorBoard scalars), `label_subset.json` (the labelled
scans used),
`checkpoints/last.pt` (atomic; also every `train.checkpoint_every` steps),
`checkpoints/best.pt` (the best validation mIoU so far) and `metrics.json`.

The schedule's length follows the label fraction (`plan_schedule`); the model is validated
(mIoU on `data.val_split`) `train.validations` times over it, the best validation's weights
are kept and training stops early after `train.patience` validations without a gain. The
kept checkpoint is then evaluated on `data.test_split` (held-out scenes) when one is set,
otherwise on the validation scans. `metrics.json` holds that evaluation (`miou`,
`per_class_iou` (class name -> IoU, null for classes absent from both prediction and ground
truth), `confusion_matrix` and, with the instance head, `pq`, `sq`, `rq`, `pq_things`,
`pq_stuff`, `per_class_pq`; see `nclr_core.engine.segmentation_eval`), `evaluated_on`,
`checkpoint_step`, `label_fraction`, `seed`, `init`, `num_labelled_frames`,
`num_train_frames`, `num_val_frames`, `steps` (trained), `schedule` (how its length was
chosen, `total_steps`, `stopped_at_step`, `stop_reason`) and `validation` (`best_miou`,
`best_step`, `history` of {step, miou}).

The checkpoints are segmentation checkpoints (`nclr_core.models.segmentation_checkpoint`).
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler
from torch.utils.tensorboard import SummaryWriter

from nclr_core.atomic_write import write_text_atomic
from nclr_core.checkpoint import load_checkpoint, save_checkpoint
from nclr_core.config import ConfigError, save_config, to_dict
from nclr_core.data.label_subsets import select_labelled_frames
from nclr_core.data.segmentation_dataset import (
    AugmentPoints,
    SegmentationDataset,
    collate_points,
    segmentation_transform,
)
from nclr_core.data.semantickitti import SEMANTIC_KITTI_CLASSES, SemanticKittiDataset
from nclr_core.engine.distributed import select_device
from nclr_core.engine.finetune_config import FinetuneConfig
from nclr_core.engine.metrics_file import write_metrics_json
from nclr_core.engine.run_dir import create_run_dir, setup_logging
from nclr_core.engine.segmentation_eval import evaluate_segmentation, evenly_spaced
from nclr_core.engine.training_loop import (
    Optimisation,
    TrainingHooks,
    cosine_with_warmup,
    run_loop,
    seed_everything,
)
from nclr_core.models.backbone_checkpoint import load_backbone
from nclr_core.models.segmentation import SegmentationNet
from nclr_core.models.segmentation_checkpoint import SEGMENTATION_KIND

log = logging.getLogger("nclr.finetune")

SCRATCH = "scratch"
# backbone kwargs that must agree between the fine-tune config and an --init checkpoint
ARCHITECTURE_KEYS = ("variant", "in_channels", "out_channels", "base_channels", "voxel_size")


def class_names(cfg: FinetuneConfig) -> list[str]:
    """The config's class names, or SemanticKITTI's 19 when it lists none."""
    names = list(cfg.model.class_names) or list(SEMANTIC_KITTI_CLASSES)
    if len(names) != cfg.model.num_classes:
        raise ConfigError(f"model.class_names has {len(names)} names for "
                          f"model.num_classes = {cfg.model.num_classes}")
    return names


def model_kwargs(cfg: FinetuneConfig) -> dict[str, Any]:
    """SegmentationNet kwargs (plain types) from the config."""
    m = cfg.model
    backbone = {"variant": m.point_variant, "in_channels": 4, "out_channels": m.channels,
                "voxel_size": m.voxel_size, "base_channels": m.point_base_channels,
                "point_range": [float(v) for v in cfg.data.point_range]}
    return {"backbone": backbone, "num_classes": m.num_classes, "ignore_index": m.ignore_index,
            "instance_head": m.instance_head, "thing_classes": list(m.thing_classes),
            "offset_loss_weight": m.offset_loss_weight,
            "cluster_bandwidth": m.cluster_bandwidth,
            "cluster_min_points": m.cluster_min_points}


def load_pretrained_backbone(model: SegmentationNet, backbone_kwargs: dict[str, Any],
                             path: str | os.PathLike) -> None:
    """Load the point encoder of a pre-training or backbone checkpoint into `model.backbone`
    (built from `backbone_kwargs`), strictly; raise ConfigError when the checkpoint's
    architecture (`ARCHITECTURE_KEYS`) differs."""
    state, kwargs = load_backbone(path)
    diff = {k: (backbone_kwargs[k], kwargs.get(k)) for k in ARCHITECTURE_KEYS
            if backbone_kwargs[k] != kwargs.get(k)}
    if diff:
        text = ", ".join(f"{k}: config {a!r} vs checkpoint {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(f"{path}: backbone differs from the fine-tune config ({text}); "
                          "set the model section to the pre-training values")
    model.backbone.load_state_dict(state, strict=True)


def build_model(cfg: FinetuneConfig) -> SegmentationNet:
    """SegmentationNet of the config, with the `init` checkpoint's backbone when given."""
    kwargs = model_kwargs(cfg)
    try:
        model = SegmentationNet(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model: {err}") from err
    if cfg.init != SCRATCH:
        load_pretrained_backbone(model, kwargs["backbone"], cfg.init)
    return model


def _reader(root: str, split: list[str]) -> SemanticKittiDataset:
    # synthetic data is written in the SemanticKITTI layout
    return SemanticKittiDataset(root, sequences=tuple(split))


def plan_schedule(cfg: FinetuneConfig, batches_per_epoch: int) -> dict[str, Any]:
    """The schedule's length (see `SegTrainConfig`): `source`, `table_epochs` (the paper's
    epochs of the label fraction, None unless used), `epoch_scale`, `epochs`,
    `batches_per_epoch`, `total_steps` (the cosine schedule's length) and `stop_step`
    (`train.max_steps` when smaller). Raises ConfigError when it is empty or the label
    fraction is not in `train.epochs_by_fraction`."""
    t = cfg.train
    plan: dict[str, Any] = {"table_epochs": None, "epoch_scale": None,
                            "batches_per_epoch": batches_per_epoch}
    if t.steps:
        plan.update(source="train.steps", epochs=t.steps / batches_per_epoch,
                    total_steps=t.steps)
    else:
        if t.epochs:
            plan.update(source="train.epochs", epochs=t.epochs)
        else:
            table = {float(k): int(v) for k, v in t.epochs_by_fraction.items()}
            match = [k for k in table if math.isclose(k, cfg.label_fraction, rel_tol=1e-9)]
            if not match:
                raise ConfigError(
                    f"label fraction {cfg.label_fraction:g} is not in train.epochs_by_fraction "
                    f"({', '.join(f'{k:g}' for k in sorted(table))}); add it or set "
                    "train.epochs")
            if t.epoch_scale <= 0:
                raise ConfigError(f"train.epoch_scale must be positive, got {t.epoch_scale}")
            epochs = max(1, round(table[match[0]] * t.epoch_scale))
            plan.update(source="train.epochs_by_fraction x train.epoch_scale",
                        table_epochs=table[match[0]], epoch_scale=t.epoch_scale, epochs=epochs)
        plan["total_steps"] = int(plan["epochs"]) * batches_per_epoch
    plan["stop_step"] = min(plan["total_steps"], t.max_steps or plan["total_steps"])
    if plan["stop_step"] < 1:
        raise ConfigError(f"nothing to train: train.epochs = {t.epochs}, train.steps = "
                          f"{t.steps}, train.max_steps = {t.max_steps}")
    if t.validations < 1:
        raise ConfigError(f"train.validations must be at least 1, got {t.validations}")
    if t.patience is not None and t.patience < 1:
        raise ConfigError(f"train.patience must be at least 1 or null, got {t.patience}")
    plan["validate_every"] = max(1, math.ceil(plan["total_steps"] / t.validations))
    return plan


class EarlyStopping:
    """Tracks the best validation mIoU; `update` says whether this one is a new best, and
    `exhausted` whether `patience` validations in a row brought no gain above
    `min_improvement` (never with patience None)."""

    def __init__(self, patience: int | None, min_improvement: float) -> None:
        self.patience, self.min_improvement = patience, min_improvement
        self.best: float | None = None
        self.best_step = 0
        self.since_best = 0

    def update(self, step: int, miou: float | None) -> bool:
        value = -math.inf if miou is None else miou
        if self.best is None or value > self.best + self.min_improvement:
            self.best, self.best_step, self.since_best = value, step, 0
            return True
        self.since_best += 1
        return False

    @property
    def exhausted(self) -> bool:
        return self.patience is not None and self.since_best >= self.patience


def _save(path: Path, model: SegmentationNet, cfg: FinetuneConfig, names: list[str],
          step: int, **extra: Any) -> None:
    save_checkpoint(path, kind=SEGMENTATION_KIND, model=model.state_dict(),
                    model_kwargs=model_kwargs(cfg), class_names=names, config=to_dict(cfg),
                    step=step, **extra)


def _eval_set(cfg: FinetuneConfig, root: str, split: list[str], limit: int | None
              ) -> tuple[SegmentationDataset, dict[str, Any]]:
    """All (or `limit` evenly spaced) scans of `split`, cropped to the point range, and a
    description for metrics.json."""
    reader = _reader(root, split)
    indices = evenly_spaced(len(reader), limit)
    dataset = SegmentationDataset(reader, indices,
                                  segmentation_transform(cfg.data.point_range, None, None),
                                  cfg.seed)
    return dataset, {"root": str(root), "split": list(split), "num_frames": len(indices)}


def finetune(cfg: FinetuneConfig, out_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Fine-tune as `cfg` says, writing into `out_dir` (see the module docstring), by
    default a new run folder `<output_root>/<name>/<timestamp>`.

    Returns the metrics written to `metrics.json`.
    """
    names = class_names(cfg)
    device = select_device(cfg.train.device)
    seed_everything(cfg.seed)
    # first: a wrong --init or class list fails before any data work or output folder
    model = build_model(cfg).to(device)
    if out_dir is None:
        out = create_run_dir(cfg.output_root, cfg.name)
    else:
        out = Path(out_dir)
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    setup_logging(out / "train.log")
    if cfg.init != SCRATCH:
        log.info("backbone initialised from %s", cfg.init)

    d = cfg.data
    train_reader = _reader(d.root, d.train_split)
    frames = train_reader.frames
    labelled = select_labelled_frames(frames, cfg.label_fraction, cfg.seed)
    write_text_atomic(out / "label_subset.json", json.dumps(
        {"label_fraction": cfg.label_fraction, "seed": cfg.seed, "level": "scene",
         "frames": [list(frames[i]) for i in labelled]}, indent=1))
    augment = AugmentPoints(math.radians(d.rotation_range_deg), d.scale_range,
                            d.flip_probability)
    train_set = SegmentationDataset(
        train_reader, labelled, segmentation_transform(d.point_range, d.max_points, augment),
        cfg.seed)
    val_set, val_info = _eval_set(cfg, d.root, d.val_split, d.val_max_frames)
    test = (_eval_set(cfg, d.test_root or d.root, d.test_split, d.test_max_frames)
            if d.test_split else None)

    batch_size = min(cfg.train.batch_size, len(train_set))
    plan = plan_schedule(cfg, len(train_set) // batch_size)
    total_steps, stop_step = plan["total_steps"], plan["stop_step"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr,
                                  weight_decay=cfg.train.weight_decay)
    warmup = max(1, int(cfg.train.warmup_fraction * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  cosine_with_warmup(total_steps, warmup))
    opt = Optimisation(model, optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=False),
                       cfg.train.grad_clip_norm)
    log.info("%d of %d training scans labelled (fraction %g, seed %d), batch %d; schedule "
             "%s epochs = %d steps (%s), stopping at %d at the latest; validation every %d "
             "steps on %d scans, patience %s; init %s", len(train_set), len(frames),
             cfg.label_fraction, cfg.seed, batch_size, plan["epochs"], total_steps,
             plan["source"], stop_step, plan["validate_every"], val_info["num_frames"],
             cfg.train.patience, cfg.init)

    def epoch_batches(epoch: int, skip: int) -> DataLoader:
        # fine-tuning does not resume: an epoch always starts at its first batch (skip 0)
        train_set.set_epoch(epoch)
        generator = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
        return DataLoader(train_set, batch_size=batch_size, drop_last=True,
                          sampler=RandomSampler(train_set, generator=generator),
                          collate_fn=collate_points, num_workers=d.num_workers)

    writer = SummaryWriter(str(out / "tb"))
    hooks = _FinetuneHooks(cfg, out, model, device, writer, names, val_set, plan)
    step = run_loop(opt, hooks, epoch_batches, plan["batches_per_epoch"], 0, stop_step, device,
                    cfg.train.log_every, writer, "finetune")
    stopper = hooks.stopper
    stop_reason = hooks.stop_reason or ("end of the schedule" if stop_step == total_steps
                                        else "train.max_steps")
    _save(out / "checkpoints" / "last.pt", model, cfg, names, step)
    log.info("stopped at step %d (%s); best validation mIoU %.4f at step %d", step,
             stop_reason, stopper.best, stopper.best_step)

    best = load_checkpoint(out / "checkpoints" / "best.pt", device)
    model.load_state_dict(best["model"], strict=True)
    eval_set, eval_info = test if test is not None else (val_set, val_info)
    metrics = evaluate_segmentation(model, eval_set, device, names, cfg.eval.pq_min_points)
    for key in ("miou", "pq", "sq", "rq"):
        if metrics.get(key) is not None:
            writer.add_scalar(f"eval/{key}", metrics[key], stopper.best_step)
    writer.close()
    metrics.update({
        "label_fraction": cfg.label_fraction, "seed": cfg.seed, "init": cfg.init,
        "num_labelled_frames": len(train_set), "num_train_frames": len(frames),
        "num_val_frames": val_info["num_frames"], "steps": step,
        "checkpoint": "checkpoints/best.pt", "checkpoint_step": stopper.best_step,
        "evaluated_on": {**eval_info, "set": "test" if test is not None else "validation"},
        "eval_points": "points inside data.point_range of each evaluated scan",
        "schedule": {**plan, "stopped_at_step": step, "stop_reason": stop_reason},
        "validation": {**val_info, "every_steps": plan["validate_every"],
                       "patience": cfg.train.patience, "best_miou": stopper.best,
                       "best_step": stopper.best_step, "history": hooks.history},
    })
    write_metrics_json(out / "metrics.json", metrics)
    log.info("mIoU %.4f on %s %s (%d scans), checkpoint of step %d; written to %s",
             metrics["miou"] if metrics["miou"] is not None else float("nan"),
             eval_info["root"], " ".join(eval_info["split"]), eval_info["num_frames"],
             stopper.best_step, out)
    return metrics


class _FinetuneHooks(TrainingHooks):
    """Fine-tuning's part of the loop: the labelled forward, `last.pt` every
    `checkpoint_every` steps, validation every `validate_every` steps (`best.pt` on the
    mIoU) and the early stop."""

    def __init__(self, cfg: FinetuneConfig, out: Path, model: SegmentationNet,
                 device: torch.device, writer: SummaryWriter, names: list[str],
                 val_set: SegmentationDataset, plan: dict[str, Any]) -> None:
        self.cfg, self.out, self.model, self.device, self.writer = cfg, out, model, device, writer
        self.names, self.val_set, self.plan = names, val_set, plan
        self.stopper = EarlyStopping(cfg.train.patience, cfg.train.min_improvement)
        self.history: list[dict[str, Any]] = []
        self.stop_reason = ""

    def forward(self, model: torch.nn.Module, batch: dict, step: int) -> dict:
        return model(batch["points"], batch["offset"], batch["labels"], batch["instances"])

    def after_step(self, step: int) -> bool:
        cfg, stopper = self.cfg, self.stopper
        stop_step = self.plan["stop_step"]
        if step % cfg.train.checkpoint_every == 0 and step < stop_step:
            _save(self.out / "checkpoints" / "last.pt", self.model, cfg, self.names, step)
        if step % self.plan["validate_every"] != 0 and step != stop_step:
            return False
        miou = evaluate_segmentation(self.model, self.val_set, self.device, self.names,
                                     cfg.eval.pq_min_points, panoptic=False)["miou"]
        self.history.append({"step": step, "miou": miou})
        if miou is not None:
            self.writer.add_scalar("val/miou", miou, step)
        if stopper.update(step, miou):
            _save(self.out / "checkpoints" / "best.pt", self.model, cfg, self.names, step,
                  val_miou=miou)
        log.info("validation at step %d: mIoU %s (best %.4f at step %d)", step,
                 "n/a" if miou is None else f"{miou:.4f}", stopper.best, stopper.best_step)
        if stopper.exhausted and step < stop_step:
            self.stop_reason = (f"early stop: no validation gain for {cfg.train.patience} "
                                "validations")
            return True
        return False
