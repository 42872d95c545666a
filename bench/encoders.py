"""Throughput and memory of the packaged frozen encoders, and what the feature cache saves.

Run: ``.venv/bin/python bench/encoders.py`` (about 2-3 minutes on 2 CPU cores). Prints markdown tables
and writes them to ``bench/results/encoders.md``.

Each encoder is measured in its own fresh worker process, so "peak RSS" is that process's
``resource.getrusage(RUSAGE_SELF).ru_maxrss``: Python + torch + the model + activations of its
largest measured batch. The "baseline" row is a worker that imports torch and find3d only.
Timings are the median of repeated runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timing import median_seconds

VISION = ("efficientnet-lite0", "mobilenetv2")
LANGUAGE = ("minilm-l6", "smollm2-135m")
SIZES = (384, 512)
BATCH = 2
REPEATS = 5
SENTENCES = [
    "a red mug on the wooden table next to the laptop",
    "the yellow rubber duck floating in the tray",
    "a robot arm reaching for the soccer ball",
    "the teddy bear sitting behind the lego bricks",
] * 4
RESULTS = Path(__file__).resolve().parent / "results" / "encoders.md"


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _images(size: int, count: int):
    """Real photographs (scikit-image samples) resized to ``size`` px, uint8 (count, size, size, 3)."""
    import numpy as np
    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    return np.stack([np.asarray(Image.fromarray(photos[i % 4]).resize((size, size))) for i in range(count)])


def vision_worker(name: str) -> list[dict]:
    import torch

    from find3d.encoders import build_vision_encoder
    from find3d.encoders.cache import FeatureCache

    start = time.perf_counter()
    encoder = build_vision_encoder(name)
    load_s = time.perf_counter() - start
    rows = []
    for size in SIZES:
        pixels = _images(size, BATCH)
        floats = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
        seconds = median_seconds(lambda floats=floats: encoder(floats), REPEATS)
        with tempfile.TemporaryDirectory() as root:
            cache = FeatureCache(root, encoder)
            start = time.perf_counter()
            cache(pixels)  # miss: backbone + float16 write
            cold = time.perf_counter() - start
            hit = median_seconds(lambda cache=cache, pixels=pixels: cache(pixels), REPEATS)
            assert cache.misses == BATCH and cache.hits == BATCH * (REPEATS + 1)
        rows.append(
            {
                "encoder": name, "size": size, "load_s": load_s, "ms_per_image": 1000 * seconds / BATCH,
                "images_per_s": BATCH / seconds, "cold_ms": 1000 * cold / BATCH, "hit_ms": 1000 * hit / BATCH,
            }
        )
    for row in rows:
        row.update(peak_rss_mib=_peak_rss_mib(), threads=torch.get_num_threads())
    return rows


def language_worker(name: str) -> list[dict]:
    from find3d.encoders import build_language_encoder

    start = time.perf_counter()
    encoder = build_language_encoder(name)
    load_s = time.perf_counter() - start
    tokens = int(encoder(SENTENCES).mask.sum())
    seconds = median_seconds(lambda: encoder(SENTENCES), REPEATS)
    return [
        {
            "encoder": name, "layer": encoder.layer, "dim": encoder.dim, "load_s": load_s, "texts": len(SENTENCES),
            "tokens": tokens, "tokens_per_s": tokens / seconds, "ms_per_text": 1000 * seconds / len(SENTENCES),
            "peak_rss_mib": _peak_rss_mib(),
        }
    ]


def baseline_worker(_: str) -> list[dict]:
    import torch  # noqa: F401 - measuring the import itself

    import find3d.encoders.base  # noqa: F401

    return [{"peak_rss_mib": _peak_rss_mib()}]


WORKERS = {"vision": vision_worker, "language": language_worker, "baseline": baseline_worker}


def _spawn(kind: str, name: str, threads: int) -> list[dict]:
    """Run one worker in a fresh interpreter and parse the JSON list it prints last."""
    done = subprocess.run(
        [sys.executable, __file__, "--threads", str(threads), "--worker", kind, name],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"worker {kind} {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _report(vision: list[dict], language: list[dict], baseline: float, load: float, threads: int) -> str:
    import torch

    lines = [
        "# Frozen encoder benchmark",
        "",
        f"CPU, torch {torch.__version__}, {threads} thread(s) (`--threads`), batch {BATCH} images, "
        f"median of {REPEATS} runs; load average at start {load:.1f} (the machine is shared, "
        "so treat the numbers as indicative).",
        "Peak RSS: `ru_maxrss` of a fresh worker process per encoder (Python + torch + model + activations); "
        f"a worker importing only torch + find3d peaks at {baseline:.0f} MiB.",
        "",
        "## Vision (forward pass on float images; feature cache cold = backbone + float16 write, hit = mmap read)",
        "",
        "| encoder | px | ms/image | images/s | cache cold ms/image | cache hit ms/image | speed-up | load s "
        "| peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in vision:
        lines.append(
            f"| {r['encoder']} | {r['size']} | {r['ms_per_image']:.1f} | {r['images_per_s']:.1f} | {r['cold_ms']:.1f} "
            f"| {r['hit_ms']:.2f} | {r['ms_per_image'] / r['hit_ms']:.0f}x | {r['load_s']:.2f} "
            f"| {r['peak_rss_mib']:.0f} |"
        )
    lines += [
        "",
        f"## Language ({len(SENTENCES)} short sentences per batch)",
        "",
        "| encoder | layer | dim | tokens/batch | tokens/s | ms/text | load s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in language:
        lines.append(
            f"| {r['encoder']} | {r['layer']} | {r['dim']} | {r['tokens']} | {r['tokens_per_s']:.0f} "
            f"| {r['ms_per_text']:.1f} | {r['load_s']:.2f} | {r['peak_rss_mib']:.0f} |"
        )
    lines += [
        "",
        "Load s: building the encoder in a fresh process, including the first import of its library "
        "(transformers takes most of the language encoders' time). smollm2-135m loads from the converted "
        "safetensors cache (`$FIND3D_CACHE`); the one-off GGUF conversion (~17-40 s) happens on the very "
        "first load only.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "NAME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        kind, name = args.worker
        print(json.dumps(WORKERS[kind](name)))
        return 0
    from find3d.fileio import atomic_write_text

    load = os.getloadavg()[0]
    baseline = _spawn("baseline", "-", args.threads)[0]["peak_rss_mib"]
    vision = [row for name in VISION for row in _spawn("vision", name, args.threads)]
    language = [row for name in LANGUAGE for row in _spawn("language", name, args.threads)]
    report = _report(vision, language, baseline, load, vision[0]["threads"])
    print(report)
    atomic_write_text(RESULTS, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
