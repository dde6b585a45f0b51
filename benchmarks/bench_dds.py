"""Largest best-effort PointCloud2 that Fast DDS delivers between two processes on one host.

A publisher process sends COUNT clouds of float32 x y z intensity (16 bytes a point) at
RATE Hz with sensor-data QoS (best effort, keep last 5); a subscriber process, which watches
the DDS sample-lost event through `nclr_ros.node_common.LostMessageMonitor` as the nodes
do, counts what arrives intact. Both run in a random ROS domain (211-220) on loopback, with
`config/fastdds_large_data.xml` on both sides or with Fast DDS's defaults.

    python benchmarks/bench_dds.py --out DIR [--points 120000,1000000] [--messages 30]
                                   [--update-doc]
    python benchmarks/bench_dds.py pub POINTS COUNT RATE_HZ TIMEOUT_S     (worker roles)
    python benchmarks/bench_dds.py sub POINTS COUNT TIMEOUT_S

Writes DIR/dds_large_clouds.json; `--update-doc` records it in benchmarks/results/ and
renders it into BENCHMARKS.md (`benchmarks/recorded.py`).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "config" / "fastdds_large_data.xml"
TOPIC = "nclr_large_cloud"
BYTES_PER_POINT = 16
RATE_HZ = 10.0
DELIVERED_FRACTION = 0.9  # "carried": at least this share of the clouds arrives intact
# (the largest carried size is the largest below which every measured size was carried)
PROCESS_TIMEOUT_S = 20.0  # each process waits this long for the other and the messages
POINT_COUNTS = (120_000, 250_000, 500_000, 1_000_000, 1_500_000, 2_000_000, 3_000_000)


def _cloud(points: int) -> Any:
    import numpy as np

    from nclr_ros.pointcloud2 import xyz_fields_to_pointcloud2

    rng = np.random.default_rng(0)
    return xyz_fields_to_pointcloud2(rng.normal(size=(points, 3)).astype(np.float32),
                                     intensity=rng.uniform(size=points).astype(np.float32))


def publisher_main(points: int, count: int, rate_hz: float, timeout_s: float) -> dict:
    """Publish `count` clouds once a subscriber is matched; returns what was sent."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2

    rclpy.init()
    node = rclpy.create_node("nclr_large_cloud_publisher")
    pub = node.create_publisher(PointCloud2, TOPIC, qos_profile_sensor_data)
    msg = _cloud(points)
    deadline = time.monotonic() + timeout_s
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # let the reader's side of discovery finish too
    start = time.monotonic()
    for index in range(count):
        msg.header.frame_id = str(index)
        pub.publish(msg)
        time.sleep(max(0.0, start + (index + 1) / rate_hz - time.monotonic()))
    time.sleep(1.0)  # keep the participant alive while the last messages drain
    node.destroy_node()
    rclpy.shutdown()
    return {"bytes": len(msg.data), "published": count}


class _Warnings:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def warning(self, text: str) -> None:
        self.lines.append(text)


