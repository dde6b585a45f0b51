"""ROS 2 bags (rosbag2: sqlite3, mcap) as a data source, read with `rosbags`, without ROS.

Message decoding (`messages`, `pointcloud2`, `image_msgs`, `camera_info`), the node's
image/cloud pairing (`time_sync`), the integrity checks (`integrity`), the paired-frame
reader (`reader`), and for training (`data.dataset: rosbag`) the data set over bags
(`dataset`), its cache of decoded frames (`frame_cache`), image rectification (`rectify`)
and /tf_static chains (`tf_tree`). `nclr_ros` builds on them (writing bags, playing them,
the nodes); nothing here imports rclpy or nclr_ros.
"""
