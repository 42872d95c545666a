"""Where camera poses come from: the tf tree, or a PoseStamped / Odometry topic plus a fixed extrinsic.

Both give the camera's *optical* frame (REP-103: x right, y down, z forward) in a fixed world
frame at an image's stamp; ``find3d.poses.optical_to_opengl`` turns that into nerfstudio's
camera-to-world.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from find3d.errors import DataError
from find3d.ingest.tf import TransformTree, quaternion, stamp_ns, vector
from find3d.ingest.track import PoseTrack
from find3d.poses import pose_to_matrix

#: fixed frames tried in order when none is given (REP-105: map is the global frame, odom the local one)
DEFAULT_FIXED_FRAMES = ("map", "odom")


class PoseSource(Protocol):
    """An optical-frame camera-to-world at any stamp, or None and why there is none."""

    description: str

    def camera_to_world(self, stamp: int) -> tuple[np.ndarray | None, str]: ...


@dataclass
class TfPoses:
    """Camera poses as the chain ``fixed_frame -> ... -> camera_frame`` of the tf tree."""

    tree: TransformTree
    fixed_frame: str
    camera_frame: str
    tolerance_ns: int

    @property
    def description(self) -> str:
        return f"tf {self.fixed_frame} -> {self.camera_frame}"

    def camera_to_world(self, stamp: int) -> tuple[np.ndarray | None, str]:
        pose, missing = self.tree.lookup(self.fixed_frame, self.camera_frame, stamp, self.tolerance_ns)
        return pose, "" if pose is not None else f"no {missing} transform within the pose tolerance"


def tf_poses(tree: TransformTree, fixed_frame: str, camera_frame: str, tolerance_ns: int,
             topics: str) -> TfPoses:
    """Check that the chain exists (choosing the default fixed frame) before any image is read."""
    fixed_frame, camera_frame = fixed_frame.lstrip("/"), camera_frame.lstrip("/")  # as tf2 (and TransformTree)
    if camera_frame not in tree.frames:
        raise DataError(f"{topics}: the camera frame {camera_frame!r} is not in the tf tree (trees: "
                        f"{'; '.join(tree.trees()) or 'none'}); record its transforms (e.g. the camera driver's "
                        "robot_state_publisher / static_transform_publisher), or pass --camera-frame.")
    candidates = [fixed_frame] if fixed_frame else [f for f in DEFAULT_FIXED_FRAMES if f in tree.frames]
    for candidate in candidates:
        if candidate in tree.frames and tree.connects(candidate, camera_frame):
            return TfPoses(tree, candidate, camera_frame, tolerance_ns)
    tried = " or ".join(repr(c) for c in candidates) or f"{' or '.join(DEFAULT_FIXED_FRAMES)} (neither is in the tree)"
    raise DataError(f"{topics}: the pose chain from {tried} to the camera frame {camera_frame!r} never connects; "
                    f"the tf trees are: {'; '.join(tree.trees())}. Record the missing transform (e.g. a static "
                    "transform from the robot's base to the camera), or pass --fixed-frame with a frame of the "
                    "camera's tree.")


@dataclass
class TopicPoses:
    """Camera poses as a body pose topic composed with the camera's fixed extrinsic in that body."""

    topic: str
    track: PoseTrack
    extrinsic: np.ndarray
    tolerance_ns: int
    extrinsic_source: str = "--camera-extrinsic"

    @property
    def description(self) -> str:
        return f"pose topic {self.topic}, camera by {self.extrinsic_source}"

    def camera_to_world(self, stamp: int) -> tuple[np.ndarray | None, str]:
        body = self.track.at(stamp, self.tolerance_ns)
        if body is None:
            return None, f"no {self.topic} pose within the pose tolerance"
        return body @ self.extrinsic, ""


def add_pose_message(track: PoseTrack, msg: Any, log_ns: int) -> None:
    """Add a PoseStamped or Odometry (whose pose is a PoseWithCovariance) sample to ``track``."""
    pose = msg.pose.pose if hasattr(msg, "child_frame_id") else msg.pose
    stamp = stamp_ns(msg.header.stamp) or log_ns  # a zero stamp means the publisher never set it
    track.add(stamp, vector(pose.position), quaternion(pose.orientation))


def extrinsic_matrix(values: list[float] | None) -> np.ndarray:
    """(4, 4) camera-in-body transform of ``x y z qx qy qz qw`` (identity when not given)."""
    if values is None:
        return np.eye(4)
    return pose_to_matrix(np.asarray(values[:3]), np.asarray(values[3:]))
