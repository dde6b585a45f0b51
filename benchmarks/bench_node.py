"""Node throughput: the calibration node fed synthetic frames at 10 Hz over loopback DDS.

Two configurations (`CONFIGURATIONS`): the `global` stage with a checkpoint of the CPU
configuration (random weights, seed 0, no prior), and the stages `global,guided,joint` with
the shipped model and a prior 10 deg / 25 cm from the drive's ground truth (what the demo
runs). The node (`python -m nclr_ros.calibration_node`) runs in its own process in a random
ROS domain (201-230, apart from the tests' 100-200). A driver process (this file, `drive`)
replays the synthetic frames (rgb8 Image, CameraInfo, PointCloud2 x y z intensity, equal
stamps) with sensor-data QoS at the input rate, waits for the node to finish its backlog,
and reads the node's own counters from `/diagnostics`.
After one warm-up pair is processed, it reports pairs processed per second and the share
of published pairs that were processed (the node computes only on the newest pair, so the
rest are dropped by design). With random weights RANSAC's adaptive stop differs from a
trained model's.

    python benchmarks/bench_node.py drive SYNTHETIC_ROOT SECONDS RATE_HZ TIMEOUT_S
"""
from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nclr_ros.node_process import stop_node_process

NODE = "nclr_calibration"
INPUT_RATE_HZ = 10.0
FRAMES_REPLAYED = 4
DIAGNOSTICS_PERIOD_S = 0.2
CAMERA_FRAME, LIDAR_FRAME = "camera", "lidar"
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- driver (separate process)
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


