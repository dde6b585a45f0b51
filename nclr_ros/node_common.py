"""What the NCLR nodes share: read-only parameters from a table, subscription QoS from a
reliability parameter, bad input counted by reason with throttled warnings, lost messages
counted per topic, a worker thread that counts its failures, the output folder under
ROS_HOME, diagnostics messages, and the console-script main loop (Fast DDS profile,
signals, clean shutdown)."""
from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header

from nclr_core.checkpoint import CheckpointError
from nclr_ros.conversions import pointcloud2_to_xyzi
from nclr_ros.dds_profile import apply_default_profile
from nclr_ros.package_files import package_file

# name -> (default, description): a node's parameter table.
ParameterTable = dict[str, tuple[Any, str]]

RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT,
               "reliable": ReliabilityPolicy.RELIABLE}

LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                     reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def declare_parameters(node: Node, table: ParameterTable) -> dict[str, Any]:
    """Declare every parameter of `table` read-only with its description; name -> value."""
    return {name: node.declare_parameter(
        name, default, ParameterDescriptor(description=text, read_only=True)).value
        for name, (default, text) in table.items()}


def model_path_or_shipped(node: Node, model_path: str, shipped_name: str, trained: str) -> str:
    """`model_path`, or where it is empty the package's models/`shipped_name` with a warning
    that says what that model was `trained` on; ValueError when neither exists."""
    if model_path:
        return model_path
    shipped = package_file("models", shipped_name)
    if shipped is None:
        raise ValueError(f"parameter model_path is empty and the package has no "
                         f"models/{shipped_name}: set it to a checkpoint")
    node.get_logger().warning(
        f"model_path is empty: using the shipped {shipped}, {trained} on synthetic scenes "
        "only; train on your own data for a real vehicle")
    return str(shipped)


def subscription_qos(reliability: str, depth: int) -> QoSProfile:
    """Keep-last, volatile QoS; `reliability` is "best_effort" (sensor data) or "reliable".

    Raises ValueError naming the parameter (`reliability`, `qos_depth`) for a bad value.
    """
    if reliability not in RELIABILITY:
        raise ValueError(f"parameter reliability must be best_effort or reliable, "
                         f"got {reliability!r}")
    if depth < 1:
        raise ValueError(f"parameter qos_depth must be >= 1, got {depth}")
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=RELIABILITY[reliability],
                      durability=DurabilityPolicy.VOLATILE)


def ros_home(environ: Mapping[str, str] | None = None) -> Path:
    """`$ROS_HOME`, or `~/.ros` when it is unset: where ROS 2 keeps per-user files (logs)."""
    env = os.environ if environ is None else environ
    return Path(env.get("ROS_HOME") or Path.home() / ".ros").expanduser().absolute()


def resolve_output_directory(value: str, default_leaf: str,
                             environ: Mapping[str, str] | None = None) -> Path:
    """The absolute folder a node writes into: `value` with `~` expanded (a relative path is
    taken from the working directory); empty: `ros_home() / default_leaf`."""
    if not value:
        return ros_home(environ) / default_leaf
    return Path(value).expanduser().absolute()


def stamp_seconds(header: Header) -> float:
    """The header's stamp in seconds."""
    return header.stamp.sec + header.stamp.nanosec * 1e-9


class BadInputLog:
    """Skipped messages counted by reason; at most one warning per reason per `throttle_s`.

    Thread-safe (callbacks and worker threads may report).
    """

    def __init__(self, logger: Any, throttle_s: float) -> None:
        self._logger = logger
        self._throttle_s = throttle_s
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._last_warned: dict[str, float] = {}

    def report(self, reason: str, message: str) -> None:
        """Count one message skipped for `reason` and warn `[reason] message` when due."""
        now = time.monotonic()
        with self._lock:
            count = self._counts[reason] = self._counts.get(reason, 0) + 1
            last = self._last_warned.get(reason)
            due = last is None or now - last >= self._throttle_s
            if due:
                self._last_warned[reason] = now
        if due:
            self._logger.warning(f"[{reason}] {message} (x{count} so far)")

    def counts(self) -> dict[str, int]:
        """`bad_input.<reason>` -> count, sorted by reason."""
        with self._lock:
            return {f"bad_input.{reason}": count
                    for reason, count in sorted(self._counts.items())}


class LostMessageMonitor:
    """Messages that a subscription's publishers sent but that never arrived, per topic.

    DDS reports them with the sample-lost event (best-effort messages dropped on the way,
    e.g. large clouds that overflow the transport). The first loss on a topic is warned
    about once, with what to do; all are counted (`counts`). Thread-safe.
    """

    def __init__(self, logger: Any) -> None:
        self._logger = logger
        self._lock = threading.Lock()
        self._lost: dict[str, int] = {}

    def callbacks(self, topic: str) -> SubscriptionEventCallbacks:
        """Event callbacks for the subscription to `topic` (pass as `event_callbacks`)."""
        return SubscriptionEventCallbacks(message_lost=lambda info: self.lost(topic, info))

    def lost(self, topic: str, info: Any) -> None:
        """Record a sample-lost event (`info.total_count`: lost so far on this reader)."""
        with self._lock:
            first = topic not in self._lost
            self._lost[topic] = int(info.total_count)
        if first:
            self._logger.warning(
                f"messages on {topic} are being lost before they reach this node "
                f"({int(info.total_count)} so far; counted in /diagnostics as "
                f"messages_lost.{topic}): a best-effort publisher of large messages needs "
                "config/fastdds_large_data.xml too, or make both sides reliable")

    def counts(self) -> dict[str, int]:
        """`messages_lost.<topic>` -> messages lost so far, for topics that lost any."""
        with self._lock:
            return {f"messages_lost.{t}": n for t, n in sorted(self._lost.items())}


