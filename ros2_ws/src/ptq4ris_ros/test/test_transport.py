"""The Fast DDS profile for camera-sized messages: when it is applied, and what it declares."""
import xml.etree.ElementTree as ET

import pytest

from ptq4ris_ros.transport import PROFILE, use_large_message_profile

NS = {"d": "http://www.eprosima.com"}


def test_applied_when_nothing_is_set():
    env = {}
    assert use_large_message_profile(env) == str(PROFILE)
    assert env == {"FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE)}


@pytest.mark.parametrize("env", [{"FASTDDS_DEFAULT_PROFILES_FILE": "/robot/dds.xml"},
                                 {"FASTRTPS_DEFAULT_PROFILES_FILE": "/robot/dds.xml"},
                                 {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}])
def test_a_users_profile_or_another_middleware_is_left_alone(env):
    before = dict(env)
    assert use_large_message_profile(env) is None
    assert env == before


def test_the_profile_adds_a_shared_memory_transport_large_enough_for_a_1080p_rgb_frame():
    root = ET.parse(PROFILE).getroot()
    shm = root.find(".//d:transport_descriptor", NS)
    assert shm.find("d:type", NS).text == "SHM"  # shared memory: nothing leaves the machine
    assert int(shm.find("d:segment_size", NS).text) >= 1920 * 1080 * 3 + 65536  # a frame and its headers
    participant = root.find(".//d:participant", NS)
    assert participant.get("is_default_profile") == "true"
    used = [t.text for t in participant.findall(".//d:userTransports/d:transport_id", NS)]
    assert used == [shm.find("d:transport_id", NS).text]
    assert participant.find(".//d:useBuiltinTransports", NS).text == "true"  # ROS 2's own transports stay
