"""ros2 launch ptq4ris_ros ptq4ris.launch.py engine:=/path/to/engine image:=/camera/image_raw command:=/command

Several cameras: one launch per camera, each in its own namespace (namespace:=left_cam).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("ptq4ris_ros"), "config", "params.yaml")
    args = [
        DeclareLaunchArgument("engine", description="engine folder made by 'ptq4ris export'"),
        DeclareLaunchArgument("image", default_value="image", description="image topic to remap 'image' to"),
        DeclareLaunchArgument("command", default_value="command", description="command topic to remap 'command' to"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace (one per camera)"),
        DeclareLaunchArgument("params_file", default_value=default_params, description="parameters YAML"),
    ]
    node = Node(
        package="ptq4ris_ros",
        executable="ptq4ris_node",
        name="ptq4ris_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"), {"engine_path": LaunchConfiguration("engine")}],
        remappings=[("image", LaunchConfiguration("image")), ("image/compressed", [LaunchConfiguration("image"), "/compressed"]),
                    ("command", LaunchConfiguration("command"))],
        output="screen",
    )
    return LaunchDescription(args + [node])
