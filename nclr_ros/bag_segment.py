"""Replay a bag's LiDAR clouds into the segmentation node and collect the labels it publishes.

`segment_bag_live(bag, options)` starts `nclr_segmentation` (`python -m
nclr_ros.segmentation_node`, reliable subscription) in a random ROS domain on loopback, plays
the bag's cloud topic into it with `nclr-bag play --reliable` (`python -m nclr_ros.bag_cli`),
and returns every `~/labels` cloud received, with the node's last diagnostics and log. Both
processes run over real DDS; nothing is mocked. The node segments the newest cloud only, so a
bag played faster than the node segments loses clouds (counted as dropped in the
diagnostics): choose `rate` accordingly.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nclr_core.data.rosbag.messages import BagError
from nclr_core.data.rosbag.reader import iter_raw, open_bag, topic_types
from nclr_ros.dds_profile import apply_default_profile
from nclr_ros.node_process import stop_node_process

NODE_NAME = "nclr_segmentation"
POINTS_TOPIC = "/lidar/points"
POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
SETTLE_S = 2.5  # after the player exits: > 2 diagnostics periods (1 s) of the node


@dataclass(frozen=True)
class SegmentOptions:
    """`model_path` ("" = the node's shipped model), the bag's cloud topic, play `rate`
    (x real time), `timeout_s` for the whole replay, `delay_s` before the first message
    (discovery), `node_log` (the node's output; None: discarded)."""

    model_path: str = ""
    points_topic: str = POINTS_TOPIC
    rate: float = 1.0
    timeout_s: float = 120.0
    delay_s: float = 2.0
    node_log: Path | None = None


@dataclass(frozen=True)
class LabelledCloud:
    """One `~/labels` message: its stamp (s), xyz (N, 3) float32, labels (N,) uint16 train
    ids, confidence (N,) float32."""

    stamp: float
    xyz: np.ndarray
    labels: np.ndarray
    confidence: np.ndarray


@dataclass
class SegmentRun:
    """What a replay gave: the labelled clouds in arrival order, the bag's cloud count, the
    node's last diagnostic values."""

    clouds: list[LabelledCloud] = field(default_factory=list)
    clouds_in_bag: int = 0
    diagnostics: dict[str, str] = field(default_factory=dict)


def count_clouds(bag: str | Path, topic: str) -> int:
    """Number of PointCloud2 messages on `topic`; BagError when the topic is missing."""
    with open_bag(bag) as reader:
        types = topic_types(reader)
        if types.get(topic) != POINTCLOUD2:
            raise BagError(f"{bag}: no {POINTCLOUD2} topic {topic!r}; topics: "
                           f"{', '.join(sorted(types)) or 'none'}")
        return sum(1 for _ in iter_raw(reader, bag, [topic]))


def segment_bag_live(bag: str | Path, options: SegmentOptions) -> SegmentRun:
    """Play `bag`'s clouds into a segmentation node and collect its labels (module docstring).

    Raises BagError when the bag has no such cloud topic, the node exits early or no
    subscription appears within the timeout.
    """
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import PointCloud2

    from nclr_core.data.rosbag.pointcloud2 import pointcloud2_to_array

    bag = Path(bag)
    run = SegmentRun(clouds_in_bag=count_clouds(bag, options.points_topic))
    domain = random.randint(100, 200)
    apply_default_profile()  # large clouds over shared memory, here and in both children
    # the children discover as this process does (ROS_AUTOMATIC_DISCOVERY_RANGE etc.)
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED="1")
    node_args = ["-r", f"points:={options.points_topic}", "-p", "reliability:=reliable"]
    if options.model_path:
        node_args += ["-p", f"model_path:={options.model_path}"]
    log = open(options.node_log, "w") if options.node_log else subprocess.DEVNULL  # noqa: SIM115
    node = subprocess.Popen([sys.executable, "-m", "nclr_ros.segmentation_node", "--ros-args",
                             *node_args], env=env, stdout=log, stderr=subprocess.STDOUT)
    player = None
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain,
               signal_handler_options=SignalHandlerOptions.NO)
    try:
        listener = rclpy.create_node("nclr_bag_segment", context=context)
        diagnostics: list[dict[str, str]] = []

        def on_labels(msg: PointCloud2) -> None:
            values = pointcloud2_to_array(msg)
            run.clouds.append(LabelledCloud(
                msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9,
                np.column_stack([values["x"], values["y"], values["z"]]),
                np.asarray(values["label"]), np.asarray(values["confidence"])))

        def on_diagnostics(msg: DiagnosticArray) -> None:
            for status in msg.status:
                if status.name.startswith(NODE_NAME):
                    diagnostics.append({kv.key: kv.value for kv in status.values})

        listener.create_subscription(PointCloud2, f"/{NODE_NAME}/labels", on_labels, 10)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(listener)
        listener.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
        deadline = time.monotonic() + options.timeout_s

        def spin_until(done) -> bool:
            while time.monotonic() < deadline:
                if done():
                    return True
                if node.poll() is not None:
                    raise BagError(f"the segmentation node exited with status {node.returncode}"
                                   + (f"; see {options.node_log}" if options.node_log else ""))
                executor.spin_once(timeout_sec=0.05)
            return False

        if not spin_until(lambda: listener.count_subscribers(options.points_topic) > 0
                          and listener.count_publishers(f"/{NODE_NAME}/labels") > 0):
            raise BagError(f"the segmentation node did not subscribe to {options.points_topic} "
                           f"within {options.timeout_s:.0f} s")
        player = subprocess.Popen(
            [sys.executable, "-m", "nclr_ros.bag_cli", "play", str(bag), "--topics",
             options.points_topic, "--reliable", "--rate", str(options.rate), "--delay",
             str(options.delay_s), "--wait-for-subscribers", str(options.timeout_s)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

        settled: list[float] = []  # when the player exited plus SETTLE_S

        def finished() -> bool:
            """The player is done (every reliable message acknowledged) and a diagnostics
            message sent SETTLE_S later shows the node idle, every label it published
            received."""
            if player.poll() is None:
                return False
            if not settled:
                settled.append(time.monotonic() + SETTLE_S)
            if time.monotonic() < settled[0]:
                diagnostics.clear()  # only messages sent after the settling time count
                return False
            if not diagnostics:
                return False
            last = diagnostics[-1]
            return (last.get("clouds_pending") == "0"
                    and last.get("clouds_in_progress") == "0"
                    and int(last.get("clouds_processed", 0)) <= len(run.clouds))

        spin_until(finished)
        if player.poll() is not None and player.returncode != 0:
            raise BagError(f"nclr-bag play failed: {player.stderr.read().strip()}")
        run.diagnostics = diagnostics[-1] if diagnostics else {}
        executor.shutdown()
        listener.destroy_node()
    finally:
        if player is not None:
            stop_node_process(player)
        stop_node_process(node)
        rclpy.shutdown(context=context)
        if log is not subprocess.DEVNULL:
            log.close()
    return run
