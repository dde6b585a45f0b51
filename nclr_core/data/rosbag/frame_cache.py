"""Decoded frames of a bag on disk, so that a bag is decoded once, not every epoch.

`cached_frames` decodes the bag's paired frames (`BagFrames`: the node's pairing) into a
cache folder, one `NNNNNN.npz` per pair (`image` uint8 (H, W, 3) RGB rectified to the
pinhole camera of `K` (`rectify.rectify_image`), `points` float32 (N, 4) x y z intensity
as recorded, finite points only, `K` (3, 3)) and `index.json` (per pair: the npz name,
`stamp` (cloud, s), `camera_stamp` (s), `camera_frame`, `lidar_frame`, `T_cam_lidar` from
the bag's /tf_static when a transform of that frame pair came before the pair, else null;
for the bag: the last /tf_static transform of every frame pair, the largest intensity).

The folder is named after the bag and a key of everything its content depends on (the bag
folder's absolute path, its metadata.yaml, the size and modification time of its storage
files, the topics, the pairing settings, CACHE_VERSION), so a changed bag or setting gets a
new cache. It is written in a hidden temporary folder beside it and renamed into place when
complete: a cache is whole or absent. Temporary folders of a killed build are removed by the
next build.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from nclr_core.atomic_write import remove_stale_temporaries, temp_prefix
from nclr_core.data.rosbag.messages import BagError, BagTopics
from nclr_core.data.rosbag.reader import BagFrames, open_bag
from nclr_core.data.rosbag.rectify import rectify_image

LOG = logging.getLogger("nclr.rosbag")

CACHE_VERSION = 1
INDEX = "index.json"
# The data.rosbag options naming the image, CameraInfo and PointCloud2 topics.
TOPIC_OPTIONS = ("data.rosbag.image_topic", "data.rosbag.info_topic",
                 "data.rosbag.points_topic")


def default_cache_root() -> Path:
    """$XDG_CACHE_HOME/nclr/rosbag, or ~/.cache/nclr/rosbag."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nclr" / "rosbag"


@dataclass(frozen=True)
class CachedBag:
    """A bag's decoded frames: the cache `folder`, its `index` (see the module docstring)
    and whether this call decoded the bag (`decoded`; False: the cache was reused)."""

    bag: Path
    folder: Path
    index: dict[str, Any]
    decoded: bool

    def load(self, position: int) -> dict[str, np.ndarray]:
        """Arrays (`image`, `points`, `K`) of frame `position` of the index."""
        path = self.folder / self.index["frames"][position]["file"]
        try:
            with np.load(path) as npz:
                return {key: npz[key] for key in ("image", "points", "K")}
        except (OSError, ValueError, KeyError) as err:
            raise BagError(f"{path}: cached frame of {self.bag} unreadable ({err}); delete "
                           f"{self.folder} to decode the bag again") from err


def cache_key(bag: Path, topics: BagTopics, slop: float, queue_size: int) -> str:
    """Hex digest of what the decoded frames of `bag` depend on (module docstring)."""
    bag = bag.resolve()
    digest = hashlib.sha256()
    digest.update(f"v{CACHE_VERSION}|{bag}|{topics}|{slop!r}|{queue_size}|".encode())
    meta = bag / "metadata.yaml"
    digest.update(meta.read_bytes() if meta.is_file() else b"")
    for file in sorted(bag.iterdir()):
        if file.is_file() and file.name != "metadata.yaml":
            stat = file.stat()
            digest.update(f"|{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _message_count(bag: Path, topic: str) -> int | None:
    with open_bag(bag) as reader:
        counts = [c.msgcount for c in reader.connections if c.topic == topic]
    return sum(counts) if counts else None


def _decode(bag: Path, staging: Path, topics: BagTopics, slop: float,
            queue_size: int) -> dict[str, Any]:
    """Decode every pair of `bag` into `staging`; the index (module docstring)."""
    frames = BagFrames(bag, topics, slop, queue_size, topic_options=TOPIC_OPTIONS)
    entries: list[dict[str, Any]] = []
    intensity_max = 0.0
    progress = tqdm(frames, desc=f"decoding {bag.name}", unit="pair", disable=None,
                    total=_message_count(bag, topics.points))
    for sample in progress:
        points = sample["points"][np.all(np.isfinite(sample["points"]), axis=1)]
        try:
            image = rectify_image(sample["image"], sample["camera"])
        except ValueError as err:
            raise BagError(f"{bag}: pair {len(entries)} (stamp {sample['stamp']:.3f} s): "
                           f"{err}") from err
        name = f"{len(entries):06d}.npz"
        np.savez(staging / name, image=image, points=points, K=sample["K"])
        if len(points):
            intensity_max = max(intensity_max, float(points[:, 3].max()))
        T = sample.get("T_cam_lidar")
        entries.append({"file": name, "stamp": sample["stamp"],
                        "camera_stamp": sample["camera_stamp"],
                        "camera_frame": sample["camera_frame"],
                        "lidar_frame": sample["lidar_frame"],
                        "T_cam_lidar": None if T is None else T.tolist()})
    progress.close()
    if not entries:
        raise BagError(f"{bag}: no image/cloud pairs within {slop} s (sync_slop_s) "
                       f"({frames.counters}, images before any CameraInfo: "
                       f"{frames.images_without_info})")
    return {"version": CACHE_VERSION, "bag": str(bag.resolve()), "frames": entries,
            "tf_static": [{"parent": parent, "child": child, "T_parent_child": T.tolist()}
                          for (parent, child), T in frames.tf_static.items()],
            "intensity_max": intensity_max}


def _read_index(folder: Path) -> dict[str, Any] | None:
    try:
        index = json.loads((folder / INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return index if index.get("version") == CACHE_VERSION else None


def cached_frames(bag: str | Path, topics: BagTopics, slop: float, queue_size: int,
                  cache_root: str | Path | None = None) -> CachedBag:
    """The decoded frames of `bag`, decoded now (with a progress bar) unless cached.

    `cache_root`: the folder holding the caches (None: `default_cache_root()`). Raises
    BagError for a bag that cannot be read, lacks a topic or has no pairs.
    """
    bag = Path(bag)
    root = Path(cache_root) if cache_root else default_cache_root()
    name = re.sub(r"[^A-Za-z0-9_-]", "_", bag.resolve().name)
    folder = root / f"{name}-{cache_key(bag, topics, slop, queue_size)}"
    index = _read_index(folder)
    if index is not None:
        LOG.info("%s: %d decoded pairs from the cache %s", bag, len(index["frames"]), folder)
        return CachedBag(bag, folder, index, decoded=False)
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(root, [folder.name])
    staging = Path(tempfile.mkdtemp(prefix=temp_prefix(folder), dir=root))
    try:
        index = _decode(bag, staging, topics, slop, queue_size)
        (staging / INDEX).write_text(json.dumps(index), encoding="utf-8")
        try:
            os.replace(staging, folder)
        except OSError:
            if _read_index(folder) is None:  # not another process's complete cache
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    LOG.info("%s: %d pairs decoded into %s", bag, len(index["frames"]), folder)
    return CachedBag(bag, folder, index, decoded=True)
