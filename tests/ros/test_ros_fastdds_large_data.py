"""config/fastdds_large_data.xml: best-effort 120k-point clouds (~1.9 MB) reach another process.

A real publisher process and a real subscriber process talk over Fast DDS on this host, in a
random ROS domain (100..200) so parallel runs do not meet. Run as a script, this file is
also the publisher / subscriber:

    python tests/ros/test_ros_fastdds_large_data.py pub COUNT RATE_HZ TIMEOUT_S
    python tests/ros/test_ros_fastdds_large_data.py sub COUNT TIMEOUT_S
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILE = REPO_ROOT / "config" / "fastdds_large_data.xml"
TOPIC = "nclr_large_cloud_test"
POINTS = 120_000
MESSAGES = 30
RATE_HZ = 10.0
MIN_DELIVERED_FRACTION = 0.75
# Seconds each process may wait for the other (discovery) and for the messages.
PROCESS_TIMEOUT_S = 15.0


def _publisher_main(count: int, rate_hz: float, timeout_s: float) -> None:
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2

    from nclr_ros.pointcloud2 import xyz_fields_to_pointcloud2

    rclpy.init()
    node = rclpy.create_node("nclr_large_cloud_publisher")
    pub = node.create_publisher(PointCloud2, TOPIC, qos_profile_sensor_data)
    rng = np.random.default_rng(0)
    msg = xyz_fields_to_pointcloud2(
        rng.normal(size=(POINTS, 3)).astype(np.float32),
        intensity=rng.uniform(size=POINTS).astype(np.float32))
    deadline = time.monotonic() + timeout_s
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # let the reader's side of discovery finish too
    for index in range(count):
        msg.header.frame_id = str(index)
        pub.publish(msg)
        time.sleep(1.0 / rate_hz)
    time.sleep(1.0)  # keep the participant alive while the last messages drain
    print(json.dumps({"bytes": len(msg.data), "published": count}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def _subscriber_main(count: int, timeout_s: float) -> None:
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2

    from nclr_ros.pointcloud2 import pointcloud2_to_xyzi

    rclpy.init()
    node = rclpy.create_node("nclr_large_cloud_subscriber")
    received: set[str] = set()
    intact = []

    def callback(msg: PointCloud2) -> None:
        received.add(msg.header.frame_id)
        intact.append(pointcloud2_to_xyzi(msg).shape == (POINTS, 4))

    node.create_subscription(PointCloud2, TOPIC, callback, qos_profile_sensor_data)
    deadline = time.monotonic() + timeout_s
    last_index = str(count - 1)
    while time.monotonic() < deadline and last_index not in received:
        rclpy.spin_once(node, timeout_sec=0.1)
    end = time.monotonic() + 0.5  # stragglers
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps({"received": len(received), "intact": all(intact)}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def run_pair(profile: Path | None, count: int = MESSAGES) -> dict:
    """Run subscriber and publisher processes; returns their JSON reports merged."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(random.randint(100, 200))
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.pop("ROS_STATIC_PEERS", None)
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    if profile is not None:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    script = [sys.executable, str(Path(__file__).resolve())]
    timeout = f"{PROCESS_TIMEOUT_S}"
    sub = subprocess.Popen(script + ["sub", str(count), timeout], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pub = subprocess.Popen(script + ["pub", str(count), str(RATE_HZ), timeout], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_s = 2 * PROCESS_TIMEOUT_S
    try:
        pub_out, pub_err = pub.communicate(timeout=wait_s)
        sub_out, sub_err = sub.communicate(timeout=wait_s)
    finally:
        for process in (pub, sub):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert pub.returncode == 0, f"publisher failed:\n{pub_err}"
    assert sub.returncode == 0, f"subscriber failed:\n{sub_err}"
    return {**json.loads(pub_out.splitlines()[-1]), **json.loads(sub_out.splitlines()[-1])}


def test_profile_is_wellformed_fastdds_xml():
    root = ET.parse(PROFILE).getroot()
    ns = {"d": "http://www.eprosima.com"}
    segment = root.find(".//d:transport_descriptor[d:type='SHM']/d:segment_size", ns)
    assert int(segment.text) == 64 * 1024 * 1024
    participant = root.find(".//d:participant", ns)
    assert participant.get("is_default_profile") == "true"
    used = {e.text for e in participant.findall(".//d:userTransports/d:transport_id", ns)}
    declared = {e.text for e in root.findall(".//d:transport_descriptor/d:transport_id", ns)}
    assert used == declared and len(used) == 2


@pytest.mark.slow
def test_large_best_effort_clouds_arrive_with_profile():
    pytest.importorskip("rmw_fastrtps_cpp", reason="rmw_fastrtps_cpp is not installed")
    report = run_pair(PROFILE)
    assert report["bytes"] > 1_800_000
    assert report["intact"]
    assert report["received"] >= MIN_DELIVERED_FRACTION * report["published"], report


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "pub":
        _publisher_main(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
    elif role == "sub":
        _subscriber_main(int(sys.argv[2]), float(sys.argv[3]))
    elif role == "measure":  # python ... measure [COUNT]: with and without the profile
        n = int(sys.argv[2]) if len(sys.argv) > 2 else MESSAGES
        for profile in (None, PROFILE):
            print(profile, run_pair(profile, n), flush=True)
    else:
        raise SystemExit(f"unknown role {role!r} (pub, sub or measure)")
