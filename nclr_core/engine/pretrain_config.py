"""Schema of a pre-training run (training/configs/*.yaml), validated by nclr_core.config."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

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
