"""Rosbag2 (MCAP or SQLite) files of referring scenes: write them, score an engine on them offline,
and replay them into the live node over DDS. Pure Python (rosbags); only the replay needs ROS 2."""
from .errors import BagError
from .make import make_bag
from .read import BagFrames, open_bag

__all__ = ["BagError", "BagFrames", "make_bag", "open_bag"]
