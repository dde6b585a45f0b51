"""sensor_msgs/CameraInfo -> `CameraModel`, without ROS.

A message is anything with the CameraInfo fields (an rclpy message or a decoded rosbags one).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from nclr_core.geometry.camera import CameraModel, check_sensor_camera

# Coefficients per model: plumb_bob k1 k2 p1 p2 k3, equidistant k1 k2 k3 k4.
# rational_polynomial's are k1 k2 p1 p2 k3 k4 k5 k6; with k4..k6 zero it is exactly plumb_bob.
_COEFFICIENTS = {"plumb_bob": 5, "equidistant": 4}


def camera_info_to_camera(msg: Any) -> CameraModel:
    """CameraModel (K, width, height, distortion, D) of the raw (unrectified) image.

    distortion_model: "plumb_bob" and "equidistant" map to themselves, "rational_polynomial"
    to plumb_bob when k4..k6 are zero, and an empty model with zero (or no) D to "none";
    zero coefficients padded beyond a model's count are dropped.
    Raises ValueError for an uncalibrated camera (K all zero), another distortion model,
    binning or a region of interest (K would not describe the published image), and for
    intrinsics no real camera has (`check_sensor_camera`: non-finite values, focal lengths
    that are not positive or far from the image size, a principal point far off the image).
    """
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.any(K):
        raise ValueError("CameraInfo K is all zero: the camera is not calibrated")
    if msg.binning_x > 1 or msg.binning_y > 1:
        raise ValueError(
            f"CameraInfo binning {msg.binning_x} x {msg.binning_y} is not supported "
            f"(K describes the unbinned image)"
        )
    roi = msg.roi
    full_roi = roi.width == 0 or (roi.x_offset == 0 and roi.y_offset == 0 and
                                   roi.width == msg.width and roi.height == msg.height)
    if not full_roi:
        raise ValueError(
            f"CameraInfo region of interest {roi.width} x {roi.height} at "
            f"({roi.x_offset}, {roi.y_offset}) is not supported"
        )
    D = np.asarray(msg.d, dtype=np.float64)
    model = msg.distortion_model
    if model == "rational_polynomial":
        if np.any(D[_COEFFICIENTS["plumb_bob"]:]):
            raise ValueError(
                f"CameraInfo rational_polynomial with non-zero k4..k6 {D[5:].tolist()} is not "
                f"supported (plumb_bob and equidistant are)"
            )
        model = "plumb_bob"
    elif model in ("", "none"):
        if np.any(D):
            raise ValueError(
                f"CameraInfo has distortion coefficients {D.tolist()} but no distortion model"
            )
        model = "none"
    elif model not in _COEFFICIENTS:
        raise ValueError(
            f"CameraInfo distortion model '{model}' is not supported "
            f"(plumb_bob, equidistant, rational_polynomial with k4..k6 = 0, or none)"
        )
    if model != "none":
        count = _COEFFICIENTS[model]
        if np.any(D[count:]):
            raise ValueError(
                f"CameraInfo {msg.distortion_model} has {len(D)} coefficients; {model} takes "
                f"{count} (extra ones may only be zero), got {D.tolist()}"
            )
        D = D[:count]
    return check_sensor_camera(CameraModel(
        K=K, width=int(msg.width), height=int(msg.height), distortion=model,
        D=D if model != "none" else np.zeros(0)))