def drive(synthetic_root: str, seconds: float, rate_hz: float, timeout_s: float
          ) -> dict[str, Any]:
    """Publish, wait, and report the node's counters (runs in the driver process)."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from nclr_core.data.semantickitti import SemanticKittiDataset
    from nclr_ros.dds_profile import apply_default_profile

    reader = SemanticKittiDataset(synthetic_root, sequences=("00",))
    frames = [reader[i] for i in range(min(FRAMES_REPLAYED, len(reader)))]
    apply_default_profile()
    rclpy.init()
    node = rclpy.create_node("nclr_benchmark_driver")
    deadline = time.monotonic() + timeout_s
    pub_image = node.create_publisher(Image, "image", qos_profile_sensor_data)
    pub_info = node.create_publisher(CameraInfo, "camera_info", qos_profile_sensor_data)
    pub_cloud = node.create_publisher(PointCloud2, "points", qos_profile_sensor_data)
    latest: dict[str, Any] = {"values": {}, "received": 0.0}

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(NODE):
                latest["values"] = {kv.key: kv.value for kv in status.values}
                latest["received"] = time.monotonic()

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    messages = frame_messages(frames)

    def spin_until(condition, limit_s: float) -> bool:
        end = min(deadline, time.monotonic() + limit_s)
        while time.monotonic() < end:
            if condition():
                return True
            rclpy.spin_once(node, timeout_sec=0.02)
        return False

    def count(key: str) -> int:
        return int(latest["values"].get(key, 0))

    def idle_since(t: float) -> bool:
        return (latest["received"] > t and count("pairs_pending") == 0
                and count("pairs_in_progress") == 0)

    def publish(i: int) -> None:
        info, image, cloud = messages[i % len(messages)]
        stamp = node.get_clock().now().to_msg()
        for msg in (info, image, cloud):
            msg.header.stamp = stamp
        pub_info.publish(info)
        pub_image.publish(image)
        pub_cloud.publish(cloud)

    report: dict[str, Any] = {"errors": []}
    if not spin_until(lambda: min(p.get_subscription_count()
                                  for p in (pub_image, pub_info, pub_cloud)) > 0
                      and latest["received"] > 0, timeout_s / 3):
        report["errors"].append("the node's subscriptions or diagnostics never appeared")
    else:
        # warm-up: one pair processed (model and first-call costs), backlog empty
        sent = 0
        while count("pairs_processed") == 0 and time.monotonic() < deadline:
            publish(sent)
            sent += 1
            spin_until(lambda: count("pairs_processed") > 0, 1.0)
        t = time.monotonic()
        if not spin_until(lambda: idle_since(t), timeout_s / 3):
            report["errors"].append("no warm-up pair was processed")
        base = {k: count(k) for k in ("pairs_received", "pairs_processed", "pairs_dropped")}
        total = int(round(seconds * rate_hz))
        t0 = time.monotonic()
        for i in range(total):
            spin_until(lambda i=i: False, max(0.0, t0 + i / rate_hz - time.monotonic()))
            publish(i)
        t_published = time.monotonic()
        if not spin_until(lambda: idle_since(t_published), deadline - time.monotonic()):
            report["errors"].append("the node did not finish its backlog in time")
        t_done = latest["received"]
        delta = {k: count(k) - v for k, v in base.items()}
        report.update({
            "pairs_published": total,
            "pairs_received": delta["pairs_received"],
            "pairs_processed": delta["pairs_processed"],
            "pairs_dropped": delta["pairs_dropped"],
            "processed_share": delta["pairs_processed"] / total,
            "processed_pairs_per_s": delta["pairs_processed"] / (t_done - t0),
            "publish_s": t_published - t0,
            "last_latency_s": float(latest["values"].get("last_latency_s", "nan")),
            "image_wh": [int(messages[0][1].width), int(messages[0][1].height)],
            "points_per_cloud": int(messages[0][2].width * messages[0][2].height),
        })
    node.destroy_node()
    rclpy.shutdown()
    return report


# ---------------------------------------------------------------- benchmark
def unavailable_reason() -> str | None:
    """Why the node cannot be benchmarked here, or None."""
    if importlib.util.find_spec("nclr_ros.calibration_node") is None:
        return "node not available: nclr_ros.calibration_node is missing"
    for module in ("rclpy", "rmw_fastrtps_cpp"):
        if importlib.util.find_spec(module) is None:
            return f"node not available: {module} is not installed"
    return None


def _checkpoint(path: Path) -> Path:
    import torch

    from benchmarks.inputs import CPU_CONFIG, config
    from nclr_core.checkpoint import save_checkpoint
    from nclr_core.config import to_dict
    from nclr_core.engine.trainer import build_model

    cfg = config(CPU_CONFIG)
    torch.manual_seed(0)
    model = build_model(cfg)
    # what the trainer saves: the weights and the resolved config
    save_checkpoint(path, model=model.state_dict(), config=to_dict(cfg))
    return path


CONFIGURATIONS = {
    "global": "CPU config, random weights, no prior",
    "global,guided,joint": "shipped model, prior 10 deg / 25 cm from the truth",
}


def _prior_parameters(synthetic_root: Path) -> dict[str, str]:
    """use_prior and the prior of the replayed drive: its truth moved 10 deg / 25 cm."""
    import numpy as np

    from nclr_core.data.semantickitti import SemanticKittiDataset
    from nclr_core.geometry.se3 import quaternion_xyzw_from_matrix
    from nclr_core.online.pose import prior_at_distance

    truth = SemanticKittiDataset(synthetic_root, sequences=("00",))[0]["T_cam_lidar"]
    prior = prior_at_distance(truth, 10.0, 0.25, np.random.default_rng(0))
    listed = lambda values: "[" + ", ".join(f"{float(v):.12e}" for v in values) + "]"  # noqa: E731
    return {"use_prior": "true", "prior_translation": listed(prior[:3, 3]),
            "prior_quaternion_xyzw": listed(quaternion_xyzw_from_matrix(prior[:3, :3]))}


def run(quick: bool, synthetic_root: Path) -> dict[str, Any]:
    """The node section, per configuration: {"skipped": reason} when the node or ROS is not
    available."""
    reason = unavailable_reason()
    if reason:
        return {"skipped": reason}
    stages = ["global"] if quick else list(CONFIGURATIONS)
    return {"runs": {name: _run(name, quick, synthetic_root) for name in stages}}


def _run(stages: str, quick: bool, synthetic_root: Path) -> dict[str, Any]:
    seconds = 3.0 if quick else 30.0
    timeout_s = 120.0 if quick else 240.0
    with tempfile.TemporaryDirectory() as tmp:
        params = {"stages": stages, "output_directory": str(Path(tmp) / "out"),
                  "save_on_shutdown": "false", "min_frames": "1",
                  "diagnostics_period_s": str(DIAGNOSTICS_PERIOD_S)}
        if stages == "global":
            params["model_path"] = str(_checkpoint(Path(tmp) / "cpu_config.pt"))
        else:  # the shipped model (model_path empty)
            params.update(_prior_parameters(synthetic_root))
        env = dict(os.environ, ROS_DOMAIN_ID=str(random.randint(201, 230)),
                   RMW_IMPLEMENTATION="rmw_fastrtps_cpp", PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                            os.environ.get("PYTHONPATH")])))
        args = [a for k, v in params.items() for a in ("-p", f"{k}:={v}")]
        log_path = Path(tmp) / "node.log"
        with open(log_path, "w") as log:
            node = subprocess.Popen(
                [sys.executable, "-m", "nclr_ros.calibration_node", "--ros-args", *args],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
            try:
                driver = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "drive",
                     str(synthetic_root), str(seconds), str(INPUT_RATE_HZ), str(timeout_s)],
                    env=env, capture_output=True, text=True, timeout=timeout_s + 60, cwd=REPO)
            finally:
                stop_node_process(node, 30.0)
        if driver.returncode != 0:
            raise RuntimeError(f"node benchmark driver failed: {driver.stderr[-2000:]}\n"
                               f"node log: {log_path.read_text()[-2000:]}")
        report = json.loads(driver.stdout.splitlines()[-1])
        if report["errors"]:
            raise RuntimeError(f"node benchmark: {'; '.join(report['errors'])}\n"
                               f"node log: {log_path.read_text()[-2000:]}")
    report.pop("errors")
    return {"input_rate_hz": INPUT_RATE_HZ, "seconds": seconds,
            "model": CONFIGURATIONS[stages], **report}


if __name__ == "__main__":
    if len(sys.argv) != 6 or sys.argv[1] != "drive":
        raise SystemExit(__doc__.splitlines()[-1].strip())
    sys.path.insert(0, str(REPO))
    print(json.dumps(drive(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]),
                           float(sys.argv[5]))), flush=True)
