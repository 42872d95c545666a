"""A live map: the voxel map, the keyframes fused into it, and a queryable snapshot of both.

Fusion (the mapping worker) and queries (a node's service thread) run concurrently, so every access
goes through one lock. ``field()`` is the map as a ``find3d.query.field.Field`` (points, colours,
unit features; frames = the keyframes with their OpenGL poses and intrinsics), so
``find3d.query.answer.answer`` answers on it exactly as on an exported field: same relevancy,
thresholding, objects and frame ranking. The snapshot is rebuilt only after the map changed, and
queries never see a half-integrated frame.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from find3d.mapping.fusion import DEFAULT_MAX_VOXELS, DEFAULT_VOXEL, Samples, VoxelMap

VIEW = ".view"  # a spilled map's field, written beside its runs for queries (``LiveMap.field``)

if TYPE_CHECKING:
    from find3d.mapping.cold import ColdStore


@dataclass(frozen=True)
class Keyframe:
    """A frame fused into the map: where it was seen from and its image-level vector."""

    file_path: str  # as the recorded scene lists it (or a name of the caller's)
    c2w: np.ndarray  # (4, 4) OpenGL camera-to-world in the map frame
    camera: Any  # fx, fy, cx, cy, width, height (``find3d.ingest.camera.Intrinsics``)
    image_vector: np.ndarray  # (D,) retrieval-space vector of the frame
    stamp_ns: int = 0

    def entry(self) -> dict[str, Any]:
        """The frame as an export's ``meta.json`` lists it (what ``Field.frame`` reads)."""
        camera = self.camera
        return {"file_path": self.file_path, "c2w": np.asarray(self.c2w, dtype=np.float64).tolist(),
                "fl_x": float(camera.fx), "fl_y": float(camera.fy), "cx": float(camera.cx),
                "cy": float(camera.cy), "w": int(camera.width), "h": int(camera.height)}


class LiveMap:
    """``add(keyframe, samples)`` from one thread, ``field()`` / ``cloud()`` from any other."""

    def __init__(self, dim: int, voxel: float = DEFAULT_VOXEL, max_voxels: int = DEFAULT_MAX_VOXELS,
                 root: str | Path = ".", cold: ColdStore | None = None, spill: bool | None = None) -> None:
        self.voxels = VoxelMap(dim, voxel, max_voxels, cold, spill)
        self.keyframes: list[Keyframe] = []
        self.root = Path(root)
        self.version = 0  # bumped by every add: what snapshots are cached by
        self.lock = threading.Lock()  # held by whoever reads or changes the map (a save, too)
        self._field: tuple[int, Any] | None = None

    @property
    def dim(self) -> int:
        return self.voxels.dim

    def __len__(self) -> int:
        return len(self.voxels)

    def add(self, keyframe: Keyframe, samples: Samples) -> int:
        """Fuse one keyframe's samples; returns the voxels it added."""
        with self.lock:
            added = self.voxels.integrate(samples)
            self.keyframes.append(keyframe)
            self.version += 1
            return added

    def cloud(self) -> tuple[np.ndarray, np.ndarray]:
        """(points (N, 3), colours (N, 3)) of the map now."""
        with self.lock:
            return self.voxels.points(), self.voxels.colors()

    def nbytes(self) -> int:
        with self.lock:
            return self.voxels.nbytes

    def snapshot(self) -> tuple[int, VoxelMap, list[Keyframe]]:
        """(version, a copy of the voxels, the keyframes) as they are now, to read (save) while mapping goes on."""
        with self.lock:
            return self.version, self.voxels.copy(), list(self.keyframes)

    def field(self) -> Any:
        """The map as a ``find3d.query.field.Field`` (cached until the next ``add``): in memory, or once voxels
        were spilled, written out beside the runs (``VIEW``) and memory-mapped, so a query of the whole map
        loads what it reads."""
        from find3d.fileio import atomic_folder
        from find3d.query.field import Field

        with self.lock:
            if self._field is not None and self._field[0] == self.version:
                return self._field[1]
            cold = self.voxels.cold
            if cold is None or not cold.runs:
                field = map_field(self.voxels, self.keyframes, self.root)
            else:
                with atomic_folder(cold.folder / VIEW) as staging:
                    write_map_field(self.voxels, self.keyframes, staging)
                field = Field.load(cold.folder / VIEW)
            self._field = (self.version, field)
            return field

    def close(self) -> None:
        """Release the spilled runs (a temporary store's folder is deleted)."""
        if self.voxels.cold is not None:
            self.voxels.cold.close()


