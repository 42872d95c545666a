"""3D instances in clutter and "not found": eval-3d on touching, separated and far-orbit tables, field and
fusion side by side, and what building the instances costs.

Run: ``.venv/bin/python bench/instances.py [--checkpoint CKPT]`` (each scene embeds, trains ``--iterations``
of find-field, exports and runs eval-3d twice: about 4 minutes a scene on 2 idle CPU cores). Prints
markdown tables and writes them to ``bench/results/instances.md`` (raw numbers: ``instances.json``).
``--fusion-only`` evaluates the fusion map alone on every layout (~15 s a scene): enough to compare two
interfaces' instances (``interface_clutter_finetune.md``).

- Layouts, each on seeds the instance code and the acceptance were never tuned or calibrated on (tuning
  used seeds 0-3, calibration 201-203):
  ``clutter`` = ``make-scene --clutter --repeat --close`` seeds 111-113 (objects touching, leaning, stacked);
  ``separated`` = ``make-scene --repeat --close`` seeds 101-103 (``bench/field.py``'s scenes);
  ``orbit`` = plain ``make-scene`` seeds 101-103 (one orbit at 1.1 m, where a robot stands; the live
  map's case, so only the fusion map is evaluated there: no field is trained).
- eval-3d (``find3d.query.eval_3d``) with whole-object answers, and again with ``--points``: 3D mIoU,
  lowest category, localisation, interleaved target IoU, class-agnostic and per-category instance AP50,
  absent objects answered "not found", present objects found.
- Cost: wall time of embed-frames, ns-train find-field and export-field, and of the instance stage inside
  them: the panoptic inference ``embed_pixels`` adds per frame (``Interface._panoptic`` on the same outputs,
  timed apart) and the lifting in export-field (``mask_observations`` + ``segment_points``, timed apart on
  the exported points).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from field import train  # bench/field.py: one default ns-train find-field run

from find3d.query.field import ACCEPTANCE

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "instances.md"
LAYOUTS = {"orbit": ((101, 102, 103), {}),
           "clutter": ((111, 112, 113), {"clutter": True, "repeat": True, "close": True}),
           "separated": ((101, 102, 103), {"repeat": True, "close": True})}
FUSION_ONLY = {"orbit"}  # the live map's layout: no field is trained
ROWS = (("miou", "3D mIoU"), ("wording0", "3D mIoU, class names only"), ("wording1", "3D mIoU, other wordings only"),
        ("min_iou", "lowest category IoU"), ("localisation_accuracy", "localisation"),
        ("interleaved", "interleaved target IoU"), ("ap50_agnostic", "instance AP50, class-agnostic"),
        ("ap50_mean_category", "instance AP50, per category"), ("ap25_agnostic", "instance AP25, class-agnostic"),
        ("absent", "absent objects answered 'not found'"), ("present_found_share", "present objects found"))


def fusion_only_layout(args: argparse.Namespace, layout: str) -> bool:
    """True when ``layout`` is evaluated on the fusion map alone (always for the orbit, for all with --fusion-only)."""
    return args.fusion_only or layout in FUSION_ONLY


def panoptic_seconds(interface: Any, scene: Path, frames: list[str]) -> float:
    """Seconds the panoptic inference adds to embedding ``frames`` (the rest of embed_pixels is unchanged)."""
    from find3d.data.samples import Sample
    from find3d.fileio import load_image

    total = 0.0
    for path in frames:
        prepared = interface._prepare(load_image(scene / path))
        generic = interface._run([Sample("query", prepared.canvas)], ["generic", "retrieval"])["generic"]
        start = time.perf_counter()
        interface._panoptic(generic, prepared, interface.class_names, interface.isthing)
        total += time.perf_counter() - start
    return total


def lifting_seconds(field_dir: Path, scene: Path) -> float:
    """Seconds export-field spends on the instances: the frames' mask votes and the cut, on the exported points."""
    from find3d.field.embeddings import STORE_DIRNAME, EmbeddingStore
    from find3d.fileio import read_json
    from find3d.query.field import Field
    from find3d.query.segments import mask_observations, segment_points

    field = Field.load(field_dir)
    store = EmbeddingStore.open(scene / STORE_DIRNAME)
    train_frames = set(read_json(scene / "transforms.json")["train_filenames"])
    maps = [store.frame_segments(i) if frame["file_path"] in train_frames else None
            for i, frame in enumerate(field.frames)]
    features = np.asarray(field.features, np.float32)
    start = time.perf_counter()
    segment_points(field.points, features=features, observations=mask_observations(field.points, field.frames,
                                                                                  maps.__getitem__),
                   colors=field.colors)
    return time.perf_counter() - start


