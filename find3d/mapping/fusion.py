"""Fusion of per-pixel FIND embeddings into a voxel-hashed 3D map, with depth, frame after frame.

One frame gives *samples*: every cell of its embedding grid (``Interface.embed_pixels``'s features,
stride 4 of the model's input) whose centre pixel has depth is back-projected through the pinhole
camera (nerfstudio conventions: OpenGL camera-to-world, pixel centres at +0.5) and carries its unit
embedding, the pixel's colour and the FIND panoptic mask it lies in (``cell_samples``).

A ``VoxelMap`` accumulates samples into voxels of edge ``voxel`` metres, keyed by their integer
coordinates packed into one int64: per voxel the sum of the unit embeddings (so a voxel's feature is
the direction of their mean, what cosine relevancy reads), of the positions and colours, the number
of samples and when it was last seen. Keys live in one sorted array searched with ``searchsorted``
(a frame's thousands of samples are looked up and inserted in a few vectorised calls, no Python loop
per sample); the per-voxel arrays grow by doubling up to ``max_voxels`` and never beyond, so the
map's memory is bounded by ``bound_bytes(dim, max_voxels)`` whatever the run's length. When a frame
would overflow it, the voxels seen longest ago (fewest samples first among equals) leave memory, a
tenth of the map at once so that this stays rare. With a ``cold`` store
(``find3d.mapping.cold.ColdStore``) they are *spilled*: written to disk as a sorted, memory-mapped
run, and taken back into memory when a frame sees them again, so the map forgets nothing (the
``spilled`` counter). Without one they are *evicted*, gone for good (the ``evicted`` counter, which
callers report): a robot that drives on keeps the map around it and forgets where it has not looked
for longest. Reading the map (``points``, ``features``, ``segments``, ...) reads all of it, memory
and disk: the rows in memory first, then each run's.

The map also keeps the evidence its 3D instances are cut from (``find3d.query.segments.MaskVotes``:
per pair of touching voxels, in how many frames one mask held both), so ``segments()`` gives the
same kind of instances as an exported field, from the same code.

``eval-3d``'s fusion baseline is this very code over a scene's training frames and ground-truth
depth, so the live mapping node's map quality is the baseline's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from find3d.errors import InputError
from find3d.mapping.cold import ColdStore, Parts, decode_rows
from find3d.query.segments import MaskVotes, SegmentParameters, cell_keys, segment_nodes

DEFAULT_VOXEL = 0.02  # metres: a tabletop's objects stay several voxels wide
DEFAULT_MAX_VOXELS = 500_000  # ~140 MB with 64-d embeddings, ~1 GB with 512-d (see bound_bytes)
EVICT_SHARE = 0.1  # share of max_voxels freed when the map is full
#: the per-voxel arrays of a map, as ``_rows`` gathers them (``find3d.mapping.cold.ROW_FIELDS``)
ROW_ARRAYS = ("feature", "xyz", "rgb", "weight", "seen")


@dataclass
class Samples:
    """Back-projected embedding cells of one frame."""

    xyz: np.ndarray  # (M, 3) float64 world points
    features: np.ndarray  # (M, D) float32 unit embeddings
    colors: np.ndarray  # (M, 3) float32 in [0, 1]
    masks: np.ndarray | None = None  # (M,) int panoptic mask id at each sample (0 = none); None: no masks

    def __len__(self) -> int:
        return len(self.xyz)


def cell_centres(size: int, cells: int) -> np.ndarray:
    """(cells,) int: the pixel nearest each cell's centre when ``size`` pixels are split into ``cells``."""
    return ((np.arange(cells) + 0.5) * size / cells).astype(int)


