"""Schema of a pre-training run (training/configs/*.yaml), validated by nclr_core.config."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

DatasetName = Literal["synthetic", "semantickitti", "kitti_object", "nuscenes",
                      "nuscenes_keyframe"]


@dataclass
class DataConfig:
    """Which frames, and how they become training pairs (METHOD.md §1, §6)."""

    dataset: DatasetName = "synthetic"
    root: str = "data/synthetic"
    # synthetic / semantickitti: sequence names; kitti_object: "training" / "testing";
    # nuscenes: scene names ("scene-0061") or tokens; val_split is required and disjoint
    # from train_split, an empty train_split = every other scene of `nuscenes_version`;
    # nuscenes_keyframe (one exported keyframe folder): camera channels (CAM_FRONT, ...).
    train_split: list[str] = field(default_factory=lambda: ["00"])
    val_split: list[str] = field(default_factory=lambda: ["01"])
    nuscenes_version: str = "v1.0-mini"
    camera: str = "image_2"  # nuscenes: CAM_FRONT, ...
    image_height: int = 160
    image_width: int = 512
    max_points: int = 40000
    # (x_min, y_min, z_min, x_max, y_max, z_max) m, LiDAR frame: the points kept, and the
    # point encoder's voxel grid (the model takes it from here).
    point_range: tuple[float, float, float, float, float, float] = (
        -51.2, -51.2, -3.0, 51.2, 51.2, 1.0)
    rotation_range_deg: float = 180.0
    translation_range_m: float = 15.0
    overlap_radius_cells: int = 1
    flip_probability: float = 0.0
    num_workers: int = 0
    val_max_frames: int | None = None


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
