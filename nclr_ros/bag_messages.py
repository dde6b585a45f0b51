"""Sensor messages -> rosbag2 records: arrays in, CDR bytes out.

Writing builds rclpy messages with the shared converters (`nclr_ros.image_msgs`,
`nclr_ros.pointcloud2`) and serialises them with `rclpy.serialization`, so the byte-level
packing of images and clouds exists once. `tf2_msgs` has no Python wheel, so /tf_static is
built and serialised with the `rosbags` typestore instead (same CDR on the wire). Reading
(names, `BagError`, decoding) is ROS-free and lives in `nclr_core.data.rosbag.messages`;
the /tf_static convention is described there.
"""
from __future__ import annotations

import numpy as np
from rclpy.serialization import serialize_message
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from nclr_core.data.rosbag.messages import NS_PER_S, TF_TYPE, typestore
from nclr_core.geometry.se3 import quaternion_xyzw_from_matrix
from nclr_ros.image_msgs import array_to_image, rgb_to_compressed_image
from nclr_ros.pointcloud2 import array_to_pointcloud2

# Latched: a late subscriber still receives the one /tf_static message.
TF_STATIC_QOS = Qos(
    history=QosHistory.KEEP_LAST,
    depth=1,
    reliability=QosReliability.RELIABLE,
    durability=QosDurability.TRANSIENT_LOCAL,
    deadline=QosTime(0, 0),
    lifespan=QosTime(0, 0),
    liveliness=QosLiveliness.AUTOMATIC,
    liveliness_lease_duration=QosTime(0, 0),
    avoid_ros_namespace_conventions=False,
)


def _header(stamp_ns: int, frame_id: str) -> Header:
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = divmod(int(stamp_ns), NS_PER_S)
    return header


def encode_image(rgb: np.ndarray, stamp_ns: int, frame_id: str, compressed: bool) -> bytes:
    """CDR bytes of an rgb8 `Image`, or a JPEG `CompressedImage`, from RGB uint8 (H, W, 3)."""
    header = _header(stamp_ns, frame_id)
    if compressed:
        return serialize_message(rgb_to_compressed_image(rgb, "jpeg", header))
    return serialize_message(array_to_image(rgb, "rgb8", header))


def encode_camera_info(
    K: np.ndarray, width: int, height: int, stamp_ns: int, frame_id: str
) -> bytes:
    """CDR bytes of a `CameraInfo` for an undistorted (rectified) pinhole image.

    K (3, 3) intrinsics in pixels; distortion plumb_bob with zero coefficients, R = I and
    P = [K | 0] (the camera frame is the image's own frame).
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must be (3, 3), got {K.shape}")
    P = np.zeros((3, 4))
    P[:, :3] = K
    msg = CameraInfo(
        header=_header(stamp_ns, frame_id),
        height=int(height),
        width=int(width),
        distortion_model="plumb_bob",
        d=[0.0] * 5,
        k=K.reshape(-1).tolist(),
        r=np.eye(3).reshape(-1).tolist(),
        p=P.reshape(-1).tolist(),
    )
    return serialize_message(msg)


def encode_points(
    points: np.ndarray, stamp_ns: int, frame_id: str, ring: np.ndarray | None = None
) -> bytes:
    """CDR bytes of a `PointCloud2` with float32 x y z intensity (+ uint16 ring).

    points (N, 4) x y z intensity in the LiDAR frame; ring (N,) laser index or None.
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 4:
        raise ValueError(f"points must be (N, 4) x y z intensity, got {points.shape}")
    layout = [(name, np.float32) for name in ("x", "y", "z", "intensity")]
    if ring is not None:
        ring = np.asarray(ring)
        if ring.shape != (points.shape[0],):
            raise ValueError(f"ring must be ({points.shape[0]},), got {ring.shape}")
        if ring.size and (ring.min() < 0 or ring.max() > np.iinfo(np.uint16).max):
            raise ValueError(f"ring values {ring.min()}..{ring.max()} do not fit uint16")
        layout.append(("ring", np.uint16))
    cloud = np.empty(points.shape[0], dtype=np.dtype(layout))
    for col, name in enumerate(("x", "y", "z", "intensity")):
        cloud[name] = points[:, col]
    if ring is not None:
        cloud["ring"] = ring
    return serialize_message(array_to_pointcloud2(cloud, _header(stamp_ns, frame_id)))


def encode_tf_static(
    T_cam_lidar: np.ndarray, stamp_ns: int, camera_frame: str, lidar_frame: str
) -> bytes:
    """CDR bytes of a `TFMessage` holding T_cam_lidar (4, 4): parent camera, child LiDAR."""
    T = np.asarray(T_cam_lidar, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"T_cam_lidar must be (4, 4), got {T.shape}")
    store = typestore()
    types = store.types
    sec, nanosec = divmod(int(stamp_ns), NS_PER_S)
    q = quaternion_xyzw_from_matrix(T[:3, :3])
    transform = types["geometry_msgs/msg/TransformStamped"](
        header=types["std_msgs/msg/Header"](
            stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
            frame_id=camera_frame,
        ),
        child_frame_id=lidar_frame,
        transform=types["geometry_msgs/msg/Transform"](
            translation=types["geometry_msgs/msg/Vector3"](*map(float, T[:3, 3])),
            rotation=types["geometry_msgs/msg/Quaternion"](*map(float, q)),
        ),
    )
    return bytes(store.serialize_cdr(types[TF_TYPE](transforms=[transform]), TF_TYPE))
