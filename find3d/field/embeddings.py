"""The per-scene store of frame embeddings written by ``embed-frames`` and read by ``find-field``.

Layout of ``SCENE/find_embeddings/`` (every file sits next to ``meta.json``)::

    meta.json          {"format": "find3d-embeddings", "version": 1,
                        "dim": D,                 # semantic dimension of E(x) and of the image vectors
                        "height": h, "width": w,  # feature-map size (the embedder's output grid)
                        "dtype": "float16",
                        "channels": C,            # D, or the PCA code size d when "code" is set
                        "code": null | {"dim": d, "decoder": "decoder.npz", "explained_variance": r},
                        "frames": [file_path, ...],   # the transforms.json file_path of every frame, in order
                        "checkpoint": "path or null",  # the interface checkpoint that produced the store
                        "model": "hex or null",  # content hash of that model (Interface.fingerprint)
                        "segments": null | {"height": H, "width": W}}  # the frames' panoptic ids, if any
    features.f16       np.memmap float16 (N, h, w, C): per-pixel embeddings (or their PCA codes)
    image_vectors.f16  np.memmap float16 (N, D): one image-level vector per frame (frame localisation)
    segments.u16       np.memmap uint16 (N, H, W): FIND's panoptic segment id of every pixel (0 = void), at
                       the frame's own size; what export-field lifts into 3D instances (find3d.query.segments)
    done.npy           bool (N,): frames whose rows are complete; resuming skips them
    decoder.npz        only with a code: mean (D,), components (d, D); E(x) ≈ mean + code(x) @ components

Scenes of thousands of frames never sit in RAM: both arrays are memory-mapped and a reader touches
only the frames it asks for. ``done.npy`` is rewritten atomically *after* the memmaps are flushed, so
a killed run never marks a frame that is not on disk. The PCA code (like feature-splatting's
low-dimensional latent plus decoder) cuts disk and page-cache use by D/d at the price of the
variance it drops, which ``meta.json`` records.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from find3d.errors import DataError, InputError
from find3d.fileio import atomic_open, atomic_write_json, load_image, read_json, read_npz

STORE_DIRNAME = "find_embeddings"
FORMAT = "find3d-embeddings"
VERSION = 2  # 2: the frames' panoptic segments
_FIX = "run `find3d embed-frames --data SCENE` (it resumes where it stopped)"


@dataclasses.dataclass(frozen=True)
class StoreMeta:
    """The validated content of ``meta.json``."""

    dim: int
    height: int
    width: int
    channels: int
    frames: tuple[str, ...]
    checkpoint: str | None
    code_dim: int | None = None
    explained_variance: float | None = None
    model: str | None = None  # content hash of the embedding model: a resumed run must use the same one
    segments: tuple[int, int] | None = None  # (H, W) of the stored panoptic segment maps; None: none stored

    def to_json(self) -> dict[str, Any]:
        code = None
        if self.code_dim is not None:
            code = {"dim": self.code_dim, "decoder": "decoder.npz", "explained_variance": self.explained_variance}
        return {
            "format": FORMAT, "version": VERSION, "dim": self.dim, "height": self.height, "width": self.width,
            "dtype": "float16", "channels": self.channels, "code": code, "frames": list(self.frames),
            "checkpoint": self.checkpoint, "model": self.model,
            "segments": None if self.segments is None else {"height": self.segments[0], "width": self.segments[1]},
        }

    @classmethod
    def from_json(cls, data: Any, where: Path) -> StoreMeta:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DataError(f"{where}: not a find3d embeddings meta.json; delete {where.parent} and {_FIX}.")
        try:
            code = data.get("code")
            meta = cls(
                dim=int(data["dim"]), height=int(data["height"]), width=int(data["width"]),
                channels=int(data["channels"]), frames=tuple(str(f) for f in data["frames"]),
                checkpoint=data.get("checkpoint"),
                code_dim=None if code is None else int(code["dim"]),
                explained_variance=None if code is None else code.get("explained_variance"),
                model=None if data.get("model") is None else str(data["model"]),
                segments=None if not data.get("segments") else (int(data["segments"]["height"]),
                                                                 int(data["segments"]["width"])),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{where}: missing or malformed entry {err}; delete {where.parent} and {_FIX}.") from err
        if min(meta.dim, meta.height, meta.width, meta.channels) <= 0 or not meta.frames:
            raise DataError(f"{where}: empty sizes or frame list; delete {where.parent} and {_FIX}.")
        if meta.channels != (meta.code_dim or meta.dim):
            raise DataError(f"{where}: channels {meta.channels} disagree with the code/dim; delete the store, {_FIX}.")
        return meta


class EmbeddingStore:
    """Memory-mapped per-frame embeddings of one scene (see the module docstring for the format)."""

    def __init__(self, root: Path, meta: StoreMeta, mode: str) -> None:
        self.root = root
        self.meta = meta
        n = len(meta.frames)
        self.features = self._map("features.f16", (n, meta.height, meta.width, meta.channels), mode)
        self.image_vectors = self._map("image_vectors.f16", (n, meta.dim), mode)
        self.segments = None if meta.segments is None else self._map("segments.u16", (n, *meta.segments), mode,
                                                                      np.uint16)
        self.done = np.load(root / "done.npy") if (root / "done.npy").is_file() else np.zeros(n, bool)
        if self.done.shape != (n,):
            raise DataError(f"{root / 'done.npy'}: {self.done.shape} does not match {n} frames; {_FIX}.")
        self.mean: np.ndarray | None = None
        self.components: np.ndarray | None = None
        if meta.code_dim is not None:
            self._load_decoder()
        self._index = {path: i for i, path in enumerate(meta.frames)}
        self._pending: list[int] = []
        self.written = 0  # frames written through this object (what this run embedded)
        self.replaced: str | None = None  # set by embed_frames: why an earlier store was discarded

    # ----------------------------------------------------------------------------------------- open
    @classmethod
    def create(cls, root: str | os.PathLike, meta: StoreMeta, decoder: tuple[np.ndarray, np.ndarray] | None = None,
               ) -> EmbeddingStore:
        """Start an empty store (files are sparse until written); ``decoder`` = (mean, components) for a code."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        for name in ("done.npy", "features.f16", "image_vectors.f16", "segments.u16", "decoder.npz"):
            (root / name).unlink(missing_ok=True)
        n = len(meta.frames)
        # The files are sized before meta.json exists, so a reader never sees meta without the arrays.
        arrays = [("features.f16", (n, meta.height, meta.width, meta.channels)), ("image_vectors.f16", (n, meta.dim))]
        if meta.segments is not None:
            arrays.append(("segments.u16", (n, *meta.segments)))
        for name, shape in arrays:
            with open(root / name, "wb") as handle:
                handle.truncate(int(np.prod(shape)) * 2)  # both dtypes take 2 bytes
        if decoder is not None:
            with atomic_open(root / "decoder.npz") as handle:
                np.savez(handle, mean=decoder[0].astype(np.float32), components=decoder[1].astype(np.float32))
        atomic_write_json(root / "meta.json", meta.to_json())
        return cls(root, meta, "r+")

    @classmethod
    def open(cls, root: str | os.PathLike, writable: bool = False, require_complete: bool = True) -> EmbeddingStore:
        """Open an existing store; a missing, corrupt or (with ``require_complete``) partial one raises DataError."""
        root = Path(root)
        if not (root / "meta.json").is_file():
            raise DataError(f"{root}: no embeddings store (meta.json missing); {_FIX}.")
        meta = StoreMeta.from_json(read_json(root / "meta.json"), root / "meta.json")
        store = cls(root, meta, "r+" if writable else "r")
        if require_complete and not store.done.all():
            missing = int((~store.done).sum())
            raise DataError(f"{root}: {missing} of {len(meta.frames)} frames have no embeddings yet; {_FIX}.")
        return store

    def _map(self, name: str, shape: tuple[int, ...], mode: str, dtype: Any = np.float16) -> np.memmap:
        path = self.root / name
        expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if not path.is_file() or path.stat().st_size != expected:
            size = path.stat().st_size if path.is_file() else "missing"
            raise DataError(f"{path}: {size} bytes, expected {expected} for shape {shape}; delete the store, {_FIX}.")
        return np.memmap(path, dtype=dtype, mode=mode, shape=shape)

    def _load_decoder(self) -> None:
        path = self.root / "decoder.npz"
        decoder = read_npz(path, ("mean", "components"), f"delete the store and {_FIX}")
        self.mean, self.components = decoder["mean"], decoder["components"]
        if self.components.shape != (self.meta.code_dim, self.meta.dim) or self.mean.shape != (self.meta.dim,):
            raise DataError(f"{path}: decoder shapes do not match meta.json; delete the store and {_FIX}.")

    # ----------------------------------------------------------------------------------------- read
    def __len__(self) -> int:
        return len(self.meta.frames)

    def index_of(self, file_path: str) -> int:
        """Frame index of a transforms.json ``file_path`` (exact, else by unique file name)."""
        if file_path in self._index:
            return self._index[file_path]
        name = Path(file_path).name
        matches = [i for path, i in self._index.items() if Path(path).name == name]
        if len(matches) != 1:
            raise DataError(f"{self.root}: no embeddings for frame {file_path!r}; the scene changed since, {_FIX}.")
        return matches[0]

    def frame_features(self, index: int) -> np.ndarray:
        """(h, w, D) float32 embeddings of one frame, decoded from the PCA code when the store has one."""
        rows = np.asarray(self.features[index], dtype=np.float32)
        if self.components is None:
            return rows
        return rows @ self.components + self.mean

    def frame_segments(self, index: int) -> np.ndarray | None:
        """(H, W) int32 panoptic segment ids of one frame (0 = void), or None if the store holds none."""
        return None if self.segments is None else np.asarray(self.segments[index], dtype=np.int32)

    # ---------------------------------------------------------------------------------------- write
    def encode(self, features: np.ndarray) -> np.ndarray:
        """Map (..., D) embeddings to the stored channels (identity, or the PCA code)."""
        if self.components is None:
            return features
        return (features - self.mean) @ self.components.T

    def write_frame(self, index: int, features: np.ndarray, image_vector: np.ndarray,
                    segments: np.ndarray | None = None) -> None:
        """Store one frame (``segments``: its panoptic ids, when the store keeps them); it counts as done
        only after the next ``commit``."""
        meta = self.meta
        if features.shape != (meta.height, meta.width, meta.dim):
            raise InputError(f"frame {index}: embeddings of shape {features.shape}, the store holds "
                             f"{(meta.height, meta.width, meta.dim)}; use one embedder for a whole scene.")
        if image_vector.shape != (meta.dim,):
            raise InputError(f"frame {index}: image vector of shape {image_vector.shape}, expected ({meta.dim},).")
        if self.segments is not None:
            if segments is None or segments.shape != meta.segments:
                got = None if segments is None else segments.shape
                raise InputError(f"frame {index}: panoptic segments of shape {got}, the store holds {meta.segments}; "
                                 "every frame of a scene must have the same size.")
            self.segments[index] = np.clip(segments, 0, np.iinfo(np.uint16).max).astype(np.uint16)
        self.features[index] = self.encode(features).astype(np.float16)
        self.image_vectors[index] = image_vector.astype(np.float16)
        self._pending.append(index)
        self.written += 1

    def commit(self) -> None:
        """Flush the memmaps, then mark the written frames done (atomically)."""
        if not self._pending:
            return
        for array in (self.features, self.image_vectors, self.segments):
            if array is not None:
                array.flush()
        self.done[self._pending] = True
        with atomic_open(self.root / "done.npy") as handle:
            np.save(handle, self.done)
        self._pending = []


