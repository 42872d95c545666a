"""Benchmark: render 1,000 images at 256x256 with ``make_data`` (goal: under 10 minutes on 2 CPU cores).

Prints a markdown table, writes it to bench/results/make_data.md, and saves one image next to its
panoptic overlay as bench/results/make_data_example.png.

    python bench/make_data.py [--images 1000] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from find3d.data.engine.annotate import rgb2id
from find3d.data.engine.catalog import coco_categories
from find3d.data.make_data import make_data
from find3d.fileio import atomic_open, atomic_write_text, read_json

RESULTS = Path(__file__).parent / "results"
GOAL_S = 600.0


def overlay(out: Path, image_id: int) -> np.ndarray:
    """The image beside a blend of it with its panoptic segments in their category colours."""
    stem = f"{image_id:012d}"
    split = "train" if (out / "train2017" / f"{stem}.jpg").exists() else "val"
    rgb = np.asarray(Image.open(out / f"{split}2017" / f"{stem}.jpg")).astype(np.float32)
    ids = rgb2id(np.asarray(Image.open(out / "annotations" / f"panoptic_{split}2017" / f"{stem}.png")))
    colours = {c["id"]: c["color"] for c in coco_categories()}
    paint = np.zeros_like(rgb)
    for segment_id in np.unique(ids[ids > 0]):
        paint[ids == segment_id] = colours[int(segment_id) // 256]  # ids carry the category in the high bits
    edges = np.zeros(ids.shape, dtype=bool)
    edges[1:] |= ids[1:] != ids[:-1]
    edges[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    blend = np.where((ids > 0)[..., None], 0.45 * rgb + 0.55 * paint, rgb)
    blend[edges] = 255.0
    return np.concatenate([rgb, blend], axis=1).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "data"
        start = time.perf_counter()
        manifest = make_data(out, images=args.images, seed=args.seed, size=256, workers=args.workers)
        seconds = time.perf_counter() - start
        panoptic = read_json(out / "annotations" / "panoptic_train2017.json")
        segments = sum(len(a["segments_info"]) for a in panoptic["annotations"])
        RESULTS.mkdir(parents=True, exist_ok=True)
        with atomic_open(RESULTS / "make_data_example.png", "wb") as handle:
            Image.fromarray(overlay(out, 1)).save(handle, format="PNG")
    rate = args.images / seconds
    table = "\n".join([
        "| images | size | workers | total time (s) | images/s | train segments | goal (< 600 s) |",
        "|---:|---:|---:|---:|---:|---:|:---:|",
        f"| {args.images} | 256x256 | {args.workers} | {seconds:.1f} | {rate:.2f} | {segments} | "
        f"{'met' if seconds < GOAL_S * args.images / 1000 else 'missed'} |",
    ])
    # Shared machines: the load average says how much of the 2 cores the benchmark really had.
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores (load average at the end {load}), "
               f"pybullet TinyRenderer (CPU), seed {args.seed}")
    report = (f"# make-data benchmark\n\n{table}\n\nMachine: {machine}. Splits: {manifest['splits']}. "
              "Time includes rendering, JPEG/PNG encoding and writing every annotation file.\n")
    print(report)
    atomic_write_text(RESULTS / "make_data.md", report)


if __name__ == "__main__":
    main()
