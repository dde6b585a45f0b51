"""Dataset readers and data pipeline pieces.

Readers (`kitti`, `semantickitti`, `nuscenes`, `rosbag.dataset`) turn a dataset folder (or
ROS 2 bags) into sample dicts:
`image` uint8 (H, W, 3) RGB, `points` float32 (N, 4) x y z intensity in the LiDAR frame,
`K` (3, 3), `T_cam_lidar` (4, 4) (LiDAR -> camera), optional `labels` / `instances` int64 (N,),
`stamp` (s), `camera_frame`, `lidar_frame`, `sequence`, `frame_id`. `files` holds the shared
low-level loaders, each raising an error that names the file and the problem.
"""
