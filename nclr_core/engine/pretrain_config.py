"""Schema of a pre-training run (training/configs/*.yaml), validated by nclr_core.config."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from nclr_core.data.config import DataConfig


@dataclass
class TrainConfig:
    """Optimisation (METHOD.md §5–§6)."""

    epochs: int = 50
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-3
    warmup_fraction: float = 0.05
    pose_loss_start_fraction: float = 0.2
    max_steps: int | None = None  # stop early (smoke tests, CPU budgets)
    # start from these weights (a pre-training or exported checkpoint of the same model, e.g.
    # the shipped one); optimizer and schedule start fresh. Not used on --resume.
    init_weights: str | None = None
    # with init_weights: the loaded parameters learn at lr * pretrained_lr_scale, the modules
    # the checkpoint lacks (the fine stage) at lr
    pretrained_lr_scale: float = 1.0
    grad_clip_norm: float | None = 10.0
    amp: bool = False  # CUDA only
    device: Literal["auto", "cpu", "cuda"] = "auto"
    log_every: int = 10
    val_every_epochs: int = 1


@dataclass
class PretrainConfig:
    name: str = "nclr"
    seed: int = 0
    output_root: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    # Keyword arguments of nclr_core.models.calibration_net.CalibrationNet, except
    # `point_range`, which comes from `data.point_range`.
    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
