"""rosbag2 records of the calibration streams -> arrays: names, errors, CDR decoding.

Decoding uses the `rosbags` typestore (pure Python, no ROS installation); its message
objects have the field names of the rclpy ones, so the converters of this package
(`pointcloud2`, `image_msgs`, `camera_info`) read either kind. Writing bags needs rclpy's
serialiser and lives in `nclr_ros.bag_messages`.

/tf_static convention: one `TransformStamped` with `header.frame_id` = camera frame,
`child_frame_id` = LiDAR frame and the transform = `T_cam_lidar`, i.e. the pose of the LiDAR
frame in the camera frame (it maps LiDAR points into the camera frame, as tf2 does).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from rosbags.typesys import Stores, get_typestore

from nclr_core.data.rosbag.image_msgs import compressed_image_to_rgb, image_to_rgb
from nclr_core.data.rosbag.pointcloud2 import pointcloud2_to_array, pointcloud2_to_xyzi
from nclr_core.geometry.se3 import make_transform, matrix_from_quaternion_xyzw

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
POINTCLOUD2_TYPE = "sensor_msgs/msg/PointCloud2"
TF_TYPE = "tf2_msgs/msg/TFMessage"

NS_PER_S = 10**9


class BagError(Exception):
    """A bag cannot be read or written, or lacks what a tool needs; the text names the bag."""


@dataclass(frozen=True)
class BagTopics:
    """Topic names of the calibration streams in a bag."""

    image: str = "/camera/image_raw"
    info: str = "/camera/camera_info"
    points: str = "/lidar/points"
    tf_static: str = "/tf_static"

    @property
    def compressed_image(self) -> str:
        """The image_transport name of the JPEG stream: `<image>/compressed`."""
        return f"{self.image}/compressed"


@lru_cache(maxsize=1)
def typestore() -> Any:
    """The rosbags typestore of ROS 2 Kilted (or the newest ROS 2 store this rosbags has)."""
    if hasattr(Stores, "ROS2_KILTED"):
        return get_typestore(Stores.ROS2_KILTED)
    ros2 = [store for store in Stores if store.value.startswith("ros2_")]
    return get_typestore(ros2[-1])


def seconds_to_ns(stamp: float) -> int:
    """Integer nanoseconds nearest to `stamp` seconds (>= 0)."""
    ns = round(float(stamp) * NS_PER_S)
    if ns < 0:
        raise ValueError(f"ROS stamps must not be negative, got {stamp} s")
    return ns


def ns_to_seconds(ns: int) -> float:
    """Seconds as the float nearest to `ns` nanoseconds (exact integer division)."""
    return int(ns) / NS_PER_S


def decode(data: bytes | memoryview, msgtype: str) -> Any:
    """The rosbags message object of CDR `data` of type `msgtype`."""
    return typestore().deserialize_cdr(data, msgtype)


def header_seconds(msg: Any) -> float:
    """`msg.header.stamp` in seconds."""
    return ns_to_seconds(int(msg.header.stamp.sec) * NS_PER_S + int(msg.header.stamp.nanosec))


def image_message_to_rgb(msg: Any, msgtype: str) -> np.ndarray:
    """RGB uint8 (H, W, 3) of a decoded Image or CompressedImage."""
    if msgtype == COMPRESSED_IMAGE_TYPE:
        return compressed_image_to_rgb(msg)
    if msgtype == IMAGE_TYPE:
        return image_to_rgb(msg)
    raise ValueError(f"expected {IMAGE_TYPE} or {COMPRESSED_IMAGE_TYPE}, got {msgtype}")


def cloud_message_to_arrays(msg: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(points (N, 4) float32 x y z intensity, ring (N,) int64 or None) of a PointCloud2."""
    points = pointcloud2_to_xyzi(msg)
    if "ring" not in [field.name for field in msg.fields]:
        return points, None
    return points, pointcloud2_to_array(msg)["ring"].astype(np.int64)


def tf_message_transforms(msg: Any) -> dict[tuple[str, str], np.ndarray]:
    """{(parent frame, child frame): T_parent_child (4, 4)} of a decoded TFMessage."""
    out = {}
    for stamped in msg.transforms:
        t = stamped.transform.translation
        q = stamped.transform.rotation
        R = matrix_from_quaternion_xyzw([q.x, q.y, q.z, q.w])
        out[(stamped.header.frame_id, stamped.child_frame_id)] = make_transform(
            R, [t.x, t.y, t.z]
        )
    return out
