"""Compact per-voxel embeddings: what each storage costs in answer quality, on real scenes.

Run: ``.venv/bin/python bench/map_storage.py [--seeds 101 102 103] [--work DIR]`` (a few minutes a seed on 2
shared CPU cores). Prints a markdown table and writes it to ``bench/results/map_storage.md``.

- Scenes: ``make-scene --repeat --close`` (40 + 8 views at 256 px) per seed, embedded by the packaged
  interface (find3d/assets/interface-cpu.pt); seeds never used in development (as bench/field.md).
- Map: eval-3d's fusion baseline (``find3d.mapping.fusion.VoxelMap`` over the training views with GT depth,
  2 cm voxels, FIND's masks voting for the 3D instances), so the same instances under every storage.
- Storages of a voxel's embedding (D = 256), each decoded back and scored by eval-3d's own metrics
  (``bench/maps.score``): ``float32`` (the map in memory: the reference), ``float16`` (what a spilled run and
  a saved map hold), ``int8`` (per voxel: a float32 scale and D int8), ``pca-K`` (the export's PCA code,
  fitted on the map, K float32 numbers; ``pca-32 f16``: the same in float16; ``pca-32, other scene``: the
  basis fitted on another scene's map, ``--basis-seed``, as a live map would have to fix its basis before
  it has seen the rooms it codes), ``instance`` (one vector per 3D instance and an int32 instance id per
  voxel; voxels in no instance keep a float16 vector of their own, counted in the bytes).
- Metrics: whole-object 3D mIoU, its lowest category, frame top-1, localisation, per-point mIoU and
  instance AP50 (mean over categories); the mean over the seeds, and the worst seed's mIoU.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
from maps import ROOT, WORK_HELP, as_field, fuse, open_scene, prepare, score, session

RESULTS = ROOT / "bench" / "results" / "map_storage.md"
SEEDS = (101, 102, 103)
METRICS = ("miou", "min_iou", "frame_top1", "localisation", "miou_points", "ap50")


def storages(features: np.ndarray, labels: np.ndarray, basis: tuple[np.ndarray, np.ndarray]
             ) -> dict[str, tuple[np.ndarray, float]]:
    """Storage name -> (the (N, D) embeddings as decoded from it, bytes a voxel); ``basis``: (mean, components)
    of a 32-d PCA fitted elsewhere."""
    from find3d.field.embeddings import fit_pca
    from find3d.query.field import segment_vectors

    dim = features.shape[1]
    out = {"float32": (features, 4.0 * dim), "float16": (features.astype(np.float16).astype(np.float32), 2.0 * dim)}
    scale = np.maximum(np.abs(features).max(axis=1, keepdims=True), 1e-12) / 127.0
    out["int8"] = (np.round(features / scale).astype(np.int8) * scale, dim + 4.0)
    sample = features[np.random.default_rng(0).permutation(len(features))[:100_000]]
    for size in (16, 32, 64):
        mean, components, _ = fit_pca(sample, size)
        code = (features - mean) @ components.T
        out[f"pca-{size}"] = (code @ components + mean, 4.0 * size)
        if size == 32:
            out["pca-32 f16"] = (code.astype(np.float16).astype(np.float32) @ components + mean, 2.0 * size)
            other_mean, other = basis
            out["pca-32, other scene"] = (((features - other_mean) @ other.T) @ other + other_mean, 4.0 * size)
    vectors = segment_vectors(labels, features)
    speckle = labels < 0
    decoded = np.where(speckle[:, None], out["float16"][0], vectors[np.maximum(labels, 0)])
    out["instance"] = (decoded, 4.0 + speckle.mean() * 2.0 * dim)
    return out


def fused(seed: int, work: Path) -> tuple[Any, Any, Any]:
    """(scene, store, its fusion-baseline map) of a prepared make-scene --repeat --close scene."""
    from find3d.mapping.fusion import VoxelMap

    scene_dir = work / f"scene_{seed}"
    prepare(scene_dir, seed, views=40, heldout=8, size=256, repeat=True, close=True)
    scene, store = open_scene(scene_dir)
    return scene, store, fuse(scene, store, scene.transforms["train_filenames"], VoxelMap(store.meta.dim))


def run_seed(seed: int, work: Path, model: Any, basis: tuple[np.ndarray, np.ndarray]) -> dict[str, dict[str, float]]:
    from find3d.query.eval_3d import query_embeddings

    scene, store, voxels = fused(seed, work)
    points, colors, features, labels = voxels.points(), voxels.colors(), voxels.features(), voxels.segments()
    embeddings, _ = query_embeddings(model, scene)
    rows = {}
    for name, (decoded, size) in storages(features, labels, basis).items():
        unit = decoded / np.maximum(np.linalg.norm(decoded, axis=1, keepdims=True), 1e-12)
        rows[name] = {"bytes": size, **score(as_field(scene, store, points, colors, unit.astype(np.float32), labels),
                                             scene, model, embeddings)}
        print(seed, name, {k: round(v, 3) for k, v in rows[name].items()}, flush=True)
    return rows


def main() -> None:
    from find3d.fileio import atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--basis-seed", type=int, default=100, help="scene whose map fits 'pca-32, other scene'")
    parser.add_argument("--work", type=Path, default=None, help=WORK_HELP)
    args = parser.parse_args()
    with session(args.work) as (work, model):
        from find3d.field.embeddings import fit_pca

        features = fused(args.basis_seed, work)[2].features()
        mean, components, _ = fit_pca(features[np.random.default_rng(0).permutation(len(features))[:100_000]], 32)
        runs = {seed: run_seed(seed, work, model, (mean, components)) for seed in args.seeds}
    names = list(next(iter(runs.values())))
    reference = {metric: np.mean([runs[s]["float32"][metric] for s in runs]) for metric in METRICS}
    lines = ["| storage | bytes / voxel | 3D mIoU | lowest category | frame top-1 | localisation | per-point mIoU "
             "| instance AP50 | mIoU vs float32 | worst seed's mIoU |", "|---|---:|" + "---:|" * 8]
    for name in names:
        mean = {metric: np.mean([runs[s][name][metric] for s in runs]) for metric in METRICS}
        worst = min(runs[s][name]["miou"] for s in runs)
        lines.append(f"| {name} | {runs[args.seeds[0]][name]['bytes']:.0f} | "
                     + " | ".join(f"{mean[m]:.3f}" for m in METRICS)
                     + f" | {mean['miou'] / max(reference['miou'], 1e-12):.3f}x | {worst:.3f} |")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    report = "\n".join([
        "# Compact per-voxel embeddings: storage against answer quality", "",
        "Command: `.venv/bin/python bench/map_storage.py --seeds " + " ".join(map(str, args.seeds))
        + f" --basis-seed {args.basis_seed}`", "",
        f"Scenes: make-scene --repeat --close seeds {', '.join(map(str, args.seeds))} (40 + 8 views, 256 px), the "
        "packaged interface; map: eval-3d's fusion baseline (2 cm voxels, GT depth); each storage's embeddings "
        "decoded and scored by eval-3d (whole-object answers unless per-point). Means over the seeds. Bytes: the "
        "embedding only (a voxel's position, colour, count, mask votes and key add ~180 bytes in memory).", "",
        *lines, "", f"Machine: {os.cpu_count()} CPU cores (load average at the end {load}).", ""])
    print(report)
    atomic_write_text(RESULTS, report)


if __name__ == "__main__":
    main()
