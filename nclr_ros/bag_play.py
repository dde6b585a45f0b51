"""Publish a rosbag2 bag into the ROS graph with its timing (a `ros2 bag play` for rclpy).

The bag is read with `rosbags` and each message's CDR bytes are published unchanged
(`Publisher.publish(bytes)`), so no per-type conversion happens and stamps stay as
recorded. Nothing is published before the whole bag has been checked: its integrity
(`nclr_core.data.rosbag.integrity.check_bag`) and a full read of the selected topics, so a damaged
bag fails with BagError instead of being played up to the damage. A message recorded at
bag time t is sent at `start + (t - t_first) / rate` on the
wall clock. Topics whose message type has no Python package here (e.g. tf2_msgs when only
the rclpy wheels are installed) are skipped with a warning.

QoS: `/tf_static` (TFMessage) is reliable + transient local, depth 1 (latched: late
subscribers get it); sensor topics are best effort (`reliable` for reliable), depth
`SENSOR_QUEUE_DEPTH`; `/clock` (with `clock`) is reliable, depth 1, and carries the bag time
of the last published message, refreshed at `clock_hz` while waiting. The Fast DDS
large-data profile is applied before `rclpy.init` unless the user set one.
"""
from __future__ import annotations

import importlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rclpy
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rosgraph_msgs.msg import Clock

from nclr_core.data.rosbag.integrity import check_bag
from nclr_core.data.rosbag.messages import TF_TYPE, BagError
from nclr_core.data.rosbag.reader import iter_raw, open_bag, topic_types
from nclr_ros.dds_profile import apply_default_profile

LOG = logging.getLogger(__name__)

SENSOR_QUEUE_DEPTH = 10


@dataclass(frozen=True)
class PlayOptions:
    """How to play: `rate` (x real time, > 0), `loop`, `clock` (publish /clock at `clock_hz`),
    `topics` (None: every topic), `reliable` sensor topics, `delay` seconds before the first
    message (time for subscribers to be discovered), `subscriber_timeout` (> 0: then, up to
    that many seconds until every played topic has a matched subscriber; a reliable
    subscriber matched late misses what came before), `ack_timeout` seconds to wait at the
    end until every reliable subscriber has acknowledged the last messages (a player that
    exits at once loses them)."""

    rate: float = 1.0
    loop: bool = False
    clock: bool = False
    clock_hz: float = 40.0
    topics: tuple[str, ...] | None = None
    reliable: bool = False
    delay: float = 0.0
    subscriber_timeout: float = 0.0
    ack_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.rate > 0.0:
            raise ValueError(f"rate must be > 0, got {self.rate}")
        if not self.clock_hz > 0.0:
            raise ValueError(f"clock rate must be > 0 Hz, got {self.clock_hz}")
        if not self.delay >= 0.0:
            raise ValueError(f"delay must be >= 0 s, got {self.delay}")
        if not self.subscriber_timeout >= 0.0:
            raise ValueError(f"subscriber timeout must be >= 0 s, got "
                             f"{self.subscriber_timeout}")
        if not self.ack_timeout >= 0.0:
            raise ValueError(f"ack timeout must be >= 0 s, got {self.ack_timeout}")


@dataclass
class PlayStats:
    """Messages published per topic, completed passes over the bag, skipped topics."""

    published: Counter = field(default_factory=Counter)
    passes: int = 0
    skipped_topics: list[str] = field(default_factory=list)


def message_class(msgtype: str) -> type | None:
    """The rclpy message class of "pkg/msg/Name", or None when its package is not installed."""
    package, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        return None


def select_topics(path: str | Path, topics: Sequence[str] | None) -> dict[str, str]:
    """{topic: msgtype} to play; BagError for a missing or damaged bag (every message of the
    selected topics is read once) or a topic it does not have."""
    check_bag(path)
    with open_bag(path) as reader:
        types = topic_types(reader)
        missing = [t for t in topics or () if t not in types]
        if missing:
            raise BagError(
                f"{path}: no topic {', '.join(map(repr, missing))}; topics in the bag: "
                f"{', '.join(sorted(types)) or 'none'}"
            )
        selected = types if topics is None else {t: types[t] for t in topics}
        for _ in iter_raw(reader, path, list(selected)):
            pass
    return selected


def _qos(topic: str, msgtype: str, reliable: bool) -> QoSProfile:
    if msgtype == TF_TYPE and topic.endswith("tf_static"):
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                          reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=SENSOR_QUEUE_DEPTH,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


