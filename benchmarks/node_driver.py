"""What the node benchmarks share: the calibration node in its own process, and a driver
node that feeds it synthetic frames over loopback DDS and reads its /diagnostics counters.

`bench_node.py` (throughput) and `soak_node.py` (memory over time) differ only in how they
feed the node and what they report.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nclr_ros.calibration_parameters import NODE_NAME
from nclr_ros.node_process import stop_node_process

# the node's counters on /diagnostics (pairs_processed, pairs_pending, ...)
COUNTERS_STATUS = f"{NODE_NAME}: calibration"
CAMERA_FRAME, LIDAR_FRAME = "camera", "lidar"
REPO = Path(__file__).resolve().parents[1]


def frame_messages(frames: list[dict[str, Any]]) -> list[tuple[Any, Any, Any]]:
    """(CameraInfo, rgb8 Image, PointCloud2 x y z intensity) per sample dict, stamps unset."""
    from sensor_msgs.msg import CameraInfo

    from nclr_ros.image_msgs import array_to_image
    from nclr_ros.pointcloud2 import xyz_fields_to_pointcloud2

    messages = []
    for f in frames:
        height, width = f["image"].shape[:2]
        info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
        info.header.frame_id = CAMERA_FRAME
        info.k, info.d = [float(v) for v in f["K"].reshape(-1)], [0.0] * 5
        image = array_to_image(f["image"], "rgb8")
        image.header.frame_id = CAMERA_FRAME
        cloud = xyz_fields_to_pointcloud2(f["points"][:, :3], intensity=f["points"][:, 3])
        cloud.header.frame_id = LIDAR_FRAME
        messages.append((info, image, cloud))
    return messages


def node_environment(domain_ids: tuple[int, int], **extra: str) -> dict[str, str]:
    """This process's environment for a node and its driver: a random ROS domain within
    `domain_ids` (inclusive; apart from the tests' 100-200), Fast DDS, unbuffered output, the
    repository importable, plus `extra`."""
    return dict(os.environ, ROS_DOMAIN_ID=str(random.randint(*domain_ids)),
                RMW_IMPLEMENTATION="rmw_fastrtps_cpp", PYTHONUNBUFFERED="1",
                PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                         os.environ.get("PYTHONPATH")])),
                **extra)


@contextmanager
def calibration_node(params: dict[str, str], env: dict[str, str], log_path: Path, cwd: Path,
                     stop_timeout_s: float) -> Iterator[subprocess.Popen]:
    """`python -m nclr_ros.calibration_node` with ROS parameters `params`, its output in
    `log_path`; stopped (SIGINT, then killed) when the block ends."""
    args = [a for k, v in params.items() for a in ("-p", f"{k}:={v}")]
    with open(log_path, "w") as log:
        node = subprocess.Popen(
            [sys.executable, "-m", "nclr_ros.calibration_node", "--ros-args", *args],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
        try:
            yield node
        finally:
            stop_node_process(node, stop_timeout_s)


class NodeDriver:
    """A driver node in this process: publishers of camera_info, image and points with
    sensor-data QoS (the default DDS profile applied), and the calibration node's latest
    /diagnostics values (`values`, received at monotonic time `received_at`, 0 before any)."""

    def __init__(self, name: str, messages: list[tuple[Any, Any, Any]]) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        from nclr_ros.dds_profile import apply_default_profile

        apply_default_profile()
        rclpy.init()
        self._rclpy = rclpy
        self.node = rclpy.create_node(name)
        self.messages = messages
        self.publishers = tuple(
            self.node.create_publisher(kind, topic, qos_profile_sensor_data)
            for kind, topic in ((CameraInfo, "camera_info"), (Image, "image"),
                                (PointCloud2, "points")))
        self.values: dict[str, str] = {}
        self.received_at = 0.0
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name == COUNTERS_STATUS:
                self.values = {kv.key: kv.value for kv in status.values}
                self.received_at = time.monotonic()

    def spin_until(self, condition: Callable[[], bool], limit_s: float) -> bool:
        """Spin until `condition()` holds or `limit_s` seconds pass; the condition's value."""
        end = time.monotonic() + limit_s
        while time.monotonic() < end:
            if condition():
                return True
            self._rclpy.spin_once(self.node, timeout_sec=0.02)
        return condition()

    def count(self, key: str) -> int:
        """The node's counter `key` from its last diagnostics (0 before any)."""
        return int(self.values.get(key, 0))

    def connected(self) -> bool:
        """The node subscribes to all three topics and has published diagnostics."""
        return (min(p.get_subscription_count() for p in self.publishers) > 0
                and self.received_at > 0)

    def idle_since(self, t: float) -> bool:
        """Diagnostics newer than monotonic time `t` say nothing is pending or in progress."""
        return (self.received_at > t and self.count("pairs_pending") == 0
                and self.count("pairs_in_progress") == 0)

    def publish(self, i: int) -> None:
        """Publish the pair `i` (cycling through the messages), stamped now."""
        stamp = self.node.get_clock().now().to_msg()
        for msg, pub in zip(self.messages[i % len(self.messages)], self.publishers,
                            strict=True):
            msg.header.stamp = stamp
            pub.publish(msg)

    def close(self) -> None:
        self.node.destroy_node()
        self._rclpy.shutdown()
