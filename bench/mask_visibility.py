"""Do a field's 3D instances lose touching objects to the visibility test that gives its points their masks?

export-field lifts FIND's 2D masks onto the exported points through ``find3d.query.field.visible_points``: a
z-buffer of the points at ``ZBUFFER_STRIDE`` px, a point seen when within ``OCCLUSION_TOLERANCE`` (relative depth)
of its cell's nearest. At a metre, 5 % is 5 cm: a point of the object behind a touching one may take the front
object's mask and vote to join them. The live map's votes come from each pixel's own depth, so it has no such
test. This re-cuts the instances of fields ``bench/instances.py --keep DIR`` built, with the z-buffer's stride and
tolerance moved (and, for frames with depth, visibility from the frames' depth maps instead), and scores each
like ``bench/segment_parameters.py``: per ground-truth thing object, the best IoU of one instance with it.

Run: ``.venv/bin/python bench/mask_visibility.py --keep DIR [DIR ...]`` (a minute a scene on 2 CPU cores).
Writes ``bench/results/mask_visibility.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from segment_parameters import MATCH, best_ious

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "mask_visibility.md"
VARIANTS = ((4, 0.05), (4, 0.03), (4, 0.02), (4, 0.01), (4, 0.005), (6, 0.01))  # (stride px, tolerance)
DEPTH_TOLERANCE = (0.01, 0.01)  # m and relative: a point is where a frame's depth map reads it within the larger


@contextlib.contextmanager
def zbuffer(stride: int, tolerance: float) -> Iterator[None]:
    """``visible_points`` with another stride and tolerance for the duration (module constants it reads)."""
    import find3d.query.field as field_module

    saved = field_module.ZBUFFER_STRIDE, field_module.OCCLUSION_TOLERANCE
    field_module.ZBUFFER_STRIDE, field_module.OCCLUSION_TOLERANCE = stride, tolerance
    try:
        yield
    finally:
        field_module.ZBUFFER_STRIDE, field_module.OCCLUSION_TOLERANCE = saved


def depth_observations(points: np.ndarray, frames: list[dict[str, Any]], masks: Callable[[int], np.ndarray | None],
                       depth_files: dict[str, Path]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``mask_observations`` with visibility from each frame's depth map (millimetre PNG) instead of a z-buffer."""
    from find3d.query.field import frame_hit
    from find3d.query.render import project_points

    out = []
    for index, entry in enumerate(frames):
        ids = masks(index)
        if ids is None:
            continue
        hit = frame_hit(entry, index)
        uv, z = project_points(points, hit.c2w, hit.fx, hit.fy, hit.cx, hit.cy)
        depth = np.asarray(Image.open(depth_files[Path(entry["file_path"]).name]), np.float64) / 1000.0
        cols, rows = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
        inside = (z > 0) & (cols >= 0) & (cols < depth.shape[1]) & (rows >= 0) & (rows < depth.shape[0])
        reading = np.where(inside, depth[np.clip(rows, 0, depth.shape[0] - 1), np.clip(cols, 0, depth.shape[1] - 1)], 0)
        seen = np.flatnonzero(inside & (reading > 0) & (np.abs(reading - z) <= np.maximum(DEPTH_TOLERANCE[0],
                                                                                           DEPTH_TOLERANCE[1] * z)))
        scale = ids.shape[0] / depth.shape[0], ids.shape[1] / depth.shape[1]  # masks at the frame's own size
        out.append((seen, ids[(rows[seen] * scale[0]).astype(np.int64), (cols[seen] * scale[1]).astype(np.int64)]))
    return out


def scene_scores(folder: Path) -> dict[str, list[float]]:
    """Variant -> best IoU per thing object of one kept scene (``folder``: ``scene/`` and ``field/``)."""
    from scipy.spatial import cKDTree

    from find3d.field.embeddings import STORE_DIRNAME, EmbeddingStore
    from find3d.query.field import Field
    from find3d.query.segments import mask_observations, segment_points

    scene, field = folder / "scene", Field.load(folder / "field")
    points = np.asarray(field.points, np.float64)
    features = np.asarray(field.features, np.float32)
    colours = np.asarray(field.colors, np.float32)
    colours = colours / 255.0 if colours.max() > 1.5 else colours
    store = EmbeddingStore.open(scene / STORE_DIRNAME)
    transforms = json.loads((scene / "transforms.json").read_text())
    train = {Path(name).name for name in transforms["train_filenames"]}
    maps = [store.frame_segments(i) if Path(entry["file_path"]).name in train else None
            for i, entry in enumerate(field.frames)]
    truth = np.load(scene / "ground_truth" / "points.npz")
    objects = json.loads((scene / "ground_truth" / "objects.json").read_text())["objects"]
    things = [int(key) for key, entry in objects.items() if entry.get("isthing")]
    distance, nearest = cKDTree(truth["xyz"]).query(points)
    labels = np.where(distance <= MATCH, truth["object_id"][nearest], -2)

    def score(observations: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
        return best_ious(segment_points(points, features=features, observations=observations, colors=colours),
                         labels, things)

    out = {}
    for stride, tolerance in VARIANTS:
        with zbuffer(stride, tolerance):
            out[f"z-buffer {stride} px, {tolerance:g}"] = score(mask_observations(points, field.frames,
                                                                                    maps.__getitem__))
    depth_files = {Path(frame["file_path"]).name: scene / frame["depth_file_path"]
                   for frame in transforms["frames"] if frame.get("depth_file_path")}
    if all(Path(entry["file_path"]).name in depth_files for entry, ids in zip(field.frames, maps) if ids is not None):
        out["the frames' depth maps"] = score(depth_observations(points, field.frames, maps.__getitem__, depth_files))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", type=Path, nargs="+", required=True,
                        help="folders of `bench/instances.py --keep`: every LAYOUT_SEED[_SENSOR] with a field")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    groups: dict[str, dict[str, list[float]]] = {}
    for keep in args.keep:
        for folder in sorted(path.parent.parent for path in keep.glob("*/field/meta.json")):
            layout, _, *sensor = folder.name.split("_")
            group = f"{keep.name}: {'_'.join([layout, *sensor])}"
            for variant, scores in scene_scores(folder).items():
                groups.setdefault(group, {}).setdefault(variant, []).extend(scores)
            print(folder.name, "done", flush=True)
    lines = ["# Which points take a frame's mask: the field's instances against the visibility test", "",
             f"Command: `.venv/bin/python {' '.join(['bench/mask_visibility.py', *sys.argv[1:]])}`. Per thing object "
             "the best IoU of one instance with it, over the exported points within 1 cm of a ground-truth point, "
             "mean and share >= 0.5 ('whole'). Machine: 2 CPU cores, load average at the end "
             f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}.", ""]
    for group, variants in groups.items():
        count = len(next(iter(variants.values())))
        lines += [f"## {group} ({count} objects)", "", "| visibility | mean best IoU | whole |", "|---|---:|---:|"]
        lines += [f"| {name} | {np.mean(scores):.3f} | {np.mean(np.asarray(scores) >= 0.5):.3f} |"
                  for name, scores in variants.items()]
        lines.append("")
    report = "\n".join(lines)
    print(report)
    args.out.write_text(report)


if __name__ == "__main__":
    main()
