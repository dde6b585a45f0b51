"""ROS 2 node `nclr_calibration`: online LiDAR-camera calibration with NCLR.

Subscribes (relative names, remap them): `image` (sensor_msgs/Image, or `image/compressed`
CompressedImage with `use_compressed`), `camera_info` (the latest one is used; or intrinsics
from parameters) and `points` (PointCloud2). Sensor-data QoS by default; `reliability`
selects reliable subscriptions (bag players, reliable drivers).

Images and clouds are decoded and checked in the subscription callbacks, then paired by
approximate time (`nclr_ros.time_sync.ApproximateTimePairer`). A worker thread runs
`nclr_core.inference.Calibrator` on the newest pair only: a pair arriving while the previous
one still waits is replaced (counted as dropped), so
`pairs_received == pairs_processed + pairs_dropped + pairs_pending + pairs_in_progress`.
Valid per-frame estimates feed a `TemporalEstimator`; its aggregate is published.

Publishes: `~/extrinsics` (TransformStamped, parent = camera frame, child = LiDAR frame,
i.e. T_cam_lidar; reliable + transient local), `~/overlap_mask` (mono8, input size and
header), `~/points_overlap` (PointCloud2 x y z + `overlap` float32, cloud header),
`~/overlay` (rgb8, points coloured by depth; only while subscribed), `~/frame_estimates`
(one DiagnosticArray per processed pair: the per-frame estimate, accepted or not, as a
`nclr_ros.frame_record.FrameRecord`; header = the image's), `/diagnostics`, and
optionally `/tf_static`. Service `~/save_calibration` (std_srvs/Trigger) writes the
calibration files (`nclr_core.io.calibration_files`); they are also written on shutdown.

Messages lost on the way (the DDS sample-lost event: best-effort clouds too large for the
transport) are warned about once per topic and counted (`messages_lost.<topic>`).
Any exception while calibrating a pair is logged, counted by type (`worker_errors.<type>`)
and published as that pair's frame record; the worker keeps going.

Bad input (undecodable or unknown image encodings, clouds without x/y/z, empty clouds or
clouds without finite points, image sizes that disagree with camera_info, stamps that never
pair, ...) is logged as a throttled warning per reason, counted in the diagnostics by
reason, and skipped; the node keeps running.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import TransformStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from nclr_core.geometry.camera import CameraModel, check_sensor_camera
from nclr_core.geometry.projection import project_points_with_camera
from nclr_core.geometry.se3 import (
    make_transform,
    matrix_from_quaternion_xyzw,
    quaternion_xyzw_from_matrix,
)
from nclr_core.inference import CalibrationResult, Calibrator, SolverSettings
from nclr_core.io.calibration_files import (
    CalibrationRecord,
    remove_stale_calibration_temporaries,
    write_calibration_files,
)
from nclr_core.temporal_estimator import AggregateEstimate, TemporalEstimator
from nclr_ros.conversions import (
    SUPPORTED_ENCODINGS,
    array_to_image,
    camera_info_to_camera,
    compressed_image_to_rgb,
    image_to_rgb,
    xyz_fields_to_pointcloud2,
)
from nclr_ros.frame_record import STATUS_SUFFIX, FrameRecord
from nclr_ros.node_common import (
    LATCHED,
    BadInputLog,
    LostMessageMonitor,
    NewestJobWorker,
    ParameterTable,
    checked_cloud_points,
    declare_parameters,
    diagnostic_array,
    resolve_output_directory,
    run_node,
    stamp_seconds,
    subscription_qos,
)
from nclr_ros.package_files import package_file
from nclr_ros.time_sync import ApproximateTimePairer, Pair

NODE_NAME = "nclr_calibration"
OUTPUT_DIRECTORY_LEAF = "nclr_calibration"  # under $ROS_HOME when output_directory is empty
SHIPPED_MODEL = "nclr_synthetic.pt"  # models/ in the package (see README)

# name -> (default, description). Defaults mirror config/calibrate.yaml (a test checks it).
# Every parameter is read-only: it is read once at start-up.
PARAMETERS: ParameterTable = {
    "model_path": ("", "NCLR checkpoint (.pt; training/export_model.py); empty: the shipped "
                       f"models/{SHIPPED_MODEL}, trained on synthetic data only."),
    "device": ("cpu", "torch device for inference: cpu, cuda, cuda:1, ..."),
    "use_compressed": (False, "subscribe to image/compressed (CompressedImage) instead of "
                              "image (Image)."),
    "reliability": ("best_effort", "subscription reliability: best_effort (sensor data, "
                                   "matches any publisher) or reliable (reliable publishers "
                                   "such as bag players)."),
    "qos_depth": (5, "subscription queue depth."),
    "sync_slop_s": (0.05, "largest |image stamp - cloud stamp| of a pair, seconds."),
    "sync_queue_size": (10, "unpaired messages kept per stream for pairing."),
    "no_pair_warning_s": (2.0, "warn with the measured stamp offset when no pair formed for "
                               "this long while both streams arrive, seconds."),
    "intensity_field": ("intensity", "PointCloud2 field used as intensity (0 when absent)."),
    "intrinsics_from_parameters": (False, "take the camera model from the camera_* "
                                          "parameters instead of the camera_info topic."),
    "camera_k": ([0.0] * 9, "row-major 3x3 K (with intrinsics_from_parameters)."),
    "camera_width": (0, "image width, pixels (with intrinsics_from_parameters)."),
    "camera_height": (0, "image height, pixels (with intrinsics_from_parameters)."),
    "camera_distortion_model": ("none", "none, plumb_bob or equidistant (with "
                                        "intrinsics_from_parameters)."),
    "camera_d": ([0.0] * 5, "distortion coefficients: plumb_bob k1 k2 p1 p2 k3, equidistant "
                            "k1 k2 k3 k4 (with intrinsics_from_parameters)."),
    "camera_frame": ("", "camera (optical) frame id; empty: the image header's frame_id."),
    "lidar_frame": ("", "LiDAR frame id; empty: the cloud header's frame_id."),
    "reprojection_threshold_px": (8.0, "RANSAC-PnP inlier threshold, input-image pixels."),
    "ransac_iterations": (1000, "RANSAC-PnP hypotheses at most."),
    "ransac_confidence": (0.999, "RANSAC-PnP early-stop confidence."),
    "min_inliers": (12, "per-frame estimates with fewer RANSAC inliers are rejected."),
    "max_translation_m": (10.0, "per-frame estimates with a larger LiDAR-camera distance "
                                "are rejected, metres."),
    "use_prior": (False, "online regime: gate estimates by the prior T_cam_lidar below."),
    "prior_translation": ([0.0, 0.0, 0.0], "prior T_cam_lidar translation x y z, metres."),
    "prior_quaternion_xyzw": ([0.0, 0.0, 0.0, 1.0], "prior T_cam_lidar rotation, quaternion "
                                                    "x y z w."),
    "prior_max_rotation_deg": (15.0, "reject estimates rotated farther from the prior, "
                                     "degrees."),
    "prior_max_translation_m": (0.5, "reject estimates farther from the prior, metres."),
    "window": (50, "per-frame estimates aggregated (sliding window)."),
    "min_frames": (3, "estimates needed before an aggregate is published."),
    "outlier_rotation_deg": (1.0, "aggregation outlier floor on rotation, degrees."),
    "outlier_translation_m": (0.05, "aggregation outlier floor on translation, metres."),
    "publish_tf_static": (False, "also publish the estimate on /tf_static."),
    "tf_child_frame": ("", "child frame on /tf_static (parent: camera frame); empty: the LiDAR "
                           "frame. Set another name if the LiDAR frame already has a parent."),
    "output_directory": ("", "where calibration files are written; empty: "
                             "$ROS_HOME/nclr_calibration ($ROS_HOME defaults to ~/.ros); a "
                             "relative path is taken from the working directory."),
    "file_stem": ("nclr_calibration", "base name of the calibration files."),
    "save_on_shutdown": (True, "write the calibration files when the node stops."),
    "diagnostics_period_s": (1.0, "period of /diagnostics, seconds."),
    "warn_throttle_s": (5.0, "at most one warning per bad-input reason in this time, seconds."),
    "overlay_point_radius": (1, "radius of the points drawn on ~/overlay, pixels."),
}


@dataclass
class _Frame:
    """A decoded, checked message waiting for its partner."""

    data: np.ndarray  # RGB (H, W, 3) or points (N, 4)
    header: Header
    camera: CameraModel | None = None


@dataclass
class _Job:
    pair: Pair
    formed: float  # time.monotonic() when the pair formed
    recorded: bool = False  # its record was published on ~/frame_estimates


def _transform_msg(T_cam_lidar: np.ndarray, header: Header, parent: str, child: str
                   ) -> TransformStamped:
    msg = TransformStamped()
    msg.header.stamp = header.stamp
    msg.header.frame_id = parent
    msg.child_frame_id = child
    x, y, z = (float(v) for v in T_cam_lidar[:3, 3])
    msg.transform.translation.x, msg.transform.translation.y = x, y
    msg.transform.translation.z = z
    q = quaternion_xyzw_from_matrix(T_cam_lidar[:3, :3])
    r = msg.transform.rotation
    r.x, r.y, r.z, r.w = (float(v) for v in q)
    return msg


def depth_overlay(image: np.ndarray, points: np.ndarray, T_cam_lidar: np.ndarray,
                  camera: CameraModel, radius: int = 1) -> np.ndarray:
    """RGB (H, W, 3) copy of `image` with the points (N, >=3, LiDAR frame) that project into
    it under T_cam_lidar drawn in colour by depth (near red, far blue), farthest first."""
    projection = project_points_with_camera(points, T_cam_lidar, camera)
    out = image.copy()
    hit = projection.in_image
    if not hit.any():
        return out
    depth = projection.depth[hit]
    uv = projection.pixels()[hit]
    order = np.argsort(-depth)  # near points drawn last, on top
    span = max(float(depth.max() - depth.min()), 1e-6)
    level = (255.0 * (depth - depth.min()) / span).astype(np.uint8)
    colours = cv2.applyColorMap(255 - level[:, None], cv2.COLORMAP_JET)[:, 0, ::-1]
    h, w = out.shape[:2]
    for du in range(-radius, radius + 1):
        for dv in range(-radius, radius + 1):
            u = np.clip(uv[order, 0] + du, 0, w - 1)
            v = np.clip(uv[order, 1] + dv, 0, h - 1)
            out[v, u] = colours[order]
    return out


def solver_settings(params: dict[str, Any]) -> SolverSettings:
    """The node's SolverSettings from its parameters."""
    return SolverSettings(
        reprojection_threshold_px=params["reprojection_threshold_px"],
        ransac_iterations=params["ransac_iterations"],
        ransac_confidence=params["ransac_confidence"],
        min_inliers=params["min_inliers"],
        max_translation_m=params["max_translation_m"],
        max_rotation_from_prior_deg=params["prior_max_rotation_deg"],
        max_translation_from_prior_m=params["prior_max_translation_m"],
    )


