"""10M points and 10,000 frames: a map that keeps every voxel of a long drive in bounded memory, and the
queries over it (instances, frame ranking, relations, first query after loading).

Run: ``.venv/bin/python bench/scale.py [--voxels 10000000] [--frames 10000] [--max-voxels 500000] [--work DIR]``
(about an hour on 2 shared CPU cores, and ~13 GB of disk under ``--work``). Prints markdown tables and
writes them to ``bench/results/scale.md`` (``--voxels 1000000 --frames 1000``: a 10x smaller run).

- Drive: ``make-scene --rooms 3`` (seed 301, 10 views a room, 256 px) embedded by the packaged interface;
  each training view's samples (GT depth, the stored embeddings and FIND's masks, as eval-3d's fusion
  baseline) make one keyframe. Pass after pass over the floor, each pass shifted onto new ground (floors
  side by side, 16 m x 8 m apart: a building of copies of the floor), until ``--voxels`` voxels; each pass
  also revisits some of its views (the same samples again), so that the drive has ``--frames`` keyframes.
- Mapping: ``LiveMap`` with ``--max-voxels`` voxels in memory, spilling into the map folder
  (``when_full: spill``), one keyframe at a time. Resident memory (``/proc/self/status``: anonymous, the
  process's own memory, and file pages of the memory-mapped runs it touched) as the map grows.
  No voxel lost: the map's voxels against a pass's (an unbounded map of one pass) times the passes.
- Stages at full size: the 3D instances; saving the map (``save_map``: the field export and the state);
  in a fresh process, ``Field.load`` of the saved map and the first whole-object query (embeddings given:
  the interface's load and encoding are not the map's); warm whole-object queries against the memory-read
  floor of the bytes they read (each point's instance and its relevancy written: ``np.take`` of the
  instance scores by the instance ids, the least such a query can do); a per-point query against the time
  to read its bytes once in its order (``read_per_point``); each query
  timed alternately with its floor, the ratio the median of the rounds' (``timing.ratio_to_floor``); frame
  ranking over every frame for one object (first: visibility of the frames that may see it; warm: cached);
  a relation query through ``answer()`` (with encoding).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from maps import ROOT, WORK_HELP, cameras, fuse, open_scene, prepare, session
from timing import median_seconds, ratio_to_floor

RESULTS = ROOT / "bench" / "results" / "scale.md"
FLOOR_SPACING = (16.0, 8.0)  # m between copies of the floor (3 rooms of 4 m in a row)
VOXEL = 0.02  # the map's (find3d.mapping.fusion.DEFAULT_VOXEL)
GRID = 16  # floors to a row


def status() -> dict[str, float]:
    """RssAnon, RssFile and VmHWM of this process in MiB."""
    out = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key = line.split(":")[0]
            if key in ("RssAnon", "RssFile", "VmHWM"):
                out[key] = int(line.split()[1]) / 1024
    return out


class Sampler:
    """The highest RssAnon and RssFile while a block runs (sampled every 10 ms: /proc keeps no high-water
    mark of either), minus their values when it started."""

    def __enter__(self) -> Sampler:
        import threading

        self.start, self.peak, self._stop = status(), status(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            now = status()
            self.peak = {k: max(v, now[k]) for k, v in self.peak.items()}

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.anon = self.peak["RssAnon"] - self.start["RssAnon"]
        self.file = self.peak["RssFile"] - self.start["RssFile"]


def measured(step: Any) -> tuple[Any, float, float, float]:
    """(result, seconds, extra peak own memory MiB, extra peak mapped-file MiB) of ``step()``."""
    start = time.perf_counter()
    with Sampler() as sampler:
        out = step()
    return out, time.perf_counter() - start, sampler.anon, sampler.file


def shift(copy: int) -> np.ndarray:
    return np.array([FLOOR_SPACING[0] * (copy % GRID), FLOOR_SPACING[1] * (copy // GRID), 0.0])


def drive(work: Path) -> tuple[Any, list, list, int]:
    """(scene, samples of each training view, keyframe entries, voxels of one pass)."""
    from find3d.data.floor import make_floor
    from find3d.data.make_scene import OUTPUTS, prepare_folder
    from find3d.mapping.fusion import VoxelMap
    from find3d.query.eval_3d import frame_samples

    folder = work / "floor"
    if not (folder / "transforms.json").is_file():
        prepare_folder(folder, True, OUTPUTS, ("images", "depths", "instances", "ground_truth"))
        make_floor(folder, 301, 3, 30, 3, 256)
    prepare(folder, 301)
    scene, store = open_scene(folder)
    train = scene.transforms["train_filenames"]
    samples = [frame_samples(scene, store, path) for path in train]
    entries = {f["file_path"]: f for f in cameras(scene, store)}
    vectors = np.asarray(store.image_vectors, np.float32)
    frames = [(entries[path], vectors[store.index_of(path)]) for path in train]
    one = fuse(scene, store, train, VoxelMap(store.meta.dim, max_voxels=10**9))
    return scene, samples, frames, len(one)


def distinct_voxels(samples: list, passes: int) -> int:
    """Voxels the whole drive touches (the passes' voxels overlap where one floor's views reach into the next)."""
    from find3d.query.segments import cell_keys

    keys = [np.unique(np.concatenate([cell_keys(s.xyz + shift(copy), VOXEL)[0] for s in samples]))
            for copy in range(passes)]
    return len(np.unique(np.concatenate(keys)))


def build(args: argparse.Namespace, work: Path, samples: list, frames: list, per_pass: int) -> tuple[Any, dict]:
    """The driven map (module docstring) and its growth record."""
    from find3d.mapping.cold import ColdStore
    from find3d.mapping.live import Keyframe, LiveMap
    from find3d.mapping.store import keyframe

    passes = math.ceil(args.voxels / per_pass)
    revisits = max(0, round(args.frames / passes) - len(samples))
    dim = samples[0].features.shape[1]
    folder = work / "map"
    shutil.rmtree(folder, ignore_errors=True)
    live = LiveMap(dim, max_voxels=args.max_voxels, cold=ColdStore(folder, dim), root=work)
    rows, started, seconds = [], time.perf_counter(), 0.0
    order = [*range(len(samples)), *range(revisits)]
    total = passes * len(order)
    sampler = Sampler().__enter__()
    for copy in range(passes):
        offset = shift(copy)
        for step, view in enumerate(order):
            entry, vector = frames[view]
            c2w = np.asarray(entry["c2w"], np.float64).copy()
            c2w[:3, 3] += offset
            base = keyframe(entry, vector, 0)
            moved = type(samples[view])(samples[view].xyz + offset, samples[view].features, samples[view].colors,
                                        samples[view].masks)
            begin = time.perf_counter()
            live.add(Keyframe(f"{entry['file_path']}@{copy}", c2w, base.camera, vector, 0), moved)
            seconds += time.perf_counter() - begin
            done = copy * len(order) + step + 1
            if done % max(1, total // 10) == 0 or done == total:
                rows.append({"frames": done, "voxels": len(live), "in_memory": live.voxels.count,
                             "disk_mib": live.voxels.cold.disk_bytes() / 2**20, **status(),
                             "peak_anon": sampler.peak["RssAnon"], "peak_file": sampler.peak["RssFile"],
                             "ms_per_frame": 1e3 * seconds / done})
                print(rows[-1], flush=True)
    sampler.__exit__()
    return live, {"rows": rows, "passes": passes, "per_pass": per_pass, "revisits": revisits,
                  "wall": time.perf_counter() - started}


def fresh_load(folder: Path, queries: Path) -> dict[str, Any]:
    """``Field.load``, a first whole-object query and the same query again (warm) in a new process (``--load``)."""
    command = [sys.executable, str(Path(__file__)), "--load", str(folder), "--queries", str(queries)]
    output = subprocess.run(command, check=True, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
    return json.loads(output.strip().splitlines()[-1])


def load_and_query(folder: Path, queries: Path) -> None:
    """The child of ``fresh_load``: prints its timings as one JSON line."""
    import torch

    from find3d.query.field import Field

    torch.set_num_threads(1)
    with np.load(queries) as data:
        query, negatives = data["query"], data["negatives"]
    start = time.perf_counter()
    field = Field.load(folder)
    loaded = time.perf_counter()
    result = field.query(query, negatives, top_k_frames=3)
    done = time.perf_counter()
    memory = status()  # before the warm query: the first one's memory is what the table reports
    field.query(query, negatives, top_k_frames=3)
    print(json.dumps({"load": loaded - start, "first_query": done - loaded, "warm_query": time.perf_counter() - done,
                      "found": bool(result.found), "points": len(field), "frames": len(field.frames),
                      "selected": len(result.indices), "best_frames": [hit.index for hit in result.frames], **memory}))


def stages(scene: Any, live: Any, work: Path, model: Any) -> dict[str, Any]:
    from find3d.mapping.store import save_map
    from find3d.query.answer import answer
    from find3d.query.eval_3d import interleaved_queries, query_embeddings
    from find3d.query.field import Field

    out: dict[str, Any] = {}
    _, *out["segments"] = measured(live.voxels.segments)
    _, *out["save"] = measured(lambda: save_map(live, work / "map", {"checkpoint": None}))
    embeddings = query_embeddings(model, scene)[0]
    category = next(iter(embeddings))
    query, negatives = embeddings[category][0]
    np.savez(work / "queries.npz", query=query, negatives=negatives)
    live.close()
    out["fresh"] = fresh_load(work / "map", work / "queries.npz")
    field = Field.load(work / "map")
    result = field.query(query, negatives, top_k_frames=0)
    scores = np.append(field.instance_relevancy(query, negatives), 0.0).astype(np.float32)
    buffer = np.empty(len(field), np.float32)
    out["objects_query_s"], out["objects_floor_s"], out["objects_ratio"] = ratio_to_floor(
        lambda: field.query(query, negatives, top_k_frames=0), lambda: np.take(scores, field.segments, out=buffer))
    out["selected"] = len(result.indices)
    points, *out["points_first"] = measured(lambda: field.query(query, negatives, top_k_frames=0, objects=False))
    out["points_selected"] = len(points.indices)
    read = field.code if field.code is not None else field.features
    out["points_query_s"], out["points_floor_s"], out["points_ratio"] = ratio_to_floor(
        lambda: field.query(query, negatives, top_k_frames=0, objects=False),
        lambda: read_per_point(field, field.nearest_negative(negatives)))
    out["features_gib"] = (read.nbytes + 4 * len(field)) / 2**30
    out["features_read"] = "PCA code" if field.code is not None else "embeddings"
    first = field.segments[result.indices[0]] if len(result.indices) else -1
    instance = result.indices[field.segments[result.indices] == first] if len(result.indices) else np.arange(100)
    _, *out["rank_first"] = measured(lambda: field.rank_frames(result.relevancy, instance, 5))
    out["rank_warm_s"] = median_seconds(lambda: field.rank_frames(result.relevancy, instance, 5))
    out["instance_points"] = len(instance)
    relations = [task["text"] for task in interleaved_queries(scene) if "view" not in task]
    relation = relations[0] if relations else f"the {category} next to the table"
    _, *out["relation_first"] = measured(lambda: answer(field, model, relation))
    out["relation_warm_s"] = median_seconds(lambda: answer(field, model, relation), 3)
    out["relation"] = relation
    out["frames"], out["points"] = len(field.frames), len(field)
    return out


def read_per_point(field: Any, nearest: np.ndarray) -> None:
    """The bytes a per-point query must read, each once, in its order and with the least work on them (a
    sum): the PCA code where the export has one (a saved map's has), else the embeddings, chunk by chunk of
    points, and each point's cosine with its nearest negative. Reading the code's rows side by side is faster
    than one sequential pass over the same bytes (100-116 ms against 118-128 ms at 10M points), so that is
    the floor."""
    import torch

    from find3d.query.field import CHUNK_ROWS

    code = None if field.code is None else torch.from_numpy(np.asarray(field.code))
    cosines = torch.from_numpy(nearest)
    for start in range(0, len(field), CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        (code[:, rows] if code is not None else torch.from_numpy(field.features[rows])).sum(0)
        cosines[rows].sum()


def report(args: argparse.Namespace, record: dict, result: dict, peak: dict) -> str:
    rows = record["rows"]
    lines = [f"# {args.voxels / 1e6:g}M points: a map that forgets nothing, and queries over it", "",
             f"Command: `.venv/bin/python bench/scale.py --voxels {args.voxels} --frames {args.frames} --max-voxels "
             f"{args.max_voxels}`", "",
             f"Drive: {record['passes']} passes over a 3-room make-scene --rooms floor (seed 301; {record['per_pass']} "
             f"voxels a pass, each pass on new ground, {record['revisits']} views revisited a pass), one keyframe = "
             f"one view's samples (the packaged interface's embeddings, GT depth, FIND's masks), at most "
             f"{args.max_voxels} voxels in memory, the rest spilled to disk. Mapping took "
             f"{record['wall'] / 60:.1f} min. Resident memory: the process's own (RssAnon) and the pages of "
             "memory-mapped files it has touched (RssFile: the runs' keys, page cache the kernel takes back when "
             "short), peaks sampled every 10 ms.", "",
             "| keyframes | voxels | in memory | on disk (MiB) | own memory, peak so far (MiB) | mapped files, peak so "
             "far (MiB) | fusion ms / keyframe (mean so far) |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['frames']} | {row['voxels']} | {row['in_memory']} | {row['disk_mib']:.0f} | "
                     f"{row['peak_anon']:.0f} | {row['peak_file']:.0f} | {row['ms_per_frame']:.1f} |")
    final = rows[-1]
    lines += ["", f"Voxels lost: {record['distinct'] - final['voxels']} (the drive touched {record['distinct']} "
              f"distinct voxels; the map holds {final['voxels']}). Resident at the end: own "
              f"{final['RssAnon']:.0f} MiB + mapped files {final['RssFile']:.0f} MiB = "
              f"{(final['RssAnon'] + final['RssFile']) / 1024:.2f} GiB; peaks {final['peak_anon']:.0f} + "
              f"{final['peak_file']:.0f} MiB (mapped files include the process's libraries).", "",
              f"## Queries at {result['points']} points and {result['frames']} frames", "",
              "| stage | time | extra peak own memory | extra peak mapped files |", "|---|---:|---:|---:|",
              f"| 3D instances of the whole map | {result['segments'][0]:.1f} s | {result['segments'][1]:+.0f} MiB | "
              f"{result['segments'][2]:+.0f} MiB |",
              f"| save the map (field export + state; instances already cut) | {result['save'][0]:.1f} s | "
              f"{result['save'][1]:+.0f} MiB | {result['save'][2]:+.0f} MiB |",
              f"| fresh process: Field.load of the saved map | {result['fresh']['load']:.2f} s | | |",
              f"| fresh process: first whole-object query, 3 best frames ranked (embeddings given) | "
              f"{result['fresh']['first_query']:.2f} s | {result['fresh']['RssAnon']:.0f} MiB own in all | "
              f"{result['fresh']['RssFile']:.0f} MiB in all |",
              f"| warm whole-object query, no frames ({result['selected']} points selected) | "
              f"{1e3 * result['objects_query_s']:.1f} ms: {result['objects_ratio']:.2f}x "
              f"the floor, timed alternately ({1e3 * result['objects_floor_s']:.1f} ms to read the instance ids "
              "and write the relevancy) | | |",
              f"| per-point query, first (the negatives' cosines, once per set) | {result['points_first'][0]:.1f} s | "
              f"{result['points_first'][1]:+.0f} MiB | {result['points_first'][2]:+.0f} MiB |",
              f"| per-point query, warm ({result['points_selected']} points selected) | "
              f"{1e3 * result['points_query_s']:.0f} ms: {result['points_ratio']:.2f}x "
              f"the floor, timed alternately ({1e3 * result['points_floor_s']:.0f} ms to read the "
              f"{result['features_gib']:.2f} GiB of {result['features_read']} and nearest-negative cosines once in "
              "its order) | | |",
              f"| rank all {result['frames']} frames for one instance ({result['instance_points']} points), first | "
              f"{result['rank_first'][0]:.2f} s | {result['rank_first'][1]:+.0f} MiB | "
              f"{result['rank_first'][2]:+.0f} MiB |",
              f"| the same, warm | {1e3 * result['rank_warm_s']:.1f} ms | | |",
              f"| relation query \"{result['relation']}\" (answer(), with encoding), first | "
              f"{result['relation_first'][0]:.2f} s | {result['relation_first'][1]:+.0f} MiB | "
              f"{result['relation_first'][2]:+.0f} MiB |",
              f"| the same, warm | {result['relation_warm_s']:.2f} s | | |"]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines += ["", f"Peak resident memory of the whole run (VmHWM, own and mapped): {peak['VmHWM']:.0f} MiB. Machine: "
              f"{os.cpu_count()} CPU cores, shared (load average at the end {load}); one torch thread.", ""]
    return "\n".join(lines)


def main() -> None:
    from find3d.fileio import atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=10_000_000)
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--max-voxels", type=int, default=500_000, help="voxels in memory")
    parser.add_argument("--work", type=Path, default=None, help=WORK_HELP)
    parser.add_argument("--load", type=Path, default=None, help=argparse.SUPPRESS)  # fresh_load's child
    parser.add_argument("--queries", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load is not None:
        load_and_query(args.load, args.queries)
        return
    with session(args.work) as (work, model):
        scene, samples, frames, per_pass = drive(work)
        distinct = distinct_voxels(samples, math.ceil(args.voxels / per_pass))
        live, record = build(args, work, samples, frames, per_pass)
        record["distinct"] = distinct
        result = stages(scene, live, work, model)
        print(result, flush=True)
    text = report(args, record, result, status())
    print(text)
    atomic_write_text(RESULTS, text)


if __name__ == "__main__":
    main()
