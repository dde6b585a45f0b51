"""ROS 2 node `nclr_calibration`: online LiDAR-camera calibration with NCLR.

Subscribes (relative names, remap them): `image` (sensor_msgs/Image, or `image/compressed`
CompressedImage with `use_compressed`), `camera_info` (the latest one is used; or intrinsics
from parameters) and `points` (PointCloud2). Sensor-data QoS by default; `reliability`
selects reliable subscriptions (bag players, reliable drivers).

A thin adapter around `nclr_core.online.pipeline.OnlineCalibration`, which holds every
decision (stages, acceptance, the window, the estimate and its uncertainty, drift): images
and clouds are decoded and checked in the subscription callbacks, paired by approximate time
(`nclr_core.data.rosbag.time_sync.ApproximateTimePairer`), and a worker thread hands the
newest pair to the pipeline: a pair arriving while the previous one still waits is replaced
(counted as dropped), so `pairs_received == pairs_processed + pairs_dropped + pairs_pending +
pairs_in_progress`.

Publishes: `~/extrinsics` (TransformStamped, parent = camera frame, child = LiDAR frame,
i.e. T_cam_lidar; reliable + transient local) and `~/extrinsics_with_covariance`
(PoseWithCovarianceStamped, frame = the camera frame, pose = the LiDAR frame's pose in it,
covariance in ROS order x y z, rotation about x y z of the camera frame) once the pipeline
has an estimate, `~/overlap_mask` (mono8, input size and header), `~/points_overlap`
(PointCloud2 x y z + `overlap` float32, cloud header), `~/overlay` (rgb8, points coloured by
depth; only while subscribed), `~/frame_estimates` (one DiagnosticArray per processed pair:
`nclr_core.online.records.FrameRecord`; header = the image's), `/diagnostics` (counters,
the estimate's per-axis sigmas, WARN "calibration drifted" when the estimate moved away from
the prior, the installed calibration, by more than `drift_sigmas`), and optionally
`/tf_static`. Service `~/save_calibration` (std_srvs/Trigger) writes the calibration files
(`nclr_core.io.calibration_files`); they are also written on shutdown.

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

import dataclasses
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from nclr_core.data.rosbag.time_sync import ApproximateTimePairer, Pair
from nclr_core.geometry.camera import CameraModel
from nclr_core.inference import Calibrator
from nclr_core.io.calibration_files import (
    CalibrationRecord,
    remove_stale_calibration_temporaries,
    write_calibration_files,
)
from nclr_core.online.pipeline import DriftReport, Frame, FrameOutcome, OnlineCalibration
from nclr_core.online.pose import PoseEstimate
from nclr_core.online.records import CalibrationEstimate, FrameRecord
from nclr_core.visualization import depth_overlay
from nclr_ros.calibration_messages import (
    calibration_status,
    pose_with_covariance_msg,
    transform_msg,
)
from nclr_ros.calibration_parameters import (
    NODE_NAME,
    OUTPUT_DIRECTORY_LEAF,
    PARAMETERS,
    SHIPPED_MODEL,
    STATUS_SUFFIX,
    camera_from_parameters,
    needs_network,
    online_settings,
    prior_from_parameters,
    solver_settings,
)
from nclr_ros.conversions import (
    SUPPORTED_ENCODINGS,
    array_to_image,
    camera_info_to_camera,
    compressed_image_to_rgb,
    image_to_rgb,
    xyz_fields_to_pointcloud2,
)
from nclr_ros.node_common import (
    LATCHED,
    BadInputLog,
    LostMessageMonitor,
    NewestJobWorker,
    checked_cloud_points,
    declare_parameters,
    diagnostic_array,
    model_path_or_shipped,
    resolve_output_directory,
    run_node,
    stamp_seconds,
    subscription_qos,
)


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


class CalibrationNode(Node):
    """Online calibration node (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        p = declare_parameters(self, PARAMETERS)
        self.params = p
        calibrator = None
        if needs_network(p):
            p["model_path"] = model_path_or_shipped(self, p["model_path"], SHIPPED_MODEL,
                                                    "pre-trained")
            calibrator = Calibrator.from_checkpoint(p["model_path"], p["device"],
                                                    solver_settings(p))
        self.prior = prior_from_parameters(p)
        self.pipeline = OnlineCalibration(calibrator, online_settings(p), self.prior)
        self.pairer = ApproximateTimePairer(p["sync_slop_s"], p["sync_queue_size"])
        self.camera = camera_from_parameters(p)

        self.output_directory = resolve_output_directory(p["output_directory"],
                                                         OUTPUT_DIRECTORY_LEAF)
        for leftover in remove_stale_calibration_temporaries(self.output_directory,
                                                             p["file_stem"]):
            self.get_logger().info(f"removed {leftover}, left by an interrupted save")

        self._lock = threading.Lock()  # counters, estimate, the worker's job slot
        self.counts = dict.fromkeys(("camera_infos_received", "images_received",
                                     "clouds_received", "pairs_received",
                                     "estimates_accepted", "estimates_rejected"), 0)
        self.bad_input = BadInputLog(self.get_logger(), p["warn_throttle_s"])
        self._last_pair_time = time.monotonic()
        self.last_latency_s = math.nan
        self.last_record: FrameRecord | None = None
        self.estimate: CalibrationEstimate = self.pipeline.estimate()
        self.drift: DriftReport | None = None
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
        self.pub_covariance = self.create_publisher(PoseWithCovarianceStamped,
                                                    "~/extrinsics_with_covariance", LATCHED)
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
            f"calibrating ({p['stages']}) with {p['model_path'] or 'no network'} on "
            f"{p['device']}; subscribed to "
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
        outcome = self.pipeline.process(Frame(image.data, cloud.data, image.camera,
                                              job.pair.image_stamp, job.pair.cloud_stamp))
        record = dataclasses.replace(outcome.record, latency_s=time.monotonic() - job.formed)
        if outcome.bad_input:
            self._bad("calibration_input", f"pair skipped: {outcome.bad_input}")
        estimate = self.pipeline.estimate()
        drift = self.pipeline.drift()
        with self._lock:
            if not outcome.bad_input:
                self.counts["estimates_accepted" if record.accepted
                            else "estimates_rejected"] += 1
            self.last_record, self.estimate, self.drift = record, estimate, drift
            self._frames = (camera_frame, lidar_frame, stamp_seconds(image.header))
            self._camera_used = image.camera
        if not record.accepted:
            self.get_logger().debug(f"frame estimate not accepted: {record.reason}")
        self._publish_frame(job, record)
        if outcome.network is not None:
            self._publish_network_outputs(outcome, image, cloud)
        if estimate.solved:
            self._publish_transform(estimate.pose, image.header, camera_frame, lidar_frame)
        if self.pub_overlay.get_subscription_count() > 0:
            T = estimate.T_cam_lidar if estimate.solved else (
                record.T_cam_lidar if record.valid else None)
            if T is not None:
                overlay = depth_overlay(image.data, cloud.data, T, image.camera,
                                        self.params["overlay_point_radius"])
                self.pub_overlay.publish(array_to_image(overlay, "rgb8", image.header))
        with self._lock:
            self.last_latency_s = time.monotonic() - job.formed

    def _publish_network_outputs(self, outcome: FrameOutcome, image: _Frame, cloud: _Frame
                                 ) -> None:
        """The network's image overlap mask and per-point overlap scores."""
        network = outcome.network
        self.pub_mask.publish(array_to_image(network.image_overlap_mask, "mono8",
                                             image.header))
        self.pub_points.publish(xyz_fields_to_pointcloud2(
            cloud.data[:, :3], cloud.header, overlap=network.point_overlap.astype(np.float32)))

    def _on_worker_error(self, job: _Job, err: Exception) -> None:
        """A pair whose processing raised (counted by the worker): its frame record says why."""
        if job.recorded:
            return
        with self._lock:
            estimate = self.estimate
        self._publish_frame(job, FrameRecord(
            job.pair.image_stamp, job.pair.cloud_stamp, "", None, False, False,
            f"calibration failed: {type(err).__name__}: {err}", 0, math.nan, math.nan,
            estimate.T_cam_lidar, latency_s=time.monotonic() - job.formed))

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

    def _publish_transform(self, pose: PoseEstimate, header: Header, camera_frame: str,
                           lidar_frame: str) -> None:
        T = pose.T_cam_lidar
        self.pub_extrinsics.publish(transform_msg(T, header, camera_frame, lidar_frame))
        self.pub_covariance.publish(pose_with_covariance_msg(pose, header, camera_frame))
        if self.pub_tf_static is not None:
            child = self.params["tf_child_frame"] or lidar_frame
            self.pub_tf_static.publish(
                self._tf_message(transforms=[transform_msg(T, header, camera_frame, child)]))

    # -- diagnostics ----------------------------------------------------------------------
    def diagnostics_values(self) -> dict[str, str]:
        """The diagnostic key-values (counters, bad input by reason, latency, the last
        frame, the estimate with its per-axis sigmas, drift)."""
        with self._lock:
            values: dict[str, Any] = dict(self.counts)
            worker = self._worker
            values.update(pairs_processed=worker.processed, pairs_dropped=worker.dropped,
                          pairs_pending=worker.pending, pairs_in_progress=worker.in_progress)
            values.update(self._worker.error_counts())
            sync = self.pairer.counters
            values["sync_dropped_images"] = sync.dropped_images
            values["sync_dropped_clouds"] = sync.dropped_clouds
            values["last_latency_s"] = self.last_latency_s
            estimate, record, drift = self.estimate, self.last_record, self.drift
        values.update(self.bad_input.counts())
        values.update(self.lost_messages.counts())
        if record is not None:
            values.update({f"last_{k}": v for k, v in record.quality().items()})
        values.update(estimate.as_values())
        if drift is not None:
            values["drifted"] = drift.drifted
            values["drift"] = drift.describe()
        return {key: str(value) for key, value in values.items()}

    def publish_diagnostics(self) -> None:
        values = self.diagnostics_values()
        with self._lock:
            estimate, drift = self.estimate, self.drift
        level, message = calibration_status(estimate, drift, values)
        self.pub_diagnostics.publish(diagnostic_array(
            f"{self.get_name()}: calibration", level, message, values,
            self.get_clock().now().to_msg()))

    # -- saving ---------------------------------------------------------------------------
    def save(self) -> dict[str, Path]:
        """Write the calibration files of the current estimate; ValueError when none yet."""
        with self._lock:
            estimate, record = self.estimate, self.last_record
            camera_frame, lidar_frame, stamp = self._frames
            camera = self._camera_used
        if not estimate.solved:
            raise ValueError(f"no calibration estimate yet ({estimate.reason}): nothing to "
                             "save")
        quality: dict[str, Any] = estimate.as_values()
        if record is not None:
            quality.update({f"last_frame_{k}": v for k, v in record.quality().items()})
        calibration = CalibrationRecord(
            T_cam_lidar=estimate.T_cam_lidar, camera_frame=camera_frame,
            lidar_frame=lidar_frame, stamp=stamp, frame_count=estimate.num_frames,
            quality=quality, camera=camera)
        self.output_directory.mkdir(parents=True, exist_ok=True)
        return write_calibration_files(calibration, self.output_directory,
                                       self.params["file_stem"])

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
