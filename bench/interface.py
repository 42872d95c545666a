"""Cost of the FIND interface per task, as a fraction of the frozen vision encoder's forward pass.

Run: ``.venv/bin/python bench/interface.py [--threads 1]`` (under a minute on 2 CPU cores). Prints a
markdown table and writes it to ``bench/results/interface.md``.

Model: the default CPU config (``configs/interface/cpu.yaml``: EfficientNet-Lite0 + MiniLM-L6, the
interface sizes it sets) with random-init interface weights: timing does not depend on the weights.
Per image size, one image per forward (inference). The encoder and every task are timed side by side:
each round runs the encoder once and each task once, so load changes on a shared machine hit all
of them alike; the table shows medians over rounds, after one warm-up round.

"Interface" = ``FindInterface.forward``: pixel decoder + sampler + layers + heads, on precomputed
frozen features (vision pyramid, language tokens; the interleave tasks' reference image pyramid too,
whose pixel decoder pass IS counted). In eval mode without grad the class-name embeddings are cached
per vocabulary, as at inference, so the generic row excludes the (image-independent) class text pass.

Peak memory: the process's resident-set high-water mark (``VmHWM``) is reset through
``/proc/self/clear_refs`` before one forward, after ``malloc_trim``; the column is ``VmHWM`` after
minus ``VmRSS`` before, i.e. the extra resident memory the forward needs at its peak.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from memory import peak_extra_mib

SIZES = (384, 512)
REPEATS = 25
CONFIG = Path(__file__).resolve().parent.parent / "configs" / "interface" / "cpu.yaml"
RESULTS = Path(__file__).resolve().parent / "results" / "interface.md"
TASKS = ("generic", "grounding", "retrieval", "interactive", "interleave_grounding", "interleave_retrieval")
#: the rows: single tasks, plus what ``Interface.embed_pixels`` runs (generic + retrieval in one pass)
ROWS = {**{t: (t,) for t in TASKS}, "embed_pixels (generic+retrieval)": ("generic", "retrieval")}
GOAL = 0.25
#: shared by every task (twice in the interleave rows: image and reference); shown for scale
PIXEL_DECODER = "(pixel decoder alone)"


def _photos(size: int) -> list[np.ndarray]:
    """Two real photographs (scikit-image samples) resized to ``size`` px: the image and a reference."""
    from PIL import Image
    from skimage import data

    return [np.array(Image.fromarray(p).resize((size, size))) for p in (data.coffee(), data.chelsea())]


def _sample(size: int):
    """One image annotated for every task (targets are placeholders: only the inputs matter here)."""
    from find3d.data.mappers import draw_prompt
    from find3d.data.samples import InterleaveEntity, InterleaveEntry, Phrase, Sample, VisualRef

    image, other = _photos(size)
    ys, xs = np.mgrid[:size, :size]
    disc = (ys - size / 2) ** 2 + (xs - size / 2) ** 2 <= (size / 5) ** 2
    rng = np.random.default_rng(0)
    sentence = "the cup next to the cat on the table"
    entities = [InterleaveEntity("the cup", (0, 7), disc), InterleaveEntity("the cat", (16, 23), disc,
                                                                            VisualRef(other, disc, "cat"))]
    return Sample(
        key="bench", image=image,
        phrases=[Phrase(text, disc) for text in ("a cup of coffee", "the saucer", "the spoon on the left")],
        captions=["a cup of coffee on a saucer"],
        spatial=[draw_prompt("point", disc, rng), draw_prompt("box", disc, rng)],
        interleave=[InterleaveEntry(sentence, entities)])


def _measure(size: int, model, class_names: list[str], class_prompt: str, repeats: int) -> dict[str, dict]:
    import torch

    from find3d.interface.collate import collate

    batch = collate([_sample(size)], class_names, class_prompt, vision=model.vision)
    with torch.no_grad():
        texts = model.texts(batch.strings())
        pyramid = model.vision(batch.images)
    steps: dict[str, Callable[[], object]] = {
        "encoder": lambda: model.vision(batch.images),
        PIXEL_DECODER: lambda: model.interface.pixel_decoder(dict(pyramid)),
    }
    for row, tasks in ROWS.items():
        steps[row] = lambda tasks=tasks: model.interface(pyramid, texts, batch, batch.ref_pyramid, tasks=tasks)
    times: dict[str, list[float]] = {name: [] for name in steps}
    with torch.no_grad():
        for step in steps.values():
            step()  # warm-up: first-call allocations, the class-embedding cache
        for _ in range(repeats):
            for name, step in steps.items():
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
        memory = {name: peak_extra_mib(step) for name, step in steps.items()}
    return {name: {"ms": 1000 * statistics.median(t), "mib": memory[name]} for name, t in times.items()}


def _report(results: dict[int, dict[str, dict]], config, threads: int, load: float, repeats: int) -> str:
    import torch

    cfg = config.interface
    lines = [
        "# Interface benchmark: cost per task relative to the frozen vision encoder",
        "",
        f"CPU, torch {torch.__version__}, {threads} thread(s) (`--threads`), 1 image per forward, median of "
        f"{repeats} interleaved rounds; load average at start {load:.1f} (shared machine: indicative).",
        f"Config `configs/interface/cpu.yaml`: vision {config.encoders.vision}, language {config.encoders.language}, "
        f"hidden {cfg.hidden_dim}, {cfg.num_layers} layers, {cfg.num_heads} heads, FFN {cfg.ffn_dim}, "
        f"{cfg.num_queries} queries, pixel decoder {cfg.pixel_decoder_dim} ch, memory strides "
        f"{list(cfg.feature_strides)}; random-init interface weights.",
        "Inputs per task: 19 class names (generic), 3 phrases (grounding), 1 caption (retrieval), a point and a "
        "box (interactive), one entry with a text and a visual entity (interleave).",
        "Interface = `FindInterface.forward` (pixel decoder + sampler + layers + heads) on precomputed frozen "
        "features; interleave rows include the pixel decoder on the reference image, not its encoder pass.",
        "Peak MiB: extra resident memory at the peak of one forward (`VmHWM` reset via `/proc/self/clear_refs` "
        "after `malloc_trim`, minus `VmRSS` before).",
        "",
        "| task | px | interface ms | encoder ms | interface / encoder | goal < 25% | peak MiB (interface) "
        "| peak MiB (encoder) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size, rows in results.items():
        encoder = rows["encoder"]
        for name in (*ROWS, PIXEL_DECODER):
            row = rows[name]
            ratio = row["ms"] / encoder["ms"]
            lines.append(f"| {name} | {size} | {row['ms']:.1f} | {encoder['ms']:.1f} | {100 * ratio:.1f}% "
                         f"| {'met' if ratio < GOAL else 'NOT met'} | {row['mib']:.1f} | {encoder['mib']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="timed rounds per size")
    args = parser.parse_args()

    import torch

    from find3d.config import load_config
    from find3d.data.engine.catalog import coco_categories
    from find3d.encoders import build_language_encoder, build_vision_encoder
    from find3d.fileio import atomic_write_text
    from find3d.interface.model import FindInterface, FindModel
    from find3d.train.config import TrainInterfaceConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    config = load_config(TrainInterfaceConfig, CONFIG)
    vision = build_vision_encoder(config.encoders.vision)
    language = build_language_encoder(config.encoders.language, layer=config.encoders.language_layer)
    torch.manual_seed(0)
    model = FindModel(FindInterface.for_encoders(config.interface, vision, language), vision, language).eval()
    class_names = [c["name"] for c in coco_categories()]
    results = {size: _measure(size, model, class_names, config.interface.class_prompt, args.repeats)
               for size in SIZES}
    report = _report(results, config, torch.get_num_threads(), load, args.repeats)
    print(report)
    atomic_write_text(RESULTS, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
