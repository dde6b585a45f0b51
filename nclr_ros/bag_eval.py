"""`nclr-bag eval`: evaluate an NCLR checkpoint as an online calibrator on a bag.

Both modes use the calibration node's parameter defaults
(`nclr_ros.calibration_parameters.PARAMETERS`, with the stages asked for) for the pairer,
the Calibrator and the pipeline, so offline and live agree:

- **offline**: `BagFrames` pairs the bag's messages with the node's pairer and settings; each
  pair goes through `nclr_core.online.pipeline.OnlineCalibration.process`, the object the
  node itself calls.
- **live**: the node runs as a subprocess (`python -m nclr_ros.calibration_node`) in a random
  ROS domain (100..200, localhost discovery) with reliable subscriptions, and its per-pair
  records (`~/frame_estimates`, `nclr_core.online.records.FrameRecord`) and diagnostics are
  recorded.
  *(decision)* The node calibrates only the newest pair and drops a pair that arrives while
  it is busy, so a timed playback would make the processed set depend on the machine's load.
  The bag is therefore played **in lock-step**: its raw CDR messages are published in bag
  order (ties: CameraInfo, image, cloud, as `BagFrames` orders them), and after each one the
  player waits until the node's diagnostics (at 20 Hz) count it as received and show no pair
  pending or in progress, and until every processed pair's record has arrived. Every pair
  is then calibrated, in order, with nothing dropped, and the per-frame estimates equal the
  offline ones up to floating point.

*(measured)* Multi-threaded CPU inference is not bit-reproducible (float summation order
changes from run to run, even in one process), and RANSAC-PnP can turn that last-bit noise
into a different inlier set, most visibly with a weak model. `threads=1` (`--threads 1`)
runs the offline Calibrator and the node single-threaded (`torch.set_num_threads`,
`OMP_NUM_THREADS` for the node), which makes both deterministic and equal.

Ground truth is the bag's /tf_static (`T_cam_lidar` of each pair) or a calibration file
(`--ground-truth`, YAML or JSON of `nclr_core.io.calibration_files`). With `prior_deg` and
`prior_m` the node's online regime is used: the prior is the ground truth of the first pair
rotated by exactly `prior_deg` degrees about a random axis and shifted by exactly `prior_m`
metres in a random direction (`seed`).

Writes into `out`: `frames.csv` (one row per pair), `metrics.json` (per-frame metrics and
their summary, the aggregated estimate's errors and per-axis sigmas, the final estimate of
each stage and its errors (`stages`), processed/dropped counts, latency: live,
from the pair forming in the node to its estimate; offline, the Calibrator and estimator),
`error_over_time.png`, `recall_curves.png` and `overlays/frame_NNNN.png` (points coloured by
depth under the aggregated estimate, above the same under the ground truth).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from nclr_core.atomic_write import atomic_path, write_bytes_atomic
from nclr_core.engine.calibration_eval import plot_recall_curves, recall_curves, write_frames_csv
from nclr_core.engine.checkpoint import CheckpointError
from nclr_core.engine.metrics_file import write_metrics_json
from nclr_core.engine.online_eval import NO_CHECKPOINT
from nclr_core.geometry.camera import CameraModel
from nclr_core.geometry.metrics import pose_errors, registration_success
from nclr_core.geometry.se3 import (
    make_transform,
    matrix_from_quaternion_xyzw,
    quaternion_xyzw_from_matrix,
)
from nclr_core.inference import Calibrator
from nclr_core.io.calibration_files import load_calibration_file
from nclr_core.online.pipeline import Frame, OnlineCalibration
from nclr_core.online.pose import prior_at_distance
from nclr_core.online.records import FrameRecord
from nclr_core.visualization import depth_overlay
from nclr_ros.bag_messages import CAMERA_INFO_TYPE, BagError, BagTopics
from nclr_ros.bag_read import BagFrames, iter_raw, open_bag, topic_types
from nclr_ros.calibration_parameters import (
    NODE_NAME,
    STATUS_SUFFIX,
    defaults,
    needs_network,
    online_settings,
    solver_settings,
)

LOG = logging.getLogger(__name__)

MODES = ("offline", "live")
LIVE_DIAGNOSTICS_PERIOD_S = 0.05
NODE_STARTUP_TIMEOUT_S = 120.0
_ROLE_ORDER = {"info": 0, "image": 1, "points": 2}  # BagFrames' order of tied messages


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate.

    checkpoint: NCLR checkpoint (.pt), or "none" with the refine stage alone. out: output
        folder. topics: bag topic names.
    ground_truth: calibration file (YAML/JSON); None: the bag's /tf_static.
    live: run the node instead of the Calibrator in-process.
    prior_deg, prior_m: prior's exact rotation (degrees) / translation (metres) from the
        ground truth (both or neither; neither: no prior). seed: the prior's directions.
    device: torch device. overlays: overlay images written (evenly spaced frames).
    timeout_s: live: longest wait for the node to take one message or finish one pair.
    threads: torch CPU threads of the Calibrator (offline) and the node (live); None: torch's
        default. 1 makes the estimates reproducible (see the module docstring).
    stages: the pipeline's stages, comma-separated (the node's `stages` parameter).
    """

    checkpoint: Path
    out: Path
    topics: BagTopics = field(default_factory=BagTopics)
    ground_truth: Path | None = None
    live: bool = False
    prior_deg: float | None = None
    prior_m: float | None = None
    seed: int = 0
    device: str = "cpu"
    overlays: int = 3
    timeout_s: float = 120.0
    threads: int | None = None
    stages: str = "global"

    def __post_init__(self) -> None:
        if (self.prior_deg is None) != (self.prior_m is None):
            raise ValueError("give both --prior-deg and --prior-m, or neither (no prior)")
        if self.prior_deg is not None and not (0.0 <= self.prior_deg <= 180.0
                                               and 0.0 <= self.prior_m < math.inf):
            raise ValueError(f"prior must be 0..180 deg and >= 0 m, got {self.prior_deg} deg, "
                             f"{self.prior_m} m")
        if self.overlays < 0 or not self.timeout_s > 0:
            raise ValueError("overlays must be >= 0 and timeout_s > 0")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


