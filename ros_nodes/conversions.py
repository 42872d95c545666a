"""numpy <-> ROS 2 messages, for find3d's nodes: point clouds, images, camera poses, markers.

Decoders read any object with a message's fields (rclpy messages, and rosbags' deserialised
dataclasses alike) and raise ``find3d.errors.InputError`` naming the problem, so a node answers a
bad request with ``success: false`` instead of dying.

Frames follow REP-103: a camera pose is its optical frame (x right, y down, z forward), converted
from nerfstudio's OpenGL camera-to-world by ``find3d.poses.opengl_to_optical``; intrinsics use ROS's
pixel-centre convention (``find3d.poses.PIXEL_CENTRE_OFFSET``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from find3d.errors import InputError
from find3d.ingest.images import Fixes, decode_colour, pixel_rows
from find3d.poses import PIXEL_CENTRE_OFFSET, matrix_to_pose, opengl_to_optical

#: what a bad image in a request tells its client
REQUEST = Fixes(size="fix the message's width, height, step or data.", encoding="send one of them.")
MASK_ENCODINGS = ("mono8", "8UC1")
_FLOAT32 = 7  # sensor_msgs/PointField.FLOAT32


# ------------------------------------------------------------------------------------------ images


def image_to_rgb(message: Any, name: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 RGB of a ``sensor_msgs/Image`` in rgb8, bgr8, rgba8, bgra8 or mono8 (ingest-bag's decoder)."""
    return decode_colour(message, name, InputError, REQUEST)


def mask_to_array(message: Any, name: str = "mask") -> np.ndarray | None:
    """(H, W) bool region of a mono8 mask image (non-zero = inside); None for an empty (width 0) image."""
    if int(message.width) == 0 and int(message.height) == 0:
        return None
    if str(message.encoding) not in MASK_ENCODINGS:
        raise InputError(f"{name}: encoding {message.encoding!r}; send masks as mono8 (non-zero = region).")
    return pixel_rows(message, name, 1, np.dtype(np.uint8), InputError, REQUEST.size)[..., 0] > 0


def rgb_to_image(rgb: np.ndarray, message: Any) -> Any:
    """Fill ``message`` (a ``sensor_msgs/Image``) with an (H, W, 3) uint8 RGB array as rgb8."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    message.height, message.width = rgb.shape[:2]
    message.encoding, message.is_bigendian, message.step = "rgb8", 0, rgb.shape[1] * 3
    message.data = rgb.tobytes()
    return message


def mask_to_image(mask: np.ndarray, message: Any) -> Any:
    """Fill ``message`` with an (H, W) bool mask as mono8 (255 inside)."""
    mask = np.ascontiguousarray(np.asarray(mask, dtype=bool), dtype=np.uint8) * 255
    message.height, message.width = mask.shape
    message.encoding, message.is_bigendian, message.step = "mono8", 0, mask.shape[1]
    message.data = mask.tobytes()
    return message


# ------------------------------------------------------------------------------------ point clouds


def cloud_fields(with_relevancy: bool) -> list[tuple[str, int]]:
    """(name, byte offset) of the float32 fields of find3d's clouds: x, y, z, rgb (packed) [, relevancy]."""
    names = ["x", "y", "z", "rgb"] + (["relevancy"] if with_relevancy else [])
    return [(name, 4 * i) for i, name in enumerate(names)]


def fill_cloud(message: Any, point_field: type, points: np.ndarray, colors: np.ndarray,
               relevancy: np.ndarray | None = None) -> Any:
    """Fill a ``sensor_msgs/PointCloud2`` with points (N, 3), colours (N, 3) in [0, 1] and relevancy (N,).

    ``rgb`` is packed as PCL and RViz expect: the uint32 0x00RRGGBB reinterpreted as float32.
    """
    count = len(points)
    fields = cloud_fields(relevancy is not None)
    packed = np.zeros((count, len(fields)), dtype=np.float32)
    packed[:, :3] = points
    rgb = np.clip(np.round(np.asarray(colors, dtype=np.float64) * 255), 0, 255).astype(np.uint32)
    packed[:, 3] = ((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]).view(np.float32)
    if relevancy is not None:
        packed[:, 4] = relevancy
    message.fields = [point_field(name=name, offset=offset, datatype=_FLOAT32, count=1) for name, offset in fields]
    message.height, message.width = 1, count
    message.is_bigendian, message.is_dense = False, True
    message.point_step = 4 * len(fields)
    message.row_step = message.point_step * count
    message.data = packed.tobytes()
    return message