def subscriber_main(points: int, count: int, timeout_s: float) -> dict:
    """Receive until the last cloud or the timeout; returns counts and the lost-message log."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2

    from nclr_core.data.rosbag.pointcloud2 import pointcloud2_to_xyzi
    from nclr_ros.node_common import LostMessageMonitor

    rclpy.init()
    node = rclpy.create_node("nclr_large_cloud_subscriber")
    warnings = _Warnings()
    monitor = LostMessageMonitor(warnings)
    received: set[str] = set()
    intact: list[bool] = []

    def callback(msg: PointCloud2) -> None:
        received.add(msg.header.frame_id)
        intact.append(pointcloud2_to_xyzi(msg).shape == (points, 4))

    node.create_subscription(PointCloud2, TOPIC, callback, qos_profile_sensor_data,
                             event_callbacks=monitor.callbacks(TOPIC))
    deadline = time.monotonic() + timeout_s
    last = str(count - 1)
    while time.monotonic() < deadline and last not in received:
        rclpy.spin_once(node, timeout_sec=0.1)
    end = time.monotonic() + 1.0  # stragglers and late sample-lost events
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    node.destroy_node()
    rclpy.shutdown()
    return {"received": len(received), "intact": all(intact),
            "lost_reported": monitor.counts().get(f"messages_lost.{TOPIC}", 0),
            "lost_warnings": len(warnings.lines)}


def run_pair(points: int, count: int, profile: Path | None,
             rate_hz: float = RATE_HZ) -> dict[str, Any]:
    """Subscriber and publisher processes; their reports merged (+ delivered fraction)."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(random.randint(211, 220)),
               RMW_IMPLEMENTATION="rmw_fastrtps_cpp", ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                        os.environ.get("PYTHONPATH")])))
    for name in ("ROS_STATIC_PEERS", "FASTDDS_DEFAULT_PROFILES_FILE",
                 "FASTRTPS_DEFAULT_PROFILES_FILE"):
        env.pop(name, None)
    if profile is not None:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    script = [sys.executable, str(Path(__file__).resolve())]
    timeout = str(PROCESS_TIMEOUT_S + count / rate_hz)
    sub = subprocess.Popen(script + ["sub", str(points), str(count), timeout], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pub = subprocess.Popen(script + ["pub", str(points), str(count), str(rate_hz), timeout],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pub_out, pub_err = pub.communicate(timeout=2 * float(timeout))
        sub_out, sub_err = sub.communicate(timeout=2 * float(timeout))
    finally:
        for process in (pub, sub):
            if process.poll() is None:
                process.kill()
                process.wait()
    if pub.returncode != 0 or sub.returncode != 0:
        raise RuntimeError(f"DDS transfer failed: publisher {pub.returncode} "
                           f"{pub_err[-1500:]}; subscriber {sub.returncode} {sub_err[-1500:]}")
    report = {**json.loads(pub_out.splitlines()[-1]), **json.loads(sub_out.splitlines()[-1])}
    report["points"] = points
    report["delivered_fraction"] = report["received"] / report["published"]
    return report


def run(point_counts: tuple[int, ...], messages: int) -> dict[str, Any]:
    """Every size with the profile; the smallest also with Fast DDS's defaults."""
    rows = [{"profile": "none (Fast DDS defaults)", **run_pair(point_counts[0], messages, None)}]
    for points in point_counts:
        rows.append({"profile": PROFILE.name, **run_pair(points, messages, PROFILE)})
    return {"messages": messages, "rate_hz": RATE_HZ, "bytes_per_point": BYTES_PER_POINT,
            "delivered_fraction_required": DELIVERED_FRACTION, "rows": rows,
            "largest_carried_points": largest_carried(rows[1:]),
            "load_average_1_5_15min": list(os.getloadavg())}


def largest_carried(rows: list[dict[str, Any]]) -> int | None:
    """The largest size below which every measured size was carried (DELIVERED_FRACTION
    delivered intact); None when the smallest was not."""
    largest = None
    for row in sorted(rows, key=lambda r: r["points"]):
        if row["delivered_fraction"] < DELIVERED_FRACTION or not row["intact"]:
            break
        largest = row["points"]
    return largest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--points", default=",".join(map(str, POINT_COUNTS)),
                   help="comma-separated cloud sizes (points)")
    p.add_argument("--messages", type=int, default=30, help="clouds per size")
    p.add_argument("--update-doc", action="store_true",
                   help="record the result in benchmarks/results/ and BENCHMARKS.md")
    args = p.parse_args(argv)
    from benchmarks.recorded import record

    result = run(tuple(int(v) for v in args.points.split(",")), args.messages)
    result["command"] = "python benchmarks/bench_dds.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    record("dds_large_clouds", result, args.out, args.update_doc)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    if len(sys.argv) > 1 and sys.argv[1] == "pub":
        print(json.dumps(publisher_main(int(sys.argv[2]), int(sys.argv[3]),
                                        float(sys.argv[4]), float(sys.argv[5]))), flush=True)
    elif len(sys.argv) > 1 and sys.argv[1] == "sub":
        print(json.dumps(subscriber_main(int(sys.argv[2]), int(sys.argv[3]),
                                         float(sys.argv[4]))), flush=True)
    else:
        sys.exit(main())