def checked_cloud_points(msg: PointCloud2, intensity_field: str,
                         bad_input: BadInputLog) -> np.ndarray | None:
    """(N, 4) finite float32 x y z intensity of a cloud, LiDAR frame; None when the cloud is
    unusable. Each problem (no x/y/z field, unreadable, empty, NaN/inf points) is reported to
    `bad_input` by reason; NaN/inf points alone are dropped and the rest kept."""
    names = {f.name for f in msg.fields}
    missing = [axis for axis in "xyz" if axis not in names]
    if missing:
        bad_input.report("cloud_without_xyz",
                         f"cloud dropped: no {'/'.join(missing)} field (fields: "
                         f"{', '.join(sorted(names)) or 'none'})")
        return None
    try:
        points = pointcloud2_to_xyzi(msg, intensity_field)
    except ValueError as err:
        bad_input.report("bad_cloud", f"cloud dropped: {err}")
        return None
    if len(points) == 0:
        bad_input.report("empty_cloud", "cloud dropped: it has no points")
        return None
    finite = np.isfinite(points).all(axis=1)
    if not finite.all():
        kept = int(finite.sum())
        bad_input.report(
            "non_finite_points",
            f"{len(points) - kept} of {len(points)} points are NaN/inf and were dropped"
            + ("; no point left, cloud dropped" if kept == 0 else ""))
        if kept == 0:
            return None
        points = points[finite]
    return points


class NewestJobWorker:
    """A background thread that always works on the newest job.

    `submit` replaces a job still waiting (counted in `dropped`); `process(job)` runs on the
    thread. Any exception it raises is logged and counted by its type in `errors`, never
    fatal (`processed` counts the job either way), then `on_error(job, exception)` runs, if
    given, so that the node can report the job (called without `lock` held). `lock` is the
    node's: call `submit` and read the counters while holding it, so the node's own
    counters change atomically with these.
    """

    def __init__(self, process: Callable[[Any], None], logger: Any, what: str,
                 lock: threading.Lock, name: str,
                 on_error: Callable[[Any, Exception], None] | None = None) -> None:
        self.lock = lock
        self._wake = threading.Condition(lock)
        self._process = process
        self._on_error = on_error
        self._logger = logger
        self._what = what
        self._job: Any = None
        self._busy = False
        self._stop = False
        self.processed = 0
        self.dropped = 0
        self.errors: dict[str, int] = {}  # exception type name -> jobs that raised it
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return int(self._job is not None)

    @property
    def in_progress(self) -> int:
        return int(self._busy)

    def submit(self, job: Any) -> None:
        """Make `job` the next one (caller holds `lock`)."""
        if self._job is not None:
            self.dropped += 1  # replaced by the newer job
        self._job = job
        self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._job is None and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                job, self._job = self._job, None
                self._busy = True
            try:
                self._process(job)
            except Exception as err:  # any failure: counted and reported, never fatal
                self._failed(job, err)
            finally:
                with self.lock:
                    self._busy = False
                    self.processed += 1

    def _failed(self, job: Any, err: Exception) -> None:
        self._logger.error(f"{self._what} failed: {err!r}")
        with self.lock:
            reason = type(err).__name__
            self.errors[reason] = self.errors.get(reason, 0) + 1
        if self._on_error is None:
            return
        try:
            self._on_error(job, err)
        except Exception as hook_err:  # the report itself failed: log it, keep working
            self._logger.error(f"reporting a failed {self._what} failed too: {hook_err!r}")

    def error_counts(self) -> dict[str, int]:
        """`worker_errors.<exception type>` -> jobs that raised it (caller holds `lock`)."""
        return {f"worker_errors.{reason}": count
                for reason, count in sorted(self.errors.items())}

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the job in progress, drop a waiting one, end the thread."""
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._thread.join(timeout=timeout_s)


def diagnostic_array(name: str, level: bytes, message: str, values: dict[str, str],
                     stamp: Any) -> DiagnosticArray:
    """One DiagnosticStatus (hardware_id "nclr") with `values` as key-values, at `stamp`."""
    status = DiagnosticStatus(name=name, hardware_id="nclr", level=level, message=message)
    status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
    msg = DiagnosticArray(status=[status])
    msg.header.stamp = stamp
    return msg


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_node(make_node: Callable[[], Node], node_name: str,
             args: list[str] | None = None) -> None:
    """Console-script body: spin the node made by `make_node` until SIGINT/SIGTERM, then
    call its `shutdown()` (stop workers, save) and destroy it.

    Applies the package's Fast DDS profile unless one is set (before `rclpy.init`). SIGINT
    and SIGTERM stop the executor while the ROS context is still valid, so the node's
    `shutdown()` can still log (and save) before rclpy shuts down. A node that cannot start
    (ValueError, CheckpointError: bad parameters or model) logs the reason and exits with 1.
    """
    apply_default_profile()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    for signum in (signal.SIGINT, signal.SIGTERM):  # also where SIGINT was inherited ignored
        signal.signal(signum, _interrupt)
    node = None
    try:
        try:
            node = make_node()
        except (ValueError, CheckpointError) as err:
            rclpy.logging.get_logger(node_name).fatal(f"cannot start: {err}")
            raise SystemExit(1) from None
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
