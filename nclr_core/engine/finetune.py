"""Segmentation fine-tuning (METHOD.md §7): label subset, training loop, evaluation.

`finetune(cfg, out_dir)` writes into `out_dir`: `config.yaml` (resolved), `train.log`,
`tb/` (TensorBoard scalars), `label_subset.json` (the labelled scans used),
`checkpoints/last.pt` (atomic; also every `train.checkpoint_every` steps) and
`metrics.json`: `miou`, `per_class_iou` (class name -> IoU, null for classes absent from
both prediction and ground truth), `label_fraction`, `seed`, `init`,
`num_labelled_frames`, `num_train_frames`, `num_val_frames`, `steps`, `eval_points`, and
with the instance head `pq`, `sq`, `rq`, `pq_things`, `pq_stuff` (class means over the
thing / stuff classes seen), `per_class_pq`.

Segmentation checkpoints (`kind` = `SEGMENTATION_KIND`) hold `model` (state dict),
`model_kwargs` (SegmentationNet kwargs), `class_names`, `config`, `step`; they rebuild
the model without the config file (`load_segmentation_model`).
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from nclr_core.atomic_write import write_text_atomic
from nclr_core.config import ConfigError, save_config, to_dict
from nclr_core.data.label_subsets import select_labelled_frames
from nclr_core.data.segmentation_dataset import (
    AugmentPoints,
    SegmentationDataset,
    collate_points,
    segmentation_transform,
)
from nclr_core.data.semantickitti import SEMANTIC_KITTI_CLASSES, SemanticKittiDataset
from nclr_core.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from nclr_core.engine.finetune_config import FinetuneConfig
from nclr_core.engine.metrics_file import write_metrics_json
from nclr_core.engine.run_dir import setup_logging
from nclr_core.engine.trainer import cosine_with_warmup
from nclr_core.models.backbone_checkpoint import load_backbone
from nclr_core.models.segmentation import SegmentationNet
from nclr_core.segmentation_metrics import ConfusionMatrix, PanopticQuality

log = logging.getLogger("nclr.finetune")

SEGMENTATION_KIND = "nclr_segmentation"
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
        log.info("backbone initialised from %s", cfg.init)
    return model


def load_segmentation_model(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                            ) -> tuple[SegmentationNet, dict[str, Any]]:
    """(model in eval mode, checkpoint dict) from a fine-tuning checkpoint."""
    checkpoint = load_checkpoint(path, map_location)
    if checkpoint.get("kind") != SEGMENTATION_KIND:
        raise CheckpointError(f"{path}: not a segmentation checkpoint "
                              f"(kind {checkpoint.get('kind')!r})")
    model = SegmentationNet(**checkpoint["model_kwargs"])
    model.load_state_dict(checkpoint["model"], strict=True)
    return model.eval(), checkpoint


def _reader(cfg: FinetuneConfig, split: list[str]) -> SemanticKittiDataset:
    # synthetic data is written in the SemanticKITTI layout
    return SemanticKittiDataset(cfg.data.root, sequences=tuple(split))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but CUDA is not available")
    return torch.device(name)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


@torch.no_grad()
def evaluate_segmentation(model: SegmentationNet, dataset: SegmentationDataset,
                          device: torch.device, names: list[str],
                          pq_min_points: int) -> dict[str, Any]:
    """mIoU and per-class IoU (and PQ / SQ / RQ with the instance head) over `dataset`."""
    model.eval()
    confusion = ConfusionMatrix(model.num_classes, model.ignore_index)
    panoptic = (PanopticQuality(model.num_classes, model.ignore_index, pq_min_points)
                if model.has_instance_head else None)
    loader = DataLoader(dataset, batch_size=1, collate_fn=collate_points)
    for batch in tqdm(loader, desc="evaluate", leave=False):
        batch = _to(batch, device)
        out = model(batch["points"], batch["offset"])
        semantic = out["logits"].argmax(dim=1)
        confusion.update(semantic.cpu().numpy(), batch["labels"].cpu().numpy())
        if panoptic is not None:
            sem, inst = model.predict_instances(batch["points"], semantic, out["offsets"])
            panoptic.update(sem.cpu().numpy(), inst.cpu().numpy(),
                            batch["labels"].cpu().numpy(), batch["instances"].cpu().numpy())
    iou = confusion.iou()
    metrics: dict[str, Any] = {
        "miou": _nan_to_none(confusion.miou()),
        "per_class_iou": {n: _nan_to_none(v) for n, v in zip(names, iou, strict=True)},
    }
    if panoptic is not None:
        metrics.update({k: _nan_to_none(v) for k, v in panoptic.summary().items()})
        per_class_pq = panoptic.per_class()["pq"]
        things = np.isin(np.arange(model.num_classes), model.thing_classes.cpu().numpy())
        for key, group in (("pq_things", things), ("pq_stuff", ~things)):
            values = per_class_pq[group]
            metrics[key] = (float(np.nanmean(values)) if np.isfinite(values).any() else None)
        metrics["per_class_pq"] = {n: _nan_to_none(v) for n, v in
                                   zip(names, per_class_pq, strict=True)}
    return metrics


def _save(path: Path, model: SegmentationNet, cfg: FinetuneConfig, names: list[str],
          step: int) -> None:
    save_checkpoint(path, kind=SEGMENTATION_KIND, model=model.state_dict(),
                    model_kwargs=model_kwargs(cfg), class_names=names, config=to_dict(cfg),
                    step=step)


def finetune(cfg: FinetuneConfig, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Fine-tune as `cfg` says, writing into `out_dir` (see the module docstring).

    Returns the metrics written to `metrics.json`.
    """
    out = Path(out_dir)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    setup_logging(out / "train.log")
    names = class_names(cfg)
    device = _device(cfg.train.device)
    _seed_everything(cfg.seed)
    model = build_model(cfg).to(device)  # first: a wrong --init fails before any data work

    train_reader = _reader(cfg, cfg.data.train_split)
    frames = train_reader.frames
    labelled = select_labelled_frames(frames, cfg.label_fraction, cfg.seed)
    write_text_atomic(out / "label_subset.json", json.dumps(
        {"label_fraction": cfg.label_fraction, "seed": cfg.seed, "level": "scene",
         "frames": [list(frames[i]) for i in labelled]}, indent=1))
    d = cfg.data
    augment = AugmentPoints(math.radians(d.rotation_range_deg), d.scale_range,
                            d.flip_probability)
    train_set = SegmentationDataset(
        train_reader, labelled, segmentation_transform(d.point_range, d.max_points, augment),
        cfg.seed)
    val_reader = _reader(cfg, d.val_split)
    num_val = len(val_reader) if d.val_max_frames is None else min(len(val_reader),
                                                                   d.val_max_frames)
    val_set = SegmentationDataset(val_reader, range(num_val),
                                  segmentation_transform(d.point_range, None, None), cfg.seed)

    batch_size = min(cfg.train.batch_size, len(train_set))
    batches_per_epoch = len(train_set) // batch_size
    total_steps = cfg.train.steps or cfg.train.epochs * batches_per_epoch
    stop_step = min(total_steps, cfg.train.max_steps or total_steps)
    if stop_step < 1:
        raise ConfigError(f"nothing to train: train.epochs = {cfg.train.epochs}, train.steps "
                          f"= {cfg.train.steps}, train.max_steps = {cfg.train.max_steps}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr,
                                  weight_decay=cfg.train.weight_decay)
    warmup = max(1, int(cfg.train.warmup_fraction * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  cosine_with_warmup(total_steps, warmup))
    log.info("%d of %d training scans labelled (fraction %g, seed %d), batch %d, %d steps "
             "planned, stopping at %d; %d validation scans; init %s", len(train_set),
             len(frames), cfg.label_fraction, cfg.seed, batch_size, total_steps, stop_step,
             num_val, cfg.init)

    writer = SummaryWriter(str(out / "tb"))
    progress = tqdm(total=stop_step, desc="finetune")
    step = 0
    while step < stop_step:
        epoch = step // batches_per_epoch
        train_set.set_epoch(epoch)
        generator = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
        loader = DataLoader(train_set, batch_size=batch_size, drop_last=True,
                            sampler=RandomSampler(train_set, generator=generator),
                            collate_fn=collate_points, num_workers=d.num_workers)
        model.train()
        for batch in loader:
            batch = _to(batch, device)
            outputs = model(batch["points"], batch["offset"])
            losses = model.loss(outputs, batch["points"], batch["offset"], batch["labels"],
                                batch["instances"])
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if cfg.train.grad_clip_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            progress.update(1)
            if step % cfg.train.log_every == 0 or step == stop_step:
                scalars = {k: float(v.detach()) for k, v in losses.items()}
                for key, value in scalars.items():
                    writer.add_scalar(f"train/{key}", value, step)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                log.info("step %d %s", step,
                         " ".join(f"{k}={v:.4f}" for k, v in sorted(scalars.items())))
            if step % cfg.train.checkpoint_every == 0 and step < stop_step:
                _save(out / "checkpoints" / "last.pt", model, cfg, names, step)
            if step >= stop_step:
                break
    progress.close()
    _save(out / "checkpoints" / "last.pt", model, cfg, names, step)

    metrics = evaluate_segmentation(model, val_set, device, names, cfg.eval.pq_min_points)
    for key in ("miou", "pq", "sq", "rq"):
        if metrics.get(key) is not None:
            writer.add_scalar(f"val/{key}", metrics[key], step)
    writer.close()
    metrics.update({
        "label_fraction": cfg.label_fraction, "seed": cfg.seed, "init": cfg.init,
        "num_labelled_frames": len(train_set), "num_train_frames": len(frames),
        "num_val_frames": num_val, "steps": step,
        "eval_points": "points inside data.point_range of each validation scan",
    })
    write_metrics_json(out / "metrics.json", metrics)
    log.info("mIoU %.4f over %d validation scans; written to %s",
             metrics["miou"] if metrics["miou"] is not None else float("nan"), num_val, out)
    return metrics
