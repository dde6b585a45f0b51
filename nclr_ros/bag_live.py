"""The live pass of `nclr-bag eval`: the calibration node in its own process, the bag
played into it in lock-step, its per-pair records and diagnostics recorded (see
`nclr_ros.bag_eval` for why lock-step), and the prior as exact parameter literals."""
from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nclr_core.data.rosbag.messages import CAMERA_INFO_TYPE, BagError
from nclr_core.data.rosbag.reader import BagFrames, iter_raw, open_bag, topic_types
from nclr_core.engine.online_eval import NO_CHECKPOINT
from nclr_core.geometry.se3 import (
    make_transform,
    matrix_from_quaternion_xyzw,
    quaternion_xyzw_from_matrix,
)
from nclr_core.online.records import FrameRecord
from nclr_ros.bag_report import Pass
from nclr_ros.calibration_parameters import NODE_NAME, STATUS_SUFFIX
from nclr_ros.node_process import stop_node_process

if TYPE_CHECKING:
    from nclr_ros.bag_eval import EvalOptions

LOG = logging.getLogger(__name__)

LIVE_DIAGNOSTICS_PERIOD_S = 0.05
NODE_STARTUP_TIMEOUT_S = 120.0
_ROLE_ORDER = {"info": 0, "image": 1, "points": 2}  # BagFrames' order of tied messages


def _param_float(value: float) -> str:
    """A float as a ROS parameter literal that reads back exactly (always with a dot)."""
    return f"{float(value):.17e}"


def prior_parameters(T_cam_lidar: np.ndarray) -> tuple[list[str], list[str]]:
    """(translation, quaternion xyzw) as exact parameter literals."""
    t = [_param_float(v) for v in T_cam_lidar[:3, 3]]
    q = [_param_float(v) for v in quaternion_xyzw_from_matrix(T_cam_lidar[:3, :3])]
    return t, q


def node_prior(T_cam_lidar: np.ndarray) -> np.ndarray:
    """The prior the node builds from `prior_parameters(T_cam_lidar)` (bit for bit)."""
    t, q = prior_parameters(T_cam_lidar)
    quaternion = np.asarray([float(v) for v in q], dtype=np.float64)
    return make_transform(matrix_from_quaternion_xyzw(quaternion / np.linalg.norm(quaternion)),
                          np.asarray([float(v) for v in t], dtype=np.float64))


def node_command(options: EvalOptions, frames: BagFrames, prior: np.ndarray | None,
                  params: dict[str, Any]) -> list[str]:
    topics = options.topics
    compressed = frames.image_topic != topics.image
    command = [sys.executable, "-m", "nclr_ros.calibration_node", "--ros-args",
               "-p", f"device:={options.device}",
               "-p", "reliability:=reliable",
               "-p", f"qos_depth:={params['qos_depth']}",
               "-p", f"diagnostics_period_s:={LIVE_DIAGNOSTICS_PERIOD_S}",
               "-p", "save_on_shutdown:=false",
               "-p", f"stages:={params['stages']}",
               "-r", f"camera_info:={topics.info}", "-r", f"points:={topics.points}"]
    if str(options.checkpoint) != NO_CHECKPOINT:
        command += ["-p", f"model_path:={Path(options.checkpoint).resolve()}"]
    if compressed:
        command += ["-p", "use_compressed:=true", "-r", f"image/compressed:={frames.image_topic}"]
    else:
        command += ["-r", f"image:={frames.image_topic}"]
    if prior is not None:
        t, q = prior_parameters(prior)
        command += ["-p", "use_prior:=true", "-p", f"prior_translation:=[{','.join(t)}]",
                    "-p", f"prior_quaternion_xyzw:=[{','.join(q)}]"]
    return command


def _bag_messages(bag: Path, roles: dict[str, str]) -> Iterator[tuple[str, str, str, bytes]]:
    """(role, topic, msgtype, CDR bytes) in bag order, ties ordered as `BagFrames` does."""
    group: list[tuple[int, str, str, str, bytes]] = []
    stamp = None
    with open_bag(bag) as reader:
        for topic, msgtype, timestamp, data in iter_raw(reader, bag, list(roles)):
            if timestamp != stamp:
                yield from (item[1:] for item in sorted(group, key=lambda item: item[0]))
                group, stamp = [], timestamp
            role = roles[topic]
            group.append((_ROLE_ORDER[role], role, topic, msgtype, bytes(data)))
    yield from (item[1:] for item in sorted(group, key=lambda item: item[0]))


