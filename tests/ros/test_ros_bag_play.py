"""nclr-bag play: a bag played in another process reaches an rclpy subscriber on loopback."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from nclr_core.data.rosbag.image_msgs import image_to_rgb
from nclr_core.data.rosbag.messages import BagError
from nclr_core.data.rosbag.pointcloud2 import pointcloud2_to_xyzi
from nclr_ros.bag_convert import write_bag
from nclr_ros.bag_play import PlayOptions, message_class, select_topics

STAMPS = (2.0, 2.1, 2.2)
TIMEOUT_S = 30.0


def _samples() -> list[dict]:
    rng = np.random.default_rng(1)
    return [
        {
            "image": rng.integers(0, 256, (4, 6, 3), dtype=np.uint8),
            "points": rng.normal(size=(30, 4)).astype(np.float32),
            "K": np.array([[4.0, 0.0, 3.0], [0.0, 4.0, 2.0], [0.0, 0.0, 1.0]]),
            "T_cam_lidar": np.eye(4),
            "stamp": stamp,
            "camera_frame": "cam",
            "lidar_frame": "lidar",
        }
        for stamp in STAMPS
    ]


def _seconds(msg) -> float:
    return round(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, 6)


def test_play_delivers_messages_with_their_stamps_and_timing(tmp_path, monkeypatch):
    samples = _samples()
    bag = tmp_path / "bag"
    write_bag(samples, bag)
    domain = random.randint(100, 200)
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    for name in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE"):
        monkeypatch.delenv(name, raising=False)  # the player applies the package profile
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain, signal_handler_options=SignalHandlerOptions.NO)
    received: dict[str, list] = {"image": [], "info": [], "points": [], "clock": []}
    player = None
    try:
        node = rclpy.create_node("bag_play_test", context=context)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
        for name, cls, topic in (("image", Image, "/camera/image_raw"),
                                 ("info", CameraInfo, "/camera/camera_info"),
                                 ("points", PointCloud2, "/lidar/points"),
                                 ("clock", Clock, "/clock")):
            node.create_subscription(
                cls, topic, lambda msg, name=name: received[name].append((time.monotonic(), msg)),
                qos)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        player = subprocess.Popen(
            [sys.executable, "-m", "nclr_ros.bag_cli", "play", str(bag), "--loop", "--clock"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
        )
        deadline = time.monotonic() + TIMEOUT_S

        def complete() -> bool:
            return all(
                {_seconds(m) for _, m in received[name]} >= set(STAMPS)
                for name in ("image", "info", "points")
            ) and len(received["image"]) >= 2 * len(STAMPS) and bool(received["clock"])

        while not complete() and time.monotonic() < deadline and player.poll() is None:
            executor.spin_once(timeout_sec=0.05)
        player.send_signal(signal.SIGINT)
        out, err = player.communicate(timeout=20)
        assert player.returncode == 0, err
        assert complete(), f"received {[(k, len(v)) for k, v in received.items()]}; {err}"
    finally:
        if player is not None and player.poll() is None:
            player.kill()
            player.wait()
        rclpy.try_shutdown(context=context)

    assert "/camera/image_raw:" in out
    assert "using Fast DDS profile" in err and "fastdds_large_data.xml" in err
    by_stamp = dict(zip(STAMPS, samples, strict=True))
    for _, msg in received["image"]:
        np.testing.assert_array_equal(image_to_rgb(msg), by_stamp[_seconds(msg)]["image"])
        assert msg.header.frame_id == "cam"
    for _, msg in received["points"]:
        np.testing.assert_array_equal(pointcloud2_to_xyzi(msg), by_stamp[_seconds(msg)]["points"])
        assert msg.header.frame_id == "lidar"
    for _, msg in received["info"]:
        np.testing.assert_array_equal(np.reshape(msg.k, (3, 3)), samples[0]["K"])
    clock = [m.clock.sec + m.clock.nanosec * 1e-9 for _, m in received["clock"]]
    assert min(clock) >= STAMPS[0] - 1e-9 and max(clock) <= STAMPS[-1] + 1e-9
    # Timing: within a pass the last image comes (t_last - t_first) / rate after the first.
    arrivals = [(t, _seconds(m)) for t, m in received["image"]]
    gaps = [t_last - t_first for (t_first, s_first), (_, s_mid), (t_last, s_last)
            in zip(arrivals, arrivals[1:], arrivals[2:], strict=False)
            if (s_first, s_mid, s_last) == STAMPS]
    assert gaps, arrivals
    assert min(gaps) >= 0.75 * (STAMPS[-1] - STAMPS[0])


def test_topic_selection_and_options(tmp_path):
    bag = tmp_path / "bag"
    write_bag(_samples(), bag)
    points = {"/lidar/points": "sensor_msgs/msg/PointCloud2"}
    assert select_topics(bag, ["/lidar/points"]) == points
    assert set(select_topics(bag, None)) == {
        "/camera/image_raw", "/camera/camera_info", "/lidar/points", "/tf_static"}
    with pytest.raises(BagError, match="no topic '/x'"):
        select_topics(bag, ["/x"])
    with pytest.raises(BagError, match="bag not found"):
        select_topics(Path(tmp_path / "absent"), None)
    with pytest.raises(ValueError, match="rate"):
        PlayOptions(rate=-1.0)
    assert message_class("sensor_msgs/msg/Image") is Image
    assert message_class("no_such_msgs/msg/Thing") is None


def test_a_late_reliable_subscriber_gets_every_message_when_the_player_waits(tmp_path,
                                                                             monkeypatch):
    bag = tmp_path / "bag"
    write_bag(_samples(), bag)
    domain = random.randint(100, 200)
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    player = subprocess.Popen(
        [sys.executable, "-m", "nclr_ros.bag_cli", "play", str(bag), "--topics", "/lidar/points",
         "--reliable", "--wait-for-subscribers", str(TIMEOUT_S)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    time.sleep(2.0)  # the player is up and waiting before anyone subscribes
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain, signal_handler_options=SignalHandlerOptions.NO)
    received = []
    try:
        node = rclpy.create_node("bag_play_late", context=context)
        node.create_subscription(PointCloud2, "/lidar/points", received.append,
                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + TIMEOUT_S
        while len(received) < len(STAMPS) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        _, err = player.communicate(timeout=TIMEOUT_S)
    finally:
        if player.poll() is None:
            player.kill()
            player.wait()
        rclpy.try_shutdown(context=context)
    assert player.returncode == 0, err
    assert [_seconds(m) for m in received] == list(STAMPS)
