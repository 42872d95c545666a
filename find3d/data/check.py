"""``find3d check-data DIR``: validate a dataset and list every problem with its file and entry.

It runs the loaders' own checks with a collecting reporter (so it finds exactly what would make
``FindDataset`` fail, all at once), then decodes what the loaders read lazily: every image (a file
named .jpg that is not one fails here, not in ``eval``), every panoptic PNG (each listed segment must
be present) and every instance / RefCOCO-g mask (must be non-empty).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from find3d.data.formats.discover import discover
from find3d.data.formats.join import JoinedSplit, Sources, join_split
from find3d.data.formats.problems import Problem, Reporter
from find3d.data.formats.refcocog import RefSet
from find3d.errors import InputError
from find3d.fileio import load_image


@dataclass
class CheckReport:
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # file -> {what: how many}


def _check_masks(joined: JoinedSplit, reporter: Reporter) -> None:
    from tqdm import tqdm

    for record in tqdm(joined.records, desc=f"check {joined.split}", unit="img", disable=None):
        if record.image_path.is_file():  # a missing one is already reported; this one must also decode
            try:
                load_image(record.image_path)
            except InputError as err:
                reporter.report(record.source, f"image_id {record.image_id}",
                                f"{err} Replace the file with the real image or remove the entry.")
        if record.panoptic is not None:
            record.panoptic.masks(reporter)
    if joined.instances is not None:
        for ann_id in joined.instances.annotations:
            joined.instances.mask(ann_id, reporter)


def _check_refs(ref_set: RefSet, reporter: Reporter) -> None:
    for ann_id in sorted({ref.ann_id for ref in ref_set.refs}):
        ref_set.instances.mask(ann_id, reporter)


def _count(sources: Sources, split: str, counts: dict[str, dict[str, int]]) -> None:
    panoptic = sources.panoptic(split)
    if panoptic is not None:
        counts[str(panoptic.file)] = {"images": len(panoptic.records),
                                      "segments": sum(len(r.segments) for r in panoptic.records.values())}
    instances = sources.instances(split)
    if instances is not None:
        counts[str(instances.file)] = {"images": len(instances.images), "annotations": len(instances.annotations)}
    captions = sources.captions(split)
    if captions is not None:
        counts[str(captions.file)] = {"images": len(captions.captions),
                                      "captions": sum(len(c) for c in captions.captions.values())}
    for bench in sources.bench(split):
        counts[str(bench.file)] = {"entries": len(bench.entries), "phrases": sum(len(e.phrases) for e in bench.entries)}


def run_checks(root: str | os.PathLike) -> CheckReport:
    """Every problem in the dataset under ``root`` plus per-file counts of what loaded cleanly."""
    reporter = Reporter(collect=True)
    report = CheckReport(reporter.problems)
    if not Path(root).is_dir():
        what = "is a file, not a folder" if Path(root).exists() else "does not exist"
        reporter.report(root, "folder", f"{what}; pass the dataset folder (e.g. the --out of `find3d make-data`).")
        return report
    files = discover(root)
    if not files.present():
        reporter.report(root, "folder", "no dataset files found; expected annotations/panoptic_{split}2017.json, "
                        "FIND-Bench, RefCOCO-g or Karpathy files (see find3d.data.formats.discover).")
        return report
    sources = Sources(files, reporter)
    ref_sets: dict[Path, RefSet] = {}
    for split in files.splits:
        joined = join_split(files, split, reporter, sources)
        _check_masks(joined, reporter)
        _count(sources, split, report.counts)
        ref_sets.update((r.file, r) for r in joined.ref_sets)
    for ref_set in ref_sets.values():
        _check_refs(ref_set, reporter)
        report.counts[str(ref_set.file)] = {"refs": len(ref_set.refs),
                                            "sentences": sum(len(r.sentences) for r in ref_set.refs)}
    if sources.karpathy is not None:
        report.counts[str(sources.karpathy.file)] = {"images": len(sources.karpathy.images)}
    return report


def check_data(root: str | os.PathLike) -> list[Problem]:
    """Every problem (file, entry, message) in the dataset under ``root``; empty when it is clean."""
    return run_checks(root).problems


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", type=Path, help="dataset folder (COCO layout; also accepts FIND's data/coco)")


def run(args: argparse.Namespace) -> int:
    report = run_checks(args.root)
    if report.problems:
        for problem in report.problems:
            print(problem)
        print(f"{len(report.problems)} problem(s) in {args.root}")
        return 1
    for file, counts in sorted(report.counts.items()):
        summary = ", ".join(f"{n} {what}" for what, n in counts.items())
        print(f"{os.path.relpath(file, args.root)}: {summary}")
    print(f"{args.root}: clean")
    return 0
