"""Join every annotation file of a split into one record per image.

``Sources`` loads each discovered file once (lazily, so a val dataset never parses the train
panoptic JSON unless a cross-image reference points there); ``join_split`` turns them into
``ImageRecord``s keyed by COCO image id. Both report problems through the same ``Reporter`` that
``check-data`` collects from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from find3d.data.formats.coco import (
    CaptionSet,
    CategoryTable,
    InstanceAnnotation,
    InstancesSet,
    PanopticRecord,
    PanopticSet,
    load_captions,
    load_instances,
    load_panoptic,
    read_rgb,
)
from find3d.data.formats.discover import DatasetFiles, SplitFiles
from find3d.data.formats.findbench import BenchEntry, BenchFile, BenchKind, load_findbench, resolve_findbench
from find3d.data.formats.karpathy import KarpathySet, load_karpathy
from find3d.data.formats.problems import Reporter
from find3d.data.formats.refcocog import RefRecord, RefSet, load_refs, load_refs_json

BENCH_KINDS: tuple[BenchKind, ...] = ("entity", "paragraph", "interleave")


@dataclass
class ImageRecord:
    """Everything known about one image of a split; images and masks are read on demand."""

    image_id: int
    key: str
    image_path: Path
    source: Path  # the first file that listed the image, for error messages
    panoptic: PanopticRecord | None = None
    instances: list[InstanceAnnotation] = field(default_factory=list)
    instance_set: InstancesSet | None = None  # decodes ``instances`` masks
    captions: list[str] = field(default_factory=list)
    refs: list[tuple[RefRecord, InstancesSet]] = field(default_factory=list)  # with the file holding its mask
    bench: list[tuple[BenchKind, BenchEntry]] = field(default_factory=list)

    def load_image(self) -> np.ndarray:
        return read_rgb(self.image_path, self.source, f"image_id {self.image_id}")


class Sources:
    """Each discovered file, loaded at most once, problems sent to ``reporter``."""

    def __init__(self, files: DatasetFiles, reporter: Reporter) -> None:
        self.files = files
        self.reporter = reporter
        self._memo: dict[tuple[str, str], Any] = {}

    def _once(self, what: str, split: str, load: Callable[[SplitFiles], Any]) -> Any:
        if (what, split) not in self._memo:
            files = self.files.splits.get(split)
            self._memo[what, split] = load(files) if files is not None else None
        return self._memo[what, split]

    def panoptic(self, split: str) -> PanopticSet | None:
        return self._once("panoptic", split, self._load_panoptic)

    def _load_panoptic(self, files: SplitFiles) -> PanopticSet | None:
        if files.panoptic_json is None:
            return None
        if files.panoptic_dir is None:
            self.reporter.report(
                files.panoptic_json, "whole file",
                f"panoptic PNG folder not found (looked for annotations/panoptic_{files.split}2017/ and "
                f"panoptic_{files.split}2017/); unzip the PNGs there.",
            )
            return None
        return load_panoptic(files.panoptic_json, files.panoptic_dir, files.image_dir, self.reporter)

    def instances(self, split: str) -> InstancesSet | None:
        return self._once("instances", split, lambda f: f.instances_json and load_instances(
            f.instances_json, f.image_dir, self.reporter))

    def captions(self, split: str) -> CaptionSet | None:
        return self._once("captions", split, lambda f: f.captions_json and load_captions(
            f.captions_json, self.reporter))

    def bench(self, split: str) -> list[BenchFile]:
        def load(files: SplitFiles) -> list[BenchFile]:
            paths = {"entity": files.entity_json, "paragraph": files.paragraph_json,
                     "interleave": files.interleave_json}
            return [load_findbench(paths[k], k, self.reporter) for k in BENCH_KINDS if paths[k] is not None]

        return self._once("bench", split, load) or []

    def refs(self, split: str) -> list[RefSet]:
        """RefCOCO-g files that can hold refs of ``split``: the split's JSON form and the shared pickle."""
        ref_json = self._once("refs", split, lambda f: f.refs_json and load_refs_json(
            f.refs_json, f.image_dir, self.reporter))
        return [r for r in (ref_json, self.refs_pickle) if r is not None]

    @cached_property
    def refs_pickle(self) -> RefSet | None:
        pickle_path, instances = self.files.refs_pickle, self.files.refs_instances
        if pickle_path is None and instances is None:
            return None
        if pickle_path is None or instances is None:
            present = pickle_path or instances
            self.reporter.report(
                present, "whole file", "RefCOCO-g needs both refs(umd).p and instances.json in the same folder."
            )
            return None
        return load_refs(pickle_path, instances, "", self.reporter)

    @cached_property
    def karpathy(self) -> KarpathySet | None:
        path = self.files.karpathy_json
        return load_karpathy(path, self.reporter) if path else None

    def panoptic_lookup(self, split: str, needed: set[int]) -> dict[int, PanopticRecord]:
        """Panoptic records of ``split``, plus other splits' when ``needed`` image ids live there."""
        lookup = dict(self.panoptic(split).records) if self.panoptic(split) else {}
        for other in self.files.splits:
            if needed - lookup.keys() and other != split and self.panoptic(other) is not None:
                lookup.update(self.panoptic(other).records)
        return lookup


