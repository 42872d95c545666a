"""``find3d demo``: the main job on the embedded defaults, end to end on generated data.

make-data -> (the packaged interface, or train-interface with ``--train``) -> eval -> make-scene ->
embed-frames -> ns-train find-field -> export-field -> query. Each stage runs the same code as its
CLI command, so the demo doubles as a worked example. Everything is written under ``--out`` and the
run is repeatable.

The 3D stage asks three things of a cluttered table (``make-scene --clutter --repeat``: objects
touching, leaning and stacked, two instances of some categories): a small object that touches
others, by name; an interleaved query ("the mug next to <image:reference.png#reference_mask.png>",
the reference being another object cut from a held-out view); and an object that is not there,
which must be answered "not found". It prints, for each, the points selected and their IoU with the
scene's ground truth (``find3d.query.eval_3d``'s protocol), or the verdict and the closest instance.

The packaged interface (``find3d/assets/interface-cpu.pt``) is ``configs/interface/cpu.yaml``
run for 4000 steps (its own schedule is 2600) on ``find3d make-data --images 1000 --seed 0`` (see
``find3d/assets/README.md``); the few-minute interface of ``configs/interface/demo.yaml`` trained from
scratch is one flag away (``--train``), but it is too small to find small objects in 3D.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from find3d import validate
from find3d.errors import Find3dError, InputError

MIN_IMAGES = 2  # one train and one val image
DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "interface" / "demo.yaml"
PACKAGED_INTERFACE = Path(__file__).resolve().parent / "assets" / "interface-cpu.pt"
#: small objects the demo asks for, in order of preference (the first one the scene holds in contact with another
#: object; the interleaved query prefers the same order); ordered by how well the packaged interface segments them
#: (bench/results/field.md)
SMALL_OBJECTS = ("teddy bear", "robot", "duck", "soccer ball", "toy car", "lego brick", "mug", "bunny", "ball",
                 "cube", "ring", "stone")
#: what the demo asks for that the scene does not hold: the first of these it lacks
ABSENT_OBJECTS = ("mug", "robot", "duck", "soccer ball", "toy car")
SCENE_SIZE = 256  # px: the packaged interface's training resolution


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder (default outputs/demo)")
    parser.add_argument("--images", type=validate.cli(validate.integer, minimum=MIN_IMAGES), default=48,
                        help=f"images rendered for the 2D dataset, at least {MIN_IMAGES} (default 48)")
    parser.add_argument("--seed", type=validate.cli(validate.integer, minimum=0), default=0,
                        help="seed of every generated artefact (default 0)")
    parser.add_argument("--train", action="store_true",
                        help="train an interface from scratch (--config) instead of using the packaged one")
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG,
                        help="with --train: interface training config (default: the few-minute "
                             "configs/interface/demo.yaml)")
    parser.add_argument("--field-iterations", type=validate.cli(validate.integer, minimum=1), default=300,
                        help="ns-train find-field iterations (default 300)")


def run(args: argparse.Namespace) -> int:
    results = demo(args.out, images=args.images, seed=args.seed, config=args.config,
                   field_iterations=args.field_iterations, train=args.train)
    print("\nfind3d demo: done")
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"  {key:<{width}}  {value}")
    return 0


def demo(out: str | Path, images: int = 48, seed: int = 0, config: Path = DEMO_CONFIG,
         field_iterations: int = 300, train: bool = False) -> dict[str, Any]:
    """Run every stage on generated data; returns what was produced, by stage.

    Every argument is checked before the first stage runs, so a bad one costs no work and leaves no
    half-written output behind.
    """
    out = _check_arguments(out, images, seed, config, field_iterations)
    out.mkdir(parents=True, exist_ok=True)
    if not train and not PACKAGED_INTERFACE.is_file():
        raise InputError(f"{PACKAGED_INTERFACE}: the packaged interface is missing from this install; "
                         "reinstall find3d, or pass --train to train one from scratch.")
    results: dict[str, Any] = {"config": str(config), "field_iterations": field_iterations, "train": train}
    stages: list[tuple[str, Callable[[Path, int, int, dict[str, Any]], None]]] = [
        ("encoders", _encoders),
        ("2D dataset", _dataset),
        ("train interface" if train else "packaged interface", _train),
        ("evaluate 2D", _evaluate),
        ("3D scene", _scene),
        ("embed frames", _embed),
        ("feature field", _field),
        ("3D queries", _query),
    ]
    for index, (name, stage) in enumerate(stages, start=1):
        print(f"[{index}/{len(stages)}] {name} ...", flush=True)
        started = time.time()
        stage(out, images, seed, results)
        print(f"[{index}/{len(stages)}] {name}: {time.time() - started:.1f} s", flush=True)
    for key in ("config", "field_iterations", "train"):
        results.pop(key)
    return results


def _check_arguments(out: str | Path, images: int, seed: int, config: Path, field_iterations: int) -> Path:
    """Validate what every stage will be given (the training config included); returns ``out`` as a Path."""
    from find3d.config import load_config
    from find3d.train.config import TrainInterfaceConfig

    out = validate.path(out, "out")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; pass a folder (it is created if missing).")
    validate.integer(images, "images", minimum=MIN_IMAGES)
    validate.integer(seed, "seed", minimum=0)
    validate.integer(field_iterations, "field_iterations", minimum=1)
    load_config(TrainInterfaceConfig, validate.path(config, "config"), _train_overrides(out, seed))
    return out


def _train_overrides(out: Path, seed: int) -> list[str]:
    return [f"data={out / 'data'}", f"output_dir={out / 'interface'}", f"seed={seed}"]


def _cli(*argv: str) -> None:
    """Run a find3d subcommand in-process; a failure stops the demo with the command's message."""
    from find3d.cli import main

    if main(list(argv)) != 0:
        raise Find3dError(f"demo stage failed: find3d {' '.join(argv)}")