def run_scene(args: argparse.Namespace, layout: str, seed: int, work: Path) -> dict[str, Any]:
    from find3d import Interface
    from find3d.cli import main as cli

    folder = work / (f"{layout}_{seed}" if args.sensor == "ideal" else f"{layout}_{seed}_{args.sensor}")
    scene, field_dir = folder / "scene", folder / "field"
    interface = Interface.from_checkpoint(args.checkpoint, device="cpu")
    kept = scene.parent / "times.json"
    if kept.is_file() and (field_dir / "meta.json").is_file() == (not fusion_only_layout(args, layout)):
        times = json.loads(kept.read_text())  # --keep: built by an earlier run; only evaluated again
    else:
        times = build(args, layout, seed, scene, field_dir, interface)
        kept.write_text(json.dumps(times))
    if fusion_only_layout(args, layout):
        return {"layout": layout, "seed": seed, "times": {},
                "eval": fusion_only(scene, interface, scene.parent, args.acceptance)}
    evals = {}
    for name, extra in (("objects", ["--acceptance", str(args.acceptance)]), ("points", ["--points"])):
        out = scene.parent / f"eval_{name}"
        if cli(["eval-3d", "--scene", str(scene), "--field", str(field_dir), "--out", str(out), *extra]) != 0:
            sys.exit("eval-3d failed (see above)")
        evals[name] = json.loads((out / "eval_3d.json").read_text())
    return {"layout": layout, "seed": seed, "times": times, "eval": evals}


def build(args: argparse.Namespace, layout: str, seed: int, scene: Path, field_dir: Path,
          interface: Any) -> dict[str, float]:
    """Make, embed, train and export one scene (only make and embed for a fusion-only layout); their seconds."""
    from find3d.data.make_scene import make_scene
    from find3d.field.embeddings import embed_frames
    from find3d.field.export import export_field

    make_scene(scene, seed=seed, views=args.views, heldout=args.heldout, overwrite=True, sensor=args.sensor,
               **LAYOUTS[layout][1])
    times = {}
    start = time.perf_counter()
    embed_frames(scene, interface, checkpoint=str(args.checkpoint.resolve()))
    times["embed"] = time.perf_counter() - start
    if fusion_only_layout(args, layout):
        return times
    start = time.perf_counter()
    config, _ = train(scene, scene.parent / "runs", args.iterations)
    times["train"] = time.perf_counter() - start
    start = time.perf_counter()
    export_field(config, field_dir)
    times["export"] = time.perf_counter() - start
    frames = [f["file_path"] for f in json.loads((scene / "transforms.json").read_text())["frames"]]
    times["panoptic"] = panoptic_seconds(interface, scene, frames)
    times["lifting"] = lifting_seconds(field_dir, scene)
    return times


def fusion_only(scene_dir: Path, interface: Any, work: Path, acceptance: float) -> dict[str, dict[str, Any]]:
    """eval-3d's reports of the fusion map alone (whole objects and per point), as ``run_scene``'s ``eval``."""
    from types import SimpleNamespace

    from find3d.field.embeddings import STORE_DIRNAME, EmbeddingStore
    from find3d.field.export import scene_cameras
    from find3d.query import eval_3d

    scene = eval_3d.Scene.load(scene_dir)
    store = EmbeddingStore.open(scene_dir / STORE_DIRNAME)
    fused = eval_3d.fusion_baseline(scene, SimpleNamespace(frames=scene_cameras(scene_dir, store.meta.frames)),
                                    work / "fusion")
    embeddings, retrieval = eval_3d.query_embeddings(interface, scene)
    match = eval_3d.nearest_match(fused.points, scene.gt_xyz, eval_3d.MATCH_DISTANCE)
    interleaved = eval_3d.interleaved_queries(scene)
    out = {}
    for selection in ("objects", "points"):
        report = eval_3d.evaluate(fused, scene, embeddings, 0.5, eval_3d.MATCH_DISTANCE, retrieval,
                                  objects=selection == "objects", acceptance=acceptance)
        report["interleaved"] = eval_3d.evaluate_targets(fused, scene, interface, interleaved, 0.5,
                                                         eval_3d.MATCH_DISTANCE, objects=selection == "objects",
                                                         acceptance=acceptance)
        if selection == "objects":
            report["instances"] = eval_3d.instance_ap(fused, scene, interface, match)
            report["absent"] = eval_3d.evaluate_absent(fused, interface, eval_3d.absent_queries(scene, interface), 0.5,
                                                       acceptance)
        out[selection] = {"fusion_baseline": report}
    return out


