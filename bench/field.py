"""3D pipeline benchmark: embed-frames and find-field speed, geometry, 3D queries vs the fusion baseline,
and query latency / memory against the number of exported points.

Run: ``.venv/bin/python bench/field.py [--checkpoint CKPT]`` (about 5 minutes on 2 CPU cores). Prints
markdown tables and writes them to ``bench/results/field.md``.

- Scene: ``make-scene`` seed 0, ``--views`` training + 4 held-out views at ``--size`` px.
- embed-frames: ``find3d.Interface`` of ``--checkpoint`` (default: the CPU interface run's last.pt),
  frames/s over the whole scene.
- find-field: ``ns-train find-field`` with its defaults (depth supervision on) for ``--iterations``;
  iterations/s from the wall times of the first and last logged training loss (start-up excluded).
- Geometry: median distance of the exported points (``--export-points``) to the ground-truth surfaces
  (every view's GT depth back-projected, floor and wall included).
- 3D queries: ``find3d eval-3d`` (protocol in ``find3d.query.eval_3d``), field vs fusion baseline.
- Query latency: random unit features in exports of 10k / 100k / 1M points (the interface's D, PCA
  code 32 as export-field writes by default), one query + 4 negatives, median of 5 after a warm-up;
  "mask" = relevancy + threshold, "+frames" adds ranking the scene's frames, "first" is the first
  "+frames" query of a loaded field, which also builds its per-frame visibility. Memory: extra resident
  memory at the query's peak (VmHWM reset through /proc/self/clear_refs, as bench/interface.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from memory import peak_extra_mib

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "field.md"
CHECKPOINT = ROOT / "outputs" / "interface-cpu" / "checkpoints" / "last.pt"
POINT_COUNTS = (10_000, 100_000, 1_000_000)


def embed(scene: Path, checkpoint: Path) -> float:
    """Frames per second of embed-frames over the scene (model load excluded)."""
    from find3d import Interface
    from find3d.field.embeddings import embed_frames, scene_frames

    interface = Interface.from_checkpoint(checkpoint)
    start = time.perf_counter()
    embed_frames(scene, interface, checkpoint=str(checkpoint.resolve()))
    return len(scene_frames(scene)) / (time.perf_counter() - start)


def train(scene: Path, runs: Path, iterations: int) -> tuple[Path, float]:
    """(config.yml, iterations/s) of a default ns-train find-field run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    command = [str(Path(sys.executable).parent / "ns-train"), "find-field", "--data", str(scene),
               "--max-num-iterations", str(iterations), "--vis", "tensorboard", "--output-dir", str(runs)]
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    config = next(runs.glob("*/find-field/*/config.yml"))
    events = EventAccumulator(str(config.parent))
    events.Reload()
    losses = events.Scalars("Train Loss")
    return config, (losses[-1].step - losses[0].step) / (losses[-1].wall_time - losses[0].wall_time)


def surface_distance(scene: Path, points: np.ndarray) -> float:
    from PIL import Image
    from scipy.spatial import cKDTree

    from find3d.data.make_scene import backproject
    from find3d.fileio import read_json

    transforms = read_json(scene / "transforms.json")
    surfaces = []
    for frame in transforms["frames"]:
        depth = np.asarray(Image.open(scene / frame["depth_file_path"])).astype(np.float64) / 1000.0
        xyz = backproject(depth, transforms["fl_x"], transforms["w"], np.asarray(frame["transform_matrix"]))
        surfaces.append(xyz[depth > 0])
    return float(np.median(cKDTree(np.concatenate(surfaces)).query(points)[0]))


