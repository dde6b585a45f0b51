"""Read the calibration streams of a rosbag2 bag back as paired sample dicts.

`BagFrames` opens a bag (sqlite3 or mcap), checks that it has an image topic (Image or
CompressedImage), a CameraInfo topic and a PointCloud2 topic, and yields one sample dict per
image/cloud pair formed by `ApproximateTimePairer`, the pairer the calibration node uses,
fed in bag order. An image takes the newest CameraInfo received before it; messages that
share a bag timestamp are taken in the order CameraInfo, image, cloud. Every failure to read
the bag raises `BagError` naming the bag; the bag's integrity is checked first
(`integrity.check_bag` beside this module: CRCs, storage structure), so a damaged bag fails
before any of it is used instead of being read wrong.
"""
from __future__ import annotations

import sqlite3
import struct
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apsw
import numpy as np
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.errors import ReaderError

from nclr_core.data.rosbag.camera_info import camera_info_to_camera
from nclr_core.data.rosbag.integrity import check_bag
from nclr_core.data.rosbag.integrity_report import IntegrityReport
from nclr_core.data.rosbag.messages import (
    CAMERA_INFO_TYPE,
    COMPRESSED_IMAGE_TYPE,
    IMAGE_TYPE,
    POINTCLOUD2_TYPE,
    TF_TYPE,
    BagError,
    BagTopics,
    cloud_message_to_arrays,
    decode,
    header_seconds,
    image_message_to_rgb,
    tf_message_transforms,
)
from nclr_core.data.rosbag.time_sync import (
    DEFAULT_QUEUE_SIZE,
    ApproximateTimePairer,
    SyncCounters,
)
from nclr_core.geometry.camera import CameraModel

if sys.version_info >= (3, 14):
    from compression.zstd import ZstdError
else:
    from backports.zstd import ZstdError

# Errors rosbags, its storage back-ends (apsw for sqlite3; lz4 and zstd chunks of mcap) and
# the CDR decoder raise on damaged bytes. MemoryError and OverflowError: a damaged length
# asks for an impossible buffer.
_READ_ERRORS = (ReaderError, OSError, sqlite3.Error, apsw.Error, ZstdError, RuntimeError,
                struct.error, ValueError, KeyError, IndexError, AssertionError, EOFError,
                MemoryError, OverflowError)

# The nclr-bag options choosing the image, CameraInfo and PointCloud2 topics.
TOPIC_FLAGS = ("--image-topic", "--info-topic", "--points-topic")

# Order of messages sharing one bag timestamp: transforms, calibration, image, cloud.
_RANK = {"tf": 0, "info": 1, "image": 2, "points": 3}


@contextmanager
def open_bag(path: str | Path) -> Iterator[Reader]:
    """An open rosbags `Reader` on the bag folder `path`; BagError when it cannot be opened."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"{path}: bag not found")
    try:
        reader = Reader(path)
        reader.open()
    except _READ_ERRORS as err:
        raise BagError(f"{path}: not a readable rosbag2 bag ({err})") from err
    try:
        yield reader
    finally:
        reader.close()


def iter_raw(
    reader: Reader, path: str | Path, topics: list[str] | None = None
) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, msgtype, bag timestamp ns, CDR bytes) in bag order, for `topics` (None: all).

    A truncated or corrupt storage file raises BagError naming `path`.
    """
    connections = [c for c in reader.connections if topics is None or c.topic in topics]
    try:
        for connection, timestamp, data in reader.messages(connections=connections):
            yield connection.topic, connection.msgtype, int(timestamp), data
    except _READ_ERRORS as err:
        raise BagError(f"{path}: bag is truncated or corrupt ({err})") from err


def topic_types(reader: Reader) -> dict[str, str]:
    """{topic: message type} of the bag."""
    return {c.topic: c.msgtype for c in reader.connections}


def _describe(types: dict[str, str]) -> str:
    return ", ".join(f"{t} [{m}]" for t, m in sorted(types.items())) or "none"


def _require(path: Path, types: dict[str, str], topic: str, msgtype: str, what: str,
             flag: str) -> None:
    if topic not in types:
        raise BagError(
            f"{path}: no {what} topic {topic!r} (choose another with {flag}); topics in the "
            f"bag: {_describe(types)}"
        )
    if types[topic] != msgtype:
        raise BagError(f"{path}: topic {topic!r} is {types[topic]}, expected {msgtype}")


