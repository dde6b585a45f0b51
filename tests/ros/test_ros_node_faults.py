"""The calibration node under faults (issue 16, items 4-6), in this process on real rclpy:
implausible intrinsics, an exception inside the worker, the output folder's default, and
temp files left by a save that was killed."""
from __future__ import annotations

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
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from nclr_core.online.records import FrameRecord
from nclr_ros.calibration_node import NODE_NAME, CalibrationNode
from nclr_ros.image_msgs import array_to_image
from nclr_ros.node_common import resolve_output_directory, ros_home
from nclr_ros.pointcloud2 import xyz_fields_to_pointcloud2

IMAGE_H, IMAGE_W = 64, 96
K = [80.0, 0.0, 47.5, 0.0, 80.0, 31.5, 0.0, 0.0, 1.0]


@pytest.fixture()
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=random.randint(100, 200))
    yield ctx
    rclpy.shutdown(context=ctx)


@pytest.fixture()
def make_node(context, tmp_path, save_tiny_calibration_checkpoint):
    checkpoint = save_tiny_calibration_checkpoint(tmp_path / "tiny.pt")
    nodes = []

    def make(**params) -> CalibrationNode:
        values = {"model_path": str(checkpoint), "save_on_shutdown": False, **params}
        node = CalibrationNode(context=context, parameter_overrides=[
            Parameter(k, value=v) for k, v in values.items()])
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.shutdown()
        node.destroy_node()


def _camera_info(k: list[float]) -> CameraInfo:
    msg = CameraInfo(width=IMAGE_W, height=IMAGE_H, distortion_model="plumb_bob")
    msg.header.frame_id = "camera"
    msg.k, msg.d = k, [0.0] * 5
    return msg


def _feed_pair(node: CalibrationNode, stamp_s: int) -> None:
    rng = np.random.default_rng(stamp_s)
    header = Header(frame_id="camera")
    header.stamp.sec = stamp_s
    node._on_image(array_to_image(rng.integers(0, 256, (IMAGE_H, IMAGE_W, 3), np.uint8),
                                  "rgb8", header))
    cloud_header = Header(frame_id="lidar")
    cloud_header.stamp.sec = stamp_s
    xyz = np.column_stack([rng.uniform(2, 30, 500), rng.uniform(-10, 10, 500),
                           rng.uniform(-1, 1, 500)]).astype(np.float32)
    node._on_cloud(xyz_fields_to_pointcloud2(xyz, cloud_header,
                                             intensity=np.ones(500, np.float32)))


def test_camera_info_with_focal_length_1e_minus_300_is_counted_and_not_used(make_node):
    node = make_node()
    node._on_camera_info(_camera_info([1e-300, 0.0, 47.5, 0.0, 1e-300, 31.5, 0.0, 0.0, 1.0]))
    assert node.camera is None
    assert node.bad_input.counts() == {"bad_input.bad_camera_info": 1}
    _feed_pair(node, 1)  # the image finds no usable camera: dropped, never calibrated
    assert node.bad_input.counts()["bad_input.no_camera_info"] == 1
    node._on_camera_info(_camera_info(K))
    assert node.camera is not None and node.camera.K[0, 0] == 80.0


def test_implausible_intrinsics_parameters_stop_the_node_at_start(make_node):
    with pytest.raises(ValueError, match="camera fy = 1e-300 px is implausible"):
        make_node(intrinsics_from_parameters=True, camera_width=IMAGE_W,
                  camera_height=IMAGE_H,
                  camera_k=[80.0, 0.0, 47.5, 0.0, 1e-300, 31.5, 0.0, 0.0, 1.0])


def test_any_worker_exception_is_counted_and_published_as_a_frame_record(make_node, context):
    node = make_node()

    def singular(*args, **kwargs):  # what fx = fy = 1e-300 used to cause deep in the solve
        raise torch.linalg.LinAlgError("linalg.solve: The solver failed because the input "
                                       "matrix is singular.")

    node.pipeline.calibrator.features = singular
    listener = rclpy.create_node("fault_listener", context=context)
    records: list[FrameRecord] = []
    listener.create_subscription(
        DiagnosticArray, f"/{NODE_NAME}/frame_estimates",
        lambda msg: records.append(FrameRecord.from_values(
            {kv.key: kv.value for kv in msg.status[0].values})), 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(listener)
    try:
        deadline = time.monotonic() + 10.0
        while listener.count_publishers(f"/{NODE_NAME}/frame_estimates") == 0:
            assert time.monotonic() < deadline
            executor.spin_once(timeout_sec=0.05)
        node._on_camera_info(_camera_info(K))
        _feed_pair(node, 5)
        while not records and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.shutdown()
        listener.destroy_node()
    assert len(records) == 1
    record = records[0]
    assert record.image_stamp == record.cloud_stamp == 5.0
    assert not record.valid and not record.accepted and record.T_cam_lidar is None
    assert record.reason.startswith("calibration failed: _LinAlgError: linalg.solve")
    values = node.diagnostics_values()
    assert values["worker_errors._LinAlgError"] == "1"
    assert values["pairs_received"] == values["pairs_processed"] == "1"


def test_output_directory_defaults_under_ros_home(make_node, tmp_path, monkeypatch):
    monkeypatch.setenv("ROS_HOME", str(tmp_path / "ros_home"))
    node = make_node()
    assert node.params["output_directory"] == ""
    assert node.output_directory == tmp_path / "ros_home" / "nclr_calibration"
    assert resolve_output_directory("", "x", {}) == Path.home() / ".ros" / "x"
    assert ros_home({"ROS_HOME": "~/elsewhere"}) == Path.home() / "elsewhere"
    relative = resolve_output_directory("calib", "x")
    assert relative.is_absolute() and relative == Path.cwd() / "calib"


def test_a_killed_save_leaves_temp_files_that_the_next_start_removes(make_node, tmp_path):
    out = tmp_path / "calibration"
    # a writer killed with SIGKILL inside the write: its temp file stays behind
    script = ("import os, signal, sys\n"
              "from nclr_core.atomic_write import atomic_paths\n"
              "with atomic_paths([sys.argv[1] + '/nclr_calibration.yaml',\n"
              "                   sys.argv[1] + '/nclr_calibration.json']) as temps:\n"
              "    temps[0].write_text('half')\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n")
    killed = subprocess.run([sys.executable, "-c", script, str(out)])
    assert killed.returncode == -signal.SIGKILL
    leftovers = sorted(p.name for p in out.iterdir())
    assert len(leftovers) == 2 and all(".nclr_calibration.tmp-" in n for n in leftovers)
    assert not (out / "nclr_calibration.yaml").exists()
    mine = out / f".nclr_calibration.tmp-{os.getpid()}-inuse.yaml"  # a live writer's
    mine.write_text("being written")
    other = out / "notes.txt"
    other.write_text("the user's")
    make_node(output_directory=str(out))
    assert sorted(p.name for p in out.iterdir()) == sorted([mine.name, other.name])