@dataclass
class Pass:
    """What one evaluation produced: records (one per processed pair, in order), counts and
    the final drift test against the prior (`drifted`, `drift`: the node's diagnostics
    values; None without a prior or an estimate)."""

    records: list[FrameRecord]
    counts: dict[str, int]
    drift: dict[str, Any] | None = None


def node_parameters(options: EvalOptions) -> dict[str, Any]:
    """The calibration node's parameters for this evaluation: its defaults, the stages."""
    return {**defaults(), "stages": options.stages}


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


def _ground_truth_of(bag: Path, options: EvalOptions) -> Callable[[dict], np.ndarray]:
    fixed = None if options.ground_truth is None else load_calibration_file(options.ground_truth)

    def truth(sample: dict) -> np.ndarray:
        if fixed is not None:
            return fixed
        if "T_cam_lidar" not in sample:
            raise BagError(
                f"{bag}: pair {sample['frame_id']} has no ground truth: no "
                f"{options.topics.tf_static} transform {sample['camera_frame']!r} -> "
                f"{sample['lidar_frame']!r} before it; pass --ground-truth FILE")
        return sample["T_cam_lidar"]

    return truth


def _finite_points(points: np.ndarray) -> np.ndarray:
    """The node drops non-finite points before pairing; so does the offline path."""
    finite = np.isfinite(points).all(axis=1)
    return points if finite.all() else points[finite]


# ------------------------------------------------------------------------------- offline
def run_offline(frames: BagFrames, pipeline: OnlineCalibration) -> Pass:
    """Calibrate every pair of `frames` through the pipeline, as the node does."""
    records = []
    for sample in frames:
        start = time.monotonic()
        frame = Frame(sample["image"], _finite_points(sample["points"]), sample["camera"],
                      sample["camera_stamp"], sample["stamp"])
        record = pipeline.process(frame).record
        records.append(dataclasses.replace(record, latency_s=time.monotonic() - start))
    c = frames.counters
    counts = {"pairs": len(records), "processed": len(records), "dropped_pairs": 0,
              "dropped_images": c.dropped_images, "dropped_clouds": c.dropped_clouds,
              "images_without_info": frames.images_without_info}
    drift = pipeline.drift()
    return Pass(records, counts, None if drift is None else {"drifted": drift.drifted,
                                                             "drift": drift.describe()})


