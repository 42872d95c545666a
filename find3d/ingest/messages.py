"""ROS messages out of scene data, the inverse of ingest-bag's decoders, and a bag writer for them.

A scene can be recorded as a robot would have recorded it (tests, benchmarks, a player feeding the
mapping node): ``image_message`` is the inverse of ``images.decode_colour``, ``depth_message`` of
``images.decode_depth_mm``, ``camera_info_message`` of ``camera.intrinsics_from_camera_info`` (so
it moves the principal point back by half a pixel), ``transform_message`` / ``pose_stamped`` /
``odometry`` carry 4x4 transforms as ``find3d.poses.matrix_to_pose`` gives them. Messages are the
``rosbags`` Jazzy typestore's classes, which ``rclpy`` decodes byte for byte.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from find3d.errors import InputError
from find3d.ingest.camera import Intrinsics
from find3d.poses import PIXEL_CENTRE_OFFSET, matrix_to_pose


class Recorded(NamedTuple):
    """One message as a bag stores it: topic, type, the time it was logged (ns), the message."""

    topic: str
    msgtype: str
    log_ns: int
    msg: Any


@functools.cache
def typestore() -> Any:
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def _new(msgtype: str, **fields: Any) -> Any:
    return typestore().types[msgtype](**fields)


def header(stamp_ns: int, frame: str) -> Any:
    stamp = _new("builtin_interfaces/msg/Time", sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
    return _new("std_msgs/msg/Header", stamp=stamp, frame_id=frame)


def raw_image(pixels: np.ndarray, encoding: str, stamp_ns: int, frame: str) -> Any:
    """An Image of (H, W, C) or (H, W) pixels of any dtype and byte order, rows unpadded."""
    height, width = pixels.shape[:2]
    order = pixels.dtype.byteorder
    bigendian = order == ">" or (order == "=" and sys.byteorder == "big")
    rows = np.ascontiguousarray(pixels).reshape(height, -1).view(np.uint8)
    return _new("sensor_msgs/msg/Image", header=header(stamp_ns, frame), height=height, width=width,
                encoding=encoding, is_bigendian=int(bigendian), step=rows.shape[1], data=rows.ravel())


def image_message(rgb: np.ndarray, encoding: str, stamp_ns: int, frame: str) -> tuple[str, Any]:
    """(type, message) of an (H, W, 3) uint8 RGB image: an Image in ``encoding`` (rgb8, bgr8, rgba8 with
    opaque alpha, bgra8, mono8 of the red channel) or, for 'png' / 'jpeg', a CompressedImage."""
    if encoding in ("png", "jpeg"):
        import cv2

        ok, data = cv2.imencode(f".{encoding}", np.ascontiguousarray(rgb[..., ::-1]))
        if not ok:
            raise InputError(f"image of shape {rgb.shape}: cv2 cannot encode it as {encoding}.")
        return "sensor_msgs/msg/CompressedImage", _new("sensor_msgs/msg/CompressedImage",
                                                       header=header(stamp_ns, frame), format=encoding,
                                                       data=data.ravel())
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    layouts = {"rgb8": lambda: rgb, "bgr8": lambda: rgb[..., ::-1], "mono8": lambda: rgb[..., :1],
               "rgba8": lambda: np.dstack([rgb, alpha]), "bgra8": lambda: np.dstack([rgb[..., ::-1], alpha])}
    if encoding not in layouts:
        raise InputError(f"encoding {encoding!r}: choose one of {[*layouts, 'png', 'jpeg']}.")
    return "sensor_msgs/msg/Image", raw_image(layouts[encoding](), encoding, stamp_ns, frame)


def depth_message(depth_mm: np.ndarray, encoding: str, stamp_ns: int, frame: str) -> Any:
    """A depth Image of (H, W) uint16 millimetres: 16UC1 as they are, or 32FC1 metres with NaN where 0."""
    if encoding == "16UC1":
        return raw_image(depth_mm.astype(np.uint16), encoding, stamp_ns, frame)
    if encoding == "32FC1":
        metres = np.where(depth_mm > 0, depth_mm / 1000.0, np.nan).astype(np.float32)
        return raw_image(metres, encoding, stamp_ns, frame)
    raise InputError(f"depth encoding {encoding!r}: choose 16UC1 or 32FC1.")


def camera_info_message(intrinsics: Intrinsics, stamp_ns: int, frame: str) -> Any:
    """The CameraInfo of ``intrinsics`` (ROS pixel centres: the principal point half a pixel back)."""
    if intrinsics.camera_model != "OPENCV":
        raise InputError(f"camera model {intrinsics.camera_model}: only OPENCV (plumb_bob) is written.")
    cx, cy = intrinsics.cx - PIXEL_CENTRE_OFFSET, intrinsics.cy - PIXEL_CENTRE_OFFSET
    fx, fy = intrinsics.fx, intrinsics.fy
    d = [intrinsics.distortion.get(key, 0.0) for key in ("k1", "k2", "p1", "p2", "k3")]
    roi = _new("sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return _new("sensor_msgs/msg/CameraInfo", header=header(stamp_ns, frame), height=intrinsics.height,
                width=intrinsics.width, distortion_model="plumb_bob", d=np.array(d, dtype=np.float64),
                k=np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1], dtype=np.float64), r=np.eye(3).ravel(),
                p=np.array([fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0], dtype=np.float64),
                binning_x=0, binning_y=0, roi=roi)


def _vector3(values: np.ndarray, msgtype: str = "geometry_msgs/msg/Vector3") -> Any:
    return _new(msgtype, x=float(values[0]), y=float(values[1]), z=float(values[2]))


def _quaternion(values: np.ndarray) -> Any:
    return _new("geometry_msgs/msg/Quaternion", x=float(values[0]), y=float(values[1]), z=float(values[2]),
                w=float(values[3]))


def transform_message(parent: str, child: str, matrix: np.ndarray, stamp_ns: int) -> Any:
    """A TransformStamped: ``matrix`` maps ``child`` coordinates into ``parent`` (tf's meaning)."""
    translation, quaternion = matrix_to_pose(matrix)
    transform = _new("geometry_msgs/msg/Transform", translation=_vector3(translation),
                     rotation=_quaternion(quaternion))
    return _new("geometry_msgs/msg/TransformStamped", header=header(stamp_ns, parent), child_frame_id=child,
                transform=transform)


def tf_message(transforms: list[Any]) -> Any:
    return _new("tf2_msgs/msg/TFMessage", transforms=transforms)


def _pose(matrix: np.ndarray) -> Any:
    translation, quaternion = matrix_to_pose(matrix)
    return _new("geometry_msgs/msg/Pose", position=_vector3(translation, "geometry_msgs/msg/Point"),
                orientation=_quaternion(quaternion))


def pose_stamped(matrix: np.ndarray, stamp_ns: int, frame: str) -> Any:
    return _new("geometry_msgs/msg/PoseStamped", header=header(stamp_ns, frame), pose=_pose(matrix))


def odometry(matrix: np.ndarray, stamp_ns: int, frame: str, child: str) -> Any:
    """An Odometry whose pose is ``matrix`` (``child`` in ``frame``), zero twist and covariances."""
    pose = _new("geometry_msgs/msg/PoseWithCovariance", pose=_pose(matrix), covariance=np.zeros(36))
    zero = np.zeros(3)
    twist = _new("geometry_msgs/msg/Twist", linear=_vector3(zero), angular=_vector3(zero))
    return _new("nav_msgs/msg/Odometry", header=header(stamp_ns, frame), child_frame_id=child, pose=pose,
                twist=_new("geometry_msgs/msg/TwistWithCovariance", twist=twist, covariance=np.zeros(36)))


def write_bag(path: str | Path, messages: Iterable[Recorded], storage: str = "sqlite3") -> Path:
    """Write ``messages`` (in recording order) as a rosbag2 folder at ``path`` ('sqlite3' or 'mcap')."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    plugins = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
    if storage not in plugins:
        raise InputError(f"storage {storage!r}: choose sqlite3 or mcap.")
    store = typestore()
    with Writer(Path(path), version=9, storage_plugin=plugins[storage]) as writer:
        connections: dict[str, Any] = {}
        for topic, msgtype, log_ns, msg in messages:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(connections[topic], log_ns, store.serialize_cdr(msg, msgtype))
    return Path(path)
