"""Schema of the data section of a pre-training run (`data:` in training/configs/*.yaml):
which frames, and how they become network inputs and training pairs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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
