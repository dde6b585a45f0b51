"""The calibration node's parameters (name -> default, description) and what the core
builds from them: the Calibrator's `SolverSettings`, the pipeline's `OnlineSettings` and the
prior. Pure Python (no rclpy), so the bag tools share it without importing the node."""
from __future__ import annotations

from typing import Any

import numpy as np

from nclr_core.data.rosbag.time_sync import DEFAULT_QUEUE_SIZE, DEFAULT_SLOP_S
from nclr_core.geometry.camera import CameraModel, check_sensor_camera
from nclr_core.geometry.se3 import make_transform, matrix_from_quaternion_xyzw
from nclr_core.inference import SolverSettings
from nclr_core.online.pipeline import NETWORK_STAGES, OnlineSettings
from nclr_core.online.refine import RefineSettings

NODE_NAME = "nclr_calibration"
SHIPPED_MODEL = "nclr_synthetic.pt"  # models/ in the package (see README)
OUTPUT_DIRECTORY_LEAF = "nclr_calibration"  # under $ROS_HOME when output_directory is empty
# name of the one DiagnosticStatus of each ~/frame_estimates message: NODE_NAME + this
STATUS_SUFFIX = ": frame estimate"

# name -> (default, description). Defaults mirror config/calibrate.yaml (a test checks it).
# Every parameter is read-only: it is read once at start-up.
PARAMETERS: dict[str, tuple[Any, str]] = {
    "model_path": ("", "NCLR checkpoint (.pt; training/export_model.py); empty: the shipped "
                       f"models/{SHIPPED_MODEL}, trained on synthetic data only. Not loaded "
                       "when the stages need no network (refine alone)."),
    "device": ("cpu", "torch device for inference: cpu, cuda, cuda:1, ..."),
    "use_compressed": (False, "subscribe to image/compressed (CompressedImage) instead of "
                              "image (Image)."),
    "reliability": ("best_effort", "subscription reliability: best_effort (sensor data, "
                                   "matches any publisher) or reliable (reliable publishers "
                                   "such as bag players)."),
    "qos_depth": (5, "subscription queue depth."),
    "sync_slop_s": (DEFAULT_SLOP_S, "largest |image stamp - cloud stamp| of a pair, seconds."),
    "sync_queue_size": (DEFAULT_QUEUE_SIZE, "unpaired messages kept per stream for pairing."),
    "no_pair_warning_s": (2.0, "warn with the measured stamp offset when no pair formed for "
                               "this long while both streams arrive, seconds."),
    "intensity_field": ("intensity", "PointCloud2 field used as intensity (0 when absent)."),
    "intensity_full_scale": (0.0, "the LiDAR's intensity full scale (1.0, 255.0, 65535.0, "
                                  "...), divided out to [0, 1]; 0: found from the clouds "
                                  "(the smallest of 1, 255, 65535 that holds them)."),
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
    "stages": ("global", "online-calibration stages, comma-separated, run in the order "
                         "global, guided, joint, refine (nclr_core.online.pipeline)."),
    "use_prior": (False, "online regime: the prior T_cam_lidar below (the installed or rough "
                         "calibration) gates estimates and is watched for drift."),
    "prior_translation": ([0.0, 0.0, 0.0], "prior T_cam_lidar translation x y z, metres."),
    "prior_quaternion_xyzw": ([0.0, 0.0, 0.0, 1.0], "prior T_cam_lidar rotation, quaternion "
                                                    "x y z w."),
    "prior_max_rotation_deg": (15.0, "reject estimates rotated farther from the prior, "
                                     "degrees."),
    "prior_max_translation_m": (0.5, "reject estimates farther from the prior, metres."),
    "window": (50, "per-frame estimates aggregated (sliding window)."),
    "joint_window": (24, "frames whose matches the joint stage pools (sliding window)."),
    "refine_window": (10, "frames the refine stage aligns at once (varied places help)."),
    "refine_every": (10, "frames between two refinements once its window is full (a "
                         "refinement of 10 frames takes about 10 s on one CPU core; pairs "
                         "arriving meanwhile are dropped)."),
    "refine_max_rotation_deg": (6.0, "refine searches this far from its start, degrees "
                                     "(above the start's expected error)."),
    "refine_max_translation_m": (0.3, "refine searches this far from its start, metres."),
    "refine_beam_divergence_deg": (0.15, "the LiDAR's beam divergence, degrees (2-3 mrad "
                                         "for spinning LiDARs): where an occluding contour "
                                         "lies between the near and far returns."),
    "min_frames": (3, "estimates needed before an aggregate is published."),
    "outlier_rotation_deg": (1.0, "aggregation outlier floor on rotation, degrees."),
    "outlier_translation_m": (0.05, "aggregation outlier floor on translation, metres."),
    "drift_sigmas": (3.0, "with a prior: warn 'calibration drifted' when the estimate differs "
                          "from it by more than this many sigmas on some axis..."),
    "drift_min_rotation_deg": (0.1, "...and by more than this rotation, degrees..."),
    "drift_min_translation_m": (0.01, "...or translation, metres."),
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


def defaults() -> dict[str, Any]:
    """{name: default} of every parameter."""
    return {name: default for name, (default, _) in PARAMETERS.items()}


def parse_stages(text: str) -> tuple[str, ...]:
    """"global, joint" -> ("global", "joint") (validated by OnlineSettings)."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def needs_network(params: dict[str, Any]) -> bool:
    """Whether the stages use the network (every stage but refine does)."""
    return any(stage in NETWORK_STAGES for stage in parse_stages(params["stages"]))


def solver_settings(params: dict[str, Any]) -> SolverSettings:
    """The Calibrator's per-frame solve and checks."""
    return SolverSettings(
        reprojection_threshold_px=params["reprojection_threshold_px"],
        ransac_iterations=params["ransac_iterations"],
        ransac_confidence=params["ransac_confidence"],
        min_inliers=params["min_inliers"],
        max_translation_m=params["max_translation_m"],
        max_rotation_from_prior_deg=params["prior_max_rotation_deg"],
        max_translation_from_prior_m=params["prior_max_translation_m"],
    )


def online_settings(params: dict[str, Any]) -> OnlineSettings:
    """The pipeline's stages, window and drift test."""
    return OnlineSettings(
        stages=parse_stages(params["stages"]), window=params["window"],
        min_frames=params["min_frames"], joint_window=params["joint_window"],
        outlier_rotation_deg=params["outlier_rotation_deg"],
        outlier_translation_m=params["outlier_translation_m"],
        max_rotation_from_prior_deg=params["prior_max_rotation_deg"],
        max_translation_from_prior_m=params["prior_max_translation_m"],
        drift_sigmas=params["drift_sigmas"],
        drift_min_rotation_deg=params["drift_min_rotation_deg"],
        drift_min_translation_m=params["drift_min_translation_m"],
        refine=RefineSettings(max_rotation_deg=params["refine_max_rotation_deg"],
                              max_translation_m=params["refine_max_translation_m"],
                              beam_divergence_deg=params["refine_beam_divergence_deg"]),
        refine_window=params["refine_window"], refine_every=params["refine_every"],
        intensity_full_scale=params["intensity_full_scale"] or None)


def prior_from_parameters(params: dict[str, Any]) -> np.ndarray | None:
    """(4, 4) prior T_cam_lidar with `use_prior`, else None; ValueError for a bad quaternion."""
    if not params["use_prior"]:
        return None
    q = np.asarray(params["prior_quaternion_xyzw"], dtype=np.float64)
    if q.shape != (4,) or not abs(np.linalg.norm(q) - 1.0) < 1e-3:
        raise ValueError(f"parameter prior_quaternion_xyzw must be a unit quaternion, "
                         f"got {q.tolist()}")
    return make_transform(matrix_from_quaternion_xyzw(q / np.linalg.norm(q)),
                          np.asarray(params["prior_translation"], dtype=np.float64))


def camera_from_parameters(params: dict[str, Any]) -> CameraModel | None:
    """The camera of `camera_*` with `intrinsics_from_parameters` (checked), else None (the
    node reads camera_info)."""
    if not params["intrinsics_from_parameters"]:
        return None
    model = params["camera_distortion_model"]
    return check_sensor_camera(CameraModel(
        K=np.asarray(params["camera_k"], dtype=np.float64).reshape(3, 3),
        width=params["camera_width"], height=params["camera_height"], distortion=model,
        D=np.asarray(params["camera_d"]) if model != "none" else np.zeros(0)))