def query_latency(work: Path, dim: int, frames: list[dict]) -> list[dict[str, float]]:
    """Latency and peak extra memory of one query per export size (module docstring)."""
    from find3d.field.export import write_export
    from find3d.query.field import Field

    rng = np.random.default_rng(0)
    rows = []
    for count in POINT_COUNTS:
        xyz = rng.uniform(-0.5, 0.5, (count, 3)).astype(np.float32) + np.array([0, 0, 0.6], np.float32)
        features = rng.normal(size=(count, dim)).astype(np.float32)
        root = work / f"points_{count}"
        write_export(root, xyz, np.zeros_like(xyz), features, rng.normal(size=(len(frames), dim)), frames)
        del features
        field = Field.load(root)
        query, negatives = rng.normal(size=dim), rng.normal(size=(4, dim))
        field.query(query, negatives, top_k_frames=0)  # page in the memory maps
        start = time.perf_counter()
        field.query(query, negatives, top_k_frames=3)  # builds the field's per-frame visibility once
        timings = {"first": (time.perf_counter() - start) * 1000}
        for name, top_k in (("mask", 0), ("+frames", 3)):
            runs = []
            for _ in range(5):
                start = time.perf_counter()
                field.query(query, negatives, top_k_frames=top_k)
                runs.append(time.perf_counter() - start)
            timings[name] = statistics.median(runs) * 1000
        memory = peak_extra_mib(lambda f=field, q=query, n=negatives: f.query(q, n, top_k_frames=0))
        rows.append({"points": count, "mask_ms": timings["mask"], "frames_ms": timings["+frames"],
                     "first_ms": timings["first"], "peak_extra_mib": memory, "frames": len(frames),
                     "threads": field.threads})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT, help="FIND interface checkpoint")
    parser.add_argument("--views", type=int, default=20)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--export-points", type=int, default=50_000)
    args = parser.parse_args()
    if not args.checkpoint.exists():
        sys.exit(f"{args.checkpoint}: no interface checkpoint; train one (find3d train-interface) or pass --checkpoint")
    from find3d.cli import main as cli
    from find3d.data.make_scene import make_scene
    from find3d.field.export import export_field
    from find3d.query.field import Field

    with tempfile.TemporaryDirectory(prefix="bench_field_") as tmp:
        work = Path(tmp)
        # A snapshot: a running training rotates its checkpoints (last.pt may point at a deleted step).
        checkpoint = work / "interface.pt"
        shutil.copyfile(args.checkpoint, checkpoint)
        scene = work / "scene"
        make_scene(scene, seed=0, views=args.views, heldout=4, size=args.size)
        frames_per_s = embed(scene, checkpoint)
        config, iterations_per_s = train(scene, work / "runs", args.iterations)
        export_field(config, work / "field", num_points=args.export_points)
        field = Field.load(work / "field")
        geometry = surface_distance(scene, field.points)
        if cli(["eval-3d", "--scene", str(scene), "--field", str(work / "field")]) != 0:
            sys.exit("eval-3d failed (see above)")
        results = json.loads((work / "field" / "eval_3d.json").read_text())
        latency = query_latency(work, field.dim, field.frames)
    report = format_report(args, frames_per_s, iterations_per_s, len(field), geometry, results, latency)
    print(report)
    RESULTS.write_text(report)


def format_report(args: argparse.Namespace, frames_per_s: float, iterations_per_s: float, points: int,
                  geometry: float, results: dict, latency: list[dict[str, float]]) -> str:
    from find3d.query.eval_3d import format_table

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        "# find-field benchmark", "",
        f"Scene: make-scene seed 0, {args.views} training + 4 held-out views, {args.size} px. Interface: "
        f"`{args.checkpoint}`. Machine: {os.cpu_count()} CPU cores (load average at the end {load}).", "",
        "| stage | result |", "|---|---:|",
        f"| embed-frames | {frames_per_s:.2f} frames/s |",
        f"| ns-train find-field ({args.iterations} it., defaults, depth supervision) | {iterations_per_s:.2f} it/s |",
        f"| exported points | {points} |",
        f"| median distance of exported points to GT surfaces | {geometry * 100:.1f} cm |", "",
        f"3D queries (eval-3d, threshold {results['threshold']}, match distance {results['match_distance']} m):", "",
        format_table(results), "",
        f"Query latency (one query + 4 negatives, PCA code 32, {latency[0]['threads']} thread(s), "
        f"{latency[0]['frames']} frames):", "",
        "| points | mask (ms) | mask + top-3 frames (ms) | first query of a loaded field, with frames (ms) "
        "| peak extra memory (MiB) |", "|---:|---:|---:|---:|---:|",
        *(f"| {r['points']:,} | {r['mask_ms']:.1f} | {r['frames_ms']:.1f} | {r['first_ms']:.1f} "
          f"| {r['peak_extra_mib']:.1f} |" for r in latency), "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
