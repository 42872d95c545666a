"""Multi-view consistency of surface points, for ``export-field``.

Single views lie. A depth camera's flying pixels hang between objects, and a field trained without
depth renders floaters in front of the cameras that constrain them least; every such point bridges
the gaps that 3D segments and instances are cut along. A point that another view *saw through* —
that view's surface lies well behind the point along the same line of sight — cannot be a surface,
so it is dropped, the classic depth-map fusion test (as in COLMAP's and MVSNet's fusion). Points
no other view sees stay: a surface observed once is kept, not thinned.

Measured on ``make-scene --sensor rgbd`` (seed 0, 20 views): points over 2 cm from the true surfaces
fell from 1.0 % to 0.4 % with every true surface kept (GT points within 1 cm of a kept point: 0.976
before and after); an open3d TSDF fusion (5 mm voxels) removed them all but lost 10-25 % of that
completeness (thin and once-seen surfaces) and took 10-60 s (``bench/results/field_sensors.md``).

Conventions: points in one world frame; pinhole views with OpenGL camera-to-world poses and
nerfstudio's pixel convention (pixel centres at +0.5); distorted cameras are handled by building
each view's pinhole depth map from its own points (``splat``), which the rays already undistorted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class View:
    """A pinhole z-depth map (0 = no surface) and its camera."""

    depth: np.ndarray  # (h, w) float z-depth along the camera axis
    fx: float
    fy: float
    cx: float
    cy: float
    c2w: np.ndarray  # (3, 4) or (4, 4) OpenGL camera-to-world


def project(xyz: np.ndarray, view: View) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, col) int pixel and z-depth of world points in ``view`` (z <= 0: behind the camera)."""
    c2w = np.asarray(view.c2w, dtype=np.float64)
    local = (np.asarray(xyz, dtype=np.float64) - c2w[:3, 3]) @ c2w[:3, :3]
    z = -local[:, 2]
    safe = np.where(z > 1e-9, z, 1e-9)
    col = np.floor(view.fx * local[:, 0] / safe + view.cx).astype(np.int64)
    row = np.floor(-view.fy * local[:, 1] / safe + view.cy).astype(np.int64)
    return row, col, z


def splat(xyz: np.ndarray, c2w: np.ndarray, fx: float, fy: float, cx: float, cy: float,
          shape: tuple[int, int]) -> View:
    """The pinhole view of size ``shape`` whose depth map holds the nearest of ``xyz`` in each pixel."""
    view = View(np.zeros(shape), fx, fy, cx, cy, c2w)
    row, col, z = project(xyz, view)
    inside = (z > 0) & (row >= 0) & (row < shape[0]) & (col >= 0) & (col < shape[1])
    depth = np.full(shape[0] * shape[1], np.inf)
    np.minimum.at(depth, row[inside] * shape[1] + col[inside], z[inside])
    view.depth = np.where(np.isfinite(depth), depth, 0.0).reshape(shape)
    return view


def consistent(points: list[np.ndarray], views: list[View], tolerance: float = 0.02,
               neighbours: int = 8) -> list[np.ndarray]:
    """Per view, a bool mask over its ``points`` (world): those no more other views contradict than support.

    Each point is projected into the ``neighbours`` views with the nearest camera centres. There it is
    *supported* when the depths in the 3x3 pixels around it span its own depth (within ``tolerance``,
    relative) and *contradicted* when all of them lie behind it by more than that: the view saw through
    it. Unseen (outside, occluded, no reading) counts as neither.
    """
    centres = np.array([np.asarray(v.c2w, dtype=np.float64)[:3, 3] for v in views])
    masks = []
    for i, xyz in enumerate(points):
        support = np.zeros(len(xyz), np.int32)
        against = np.zeros(len(xyz), np.int32)
        order = np.argsort(np.linalg.norm(centres - centres[i], axis=1), kind="stable")
        for j in [k for k in order if k != i][:neighbours]:
            near, far, z = _neighbourhood(views[j], xyz)
            support += (near <= z * (1 + tolerance)) & (far >= z * (1 - tolerance))
            against += np.isfinite(near) & (z < near * (1 - tolerance))
        masks.append(against <= support)
    return masks


def _neighbourhood(view: View, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(nearest, farthest reading in the 3x3 pixels around each projected point: inf / 0 where there is
    none or the point falls outside, the point's z-depth in the view)."""
    row, col, z = project(xyz, view)
    height, width = view.depth.shape
    valid = (z > 0) & (row >= 0) & (row < height) & (col >= 0) & (col < width)
    r, c = np.where(valid, row, 0), np.where(valid, col, 0)
    padded = np.pad(view.depth, 1)
    near, far = np.full(len(xyz), np.inf), np.zeros(len(xyz))
    for dr in range(3):
        for dc in range(3):
            reading = np.where(valid, padded[r + dr, c + dc], 0.0)
            present = reading > 0
            near = np.where(present, np.minimum(near, reading), near)
            far = np.where(present, np.maximum(far, reading), far)
    return near, far, z
