"""Where the clutter misses come from: FIND's 2D panoptic masks against the ground truth, frame by frame.

3D instances are lifted from the frames' panoptic segments (``find3d.query.segments``), so an object the
2D masks never separate from its neighbour cannot become an instance of its own. For every kept scene of
``bench/instances.py --keep`` this counts, over every (frame, object) pair where the object shows at least
``--min-pixels`` pixels:

- recall@0.5: a panoptic segment overlaps the object with IoU >= 0.5 (the object is cut out in that frame);
- merged: the segment holding most of the object also holds at least half of another object (two
  touching objects read as one);
- missed: no segment holds half of the object (it went to void or to the table).

and sets beside it how many 3D instances each method built against the scene's objects
(``bench/results/instances.json``). Command: ``.venv/bin/python bench/instances_2d.py --keep KEPT``.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from find3d.field.embeddings import EmbeddingStore
from find3d.query.eval_3d import Scene

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def frame_stats(truth: np.ndarray, segments: np.ndarray, things: set[int], min_pixels: int) -> dict[str, int]:
    """Counts of objects (``things``: the table, floor and walls are not) cut out, merged with a neighbour,
    or missed in one frame."""
    counts = {"objects": 0, "recall50": 0, "merged": 0, "missed": 0}
    segment_sizes = np.bincount(segments.ravel())
    sizes = {int(i): int(n) for i, n in zip(*np.unique(truth, return_counts=True)) if int(i) in things}
    for obj, size in sizes.items():
        if size < min_pixels:
            continue
        counts["objects"] += 1
        inside = segments[truth == obj]
        ids, overlap = np.unique(inside[inside != 0], return_counts=True)
        if not len(ids):
            counts["missed"] += 1
            continue
        seg_sizes = segment_sizes[ids]
        if (overlap / (size + seg_sizes - overlap)).max() >= 0.5:
            counts["recall50"] += 1
        main = ids[overlap.argmax()]
        if overlap.max() < 0.5 * size:
            counts["missed"] += 1
        others = truth[segments == main]
        if any(((others == o).sum() >= 0.5 * n) for o, n in sizes.items() if o != obj and n >= min_pixels):
            counts["merged"] += 1
    return counts


def scene_stats(root: Path, min_pixels: int) -> dict[str, int]:
    """``frame_stats`` summed over every frame of a kept scene."""
    scene, store = Scene.load(root), EmbeddingStore.open(root / "find_embeddings")
    things = {i for i, entry in scene.objects.items() if entry.get("isthing")}
    total: dict[str, int] = defaultdict(int)
    for index, file_path in enumerate(store.meta.frames):
        segments = np.asarray(store.frame_segments(index))
        for key, value in frame_stats(scene.instances(file_path), segments, things, min_pixels).items():
            total[key] += value
    return dict(total)


def instance_counts(results: Path) -> dict[tuple[str, int], dict[str, tuple[int, int]]]:
    """(layout, seed) -> method -> (3D instances built, ground-truth objects), from instances.json."""
    out: dict[tuple[str, int], dict[str, tuple[int, int]]] = {}
    for run in json.loads(results.read_text()):
        methods = run["eval"]["objects"]
        out[(run["layout"], run["seed"])] = {
            name: (report["instances"]["instances"], report["instances"]["gt_instances"])
            for name, report in methods.items() if isinstance(report, dict) and "instances" in report}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", type=Path, required=True, help="bench/instances.py's --keep folder")
    parser.add_argument("--min-pixels", type=int, default=100, help="smallest object in a 256-px frame counted")
    parser.add_argument("--out", type=Path, default=RESULTS / "instances_2d.md")
    args = parser.parse_args()
    counts = instance_counts(RESULTS / "instances.json")
    lines = ["# Where the clutter misses come from: FIND's 2D masks, then the 3D instances", "",
             f"Command: `.venv/bin/python bench/instances_2d.py --keep KEPT --min-pixels {args.min_pixels}` on the "
             "scenes `bench/instances.py --keep KEPT` built (the packaged interface's panoptic segments, 256 px). "
             "Per (frame, object) pair; 3D instance counts from `instances.json`.", "",
             "| scene | object views | 2D recall@0.5 | merged with a neighbour | missed | 3D instances field / "
             "fusion / objects |", "|---|---:|---:|---:|---:|---|"]
    for scene in sorted(p for p in args.keep.iterdir() if (p / "scene" / "find_embeddings").is_dir()):
        layout, seed = scene.name.rsplit("_", 1)
        stats = scene_stats(scene / "scene", args.min_pixels)
        n = max(stats["objects"], 1)
        built = counts.get((layout, int(seed)), {})
        field, fusion = built.get("field", ("-", "-")), built.get("fusion_baseline", ("-", "-"))
        lines.append(f"| {layout} {seed} | {stats['objects']} | {stats['recall50'] / n:.2f} | "
                     f"{stats['merged'] / n:.2f} | {stats['missed'] / n:.2f} | {field[0]} / {fusion[0]} / "
                     f"{field[1] if field[1] != '-' else fusion[1]} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