class BagFrames:
    """Paired samples of a bag; iterate it for sample dicts.

    Each dict has `image` uint8 (H, W, 3) RGB, `points` float32 (N, 4) x y z intensity in
    the LiDAR frame, `ring` int64 (N,) when the cloud has one, `camera` (CameraModel of the
    CameraInfo), `K` (3, 3), `stamp` (cloud stamp, s), `camera_stamp` (image stamp, s),
    `camera_frame` and `lidar_frame` (header frame ids), `sequence` (the bag folder name),
    `frame_id` (the pair index) and, when a /tf_static message received before the pair links
    the two frames, `T_cam_lidar` (4, 4) from the newest such message. `tf_static` holds the
    last transform of each frame pair in the bag; `counters` and `images_without_info`
    report what was dropped; `integrity` is what the integrity check found.
    """

    def __init__(self, path: str | Path, topics: BagTopics, slop: float,
                 queue_size: int = DEFAULT_QUEUE_SIZE,
                 topic_options: tuple[str, str, str] = TOPIC_FLAGS) -> None:
        """`topics`: names to read (the image may also be `<image>/compressed`); `slop`,
        `queue_size`: the pairer's settings (seconds, messages); `topic_options`: how the
        caller's user chooses the image, CameraInfo and PointCloud2 topics (named in the
        error for a missing topic)."""
        self.path = Path(path)
        self.topics = topics
        self._pairer_args = (slop, queue_size)
        ApproximateTimePairer(slop, queue_size)  # validate the settings now
        self.integrity: IntegrityReport = check_bag(self.path)
        with open_bag(self.path) as reader:
            types = topic_types(reader)
            self.image_topic = topics.image
            if topics.image not in types and topics.compressed_image in types:
                self.image_topic = topics.compressed_image
            if types.get(self.image_topic) == COMPRESSED_IMAGE_TYPE:
                self.image_type = COMPRESSED_IMAGE_TYPE
            else:
                self.image_type = IMAGE_TYPE
            image_option, info_option, points_option = topic_options
            _require(self.path, types, self.image_topic, self.image_type, "image",
                     image_option)
            _require(self.path, types, topics.info, CAMERA_INFO_TYPE, "CameraInfo",
                     info_option)
            _require(self.path, types, topics.points, POINTCLOUD2_TYPE, "PointCloud2",
                     points_option)
            self.tf_static = read_tf_static(reader, self.path, topics.tf_static)
        self.counters = SyncCounters()
        self.images_without_info = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        pairer = ApproximateTimePairer(*self._pairer_args)
        self.images_without_info = 0
        roles = {self.image_topic: "image", self.topics.info: "info",
                 self.topics.points: "points"}
        if self.tf_static:
            roles[self.topics.tf_static] = "tf"
        state: dict[str, Any] = {"camera": None, "index": 0, "tf": {}}
        group: list[tuple[int, str, Any]] = []
        group_stamp = None
        with open_bag(self.path) as reader:
            for topic, _, timestamp, data in iter_raw(reader, self.path, list(roles)):
                if timestamp != group_stamp:
                    yield from self._flush(group, pairer, state)
                    group, group_stamp = [], timestamp
                group.append((_RANK[roles[topic]], roles[topic], data))
            yield from self._flush(group, pairer, state)
        self.counters = pairer.counters

    def _flush(self, group: list[tuple[int, str, Any]], pairer: ApproximateTimePairer,
               state: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for _, role, data in sorted(group, key=lambda item: item[0]):
            try:
                if role == "tf":
                    state["tf"].update(tf_message_transforms(decode(data, TF_TYPE)))
                    continue
                if role == "info":
                    state["camera"] = camera_info_to_camera(decode(data, CAMERA_INFO_TYPE))
                    continue
                if role == "image":
                    if state["camera"] is None:
                        self.images_without_info += 1
                        continue
                    msg = decode(data, self.image_type)
                    pair = pairer.push_image(header_seconds(msg), (msg, state["camera"]))
                else:
                    msg = decode(data, POINTCLOUD2_TYPE)
                    pair = pairer.push_cloud(header_seconds(msg), msg)
                if pair is None:
                    continue
                (image_msg, camera), cloud_msg = pair.image, pair.cloud
                sample = self._sample(image_msg, camera, cloud_msg, pair.image_stamp,
                                      pair.cloud_stamp, state["index"], state["tf"])
            except _READ_ERRORS as err:
                raise BagError(f"{self.path}: cannot decode a {role} message ({err})") from err
            state["index"] += 1
            yield sample

    def _sample(self, image_msg: Any, camera: CameraModel, cloud_msg: Any,
                image_stamp: float, cloud_stamp: float, index: int,
                transforms: dict[tuple[str, str], np.ndarray]) -> dict[str, Any]:
        points, ring = cloud_message_to_arrays(cloud_msg)
        camera_frame = image_msg.header.frame_id
        lidar_frame = cloud_msg.header.frame_id
        sample: dict[str, Any] = {
            "image": image_message_to_rgb(image_msg, self.image_type),
            "points": points,
            "camera": camera,
            "K": camera.K.copy(),
            "stamp": cloud_stamp,
            "camera_stamp": image_stamp,
            "camera_frame": camera_frame,
            "lidar_frame": lidar_frame,
            "sequence": self.path.name,
            "frame_id": str(index),
        }
        if ring is not None:
            sample["ring"] = ring
        if (camera_frame, lidar_frame) in transforms:
            sample["T_cam_lidar"] = transforms[(camera_frame, lidar_frame)].copy()
        return sample


def read_tf_static(
    reader: Reader, path: str | Path, topic: str
) -> dict[tuple[str, str], np.ndarray]:
    """{(parent, child): T_parent_child (4, 4)} of every TFMessage on `topic` (later wins).

    Empty when the bag has no such topic.
    """
    types = topic_types(reader)
    if topic not in types:
        return {}
    if types[topic] != TF_TYPE:
        raise BagError(f"{path}: topic {topic!r} is {types[topic]}, expected {TF_TYPE}")
    transforms: dict[tuple[str, str], np.ndarray] = {}
    for _, _, _, data in iter_raw(reader, path, [topic]):
        try:
            transforms.update(tf_message_transforms(decode(data, TF_TYPE)))
        except _READ_ERRORS as err:
            raise BagError(f"{path}: cannot decode a {topic} message ({err})") from err
    return transforms
