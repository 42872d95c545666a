"""Objects in a 3D mask: the selected points grouped into connected components in 3D.

A thresholded relevancy is a set of points; a robot wants objects ("which mug?", "where do I
grasp?"). Two selected points belong to the same object when a chain of selected points links
them with no gap wider than about one ``voxel``: the points are hashed into voxels and voxels that
touch (26-neighbourhood) are joined. Sparse (sorted voxel keys + searchsorted), so memory is linear
in the number of selected points however large the scene is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from find3d.errors import InputError

#: default voxel edge (m): exported fields are metric, and 3 cm bridges their point spacing
OBJECT_VOXEL = 0.03
#: default least number of points an object keeps; smaller groups are speckle
MIN_OBJECT_POINTS = 5


@dataclass(frozen=True)
class Object3D:
    """One connected group of selected points."""

    indices: np.ndarray  # (n,) int64 point indices, most relevant first
    score: float  # mean relevancy of its points
    lower: np.ndarray  # (3,) axis-aligned box corner
    upper: np.ndarray  # (3,)

    @property
    def center(self) -> np.ndarray:
        return (self.lower + self.upper) / 2

    @property
    def size(self) -> np.ndarray:
        return self.upper - self.lower


def group_objects(points: np.ndarray, indices: np.ndarray, relevancy: np.ndarray, voxel: float = OBJECT_VOXEL,
                  min_points: int = MIN_OBJECT_POINTS, segments: np.ndarray | None = None) -> list[Object3D]:
    """Objects among the selected ``indices``, those carrying the most relevancy (summed) first.

    ``segments`` (N,): each point's 3D segment (``Field.segments``, -1 for none): a selected point
    belongs to its segment's object, so two selected segments closer than ``voxel`` stay two objects;
    points without a segment are grouped by voxel connectivity as without ``segments``."""
    if not (np.isfinite(voxel) and voxel > 0):
        raise InputError(f"object voxel {voxel}: must be a positive length in metres, e.g. {OBJECT_VOXEL}.")
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        return []
    labels = voxel_components(np.asarray(points, dtype=np.float64)[indices], voxel)
    if segments is not None:
        segment = np.asarray(segments, dtype=np.int64)[indices]
        labels = np.where(segment >= 0, segment, segment.max() + 1 + labels)
    # Speckle is dropped before any per-object work: a noisy mask has hundreds of one-voxel groups.
    keep = np.bincount(labels)[labels] >= min_points
    if not keep.any():
        return []
    members, labels = indices[keep], labels[keep]
    order = np.argsort(labels, kind="stable")  # stable: each group keeps the caller's order (most relevant first)
    members, labels = members[order], labels[order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(labels)) + 1])
    xyz = np.asarray(points[members], dtype=np.float64)
    lower, upper = np.minimum.reduceat(xyz, starts), np.maximum.reduceat(xyz, starts)
    sizes = np.diff(np.append(starts, len(members)))
    scores = np.add.reduceat(np.asarray(relevancy[members], dtype=np.float64), starts) / sizes
    objects = [Object3D(group, float(score), low, high) for group, score, low, high
               in zip(np.split(members, starts[1:]), scores, lower, upper)]
    objects.sort(key=lambda obj: -obj.score * len(obj.indices))
    return objects


def voxel_components(xyz: np.ndarray, voxel: float) -> np.ndarray:
    """(n,) int64 component label of each point: points whose voxels touch (26-neighbourhood) share one."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(xyz) == 0:
        return np.zeros(0, np.int64)
    cells = np.floor(xyz / voxel).astype(np.int64)
    cells -= cells.min(axis=0) - 1  # non-negative with a margin, so neighbours never go below zero
    span = cells.max(axis=0) + 2
    keys = (cells[:, 0] * span[1] + cells[:, 1]) * span[2] + cells[:, 2]
    unique, voxel_of = np.unique(keys, return_inverse=True)
    rows, cols = [np.arange(len(unique))], [np.arange(len(unique))]
    for dx, dy, dz in _HALF_NEIGHBOURHOOD:
        neighbour = unique + (dx * span[1] + dy) * span[2] + dz
        found = np.minimum(np.searchsorted(unique, neighbour), len(unique) - 1)
        hit = unique[found] == neighbour
        rows.append(np.flatnonzero(hit))
        cols.append(found[hit])
    row, col = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(row), np.int8), (row, col)), shape=(len(unique), len(unique)))
    _, label_of_voxel = connected_components(graph, directed=False)
    return label_of_voxel[voxel_of].astype(np.int64)


# 13 of the 26 neighbour offsets: each touching pair of voxels is found once, from its lower key.
_HALF_NEIGHBOURHOOD = [(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)
                       if (dx, dy, dz) > (0, 0, 0)]
