"""ROS 2 node for referring segmentation with a PTQ4RIS engine."""