def fit_pca(samples: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, float]:
    """PCA of (M, D) samples: (mean (D,), components (dim, D) orthonormal rows, explained variance ratio)."""
    mean = samples.mean(axis=0)
    centred = samples - mean
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    dim = min(dim, vt.shape[0])
    energy = singular**2
    ratio = float(energy[:dim].sum() / max(energy.sum(), 1e-12))
    return mean.astype(np.float32), vt[:dim].astype(np.float32), ratio


def scene_frames(scene_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The ``frames`` of ``SCENE/transforms.json`` (validated: each has a file_path and a finite 4x4 transform)."""
    path = Path(scene_dir) / "transforms.json"
    if not path.is_file():
        raise DataError(f"{path}: not found; point --data at a nerfstudio scene (e.g. from `find3d make-scene`).")
    data = read_json(path)
    frames = data.get("frames") if isinstance(data, dict) else None
    if not frames:
        raise DataError(f"{path}: no 'frames' list; regenerate the scene.")
    for i, frame in enumerate(frames):
        matrix = np.asarray(frame.get("transform_matrix", []), dtype=float) if isinstance(frame, dict) else None
        if matrix is None or "file_path" not in frame or matrix.shape != (4, 4):
            raise DataError(f"{path}: frames[{i}] needs a file_path and a 4x4 transform_matrix; regenerate the scene.")
        if not np.isfinite(matrix).all():
            # nerfstudio would take it and train on NaN poses (its auto-orient and scale become NaN too)
            raise DataError(f"{path}: frames[{i}] ({frame['file_path']}) has a transform_matrix with NaN or infinite "
                            "entries; fix that frame's pose or remove the frame from transforms.json.")
    return frames


def frame_images(scene_dir: str | os.PathLike) -> tuple[str, ...]:
    """The ``file_path`` of every frame of ``scene_frames``, each checked to be an image of the same size (the
    store holds one embedding grid per scene). Reads only the files' headers: cheap enough to run before
    any model is loaded."""
    from PIL import Image, UnidentifiedImageError

    scene_dir = Path(scene_dir)
    where = scene_dir / "transforms.json"
    paths = tuple(str(frame["file_path"]) for frame in scene_frames(scene_dir))
    first: tuple[str, tuple[int, int]] | None = None
    for path in paths:
        try:
            with Image.open(scene_dir / path) as image:
                size = image.size
        except (OSError, UnidentifiedImageError) as err:
            raise DataError(f"{where}: frame {path}: {scene_dir / path} is missing or not an image "
                            f"({type(err).__name__}); restore the file or remove the frame.") from err
        if first is None:
            first = (path, size)
        elif size != first[1]:
            raise DataError(f"{where}: frame {path} is {size[0]}x{size[1]} px but {first[0]} is "
                            f"{first[1][0]}x{first[1][1]}; every frame of a scene must have one size: resize "
                            f"{path} (and its intrinsics) or remove it from transforms.json.")
    return paths


class PixelEmbedding(Protocol):
    """What one ``embed_pixels`` call returns (``find3d.interface.api.PixelEmbedding``)."""

    features: Any  # (h, w, D) per-pixel embeddings
    image_vector: Any  # (D,) image-level vector of the same forward pass
    # optional ``segments`` (H, W): panoptic segment ids (0 = void), stored for 3D instances when present


class PixelEmbedder(Protocol):
    """What ``embed_frames`` needs from a model (the FIND interface provides it)."""

    def embed_pixels(self, image: np.ndarray) -> PixelEmbedding:
        """(H, W, 3) uint8 image -> per-pixel embeddings and the image-level vector, in one forward pass."""
        ...


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def embed_frames(
    scene_dir: str | os.PathLike,
    embedder: PixelEmbedder,
    checkpoint: str | None = None,
    code_dim: int | None = None,
    fit_frames: int = 8,
    commit_every: int = 16,
    model: str | None = None,
) -> EmbeddingStore:
    """Embed every frame of ``SCENE/transforms.json`` into ``SCENE/find_embeddings`` (resumable).

    The store is tied to the model that wrote it by ``model``, a hash of its content (default: the
    embedder's ``fingerprint``, e.g. ``Interface.fingerprint``; without one, the ``checkpoint`` string).
    An existing store of the same frames, code size and model is resumed (done frames are skipped),
    even if the checkpoint moved; any other store is replaced and every frame embedded again, the
    reason kept in ``store.replaced``. ``store.written`` counts the frames this call embedded. With
    ``code_dim``, a PCA basis is fitted on the first ``fit_frames`` embedded frames and every frame is
    stored as its code.
    """
    from tqdm import tqdm

    scene_dir = Path(scene_dir)
    model = model if model is not None else getattr(embedder, "fingerprint", None)
    paths = frame_images(scene_dir)
    root = scene_dir / STORE_DIRNAME
    store, replaced = _resumable(root, paths, checkpoint, code_dim, model)
    todo = [i for i in range(len(paths)) if store is None or not store.done[i]]
    buffered: list[tuple[int, np.ndarray, np.ndarray, np.ndarray | None]] = []
    for count, index in enumerate(tqdm(todo, desc="embed-frames", unit="frame", disable=None), start=1):
        image = load_image(scene_dir / paths[index])
        # One forward pass gives both: the interface computes the image vector alongside the pixel maps.
        embedding = embedder.embed_pixels(image)
        pixels, vector = _as_numpy(embedding.features), _as_numpy(embedding.image_vector)
        segments = getattr(embedding, "segments", None)
        if pixels.ndim != 3 or vector.shape != (pixels.shape[-1],):
            raise InputError(f"{paths[index]}: embedder returned pixels {pixels.shape} and image vector "
                             f"{vector.shape}; expected (h, w, D) and (D,).")
        if store is None:
            buffered.append((index, pixels, vector, None if segments is None else np.asarray(segments)))
            if len(buffered) < min(fit_frames if code_dim else 1, len(todo)):
                continue
            store = _create(root, paths, checkpoint, code_dim, model, buffered)
            for item in buffered:
                store.write_frame(*item)
            buffered = []
        else:
            store.write_frame(index, pixels, vector, None if segments is None else np.asarray(segments))
        if count % commit_every == 0:
            store.commit()
    assert store is not None  # without a resumable store every frame was to do, and the loop created one
    store.commit()
    store.replaced = replaced
    return store


def _resumable(root: Path, paths: tuple[str, ...], checkpoint: str | None, code_dim: int | None,
               model: str | None) -> tuple[EmbeddingStore | None, str | None]:
    """(the existing store at ``root`` if it can be resumed, else None; why an existing one cannot)."""
    try:
        store = EmbeddingStore.open(root, writable=True, require_complete=False)
    except DataError:
        return None, None
    meta = store.meta
    if meta.frames != paths:
        return None, "the scene's frames changed"
    if meta.code_dim != code_dim:
        return None, f"the code size changed ({meta.code_dim or 'none'} -> {code_dim or 'none'})"
    if model is not None or meta.model is not None:
        if meta.model != model:
            return None, (f"it was embedded by a different model (content hash {meta.model or 'unrecorded'}, "
                          f"now {model or 'unknown'})")
        if meta.checkpoint != checkpoint:  # same weights, moved or copied file: record where they are now
            store.meta = dataclasses.replace(meta, checkpoint=checkpoint)
            atomic_write_json(root / "meta.json", store.meta.to_json())
    elif meta.checkpoint != checkpoint:
        return None, f"it was embedded from checkpoint {meta.checkpoint}, not {checkpoint}"
    return store, None


def _create(root: Path, paths: tuple[str, ...], checkpoint: str | None, code_dim: int | None, model: str | None,
            first: list[tuple[int, np.ndarray, np.ndarray, np.ndarray | None]]) -> EmbeddingStore:
    height, width, dim = first[0][1].shape
    segments = first[0][3]
    decoder, ratio = None, None
    if code_dim:
        samples = np.concatenate([pixels.reshape(-1, dim) for _, pixels, _, _ in first])
        rng = np.random.default_rng(0)
        samples = samples[rng.permutation(len(samples))[:50_000]]  # bounded SVD cost
        mean, components, ratio = fit_pca(samples, code_dim)
        decoder, code_dim = (mean, components), len(components)
    meta = StoreMeta(dim=dim, height=height, width=width, channels=code_dim or dim, frames=paths,
                     checkpoint=checkpoint, code_dim=code_dim or None, explained_variance=ratio, model=model,
                     segments=None if segments is None else (int(segments.shape[0]), int(segments.shape[1])))
    return EmbeddingStore.create(root, meta, decoder)
