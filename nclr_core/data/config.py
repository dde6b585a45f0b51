"""Schema of the data section of a pre-training run (`data:` in training/configs/*.yaml):
which frames, and how they become network inputs and training pairs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from nclr_core.config import ConfigError, from_dict

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


# What the network was trained on: a checkpoint's data section must state these.
NETWORK_FIELDS = ("image_height", "image_width", "max_points", "point_range")


def checkpoint_data_config(config: Any) -> DataConfig:
    """The typed `data` section of a checkpoint's resolved run config (`checkpoint["config"]`,
    written by the trainer). Fields it lacks take DataConfig's defaults, except
    `NETWORK_FIELDS`; ConfigError when there is no data section, one of those is missing,
    or a value does not fit the schema."""
    data = config.get("data") if isinstance(config, dict) else None
    if not isinstance(data, dict):
        raise ConfigError("the checkpoint has no config with a 'data' section")
    missing = [name for name in NETWORK_FIELDS if name not in data]
    if missing:
        raise ConfigError(f"the checkpoint's config 'data' lacks {', '.join(missing)}")
    return from_dict(DataConfig, data, "data")
