"""Convert a data set (one of the project's readers) into a ROS 2 bag, without ROS tools.

Topics (names from `BagTopics`, types sensor_msgs / tf2_msgs):

- `/camera/image_raw` Image rgb8, or with `compressed` `/camera/image_raw/compressed`
  CompressedImage JPEG;
- `/camera/camera_info` CameraInfo (rectified pinhole: K, P = [K | 0], zero plumb_bob);
- `/lidar/points` PointCloud2: float32 x y z intensity, plus uint16 `ring` when the reader
  gives one;
- `/tf_static` TFMessage (latched QoS recorded): header.frame_id = camera frame,
  child_frame_id = LiDAR frame, transform = `T_cam_lidar`, i.e. the LiDAR frame's pose in
  the camera frame. Written before the first frame and again whenever a frame's
  `T_cam_lidar` differs (KITTI object frames from different days; nuScenes, whose
  per-keyframe transform includes the ego motion between the LiDAR and camera stamps).

Stamps are the readers' (the image takes `camera_stamp` when the reader has one); the bag's
receive time of each message is its header stamp. KITTI object frames have no time, so they
are stamped at `KITTI_OBJECT_RATE_HZ` from 0 s. The bag is written into a hidden temporary
folder beside `out`, sealed with CRCs (`nclr_core.data.rosbag.integrity.seal_bag`: every
mcap chunk, the data and summary sections; every sqlite3 message row) and renamed into place
when complete; temporary folders left by a killed conversion are removed by the next one.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.errors import WriterError
from tqdm import tqdm

from nclr_core.atomic_write import remove_stale_temporaries, temp_prefix
from nclr_core.data.kitti import KittiObjectDataset
from nclr_core.data.nuscenes import NuScenesDataset
from nclr_core.data.rosbag.integrity import seal_bag
from nclr_core.data.rosbag.messages import (
    CAMERA_INFO_TYPE,
    COMPRESSED_IMAGE_TYPE,
    IMAGE_TYPE,
    POINTCLOUD2_TYPE,
    TF_TYPE,
    BagError,
    BagTopics,
    ns_to_seconds,
    seconds_to_ns,
    typestore,
)
from nclr_core.data.semantickitti import SemanticKittiDataset
from nclr_ros.bag_messages import (
    TF_STATIC_QOS,
    encode_camera_info,
    encode_image,
    encode_points,
    encode_tf_static,
)

LOG = logging.getLogger(__name__)

SOURCES: tuple[str, ...] = ("semantickitti", "kitti-object", "nuscenes", "synthetic")
STORAGES: dict[str, StoragePlugin] = {"sqlite3": StoragePlugin.SQLITE3,
                                      "mcap": StoragePlugin.MCAP}
KITTI_OBJECT_RATE_HZ = 10.0
BAG_VERSION = 9
DEFAULT_TOPICS = BagTopics()


@dataclass(frozen=True)
class ConvertResult:
    """What `write_bag` wrote: the bag folder, frames, /tf_static messages, stamp range (s)."""

    path: Path
    frames: int
    tf_static_messages: int
    first_stamp: float
    last_stamp: float


def open_source(kind: str, src: str | Path, sequence: str | None = None,
                split: str | None = None) -> Sequence[dict[str, Any]]:
    """The reader of data set `kind` (one of SOURCES) at `src`.

    semantickitti / synthetic (the synthetic generator writes the SemanticKITTI layout):
    `sequence` (default "00"); kitti-object: `split` "training" (default) or "testing";
    nuscenes: `split` is the table version (default "v1.0-mini"), camera CAM_FRONT.
    """
    if kind in ("semantickitti", "synthetic"):
        return SemanticKittiDataset(src, sequences=(sequence or "00",))
    if sequence is not None:
        raise ValueError(f"--sequence applies to semantickitti and synthetic, not {kind}")
    if kind == "kitti-object":
        return KittiObjectDataset(src, split or "training")
    if kind == "nuscenes":
        return NuScenesDataset(src, version=split or "v1.0-mini")
    raise ValueError(f"unknown source {kind!r} (choose from {', '.join(SOURCES)})")


def _stamps(sample: dict[str, Any], index: int, synthesise: bool) -> tuple[int, int]:
    """(cloud stamp ns, image stamp ns) of a sample."""
    if synthesise:
        ns = seconds_to_ns(index / KITTI_OBJECT_RATE_HZ)
        return ns, ns
    cloud = seconds_to_ns(sample["stamp"])
    return cloud, seconds_to_ns(sample.get("camera_stamp", sample["stamp"]))


def write_bag(
    samples: Sequence[dict[str, Any]],
    out: str | Path,
    storage: str = "sqlite3",
    compressed: bool = False,
    max_frames: int | None = None,
    synthesise_stamps: bool = False,
    topics: BagTopics = DEFAULT_TOPICS,
) -> ConvertResult:
    """Write sample dicts (the readers' format) to a new bag folder `out`.

    `synthesise_stamps` replaces the stamps by frame index / KITTI_OBJECT_RATE_HZ.
    Raises BagError when `out` exists or nothing could be written; `out` never exists
    half-written.
    """
    out = Path(out)
    if storage not in STORAGES:
        raise ValueError(f"unknown storage {storage!r} (choose from {', '.join(STORAGES)})")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if out.exists():
        raise BagError(f"{out}: already exists; remove it or choose another --out")
    count = len(samples) if max_frames is None else min(len(samples), max_frames)
    if count == 0:
        raise BagError(f"{out}: the source has no frames to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out.parent, [out.name])
    staging = Path(tempfile.mkdtemp(prefix=temp_prefix(out), dir=out.parent))
    try:
        result = _write(samples, count, staging / out.name, storage, compressed,
                        synthesise_stamps, topics)
        seal_bag(staging / out.name)
        os.replace(staging / out.name, out)
        LOG.info("wrote %d frames to %s", result[0], out)
    except WriterError as err:
        raise BagError(f"{out}: cannot write the bag ({err})") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ConvertResult(out, result[0], result[1], result[2], result[3])


def _write(samples: Sequence[dict[str, Any]], count: int, path: Path, storage: str,
           compressed: bool, synthesise: bool,
           topics: BagTopics) -> tuple[int, int, float, float]:
    store = typestore()
    writer = Writer(path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
    writer.open()
    try:
        image_topic = topics.compressed_image if compressed else topics.image
        image_type = COMPRESSED_IMAGE_TYPE if compressed else IMAGE_TYPE
        conn_image = writer.add_connection(image_topic, image_type, typestore=store)
        conn_info = writer.add_connection(topics.info, CAMERA_INFO_TYPE, typestore=store)
        conn_points = writer.add_connection(topics.points, POINTCLOUD2_TYPE, typestore=store)
        conn_tf = writer.add_connection(topics.tf_static, TF_TYPE, typestore=store,
                                        offered_qos_profiles=[TF_STATIC_QOS])
        last_tf: tuple[str, str, np.ndarray] | None = None
        tf_count, first, last = 0, None, None
        for index in tqdm(range(count), desc=f"writing {path.name}", unit="frame",
                          disable=None):
            sample = samples[index]
            cloud_ns, image_ns = _stamps(sample, index, synthesise)
            camera_frame, lidar_frame = sample["camera_frame"], sample["lidar_frame"]
            T = np.asarray(sample["T_cam_lidar"], dtype=np.float64)
            if last_tf is None or last_tf[:2] != (camera_frame, lidar_frame) or \
                    not np.array_equal(last_tf[2], T):
                tf_ns = min(cloud_ns, image_ns)
                writer.write(conn_tf, tf_ns,
                             encode_tf_static(T, tf_ns, camera_frame, lidar_frame))
                last_tf = (camera_frame, lidar_frame, T)
                tf_count += 1
            image = sample["image"]
            height, width = image.shape[:2]
            writer.write(conn_info, image_ns,
                         encode_camera_info(sample["K"], width, height, image_ns, camera_frame))
            writer.write(conn_image, image_ns,
                         encode_image(image, image_ns, camera_frame, compressed))
            writer.write(conn_points, cloud_ns,
                         encode_points(sample["points"], cloud_ns, lidar_frame,
                                       sample.get("ring")))
            stamps = (min(cloud_ns, image_ns), max(cloud_ns, image_ns))
            first = stamps[0] if first is None else min(first, stamps[0])
            last = stamps[1] if last is None else max(last, stamps[1])
    finally:
        writer.close()
    return count, tf_count, ns_to_seconds(first), ns_to_seconds(last)


def convert(kind: str, src: str | Path, out: str | Path, storage: str = "sqlite3",
            compressed: bool = False, sequence: str | None = None, split: str | None = None,
            max_frames: int | None = None) -> ConvertResult:
    """Read data set `kind` at `src` (see `open_source`) and write it as bag `out`."""
    samples = open_source(kind, src, sequence, split)
    if kind == "kitti-object":
        LOG.info("KITTI object frames have no timestamps: stamping them at %.1f Hz",
                 KITTI_OBJECT_RATE_HZ)
    return write_bag(samples, out, storage, compressed, max_frames,
                     synthesise_stamps=kind == "kitti-object")
