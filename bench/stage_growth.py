"""How each stage's time and peak memory grow with a scene: 25 -> 100 -> 400 views at 256 px, and 256 -> 512 px.

Every stage runs as its own process (the CLI a user runs), timed by wall clock, its peak resident memory
taken from the kernel's rusage of that process (``os.wait4``). Stages: ``make-scene`` (``--close --repeat
--sensor rgbd``: a depth camera's noise), ``embed-frames`` (the packaged interface), ``ns-train find-field``
for a fixed ``--iterations`` (the per-iteration cost does not depend on the views; start-up, which loads
every frame and its embeddings, does), ``export-field`` from the depth maps and the same run's export from
the field's rendered depth (what a scene without depth gets; every ray kept), both with export-field's
default ``--downscale``, and ``eval-3d``.

Growth exponent: the slope of log(time) against log(views) from the smallest to the largest scene (1: linear).

Command: ``.venv/bin/python bench/stage_growth.py`` (about an hour on 2 shared cores); writes
``bench/results/stage_growth.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timing import growth_exponent

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "stage_growth.md"
CHECKPOINT = ROOT / "find3d" / "assets" / "interface-cpu.pt"
BIN = Path(sys.executable).parent
STAGES = ("make-scene", "embed-frames", "ns-train", "export-field (depth)", "export-field (rendered depth)",
          "eval-3d")


def timed(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak resident MiB) of one command, run to the end; a failure stops the benchmark."""
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: a chatty stage never blocks on a full pipe
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            log.seek(0)
            sys.exit(f"{' '.join(command)} failed:\n{log.read().decode()[-3000:]}")
    return wall, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def run_size(args: argparse.Namespace, views: int, size: int, work: Path) -> dict[str, tuple[float, float]]:
    """Every stage of one scene of ``views`` training views at ``size`` px: stage -> (seconds, peak MiB)."""
    scene, runs = work / f"scene_{views}_{size}", work / f"runs_{views}_{size}"
    find3d = str(BIN / "find3d")
    out = {"make-scene": timed([find3d, "make-scene", "--out", str(scene), "--seed", str(args.seed), "--views",
                                str(views), "--heldout", "4", "--size", str(size), "--close", "--repeat",
                                "--sensor", "rgbd"])}
    out["embed-frames"] = timed([find3d, "embed-frames", "--data", str(scene), "--checkpoint", str(args.checkpoint)])
    out["ns-train"] = timed([str(BIN / "ns-train"), "find-field", "--data", str(scene), "--max-num-iterations",
                             str(args.iterations), "--vis", "tensorboard", "--output-dir", str(runs)])
    config = str(next(runs.glob("*/find-field/*/config.yml")))
    # Both exports with their default --downscale (render: the coarsest step that still casts 2 rays per
    # point). The rendered-depth one keeps every ray (--min-accumulation 0): a short run's field is still
    # thin, and what it costs is rendering the rays, not the threshold.
    for name, extra in (("export-field (depth)", ["--geometry", "depth"]),
                        ("export-field (rendered depth)", ["--geometry", "render", "--min-accumulation", "0"])):
        out[name] = timed([find3d, "export-field", "--config", config, "--out", str(work / f"field_{extra[1]}"),
                           *extra])
    out["eval-3d"] = timed([find3d, "eval-3d", "--scene", str(scene), "--field", str(work / "field_depth"),
                            "--out", str(work / "eval")])
    for folder in (scene, runs, work / "field_depth", work / "field_render", work / "eval"):
        shutil.rmtree(folder, ignore_errors=True)  # 400 views of embeddings: keep the disk free
    return out


def format_report(args: argparse.Namespace, by_views: dict[int, dict], by_size: dict[int, dict]) -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = ["# Stage cost against scene size", "",
             f"Command: `.venv/bin/python bench/stage_growth.py --views {' '.join(map(str, args.views))} --sizes "
             f"{' '.join(map(str, args.sizes))} --iterations {args.iterations} --seed {args.seed}`. Scene: "
             "`make-scene --close --repeat --sensor rgbd` (+4 held-out views); packaged interface; each stage "
             "a process of its own: wall time, peak resident memory (rusage). Machine: "
             f"{os.cpu_count()} CPU cores, shared, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} "
             f"(load average at the end {load}).", ""]
    sizes = sorted(by_views)
    head = " | ".join(f"{v} views" for v in sizes)
    lines += [f"## Views at {args.sizes[0]} px", "",
              f"| stage | {head} | growth exponent (time, {sizes[0]} -> {sizes[-1]} views) |",
              "|---|" + "---:|" * (len(sizes) + 1)]
    for stage in STAGES:
        cells = [f"{by_views[v][stage][0]:.1f} s, {by_views[v][stage][1]:.0f} MiB" for v in sizes]
        slope = growth_exponent(by_views[sizes[0]][stage][0], by_views[sizes[-1]][stage][0], sizes[-1] / sizes[0])
        lines.append(f"| {stage} | " + " | ".join(cells) + f" | {slope:.2f} |")
    for v in sizes:
        depth, render = by_views[v]["export-field (depth)"][0], by_views[v]["export-field (rendered depth)"][0]
        lines.append(f"\nNo-depth export against the depth export of the same run, {v} views: {render / depth:.2f}x")
    if len(by_size) > 1:
        px = sorted(by_size)
        lines += ["", f"## Image size at {args.views[0]} views", "",
                  "| stage | " + " | ".join(f"{p} px" for p in px) + " | growth exponent (time, against pixels) |",
                  "|---|" + "---:|" * (len(px) + 1)]
        for stage in STAGES:
            cells = [f"{by_size[p][stage][0]:.1f} s, {by_size[p][stage][1]:.0f} MiB" for p in px]
            slope = growth_exponent(by_size[px[0]][stage][0], by_size[px[-1]][stage][0], (px[-1] / px[0]) ** 2)
            lines.append(f"| {stage} | " + " | ".join(cells) + f" | {slope:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT, help="FIND interface checkpoint")
    parser.add_argument("--views", type=int, nargs="+", default=[25, 100, 400], help="training views per scene")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512],
                        help="image sizes (px); the extra sizes run at the first --views")
    parser.add_argument("--iterations", type=int, default=100, help="find-field iterations of every run")
    parser.add_argument("--seed", type=int, default=104, help="make-scene seed (never used in tuning)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown report")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="find3d_growth_") as tmp:
        by_views = {}
        for views in args.views:
            by_views[views] = run_size(args, views, args.sizes[0], Path(tmp))
            print(f"{views} views: " + ", ".join(f"{k} {t:.1f} s" for k, (t, _) in by_views[views].items()),
                  flush=True)
        by_size = {args.sizes[0]: by_views[args.views[0]]}
        for size in args.sizes[1:]:
            by_size[size] = run_size(args, args.views[0], size, Path(tmp))
            print(f"{size} px: " + ", ".join(f"{k} {t:.1f} s" for k, (t, _) in by_size[size].items()), flush=True)
    report = format_report(args, by_views, by_size)
    args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
