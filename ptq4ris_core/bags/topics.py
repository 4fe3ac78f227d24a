"""Topic names and message types of the bags we write, and the message types we read."""
from __future__ import annotations

from functools import lru_cache

IMAGE_TOPIC = "/camera/image_raw"
COMMAND_TOPIC = "/command"
GT_TOPIC = "/ground_truth/mask"

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
STRING = "std_msgs/msg/String"
IMAGE_TYPES = (IMAGE, COMPRESSED)


@lru_cache(maxsize=1)
def typestore():
    """The standard ROS 2 message types (Kilted; the types we use are the same since Humble)."""
    from rosbags.typesys import Stores, get_typestore
    return get_typestore(Stores.ROS2_KILTED)


def compressed_topic(topic: str) -> str:
    return topic.rstrip("/") + "/compressed"
