"""A whole floor: rooms mapped together against one at a time, a bounded map that spills against one that
evicts, and every mapping stage's time and memory against the floor's size (1x / 4x / 16x the views).

Run: ``.venv/bin/python bench/floor.py [--quality-seeds 201 202] [--rooms 4] [--growth 1 4 16] [--work DIR]``
(about an hour on 2 shared CPU cores, most of it rendering and embedding the floors). Prints markdown
tables and writes them to ``bench/results/floor.md``.

- Scenes: ``make-scene --rooms`` (``find3d.data.floor``) at 256 px, ``--views-per-room`` training views and
  one held-out view per room, embedded by the packaged interface; seeds never used in development.
- Maps: eval-3d's fusion baseline (``find3d.mapping.fusion.VoxelMap``, 2 cm voxels, GT depth, the stored
  embeddings and FIND's masks), which is what the mapping node fuses.
- Quality: per room, eval-3d's whole-object 3D mIoU (``bench/maps.score``) on the room's ground truth, of
  (a) the room mapped alone (its own views), (b) the whole floor mapped at once, cut to the room's cell,
  (c) the whole floor with a quarter of its voxels in memory, spilling (``when_full: spill``), and (d) the
  same bound evicting (``when_full: evict``, the behaviour before maps spilled). Ratios to (a) in one run.
- Growth: one floor per size (rooms = 1, 4, 16 by default: 1x / 4x / 16x the views), the map bounded to
  ``--max-voxels`` in memory (the larger floors spill): time and extra peak memory (VmHWM above the start)
  of each stage: fusing every training view; cutting the 3D instances; writing the map's field
  (``LiveMap.field``: in memory, or on disk once spilled); saving the map (``save_map``); loading it
  (``load_map`` + ``Field.load`` of the saved folder, a fresh process's work); the first whole-object text
  query on the loaded field (encoding, instance scores, frame ranking); the same query again (warm); and a
  relation query ("the X next to the table", ``answer()``). The growth floors have ``--repeat``'s twins.
  Growth exponent: log(t_largest / t_smallest) / log(views_largest / views_smallest).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from maps import ROOT, WORK_HELP, as_field, cameras, fuse, open_scene, prepare, score, session
from memory import peak_extra_mib
from timing import growth_exponent

RESULTS = ROOT / "bench" / "results" / "floor.md"


def prepare_floor(folder: Path, seed: int, rooms: int, views: int, repeat: bool = False) -> None:
    """A floor of ``rooms`` rooms (one room too: ``make-scene --rooms`` starts at two), embedded."""
    from find3d.data.floor import make_floor
    from find3d.data.make_scene import OUTPUTS, prepare_folder

    if not (folder / "transforms.json").is_file():
        prepare_folder(folder, True, OUTPUTS, ("images", "depths", "instances", "ground_truth"))
        make_floor(folder, seed, rooms, views * rooms, rooms, 256, repeat=repeat)
    prepare(folder, seed)


# ------------------------------------------------------------------------------------------- quality
def room_scene(scene: Any, room: int) -> Any:
    """eval-3d's ``Scene`` of one room: its objects, their ground truth and the views that look at it."""
    from find3d.query.eval_3d import Scene

    objects = {i: o for i, o in scene.objects.items() if o.get("room") == room}
    keep = np.isin(scene.gt_object, list(objects))
    frames = [f for f in scene.transforms["frames"] if f["room"] == room]
    names = {f["file_path"] for f in frames}
    transforms = {**scene.transforms, "frames": frames,
                  **{key: [p for p in scene.transforms[key] if p in names]
                     for key in ("train_filenames", "val_filenames", "test_filenames")}}
    return Scene(scene.root, transforms, objects, scene.gt_xyz[keep], scene.gt_object[keep])


def room_field(scene: Any, store: Any, voxels: Any, room: int) -> Any:
    """The field of ``voxels`` cut to ``room``'s cell, with the views that look at the room."""
    from find3d.data.floor import room_of_points

    points = voxels.points()
    inside = room_of_points(scene.root, points) == room
    labels = voxels.segments()[inside]
    # numbered 0.. within the room, as a field's instances are (an instance id with no point would score as
    # an empty instance)
    kept = labels >= 0
    labels[kept] = np.unique(labels[kept], return_inverse=True)[1]
    field = as_field(scene, store, points[inside], voxels.colors()[inside], voxels.features()[inside], labels)
    mine = [i for i, frame in enumerate(cameras(scene, store)) if scene.frame(frame["file_path"])["room"] == room]
    field.frames, field.meta["frames"] = [field.frames[i] for i in mine], [field.frames[i] for i in mine]
    field.image_vectors = field.image_vectors[mine]
    return field


