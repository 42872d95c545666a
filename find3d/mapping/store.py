"""A live map on disk: saved whole and atomically, loaded again at start, and read as a field export.

A saved map is a folder that *is* a field export (``find3d.field.export``'s points.ply, features.f16,
image_vectors.f16, segments.i32, frame_instances.npz and meta.json: the map's voxels, their 3D instances,
its keyframes as frames and how much of each instance each keyframe sees), so ``find3d query --field
MAP``, ``find3d.Field.load`` and the query node answer from it as from an exported field; beside it, the
map's own state, from which a restarted mapping node carries on where it stopped::

    map/hot/*.npy          the voxels that were in memory, as a run (``find3d.mapping.cold``: keys, the
                           embedding sum's float16 direction and float32 length, position and colour sums,
                           samples, last seen, mask votes)
    map/alive.npy          bool, the spilled runs' masks end to end: which voxels are still the run's
    map/image_vectors.npy  (F, D) float32 keyframe vectors (image_vectors.f16 rounds them)
    runs/NAME/*.npy        the spilled runs: written while mapping (not flushed to disk then: the save that
                           first lists a run flushes it), never changed, carried from save to save by hard
                           links (no copy)
    meta.json "map":       {"version", "voxel", "tick", "evicted", "spilled", "hot": voxels in map/hot,
                           "runs": [{"name", "count"}], "stamps": [each keyframe's stamp_ns]}

Saving copies the map under its lock (the rows in memory; runs are shared), then writes a staging folder
beside the map without holding it and swaps that in with one rename (``find3d.fileio.atomic_folder``):
a kill at any moment, even SIGKILL in the middle of a save, leaves the previous save whole and
loadable. Other files in the folder (a ``find3d query``'s results) are carried over. Runs a killed
session spilled after its last save are not listed by it and are deleted when the map is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from find3d import validate
from find3d.errors import DataError, InputError
from find3d.fileio import atomic_folder, atomic_open, link_into, read_json
from find3d.mapping.cold import RUNS, ColdStore, decode_rows, open_run, sync_run, write_run
from find3d.mapping.fusion import DEFAULT_MAX_VOXELS
from find3d.mapping.live import Keyframe, LiveMap, image_vectors, write_map_field
from find3d.query.field import write_frame_instances

STATE = "map"  # the map's own state inside a saved map
#: size of the PCA code a saved map's export carries (per-point queries read 4 (d + 1) bytes a point instead of
#: 2 D; answer quality unchanged at 32, even with a basis from another scene: bench/results/map_storage.md)
CODE_DIM = 32
STATE_VERSION = 1
_FIX = "pass another map_file to start a new map, or restore the folder from a backup"


def saved(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a saved map; False for a new or empty one (or one holding only runs a session
    spilled before it was ever saved); InputError for anything else, which a save must not replace."""
    folder = validate.path(folder, "map file")
    if folder.exists() and not folder.is_dir():
        raise InputError(f"map file {folder}: is a file; pass a folder (new, empty, or a saved map).")
    if not folder.is_dir() or all(entry.name == RUNS or entry.name.startswith(".") for entry in folder.iterdir()):
        return False
    meta = folder / "meta.json"
    try:
        is_map = meta.is_file() and isinstance(read_json(meta).get("map"), dict)
    except (DataError, AttributeError):
        is_map = False
    if not is_map:
        raise InputError(f"map file {folder}: holds files but no saved map (no meta.json with a \"map\" entry); "
                         "pass a new or empty folder, or a map the mapping node saved.")
    return True


