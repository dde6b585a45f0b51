"""What the calibration node publishes, built from the core's results: the extrinsics as
TransformStamped and PoseWithCovarianceStamped, and the diagnostic status line."""
from __future__ import annotations

from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped
from std_msgs.msg import Header

from nclr_core.geometry.se3 import quaternion_xyzw_from_matrix
from nclr_core.online.pipeline import DriftReport
from nclr_core.online.pose import PoseEstimate
from nclr_core.online.records import CalibrationEstimate

# PoseWithCovariance order (x, y, z, rot x, rot y, rot z) from δ = (ω, ρ) of PoseEstimate
ROS_COVARIANCE_ORDER = [3, 4, 5, 0, 1, 2]


def transform_msg(T_cam_lidar: np.ndarray, header: Header, parent: str, child: str
                  ) -> TransformStamped:
    """T_cam_lidar (4, 4) as the transform from `parent` (camera) to `child` (LiDAR)."""
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


def pose_with_covariance_msg(pose: PoseEstimate, header: Header, camera_frame: str
                             ) -> PoseWithCovarianceStamped:
    """The LiDAR frame's pose in the camera frame (T_cam_lidar) with its covariance."""
    msg = PoseWithCovarianceStamped()
    msg.header.stamp = header.stamp
    msg.header.frame_id = camera_frame
    T = pose.T_cam_lidar
    p = msg.pose.pose.position
    p.x, p.y, p.z = (float(v) for v in T[:3, 3])
    o = msg.pose.pose.orientation
    o.x, o.y, o.z, o.w = (float(v) for v in quaternion_xyzw_from_matrix(T[:3, :3]))
    order = ROS_COVARIANCE_ORDER
    msg.pose.covariance = [float(v) for v in pose.covariance[np.ix_(order, order)].reshape(36)]
    return msg


def calibration_status(estimate: CalibrationEstimate, drift: DriftReport | None,
                       values: dict[str, Any]) -> tuple[bytes, str]:
    """The diagnostic level and message of the node's state (`values`: its key-values)."""
    if not estimate.solved:
        return DiagnosticStatus.WARN, "no calibration estimate yet"
    if drift is not None and drift.drifted:
        return DiagnosticStatus.WARN, (
            f"calibration drifted from the installed one ({', '.join(drift.axes)}): "
            f"{drift.describe()}")
    if estimate.warnings:
        return DiagnosticStatus.WARN, "; ".join(estimate.warnings)
    if any(k.startswith(("bad_input.", "worker_errors.")) for k in values):
        return DiagnosticStatus.WARN, ("estimating; some input was bad or failed (see "
                                       "bad_input.*, worker_errors.*)")
    return DiagnosticStatus.OK, "estimating"
