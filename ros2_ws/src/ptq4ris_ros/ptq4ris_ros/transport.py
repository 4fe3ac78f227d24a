"""Camera-sized messages over Fast DDS's shared memory: the profile that makes them fit, and where to use it."""
from __future__ import annotations

import os
from pathlib import Path

PROFILE = Path(__file__).with_name("fastdds_large_messages.xml")
PROFILE_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")  # Fast DDS 3, and 2's name


def use_large_message_profile(environ=os.environ) -> str | None:
    """Before ``rclpy.init``: point Fast DDS at PROFILE, unless another middleware is chosen or the user set a
    profile file already. Returns the file now in use, or None when nothing was changed."""
    if not environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp").startswith("rmw_fastrtps"):
        return None
    if any(environ.get(v) for v in PROFILE_VARS):
        return None
    environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    return str(PROFILE)
