"""Readers by name, and datasets that turn reader samples into training pairs."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from nclr_core.config import ConfigError
from nclr_core.data.config import DataConfig
from nclr_core.data.kitti import KittiObjectDataset
from nclr_core.data.nuscenes import NuScenesDataset, resolve_scenes
from nclr_core.data.nuscenes_keyframe import NuScenesKeyframeDataset
from nclr_core.data.pairs import PairSampler
from nclr_core.data.rosbag.dataset import BagSplit, RosbagDataset
from nclr_core.data.rosbag.messages import BagTopics
from nclr_core.data.semantickitti import SemanticKittiDataset
from nclr_core.data.transforms import (
    RNG_KEY,
    CenterCrop,
    Compose,
    CropPointRange,
    NormalizeImage,
    PhotometricJitter,
    RandomCrop,
    RandomHorizontalFlip,
    ResizeToCover,
    Sample,
    SubsamplePoints,
    sample_rng,
)
from nclr_core.io.calibration_files import CalibrationRecord, load_calibration_file


class _Concat:
    """Several readers seen as one (e.g. one kitti_object reader per split)."""

    def __init__(self, readers: list[Any]) -> None:
        self.readers = readers

    def __len__(self) -> int:
        return sum(len(r) for r in self.readers)

    def __getitem__(self, index: int) -> Sample:
        for reader in self.readers:
            if index < len(reader):
                return reader[index]
            index -= len(reader)
        raise IndexError(index)


def given_calibration(cfg: DataConfig) -> np.ndarray | None:
    """T_cam_lidar (4, 4) given by `data.T_cam_lidar` or the file `data.calibration`, or None
    (rosbag only; ConfigError when both are set or the value is unusable)."""
    if cfg.calibration is not None and cfg.T_cam_lidar is not None:
        raise ConfigError("data.calibration and data.T_cam_lidar are both set: give one")
    try:
        if cfg.calibration is not None:
            return load_calibration_file(cfg.calibration, "data.calibration file")
        if cfg.T_cam_lidar is not None:
            return CalibrationRecord(np.array(cfg.T_cam_lidar), "camera", "lidar").T_cam_lidar
    except ValueError as err:
        raise ConfigError(f"data.{'calibration' if cfg.calibration else 'T_cam_lidar'}: "
                          f"{err}") from err
    return None


def rosbag_reader(cfg: DataConfig, train: bool) -> RosbagDataset:
    """The bags of `cfg.root`, training or validation part (see RosbagConfig)."""
    bags = cfg.rosbag
    names = bags.train_bags if train else bags.val_bags
    split = BagSplit("train" if train else "val", bags.train_fraction, tuple(names))
    topics = BagTopics(bags.image_topic, bags.info_topic, bags.points_topic,
                       bags.tf_static_topic)
    return RosbagDataset(cfg.root, split, topics, bags.sync_slop_s, bags.sync_queue_size,
                         given_calibration(cfg), bags.intensity_full_scale or None,
                         bags.cache_dir or None)


def build_reader(cfg: DataConfig, train: bool, exclude: list[str] | None = None) -> Any:
    """The reader of `cfg.dataset` over its training or validation split (see DataConfig
    for what a split names); `exclude` (nuscenes only) drops those scenes."""
    if exclude and cfg.dataset != "nuscenes":
        raise ValueError(f"exclude is for nuscenes only, not {cfg.dataset!r}")
    if cfg.dataset == "rosbag":
        return rosbag_reader(cfg, train)
    split = cfg.train_split if train else cfg.val_split
    if cfg.dataset in ("synthetic", "semantickitti"):
        return SemanticKittiDataset(cfg.root, sequences=tuple(split), camera=cfg.camera)
    if cfg.dataset == "kitti_object":
        return _Concat([KittiObjectDataset(cfg.root, split=s) for s in split])
    if cfg.dataset == "nuscenes_keyframe":
        return NuScenesKeyframeDataset(cfg.root, cameras=split)
    if cfg.dataset == "nuscenes":
        return NuScenesDataset(cfg.root, version=cfg.nuscenes_version, camera=cfg.camera,
                               scenes=split, exclude_scenes=exclude or ())
    raise ValueError(f"unknown dataset {cfg.dataset!r}")


def pair_transform(cfg: DataConfig, train: bool) -> Compose:
    """Crop/subsample points, fit the image to the network size (training: random crop,
    flip, photometric jitter when enabled), sample the pair, normalise."""
    H, W = cfg.image_height, cfg.image_width
    x0, y0, z0, x1, y1, z1 = cfg.point_range
    steps = [CropPointRange((x0, x1), (y0, y1), (z0, z1)), SubsamplePoints(cfg.max_points),
             ResizeToCover(H, W), RandomCrop(H, W) if train else CenterCrop(H, W)]
    if train and cfg.flip_probability > 0:
        steps.append(RandomHorizontalFlip(cfg.flip_probability))
    jitter = cfg.photometric
    if train and jitter.enabled:
        steps.append(PhotometricJitter(jitter.brightness, jitter.contrast, jitter.gamma,
                                       jitter.noise_std, jitter.blur_probability,
                                       jitter.blur_sigma_px))
    steps += [PairSampler(math.radians(cfg.rotation_range_deg), cfg.translation_range_m,
                          cfg.overlap_radius_cells), NormalizeImage()]
    return Compose(steps)


class PairDataset(Dataset):
    """Reader samples through a transform, with randomness fixed by (seed, epoch, index)."""

    def __init__(self, reader: Any, transform: Compose, seed: int,
                 max_frames: int | None = None) -> None:
        self.reader = reader
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.length = len(reader) if max_frames is None else min(len(reader), max_frames)
        if self.length == 0:
            raise ValueError("the dataset split holds no frames")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Sample:
        sample = self.reader[index]
        sample[RNG_KEY] = sample_rng(self.seed, self.epoch, index)
        sample = self.transform(sample)
        sample.pop(RNG_KEY)
        return sample


def _check_rosbag(cfg: DataConfig) -> None:
    """ConfigError for rosbag splits that name bags wrongly or a calibration that cannot be
    used; for data.calibration / data.T_cam_lidar set for another dataset."""
    if cfg.dataset != "rosbag":
        if cfg.calibration is not None or cfg.T_cam_lidar is not None:
            raise ConfigError(f"data.calibration and data.T_cam_lidar apply to rosbag only; "
                              f"{cfg.dataset} frames carry their calibration")
        return
    bags = cfg.rosbag
    if bool(bags.train_bags) != bool(bags.val_bags):
        raise ConfigError("data.rosbag.train_bags and val_bags: name bags for both, or for "
                          "neither (the time split)")
    shared = sorted(set(bags.train_bags) & set(bags.val_bags))
    if shared:
        raise ConfigError(f"data.rosbag.val_bags shares bag(s) {shared} with train_bags")
    if not 0.0 < bags.train_fraction < 1.0:
        raise ConfigError(f"data.rosbag.train_fraction must lie in (0, 1), got "
                          f"{bags.train_fraction}")
    given_calibration(cfg)


def check_splits(cfg: DataConfig) -> None:
    """ConfigError unless a nuscenes config holds out validation scenes: `val_split` must
    name scenes (tokens or names) that `train_split` does not; unless rosbag splits name
    disjoint bags (or none) and a given calibration can be used. Others pass as they are.
    """
    _check_rosbag(cfg)
    if cfg.dataset != "nuscenes":
        return
    if not cfg.val_split:
        raise ConfigError(
            "data.val_split is empty: name held-out nuScenes scenes (e.g. [scene-0103, "
            "scene-0916], the v1.0-mini val scenes); without them validation would see the "
            "training scenes")
    tokens = {}
    for key in ("train_split", "val_split"):
        try:
            tokens[key] = resolve_scenes(cfg.root, cfg.nuscenes_version, getattr(cfg, key))
        except ValueError as err:
            raise ConfigError(f"data.{key}: {err}") from err
    train = set(tokens["train_split"])
    shared = [entry for entry, token in zip(cfg.val_split, tokens["val_split"], strict=True)
              if token in train]
    if shared:
        raise ConfigError(f"data.val_split shares scene(s) {shared} with data.train_split: a "
                          "validation scene must not be trained on")


def build_pair_dataset(cfg: DataConfig, train: bool, seed: int) -> PairDataset:
    """Training pairs (random crops, fresh pairs each epoch) or fixed validation pairs.

    nuscenes: `check_splits` first; an empty `train_split` trains on every scene of the
    version but the `val_split` ones.
    """
    check_splits(cfg)
    return _pair_dataset(cfg, train, seed)


def build_pair_datasets(cfg: DataConfig, seed: int, validation: bool = True
                        ) -> tuple[PairDataset, PairDataset | None]:
    """The training pairs and (when `validation`) the validation pairs, as
    `build_pair_dataset` builds them, with the splits checked once."""
    check_splits(cfg)
    return (_pair_dataset(cfg, True, seed),
            _pair_dataset(cfg, False, seed) if validation else None)


def _pair_dataset(cfg: DataConfig, train: bool, seed: int) -> PairDataset:
    exclude = (cfg.val_split if cfg.dataset == "nuscenes" and train and not cfg.train_split
               else None)
    max_frames = None if train else cfg.val_max_frames
    return PairDataset(build_reader(cfg, train, exclude), pair_transform(cfg, train), seed,
                       max_frames)
