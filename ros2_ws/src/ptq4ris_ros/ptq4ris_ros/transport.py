"""Camera-sized messages over Fast DDS's shared memory: the profiles that make them fit, and where to use them.

Fast DDS passes messages between processes of one machine in shared-memory segments that belong to the
SENDER, 512 KB by default; a larger message takes a slow path. Two profiles, one per kind of sender:

- ``CAMERA_PROFILE`` (``fastdds_large_messages.xml``, 8 MB segments): for whatever publishes camera frames (a
  camera driver, a bag player), up to 1920x1080 rgb8;
- ``NODE_PROFILE`` (``fastdds_node_outputs.xml``, 4 MB segments): the node's own, sized for what it sends:
  masks up to 1920x1080, overlays up to 1280x720. The sender writes its messages all over its segment as
  they come and go, so the whole segment ends up in the sender's resident memory: 8 MB segments cost the
  node 8.3 MB, 4 MB ones 4.2 (docs/RESULTS.md, issue 22).
"""
from __future__ import annotations

import os
from pathlib import Path

CAMERA_PROFILE = Path(__file__).with_name("fastdds_large_messages.xml")
NODE_PROFILE = Path(__file__).with_name("fastdds_node_outputs.xml")
PROFILE_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")  # Fast DDS 3, and 2's name


def use_profile(profile: Path, environ=os.environ) -> str | None:
    """Before ``rclpy.init``: point Fast DDS at ``profile``, unless another middleware is chosen or the user set
    a profile file already. Returns the file now in use, or None when nothing was changed."""
    if not environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp").startswith("rmw_fastrtps"):
        return None
    if any(environ.get(v) for v in PROFILE_VARS):
        return None
    environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    return str(profile)