class BagPlayer:
    """Plays one bag on an rclpy node; `run` blocks until done or `stop` is set."""

    def __init__(self, path: str | Path, options: PlayOptions) -> None:
        self.path = Path(path)
        self.options = options
        self.types = select_topics(self.path, options.topics)

    def run(self, node: Node, stop: threading.Event | None = None) -> PlayStats:
        """Publish the bag on `node` (an rclpy Node) with its timing; returns the counts."""
        stop = stop or threading.Event()
        stats = PlayStats()
        publishers = {}
        for topic, msgtype in sorted(self.types.items()):
            cls = message_class(msgtype)
            if cls is None:
                LOG.warning("%s: skipping %s: message type %s is not installed", self.path,
                            topic, msgtype)
                stats.skipped_topics.append(topic)
                continue
            publishers[topic] = node.create_publisher(
                cls, topic, _qos(topic, msgtype, self.options.reliable))
        clock_pub = None
        if self.options.clock:
            clock_pub = node.create_publisher(
                Clock, "/clock", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        if not publishers:
            raise BagError(f"{self.path}: none of the selected topics can be published")
        if self.options.delay > 0.0:
            stop.wait(self.options.delay)
        self._wait_for_subscribers(publishers, stop)
        while not stop.is_set():
            self._one_pass(publishers, clock_pub, stop, stats)
            if stop.is_set():
                break
            stats.passes += 1
            if not self.options.loop:
                break
        timeout = Duration(seconds=self.options.ack_timeout)
        for topic, publisher in publishers.items():  # best-effort ones return at once
            if not stop.is_set() and not publisher.wait_for_all_acked(timeout):
                LOG.warning("%s: not every subscriber of %s acknowledged the last messages "
                            "within %g s", self.path, topic, self.options.ack_timeout)
        return stats

    def _wait_for_subscribers(self, publishers: dict[str, Any], stop: threading.Event) -> None:
        """Up to `subscriber_timeout` s until every publisher has a matched subscription."""
        deadline = time.monotonic() + self.options.subscriber_timeout
        waiting = [t for t, p in publishers.items() if p.get_subscription_count() == 0]
        while waiting and not stop.is_set() and time.monotonic() < deadline:
            stop.wait(0.05)
            waiting = [t for t in waiting if publishers[t].get_subscription_count() == 0]
        if waiting and self.options.subscriber_timeout > 0.0:
            LOG.warning("%s: no subscriber of %s within %g s; playing anyway", self.path,
                        ", ".join(waiting), self.options.subscriber_timeout)

    def _one_pass(self, publishers: dict[str, Any], clock_pub: Any, stop: threading.Event,
                  stats: PlayStats) -> None:
        rate = self.options.rate
        period = 1.0 / self.options.clock_hz
        wall_start = time.monotonic()
        first_ns = None
        bag_ns = None
        with open_bag(self.path) as reader:
            for topic, _, timestamp, data in iter_raw(reader, self.path, list(publishers)):
                if first_ns is None:
                    first_ns = timestamp
                due = wall_start + (timestamp - first_ns) * 1e-9 / rate
                while not stop.is_set():
                    remaining = due - time.monotonic()
                    if remaining <= 0.0:
                        break
                    if clock_pub is None:
                        stop.wait(remaining)
                        continue
                    if bag_ns is not None:
                        clock_pub.publish(_clock(Clock, bag_ns))
                    stop.wait(min(remaining, period))
                if stop.is_set():
                    return
                bag_ns = timestamp
                if clock_pub is not None:
                    clock_pub.publish(_clock(Clock, bag_ns))
                publishers[topic].publish(bytes(data))
                stats.published[topic] += 1


def _clock(cls: type, ns: int) -> Any:
    msg = cls()
    msg.clock.sec, msg.clock.nanosec = divmod(int(ns), 10**9)
    return msg


def play(path: str | Path, options: PlayOptions, stop: threading.Event | None = None,
         node_name: str = "nclr_bag_player") -> PlayStats:
    """Validate the bag, start rclpy (with the large-data DDS profile) and play it."""
    player = BagPlayer(path, options)
    profile = apply_default_profile()
    if profile:
        LOG.info("using Fast DDS profile %s", profile)
    context = rclpy.Context()
    # No rclpy signal handlers: the caller decides how a signal stops playback (`stop`).
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = Node(node_name, context=context)
        try:
            return player.run(node, stop)
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
