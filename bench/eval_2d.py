"""Benchmark: FIND on every 2D task next to its baselines, measured in one run on the same data.

Evaluates the checkpoint with ``find3d.evaluation.evaluate`` (all tasks annotated in the split),
then the baselines of ``find3d.evaluation.baselines`` on the same split: the ensemble protocol for
interleave retrieval (same frozen encoders, linear projections trained with InfoNCE, no
interface), the SEEM-style protocol for interleave grounding (same checkpoint), and, unless
``--joint-steps 0``, joint vs single-task training of the interface on panoptic + grounding
(each variant trained from scratch with the checkpoint's config and ``tasks`` restricted).
Writes bench/results/2d.md, bar plots and qualitative PNGs next to it.

    python bench/eval_2d.py --checkpoint RUN_OR_PT --data DIR [--split val] [--max-images N]
                            [--object-threshold P] [--overlap-threshold P] [--joint-steps 300]
                            [--joint-override key=value ...]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from find3d.config import apply_overrides, from_dict, to_dict
from find3d.evaluation import baselines
from find3d.evaluation.report import EvalReport
from find3d.evaluation.run_eval import evaluate, load
from find3d.fileio import atomic_open, atomic_write_text
from find3d.train.config import TrainInterfaceConfig

RESULTS = Path(__file__).parent / "results"

#: (task, metric) rows of the FIND-vs-baseline table, with the baseline's name
COMPARED = {
    "interleave_retrieval": ("ensemble of frozen encoders (ImageBind/BLIP-2 protocol)", ("IR@5", "IR@10")),
    "interleave_grounding": ("SEEM-style: grounding + interactive separately", ("cIoU", "mIoU", "AP50")),
}


def fmt(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"


def comparison_table(find: EvalReport, measured: dict[str, dict[str, float]]) -> list[str]:
    lines = ["| task | metric | FIND | baseline | baseline protocol |", "|---|---|---:|---:|---|"]
    for task, (protocol, metrics) in COMPARED.items():
        if task not in find.results or task not in measured:
            continue
        for metric in metrics:
            lines.append(f"| {task} | {metric} | {fmt(find.results[task][metric])} | "
                         f"{fmt(measured[task][metric])} | {protocol} |")
    return lines


def joint_table(reports: dict[str, EvalReport]) -> list[str]:
    rows = [("generic", "PQ"), ("generic", "AP"), ("generic", "mIoU"), ("grounding", "cIoU"), ("grounding", "mIoU")]
    lines = ["| task | metric | " + " | ".join(reports) + " |", "|---|---|" + "---:|" * len(reports)]
    for task, metric in rows:
        cells = [fmt(r.results.get(task, {}).get(metric, float("nan"))) for r in reports.values()]
        lines.append(f"| {task} | {metric} | " + " | ".join(cells) + " |")
    return lines


def bar_plot(path: Path, title: str, groups: dict[str, dict[str, float]]) -> None:
    """Grouped bars: one group per metric, one bar per method."""
    import numpy as np
    from matplotlib.figure import Figure

    methods = list(groups)
    metrics = list(next(iter(groups.values())))
    fig = Figure(figsize=(1.6 + 1.4 * len(metrics), 3.2), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        values = [0.0 if math.isnan(groups[method][m]) else groups[method][m] for m in metrics]
        ax.bar(np.arange(len(metrics)) + i * width, values, width, label=method)
    ax.set_xticks(np.arange(len(metrics)) + 0.4 - width / 2, metrics)
    ax.set_ylabel("percent")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--max-images", type=int)
    parser.add_argument("--baseline-steps", type=int, default=300, help="InfoNCE steps of the ensemble projections")
    parser.add_argument("--joint-steps", type=int, default=300, help="training steps per variant (0: skip)")
    parser.add_argument("--joint-override", action="append", default=[], help="extra key=value for the variants")
    parser.add_argument("--object-threshold", type=float, help="panoptic class threshold (default: the checkpoint's)")
    parser.add_argument("--overlap-threshold", type=float, help="panoptic overlap threshold (default: checkpoint)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--note", default="", help="how the checkpoint and data were made (written to 2d.md)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    loaded = load(args.checkpoint)
    find = evaluate(loaded, args.data, split=args.split, max_images=args.max_images, out=RESULTS / "eval_2d",
                    figures=2, object_threshold=args.object_threshold, overlap_threshold=args.overlap_threshold)
    find_s = time.perf_counter() - started
    measured = {}
    if "interleave_retrieval" in find.results:
        measured["interleave_retrieval"] = baselines.ensemble_interleave_retrieval(
            loaded, args.data, args.split, max_images=args.max_images, steps=args.baseline_steps)
    if "interleave_grounding" in find.results:
        measured["interleave_grounding"] = baselines.seem_interleave_grounding(
            loaded, args.data, args.split, max_images=args.max_images)
    joint: dict[str, EvalReport] = {}
    if args.joint_steps:
        # Variants share the checkpoint's config (architecture, data geometry, optimiser) and differ only in tasks.
        base = replace(loaded.config, data=Path(args.data), max_steps=args.joint_steps, num_workers=0,
                       checkpoint_every=args.joint_steps, torch_threads=args.threads, val_split=args.split)
        base = from_dict(TrainInterfaceConfig, apply_overrides(to_dict(base), args.joint_override))
        with tempfile.TemporaryDirectory() as folder:
            joint = baselines.joint_vs_single(base, folder, max_images=args.max_images)
    total_s = time.perf_counter() - started
    write_results(args, find, measured, joint, find_s, total_s)


def write_results(args: argparse.Namespace, find: EvalReport, measured: dict[str, dict[str, float]],
                  joint: dict[str, EvalReport], find_s: float, total_s: float) -> None:
    lines = ["# 2D evaluation: FIND vs baselines", "",
             f"Checkpoint `{args.checkpoint}` (step {find.meta.get('step')}), data `{args.data}` split "
             f"`{args.split}`, {find.meta['images']} images. FIND evaluation {find_s:.0f} s, whole benchmark "
             f"{total_s:.0f} s on {platform.machine()}, {os.cpu_count()} CPU cores, "
             f"{torch.get_num_threads()} torch thread(s). Panoptic thresholds (object, overlap): "
             f"{tuple(find.meta['panoptic_thresholds'].values())}.",
             *(["", f"Setup: {args.note}"] if args.note else []), "",
             "## FIND vs baselines (same run, same data)", "", *comparison_table(find, measured), ""]
    for task in measured:
        name = f"2d_{task}.png"
        metrics = COMPARED[task][1]
        bar_plot(RESULTS / name, task, {"FIND": {m: find.results[task][m] for m in metrics},
                                        "baseline": dict(measured[task])})
        lines.append(f"![{task}]({name})")
    if joint:
        name = "2d_joint_vs_single.png"
        rows = {"PQ": ("generic", "PQ"), "mIoU (sem)": ("generic", "mIoU"), "cIoU": ("grounding", "cIoU")}
        bar_plot(RESULTS / name, f"joint vs single-task training ({args.joint_steps} steps each)",
                 {v: {label: r.results.get(t, {}).get(m, float("nan")) for label, (t, m) in rows.items()}
                  for v, r in joint.items()})
        lines += ["", f"## Joint vs single-task training ({args.joint_steps} steps each, same config)", "",
                  *joint_table(joint), "", f"![joint vs single]({name})"]
    lines += ["", "## Every FIND metric", "", find.to_markdown(), "",
              f"Skipped (no annotations / descriptions): {find.meta['skipped'] or 'none'}. "
              "Qualitative PNGs and eval.json: `bench/results/eval_2d/`.", ""]
    text = "\n".join(lines)
    atomic_write_text(RESULTS / "2d.md", text)
    print(text)


if __name__ == "__main__":
    main()
