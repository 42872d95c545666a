"""Voxels a full map spills to disk instead of forgetting them: immutable sorted runs, memory-mapped.

When the in-memory map (``find3d.mapping.fusion.VoxelMap``) is full, its longest-unseen voxels are
written out as a *run*: a folder of ``.npy`` arrays (``RUN_ARRAYS``) sorted by voxel key, which from
then on is only read, through ``np.load(mmap_mode="r")``: it costs disk and page cache, not the
process's own memory. A voxel seen again is *taken back*: copied into the map and marked gone in its
run (an ``alive`` mask per run, in memory and saved with the map; the run's files never change), so
every voxel lives in exactly one place and nothing has to be merged when the map is read.

What a run stores per voxel is what the map keeps, compacted where it is lossless for queries: the
embedding sum as its direction in float16 and its length in float32 (what a voxel's feature and its
weight in a later sum need; float16 rounds each component of a unit vector by at most 2^-12), the
position and colour sums, sample count, last-seen tick and the 2 x 13 mask-vote counts exactly.
"""

from __future__ import annotations

import mmap
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from find3d.errors import DataError
from find3d.fileio import atomic_open, sync_files

#: per-voxel arrays of a run, as ``VoxelMap`` rows hold them; ``feature`` is stored as direction + norm
ROW_FIELDS = ("feature", "xyz", "rgb", "weight", "seen", "votes_seen", "votes_same")
RUN_ARRAYS = ("keys", "direction", "norm", "xyz", "rgb", "weight", "seen", "votes_seen", "votes_same")
RUNS = "runs"  # the runs' folder inside a store's folder
_FIX = "the map's runs were changed or removed; start a new map (another map_file), or restore the folder"


def encode_rows(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A run's stored arrays (keys excepted) from ``VoxelMap`` rows (float32 embedding sums)."""
    sums = np.asarray(rows["feature"], np.float32)
    norm = np.linalg.norm(sums, axis=1).astype(np.float32)
    direction = (sums / np.maximum(norm, 1e-30)[:, None]).astype(np.float16)
    return {"direction": direction, "norm": norm, **{k: rows[k] for k in ROW_FIELDS if k != "feature"}}


def decode_rows(stored: dict[str, np.ndarray], index: np.ndarray | slice = slice(None), name: str | None = None
                ) -> Any:
    """``VoxelMap`` rows (float32 sums) of the stored rows ``index``; with ``name`` that one array only."""
    if name is not None:
        if name == "feature":
            return np.asarray(stored["direction"][index], np.float32) * np.asarray(stored["norm"][index])[:, None]
        return np.asarray(stored[name][index])
    return {field: decode_rows(stored, index, field) for field in ROW_FIELDS}


def write_run(folder: Path, keys: np.ndarray, rows: dict[str, np.ndarray], sync: bool = True) -> None:
    """Write sorted ``keys`` and their rows as a run folder (each array atomically; the folder is only used
    once a map lists it, so a run cut short by a kill is never read). ``sync`` False: not fsynced, which a
    save of a map listing the run does (``sync_run``), so that spilling costs no disk flush."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"keys": np.asarray(keys, np.int64), **encode_rows(rows)}
    for name in RUN_ARRAYS:
        with atomic_open(folder / f"{name}.npy", sync=sync) as handle:
            np.save(handle, np.ascontiguousarray(arrays[name]))


def sync_run(folder: Path) -> None:
    """Flush a run's files to disk (``write_run(sync=False)``'s deferred fsync)."""
    sync_files(folder / f"{name}.npy" for name in RUN_ARRAYS)


def open_run(folder: Path, count: int, dim: int) -> dict[str, np.ndarray]:
    """The arrays of a run, memory-mapped; DataError when one is missing or of the wrong shape."""
    arrays = {}
    for name in RUN_ARRAYS:
        path = folder / f"{name}.npy"
        try:
            arrays[name] = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: unreadable ({err}); {_FIX}.") from err
        if len(arrays[name]) != count:
            raise DataError(f"{path}: {len(arrays[name])} rows, the map lists {count}; {_FIX}.")
    if arrays["direction"].shape[1:] != (dim,):
        raise DataError(f"{folder}: {arrays['direction'].shape[1:]} embeddings in a {dim}-d map; {_FIX}.")
    return arrays


def release(arrays: dict[str, np.ndarray]) -> None:
    """Unmap the pages of a run's rows (keys excepted) this process has read: they stay in the page cache, the
    kernel's to keep or reclaim. Rows taken back are copies in the map by then, and the pages the kernel maps
    in around each one (fault-around, read-ahead) would otherwise stay in the process's resident memory: at 2M
    voxels of bench/scale.py's drive, 105 MiB of mapped files with this, 445 MiB without."""
    for name, array in arrays.items():
        mapped = getattr(array, "_mmap", None)  # np.memmap's mapping (np.load(mmap_mode="r"))
        if name != "keys" and mapped is not None:
            mapped.madvise(mmap.MADV_DONTNEED)


@dataclass
class Run:
    """One spilled run: its name (folder under ``runs/``), memory-mapped arrays and which rows are still its."""

    name: str
    arrays: dict[str, np.ndarray]
    alive: np.ndarray  # (n,) bool: False once the voxel was taken back into the map

    def __len__(self) -> int:
        return len(self.alive)


