"""Schema of the data section of a pre-training run (`data:` in training/configs/*.yaml):
which frames, and how they become network inputs and training pairs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from nclr_core.config import ConfigError, from_dict
from nclr_core.data.rosbag.messages import BagTopics
from nclr_core.data.rosbag.time_sync import DEFAULT_QUEUE_SIZE, DEFAULT_SLOP_S

DatasetName = Literal["synthetic", "semantickitti", "kitti_object", "nuscenes",
                      "nuscenes_keyframe", "rosbag"]


@dataclass
class RosbagConfig:
    """How `dataset: rosbag` reads ROS 2 bags (nclr_core.data.rosbag.dataset).

    Topic defaults are the names `nclr-bag convert` writes; the image topic may be recorded
    as `<image_topic>/compressed` (CompressedImage) instead. Images and clouds are paired as
    the calibration node pairs them (same slop and queue defaults). Splits: `train_bags` and
    `val_bags` name bag folders under `data.root`; when both are empty, every bag gives the
    first `train_fraction` of its time span to training and the rest to validation.
    """

    image_topic: str = BagTopics.image
    info_topic: str = BagTopics.info
    points_topic: str = BagTopics.points
    tf_static_topic: str = BagTopics.tf_static
    sync_slop_s: float = DEFAULT_SLOP_S
    sync_queue_size: int = DEFAULT_QUEUE_SIZE
    train_bags: list[str] = field(default_factory=list)
    val_bags: list[str] = field(default_factory=list)
    train_fraction: float = 0.8
    # the LiDAR's intensity full scale (1, 255, 65535, ...); 0: per bag, the smallest of
    # nclr_core.data.intensity.FULL_SCALES that holds all its clouds
    intensity_full_scale: float = 0.0
    # decoded frames; empty: $XDG_CACHE_HOME/nclr/rosbag (~/.cache/nclr/rosbag)
    cache_dir: str = ""


@dataclass
class PhotometricConfig:
    """Photometric augmentation of training images (`transforms.PhotometricJitter`: blur,
    brightness, contrast, gamma, noise). Off by default: its benefit on real images has not
    been measured yet."""

    enabled: bool = False
    brightness: float = 0.3
    contrast: float = 0.3
    gamma: float = 0.3
    noise_std: float = 0.02
    blur_probability: float = 0.3
    blur_sigma_px: float = 1.5


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
    photometric: PhotometricConfig = field(default_factory=PhotometricConfig)
    num_workers: int = 0
    val_max_frames: int | None = None
    # rosbag: `root` is one bag folder or a folder of bags; train_split / val_split are not
    # used (see RosbagConfig). T_cam_lidar comes from `T_cam_lidar` (4 x 4, LiDAR -> camera
    # optical frame), else `calibration` (a YAML/JSON file the node or `nclr-bag calibrate`
    # wrote), else the bag's /tf_static; only one of the first two may be set.
    rosbag: RosbagConfig = field(default_factory=RosbagConfig)
    calibration: str | None = None
    T_cam_lidar: list[list[float]] | None = None


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
