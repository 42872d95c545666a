"""Start find3d's live mapping node on an RGB-D camera's topics.

    ros2 launch find3d mapping.launch.py checkpoint:=CKPT [record_dir:=DIR] [frame_id:=map] [params_file:=FILE]

Defaults (topics, QoS depth, keyframing, voxel size, map bound) come from the package's
config/mapping_node.yaml (configs/ros/ in the repository); the launch arguments override them. Without
a full ROS 2 install (launch / launch_ros are not on PyPI), start the same executable with the same file:
``PREFIX/lib/find3d/mapping_node --ros-args --params-file configs/ros/mapping_node.yaml -p checkpoint:=CKPT``.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    defaults = Path(get_package_share_directory("find3d")) / "config" / "mapping_node.yaml"
    arguments = [
        DeclareLaunchArgument("checkpoint", description="FIND interface checkpoint that embeds the keyframes"),
        DeclareLaunchArgument("record_dir", default_value="",
                              description="new folder to record the keyframes into as a scene (empty: none)"),
        DeclareLaunchArgument("frame_id", default_value="map", description="fixed frame the camera poses are in"),
        DeclareLaunchArgument("params_file", default_value=str(defaults),
                              description="ROS parameters YAML with the node's other settings"),
    ]
    node = Node(
        package="find3d",
        executable="mapping_node",
        name="find3d_mapping",
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {"checkpoint": LaunchConfiguration("checkpoint"), "record_dir": LaunchConfiguration("record_dir"),
             "frame_id": LaunchConfiguration("frame_id")},
        ],
    )
    return LaunchDescription([*arguments, node])
