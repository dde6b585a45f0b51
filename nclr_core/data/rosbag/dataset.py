"""ROS 2 bags as a training data set: one bag or a folder of bags -> reader sample dicts.

The samples are those of the other readers (`nclr_core.data`): `image` uint8 (H, W, 3) RGB
(rectified to the pinhole camera of `K`), `points` float32 (N, 4) x y z intensity in the
LiDAR frame (intensity divided by the LiDAR's full scale: 0-1), `K` (3, 3), `T_cam_lidar`
(4, 4) (LiDAR -> camera optical frame), `stamp` (cloud, s), `camera_stamp`, `camera_frame`,
`lidar_frame`, `sequence` (the bag folder name) and `frame_id` (the pair's index in its bag).
Frames come from the cache of decoded pairs (`frame_cache`), built on first use.

`T_cam_lidar`, in order: the one given (`data.T_cam_lidar`, or the file `data.calibration`),
the bag's /tf_static transform of the pair's camera and LiDAR frames received before the
pair, the chain of /tf_static transforms linking the two frames (`tf_tree`); a frame pair
that none of them gives is an error naming the three ways to give one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from nclr_core.data.intensity import full_scale_of
from nclr_core.data.rosbag.frame_cache import CachedBag, cached_frames
from nclr_core.data.rosbag.messages import BagError, BagTopics
from nclr_core.data.rosbag.tf_tree import lookup_transform
from nclr_core.data.rosbag.time_sync import DEFAULT_QUEUE_SIZE, DEFAULT_SLOP_S

Part = Literal["train", "val"]
DEFAULT_TOPICS = BagTopics()


@dataclass(frozen=True)
class BagSplit:
    """Which frames a part takes: named bags whole (`bags`), or else every bag's first
    `train_fraction` of its time span (train) or the rest (val)."""

    part: Part
    train_fraction: float = 0.8
    bags: tuple[str, ...] = ()


def find_bags(root: str | Path) -> list[Path]:
    """[root] when `root` is a bag (it holds metadata.yaml), else its sub-folders that are
    bags, by name; BagError when there are none."""
    root = Path(root)
    if (root / "metadata.yaml").is_file():
        return [root]
    if not root.is_dir():
        raise BagError(f"{root}: data.root not found" if not root.exists()
                       else f"{root}: data.root is a file; give a bag folder or a folder of "
                            "bags")
    bags = sorted(p for p in root.iterdir() if (p / "metadata.yaml").is_file())
    if not bags:
        raise BagError(f"{root}: neither a rosbag2 bag (no metadata.yaml) nor a folder of "
                       "bags")
    return bags


def _in_part(stamps: np.ndarray, split: BagSplit) -> np.ndarray:
    """Mask of the frames of one bag (cloud stamps, s) that the time split gives `part`."""
    cut = stamps.min() + split.train_fraction * (stamps.max() - stamps.min())
    return stamps <= cut if split.part == "train" else stamps > cut


class RosbagDataset:
    """Paired frames of the bags under `root` (see the module docstring), one part of them.

    `topics`, `slop`, `queue_size`: what to read and how to pair (the node's pairing);
    `T_cam_lidar`: the calibration to use (None: the bags' /tf_static);
    `intensity_full_scale`: the LiDAR's (None: per bag, from its clouds);
    `cache_root`: where decoded frames are kept (None: `frame_cache.default_cache_root()`).
    """

    def __init__(self, root: str | Path, split: BagSplit, topics: BagTopics = DEFAULT_TOPICS,
                 slop: float = DEFAULT_SLOP_S, queue_size: int = DEFAULT_QUEUE_SIZE,
                 T_cam_lidar: np.ndarray | None = None,
                 intensity_full_scale: float | None = None,
                 cache_root: str | Path | None = None) -> None:
        if not 0.0 < split.train_fraction < 1.0:
            raise ValueError(f"train_fraction must lie in (0, 1), got {split.train_fraction}")
        bags = find_bags(root)
        if split.bags:
            by_name = {bag.name: bag for bag in bags}
            missing = [name for name in split.bags if name not in by_name]
            if missing:
                raise BagError(f"{root}: no bag(s) {missing} (bags: {sorted(by_name)})")
            bags = [by_name[name] for name in split.bags]
        self.root = Path(root)
        self.split = split
        self.T_cam_lidar = None if T_cam_lidar is None else np.asarray(T_cam_lidar, float)
        self.cached: list[CachedBag] = [
            cached_frames(bag, topics, slop, queue_size, cache_root) for bag in bags]
        self.full_scales = [intensity_full_scale or self._full_scale(c) for c in self.cached]
        self.frames: list[tuple[int, int]] = []  # (bag, position in its index)
        for b, cached in enumerate(self.cached):
            positions = np.arange(len(cached.index["frames"]))
            if not split.bags:
                stamps = np.array([f["stamp"] for f in cached.index["frames"]])
                positions = positions[_in_part(stamps, split)]
            self.frames += [(b, int(p)) for p in positions]
        if not self.frames:
            raise BagError(
                f"{root}: no {split.part} frames (the {split.part} part of the time split of "
                f"{[c.bag.name for c in self.cached]} holds no pair; a bag needs pairs at two "
                "stamps or more, or name bags in data.rosbag.train_bags / val_bags)")
        self._transforms = [self._calibrations(c) for c in self.cached]

    @staticmethod
    def _full_scale(cached: CachedBag) -> float:
        try:
            return full_scale_of(np.array([cached.index["intensity_max"]]))
        except ValueError as err:
            raise BagError(f"{cached.bag}: {err} (data.rosbag.intensity_full_scale)") from err

    def _calibrations(self, cached: CachedBag) -> list[np.ndarray]:
        """T_cam_lidar of every frame of a bag (see the module docstring)."""
        tf_static = {(t["parent"], t["child"]): np.array(t["T_parent_child"])
                     for t in cached.index["tf_static"]}
        chains: dict[tuple[str, str], np.ndarray | None] = {}
        out = []
        for frame in cached.index["frames"]:
            if self.T_cam_lidar is not None:
                out.append(self.T_cam_lidar)
            elif frame["T_cam_lidar"] is not None:
                out.append(np.array(frame["T_cam_lidar"], dtype=np.float64))
            else:
                frames = (frame["camera_frame"], frame["lidar_frame"])
                if frames not in chains:
                    chains[frames] = lookup_transform(tf_static, *frames)
                T = chains[frames]
                if T is None:
                    raise BagError(
                        f"{cached.bag}: no calibration of camera frame "
                        f"{frame['camera_frame']!r} and LiDAR frame {frame['lidar_frame']!r}: "
                        f"the bag's /tf_static does not link them (its transforms: "
                        f"{sorted(tf_static) or 'none'}); give data.calibration=FILE (a "
                        "YAML/JSON the node or nclr-bag calibrate wrote) or data.T_cam_lidar")
                out.append(T)
        return out

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} frames")
        b, position = self.frames[index]
        cached = self.cached[b]
        arrays = cached.load(position)
        points = arrays["points"].copy()
        points[:, 3] /= self.full_scales[b]
        frame = cached.index["frames"][position]
        return {
            "image": arrays["image"],
            "points": points,
            "K": arrays["K"],
            "T_cam_lidar": self._transforms[b][position].copy(),
            "stamp": frame["stamp"],
            "camera_stamp": frame["camera_stamp"],
            "camera_frame": frame["camera_frame"],
            "lidar_frame": frame["lidar_frame"],
            "sequence": cached.bag.name,
            "frame_id": str(position),
        }