def quality(seed: int, rooms: int, views: int, work: Path, model: Any) -> dict[str, list[float]]:
    """Per room, whole-object mIoU of the four maps (module docstring)."""
    from find3d.mapping.cold import ColdStore
    from find3d.mapping.fusion import VoxelMap
    from find3d.query.eval_3d import query_embeddings

    folder = work / f"floor_{seed}_{rooms}"
    prepare_floor(folder, seed, rooms, views)
    scene, store = open_scene(folder)
    train = scene.transforms["train_filenames"]
    dim = store.meta.dim
    whole = fuse(scene, store, train, VoxelMap(dim, max_voxels=10**9))
    bound = len(whole) // 4
    spilling = fuse(scene, store, train, VoxelMap(dim, max_voxels=bound, cold=ColdStore(work / f"runs_{seed}", dim)))
    evicting = fuse(scene, store, train, VoxelMap(dim, max_voxels=bound))
    rows: dict[str, list[float]] = {"alone": [], "whole": [], "spill": [], "evict": []}
    for room in range(rooms):
        local = room_scene(scene, room)
        embeddings, _ = query_embeddings(model, local)
        alone = fuse(scene, store, local.transforms["train_filenames"], VoxelMap(dim, max_voxels=10**9))
        for name, voxels in (("alone", alone), ("whole", whole), ("spill", spilling), ("evict", evicting)):
            rows[name].append(score(room_field(scene, store, voxels, room), local, model, embeddings,
                                    instances=False)["miou"])
        print(seed, room, {k: round(v[-1], 3) for k, v in rows.items()}, flush=True)
    rows["voxels"] = [len(whole), bound, len(spilling), spilling.count, len(evicting), evicting.evicted]
    shutil.rmtree(work / f"runs_{seed}", ignore_errors=True)
    return rows


# -------------------------------------------------------------------------------------------- growth
def timed(step: Any) -> tuple[Any, float, float]:
    """(result, seconds, extra peak MiB) of ``step()``."""
    out: list[Any] = []
    start = time.perf_counter()
    extra = peak_extra_mib(lambda: out.append(step()))
    return out[0], time.perf_counter() - start, extra


def growth(seed: int, rooms: int, views: int, max_voxels: int, work: Path, model: Any) -> dict[str, Any]:
    """Each stage's (seconds, extra MiB) on a floor of ``rooms`` rooms (module docstring)."""
    from find3d.mapping.cold import ColdStore
    from find3d.mapping.live import LiveMap
    from find3d.mapping.store import keyframe, load_map, save_map
    from find3d.query.answer import answer
    from find3d.query.eval_3d import query_embeddings
    from find3d.query.field import Field

    folder = work / f"growth_{seed}_{rooms}_repeat"
    prepare_floor(folder, seed, rooms, views, repeat=True)  # twins: every size has a relation query
    scene, store = open_scene(folder)
    train = scene.transforms["train_filenames"]
    frames = {f["file_path"]: f for f in cameras(scene, store)}
    map_folder = work / f"map_{rooms}"
    shutil.rmtree(map_folder, ignore_errors=True)
    live = LiveMap(store.meta.dim, max_voxels=max_voxels, cold=ColdStore(map_folder, store.meta.dim))
    vectors = np.asarray(store.image_vectors, np.float32)
    live.keyframes = [keyframe(frames[p], vectors[store.index_of(p)], 0) for p in train]
    stages: dict[str, tuple[float, float]] = {}
    _, *stages["fuse every view"] = timed(lambda: fuse(scene, store, train, live.voxels))
    live.version += 1
    _, *stages["3D instances"] = timed(live.voxels.segments)
    _, *stages["the map's field"] = timed(live.field)
    _, *stages["save"] = timed(lambda: save_map(live, map_folder, {"checkpoint": None}))
    (_, loaded), *stages["load (map + field)"] = timed(lambda: (load_map(map_folder), Field.load(map_folder)))
    category = next(iter(query_embeddings(model, scene)[0]))
    _, *stages["first query after loading"] = timed(lambda: loaded.query(f"the {category}", interface=model))
    _, *stages["warm query"] = timed(lambda: loaded.query(f"the {category}", interface=model))
    _, *stages["relation query"] = timed(lambda: answer(loaded, model, f"the {category} next to the table"))
    return {"stages": stages, "views": len(train), "frames": len(loaded.frames), "voxels": len(live),
            "in_memory": live.voxels.count, "spilled_runs": len(live.voxels.cold.runs),
            "disk_mib": live.voxels.cold.disk_bytes() / 2**20}