def save_map(live: LiveMap, folder: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Save ``live`` into ``folder`` (module docstring), all-or-nothing; ``extra``: more meta.json entries
    (the interface's ``checkpoint`` and ``model``, so ``find3d query`` finds it). Returns the folder."""
    from find3d.field.export import EXPORT_FILES

    folder = validate.path(folder, "map file")
    saved(folder)  # refuse a folder of other files before writing anything
    _, voxels, keyframes = live.snapshot()
    keys, rows = voxels.in_memory()
    runs = [] if voxels.cold is None else voxels.cold.runs
    state = {"version": STATE_VERSION, "voxel": voxels.voxel, "tick": voxels.tick, "evicted": voxels.evicted,
             "spilled": voxels.spilled, "hot": len(keys), "runs": [{"name": r.name, "count": len(r)} for r in runs],
             "stamps": [int(k.stamp_ns) for k in keyframes]}
    # The runs of a map that spills into this folder are carried with the folder's other files (with those
    # spilled since the snapshot, which the next save lists); a map that spills elsewhere links its own in.
    here = voxels.cold is not None and voxels.cold.folder.absolute() == folder.absolute()
    replaced = {*EXPORT_FILES, STATE} | (set() if here else {RUNS})
    locked = False
    try:
        # (hidden entries, e.g. a spilled map's query view and staging folders, are not the map's)
        with atomic_folder(folder, carry=lambda name: name not in replaced and not name.startswith(".")) as staging:
            for run in runs:  # written without a disk flush while mapping: flushed before a save lists them
                sync_run(voxels.cold.runs_dir / run.name)
                if not here:
                    link_into(voxels.cold.runs_dir / run.name, staging / RUNS / run.name)
            write_run(staging / STATE / "hot", keys, rows)
            _save_array(staging / STATE / "alive.npy",
                        np.concatenate([r.alive for r in runs]) if runs else np.zeros(0, bool))
            _save_array(staging / STATE / "image_vectors.npy", image_vectors(keyframes, voxels.dim))
            write_map_field(voxels, keyframes, staging, {**(extra or {}), "map": state}, CODE_DIM)
            write_frame_instances(staging)  # the first query after loading ranks frames without a z-buffer
            # no run may be written into the folder while it is swapped: the swap waits for a fusion step
            live.lock.acquire()
            locked = True
    finally:
        if locked:
            live.lock.release()
    return folder


def load_map(folder: str | os.PathLike, max_voxels: int = DEFAULT_MAX_VOXELS, spill: bool = True,
             root: str | os.PathLike | None = None) -> LiveMap:
    """The map saved in ``folder``, ready to fuse on: voxels beyond ``max_voxels`` and spilled runs stay on
    disk (``spill=False``: later overflow is evicted; what the save had spilled stays readable)."""
    folder = validate.path(folder, "map file")
    if not saved(folder):
        raise InputError(f"map file {folder}: no saved map there; start the node without it, or pass a saved map.")
    meta = read_json(folder / "meta.json")
    state = meta["map"]
    if state.get("version") != STATE_VERSION:
        raise DataError(f"{folder / 'meta.json'}: map state version {state.get('version')}, this find3d reads "
                        f"{STATE_VERSION}; {_FIX}.")
    try:
        dim, voxel = int(meta["dim"]), float(state["voxel"])
        counts = [int(run["count"]) for run in state["runs"]]
        frames, stamps = meta["frames"], [int(s) for s in state["stamps"]]
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{folder / 'meta.json'}: malformed map entry ({err}); {_FIX}.") from err
    cold = ColdStore(folder, dim)
    alive = _load_array(folder / STATE / "alive.npy", (sum(counts),))
    offsets = np.cumsum([0, *counts])
    for run, start, stop in zip(state["runs"], offsets[:-1], offsets[1:]):
        cold.attach(str(run["name"]), alive[start:stop])
    cold.remove_unlisted()
    live = LiveMap(dim, voxel, max_voxels, root or folder, cold, spill)
    hot = open_run(folder / STATE / "hot", int(state["hot"]), dim)
    live.voxels.restore(np.asarray(hot["keys"]), decode_rows(hot), int(state["tick"]), int(state["evicted"]),
                        int(state["spilled"]))
    vectors = _load_array(folder / STATE / "image_vectors.npy", (len(frames), dim))
    live.keyframes = [keyframe(entry, vector, stamp) for entry, vector, stamp in zip(frames, vectors, stamps)]
    live.version = 1  # not 0: a field cached by anyone for the empty map is stale
    return live


def keyframe(entry: dict[str, Any], vector: np.ndarray, stamp_ns: int) -> Keyframe:
    """A keyframe from its export ``frames`` entry (``Keyframe.entry``'s inverse)."""
    from find3d.ingest.camera import Intrinsics

    camera = Intrinsics(width=int(entry["w"]), height=int(entry["h"]), fx=float(entry["fl_x"]),
                        fy=float(entry["fl_y"]), cx=float(entry["cx"]), cy=float(entry["cy"]))
    return Keyframe(str(entry["file_path"]), np.asarray(entry["c2w"], np.float64), camera,
                    np.asarray(vector, np.float32), stamp_ns)


def _save_array(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as handle:
        np.save(handle, array)


def _load_array(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    try:
        array = np.load(path)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable ({err}); {_FIX}.") from err
    if array.shape != shape:
        raise DataError(f"{path}: shape {array.shape}, the map's meta.json needs {shape}; {_FIX}.")
    return array
