"""Rosbag2 (MCAP or SQLite) files of referring scenes: write them, score an engine on them offline,
and replay them into the live node over DDS. Pure Python (rosbags); only the replay needs ROS 2.

Reading, scoring and replaying belong to the robot's runtime (no torch, no scene generator);
``make_bag`` draws scenes, so it is imported only when asked for."""
from .errors import BagError
from .read import BagFrames, open_bag

__all__ = ["BagError", "BagFrames", "make_bag", "open_bag"]


def __getattr__(name):
    if name == "make_bag":
        from .make import make_bag
        return make_bag
    raise AttributeError(name)
