"""Schema of a segmentation fine-tuning run (training/configs/finetune_*.yaml)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from nclr_core.data.semantickitti import IGNORE_INDEX

Range6 = tuple[float, float, float, float, float, float]


@dataclass
class SegDataConfig:
    """Which scans, and how they are fed to the backbone.

    `point_range` crops the points (training and evaluation: metrics count the points
    inside it) and sets the backbone's voxel grid. It may differ from the pre-training
    range: the convolution weights do not depend on the grid extent.
    """

    dataset: Literal["synthetic", "semantickitti"] = "synthetic"
    root: str = "data/synthetic"
    train_split: list[str] = field(default_factory=lambda: ["00"])
    val_split: list[str] = field(default_factory=lambda: ["01"])
    point_range: Range6 = (-51.2, -51.2, -4.0, 51.2, 51.2, 4.0)
    max_points: int = 80000  # training cap per scan (uniform draw); evaluation keeps all
    # validation (checkpoint selection, early stop): at most this many scans of val_split,
    # evenly spaced over it (None: all)
    val_max_frames: int | None = None
    # held-out evaluation of the selected checkpoint, e.g. scenes of another seed: scans of
    # test_split under test_root (None: root); empty test_split: the validation scans are
    # the ones reported
    test_root: str | None = None
    test_split: list[str] = field(default_factory=list)
    test_max_frames: int | None = None
    num_workers: int = 0
    # training augmentation, applied before the crop: rotation about z, uniform in
    # [-rotation_range_deg, rotation_range_deg]; isotropic scale in scale_range; mirror
    # y -> -y with flip_probability.
    rotation_range_deg: float = 180.0
    scale_range: tuple[float, float] = (0.95, 1.05)
    flip_probability: float = 0.5


@dataclass
class SegModelConfig:
    """The backbone (named as in the pre-training config's `model`) and the heads.

    With `--init CHECKPOINT` the backbone values must equal the checkpoint's, so that a
    scratch and a pre-trained run differ only in their initial weights.
    """

    point_variant: str = "minkunet18"
    point_base_channels: int = 32
    channels: int = 64
    voxel_size: float = 0.05
    num_classes: int = 19
    ignore_index: int = IGNORE_INDEX
    class_names: list[str] = field(default_factory=list)  # empty: SemanticKITTI's 19
    instance_head: bool = False
    thing_classes: list[int] = field(default_factory=lambda: list(range(8)))
    offset_loss_weight: float = 1.0
    cluster_bandwidth: float = 1.2
    cluster_min_points: int = 50


def paper_epochs_by_fraction() -> dict[float, int]:
    """The paper's fine-tuning epochs per label fraction (METHOD.md §7)."""
    return {0.001: 1000, 0.01: 500, 0.1: 100, 0.5: 50, 1.0: 30}


@dataclass
class SegTrainConfig:
    """Optimisation (METHOD.md §7): AdamW, cosine schedule with linear warm-up; validation
    every so often, the best validation mIoU's checkpoint kept, early stop.

    The schedule's length, first that is set: `steps` (optimiser steps, the same compute at
    every label fraction), `epochs`, else `epochs_by_fraction[label_fraction]` times
    `epoch_scale` (the paper's epochs, shortened by one common factor), at least one epoch.
    """

    epochs: int | None = None
    epochs_by_fraction: dict[float, int] = field(default_factory=paper_epochs_by_fraction)
    epoch_scale: float = 1.0
    steps: int | None = None
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-3
    warmup_fraction: float = 0.05
    max_steps: int | None = None  # stop early, schedule unchanged (smoke tests)
    grad_clip_norm: float | None = 10.0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    log_every: int = 10
    checkpoint_every: int = 500  # steps; the last checkpoint is always written
    validations: int = 10  # evenly spaced over the planned schedule (and at the last step)
    # stop after this many validations without an mIoU gain above min_improvement
    # (null: run the whole schedule)
    patience: int | None = 3
    min_improvement: float = 0.0


@dataclass
class SegEvalConfig:
    pq_min_points: int = 50  # SemanticKITTI panoptic protocol


@dataclass
class FinetuneConfig:
    name: str = "finetune"
    seed: int = 0
    output_root: str = "runs"  # runs go to <output_root>/<name>/<timestamp> unless --out
    label_fraction: float = 1.0  # share of the labelled training scans used (scene level)
    init: str = "scratch"  # or a pre-training / backbone checkpoint path
    data: SegDataConfig = field(default_factory=SegDataConfig)
    model: SegModelConfig = field(default_factory=SegModelConfig)
    train: SegTrainConfig = field(default_factory=SegTrainConfig)
    eval: SegEvalConfig = field(default_factory=SegEvalConfig)
