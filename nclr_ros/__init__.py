"""NCLR ROS 2 side: nodes, message conversions, time sync and bag tools."""
