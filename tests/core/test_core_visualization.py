"""Overlays of LiDAR points on camera images (pure NumPy/OpenCV)."""
import subprocess
import sys

import numpy as np

from nclr_core.geometry.camera import CameraModel
from nclr_core.visualization import depth_overlay

K = [250.0, 0.0, 159.5, 0.0, 250.0, 119.5, 0.0, 0.0, 1.0]


def test_depth_overlay_colours_points_near_red_far_blue():
    camera = CameraModel(np.array(K).reshape(3, 3), 320, 240)
    image = np.zeros((240, 320, 3), np.uint8)
    # camera frame = LiDAR frame; near point at pixel (159, 119), far one at (209, 119),
    # a third one behind the camera is not drawn
    points = np.array([[-0.002, -0.002, 2.0], [1.98, -0.02, 10.0], [0.0, 0.0, -5.0]])
    out = depth_overlay(image, points, np.eye(4), camera, radius=0)
    near, far = out[119, 159], out[119, 209]
    assert near[0] >= 128 and max(near[1], near[2]) < 30, near  # (dark) red
    assert far[2] >= 128 and max(far[0], far[1]) < 30, far  # (dark) blue
    assert np.count_nonzero(out.any(axis=2)) == 2
    assert not image.any()  # the input is not modified


def test_the_overlay_module_loads_without_ros():
    """What this file tests needs no ROS: importing and running it leaves rclpy unloaded."""
    code = ("import sys\nimport numpy as np\nfrom nclr_core.geometry.camera import CameraModel\n"
            "from nclr_core.visualization import depth_overlay\n"
            f"camera = CameraModel(np.array({K}).reshape(3, 3), 320, 240)\n"
            "image = np.zeros((240, 320, 3), np.uint8)\n"
            "depth_overlay(image, np.ones((4, 3)), np.eye(4), camera)\n"
            "assert 'rclpy' not in sys.modules, 'rclpy was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
