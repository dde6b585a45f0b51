"""NCLR core: pure PyTorch/NumPy; never imports rclpy."""