def cell_samples(features: np.ndarray, depth_m: np.ndarray, camera: Any, c2w: np.ndarray,
                 rgb: np.ndarray | None = None, max_depth: float = np.inf,
                 segments: np.ndarray | None = None) -> Samples:
    """Samples of a frame: ``features`` (h, w, D) over an image whose z-depth in metres is ``depth_m``
    (H, W; 0 or non-finite = no reading, beyond ``max_depth`` ignored); ``camera`` has fx, fy, cx, cy
    (nerfstudio pixel convention, e.g. ``find3d.ingest.camera.Intrinsics``); ``c2w`` is OpenGL;
    ``segments`` (H, W): the frame's panoptic ids (``PixelEmbedding.segments``)."""
    features = np.asarray(features, dtype=np.float32)
    depth_m = np.asarray(depth_m, dtype=np.float64)
    if features.ndim != 3 or depth_m.ndim != 2:
        raise InputError(f"features {features.shape} and depth {depth_m.shape}: expected (h, w, D) and (H, W).")
    if rgb is not None and rgb.shape[:2] != depth_m.shape:
        raise InputError(f"colour image {rgb.shape[:2]} and depth {depth_m.shape} differ in size; align the depth "
                         "to the colour camera.")
    # The pixel nearest each cell's centre stands for the cell (its depth, colour and ray).
    rows, cols = (cell_centres(size, cells) for size, cells in zip(depth_m.shape, features.shape[:2]))
    depth = depth_m[rows][:, cols]
    keep = np.isfinite(depth) & (depth > 0) & (depth <= max_depth)
    cell_row, cell_col = np.nonzero(keep)
    z = depth[keep]
    u, v = cols[cell_col] + 0.5, rows[cell_row] + 0.5
    camera_xyz = np.stack([(u - camera.cx) / camera.fx * z, -(v - camera.cy) / camera.fy * z, -z], axis=-1)
    c2w = np.asarray(c2w, dtype=np.float64)
    xyz = camera_xyz @ c2w[:3, :3].T + c2w[:3, 3]
    cells = features[keep]
    unit = cells / np.maximum(np.linalg.norm(cells, axis=-1, keepdims=True), 1e-8)
    colors = (np.full((len(z), 3), 0.5, np.float32) if rgb is None
              else rgb[rows[cell_row], cols[cell_col], :3].astype(np.float32) / 255.0)
    if segments is not None and np.shape(segments) != depth_m.shape:
        raise InputError(f"panoptic segments {np.shape(segments)} and depth {depth_m.shape} differ in size; pass "
                         "the segments of the colour image the depth is aligned to.")
    masks = None if segments is None else np.asarray(segments)[rows[cell_row], cols[cell_col]].astype(np.int64)
    return Samples(xyz, unit.astype(np.float32), colors, masks)


def bound_bytes(dim: int, max_voxels: int) -> int:
    """The most memory a ``VoxelMap`` of ``dim``-d embeddings and ``max_voxels`` voxels holds."""
    # feature sums (4 D) + position sums (8 x 3) + colour sums (4 x 3) + weight (4) + last seen (8)
    # + a sorted key and its slot (8 + 8) + mask votes (2 x 13 x 4)
    return max_voxels * (4 * dim + 24 + 12 + 4 + 8 + 16 + 104)


