"""The segmentation node in its own process, driven over real DDS on loopback.

A tiny untrained segmentation checkpoint is enough: its labels are arbitrary, but every
cloud must come back labelled. The node runs as `python -m nclr_ros.segmentation_node` in a
random ROS domain (100..200); a driver process (this file run as a script) publishes clouds
with sensor-data QoS: good ones, then bad input, then more good ones and a burst; it prints a
JSON report that the test checks together with the node's log.

    python tests/ros/test_ros_segmentation_node.py drive TIMEOUT_S
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "config" / "fastdds_large_data.xml"
NODE = "nclr_segmentation"
LIDAR_FRAME = "lidar_top"
CLOUD_POINTS = 20_000
BACKBONE = {"variant": "minkunet18", "in_channels": 4, "out_channels": 8, "voxel_size": 0.5,
            "base_channels": 4, "point_range": [-40.0, -40.0, -3.0, 40.0, 40.0, 3.0]}
BAD_REASONS = ("empty_cloud", "non_finite_points", "cloud_without_xyz")
DRIVER_TIMEOUT_S = 60.0


# ---------------------------------------------------------------- driver (separate process)
def _drive(timeout_s: float) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Header

    from nclr_core.class_table import load_class_table
    from nclr_core.data.rosbag.pointcloud2 import pointcloud2_to_array
    from nclr_ros.pointcloud2 import array_to_pointcloud2, xyz_fields_to_pointcloud2
    from nclr_ros.segmentation_node import packed_rgb

    rclpy.init()
    node = rclpy.create_node("nclr_segmentation_driver")
    report: dict = {"errors": []}
    deadline = time.monotonic() + timeout_s
    pub = node.create_publisher(PointCloud2, "points", qos_profile_sensor_data)
    labels: list[PointCloud2] = []
    colored: list[PointCloud2] = []
    diagnostics: list[dict] = []
    node.create_subscription(PointCloud2, f"{NODE}/labels", labels.append, 10)
    node.create_subscription(PointCloud2, f"{NODE}/colored", colored.append, 10)

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(NODE):
                diagnostics.append({kv.key: kv.value for kv in status.values})

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)

    def spin_until(condition, what: str, limit: float = 10.0) -> bool:
        end = min(deadline, time.monotonic() + limit)
        while time.monotonic() < end:
            if condition():
                return True
            rclpy.spin_once(node, timeout_sec=0.05)
        report["errors"].append(f"timed out waiting for {what}")
        return False

    def diag(key: str) -> int:
        return int(diagnostics[-1].get(key, 0)) if diagnostics else 0

    def header(stamp: float) -> Header:
        h = Header(frame_id=LIDAR_FRAME)
        h.stamp.sec, h.stamp.nanosec = int(stamp), int(round((stamp % 1) * 1e9))
        return h

    def stamp_of(msg: PointCloud2) -> float:
        return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9

    rng = np.random.default_rng(0)
    xyz = np.column_stack([rng.uniform(-35, 35, CLOUD_POINTS),
                           rng.uniform(-35, 35, CLOUD_POINTS),
                           rng.uniform(-2, 2, CLOUD_POINTS)]).astype(np.float32)
    intensity = rng.uniform(0, 1, CLOUD_POINTS).astype(np.float32)

    def publish(stamp: float) -> None:
        pub.publish(xyz_fields_to_pointcloud2(xyz, header(stamp), intensity=intensity))

    spin_until(lambda: pub.get_subscription_count() > 0, "the node's subscription",
               timeout_s / 2)
    time.sleep(0.5)

    # 1. a good cloud comes back labelled, with its header, point for point
    stamp = 100.25
    for _ in range(4):  # best effort: resend if the cloud was lost
        publish(stamp)
        if spin_until(lambda: labels and colored, "labels and colored", 6.0):
            break
        report["errors"].pop()
        stamp += 1.0
    else:
        report["errors"].append("no labels after 4 clouds")
    if labels:
        msg = labels[-1]
        out = pointcloud2_to_array(msg)
        report["labels"] = {
            "frame_id": msg.header.frame_id, "stamp_ok": abs(stamp_of(msg) - stamp) < 1e-9,
            "fields": [(f.name, f.datatype) for f in msg.fields],
            "count": msg.width * msg.height, "label_max": int(out["label"].max()),
            "confidence_range": [float(out["confidence"].min()),
                                 float(out["confidence"].max())],
            "xyz_equal": bool(np.array_equal(np.column_stack([out["x"], out["y"], out["z"]]),
                                             xyz))}
        if colored:
            table = load_class_table(REPO / "config" / "semantic_kitti_classes.yaml")
            rgb = pointcloud2_to_array(colored[-1])["rgb"]
            expected = packed_rgb(table.colours[out["label"]])
            report["colored_ok"] = bool(np.array_equal(rgb.view(np.uint32),
                                                       expected.view(np.uint32)))

    # 2. bad input, one reason at a time; each must show up in the diagnostics
    stamp += 10.0
    partial = xyz[:100].copy()
    partial[:10] = np.nan
    steps = {
        "empty_cloud": xyz_fields_to_pointcloud2(np.zeros((0, 3), np.float32), header(stamp)),
        "non_finite_points": xyz_fields_to_pointcloud2(np.full((50, 3), np.inf, np.float32),
                                                       header(stamp)),
        "cloud_without_xyz": array_to_pointcloud2(
            np.zeros(10, dtype=[("a", "<f4"), ("b", "<f4")]), header(stamp)),
    }
    report["bad_seen"] = {}
    for reason, msg in steps.items():
        for _ in range(3):
            pub.publish(msg)
            if spin_until(lambda r=reason: diag(f"bad_input.{r}") > 0, reason, 3.0):
                break
            report["errors"].pop()
        report["bad_seen"][reason] = diag(f"bad_input.{reason}")

    # a cloud with some NaN points: those are dropped, the rest is labelled
    before = len(labels)
    stamp += 1.0
    pub.publish(xyz_fields_to_pointcloud2(partial, header(stamp)))
    if spin_until(lambda: len(labels) > before, "labels of a partly NaN cloud", 5.0):
        report["partial_count"] = labels[-1].width * labels[-1].height

    # 3. good clouds are still processed; a burst is reduced to its newest cloud
    for _ in range(6):
        stamp += 1.0
        publish(stamp)
        time.sleep(0.01)
    newest = stamp

    def settled() -> bool:
        return bool(labels) and abs(stamp_of(labels[-1]) - newest) < 1e-9 and \
            diag("clouds_pending") == 0 and diag("clouds_in_progress") == 0

    spin_until(settled, "the newest cloud of the burst")
    end = time.monotonic() + 0.5
    while time.monotonic() < end:  # a fresh diagnostic
        rclpy.spin_once(node, timeout_sec=0.05)
    report["newest_processed"] = settled()
    report["diagnostics"] = diagnostics[-1] if diagnostics else {}
    node.destroy_node()
    rclpy.shutdown()
    return report


# ---------------------------------------------------------------- tests
def _tiny_checkpoint(path: Path, class_names: list[str]) -> Path:
    from nclr_core.checkpoint import save_checkpoint
    from nclr_core.models.segmentation import SegmentationNet
    from nclr_core.models.segmentation_checkpoint import SEGMENTATION_KIND

    torch.manual_seed(0)
    kwargs = {"backbone": BACKBONE, "num_classes": len(class_names)}
    net = SegmentationNet(**kwargs)
    save_checkpoint(path, kind=SEGMENTATION_KIND, model=net.state_dict(), model_kwargs=kwargs,
                    class_names=class_names, config={}, step=0)
    return path


def test_parameter_defaults_match_config_yaml():
    from nclr_ros.segmentation_node import PARAMETERS

    config = yaml.safe_load((REPO / "config" / "segment.yaml").read_text())
    params = config[NODE]["ros__parameters"]
    assert set(params) == set(PARAMETERS)
    for name, (default, description) in PARAMETERS.items():
        assert params[name] == default and type(params[name]) is type(default), name
        assert description


def test_default_class_table_is_semantic_kitti():
    from nclr_core.class_table import load_class_table
    from nclr_core.data.semantickitti import SEMANTIC_KITTI_CLASSES
    from nclr_ros.segmentation_node import packed_rgb

    table = load_class_table(REPO / "config" / "semantic_kitti_classes.yaml")
    assert table.names == list(SEMANTIC_KITTI_CLASSES)
    assert table.colours.shape == (19, 3) and table.colours.dtype == np.uint8
    assert len({tuple(c) for c in table.colours}) == 19  # tell the classes apart
    packed = packed_rgb(np.array([[255, 0, 1], [0, 128, 0]], np.uint8))
    assert packed.dtype == np.float32
    assert packed.view(np.uint32).tolist() == [0xFF0001, 0x008000]


@pytest.mark.parametrize(("text", "problem"), [
    ("classes: []\n", "non-empty list"),
    ("classes:\n  - {id: 1, name: a, rgb: [0, 0, 0]}\n", "ids must be 0, 1, 2"),
    ("classes:\n  - {id: 0, name: a, rgb: [0, 0, 0]}\n  - {id: 1, name: a, rgb: [1, 1, 1]}\n",
     "repeated name"),
    ("classes:\n  - {id: 0, name: a, rgb: [0, 0, 256]}\n", "three integers 0..255"),
    ("classes:\n  - {id: 0, name: a}\n", "exactly the keys"),
    ("classes: [\n", "cannot read"),
])
def test_bad_class_tables_are_refused_naming_the_file(tmp_path, text, problem):
    from nclr_core.class_table import load_class_table

    path = tmp_path / "classes.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem) as info:
        load_class_table(path)
    assert str(path) in str(info.value)
    with pytest.raises(ValueError, match="cannot read"):
        load_class_table(tmp_path / "missing.yaml")


def test_node_refuses_classes_that_differ_from_the_checkpoint(tmp_path):
    import rclpy
    from rclpy.parameter import Parameter

    from nclr_ros.segmentation_node import SegmentationNode

    checkpoint = _tiny_checkpoint(tmp_path / "three.pt", ["a", "b", "c"])
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=random.randint(100, 200))
    try:
        with pytest.raises(ValueError, match=r"names 19 classes .* trained on 3"):
            SegmentationNode(context=context, parameter_overrides=[
                Parameter("model_path", value=str(checkpoint))])
    finally:
        context.try_shutdown()


def test_a_missing_shipped_model_is_a_clear_error():
    import rclpy

    from nclr_ros.node_common import model_path_or_shipped

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=random.randint(100, 200))
    try:
        node = rclpy.create_node("shipped_model_check", context=context)
        assert model_path_or_shipped(node, "/my/seg.pt", "absent.pt", "x") == "/my/seg.pt"
        with pytest.raises(ValueError, match="model_path is empty and the package has no "
                                             "models/absent.pt"):
            model_path_or_shipped(node, "", "absent.pt", "fine-tuned")
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


@pytest.mark.slow
def test_node_end_to_end(tmp_path):
    pytest.importorskip("rmw_fastrtps_cpp", reason="rmw_fastrtps_cpp is not installed")
    from nclr_core.data.semantickitti import SEMANTIC_KITTI_CLASSES

    checkpoint = _tiny_checkpoint(tmp_path / "tiny.pt", list(SEMANTIC_KITTI_CLASSES))
    env = dict(os.environ, ROS_DOMAIN_ID=str(random.randint(100, 200)),
               RMW_IMPLEMENTATION="rmw_fastrtps_cpp",
               FASTDDS_DEFAULT_PROFILES_FILE=str(PROFILE), PYTHONUNBUFFERED="1")
    env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    params = {"model_path": str(checkpoint), "warn_throttle_s": "0.0",
              "diagnostics_period_s": "0.1"}
    args = [a for k, v in params.items() for a in ("-p", f"{k}:={v}")]
    log_path = tmp_path / "node.log"
    with open(log_path, "w") as log:
        node = subprocess.Popen(
            [sys.executable, "-m", "nclr_ros.segmentation_node", "--ros-args", *args],
            env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            driver = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "drive",
                 str(DRIVER_TIMEOUT_S)],
                env=env, capture_output=True, text=True, timeout=DRIVER_TIMEOUT_S + 30)
            assert driver.returncode == 0, driver.stderr[-3000:]
            report = json.loads(driver.stdout.splitlines()[-1])
            node.send_signal(signal.SIGINT)
            node.wait(timeout=30)
        finally:
            if node.poll() is None:
                node.kill()
                node.wait()
    log_text = log_path.read_text()
    assert not report["errors"], (report, log_text[-3000:])

    labels = report["labels"]
    assert labels["frame_id"] == LIDAR_FRAME and labels["stamp_ok"]
    assert labels["fields"] == [["x", 7], ["y", 7], ["z", 7], ["label", 4],
                                ["confidence", 7]]  # FLOAT32 = 7, UINT16 = 4
    assert labels["count"] == CLOUD_POINTS and labels["xyz_equal"]
    assert labels["label_max"] < len(SEMANTIC_KITTI_CLASSES)
    low, high = labels["confidence_range"]
    assert 1.0 / len(SEMANTIC_KITTI_CLASSES) - 1e-6 <= low <= high <= 1.0
    assert report["colored_ok"]

    for reason in BAD_REASONS:
        assert report["bad_seen"][reason] >= 1, reason
        assert f"[{reason}]" in log_text, reason
    assert "10 of 100 points are NaN/inf and were dropped" in log_text
    assert report["partial_count"] == 90
    assert report["newest_processed"]
    d = {k: int(v) for k, v in report["diagnostics"].items() if k.startswith("clouds_")}
    assert d["clouds_pending"] == d["clouds_in_progress"] == 0
    assert d["clouds_queued"] == d["clouds_processed"] + d["clouds_dropped"], d
    assert d["clouds_received"] == d["clouds_queued"] + d["clouds_skipped"], d
    assert d["clouds_skipped"] >= len(BAD_REASONS), d
    assert d["clouds_processed"] >= 3
    assert node.returncode == 0, log_text[-3000:]


if __name__ == "__main__":
    if sys.argv[1] == "drive":
        print(json.dumps(_drive(float(sys.argv[2]))), flush=True)
    else:
        raise SystemExit(f"unknown role {sys.argv[1]!r} (drive)")
