"""3D pipeline benchmark over several scenes: the stage table (where a 3D answer is lost), eval-3d's
goals (field vs fusion), embed-frames and find-field speed, geometry, and query latency / memory.

Run: ``.venv/bin/python bench/field.py [--checkpoint CKPT] [--seeds 101 102 103]`` (about 10 minutes
per seed on 2 shared CPU cores). Prints markdown tables and writes them to ``bench/results/field.md``
(raw numbers: ``bench/results/field.json``).

- Scenes: ``make-scene --repeat`` (a second instance of some categories) for each seed, ``--views``
  training + ``--heldout`` held-out views at ``--size`` px (default 256: the CPU interface's training
  resolution). The default seeds were never looked at while the pipeline was tuned (seed 0 was).
- Stage table, per category: (1) 2D per-pixel relevancy on the held-out views (``embed_pixels`` +
  ``encode_query``, the signal the field is trained on, objectness-weighted or plain mask mix,
  vocabulary or LERF negatives) and (2) ``Interface.ground`` masks of the same phrase, both as
  cumulative IoU against the views' instance masks; (3) the fusion baseline and (4) the field, as
  eval-3d's 3D IoU on GT points: whole 3D segments with vocabulary negatives (what ``Field.query``
  answers), with LERF's negatives, and single points (``--points``).
- embed-frames: ``find3d.Interface`` of ``--checkpoint`` (default: the CPU interface run's last.pt),
  frames/s over the whole scene.
- find-field: ``ns-train find-field`` with its defaults (depth supervision on) for ``--iterations``;
  iterations/s from the wall times of the first and last logged training loss (start-up excluded).
- Geometry: median distance of the exported points (``--export-points``) to the ground-truth surfaces
  (every view's GT depth back-projected, floor and wall included).
- 3D queries: ``find3d eval-3d`` (protocol in ``find3d.query.eval_3d``), field vs fusion baseline.
- Query latency: random unit features in exports of 10k / 100k / 1M points (the interface's D, PCA
  code 32 as export-field writes by default), one query + 4 negatives answered point by point (random
  points hold no objects to segment), median of 5 after a warm-up;
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
SEEDS = (101, 102, 103)  # development used seed 0 only


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
        field.query(query, negatives, top_k_frames=0, objects=False)  # page in the memory maps
        start = time.perf_counter()
        field.query(query, negatives, top_k_frames=3, objects=False)  # builds the field's per-frame visibility once
        timings = {"first": (time.perf_counter() - start) * 1000}
        for name, top_k in (("mask", 0), ("+frames", 3)):
            runs = []
            for _ in range(5):
                start = time.perf_counter()
                field.query(query, negatives, top_k_frames=top_k, objects=False)
                runs.append(time.perf_counter() - start)
            timings[name] = statistics.median(runs) * 1000
        memory = peak_extra_mib(lambda f=field, q=query, n=negatives: f.query(q, n, top_k_frames=0, objects=False))
        rows.append({"points": count, "mask_ms": timings["mask"], "frames_ms": timings["+frames"],
                     "first_ms": timings["first"], "peak_extra_mib": memory, "frames": len(frames),
                     "threads": field.threads})
    return rows


def stage_2d(scene: Path, interface, categories: dict[str, list[int]], canonical: np.ndarray) -> dict[str, dict]:
    """Stages 1-2 on the scene's held-out views: cumulative IoU (sum I / sum U over the views) per category.

    ``pixel <mix> / <negatives>``: the per-pixel relevancy ``embed_pixels`` + ``encode_query`` (what the
    field is trained on and scored with), thresholded at 0.5, nearest-upsampled to the frame, with the
    objectness-weighted or plain mask mix and vocabulary or LERF negatives; ``ground``:
    ``Interface.ground`` of the same phrase (the interface's own masks).
    """
    import torch
    from PIL import Image

    from find3d.fileio import read_json
    from find3d.query.field import TEMPERATURE, encode, encode_negatives

    transforms = read_json(scene / "transforms.json")
    frames = {f["file_path"]: f for f in transforms["frames"]}
    sums: dict[str, dict[str, list[float]]] = {}
    for path in transforms["val_filenames"]:
        image = np.asarray(Image.open(scene / path).convert("RGB"))
        instances = np.asarray(Image.open(scene / frames[path]["instance_path"]))
        pixels = {mix: interface.embed_pixels(image, confidence=mix == "objectness").features.numpy()
                  for mix in ("objectness", "plain")}
        for category, ids in categories.items():
            truth = np.isin(instances, ids)
            query = encode(interface, f"the {category}")
            variants = {}
            for mix, feats in pixels.items():
                for name, negatives in (("vocabulary", encode_negatives(interface, None, query_vector=query)),
                                        ("LERF", canonical)):
                    s_pos = feats @ query
                    s_neg = (feats @ negatives.T).max(-1) if negatives is not None else -np.inf
                    relevancy = 1 / (1 + np.exp(-TEMPERATURE * (s_pos - s_neg)))
                    variants[f"pixel {mix} / {name}"] = _upsample(relevancy >= 0.5, truth.shape)
            with torch.no_grad():
                variants["ground"] = interface.ground(image, [f"the {category}"]).masks[0]
            for name, mask in variants.items():
                cell = sums.setdefault(name, {}).setdefault(category, [0.0, 0.0])
                cell[0] += float(np.logical_and(mask, truth).sum())
                cell[1] += float(np.logical_or(mask, truth).sum())
    return {name: {c: (i / u if u else 0.0) for c, (i, u) in per.items()} for name, per in sums.items()}


def _upsample(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    rows = (np.arange(shape[0]) * mask.shape[0] // shape[0])
    cols = (np.arange(shape[1]) * mask.shape[1] // shape[1])
    return mask[rows][:, cols]


def run_seed(args: argparse.Namespace, seed: int, checkpoint: Path, work: Path) -> dict:
    """One scene: embed, stages 1-2, field, eval-3d (field + fusion: segments with vocabulary and LERF negatives,
    points with vocabulary negatives)."""
    from find3d import Interface
    from find3d.cli import main as cli
    from find3d.data.make_scene import make_scene
    from find3d.field.export import export_field
    from find3d.query.eval_3d import Scene
    from find3d.query.field import CANONICAL_NEGATIVES, Field, encode

    scene = work / f"scene_{seed}"
    make_scene(scene, seed=seed, views=args.views, heldout=args.heldout, size=args.size, repeat=True, close=True)
    frames_per_s = embed(scene, checkpoint)
    interface = Interface.from_checkpoint(checkpoint, device="cpu")
    categories = Scene.load(scene).categories()
    canonical = np.stack([encode(interface, p) for p in CANONICAL_NEGATIVES])
    stages = stage_2d(scene, interface, categories, canonical)
    config, iterations_per_s = train(scene, work / f"runs_{seed}", args.iterations)
    field_dir = work / f"field_{seed}"
    export_field(config, field_dir, num_points=args.export_points, downscale=args.export_downscale)
    field = Field.load(field_dir)
    geometry = surface_distance(scene, field.points)
    evals = {}
    for name, extra in (("vocabulary", []), ("LERF", ["--canonical-negatives"]), ("points", ["--points"])):
        out = work / f"eval_{seed}_{name}"
        if cli(["eval-3d", "--scene", str(scene), "--field", str(field_dir), "--out", str(out), *extra]) != 0:
            sys.exit("eval-3d failed (see above)")
        evals[name] = json.loads((out / "eval_3d.json").read_text())
    return {"seed": seed, "frames_per_s": frames_per_s, "iterations_per_s": iterations_per_s,
            "points": len(field), "geometry": geometry, "stages": stages, "eval": evals,
            "field": field, "categories": sorted(categories)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT, help="FIND interface checkpoint")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                        help="make-scene seeds (default: ones the pipeline was never tuned on)")
    parser.add_argument("--views", type=int, default=24)
    parser.add_argument("--heldout", type=int, default=6)
    parser.add_argument("--size", type=int, default=256, help="px: the interface's training resolution")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--export-points", type=int, default=50_000)
    parser.add_argument("--export-downscale", type=int, default=2,
                        help="render the training views at 1/N of their size for the export (256 px views at "
                             "full size cost 7x the rays of 96 px ones)")
    parser.add_argument("--no-latency", action="store_true", help="skip the synthetic query latency table")
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown report (default bench/results/field.md)")
    parser.add_argument("--json-out", type=Path, default=RESULTS.with_suffix(".json"), help="raw numbers")
    args = parser.parse_args()
    if not args.checkpoint.exists():
        sys.exit(f"{args.checkpoint}: no interface checkpoint; train one (find3d train-interface) or pass --checkpoint")
    with tempfile.TemporaryDirectory(prefix="bench_field_") as tmp:
        work = Path(tmp)
        # A snapshot: a running training rotates its checkpoints (last.pt may point at a deleted step).
        checkpoint = work / "interface.pt"
        shutil.copyfile(args.checkpoint, checkpoint)
        runs, field = [], None
        for seed in args.seeds:
            runs.append(run_seed(args, seed, checkpoint, work))
            field = runs[-1].pop("field")
            # after every seed: a run cut short still leaves the seeds it finished
            args.json_out.write_text(json.dumps(runs, indent=1, default=float))
            args.out.write_text(format_report(args, runs, []))
        latency = [] if args.no_latency else query_latency(work, field.dim, field.frames)
    report = format_report(args, runs, latency)
    print(report)
    args.out.write_text(report)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def format_report(args: argparse.Namespace, runs: list[dict], latency: list[dict[str, float]]) -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    seeds = ", ".join(str(r["seed"]) for r in runs)
    lines = [
        "# find-field benchmark", "",
        f"Scenes: `make-scene --repeat --close` seeds {seeds} (never used while tuning), {args.views} training + "
        f"{args.heldout} held-out views at {args.size} px. Interface: `{args.checkpoint}`. Machine: "
        f"{os.cpu_count()} CPU cores (load average at the end {load}). Command: `.venv/bin/python bench/field.py`.",
        "",
        "| stage | " + " | ".join(f"seed {r['seed']}" for r in runs) + " |", "|---|" + "---:|" * len(runs),
        "| embed-frames (frames/s) | " + " | ".join(f"{r['frames_per_s']:.2f}" for r in runs) + " |",
        f"| ns-train find-field, {args.iterations} it. (it/s) | "
        + " | ".join(f"{r['iterations_per_s']:.2f}" for r in runs) + " |",
        "| exported points | " + " | ".join(str(r["points"]) for r in runs) + " |",
        "| median distance to GT surfaces (cm) | " + " | ".join(f"{r['geometry'] * 100:.1f}" for r in runs) + " |",
        "",
    ]
    lines += _stage_table(runs)
    lines += _metric_table(runs)
    if latency:
        lines += [
            f"Query latency (synthetic features: one query + 4 negatives, PCA code 32, {latency[0]['threads']} "
            f"thread(s), {latency[0]['frames']} frames):", "",
            "| points | mask (ms) | mask + top-3 frames (ms) | first query of a loaded field, with frames (ms) "
            "| peak extra memory (MiB) |", "|---:|---:|---:|---:|---:|",
            *(f"| {r['points']:,} | {r['mask_ms']:.1f} | {r['frames_ms']:.1f} | {r['first_ms']:.1f} "
              f"| {r['peak_extra_mib']:.1f} |" for r in latency), "",
        ]
    return "\n".join(lines)


def _stage_table(runs: list[dict]) -> list[str]:
    """Stage 1-4 IoU per category (mean over the seeds that have it) and the mean over categories."""
    categories = sorted({c for r in runs for c in r["categories"]})
    columns = [*runs[0]["stages"], "fusion / points", "field / points", "fusion / LERF", "field / LERF", "fusion",
               "field"]

    def value(run: dict, column: str, category: str) -> float | None:
        if column in run["stages"]:
            return run["stages"][column].get(category)
        method, negatives = column.split(" / ") if " / " in column else (column, "vocabulary")
        key = "fusion_baseline" if method == "fusion" else "field"
        row = run["eval"][negatives][key]["per_category"].get(category)
        return None if row is None else row["iou"]

    lines = ["Stage table: IoU per category, 2D on the held-out views (cumulative over views; stages 1-2) and "
             "3D on GT points (stages 3-4, mean of 'the X' and a synonym), mean over the seeds where the "
             "category occurs. 3D selection: whole segments (default) or single points (`/ points`); "
             "negatives: vocabulary (default) or LERF's canonical four.", "",
             "| category | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    means = {c: [] for c in columns}
    for category in categories:
        cells = []
        for column in columns:
            values = [v for r in runs if (v := value(r, column, category)) is not None]
            cells.append(f"{_mean(values):.3f}" if values else "")
            if values:
                means[column].append(_mean(values))
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{_mean(means[c]):.3f}**" for c in columns) + " |")
    return [*lines, ""]


def _metric_table(runs: list[dict]) -> list[str]:
    from find3d.query.eval_3d import TARGET_METRICS, target_summaries

    keys = [("miou", "3D mIoU"), ("min_iou", "lowest category IoU"), ("localisation_accuracy", "localisation"),
            ("frame_top1", "frame top-1 (visibility)"), ("frame_top5", "frame top-5 (visibility)"),
            ("frame_retrieval_top1", "frame top-1 (retrieval)"), ("frame_retrieval_top5", "frame top-5 (retrieval)"),
            ("frame_combined_top1", "frame top-1 (combined)"), ("frame_combined_top5", "frame top-5 (combined)")]
    lines = ["Goals (eval-3d, vocabulary negatives, threshold 0.5; per seed and the mean):", "",
             "| metric | method | " + " | ".join(f"seed {r['seed']}" for r in runs) + " | mean |",
             "|---|---|" + "---:|" * (len(runs) + 1)]
    methods = (("field", "find-field"), ("fusion_baseline", "fusion"))
    for key, label in keys:
        for method, name in methods:
            values = [r["eval"]["vocabulary"][method].get(key) for r in runs]
            if any(v is None for v in values):
                continue
            cells = " | ".join(f"{v:.3f}" for v in values)
            lines.append(f"| {label} | {name} | {cells} | {_mean(values):.3f} |")
    summaries = {m: [target_summaries(r["eval"]["vocabulary"][m]) for r in runs] for m, _ in methods}
    for metric, (_, _, label) in enumerate(TARGET_METRICS):
        for method, name in methods:
            rows = [per_run[metric] for per_run in summaries[method]]
            cells = [f"{v:.3f} ({n})" if v is not None else "- (0)" for _, v, n in rows]
            lines.append(f"| {label} (queries) | {name} | " + " | ".join(cells)
                         + f" | {_mean([v for _, v, _ in rows if v is not None]):.3f} |")
    return [*lines, ""]


if __name__ == "__main__":
    main()