def temporal_estimator(params: dict[str, Any], prior: np.ndarray | None) -> TemporalEstimator:
    """The node's TemporalEstimator from its parameters and prior (None: no prior)."""
    return TemporalEstimator(
        window=params["window"], min_frames=params["min_frames"],
        outlier_rotation_deg=params["outlier_rotation_deg"],
        outlier_translation_m=params["outlier_translation_m"], T_init=prior,
        max_rotation_from_prior_deg=params["prior_max_rotation_deg"] if prior is not None
        else None,
        max_translation_from_prior_m=params["prior_max_translation_m"] if prior is not None
        else None)


class CalibrationNode(Node):
    """Online calibration node (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        p = declare_parameters(self, PARAMETERS)
        self.params = p
        if not p["model_path"]:
            shipped = package_file("models", SHIPPED_MODEL)
            if shipped is None:
                raise ValueError("parameter model_path is empty and the package has no "
                                 f"models/{SHIPPED_MODEL}: set it to an NCLR checkpoint")
            self.get_logger().warning(
                f"model_path is empty: using the shipped {shipped}, pre-trained on synthetic "
                "scenes only; pre-train on your own logs for a real vehicle")
            p["model_path"] = str(shipped)
        self.calibrator = Calibrator.from_checkpoint(p["model_path"], p["device"],
                                                     solver_settings(p))
        self.prior = None
        if p["use_prior"]:
            q = np.asarray(p["prior_quaternion_xyzw"], dtype=np.float64)
            if q.shape != (4,) or not abs(np.linalg.norm(q) - 1.0) < 1e-3:
                raise ValueError(f"parameter prior_quaternion_xyzw must be a unit quaternion, "
                                 f"got {q.tolist()}")
            self.prior = make_transform(matrix_from_quaternion_xyzw(q / np.linalg.norm(q)),
                                        np.asarray(p["prior_translation"], dtype=np.float64))
        self.estimator = temporal_estimator(p, self.prior)
        self.pairer = ApproximateTimePairer(p["sync_slop_s"], p["sync_queue_size"])
        self.camera: CameraModel | None = None
        if p["intrinsics_from_parameters"]:
            self.camera = check_sensor_camera(CameraModel(
                K=np.asarray(p["camera_k"], dtype=np.float64).reshape(3, 3),
                width=p["camera_width"], height=p["camera_height"],
                distortion=p["camera_distortion_model"],
                D=np.asarray(p["camera_d"]) if p["camera_distortion_model"] != "none"
                else np.zeros(0)))

        self.output_directory = resolve_output_directory(p["output_directory"],
                                                         OUTPUT_DIRECTORY_LEAF)
        for leftover in remove_stale_calibration_temporaries(self.output_directory,
                                                             p["file_stem"]):
            self.get_logger().info(f"removed {leftover}, left by an interrupted save")

        self._lock = threading.Lock()  # counters, estimate, the worker's job slot
        self.counts = {"camera_infos_received": 0, "images_received": 0,
                       "clouds_received": 0, "pairs_received": 0,
                       "estimates_accepted": 0,
                       "estimates_rejected": 0}
        self.bad_input = BadInputLog(self.get_logger(), p["warn_throttle_s"])
        self._last_pair_time = time.monotonic()
        self.last_latency_s = math.nan
        self.last_result: CalibrationResult | None = None
        self.aggregate: AggregateEstimate | None = None
        self._frames = ("", "", 0.0)  # camera frame, LiDAR frame, stamp of the last pair
        self._camera_used: CameraModel | None = None

        qos = subscription_qos(p["reliability"], p["qos_depth"])
        self.lost_messages = LostMessageMonitor(self.get_logger())
        lost = self.lost_messages.callbacks
        if p["use_compressed"]:
            self.create_subscription(CompressedImage, "image/compressed", self._on_image, qos,
                                     event_callbacks=lost("image/compressed"))
        else:
            self.create_subscription(Image, "image", self._on_image, qos,
                                     event_callbacks=lost("image"))
        if not p["intrinsics_from_parameters"]:
            self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos,
                                     event_callbacks=lost("camera_info"))
        self.create_subscription(PointCloud2, "points", self._on_cloud, qos,
                                 event_callbacks=lost("points"))
        self.pub_extrinsics = self.create_publisher(TransformStamped, "~/extrinsics", LATCHED)
        self.pub_mask = self.create_publisher(Image, "~/overlap_mask", 5)
        self.pub_points = self.create_publisher(PointCloud2, "~/points_overlap", 5)
        self.pub_overlay = self.create_publisher(Image, "~/overlay", 5)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.pub_frames = self.create_publisher(DiagnosticArray, "~/frame_estimates", 10)
        self.pub_tf_static = None
        if p["publish_tf_static"]:
            try:
                from tf2_msgs.msg import TFMessage
            except ImportError:
                self.get_logger().error(
                    "publish_tf_static is set but tf2_msgs is not installed: /tf_static is "
                    "not published (install ros-<distro>-tf2-msgs)")
            else:
                self._tf_message = TFMessage
                self.pub_tf_static = self.create_publisher(TFMessage, "/tf_static", LATCHED)
        self.create_service(Trigger, "~/save_calibration", self._on_save)
        self.create_timer(p["diagnostics_period_s"], self.publish_diagnostics)
        self._worker = NewestJobWorker(self._process, self.get_logger(),
                                       "calibration of a pair", self._lock,
                                       "nclr_calibration_worker", self._on_worker_error)
        self.get_logger().info(
            f"calibrating with {p['model_path']} on {p['device']}; subscribed to "
            f"{'image/compressed' if p['use_compressed'] else 'image'}, points"
            f"{'' if p['intrinsics_from_parameters'] else ', camera_info'} "
            f"({p['reliability']}); calibration files go to {self.output_directory}")

    # -- bad input ------------------------------------------------------------------------
    def _bad(self, reason: str, message: str) -> None:
        """Count a skipped message by reason and warn (once per warn_throttle_s per reason)."""
        self.bad_input.report(reason, message)

    # -- subscriptions --------------------------------------------------------------------
    def _on_camera_info(self, msg: CameraInfo) -> None:
        with self._lock:
            self.counts["camera_infos_received"] += 1
        try:
            self.camera = camera_info_to_camera(msg)
        except ValueError as err:
            self._bad("bad_camera_info", f"camera_info ignored: {err}")

    def _on_image(self, msg: Image | CompressedImage) -> None:
        with self._lock:
            self.counts["images_received"] += 1
        if isinstance(msg, Image) and msg.encoding not in SUPPORTED_ENCODINGS:
            self._bad("unknown_image_encoding",
                      f"image dropped: encoding '{msg.encoding}' is not supported "
                      f"(supported: {', '.join(SUPPORTED_ENCODINGS)})")
            return
        try:
            rgb = image_to_rgb(msg) if isinstance(msg, Image) else compressed_image_to_rgb(msg)
        except ValueError as err:
            self._bad("bad_image", f"image dropped: {err}")
            return
        camera = self.camera
        if camera is None:
            self._bad("no_camera_info", "image dropped: no camera_info received yet")
            return
        if (camera.height, camera.width) != rgb.shape[:2]:
            self._bad("image_size_mismatch",
                      f"image dropped: image is {rgb.shape[1]}x{rgb.shape[0]} but camera_info "
                      f"says {camera.width}x{camera.height}")
            return
        if not (self.params["camera_frame"] or msg.header.frame_id):
            self._bad("missing_frame_id", "image dropped: empty header.frame_id and no "
                                          "camera_frame parameter")
            return
        self._push(self.pairer.push_image, _Frame(rgb, msg.header, camera))

    def _on_cloud(self, msg: PointCloud2) -> None:
        with self._lock:
            self.counts["clouds_received"] += 1
        points = checked_cloud_points(msg, self.params["intensity_field"], self.bad_input)
        if points is None:
            return
        if not (self.params["lidar_frame"] or msg.header.frame_id):
            self._bad("missing_frame_id", "cloud dropped: empty header.frame_id and no "
                                          "lidar_frame parameter")
            return
        self._push(self.pairer.push_cloud, _Frame(points, msg.header))

    def _push(self, push: Any, frame: _Frame) -> None:
        """Offer a checked message to the pairer; hand a formed pair to the worker."""
        try:
            pair = push(stamp_seconds(frame.header), frame)
        except ValueError as err:
            self._bad("bad_stamp", f"message dropped: {err}")
            return
        now = time.monotonic()
        if pair is None:
            offset = self.pairer.last_unpaired_offset
            if offset is not None and now - self._last_pair_time >= \
                    self.params["no_pair_warning_s"]:
                self._bad("stamps_never_pair",
                          f"no image/cloud pair for {now - self._last_pair_time:.1f} s: the "
                          f"closest stamps differ by {offset:+.3f} s (image - cloud), more "
                          f"than sync_slop_s={self.params['sync_slop_s']} s")
            return
        self._last_pair_time = now
        with self._lock:
            self.counts["pairs_received"] += 1
            self._worker.submit(_Job(pair, now))

    # -- worker ---------------------------------------------------------------------------
    def _process(self, job: _Job) -> None:
        image: _Frame = job.pair.image
        cloud: _Frame = job.pair.cloud
        camera_frame = self.params["camera_frame"] or image.header.frame_id
        lidar_frame = self.params["lidar_frame"] or cloud.header.frame_id
        try:
            result = self.calibrator.calibrate(image.data, cloud.data, image.camera, self.prior)
        except ValueError as err:
            self._bad("calibration_input", f"pair skipped: {err}")
            with self._lock:
                aggregate = self.aggregate
            self._publish_frame(job, FrameRecord.input_error(
                job.pair.image_stamp, job.pair.cloud_stamp, str(err),
                None if aggregate is None else aggregate.T_cam_lidar,
                time.monotonic() - job.formed))
            return
        quality = result.quality
        with self._lock:
            accepted = quality.valid and self.estimator.add(
                result.T_cam_lidar, weight=float(max(quality.num_inliers, 1)))
            self.counts["estimates_accepted" if accepted else "estimates_rejected"] += 1
            if accepted:
                self.aggregate = self.estimator.estimate()
            aggregate = self.aggregate
            self.last_result = result
            self._frames = (camera_frame, lidar_frame, stamp_seconds(image.header))
            self._camera_used = image.camera
        why = "" if accepted else (
            quality.reason or "outside the prior bounds of the temporal estimator")
        if not accepted:
            self.get_logger().debug(f"frame estimate rejected: {why}")
        self._publish_frame(job, FrameRecord(
            job.pair.image_stamp, job.pair.cloud_stamp, quality.valid, accepted, why,
            quality.num_inliers, quality.reprojection_error_px, quality.overlap_ratio,
            result.T_cam_lidar, None if aggregate is None else aggregate.T_cam_lidar,
            time.monotonic() - job.formed))

        mask = array_to_image(result.image_overlap_mask, "mono8", image.header)
        self.pub_mask.publish(mask)
        self.pub_points.publish(xyz_fields_to_pointcloud2(
            cloud.data[:, :3], cloud.header, overlap=result.point_overlap.astype(np.float32)))
        if aggregate is not None:
            self._publish_transform(aggregate.T_cam_lidar, image.header, camera_frame,
                                    lidar_frame)
        if self.pub_overlay.get_subscription_count() > 0:
            T = aggregate.T_cam_lidar if aggregate is not None else (
                result.T_cam_lidar if quality.valid else None)
            if T is not None:
                overlay = depth_overlay(image.data, cloud.data, T, image.camera,
                                        self.params["overlay_point_radius"])
                self.pub_overlay.publish(array_to_image(overlay, "rgb8", image.header))
        with self._lock:
            self.last_latency_s = time.monotonic() - job.formed

    def _on_worker_error(self, job: _Job, err: Exception) -> None:
        """A pair whose processing raised (counted by the worker): its frame record says why."""
        if job.recorded:
            return
        with self._lock:
            aggregate = self.aggregate
        self._publish_frame(job, FrameRecord.input_error(
            job.pair.image_stamp, job.pair.cloud_stamp,
            f"calibration failed: {type(err).__name__}: {err}",
            None if aggregate is None else aggregate.T_cam_lidar,
            time.monotonic() - job.formed))

    def _publish_frame(self, job: _Job, record: FrameRecord) -> None:
        """Publish one pair's record on ~/frame_estimates (header: the image's)."""
        job.recorded = True
        status = DiagnosticStatus(name=f"{self.get_name()}{STATUS_SUFFIX}", hardware_id="nclr",
                                  level=DiagnosticStatus.OK if record.accepted
                                  else DiagnosticStatus.WARN, message=record.reason)
        status.values = [KeyValue(key=k, value=v) for k, v in record.to_values().items()]
        msg = DiagnosticArray(status=[status])
        msg.header = job.pair.image.header
        self.pub_frames.publish(msg)

    def _publish_transform(self, T: np.ndarray, header: Header, camera_frame: str,
                           lidar_frame: str) -> None:
        self.pub_extrinsics.publish(_transform_msg(T, header, camera_frame, lidar_frame))
        if self.pub_tf_static is not None:
            child = self.params["tf_child_frame"] or lidar_frame
            self.pub_tf_static.publish(
                self._tf_message(transforms=[_transform_msg(T, header, camera_frame, child)]))

    # -- diagnostics ----------------------------------------------------------------------
    def diagnostics_values(self) -> dict[str, str]:
        """The diagnostic key-values (counters, bad input by reason, latency, spread)."""
        with self._lock:
            values: dict[str, Any] = dict(self.counts)
            values["pairs_processed"] = self._worker.processed
            values["pairs_dropped"] = self._worker.dropped
            values["pairs_pending"] = self._worker.pending
            values["pairs_in_progress"] = self._worker.in_progress
            values.update(self._worker.error_counts())
            sync = self.pairer.counters
            values["sync_dropped_images"] = sync.dropped_images
            values["sync_dropped_clouds"] = sync.dropped_clouds
            values["last_latency_s"] = self.last_latency_s
            aggregate = self.aggregate
            result = self.last_result
        values.update(self.bad_input.counts())
        values.update(self.lost_messages.counts())
        if result is not None:
            values["last_valid"] = result.quality.valid
            values["last_reason"] = result.quality.reason
            values["last_inliers"] = result.quality.num_inliers
            values["last_reprojection_error_px"] = result.quality.reprojection_error_px
            values["last_overlap_ratio"] = result.quality.overlap_ratio
        if aggregate is not None:
            values["estimate_frames"] = aggregate.num_frames
            values["estimate_inliers"] = aggregate.num_inliers
            values["rotation_spread_deg"] = aggregate.rotation_spread_deg
            values["translation_spread_m"] = aggregate.translation_spread_m
        return {key: str(value) for key, value in values.items()}

    def publish_diagnostics(self) -> None:
        values = self.diagnostics_values()
        if self.aggregate is None:
            level, message = DiagnosticStatus.WARN, "no calibration estimate yet"
        elif any(k.startswith(("bad_input.", "worker_errors.")) for k in values):
            level, message = DiagnosticStatus.WARN, \
                "estimating; some input was bad or failed (see bad_input.*, worker_errors.*)"
        else:
            level, message = DiagnosticStatus.OK, "estimating"
        self.pub_diagnostics.publish(diagnostic_array(
            f"{self.get_name()}: calibration", level, message, values,
            self.get_clock().now().to_msg()))

    # -- saving ---------------------------------------------------------------------------
    def save(self) -> dict[str, Path]:
        """Write the calibration files of the current aggregate; ValueError when none yet."""
        with self._lock:
            aggregate = self.aggregate
            camera_frame, lidar_frame, stamp = self._frames
            camera = self._camera_used
            result = self.last_result
        if aggregate is None:
            raise ValueError("no calibration estimate yet: nothing to save")
        quality: dict[str, Any] = {
            "window_inliers": aggregate.num_inliers,
            "rotation_spread_deg": aggregate.rotation_spread_deg,
            "translation_spread_m": aggregate.translation_spread_m,
        }
        if result is not None:
            quality.update({f"last_frame_{k}": v for k, v in result.quality.as_dict().items()})
        record = CalibrationRecord(T_cam_lidar=aggregate.T_cam_lidar, camera_frame=camera_frame,
                                   lidar_frame=lidar_frame, stamp=stamp,
                                   frame_count=aggregate.num_frames, quality=quality,
                                   camera=camera)
        self.output_directory.mkdir(parents=True, exist_ok=True)
        return write_calibration_files(record, self.output_directory, self.params["file_stem"])

    def _on_save(self, request: Trigger.Request, response: Trigger.Response
                 ) -> Trigger.Response:
        try:
            paths = self.save()
        except (OSError, ValueError) as err:
            response.success, response.message = False, str(err)
        else:
            response.success = True
            response.message = " ".join(str(p) for p in paths.values())
        return response

    def shutdown(self) -> None:
        """Stop the worker and, with save_on_shutdown, write the calibration files."""
        self._worker.stop()
        if self.params["save_on_shutdown"]:
            try:
                paths = self.save()
            except (OSError, ValueError) as err:
                self.get_logger().warning(f"calibration not saved on shutdown: {err}")
            else:
                self.get_logger().info(f"calibration saved: {paths['yaml']}")


def main(args: list[str] | None = None) -> None:
    """Console script `calibration_node` (applies the Fast DDS profile unless one is set).

    SIGINT and SIGTERM stop the executor while the ROS context is still valid, so the
    calibration is saved and logged before rclpy shuts down (`node_common.run_node`).
    """
    run_node(CalibrationNode, NODE_NAME, args)


if __name__ == "__main__":
    main()