def _encoders(out: Path, images: int, seed: int, results: dict[str, Any]) -> None:  # noqa: ARG001
    import torch

    from find3d.encoders import build_language_encoder, build_vision_encoder

    vision, language = build_vision_encoder(), build_language_encoder()
    image = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(seed))
    pyramid = vision(image)
    tokens = language(["the red mug next to the duck"])
    shapes = ", ".join(f"s{s}:{tuple(f.shape[1:])}" for s, f in pyramid.items())
    results["vision encoder"] = f"{vision.name}: {shapes}"
    results["language encoder"] = f"{language.name}: layer {language.layer}, {tuple(tokens.tokens.shape)} tokens"


def _dataset(out: Path, images: int, seed: int, results: dict[str, Any]) -> None:
    from find3d.data.check import check_data
    from find3d.data.make_data import make_data

    root = out / "data"
    manifest = make_data(root, images=images, seed=seed, overwrite=True)
    problems = check_data(root)
    if problems:
        raise RuntimeError(f"generated dataset has {len(problems)} problems, first: {problems[0]}")
    results["2D dataset"] = f"{root} ({manifest['splits']['train']} train + {manifest['splits']['val']} val, clean)"


def _train(out: Path, images: int, seed: int, results: dict[str, Any]) -> None:  # noqa: ARG001
    from find3d.config import load_config
    from find3d.train.config import TrainInterfaceConfig
    from find3d.train.loop import train_interface

    if not results["train"]:
        from find3d.train.checkpoint import checkpoint_path, load_checkpoint

        # laid out as a run folder, so `--checkpoint out/interface` and eval find it as any trained run
        step = int(load_checkpoint(PACKAGED_INTERFACE)["step"])
        checkpoint = checkpoint_path(out / "interface", step)
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PACKAGED_INTERFACE, checkpoint)
        last = checkpoint.parent / "last.pt"
        last.unlink(missing_ok=True)
        last.symlink_to(checkpoint.name)
        results["interface"] = (f"{checkpoint} (packaged: configs/interface/cpu.yaml, {step} steps; "
                                "find3d/assets/README.md)")
        return
    run_dir = train_interface(load_config(TrainInterfaceConfig, results["config"], _train_overrides(out, seed)))
    results["interface"] = f"{run_dir / 'checkpoints' / 'last.pt'} (curves: {run_dir / 'loss_curves.png'})"


def _evaluate(out: Path, images: int, seed: int, results: dict[str, Any]) -> None:  # noqa: ARG001
    from find3d.evaluation.run_eval import evaluate

    report = evaluate(out / "interface", out / "data", split="val", out=out / "eval", figures=2)
    generic, grounding = report.results.get("generic", {}), report.results.get("grounding", {})
    results["2D metrics"] = (f"PQ {generic.get('PQ', float('nan')):.1f}, grounding cIoU "
                             f"{grounding.get('cIoU', float('nan')):.1f} ({out / 'eval' / 'eval.json'}, figures/)")


def _scene(out: Path, images: int, seed: int, results: dict[str, Any]) -> None:  # noqa: ARG001
    from find3d.data.make_scene import make_scene

    root = out / "scene"
    make_scene(root, seed=seed, views=24, heldout=4, size=SCENE_SIZE, overwrite=True, repeat=True, close=True,
               clutter=True)
    points = np.load(root / "ground_truth" / "points.npz")["xyz"]
    results["3D scene"] = (f"{root}/transforms.json (a cluttered table, 24 + 4 held-out views at {SCENE_SIZE} px, "
                           f"{len(points)} ground-truth points)")


def _embed(out: Path, images: int, seed: int, results: dict[str, Any]) -> None:  # noqa: ARG001
    _cli("embed-frames", "--data", str(out / "scene"), "--checkpoint", str(out / "interface"))
    results["frame embeddings"] = str(out / "scene" / "find_embeddings")


