"""Online LiDAR-camera calibration: the stages, the window, the estimate and its uncertainty.

What the node, the bag tools and the evaluation call; NumPy in, NumPy out, no rclpy.
"""
