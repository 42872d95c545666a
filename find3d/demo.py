"""``find3d demo``: the main job on the embedded defaults, end to end on generated data.

Each stage calls the same public Python API as its CLI command, so the demo doubles as a worked
example. Everything is written under ``--out`` and the run is repeatable (outputs are replaced).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder (default outputs/demo)")
    parser.add_argument("--images", type=int, default=48, help="images rendered for the 2D dataset (default 48)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every generated artefact (default 0)")


def run(args: argparse.Namespace) -> int:
    results = demo(args.out, images=args.images, seed=args.seed)
    print("\nfind3d demo: done")
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"  {key:<{width}}  {value}")
    return 0


def demo(out: str | Path, images: int = 48, seed: int = 0) -> dict[str, Any]:
    """Run every stage that exists on generated data; returns what was produced, by stage."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    stages: list[tuple[str, Callable[[Path, int, int, dict[str, Any]], None]]] = [
        ("encoders", _encoders),
        ("2D dataset", _dataset),
        ("3D scene", _scene),
    ]
    for index, (name, stage) in enumerate(stages, start=1):
        print(f"[{index}/{len(stages)}] {name} ...", flush=True)
        started = time.time()
        stage(out, images, seed, results)
        print(f"[{index}/{len(stages)}] {name}: {time.time() - started:.1f} s", flush=True)
    return results


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


def _scene(out: Path, images: int, seed: int, results: dict[str, Any]) -> None:  # noqa: ARG001
    from find3d.data.make_scene import make_scene

    root = out / "scene"
    make_scene(root, seed=seed, views=24, heldout=4, overwrite=True)
    points = np.load(root / "ground_truth" / "points.npz")["xyz"]
    results["3D scene"] = f"{root}/transforms.json (24 + 4 held-out views, {len(points)} ground-truth points)"