# ---------------------------------------------------------------------------------- live
def _node_command(options: EvalOptions, frames: BagFrames, prior: np.ndarray | None,
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


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(2)  # SIGINT: the node stops its worker and exits
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
        process = subprocess.Popen(_node_command(options, frames, prior, params), env=env,
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
        _stop(process)
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


# ------------------------------------------------------------------------------ metrics
def _errors(T: np.ndarray | None, T_gt: np.ndarray) -> dict[str, float]:
    """Pose errors of T against T_gt; NaN when there is no pose (None)."""
    if T is None:
        return {"rre_euler_deg": math.nan, "rre_geodesic_deg": math.nan, "rte_m": math.nan}
    return {key: float(value) for key, value in pose_errors(T, T_gt).items()}


def frame_rows(records: list[FrameRecord], truths: list[np.ndarray]) -> list[dict[str, Any]]:
    """One CSV/JSON row per record: its fields, the per-frame estimate's errors and the
    aggregate's (`aggregate_*`, NaN before there is one)."""
    rows = []
    t0 = records[0].cloud_stamp if records else 0.0
    for index, (record, T_gt) in enumerate(zip(records, truths, strict=True)):
        row: dict[str, Any] = {"frame": index, "image_stamp": record.image_stamp,
                               "cloud_stamp": record.cloud_stamp,
                               "time_s": record.cloud_stamp - t0,
                               "valid": record.valid, "accepted": record.accepted,
                               "reason": record.reason, "num_inliers": record.num_inliers,
                               "reprojection_error_px": record.reprojection_error_px,
                               "overlap_ratio": record.overlap_ratio,
                               "latency_s": record.latency_s}
        row.update(_errors(record.T_cam_lidar, T_gt))
        row.update({f"aggregate_{k}": v for k, v in _errors(record.aggregate, T_gt).items()})
        row["aggregate_stage"] = record.aggregate_stage
        T = record.T_cam_lidar
        row.update({f"t_{axis}": (math.nan if T is None else float(T[i, 3]))
                    for i, axis in enumerate("xyz")})
        q = quaternion_xyzw_from_matrix(T[:3, :3]) if T is not None else [math.nan] * 4
        row.update({f"q_{axis}": float(v) for axis, v in zip("xyzw", q, strict=True)})
        rows.append(row)
    return rows


def _stats(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    array = array[np.isfinite(array)]
    if array.size == 0:
        return {"mean": math.nan, "median": math.nan, "max": math.nan}
    return {"mean": float(array.mean()), "median": float(np.median(array)),
            "max": float(array.max())}


def summarize(rows: list[dict[str, Any]], last: FrameRecord, T_gt_last: np.ndarray
              ) -> dict[str, Any]:
    """Per-frame summary (over valid estimates; recall and success over every frame, an
    invalid frame counting as a failure), the final estimate's errors and per-axis sigmas
    (`aggregate`) and each stage's final estimate and errors (`stages`), from the last
    record."""
    valid = [r for r in rows if r["valid"]]
    scored = [{"rre_euler_deg": r["rre_euler_deg"] if r["valid"] else math.nan,
               "rte_m": r["rte_m"] if r["valid"] else math.nan} for r in rows]
    success = registration_success([s["rre_euler_deg"] for s in scored],
                                   [s["rte_m"] for s in scored])
    frames: dict[str, Any] = {
        "num_frames": len(rows),
        "valid_rate": len(valid) / len(rows),
        "accepted_rate": sum(r["accepted"] for r in rows) / len(rows),
        "success_rate": float(np.mean(success)),
    }
    for key in ("rre_euler_deg", "rre_geodesic_deg", "rte_m"):
        for stat, value in _stats([r[key] for r in valid]).items():
            frames[f"{key}_{stat}"] = value
    frames["recall_curves"] = recall_curves(scored, "online")
    final = last.aggregate
    aggregate: dict[str, Any] = {"available": final is not None}
    if final is not None:
        errors = _errors(final, T_gt_last)
        aggregate.update(errors)
        aggregate["success"] = bool(registration_success(errors["rre_euler_deg"],
                                                         errors["rte_m"]))
        aggregate["stage"] = last.aggregate_stage
        aggregate["sigma_rot_deg"] = last.aggregate_sigma_rot_deg.tolist()
        aggregate["sigma_trans_m"] = last.aggregate_sigma_trans_m.tolist()
        aggregate["T_cam_lidar"] = final.tolist()
    aggregate["T_cam_lidar_ground_truth"] = np.asarray(T_gt_last).tolist()
    stages = {stage: {**_errors(T, T_gt_last), "T_cam_lidar": T.tolist()}
              for stage, T in last.stage_estimates.items()}
    return {"per_frame_summary": frames, "aggregate": aggregate, "stages": stages}


def plot_errors_over_time(path: Path, rows: list[dict[str, Any]]) -> None:
    """RRE and RTE of the valid per-frame estimates and of the aggregate against time."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    time_s = np.array([r["time_s"] for r in rows])
    valid = np.array([r["valid"] for r in rows], dtype=bool)
    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for ax, key, unit in ((axes[0], "rre_euler_deg", "RRE (deg, Euler sum)"),
                          (axes[1], "rte_m", "RTE (m)")):
        per_frame = np.array([r[key] for r in rows], dtype=np.float64)
        ax.plot(time_s[valid], per_frame[valid], "o", ms=4, label="per-frame (valid)")
        ax.plot(time_s[~valid], per_frame[~valid], "x", ms=4, color="grey",
                label="per-frame (rejected)")
        ax.plot(time_s, [r[f"aggregate_{key}"] for r in rows], "-", lw=2, label="aggregate")
        ax.set_ylabel(unit)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right")
    axes[1].set_xlabel("time since the first pair (s)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def write_overlays(frames: BagFrames, indices: list[int], T_est: np.ndarray | None,
                   truth: Callable[[dict], np.ndarray], folder: Path) -> list[Path]:
    """Per selected pair: the image with the points under the aggregated estimate (top;
    blank when there is none) above the same under the ground truth; PNG paths."""
    wanted = set(indices)
    paths = []
    for sample in frames:
        index = int(sample["frame_id"])
        if index not in wanted:
            continue
        camera: CameraModel = sample["camera"]
        points = _finite_points(sample["points"])
        gt = depth_overlay(sample["image"], points, truth(sample), camera)
        est = (depth_overlay(sample["image"], points, T_est, camera) if T_est is not None
               else np.zeros_like(gt))
        ok, png = cv2.imencode(".png", cv2.cvtColor(np.vstack((est, gt)), cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError(f"cannot encode the overlay of frame {index}")
        path = folder / f"frame_{index:04d}.png"
        write_bytes_atomic(path, png.tobytes())
        paths.append(path)
        if len(paths) == len(wanted):
            break
    return paths


def _spread(count: int, wanted: int) -> list[int]:
    if count == 0 or wanted == 0:
        return []
    return sorted({int(round(v)) for v in np.linspace(0, count - 1, min(wanted, count))})


def _match_truths(bag: Path, records: list[FrameRecord], pairs: list[tuple[float, np.ndarray]]
                  ) -> list[np.ndarray]:
    """Ground truth of each record, found by its image stamp among the bag's pairs."""
    stamps = np.array([stamp for stamp, _ in pairs])
    truths = []
    for record in records:
        nearest = int(np.argmin(np.abs(stamps - record.image_stamp))) if len(stamps) else -1
        if nearest < 0 or abs(stamps[nearest] - record.image_stamp) > 1e-6:
            raise BagError(f"{bag}: the node calibrated a pair at {record.image_stamp:.6f} s "
                           f"that the bag's pairing does not have")
        truths.append(pairs[nearest][1])
    return truths


def evaluate(bag: str | Path, options: EvalOptions, command: str = "") -> dict[str, Any]:
    """Evaluate `options.checkpoint` on `bag`; writes the outputs and returns the metrics."""
    threads = torch.get_num_threads()
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    try:
        return _evaluate(Path(bag), options, command)
    finally:
        torch.set_num_threads(threads)


def _evaluate(bag: Path, options: EvalOptions, command: str) -> dict[str, Any]:
    started = time.monotonic()
    params = node_parameters(options)
    frames = BagFrames(bag, options.topics, slop=params["sync_slop_s"],
                       queue_size=params["sync_queue_size"])
    truth = _ground_truth_of(bag, options)
    calibrator = None
    if needs_network(params):
        if str(options.checkpoint) == NO_CHECKPOINT:
            raise ValueError(f"stages {options.stages} need a network: give a checkpoint")
        try:  # live too: a bad checkpoint is reported here, before the node starts
            calibrator = Calibrator.from_checkpoint(options.checkpoint, options.device,
                                                    solver_settings(params))
        except CheckpointError as err:
            raise ValueError(str(err)) from err
    pairs: list[tuple[float, np.ndarray]] = []
    for sample in frames:  # ground truth per pair (and a first check of the whole bag)
        pairs.append((sample["camera_stamp"], np.asarray(truth(sample), dtype=np.float64)))
    if not pairs:
        c = frames.counters
        raise BagError(f"{bag}: no image/cloud pair formed ({c.received_images} images, "
                       f"{c.received_clouds} clouds, {frames.images_without_info} images "
                       f"before any CameraInfo)")
    prior = None
    if options.prior_deg is not None:
        prior = node_prior(prior_at_distance(pairs[0][1], options.prior_deg, options.prior_m,
                                             np.random.default_rng(options.seed)))
    mode = "live" if options.live else "offline"
    LOG.info("%s evaluation of %s on %d pairs of %s", mode, options.checkpoint, len(pairs), bag)
    if options.live:
        result = run_live(bag, frames, options, params, prior)
    else:
        result = run_offline(frames, OnlineCalibration(calibrator, online_settings(params),
                                                       prior))
    if not result.records:
        raise BagError(f"{bag}: no pair was calibrated")
    truths = _match_truths(bag, result.records, pairs)
    rows = frame_rows(result.records, truths)
    final_aggregate = result.records[-1].aggregate
    out = options.out
    metrics: dict[str, Any] = {
        "command": command, "mode": mode, "bag": str(bag),
        "checkpoint": str(options.checkpoint), "device": options.device,
        "threads": options.threads,
        "ground_truth": str(options.ground_truth) if options.ground_truth
        else options.topics.tf_static,
        "prior": None if prior is None else {"rotation_deg": options.prior_deg,
                                             "translation_m": options.prior_m,
                                             "seed": options.seed,
                                             "T_cam_lidar": prior.tolist()},
        "node_parameters": {k: params[k] for k in (
            "sync_slop_s", "sync_queue_size", "reprojection_threshold_px",
            "ransac_iterations", "ransac_confidence", "min_inliers", "max_translation_m",
            "prior_max_rotation_deg", "prior_max_translation_m", "window", "min_frames",
            "outlier_rotation_deg", "outlier_translation_m", "stages")},
        "counts": {**result.counts, "valid": sum(r.valid for r in result.records),
                   "accepted": sum(r.accepted for r in result.records)},
        "latency_s": _stats([r.latency_s for r in result.records]),
        "drift": result.drift,
        **summarize(rows, result.records[-1], truths[-1]),
        "per_frame": rows,
        "files": {"frames_csv": "frames.csv", "error_plot": "error_over_time.png",
                  "recall_png": "recall_curves.png", "overlays": "overlays/"},
    }
    write_frames_csv(out / "frames.csv", rows)
    plot_errors_over_time(out / "error_over_time.png", rows)
    plot_recall_curves(out / "recall_curves.png",
                       {"per-frame estimates": {"nclr": metrics["per_frame_summary"]
                                                ["recall_curves"]}})
    overlays = write_overlays(frames, _spread(len(pairs), options.overlays), final_aggregate,
                              truth, out / "overlays")
    metrics["overlay_images"] = [str(p.relative_to(out)) for p in overlays]
    metrics["wall_time_s"] = time.monotonic() - started
    write_metrics_json(out / "metrics.json", metrics)
    return metrics
