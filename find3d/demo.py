"""``find3d demo``: the main job on the embedded defaults, end to end on generated data.

make-data -> train-interface -> eval -> make-scene -> embed-frames -> ns-train find-field ->
export-field -> query. Each stage runs the same code as its CLI command, so the demo doubles as a
worked example. Everything is written under ``--out`` and the run is repeatable.
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
QUERY = "the table"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder (default outputs/demo)")
    parser.add_argument("--images", type=validate.cli(validate.integer, minimum=MIN_IMAGES), default=48,
                        help=f"images rendered for the 2D dataset, at least {MIN_IMAGES} (default 48)")
    parser.add_argument("--seed", type=validate.cli(validate.integer, minimum=0), default=0,
                        help="seed of every generated artefact (default 0)")
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG,
                        help="interface training config (default: the few-minute configs/interface/demo.yaml)")
    parser.add_argument("--field-iterations", type=validate.cli(validate.integer, minimum=1), default=300,
                        help="ns-train find-field iterations (default 300)")


def run(args: argparse.Namespace) -> int:
    results = demo(args.out, images=args.images, seed=args.seed, config=args.config,
                   field_iterations=args.field_iterations)
    print("\nfind3d demo: done")
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"  {key:<{width}}  {value}")
    return 0


def demo(out: str | Path, images: int = 48, seed: int = 0, config: Path = DEMO_CONFIG,
         field_iterations: int = 300) -> dict[str, Any]:
    """Run every stage on generated data; returns what was produced, by stage.

    Every argument is checked before the first stage runs, so a bad one costs no work and leaves no
    half-written output behind.
    """
    out = _check_arguments(out, images, seed, config, field_iterations)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"config": str(config), "field_iterations": field_iterations}
    stages: list[tuple[str, Callable[[Path, int, int, dict[str, Any]], None]]] = [
        ("encoders", _encoders),
        ("2D dataset", _dataset),
        ("train interface", _train),
        ("evaluate 2D", _evaluate),
        ("3D scene", _scene),
        ("embed frames", _embed),
        ("feature field", _field),
        ("3D query", _query),
    ]
    for index, (name, stage) in enumerate(stages, start=1):
        print(f"[{index}/{len(stages)}] {name} ...", flush=True)
        started = time.time()
        stage(out, images, seed, results)
        print(f"[{index}/{len(stages)}] {name}: {time.time() - started:.1f} s", flush=True)
    for key in ("config", "field_iterations"):
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
    make_scene(root, seed=seed, views=24, heldout=4, size=128, overwrite=True)
    points = np.load(root / "ground_truth" / "points.npz")["xyz"]
    results["3D scene"] = f"{root}/transforms.json (24 + 4 held-out views, {len(points)} ground-truth points)"


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
    _cli("export-field", "--config", str(config), "--out", str(out / "field"))
    results["feature field"] = f"{config} -> {out / 'field' / 'points.ply'}"


def _query(out: Path, images: int, seed: int, results: dict[str, Any]) -> None:  # noqa: ARG001
    _cli("query", "--field", str(out / "field"), QUERY, "--out", str(out / "query"), "--top-k", "3")
    selected = len(np.load(out / "query" / "query.npz")["indices"])
    pngs = sorted(p.name for p in (out / "query").glob("*.png"))
    results["3D query"] = (f"{QUERY!r}: {selected} points in {out / 'query' / 'mask.ply'}, "
                           f"frames.json, {', '.join(pngs)}")