class VoxelMap:
    """Voxel-hashed, bounded-memory fusion of samples (see the module docstring)."""

    def __init__(self, dim: int, voxel: float = DEFAULT_VOXEL, max_voxels: int = DEFAULT_MAX_VOXELS,
                 cold: ColdStore | None = None, spill: bool | None = None) -> None:
        """``cold``: where voxels that leave memory go and are read from; ``spill`` (default: with a ``cold``
        store) False evicts them even so (the store's voxels stay part of the map)."""
        if dim < 1 or not np.isfinite(voxel) or voxel <= 0 or max_voxels < 1:
            raise InputError(f"voxel map: dim {dim}, voxel {voxel} m, max_voxels {max_voxels}; need dim >= 1, "
                             "voxel > 0 and max_voxels >= 1.")
        if spill and cold is None:
            raise InputError("voxel map: spill=True needs a cold store to spill to; pass cold=ColdStore(folder, dim).")
        self.dim, self.voxel, self.max_voxels = int(dim), float(voxel), int(max_voxels)
        self.keys = np.zeros(0, np.int64)  # sorted voxel keys (of the voxels in memory)
        self.slots = np.zeros(0, np.int64)  # row of keys[i] in the per-voxel arrays
        self.count = 0  # rows in use
        self.tick = 0  # integrations so far: the clock of ``seen``
        self.evicted = 0  # voxels dropped for good (no cold store)
        self.spilled = 0  # voxels written to the cold store (some may have been taken back since)
        self.cold = cold
        self.spill = cold is not None if spill is None else bool(spill)
        self._segments: tuple[int, SegmentParameters, np.ndarray] | None = None  # see ``segments``
        self.votes = MaskVotes()
        self._allocate(0)

    def _allocate(self, capacity: int) -> None:
        old = self.count
        arrays = {"feature": (self.dim, np.float32), "xyz": (3, np.float64), "rgb": (3, np.float32),
                  "weight": (None, np.float32), "seen": (None, np.int64)}
        for name, (width, dtype) in arrays.items():
            shape = (capacity,) if width is None else (capacity, width)
            grown = np.zeros(shape, dtype)
            if old:
                grown[:old] = getattr(self, f"_{name}")[:old]
            setattr(self, f"_{name}", grown)
        self.votes.grow(capacity)
        self.capacity = capacity

    def __len__(self) -> int:
        """Voxels of the whole map, in memory and spilled."""
        return self.count + (len(self.cold) if self.cold is not None else 0)

    @property
    def nbytes(self) -> int:
        """Memory held now (the per-voxel arrays at their capacity, the keys and slots; spilled runs are on
        disk, ``cold.disk_bytes()``)."""
        arrays = (self._feature, self._xyz, self._rgb, self._weight, self._seen, self.keys, self.slots,
                  self.votes.seen, self.votes.same)
        return int(sum(a.nbytes for a in arrays))

    def voxel_keys(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(int64 keys of the points inside the addressable range, bool mask of those points)."""
        return cell_keys(xyz, self.voxel)

    def integrate(self, samples: Samples) -> int:
        """Fuse one frame's samples; returns how many voxels it added (new to the map, not taken back)."""
        if samples.features.shape[1:] != (self.dim,):
            raise InputError(f"samples of {samples.features.shape[1:]} embeddings into a {self.dim}-d map; embed "
                             "with the interface the map was started with.")
        from scipy.sparse import csr_matrix

        self.tick += 1
        keys, inside = self.voxel_keys(samples.xyz)
        if not len(keys):
            return 0
        unique, group = np.unique(keys, return_inverse=True)
        values = [samples.features[inside], samples.xyz[inside], samples.colors[inside]]
        masks = None if samples.masks is None else samples.masks[inside]
        if len(unique) > self.max_voxels:  # one frame larger than the whole map: keep its first voxels
            kept = group < self.max_voxels
            unique, group, values = unique[:self.max_voxels], group[kept], [v[kept] for v in values]
            masks = None if masks is None else masks[kept]
        # Per-voxel sums as one sparse (voxels x samples) product: ~10x faster than np.add.reduceat on rows.
        gather = csr_matrix((np.ones(len(group), np.float32), (group, np.arange(len(group)))),
                            shape=(len(unique), len(group)))
        sums = [gather @ values[0].astype(np.float32), gather @ values[1], gather @ values[2].astype(np.float32)]
        counts = np.bincount(group, minlength=len(unique)).astype(np.float32)
        slots, fresh = self._lookup(unique)
        if self.count + len(fresh) > self.max_voxels:
            self._seen[slots[slots >= 0]] = self.tick  # this frame's voxels are the newest: never evicted now
            self._make_room(self.count + len(fresh) - self.max_voxels)
            slots, fresh = self._lookup(unique)
        # voxels spilled earlier come back with everything they had gathered (after making room: that may
        # have spilled some of this very frame's)
        found, back = self.cold.take(unique[fresh]) if self.cold is not None and len(fresh) else (None, {})
        slots[fresh] = self._insert(unique[fresh])
        if back:
            self._put(slots[fresh[found]], back)
        added = len(fresh) - (int(found.sum()) if back else 0)
        self._feature[slots] += sums[0]
        self._xyz[slots] += sums[1]
        self._rgb[slots] += sums[2]
        self._weight[slots] += counts
        self._seen[slots] = self.tick
        if masks is not None:
            self.votes.observe(unique[group], slots[group], masks)
        return added

    def _lookup(self, unique: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(slot of each sorted unique key, -1 where absent; indices of the absent ones)."""
        position = np.searchsorted(self.keys, unique)
        found = position < len(self.keys)
        found[found] = self.keys[position[found]] == unique[found]
        slots = np.full(len(unique), -1, np.int64)
        slots[found] = self.slots[position[found]]
        return slots, np.flatnonzero(~found)

    def _insert(self, keys: np.ndarray) -> np.ndarray:
        """Rows for new sorted ``keys``, which join the sorted key array."""
        needed = self.count + len(keys)
        if needed > self.capacity:
            self._allocate(min(max(needed, 2 * self.capacity, 1024), self.max_voxels))
        rows = np.arange(self.count, needed, dtype=np.int64)
        position = np.searchsorted(self.keys, keys)
        self.keys, self.slots = np.insert(self.keys, position, keys), np.insert(self.slots, position, rows)
        self.count = needed
        return rows

    def _rows(self, rows: np.ndarray | slice) -> dict[str, np.ndarray]:
        """The per-voxel arrays at ``rows`` (a slice gives views; indices, copies)."""
        out = {name: getattr(self, f"_{name}")[rows] for name in ROW_ARRAYS}
        return {**out, "votes_seen": self.votes.seen[rows], "votes_same": self.votes.same[rows]}

    def _put(self, rows: np.ndarray, values: dict[str, np.ndarray]) -> None:
        for name in ROW_ARRAYS:
            getattr(self, f"_{name}")[rows] = values[name]
        self.votes.seen[rows], self.votes.same[rows] = values["votes_seen"], values["votes_same"]

    def _row_keys(self) -> np.ndarray:
        """(count,) the key of each row in memory."""
        out = np.empty(self.count, np.int64)
        out[self.slots] = self.keys
        return out

    def _make_room(self, at_least: int) -> None:
        """The voxels seen longest ago (fewest samples first), at least ``at_least`` and a tenth of the map,
        leave memory: spilled to the cold store, or evicted without one."""
        n = self.count
        drop = min(n, max(at_least, int(EVICT_SHARE * self.max_voxels)))
        oldest = np.lexsort((self._weight[:n], self._seen[:n]))[:drop]
        if self.spill:
            keys = self._row_keys()[oldest]
            order = np.argsort(keys)
            self.cold.spill(keys[order], self._rows(oldest[order]))
            self.spilled += drop
        else:
            self.evicted += drop
        self._remove(oldest)

    def _remove(self, oldest: np.ndarray) -> None:
        """Free the rows ``oldest``; the rows above the new count move into the holes."""
        n, drop = self.count, len(oldest)
        alive = np.ones(n, bool)
        alive[oldest] = False
        # The survivors among the last ``drop`` rows move into the holes below: only ``drop`` rows are
        # copied, not the whole map (which at 512-d would be a gigabyte per eviction).
        holes, movers = np.flatnonzero(~alive[:n - drop]), n - drop + np.flatnonzero(alive[n - drop:])
        for name in ("_feature", "_xyz", "_rgb", "_weight", "_seen"):
            array = getattr(self, name)
            array[holes] = array[movers]
            array[n - drop:n] = 0
        self.votes.move(holes, movers, slice(n - drop, n))
        renumber = np.arange(n, dtype=np.int64)
        renumber[movers] = holes
        keep = alive[self.slots]
        self.keys, self.slots = self.keys[keep], renumber[self.slots[keep]]
        self.count = n - drop

    def copy(self) -> VoxelMap:
        """A copy to read while this map goes on fusing: the rows in memory are copied, spilled runs shared
        (they never change; which of their voxels are still theirs is copied)."""
        other = VoxelMap(self.dim, self.voxel, self.max_voxels, None if self.cold is None else self.cold.view(),
                         self.spill)
        other.restore(self.keys, self._rows(self.slots), self.tick, self.evicted, self.spilled)
        # Instances cut since the last frame carry over (the copy's rows are in key order); older ones
        # describe fewer voxels than the map now holds and are cut again when asked.
        if self._segments is not None and self._segments[0] == self.tick:
            tick, parameters, labels = self._segments
            rows = np.concatenate([self.slots, np.arange(self.count, len(labels))])
            other._segments = (tick, parameters, labels[rows])
        return other

    def restore(self, keys: np.ndarray, rows: dict[str, np.ndarray], tick: int, evicted: int, spilled: int) -> None:
        """Fill an empty map with sorted unique ``keys`` and their rows (``_rows``' arrays) and its counters
        (a saved map's). More voxels than ``max_voxels``: the longest-unseen leave memory, as when full."""
        if self.count:
            raise InputError("voxel map: restore() fills an empty map only.")
        self.tick, self.evicted, self.spilled = int(tick), int(evicted), int(spilled)
        keys = np.asarray(keys, np.int64)
        excess = len(keys) - self.max_voxels
        if excess > 0:
            out = np.lexsort((rows["weight"], rows["seen"]))[:excess]
            if self.spill:
                out.sort()  # key order
                self.cold.spill(keys[out], {name: array[out] for name, array in rows.items()})
                self.spilled += excess
            else:
                self.evicted += excess
            keep = np.ones(len(keys), bool)
            keep[out] = False
            keys, rows = keys[keep], {name: array[keep] for name, array in rows.items()}
        self._put(self._insert(keys), rows)

    # ------------------------------------------------------------------------------------ reading
    def in_memory(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(sorted keys, their rows (``_rows``' arrays, copies)) of the voxels in memory: what a save writes."""
        return self.keys.copy(), self._rows(self.slots)

    def gathered(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(keys (N,), per-voxel arrays (``_rows``)) of the whole map: the rows in memory (views, no copy
        while nothing is spilled), then each run's."""
        rows = {name: self.column(name) for name in (*ROW_ARRAYS, "votes_seen", "votes_same")}
        return self.column("keys"), rows

    def column(self, name: str) -> np.ndarray:
        """One per-voxel array of the whole map (``keys`` or a ``_rows`` name; ``feature``: the float32 sums),
        the rows in memory first (a view while nothing is spilled), then each run's."""
        here = self._row_keys() if name == "keys" else self._rows(slice(0, self.count))[name]
        if self.cold is None or not self.cold.runs:
            return here
        parts = [here]
        for run, live in self.cold.parts():
            parts.append(decode_rows(run.arrays, live, name))
        return np.concatenate(parts)

    def parts(self, name: str) -> Parts:
        """One per-voxel array of the whole map read in place (``find3d.mapping.cold.Parts``), in ``column``'s
        row order; ``feature`` reads as the sums in memory and the runs' unit directions: for cosines."""
        own = {"feature": "direction"}.get(name, name)
        here = self._rows(slice(0, self.count))[name]
        runs = [] if self.cold is None else [(run.arrays[own], live) for run, live in self.cold.parts()]
        return Parts([(here, None), *runs])

    def points(self) -> np.ndarray:
        """(N, 3) float32 centroid of each voxel's samples."""
        return (self.column("xyz") / self.column("weight")[:, None]).astype(np.float32)

    def colors(self) -> np.ndarray:
        """(N, 3) float32 mean colour in [0, 1]."""
        return self.column("rgb") / self.column("weight")[:, None]

    def features(self) -> np.ndarray:
        """(N, D) float32 unit direction of each voxel's summed embeddings (all of them in memory: a small map's)."""
        return np.concatenate(list(self.feature_chunks())) if len(self) else np.zeros((0, self.dim), np.float32)

    def feature_chunks(self, rows: int = 1 << 15) -> Iterator[np.ndarray]:
        """``features()`` ``rows`` voxels at a time, in ``column`` order: a large map's, written out."""
        def unit(sums: np.ndarray) -> np.ndarray:
            return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)

        for start in range(0, self.count, rows):
            yield unit(self._feature[start:min(start + rows, self.count)])
        for run, live in self.cold.parts() if self.cold is not None else ():
            for start in range(0, len(live), rows):
                yield unit(decode_rows(run.arrays, live[start:start + rows], "feature"))

    def weights(self) -> np.ndarray:
        """(N,) samples fused into each voxel."""
        return self.column("weight").copy()

    def segments(self, parameters: SegmentParameters | None = None) -> np.ndarray:
        """(N,) int32 3D instance of each voxel (``find3d.query.segments``, nodes = the map's voxels), -1 for
        speckle; from the frames' mask votes, or from geometry alone if no frame brought masks. Embeddings
        and votes are read where they are (memory, runs): memory beyond the map's own is a few hundred bytes
        a voxel, whatever the embedding width."""
        parameters = parameters or SegmentParameters(voxel=self.voxel)
        if self._segments is not None and self._segments[:2] == (self.tick, parameters):
            return self._segments[2]  # cut already since the last frame (a query's field, then a save)
        keys = self.column("keys")
        order = np.argsort(keys)  # key order -> row
        weight = self.column("weight")[order, None]
        points = (self.column("xyz")[order] / weight).astype(np.float32)
        votes = MaskVotes()
        votes.seen, votes.same = self.parts("votes_seen"), self.parts("votes_same")
        # the embedding sums as they are (their cosines need no unit copy of the map); with no mask's vote on
        # two touching voxels segment_nodes lets geometry alone decide
        labels = segment_nodes(keys[order], points, np.ones(len(order)), parameters, self.parts("feature"), votes,
                               order, self.column("rgb")[order] / weight)
        out = np.full(len(keys), -1, np.int32)
        out[order] = labels
        self._segments = (self.tick, parameters, out)
        return out