@dataclass
class JoinedSplit:
    split: str
    records: list[ImageRecord]
    categories: CategoryTable
    panoptic: dict[int, PanopticRecord]  # this split's, plus those cross-image references need
    instances: InstancesSet | None
    ref_sets: list[RefSet]


def _find_image(files: DatasetFiles, image_id: int, file_name: str | None) -> Path | None:
    """An image named only by id (refs, Karpathy): COCO 2017 name in any split, or its listed name."""
    names = [f"{image_id:012d}.jpg"] + ([file_name] if file_name else [])
    for image_dir in files.image_dirs():
        for name in names:
            if (image_dir / name).is_file():
                return image_dir / name
    return None


class _Index:
    """Image id -> ImageRecord, created on first mention."""

    def __init__(self, split: str) -> None:
        self.split = split
        self.records: dict[int, ImageRecord] = {}

    def get(self, image_id: int, image_path: Path, source: Path) -> ImageRecord:
        if image_id not in self.records:
            key = f"coco/{self.split}2017/{image_id:012d}"
            self.records[image_id] = ImageRecord(image_id, key, image_path, source)
        return self.records[image_id]


def _add_refs(index: _Index, ref_sets: list[RefSet], split: str, files: DatasetFiles, reporter: Reporter) -> None:
    for ref_set in ref_sets:
        for ref in ref_set.for_split(split):
            record = index.records.get(ref.image_id)
            if record is None:
                info = ref_set.instances.images.get(ref.image_id)
                path = _find_image(files, ref.image_id, info.file_name if info else None)
                if path is None:
                    reporter.report(
                        ref_set.file, f"ref_id {ref.ref_id} (image_id {ref.image_id})",
                        f"image not found in {[str(d) for d in files.image_dirs()]}; add the COCO image.",
                    )
                    continue
                record = index.get(ref.image_id, path, ref_set.file)
            record.refs.append((ref, ref_set.instances))


def _add_bench(index: _Index, sources: Sources, split: str, reporter: Reporter) -> dict[int, PanopticRecord]:
    benches = sources.bench(split)
    needed = {p.reference[0] for b in benches for e in b.entries for p in e.phrases if p.reference}
    lookup = sources.panoptic_lookup(split, needed)
    image_dir = sources.files.splits[split].image_dir
    for bench in benches:
        for entry in resolve_findbench(bench, lookup, reporter):
            path = image_dir / bench.images[entry.image_id].file_name
            if not path.is_file():
                reporter.report(bench.file, bench.where(entry), f"image file {path} not found; add the image.")
                continue
            index.get(entry.image_id, path, bench.file).bench.append((bench.kind, entry))
    return lookup


def join_split(files: DatasetFiles, split: str, reporter: Reporter, sources: Sources | None = None) -> JoinedSplit:
    """One ``ImageRecord`` per image of ``split`` carrying all its annotations, sorted by image id."""
    sources = sources or Sources(files, reporter)
    index = _Index(split)
    image_dir = files.splits[split].image_dir
    panoptic = sources.panoptic(split)
    for record in (panoptic.records.values() if panoptic else []):
        index.get(record.image_id, record.image_path, record.source).panoptic = record
    instances = sources.instances(split)
    if instances is not None:
        for ann in instances.annotations.values():
            path = image_dir / instances.images[ann.image_id].file_name
            record = index.get(ann.image_id, path, instances.file)
            record.instances.append(ann)
            record.instance_set = instances
    captions = sources.captions(split)
    if captions is not None:
        for image_id, texts in captions.captions.items():
            index.get(image_id, image_dir / captions.images[image_id].file_name, captions.file).captions.extend(texts)
    ref_sets = sources.refs(split)
    _add_refs(index, ref_sets, split, files, reporter)
    lookup = _add_bench(index, sources, split, reporter)
    if sources.karpathy is not None:
        for image_id, record in index.records.items():
            entry = sources.karpathy.images.get(image_id)
            if entry is not None:
                record.captions.extend(s for s in entry.sentences if s not in record.captions)
    records = []
    for image_id in sorted(index.records):
        record = index.records[image_id]
        if record.image_path.is_file():
            records.append(record)
        else:
            reporter.report(record.source, f"image_id {image_id}",
                            f"image file {record.image_path} not found; add it or remove the entries naming it.")
    categories = panoptic.categories if panoptic else (instances.categories if instances else CategoryTable())
    return JoinedSplit(split, records, categories, lookup, instances, ref_sets)
