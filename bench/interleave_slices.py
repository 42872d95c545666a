"""Benchmark: FIND vs the SEEM-style protocol on interleave grounding, sliced to show where each wins.

Both read the same checkpoint and the same entries as ``bench/eval_2d.py``; every entity is scored
once per slice it falls in: the kind of its entry (FIND-Bench entity / paragraph / interleave), its
own kind (text or visual reference) and its position in the entry (the SEEM-style protocol asks text
and visual entities in two separate calls, FIND asks an entry's entities together). Writes
bench/results/interleave_slices.md.

    python bench/interleave_slices.py --checkpoint RUN_OR_PT --data DIR [--split val] [--max-images N]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

from find3d.evaluation.baselines import seem_entry_masks
from find3d.evaluation.grounding import GroundingEvaluator
from find3d.evaluation.predictors import ModelPredictor
from find3d.evaluation.run_eval import entity_targets, entry_samples, eval_dataset, load
from find3d.fileio import atomic_write_text

RESULTS = Path(__file__).parent / "results"
#: entity positions reported one by one; later ones are pooled
POSITIONS = 6


def slices_of(kind: str, visual: bool, position: int) -> list[str]:
    place = f"position {position}" if position < POSITIONS - 1 else f"position >= {POSITIONS - 1}"
    return ["all", f"entry: {kind}", "entity: visual" if visual else "entity: text", place]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--max-images", type=int)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load(args.checkpoint)
    dataset = eval_dataset(args.data, args.split, loaded.config.dataset.image_size, None)
    predictor = ModelPredictor(loaded, dataset.isthing)
    scores: dict[str, dict[str, GroundingEvaluator]] = defaultdict(lambda: defaultdict(GroundingEvaluator))
    for index in tqdm(range(min(len(dataset), args.max_images or len(dataset))), desc="images"):
        # eval samples keep the entries in file order, so entry n is the record's n-th FIND-Bench entry
        kinds = [kind for kind, _ in dataset.records[index].bench]
        for kind, entry in zip(kinds, entry_samples(dataset[index])):
            targets = entity_targets(entry)
            entities = sorted(entry.interleave[0].entities, key=lambda e: e.span[0])
            masks = {"FIND": predictor.interleave_grounding([entry])[0],
                     "SEEM-style": seem_entry_masks(loaded, predictor, entry)}
            for position, entity in enumerate(entities):
                for name in slices_of(kind, entity.ref is not None, position):
                    for method, predicted in masks.items():
                        scores[name][method].update(predicted[position], targets[position])
    write(args, scores)


def write(args: argparse.Namespace, scores: dict[str, dict[str, GroundingEvaluator]]) -> None:
    lines = ["# Interleave grounding: FIND vs SEEM-style, by slice", "",
             f"Checkpoint `{args.checkpoint}`, data `{args.data}` split `{args.split}` "
             "(`bench/interleave_slices.py`). cIoU / mIoU / AP50 (precision@0.5), percent.", "",
             "| slice | entities | FIND cIoU | SEEM cIoU | FIND mIoU | SEEM mIoU | FIND AP50 | SEEM AP50 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in sorted(scores, key=lambda n: (n != "all", n)):
        find, seem = (scores[name][m].compute() for m in ("FIND", "SEEM-style"))
        row = [f"{result[key]:.1f}" for key in ("cIoU", "mIoU", "precision@0.5") for result in (find, seem)]
        lines.append(f"| {name} | {len(scores[name]['FIND'].ious)} | " + " | ".join(row) + " |")
    lines.append("")
    text = "\n".join(lines)
    atomic_write_text(RESULTS / "interleave_slices.md", text)
    print(text)


if __name__ == "__main__":
    main()