def read_cloud(message: Any) -> dict[str, np.ndarray]:
    """Field name -> (N,) array of a float32 PointCloud2 (``rgb`` as (N, 3) uint8), the inverse of ``fill_cloud``."""
    count = int(message.width) * int(message.height)
    raw = np.frombuffer(bytes(message.data), dtype=np.uint8).reshape(count, int(message.point_step))
    out: dict[str, np.ndarray] = {}
    for field in message.fields:
        values = raw[:, field.offset:field.offset + 4].copy().view(np.float32)[:, 0]
        if field.name == "rgb":
            bits = values.view(np.uint32)
            out["rgb"] = np.stack([(bits >> 16) & 255, (bits >> 8) & 255, bits & 255], axis=1).astype(np.uint8)
        else:
            out[field.name] = values
    return out


# ------------------------------------------------------------------------------------------- poses


def fill_pose(pose: Any, c2w_opengl: np.ndarray) -> Any:
    """Fill a ``geometry_msgs/Pose`` with the optical frame of an OpenGL camera-to-world."""
    translation, quaternion = matrix_to_pose(opengl_to_optical(c2w_opengl))
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in translation)
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (float(v) for v in quaternion)
    return pose


def optical_frame_id(index: int) -> str:
    """The TF name of frame ``index``'s camera optical frame (its pose in the world frame is ``Frame.pose``)."""
    return f"find3d_frame_{index}_optical"


def fill_camera_info(info: Any, hit: Any, header: Any) -> Any:
    """Fill a ``sensor_msgs/CameraInfo`` with a frame's pinhole intrinsics (ROS pixel centres, no distortion),
    stamped like ``header`` but in the frame's own optical frame, as ROS's camera_info convention has it."""
    cx, cy = hit.cx - PIXEL_CENTRE_OFFSET, hit.cy - PIXEL_CENTRE_OFFSET
    info.header.stamp = header.stamp
    info.header.frame_id = optical_frame_id(hit.index)
    info.width, info.height = int(hit.width), int(hit.height)
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.k = [hit.fx, 0.0, cx, 0.0, hit.fy, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [hit.fx, 0.0, cx, 0.0, 0.0, hit.fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def check_overrides(threshold: float, top_k: int, defaults: tuple[float, int]) -> tuple[float, int]:
    """A request's threshold and top-k, 0 meaning the node's parameter; NaN or out of range is refused."""
    if not np.isfinite(threshold) or not 0.0 <= threshold <= 1.0:
        raise InputError(f"threshold {threshold}: send a relevancy in (0, 1], or 0 for the node's "
                         f"default {defaults[0]}.")
    if top_k < 0:
        raise InputError(f"top_k {top_k}: send a number of frames >= 1, or 0 for the node's default {defaults[1]}.")
    return (threshold or defaults[0]), (top_k or defaults[1])


def request_images(images: Sequence[Any], masks: Sequence[Any]) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Decoded ``images`` and their optional ``masks`` (empty, or one per image) of a Query request."""
    if masks and len(masks) != len(images):
        raise InputError(f"masks: {len(masks)} sent for {len(images)} images; send none, or one per image "
                         "(an empty image for a whole image).")
    decoded = [image_to_rgb(image, f"images[{i}]") for i, image in enumerate(images)]
    regions = [mask_to_array(mask, f"masks[{i}]") for i, mask in enumerate(masks)]
    return decoded, regions