def metric(report: dict[str, Any], key: str) -> float | None:
    """One row's number from one method's eval-3d report."""
    if key == "interleaved":
        return report.get("interleaved", {}).get("target_iou")
    if key == "absent":
        return report.get("absent", {}).get("not_found_share")
    if key.startswith("wording"):  # eval-3d's miou_per_wording: "the <category>", then PHRASINGS' other wording
        wordings = report.get("miou_per_wording", [])
        return wordings[int(key[len("wording"):])] if len(wordings) > int(key[len("wording"):]) else None
    if key in report:
        return report[key]
    return report.get("instances", {}).get(key)


def format_report(args: argparse.Namespace, runs: list[dict[str, Any]]) -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    field = "no find-field (fusion only)" if args.fusion_only else f"find-field {args.iterations} iterations"
    command = " ".join(["bench/instances.py", *sys.argv[1:]])
    lines = ["# 3D instances in clutter, and \"not found\"", "",
             f"Interface: `{args.checkpoint.name}`; {args.views} training + {args.heldout} held-out views at 256 px; "
             f"{field}; eval-3d at threshold 0.5, acceptance {args.acceptance}. Machine: "
             f"{os.cpu_count()} CPU cores, torch on {os.environ.get('OMP_NUM_THREADS', 'all')} thread(s) (load "
             f"average at the end {load}). Command: `.venv/bin/python {command}`. Layouts and seeds: "
             "module docstring of bench/instances.py.", ""]
    for layout in LAYOUTS:
        chosen = [r for r in runs if r["layout"] == layout]
        if not chosen:
            continue
        lines += [f"## {layout}", "", "| metric | method | " + " | ".join(f"seed {r['seed']}" for r in chosen)
                  + " | mean |", "|---|---|" + "---:|" * (len(chosen) + 1)]
        for key, label in ROWS:
            for selection in ("objects", "points"):
                for method, name in (("field", "find-field"), ("fusion_baseline", "fusion")):
                    if method not in chosen[0]["eval"][selection]:
                        continue
                    values = [metric(r["eval"][selection][method], key) for r in chosen]
                    if selection == "points" and key not in ("miou", "min_iou", "localisation_accuracy"):
                        continue
                    cells = " | ".join("-" if v is None else f"{v:.3f}" for v in values)
                    known = [v for v in values if v is not None]
                    mean = f"{np.mean(known):.3f}" if known else "-"
                    suffix = " (per point)" if selection == "points" else ""
                    lines.append(f"| {label}{suffix} | {name} | {cells} | {mean} |")
        lines.append("")
    if any(r["times"] for r in runs):  # fusion-only scenes train no field: nothing to cost
        lines += ["## Cost of the instances", "",
                  "| scene | embed-frames (s) | of it panoptic (s) | find-field (s) | export-field (s) | of it "
                  "instances (s) | instances / total |", "|---|---:|---:|---:|---:|---:|---:|"]
        for r in runs:
            t = r["times"]
            if not t:
                continue
            total = t["embed"] + t["train"] + t["export"]
            lines.append(f"| {r['layout']} {r['seed']} | {t['embed']:.1f} | {t['panoptic']:.1f} | {t['train']:.1f} | "
                         f"{t['export']:.1f} | {t['lifting']:.1f} | {(t['panoptic'] + t['lifting']) / total:.1%} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "find3d" / "assets" / "interface-cpu.pt")
    parser.add_argument("--layouts", nargs="+", choices=list(LAYOUTS), default=list(LAYOUTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="these make-scene seeds for every layout instead of the layouts' own (e.g. the "
                             "calibration seeds 201 202 203, for a study that must not tune on the benchmark's)")
    parser.add_argument("--sensor", choices=("ideal", "rgbd", "rgb"), default="ideal", help="make-scene --sensor")
    parser.add_argument("--views", type=int, default=20)
    parser.add_argument("--heldout", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=800)
    parser.add_argument("--fusion-only", action="store_true",
                        help="evaluate the live map's fusion alone on every layout: no find-field is trained, so a "
                             "scene takes ~15 s (to compare interfaces on their 2D masks' 3D instances)")
    parser.add_argument("--acceptance", type=float, default=ACCEPTANCE,
                        help="eval-3d's --acceptance (0: a query always takes its best instance, no 'not found')")
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown report")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep every scene, field and its timings in this folder, and only evaluate again the "
                             "ones already there (a change to the query side costs no retraining)")
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_instances_") as tmp:
        for layout in args.layouts:
            for seed in args.seeds or LAYOUTS[layout][0]:
                runs.append(run_scene(args, layout, seed, args.keep or Path(tmp)))
                # after every scene: a run cut short still leaves the scenes it finished
                args.out.with_suffix(".json").write_text(json.dumps(runs, indent=1, default=float))
                args.out.write_text(format_report(args, runs))
    report = format_report(args, runs)
    print(report)
    args.out.write_text(report)


if __name__ == "__main__":
    main()
