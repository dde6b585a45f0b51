"""LiDAR semantic segmentation: `ros2 launch nclr_ros segment.launch.py model_path:=...`.

Arguments remap the node's relative topic `points`, choose the parameter file (default: the
installed config/segment.yaml), the checkpoint (`model_path`, overrides the file when given)
and `use_sim_time`. Unless the environment already names a Fast DDS profile, the package's
large-data profile (config/fastdds_large_data.xml) is set for the node; the LiDAR driver's
side needs it too.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

PACKAGE = "nclr_ros"
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


def _dds_profile(context, *args, **kwargs):
    """Use the package's Fast DDS profile unless the user set one."""
    if any(os.environ.get(name) for name in PROFILE_VARIABLES):
        return []
    profile = os.path.join(get_package_share_directory(PACKAGE), "config",
                           "fastdds_large_data.xml")
    return [SetEnvironmentVariable(PROFILE_VARIABLES[0], profile)]


def _segmentation_node(context, *args, **kwargs):
    overrides = {"use_sim_time": LaunchConfiguration("use_sim_time").perform(context)
                 .lower() in ("true", "1")}
    model_path = LaunchConfiguration("model_path").perform(context)
    if model_path:
        overrides["model_path"] = model_path
    return [Node(
        package=PACKAGE,
        executable="segmentation_node",
        name="nclr_segmentation",
        output="screen",
        parameters=[LaunchConfiguration("params_file"), overrides],
        remappings=[("points", LaunchConfiguration("points_topic"))],
    )]


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config",
                                  "segment.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("points_topic", default_value="/lidar/points",
                              description="sensor_msgs/PointCloud2 topic"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="node parameter YAML (nclr_segmentation: "
                                          "ros__parameters: ...)"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="segmentation checkpoint; empty: model_path of "
                                          "params_file"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (bag playback)"),
        OpaqueFunction(function=_dds_profile),
        OpaqueFunction(function=_segmentation_node),
    ])
