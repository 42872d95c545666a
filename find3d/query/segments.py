"""Class-agnostic 3D segments of a point field: its large planes, then what stands apart on them.

Per-point relevancy asks the field to classify every point on its own, and the 2D interface it was
distilled from is least sure exactly where a robot looks: small objects, at their borders, where
one toy's pixels are called another toy. A 3D answer a robot can act on is a set of *objects*, and
objects are what geometry separates best: the things on a table stand apart from it and from each
other. So a field is cut into segments once, without looking at any query:

1. *Support planes*: the largest plane (RANSAC: ``RANSAC_TRIALS`` random point triples, inliers
   within ``plane_distance``, refit by least squares on the inliers) is cut off while it holds at
   least ``min_plane_share`` of the points, at most ``max_planes`` times: the table top, the floor, a
   wall. Each plane's inliers are split into connected pieces (the floor on both sides of a table
   is two pieces).
2. *Objects*: what remains falls into connected components of touching ``voxel``-sized cells
   (``find3d.query.objects.voxel_components``): one per object wherever objects do not touch.
3. Pieces of fewer than ``min_points`` points are speckle (floaters of the field) and get label -1.

A query then scores each segment by the mean of its points' embeddings (``Field.segment_vectors``),
which averages away the per-point confusions of a segment's minority pixels; every point carries its
segment's relevancy (``Field.object_relevancy``).

Deterministic: the RANSAC draws come from a generator seeded with ``SEED``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from find3d.errors import InputError
from find3d.query.objects import MIN_OBJECT_POINTS, voxel_components

RANSAC_TRIALS = 300
RANSAC_SAMPLE = 20_000  # points the trials count inliers on; the final inliers are found among all points
SEED = 0


@dataclass(frozen=True)
class SegmentParameters:
    """How a field is cut into segments (module docstring)."""

    plane_distance: float = 0.008  # m: a plane's inliers; thin enough to leave a mug's base with the mug
    min_plane_share: float = 0.1  # least share of all points a support plane holds
    max_planes: int = 3  # table, floor, one wall
    voxel: float = 0.02  # m: cells that touch join one object
    min_points: int = MIN_OBJECT_POINTS

    def __post_init__(self) -> None:
        for name in ("plane_distance", "voxel"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise InputError(f"segments: {name}={value}; pass a positive length in metres.")
        if not 0 < self.min_plane_share <= 1:
            raise InputError(f"segments: min_plane_share={self.min_plane_share}; pass a share in (0, 1].")
        if self.max_planes < 0 or self.min_points < 1:
            raise InputError(f"segments: max_planes={self.max_planes}, min_points={self.min_points}; "
                             "need max_planes >= 0 and min_points >= 1.")


def segment_points(points: np.ndarray, parameters: SegmentParameters = SegmentParameters()) -> np.ndarray:
    """(N,) int32 segment label of every point, -1 for speckle (module docstring)."""
    xyz = np.asarray(points, dtype=np.float64)
    labels = np.full(len(xyz), -1, dtype=np.int64)
    rng = np.random.default_rng(SEED)
    rest = np.arange(len(xyz))
    pieces = []  # index arrays, one per segment before speckle removal
    for _ in range(parameters.max_planes):
        if len(rest) < max(3, parameters.min_plane_share * len(xyz)):
            break
        inliers = _largest_plane(xyz[rest], parameters.plane_distance, rng)
        if inliers.sum() < parameters.min_plane_share * len(xyz):
            break
        plane = rest[inliers]
        pieces += _split(plane, voxel_components(xyz[plane], parameters.voxel))
        rest = rest[~inliers]
    pieces += _split(rest, voxel_components(xyz[rest], parameters.voxel))
    for label, index in enumerate(p for p in pieces if len(p) >= parameters.min_points):
        labels[index] = label
    return labels.astype(np.int32)


def _split(indices: np.ndarray, components: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(components, kind="stable")
    starts = np.flatnonzero(np.diff(components[order])) + 1
    return np.split(indices[order], starts) if len(indices) else []


def _largest_plane(xyz: np.ndarray, distance: float, rng: np.random.Generator) -> np.ndarray:
    """Bool mask of the inliers of the plane with the most of them (module docstring, step 1)."""
    sample = xyz[rng.choice(len(xyz), size=min(len(xyz), RANSAC_SAMPLE), replace=False)]
    triples = sample[rng.integers(0, len(sample), size=(RANSAC_TRIALS, 3))]
    normals = np.cross(triples[:, 1] - triples[:, 0], triples[:, 2] - triples[:, 0])
    norms = np.linalg.norm(normals, axis=1)
    valid = norms > 1e-12
    if not valid.any():
        return np.zeros(len(xyz), bool)
    normals = normals[valid] / norms[valid, None]
    offsets = (normals * triples[valid, 0]).sum(1)
    counts = (np.abs(sample @ normals.T - offsets) <= distance).sum(0)
    best = int(np.argmax(counts))
    inliers = np.abs(xyz @ normals[best] - offsets[best]) <= distance
    # Refit on the inliers: three points fix the plane only up to their noise.
    centre = xyz[inliers].mean(0)
    normal = np.linalg.svd(xyz[inliers] - centre, full_matrices=False)[2][-1]
    return np.abs((xyz - centre) @ normal) <= distance
