"""Do the 3D instance graph's parameters limit separation in clutter? Class-agnostic instance quality of the
live map's instances (``find3d.query.segments`` over ``find3d.mapping.fusion``'s voxels) as each
``SegmentParameters`` field moves away from its default, one at a time.

Run: ``.venv/bin/python bench/segment_parameters.py [--checkpoint CKPT] [--keep DIR]`` (about 5 minutes on 2
CPU cores). Writes ``bench/results/segment_parameters.md``.

- Scenes: ``bench/instances.py``'s clutter and separated layouts on the calibration seeds 201-203 (never the
  benchmark's 101-103 / 111-113), 20 + 5 views, embedded by the interface, fused from the training views as
  eval-3d's fusion baseline does.
- Per ground-truth thing object: the best IoU of one instance with it, over the map's voxels within 1 cm of
  a ground-truth point (its label: the nearest one's object). "Whole" is the share of objects with a best IoU
  of at least 0.5 (what instance AP50 counts when the instance is also ranked first).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from instances import LAYOUTS  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "segment_parameters.md"
SEEDS = (201, 202, 203)
MATCH = 0.01  # m: a voxel takes the object of the nearest ground-truth point within this distance
VARIANTS: dict[str, dict[str, float]] = {
    "default": {},
    "colour_distance 6": {"colour_distance": 6.0},
    "colour_distance 8": {"colour_distance": 8.0},
    "colour_distance 18": {"colour_distance": 18.0},
    "agreement 0.35": {"agreement": 0.35},
    "agreement 0.65": {"agreement": 0.65},
    "agreement 0.8": {"agreement": 0.8},
    "feature_cosine 0.5": {"feature_cosine": 0.5},
    "feature_cosine 0.8": {"feature_cosine": 0.8},
    "min_views 3": {"min_views": 3},
    "min_area 0.002": {"min_area": 0.002},
    "min_area 0.008": {"min_area": 0.008},
}


def fused_scene(layout: str, seed: int, work: Path, interface: Any, checkpoint: Path) -> tuple[Any, np.ndarray, list]:
    """The scene's fusion map, each voxel's ground-truth object (-2: none near) and the thing objects' ids."""
    from scipy.spatial import cKDTree

    from find3d.data.make_scene import make_scene
    from find3d.field.embeddings import STORE_DIRNAME, EmbeddingStore, embed_frames
    from find3d.field.export import scene_cameras
    from find3d.mapping.fusion import DEFAULT_VOXEL, VoxelMap
    from find3d.query import eval_3d

    root = work / f"{layout}_{seed}"
    if not (root / STORE_DIRNAME).is_dir():
        make_scene(root, seed=seed, views=20, heldout=5, overwrite=True, **LAYOUTS[layout][1])
        embed_frames(root, interface, checkpoint=str(checkpoint.resolve()))
    scene, store = eval_3d.Scene.load(root), EmbeddingStore.open(root / STORE_DIRNAME)
    cameras = SimpleNamespace(frames=scene_cameras(root, store.meta.frames))
    fused = VoxelMap(store.meta.dim, DEFAULT_VOXEL)
    for path in scene.transforms.get("train_filenames", []):
        fused.integrate(eval_3d.frame_samples(scene, store, path, cameras))
    truth = np.load(root / "ground_truth" / "points.npz")
    objects = json.loads((root / "ground_truth" / "objects.json").read_text())["objects"]
    xyz = fused.column("xyz") / fused.column("weight")[:, None]
    distance, nearest = cKDTree(truth["xyz"]).query(xyz)
    labels = np.where(distance <= MATCH, truth["object_id"][nearest], -2)
    return fused, labels, [int(key) for key, entry in objects.items() if entry.get("isthing")]


def best_ious(segments: np.ndarray, labels: np.ndarray, things: list[int]) -> list[float]:
    """Per thing object with voxels: the best IoU of one instance with it."""
    out = []
    for thing in things:
        mine = labels == thing
        if not mine.any():
            continue
        candidates = np.unique(segments[mine])
        out.append(max((float((mine & (segments == s)).sum() / (mine | (segments == s)).sum())
                        for s in candidates if s >= 0), default=0.0))
    return out


def main() -> None:
    from find3d import Interface
    from find3d.mapping.fusion import DEFAULT_VOXEL
    from find3d.query.segments import SegmentParameters

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "find3d" / "assets" / "interface-cpu.pt")
    parser.add_argument("--keep", type=Path, default=None, help="keep the scenes here (and reuse them)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    interface = Interface.from_checkpoint(args.checkpoint, device="cpu")
    base = SegmentParameters(voxel=DEFAULT_VOXEL)
    rows: dict[str, dict[str, list[float]]] = {name: {"clutter": [], "separated": []} for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="bench_segments_") as tmp:
        work = args.keep or Path(tmp)
        for layout in ("clutter", "separated"):
            for seed in SEEDS:
                fused, labels, things = fused_scene(layout, seed, work, interface, args.checkpoint)
                for name, change in VARIANTS.items():
                    rows[name][layout] += best_ious(fused.segments(replace(base, **change)), labels, things)
    lines = ["# The 3D instance graph's parameters, one at a time", "",
             f"Command: `.venv/bin/python {' '.join(['bench/segment_parameters.py', *sys.argv[1:]])}`. "
             f"Interface `{args.checkpoint.name}`; the live map's instances (2 cm voxels) on `bench/instances.py`'s "
             f"clutter and separated layouts, calibration seeds {', '.join(map(str, SEEDS))}; per thing object the "
             "best IoU of one instance with it (module docstring). Machine: 2 CPU cores, load average at the end "
             f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}.", "",
             "| parameters | clutter: mean best IoU | clutter: whole (>= 0.5) | separated: mean best IoU "
             "| separated: whole |",
             "|---|---:|---:|---:|---:|"]
    for name, result in rows.items():
        cells = [f"{np.mean(result[layout]):.3f} | {np.mean(np.asarray(result[layout]) >= 0.5):.3f}"
                 for layout in ("clutter", "separated")]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    count = {layout: len(rows["default"][layout]) for layout in ("clutter", "separated")}
    lines += ["", f"Objects: {count['clutter']} in clutter, {count['separated']} separated."]
    report = "\n".join(lines) + "\n"
    print(report)
    args.out.write_text(report)


if __name__ == "__main__":
    main()