def write_map_field(voxels: VoxelMap, keyframes: list[Keyframe], folder: Path, extra: dict[str, Any] | None = None,
                    code_dim: int = 0) -> None:
    """The map as an export's files (``find3d.field.export``; ``extra``: more meta.json entries; ``code_dim``
    > 0: with the export's PCA code, fitted on a sample of the voxels) into ``folder``, which the caller stages.
    The embeddings are written a chunk at a time, and summed per instance on the way (the instances' mean
    vectors are stored too), so memory holds the points, colours and instances (about 40 bytes a voxel) and
    a chunk, never all the embeddings."""
    import os

    from find3d.field.embeddings import fit_pca
    from find3d.field.export import PCA_SAMPLE, export_meta, pca_code, write_decoder
    from find3d.fileio import atomic_open, atomic_write_json
    from find3d.query.field import segment_sums, write_ply

    count, dim = len(voxels), voxels.dim
    write_ply(folder / "points.ply", voxels.points(), voxels.colors())
    labels = voxels.segments()
    coded = 0 < code_dim < dim and count > 0
    if coded:
        rows = np.sort(np.random.default_rng(0).permutation(count)[:PCA_SAMPLE])
        sample = voxels.parts("feature")[rows].astype(np.float32)
        mean, components, ratio = fit_pca(sample / np.maximum(np.linalg.norm(sample, axis=1, keepdims=True), 1e-12),
                                          code_dim)
        code_file = os.open(folder / "code.f32", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def written(chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        start = 0
        for chunk in chunks:
            half = chunk.astype(np.float16)
            handle.write(half.tobytes())
            if coded:  # dimension-major: each of the code's d + 1 rows gets this chunk's stretch
                for row, values in enumerate(pca_code(chunk, mean, components)):
                    os.pwrite(code_file, values.tobytes(), 4 * (row * count + start))
            start += len(chunk)
            yield half  # summed as a field reading the file back would sum them

    try:
        with atomic_open(folder / "features.f16") as handle:
            sums = segment_sums(labels, written(voxels.feature_chunks()), dim)
        if coded:
            os.fsync(code_file)
    finally:
        if coded:
            os.close(code_file)
    vectors = (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    arrays = {"segments.i32": labels.astype(np.int32), "segment_vectors.f32": vectors,
              "image_vectors.f16": image_vectors(keyframes, dim).astype(np.float16)}
    for name, array in arrays.items():
        with atomic_open(folder / name) as handle:
            array.tofile(handle)
    segments = {"file": "segments.i32", "count": int(labels.max(initial=-1)) + 1, "vectors": "segment_vectors.f32"}
    code = write_decoder(folder, mean, components, ratio) if coded else None
    meta = export_meta(dim, count, code, segments, [k.entry() for k in keyframes],
                       {"voxel": voxels.voxel, **(extra or {})})
    atomic_write_json(folder / "meta.json", meta)


def image_vectors(keyframes: list[Keyframe], dim: int) -> np.ndarray:
    """(F, D) float32 image-level vectors of the keyframes."""
    return (np.stack([k.image_vector for k in keyframes]).astype(np.float32) if keyframes
            else np.zeros((0, dim), np.float32))


def map_field(voxels: VoxelMap, keyframes: list[Keyframe], root: Path) -> Any:
    """A ``find3d.query.field.Field`` of a voxel map and the keyframes fused into it."""
    from find3d.query.field import Field

    points, colors, features = voxels.points(), voxels.colors(), voxels.features()
    frames = [keyframe.entry() for keyframe in keyframes]
    meta = {"format": "find3d-live-map", "dim": voxels.dim, "count": len(points), "frames": frames,
            "voxel": voxels.voxel}
    return Field(root, meta, points, colors, features, image_vectors(keyframes, voxels.dim), None, None,
                 voxels.segments())
