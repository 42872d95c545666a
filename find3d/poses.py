"""Camera-pose conventions: nerfstudio's OpenGL camera-to-world and ROS's optical frame (REP-103).

nerfstudio (``transforms.json``) and every find3d export store camera-to-world matrices in the
OpenGL convention: camera x right, y up, looking along −z. ROS names a camera's pose by its
*optical* frame (REP-103 ``*_optical_frame``): x right, y down, z forward. The two differ by a
rotation of 180° about the camera's x axis, so one matrix, its own inverse, converts both ways::

    c2w_optical = c2w_opengl @ diag(1, -1, -1, 1)

``opengl_to_optical`` and ``optical_to_opengl`` are that one function pair (the query node turns
frames into ROS poses with the first, ``ingest-bag`` turns ROS poses into a scene with the second).
Quaternions are ROS's order (x, y, z, w).

Pixel coordinates differ by half a pixel too: nerfstudio puts pixel centres at +0.5 (a centred
principal point is ``cx = W / 2``), ROS ``CameraInfo`` (OpenCV, image_geometry) at integers
(``cx = (W - 1) / 2``), so ``cx_ros = cx_nerfstudio - PIXEL_CENTRE_OFFSET``, and the same for ``cy``.
"""

from __future__ import annotations

import numpy as np

from find3d.errors import InputError

#: nerfstudio principal point minus the ROS / OpenCV one, in pixels (see the module docstring)
PIXEL_CENTRE_OFFSET = 0.5
#: camera-frame change between OpenGL (x right, y up, z back) and optical (x right, y down, z forward)
FLIP_YZ = np.diag([1.0, -1.0, -1.0, 1.0])


def _as_transform(matrix: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(matrix, dtype=np.float64)
    if array.shape != (4, 4) or not np.all(np.isfinite(array)):
        raise InputError(f"{name}: expected a finite 4x4 rigid transform, got shape {array.shape}.")
    return array


def opengl_to_optical(c2w: np.ndarray) -> np.ndarray:
    """(4, 4) optical-frame camera-to-world of an OpenGL (nerfstudio) camera-to-world."""
    return _as_transform(c2w, "OpenGL camera-to-world") @ FLIP_YZ


def optical_to_opengl(c2w: np.ndarray) -> np.ndarray:
    """(4, 4) OpenGL (nerfstudio) camera-to-world of an optical-frame camera-to-world."""
    return _as_transform(c2w, "optical camera-to-world") @ FLIP_YZ


def matrix_to_pose(transform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(translation (3,), quaternion (4,) as x, y, z, w)`` of a rigid 4x4 transform."""
    from scipy.spatial.transform import Rotation

    array = _as_transform(transform, "transform")
    return array[:3, 3].copy(), Rotation.from_matrix(array[:3, :3]).as_quat()


def pose_to_matrix(translation: np.ndarray, quaternion: np.ndarray) -> np.ndarray:
    """(4, 4) rigid transform of a translation and an (x, y, z, w) quaternion (normalised here)."""
    from scipy.spatial.transform import Rotation

    quat = np.asarray(quaternion, dtype=np.float64)
    if quat.shape != (4,) or not np.all(np.isfinite(quat)) or np.linalg.norm(quat) < 1e-9:
        raise InputError(f"quaternion {quat.tolist()}: expected four finite numbers (x, y, z, w), not all zero.")
    transform = np.eye(4)
    transform[:3, :3] = Rotation.from_quat(quat / np.linalg.norm(quat)).as_matrix()
    transform[:3, 3] = np.asarray(translation, dtype=np.float64)
    return transform