# ---------------------------------------------------------------------------------------------- report
def report(args: argparse.Namespace, qualities: dict[int, dict], growths: dict[int, dict]) -> str:
    lines = ["# A whole floor", "", "Command: `.venv/bin/python bench/floor.py --quality-seeds "
             + " ".join(map(str, args.quality_seeds)) + f" --rooms {args.rooms} --growth "
             + " ".join(map(str, args.growth)) + f" --views-per-room {args.views_per_room} --max-voxels "
             f"{args.max_voxels}`", ""]
    if qualities:
        lines += [f"## Rooms mapped together against one at a time ({args.rooms} rooms, "
                  f"{args.views_per_room} views a room + one held out, 256 px)", "",
                  "Whole-object 3D mIoU per room on the room's ground truth (eval-3d's protocol); the bounded maps "
                  "hold a quarter of the floor's voxels in memory.", "",
                  "| seed | room | alone | whole floor | whole, bounded, spilling | whole, bounded, evicting |",
                  "|---|---|---:|---:|---:|---:|"]
        for seed, rows in qualities.items():
            for room in range(args.rooms):
                lines.append(f"| {seed} | {room} | " + " | ".join(f"{rows[k][room]:.3f}" for k in
                                                                   ("alone", "whole", "spill", "evict")) + " |")
        lines += ["", "| seed | voxels (whole floor) | bound | spilling map: voxels / in memory | evicting map: voxels "
                  "/ evicted | whole / alone (mean mIoU) | lowest room's ratio | spilling / alone | evicting / alone |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for seed, rows in qualities.items():
            alone = np.array(rows["alone"])
            ratios = {k: float(np.mean(rows[k]) / max(alone.mean(), 1e-12)) for k in ("whole", "spill", "evict")}
            lowest = min(w / a for w, a in zip(rows["whole"], alone) if a > 0)
            v = rows["voxels"]
            lines.append(f"| {seed} | {v[0]} | {v[1]} | {v[2]} / {v[3]} | {v[4]} / {v[5]} | {ratios['whole']:.3f}x | "
                         f"{lowest:.3f}x | {ratios['spill']:.3f}x | {ratios['evict']:.3f}x |")
        lines.append("")
    if growths:
        sizes = sorted(growths)
        first, last = sizes[0], sizes[-1]
        lines += [f"## Stages against the floor's size (seed {args.growth_seed}, at most {args.max_voxels} voxels in "
                  "memory)", "",
                  "| " + " | ".join(["stage", *[f"{s} room{'s' * (s > 1)}: {growths[s]['views']} views, "
                                                 f"{growths[s]['voxels']} voxels" for s in sizes],
                                     f"growth exponent ({first} -> {last} rooms: time against views)"])
                  + " |",
                  "|---|" + "---:|" * (len(sizes) + 1)]
        for stage in growths[first]["stages"]:
            if not all(stage in growths[s]["stages"] for s in sizes):
                continue
            cells = [f"{growths[s]['stages'][stage][0]:.2f} s, {growths[s]['stages'][stage][1]:+.0f} MiB"
                     for s in sizes]
            t0, t1 = growths[first]["stages"][stage][0], growths[last]["stages"][stage][0]
            views = growths[last]["views"] / growths[first]["views"]
            exponent = growth_exponent(t0, t1, views)
            lines.append(f"| {stage} | " + " | ".join(cells) + f" | {exponent:.2f} |")
        lines += ["", "| size | frames in the field | voxels | in memory | spilled runs | on disk (MiB) |",
                  "|---|---:|---:|---:|---:|---:|"]
        for s in sizes:
            g = growths[s]
            lines.append(f"| {s} rooms | {g['frames']} | {g['voxels']} | {g['in_memory']} | {g['spilled_runs']} | "
                         f"{g['disk_mib']:.0f} |")
        lines.append("")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines += [f"Machine: {os.cpu_count()} CPU cores, shared (load average at the end {load}); one torch thread.", ""]
    return "\n".join(lines)


def main() -> None:
    from find3d.fileio import atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quality-seeds", type=int, nargs="*", default=[201, 202])
    parser.add_argument("--rooms", type=int, default=4, help="rooms of the quality floors")
    parser.add_argument("--growth", type=int, nargs="*", default=[1, 4, 16], help="rooms of the growth floors")
    parser.add_argument("--growth-seed", type=int, default=203)
    parser.add_argument("--views-per-room", type=int, default=10)
    parser.add_argument("--max-voxels", type=int, default=100_000, help="voxels in memory, growth floors")
    parser.add_argument("--work", type=Path, default=None, help=WORK_HELP)
    args = parser.parse_args()
    with session(args.work) as (work, model):
        qualities = {seed: quality(seed, args.rooms, args.views_per_room, work, model) for seed in args.quality_seeds}
        growths = {rooms: growth(args.growth_seed, rooms, args.views_per_room, args.max_voxels, work, model)
                   for rooms in args.growth}
        for rooms, g in growths.items():
            print(rooms, g, flush=True)
    text = report(args, qualities, growths)
    print(text)
    atomic_write_text(RESULTS, text)


if __name__ == "__main__":
    main()