class ColdStore:
    """The runs of one map, in ``folder/runs/`` (module docstring)."""

    def __init__(self, folder: str | os.PathLike, dim: int, temporary: bool = False) -> None:
        self.folder, self.dim, self.temporary = Path(folder), int(dim), temporary
        self.runs: list[Run] = []

    @property
    def runs_dir(self) -> Path:
        return self.folder / RUNS

    def __len__(self) -> int:
        """Voxels held (taken-back ones not counted)."""
        return int(sum(run.alive.sum() for run in self.runs))

    def disk_bytes(self) -> int:
        return int(sum(sum(a.nbytes for a in run.arrays.values()) for run in self.runs))

    def spill(self, keys: np.ndarray, rows: dict[str, np.ndarray]) -> None:
        """Write sorted ``keys`` and their ``VoxelMap`` rows as a new run."""
        if not len(keys):
            return
        # a unique name: a map restarted from its last save must not write over a run a later, unsaved
        # session of it spilled (that run is not listed, but a reader may still have it open)
        name = f"{len(self.runs):06d}-{uuid.uuid4().hex[:8]}"
        write_run(self.runs_dir / name, keys, rows, sync=False)  # a save syncs it
        self.runs.append(Run(name, open_run(self.runs_dir / name, len(keys), self.dim), np.ones(len(keys), bool)))

    def attach(self, name: str, alive: np.ndarray) -> None:
        """Open the existing run ``name`` (a saved map's), with its ``alive`` mask."""
        self.runs.append(Run(name, open_run(self.runs_dir / name, len(alive), self.dim), np.asarray(alive, bool)))

    def take(self, keys: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(bool mask of the sorted unique ``keys`` some run holds, their rows in key order); those rows
        leave their runs (they belong to the map again)."""
        found = np.zeros(len(keys), bool)
        where: list[tuple[Run, np.ndarray, np.ndarray]] = []
        for run in self.runs:
            stored = run.arrays["keys"]
            if not len(stored) or not len(keys):
                continue
            position = np.minimum(np.searchsorted(stored, keys), len(stored) - 1)
            hit = (np.asarray(stored[position]) == keys) & run.alive[position]
            if hit.any():
                found |= hit
                where.append((run, np.flatnonzero(hit), position[hit]))
        if not where:
            return found, {}
        order = np.argsort(np.concatenate([at for _, at, _ in where]), kind="stable")
        parts = [decode_rows(run.arrays, rows) for run, _, rows in where]
        for run, _, rows in where:
            run.alive[rows] = False
            release(run.arrays)
        return found, {name: np.concatenate([p[name] for p in parts])[order] for name in ROW_FIELDS}

    def parts(self) -> Iterator[tuple[Run, np.ndarray]]:
        """(run, indices of its voxels that are still its) of each run holding any."""
        for run in self.runs:
            live = np.flatnonzero(run.alive)
            if len(live):
                yield run, live

    def view(self) -> ColdStore:
        """The same runs as they are now (alive masks copied), for a reader while this store goes on."""
        other = ColdStore(self.folder, self.dim)
        other.runs = [Run(run.name, run.arrays, run.alive.copy()) for run in self.runs]
        return other

    def remove_unlisted(self) -> None:
        """Delete run folders no run of this store is (a killed session's spills after its last save)."""
        listed = {run.name for run in self.runs}
        if self.runs_dir.is_dir():
            for entry in self.runs_dir.iterdir():
                if entry.name not in listed:
                    shutil.rmtree(entry, ignore_errors=True)

    def close(self) -> None:
        """Forget the runs; a temporary store's folder is deleted."""
        self.runs = []
        if self.temporary:
            shutil.rmtree(self.folder, ignore_errors=True)


class Parts:
    """Row-aligned arrays of several parts (a map's rows in memory, its runs' memory-mapped arrays, each through
    an optional index of its rows) read as one array by fancy indexing, so nothing is concatenated:
    ``parts[rows]`` or ``parts[rows, columns]`` with global row numbers (part 0's rows, then part 1's, ...)."""

    def __init__(self, parts: list[tuple[np.ndarray, np.ndarray | None]]) -> None:
        self.parts = parts
        self.offsets = np.cumsum([0, *(len(rows) if rows is not None else len(a) for a, rows in parts)])
        self.dtype = np.result_type(*(a.dtype for a, _ in parts)) if parts else np.float32

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: Any) -> np.ndarray:
        rows, rest = (index[0], index[1:]) if isinstance(index, tuple) else (index, ())
        rows = np.asarray(rows, np.int64)
        part = np.searchsorted(self.offsets, rows, side="right") - 1
        out: np.ndarray | None = None
        for number in np.unique(part):
            chosen = part == number
            array, own = self.parts[number]
            local = rows[chosen] - self.offsets[number]
            local = local if own is None else own[local]
            values = np.asarray(array[(local, *(r[chosen] if np.ndim(r) else r for r in rest))])
            if out is None:
                out = np.empty(rows.shape + values.shape[1:], self.dtype)
            out[chosen] = values
        return out if out is not None else np.empty(rows.shape, self.dtype)
