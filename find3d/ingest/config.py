"""Options of ``find3d ingest-bag``: one typed dataclass, every field documented once.

The command line flags are generated from these fields (``--image-topic`` for ``image_topic``), so
the help text of a flag is the field's documentation and validation is ``find3d.config.from_dict``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from find3d.config import doc
from find3d.errors import ConfigError

#: value of ``depth_topic`` that ingests colour only, even when the bag has a depth stream
NO_DEPTH = "none"


@dataclass
class IngestConfig:
    """Which topics and frames to read, and which frames to keep."""

    image_topic: str = doc(
        "Colour topic (sensor_msgs/Image rgb8/bgr8/rgba8/bgra8/mono8 or CompressedImage jpeg/png); "
        "empty: the bag's only colour image topic.", "")
    depth_topic: str = doc(
        "Depth topic aligned to the colour camera (sensor_msgs/Image 16UC1 mm or 32FC1 m); empty: the bag's "
        f"only depth topic, if any; '{NO_DEPTH}': colour only.", "")
    camera_info_topic: str = doc(
        "sensor_msgs/CameraInfo of the colour camera; empty: the only one, or the image topic's sibling "
        "'camera_info' (ROS naming).", "")
    pose_topic: str = doc(
        "geometry_msgs/PoseStamped or nav_msgs/Odometry topic of the robot (or camera); empty: tf when the bag "
        "has tf_topic (or no pose topic), else the bag's only pose topic.", "")
    tf_topic: str = doc("Topic of the moving transforms (tf2_msgs/TFMessage).", "/tf")
    tf_static_topic: str = doc("Topic of the static transforms (tf2_msgs/TFMessage).", "/tf_static")
    fixed_frame: str = doc(
        "World frame of the poses (tf mode); empty: 'map' if the camera connects to it, else 'odom'.", "")
    camera_frame: str = doc(
        "The colour camera's optical frame (x right, y down, z forward); empty: the images' header frame_id.", "")
    camera_extrinsic: list[float] | None = doc(
        "With a pose topic: the camera optical frame in the pose's body frame as x y z qx qy qz qw; empty: "
        "the tf_static chain from an Odometry's child_frame_id to the camera frame (a PoseStamped, or an "
        "Odometry of the camera frame itself, is the camera's own pose).", None)
    pose_tolerance: float = doc(
        "Seconds: an image gets a pose only when every transform of its chain has a sample this close to the "
        "image's stamp (interpolated between the samples on either side; held past the first or last).", 0.05)
    depth_tolerance: float = doc("Seconds: the depth image paired with a colour image must be this close.", 0.02)
    min_translation: float = doc(
        "Metres the camera must move from the last kept frame (or turn min_rotation) for a frame to be kept.", 0.05)
    min_rotation: float = doc("Degrees the camera must turn from the last kept frame (or move min_translation).", 5.0)
    min_sharpness: float = doc(
        "Absolute floor on sharpness (variance of the Laplacian of the grey image); 0 disables it.", 0.0)
    blur_ratio: float = doc(
        "A frame is blurred when its sharpness is below this fraction of the median of the last "
        "sharpness_window candidate frames; 0 disables it.", 0.5)
    sharpness_window: int = doc("How many recent candidate frames the blur median is taken over.", 15)

    def __post_init__(self) -> None:
        for name in ("pose_tolerance", "depth_tolerance", "min_translation", "min_rotation", "min_sharpness"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{_flag(name)}: {getattr(self, name)} is negative; pass a value >= 0.")
        if not 0.0 <= self.blur_ratio < 1.0:
            raise ConfigError(f"{_flag('blur_ratio')}: {self.blur_ratio} must lie in [0, 1); 0 disables the "
                              "blur check.")
        if self.sharpness_window < 1:
            raise ConfigError(f"{_flag('sharpness_window')}: {self.sharpness_window} must be at least 1.")
        if self.camera_extrinsic is not None and len(self.camera_extrinsic) != 7:
            raise ConfigError(f"{_flag('camera_extrinsic')}: got {len(self.camera_extrinsic)} numbers; pass seven: "
                              "x y z qx qy qz qw.")


def _flag(name: str) -> str:
    """A field as its user knows it: the Python name and the command-line flag."""
    return f"{name} (--{name.replace('_', '-')})"
