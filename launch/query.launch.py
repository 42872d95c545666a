"""Start find3d's query node on an exported field.

    ros2 launch find3d query.launch.py field:=DIR checkpoint:=CKPT [frame_id:=map] [params_file:=FILE]

Defaults come from the package's config/query_node.yaml (configs/ros/ in the repository); the
launch arguments override them. Without a full ROS 2 install (launch / launch_ros are not on PyPI),
start the same executable with the same file:
``PREFIX/lib/find3d/query_node --ros-args --params-file configs/ros/query_node.yaml -p field:=DIR``.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    defaults = Path(get_package_share_directory("find3d")) / "config" / "query_node.yaml"
    arguments = [
        DeclareLaunchArgument("field", description="folder written by `find3d export-field`"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="FIND interface checkpoint (default: the one recorded in the field)"),
        DeclareLaunchArgument("frame_id", default_value="map",
                              description="TF frame of the field's world coordinates"),
        DeclareLaunchArgument("params_file", default_value=str(defaults),
                              description="ROS parameters YAML with the node's other settings"),
    ]
    node = Node(
        package="find3d",
        executable="query_node",
        name="find3d_query",
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {"field": LaunchConfiguration("field"), "checkpoint": LaunchConfiguration("checkpoint"),
             "frame_id": LaunchConfiguration("frame_id")},
        ],
    )
    return LaunchDescription([*arguments, node])