def _field(out: Path, images: int, seed: int, results: dict[str, Any]) -> None:  # noqa: ARG001
    runs = out / "field_runs"
    shutil.rmtree(runs, ignore_errors=True)
    command = [str(Path(sys.executable).parent / "ns-train"), "find-field", "--data", str(out / "scene"),
               "--max-num-iterations", str(results["field_iterations"]), "--vis", "tensorboard",
               "--output-dir", str(runs)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise Find3dError(f"ns-train find-field failed:\n{done.stderr[-2000:]}")
    config = next(runs.glob("*/find-field/*/config.yml"))
    # half-size renders: 256 px views at full size cost 4x the rays for points the export voxel-thins anyway
    _cli("export-field", "--config", str(config), "--out", str(out / "field"), "--downscale", "2")
    results["feature field"] = f"{config} -> {out / 'field' / 'points.ply'}"


def _query(out: Path, images: int, seed: int, results: dict[str, Any]) -> None:  # noqa: ARG001
    from PIL import Image

    from find3d.query.eval_3d import Scene, interleaved_queries

    scene = Scene.load(out / "scene")
    categories = scene.categories()
    rank = {name: index for index, name in enumerate(SMALL_OBJECTS)}
    tasks = sorted((t for t in interleaved_queries(scene) if "view" in t),
                   key=lambda t: rank.get(t["category"], len(rank)))  # stable: the scene's order among equals
    touching = _in_contact(scene)
    small = next((c for c in SMALL_OBJECTS if c in categories and touching & set(categories[c])),
                 next(c for c in categories if c != "table"))
    text = f"the {small}"  # every instance of it is the ground truth
    results["3D query"] = _ask(out, "query", text, categories[small])
    absent = next((c for c in ABSENT_OBJECTS if c not in categories), "laptop")
    results["absent query"] = _ask(out, "query_absent", f"the {absent}", [])
    if not tasks:
        results["interleaved query"] = "no instance pair in this scene: try another --seed"
        return
    task = tasks[0]
    folder = out / "query_interleaved"
    folder.mkdir(parents=True, exist_ok=True)
    Image.open(scene.root / task["view"]).convert("RGB").save(folder / "reference.png")
    Image.fromarray((scene.instances(task["view"]) == task["anchor"]).astype(np.uint8) * 255).save(
        folder / "reference_mask.png")
    interleaved = (f"the {task['category']} next to "
                   f"<image:{folder / 'reference.png'}#{folder / 'reference_mask.png'}>")
    colour = scene.objects[task["target"]].get("colour")
    results["interleaved query"] = (_ask(out, "query_interleaved", interleaved, [task["target"]])
                                    + f"; target: the {colour} {task['category']} next to the "
                                      f"{task['anchor_category']} (reference_mask.png)")


def _in_contact(scene: Any) -> set[int]:
    """Object ids of the things that touch another one (``make-scene --clutter``'s contacts, either side)."""
    contacts = [(object_id, entry["contact"]["partner"]) for object_id, entry in scene.objects.items()
                if entry.get("contact")]
    return {int(i) for pair in contacts for i in pair}


def _ask(out: Path, name: str, text: str, truth_ids: list[int]) -> str:
    """Run ``find3d query`` into ``out/name`` and score its mask against the ground truth of ``truth_ids``
    (none: the query asks for something absent, and its right answer is "not found")."""
    from find3d.fileio import atomic_write_json, read_json
    from find3d.query.eval_3d import MATCH_DISTANCE, Scene, iou_per_category, nearest_match
    from find3d.query.field import Field

    _cli("query", "--field", str(out / "field"), text, "--out", str(out / name), "--top-k", "3")
    scene, field = Scene.load(out / "scene"), Field.load(out / "field")
    indices = np.load(out / name / "query.npz")["indices"]
    answer = read_json(out / name / "frames.json")
    chosen = np.zeros(len(field), bool)
    chosen[indices] = True
    iou = (iou_per_category(chosen, scene, truth_ids, nearest_match(field.points, scene.gt_xyz, MATCH_DISTANCE))
           if truth_ids else None)
    pngs = ", ".join(sorted(p.name for p in (out / name).glob("*.png")))
    summary = out / "queries.json"  # what tests and users read back: every query's points, IoU and verdict
    answers = read_json(summary) if summary.is_file() and name != "query" else {}
    answers[name] = {"query": text, "points": len(indices), "of": len(field), "iou": iou, "found": answer["found"],
                     "closest": answer["closest"], "truth": [int(i) for i in truth_ids]}
    atomic_write_json(summary, answers)
    if not answer["found"]:
        closest = answer["closest"] or {}
        verdict = "right: the scene has none" if not truth_ids else "wrong: the scene has one"
        return (f"{text!r}: not found ({verdict}), closest the {closest.get('name')} at "
                f"{closest.get('score', 0):.2f} -> {out / name / 'frames.json'}, {pngs}")
    if not truth_ids:
        return f"{text!r}: {len(indices)} points selected, but the scene has none (a false alarm) -> {out / name}"
    return (f"{text!r}: {len(indices)} of {len(field)} points, 3D IoU {iou:.2f} against the ground truth "
            f"-> {out / name / 'mask.ply'}, {pngs}")
