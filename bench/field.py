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
- Sensors (``--sensors ideal rgbd rgb``): the same seeds' scenes as each camera delivers them
  (``make-scene --sensor``; ``rgb`` with ``--rgb-views`` views and ``--rgb-iterations``, as a phone
  video gives), each embedded, trained, exported and scored by eval-3d (vocabulary negatives): field
  and fusion side by side per seed, the time of every stage, and the exported geometry against the
  GT points (median distance of the export's points near the table, share over 2 cm: flying pixels,
  floaters). Written to ``bench/results/field_sensors.md`` instead of the tables above.
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


def train(scene: Path, runs: Path, iterations: int, extra: list[str] | None = None) -> tuple[Path, float]:
    """(config.yml, iterations/s) of a default ns-train find-field run (``extra``: more ns-train options)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    command = [str(Path(sys.executable).parent / "ns-train"), "find-field", "--data", str(scene),
               "--max-num-iterations", str(iterations), "--vis", "tensorboard", "--output-dir", str(runs),
               *(extra or [])]
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


def gt_geometry(scene: Path, points: np.ndarray) -> dict[str, float]:
    """Exported points on and above the table top, inside the GT points' box + 2 cm (so floor and wall
    fall out: GT points cover things and the table only): median distance to the nearest GT point and
    the share farther than 2 cm (flying pixels, floaters)."""
    from scipy.spatial import cKDTree

    from find3d.data.engine.catalog import TABLE_TOP_Z

    gt = np.load(scene / "ground_truth" / "points.npz")["xyz"]
    near = np.all((points >= gt.min(axis=0) - 0.02) & (points <= gt.max(axis=0) + 0.02), axis=1)
    near &= points[:, 2] >= TABLE_TOP_Z - 0.02
    distance = cKDTree(gt).query(points[near])[0]
    return {"median_cm": float(np.median(distance) * 100), "over_2cm": float((distance > 0.02).mean())}


def run_sensor(args: argparse.Namespace, seed: int, sensor: str, checkpoint: Path, work: Path) -> dict:
    """One seed as ``sensor`` delivers it: make-scene, embed-frames, ns-train, export-field, eval-3d, timed."""
    from find3d.cli import main as cli
    from find3d.data.make_scene import make_scene
    from find3d.errors import Find3dError
    from find3d.field.export import export_field
    from find3d.query.field import Field

    phone = sensor == "rgb"
    views, iterations = (args.rgb_views, args.rgb_iterations) if phone else (args.views, args.iterations)
    scene, times = work / f"scene_{seed}_{sensor}", {}
    make_scene(scene, seed=seed, views=views, heldout=args.heldout, size=args.size, repeat=True, close=True,
               sensor=sensor)
    start = time.perf_counter()
    embed(scene, checkpoint)
    times["embed-frames"] = time.perf_counter() - start
    start = time.perf_counter()
    config, iterations_per_s = train(scene, work / f"runs_{seed}_{sensor}", iterations)
    times["ns-train"] = time.perf_counter() - start
    field_dir = work / f"field_{seed}_{sensor}"
    start = time.perf_counter()
    try:
        export_field(config, field_dir, num_points=args.export_points, downscale=args.export_downscale)
    except Find3dError as err:  # a field with no surface yet is a result too: the row says so
        print(f"seed {seed} {sensor}: {err}", file=sys.stderr)
        return {"seed": seed, "sensor": sensor, "views": views, "iterations": iterations, "failed": str(err)}
    times["export-field"] = time.perf_counter() - start
    out = work / f"eval_{seed}_{sensor}"
    start = time.perf_counter()
    if cli(["eval-3d", "--scene", str(scene), "--field", str(field_dir), "--out", str(out)]) != 0:
        sys.exit("eval-3d failed (see above)")
    times["eval-3d"] = time.perf_counter() - start
    return {"seed": seed, "sensor": sensor, "views": views, "iterations": iterations,
            "iterations_per_s": iterations_per_s, "times": times,
            "geometry": gt_geometry(scene, Field.load(field_dir).points),
            "eval": json.loads((out / "eval_3d.json").read_text())}


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
    parser.add_argument("--sensors", nargs="+", choices=("ideal", "rgbd", "rgb"), default=None,
                        help="compare cameras (make-scene --sensor) instead: writes bench/results/field_sensors.md")
    parser.add_argument("--rgb-views", type=int, default=60, help="training views of the rgb (phone) scenes")
    parser.add_argument("--rgb-iterations", type=int, default=2000, help="find-field iterations on rgb scenes")
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown report (default bench/results/field.md)")
    parser.add_argument("--json-out", type=Path, default=RESULTS.with_suffix(".json"), help="raw numbers")
    args = parser.parse_args()
    if not args.checkpoint.exists():
        sys.exit(f"{args.checkpoint}: no interface checkpoint; train one (find3d train-interface) or pass --checkpoint")
    if args.sensors:
        sensors_main(args)
        return
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


def sensors_main(args: argparse.Namespace) -> None:
    """``--sensors``: every seed as every camera delivers it (module docstring)."""
    out = RESULTS.with_name("field_sensors.md") if args.out == RESULTS else args.out
    json_out = out.with_suffix(".json")
    with tempfile.TemporaryDirectory(prefix="bench_field_sensors_") as tmp:
        checkpoint = Path(tmp) / "interface.pt"
        shutil.copyfile(args.checkpoint, checkpoint)
        runs = []
        for seed in args.seeds:
            for sensor in args.sensors:
                runs.append(run_sensor(args, seed, sensor, checkpoint, Path(tmp)))
                json_out.write_text(json.dumps(runs, indent=1, default=float))
                out.write_text(format_sensors(args, runs))  # after every run: a cut-short run keeps its rows
    print(format_sensors(args, runs))


SENSOR_METRICS = (("miou", "3D mIoU"), ("min_iou", "lowest category IoU"), ("localisation_accuracy", "localisation"),
                  ("frame_top1", "frame top-1"), ("max_selected_ratio", "largest selection / its object"))


def format_sensors(args: argparse.Namespace, runs: list[dict]) -> str:
    """Per seed and in the mean: each sensor's field and fusion metrics side by side, stage times, geometry."""
    sensors = list(dict.fromkeys(r["sensor"] for r in runs))
    seeds = list(dict.fromkeys(r["seed"] for r in runs))
    failed = [r for r in runs if "failed" in r]
    by = {(r["seed"], r["sensor"]): r for r in runs if "failed" not in r}
    columns = [(sensor, method) for sensor in sensors for method in ("field", "fusion_baseline")]
    header = "| metric | seed | " + " | ".join(f"{s} {'field' if m == 'field' else 'fusion'}" for s, m in columns)
    lines = ["# find-field on real cameras: ideal / RGB-D / phone (no depth)", "",
             f"Command: `.venv/bin/python bench/field.py {' '.join(sys.argv[1:])}`.", "",
             f"Scenes: `make-scene --repeat --close --sensor S`, seeds {', '.join(map(str, seeds))}, "
             f"{args.size} px; ideal / rgbd: {args.views} training views, {args.iterations} iterations; rgb: "
             f"{args.rgb_views} views, {args.rgb_iterations} iterations; {args.heldout} held-out views; export "
             f"{args.export_points} points at 1/{args.export_downscale} resolution. Machine: {os.cpu_count()} CPU "
             f"cores, load average at the end {', '.join(f'{x:.1f}' for x in os.getloadavg())}.", "",
             header + " |", "|---|---|" + "---:|" * len(columns)]
    for key, label in SENSOR_METRICS:
        for seed in [*seeds, "mean"]:
            cells = []
            for sensor, method in columns:
                values = [by[(s, sensor)]["eval"][method].get(key) for s in (seeds if seed == "mean" else [seed])
                          if (s, sensor) in by]
                values = [v for v in values if v is not None]
                cells.append(f"{_mean(values):.3f}" if values else "")
            lines.append(f"| {label} | {seed} | " + " | ".join(cells) + " |")
    from find3d.query.eval_3d import target_summaries

    for seed in [*seeds, "mean"]:
        cells = []
        for sensor, method in columns:
            values = [target_summaries(by[(s, sensor)]["eval"][method])[0][1]
                      for s in (seeds if seed == "mean" else [seed]) if (s, sensor) in by]
            values = [v for v in values if v is not None]
            cells.append(f"{_mean(values):.3f}" if values else "")
        lines.append(f"| interleaved target IoU | {seed} | " + " | ".join(cells) + " |")
    stages = ("embed-frames", "ns-train", "export-field", "eval-3d")
    lines += ["", "Time per stage (s; mean over the seeds) and exported geometry near the table (GT points):", "",
              "| sensor | views | iterations | " + " | ".join(stages)
              + " | it/s | points to GT, median (cm) | points > 2 cm from GT |", "|---|---:|---:|" + "---:|" * 7]
    for sensor in sensors:
        rows = [r for r in runs if r["sensor"] == sensor and "failed" not in r]
        if not rows:
            continue
        lines.append(f"| {sensor} | {rows[0]['views']} | {rows[0]['iterations']} | "
                     + " | ".join(f"{_mean([r['times'][s] for r in rows]):.0f}" for s in stages)
                     + f" | {_mean([r['iterations_per_s'] for r in rows]):.2f}"
                     + f" | {_mean([r['geometry']['median_cm'] for r in rows]):.2f}"
                     + f" | {_mean([r['geometry']['over_2cm'] for r in rows]):.3f} |")
    lines += [f"- seed {r['seed']} {r['sensor']}: no export ({r['failed']})" for r in failed]
    return "\n".join([*lines, ""])


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
