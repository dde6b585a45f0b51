"""ROS message <-> NumPy / nclr_core conversions, in one import for the nodes.

Reading (PointCloud2, Image, CompressedImage, CameraInfo -> arrays and `CameraModel`) is
ROS-free and lives in `nclr_core.data.rosbag`; building messages needs rclpy and lives in
`nclr_ros.pointcloud2` and `nclr_ros.image_msgs`.
"""
from __future__ import annotations

from nclr_core.data.rosbag.camera_info import camera_info_to_camera
from nclr_core.data.rosbag.image_msgs import (
    SUPPORTED_ENCODINGS,
    compressed_image_to_rgb,
    image_to_array,
    image_to_rgb,
)
from nclr_core.data.rosbag.pointcloud2 import (
    fields_to_dtype,
    pointcloud2_to_array,
    pointcloud2_to_xyzi,
)
from nclr_ros.image_msgs import array_to_image, rgb_to_compressed_image
from nclr_ros.pointcloud2 import array_to_pointcloud2, xyz_fields_to_pointcloud2

__all__ = [
    "SUPPORTED_ENCODINGS",
    "array_to_image",
    "array_to_pointcloud2",
    "camera_info_to_camera",
    "compressed_image_to_rgb",
    "fields_to_dtype",
    "image_to_array",
    "image_to_rgb",
    "pointcloud2_to_array",
    "pointcloud2_to_xyzi",
    "rgb_to_compressed_image",
    "xyz_fields_to_pointcloud2",
]
