"""ROS 2 node `nclr_segmentation`: per-point semantic segmentation of LiDAR clouds.

Subscribes to the relative name `points` (PointCloud2; sensor-data QoS by default,
`reliability` selects reliable subscriptions for bag players and reliable drivers). Clouds
are decoded and checked in the callback; a worker thread runs `nclr_core.segmenter.Segmenter`
on the newest cloud only: a cloud arriving while the previous one still waits replaces it
(counted as dropped), so `clouds_queued == clouds_processed + clouds_dropped +
clouds_pending + clouds_in_progress` and `clouds_received == clouds_queued +
clouds_skipped` (bad input).

Publishes `~/labels` (PointCloud2: x y z float32, `label` uint16 train id, `confidence`
float32 softmax probability of the label; the input's header; one point per finite input
point, in input order), `~/colored` (x y z + `rgb` packed as float32 the way RViz and PCL
read it, class colours; only while subscribed) and `/diagnostics`. Class names and colours
come from `classes_file` (default: the installed config/semantic_kitti_classes.yaml); the
names must equal the checkpoint's. An empty `model_path` loads the shipped
models/nclr_synthetic_seg.pt, with a warning that it was fine-tuned on synthetic data only.

Bad input (clouds without x/y/z, undecodable clouds, empty clouds, clouds without finite
points) is warned (throttled per reason), counted in the diagnostics by reason and skipped;
NaN/inf points of an otherwise good cloud are dropped, warned and counted the same way.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header

from nclr_core.class_table import load_class_table
from nclr_core.segmenter import Segmenter
from nclr_ros.conversions import xyz_fields_to_pointcloud2
from nclr_ros.node_common import (
    BadInputLog,
    NewestJobWorker,
    ParameterTable,
    checked_cloud_points,
    declare_parameters,
    diagnostic_array,
    model_path_or_shipped,
    run_node,
    subscription_qos,
)
from nclr_ros.package_files import config_file

NODE_NAME = "nclr_segmentation"
DEFAULT_CLASSES_FILE = "semantic_kitti_classes.yaml"
SHIPPED_MODEL = "nclr_synthetic_seg.pt"  # models/ in the package (see README)

# name -> (default, description). Defaults mirror config/segment.yaml (a test checks it).
# Every parameter is read-only: it is read once at start-up.
PARAMETERS: ParameterTable = {
    "model_path": ("", "segmentation checkpoint (.pt; training/finetune_seg.py or "
                       "training/export_model.py); empty: the shipped models/" + SHIPPED_MODEL
                   + ", fine-tuned on synthetic data only."),
    "device": ("cpu", "torch device for inference: cpu, cuda, cuda:1, ..."),
    "classes_file": ("", "YAML with the class names and colours (classes: - {id, name, "
                         "rgb}); empty: the installed config/" + DEFAULT_CLASSES_FILE + "."),
    "reliability": ("best_effort", "subscription reliability: best_effort (sensor data, "
                                   "matches any publisher) or reliable (reliable publishers "
                                   "such as bag players)."),
    "qos_depth": (5, "subscription queue depth."),
    "intensity_field": ("intensity", "PointCloud2 field used as intensity (0 when absent)."),
    "diagnostics_period_s": (1.0, "period of /diagnostics, seconds."),
    "warn_throttle_s": (5.0, "at most one warning per bad-input reason in this time, seconds."),
    "top_classes": (3, "classes of the last cloud listed in the diagnostics (last_classes), "
                       "most frequent first."),
}


def packed_rgb(colours: np.ndarray) -> np.ndarray:
    """(N,) float32 whose bits are 0x00RRGGBB, the `rgb` field RViz and PCL read, from
    (N, 3) uint8 RGB."""
    c = colours.astype(np.uint32)
    return ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32)


@dataclass
class _Cloud:
    points: np.ndarray  # (N, 4) float32 x y z intensity, LiDAR frame, all finite
    header: Header
    queued: float  # time.monotonic() when it was handed to the worker


class SegmentationNode(Node):
    """Segmentation node (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        p = declare_parameters(self, PARAMETERS)
        self.params = p
        p["model_path"] = model_path_or_shipped(self, p["model_path"], SHIPPED_MODEL,
                                                "fine-tuned")
        if p["top_classes"] < 0:
            raise ValueError(f"parameter top_classes must be >= 0, got {p['top_classes']}")
        classes_path = p["classes_file"] or config_file(DEFAULT_CLASSES_FILE)
        if classes_path is None:
            raise ValueError(f"parameter classes_file is empty and config/"
                             f"{DEFAULT_CLASSES_FILE} is not installed")
        self.classes = load_class_table(classes_path)
        qos = subscription_qos(p["reliability"], p["qos_depth"])
        self.segmenter = Segmenter.from_checkpoint(p["model_path"], p["device"])
        if self.segmenter.class_names != self.classes.names:
            raise ValueError(
                f"classes file {classes_path} names {len(self.classes.names)} classes "
                f"{self.classes.names} but checkpoint {p['model_path']} was trained on "
                f"{len(self.segmenter.class_names)}: {self.segmenter.class_names}")

        self.bad_input = BadInputLog(self.get_logger(), p["warn_throttle_s"])
        self._lock = threading.Lock()  # counters, last result, the worker's job slot
        self.counts = {"clouds_received": 0, "clouds_skipped": 0, "clouds_queued": 0}
        self.last_latency_s = math.nan
        self.last_points = 0
        self.last_histogram = np.zeros(len(self.classes.names), dtype=np.int64)

        self.create_subscription(PointCloud2, "points", self._on_cloud, qos)
        self.pub_labels = self.create_publisher(PointCloud2, "~/labels", 5)
        self.pub_colored = self.create_publisher(PointCloud2, "~/colored", 5)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(p["diagnostics_period_s"], self.publish_diagnostics)
        self._worker = NewestJobWorker(self._process, self.get_logger(),
                                       "segmentation of a cloud", self._lock,
                                       "nclr_segmentation_worker")
        self.get_logger().info(
            f"segmenting with {p['model_path']} on {p['device']} into "
            f"{len(self.classes.names)} classes ({classes_path}); subscribed to points "
            f"({p['reliability']})")

    # -- subscription ---------------------------------------------------------------------
    def _on_cloud(self, msg: PointCloud2) -> None:
        points = checked_cloud_points(msg, self.params["intensity_field"], self.bad_input)
        with self._lock:
            self.counts["clouds_received"] += 1
            if points is None:
                self.counts["clouds_skipped"] += 1
                return
            self.counts["clouds_queued"] += 1
            self._worker.submit(_Cloud(points, msg.header, time.monotonic()))

    # -- worker ---------------------------------------------------------------------------
    def _process(self, job: _Cloud) -> None:
        try:
            labels, confidence = self.segmenter.segment(job.points)
        except ValueError as err:
            self.bad_input.report("segmentation_input", f"cloud skipped: {err}")
            return
        xyz = job.points[:, :3]
        self.pub_labels.publish(xyz_fields_to_pointcloud2(
            xyz, job.header, label=labels, confidence=confidence))
        if self.pub_colored.get_subscription_count() > 0:
            self.pub_colored.publish(xyz_fields_to_pointcloud2(
                xyz, job.header, rgb=packed_rgb(self.classes.colours[labels])))
        histogram = np.bincount(labels, minlength=len(self.classes.names))
        with self._lock:
            self.last_latency_s = time.monotonic() - job.queued
            self.last_points = len(labels)
            self.last_histogram = histogram

    # -- diagnostics ----------------------------------------------------------------------
    def diagnostics_values(self) -> dict[str, str]:
        """The diagnostic key-values: counters, bad input by reason, the last cloud's size,
        latency (queued to published, seconds) and most frequent classes."""
        with self._lock:
            values: dict[str, Any] = dict(self.counts)
            values["clouds_processed"] = self._worker.processed
            values["clouds_dropped"] = self._worker.dropped
            values["clouds_pending"] = self._worker.pending
            values["clouds_in_progress"] = self._worker.in_progress
            values["last_points"] = self.last_points
            values["last_latency_s"] = self.last_latency_s
            histogram = self.last_histogram
        values.update(self.bad_input.counts())
        total = max(int(histogram.sum()), 1)
        top = [i for i in np.argsort(-histogram, kind="stable")[:self.params["top_classes"]]
               if histogram[i] > 0]
        values["last_classes"] = ", ".join(
            f"{self.classes.names[i]} {100.0 * histogram[i] / total:.0f}%" for i in top)
        return {key: str(value) for key, value in values.items()}

    def publish_diagnostics(self) -> None:
        values = self.diagnostics_values()
        if values["clouds_processed"] == "0":
            level, message = DiagnosticStatus.WARN, "no cloud segmented yet"
        elif any(k.startswith("bad_input.") for k in values):
            level, message = DiagnosticStatus.WARN, "segmenting; some input was bad " \
                                                    "(see bad_input.*)"
        else:
            level, message = DiagnosticStatus.OK, "segmenting"
        self.pub_diagnostics.publish(diagnostic_array(
            f"{self.get_name()}: segmentation", level, message, values,
            self.get_clock().now().to_msg()))

    def shutdown(self) -> None:
        """Stop the worker thread."""
        self._worker.stop()


def main(args: list[str] | None = None) -> None:
    """Console script `segmentation_node` (applies the Fast DDS profile unless one is set)."""
    run_node(SegmentationNode, NODE_NAME, args)


if __name__ == "__main__":
    main()
