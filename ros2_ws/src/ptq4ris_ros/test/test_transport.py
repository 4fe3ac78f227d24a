"""The Fast DDS profiles for camera-sized messages: when one is applied, and what each declares."""
import xml.etree.ElementTree as ET

import pytest

from ptq4ris_ros.transport import CAMERA_PROFILE, NODE_PROFILE, use_profile

NS = {"d": "http://www.eprosima.com"}
HEADERS = 65536  # room for the message's header and the RTPS submessages around it


def test_applied_when_nothing_is_set():
    env = {}
    assert use_profile(NODE_PROFILE, env) == str(NODE_PROFILE)
    assert env == {"FASTDDS_DEFAULT_PROFILES_FILE": str(NODE_PROFILE)}


@pytest.mark.parametrize("env", [{"FASTDDS_DEFAULT_PROFILES_FILE": "/robot/dds.xml"},
                                 {"FASTRTPS_DEFAULT_PROFILES_FILE": "/robot/dds.xml"},
                                 {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}])
def test_a_users_profile_or_another_middleware_is_left_alone(env):
    before = dict(env)
    assert use_profile(NODE_PROFILE, env) is None
    assert env == before


def shared_memory_segment(profile) -> int:
    """The profile's one added transport, checked to be shared memory beside ROS 2's own; its segment size."""
    root = ET.parse(profile).getroot()
    shm = root.find(".//d:transport_descriptor", NS)
    assert shm.find("d:type", NS).text == "SHM"  # shared memory: nothing leaves the machine
    participant = root.find(".//d:participant", NS)
    assert participant.get("is_default_profile") == "true"
    used = [t.text for t in participant.findall(".//d:userTransports/d:transport_id", NS)]
    assert used == [shm.find("d:transport_id", NS).text]
    assert participant.find(".//d:useBuiltinTransports", NS).text == "true"  # ROS 2's own transports stay
    return int(shm.find("d:segment_size", NS).text)


def test_the_camera_profile_holds_a_1080p_rgb_frame():
    assert shared_memory_segment(CAMERA_PROFILE) >= 1920 * 1080 * 3 + HEADERS


def test_the_node_profile_holds_a_1080p_mask_and_a_720p_overlay_and_costs_half_the_cameras():
    size = shared_memory_segment(NODE_PROFILE)
    assert size >= max(1920 * 1080, 1280 * 720 * 3) + HEADERS
    assert size <= shared_memory_segment(CAMERA_PROFILE) // 2  # the node keeps its whole segment resident