class _LiveSession:
    """The recorder/player side of a live run: one rclpy node in a private context."""

    COUNTER = {"info": "camera_infos_received", "image": "images_received",
               "points": "clouds_received"}

    def __init__(self, domain: int, process: subprocess.Popen, log_path: Path,
                 timeout_s: float) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.signals import SignalHandlerOptions

        self.rclpy = rclpy
        self.process, self.log_path, self.timeout_s = process, log_path, timeout_s
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain,
                   signal_handler_options=SignalHandlerOptions.NO)
        self.node = Node("nclr_bag_eval", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.records: list[FrameRecord] = []
        self.diagnostics: dict[str, str] | None = None
        self.diagnostics_seen = 0
        self.node.create_subscription(DiagnosticArray, f"/{NODE_NAME}/frame_estimates",
                                      self._on_frame, 100)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_frame(self, msg: Any) -> None:
        for status in msg.status:
            if status.name == f"{NODE_NAME}{STATUS_SUFFIX}":
                self.records.append(FrameRecord.from_values(
                    {kv.key: kv.value for kv in status.values}))

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name == f"{NODE_NAME}: calibration":
                self.diagnostics = {kv.key: kv.value for kv in status.values}
                self.diagnostics_seen += 1

    def count(self, key: str) -> int:
        return int(self.diagnostics.get(key, "0")) if self.diagnostics else 0

    def spin_until(self, condition: Callable[[], bool], what: str, timeout_s: float) -> None:
        """Spin until `condition()`; BagError when the node exits or `timeout_s` passes."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if self.process.poll() is not None:
                raise BagError(f"the calibration node exited (status {self.process.returncode}) "
                               f"while waiting for {what}: {_last_line(self.log_path)}")
            if time.monotonic() > deadline:
                raise BagError(f"timed out after {timeout_s:.0f} s waiting for {what} "
                               f"(node log: {self.log_path})")
            self.executor.spin_once(timeout_sec=0.01)

    def idle(self) -> bool:
        """The node took everything published, calibrated it, and its records arrived."""
        return (self.diagnostics is not None and self.count("pairs_pending") == 0
                and self.count("pairs_in_progress") == 0
                and len(self.records) >= self.count("pairs_processed"))

    def play(self, bag: Path, topics: dict[str, tuple[str, str]]) -> None:
        """Publish the bag's messages one by one in lock-step with the node."""
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        from nclr_ros.bag_play import message_class

        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        publishers = {}
        for role, (topic, msgtype) in topics.items():
            cls = message_class(msgtype)
            if cls is None:
                raise BagError(f"{bag}: message type {msgtype} of {topic} is not installed")
            publishers[role] = self.node.create_publisher(cls, topic, qos)
        self.spin_until(lambda: self.diagnostics is not None and all(
            p.get_subscription_count() > 0 for p in publishers.values()),
            "the calibration node to start and subscribe", NODE_STARTUP_TIMEOUT_S)
        sent = {role: self.count(counter) for role, counter in self.COUNTER.items()}
        roles = {topic: role for role, (topic, _) in topics.items()}
        for role, topic, _, data in _bag_messages(bag, roles):
            publishers[role].publish(data)
            sent[role] += 1
            counter = self.COUNTER[role]
            self.spin_until(lambda c=counter, n=sent[role]: self.count(c) >= n and self.idle(),
                            f"the node to take {topic} message {sent[role]}", self.timeout_s)
        seen = self.diagnostics_seen
        self.spin_until(lambda: self.diagnostics_seen > seen + 1,
                        "the node's final diagnostics", self.timeout_s)

    def close(self) -> None:
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.context)


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def run_live(bag: Path, frames: BagFrames, options: EvalOptions, params: dict[str, Any],
             prior: np.ndarray | None) -> Pass:
    """Play the bag into the node in lock-step and record its per-pair estimates."""
    from nclr_ros.dds_profile import apply_default_profile

    apply_default_profile()
    domain = random.randint(100, 200)
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain),
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    if options.threads is not None:
        env["OMP_NUM_THREADS"] = str(options.threads)
    options.out.mkdir(parents=True, exist_ok=True)
    log_path = options.out / "node.log"
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(node_command(options, frames, prior, params), env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    LOG.info("calibration node started (pid %d, ROS_DOMAIN_ID %d, log %s)", process.pid,
             domain, log_path)
    with open_bag(bag) as reader:
        types = topic_types(reader)
    topics = {"info": (options.topics.info, CAMERA_INFO_TYPE),
              "image": (frames.image_topic, frames.image_type),
              "points": (options.topics.points, types[options.topics.points])}
    try:
        session = _LiveSession(domain, process, log_path, options.timeout_s)
        try:
            session.play(bag, topics)
        finally:
            session.close()
    finally:
        stop_node_process(process)
    diag = session.diagnostics or {}
    counts = {"pairs": session.count("pairs_received"),
              "processed": session.count("pairs_processed"),
              "dropped_pairs": session.count("pairs_dropped"),
              "dropped_images": session.count("sync_dropped_images"),
              "dropped_clouds": session.count("sync_dropped_clouds"),
              "images_without_info": session.count("bad_input.no_camera_info")}
    counts.update({key: int(value) for key, value in diag.items()
                   if key.startswith("bad_input.")})
    drift = {"drifted": diag["drifted"] == "True", "drift": diag["drift"]} \
        if "drifted" in diag else None
    return Pass(session.records, counts, drift)
