"""FIND-Bench loaders: COCO-Entity, COCO-Paragraph and (cross-image) interleave files.

Format: ``{"images": [{id, file_name}], "annotations": [{image_id, sentence, phrase: [{phrase,
start_idx, end_idx, annotation_id, reference?: {image_id, annotation_id}}]}]}``. ``annotation_id``
is a COCO panoptic ``segments_info.id`` of the entry's image (its mask comes from the panoptic PNG);
``reference`` names a segment of another image standing in for the phrase. Offsets are character
offsets with ``sentence[start_idx:end_idx] == phrase``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from find3d.data.formats.coco import ImageInfo, PanopticRecord, load_json, parse_images
from find3d.data.formats.problems import Reporter, guard, has_keys, list_of, strict

BenchKind = Literal["entity", "paragraph", "interleave"]
PHRASE_KEYS = ("phrase", "start_idx", "end_idx", "annotation_id")


@dataclass(frozen=True)
class BenchPhrase:
    text: str
    start: int
    end: int  # exclusive
    annotation_id: int  # panoptic segment id in the entry's image
    reference: tuple[int, int] | None = None  # (image_id, panoptic segment id) in another image


@dataclass(frozen=True)
class BenchEntry:
    image_id: int
    sentence: str
    phrases: tuple[BenchPhrase, ...]
    index: int  # position in the file's 'annotations', for error messages


@dataclass
class BenchFile:
    file: Path
    kind: BenchKind
    images: dict[int, ImageInfo]
    entries: list[BenchEntry]

    def where(self, entry: BenchEntry) -> str:
        return f"annotations[{entry.index}] (image_id {entry.image_id})"


def _phrase(raw: object, sentence: str, file: Path, where: str, reporter: Reporter) -> BenchPhrase | None:
    if not has_keys(raw, PHRASE_KEYS, file, where, reporter):
        return None
    assert isinstance(raw, Mapping)
    text, start, end = raw["phrase"], raw["start_idx"], raw["end_idx"]
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(sentence)):
        reporter.report(file, where, f"offsets [{start}, {end}) lie outside the sentence ({len(sentence)} chars).")
        return None
    if sentence[start:end] != text:
        reporter.report(
            file, where,
            f"offsets [{start}, {end}) slice {sentence[start:end]!r}, not the phrase {text!r}; fix start_idx/end_idx.",
        )
        return None
    reference = raw.get("reference")
    ref: tuple[int, int] | None = None
    if reference is not None:
        if not has_keys(reference, ("image_id", "annotation_id"), file, f"{where} reference", reporter):
            return None
        ref = (int(reference["image_id"]), int(reference["annotation_id"]))
    return BenchPhrase(str(text), start, end, int(raw["annotation_id"]), ref)


def load_findbench(json_path: str | os.PathLike, kind: BenchKind, reporter: Reporter | None = None) -> BenchFile:
    """Read one FIND-Bench file; checks keys, image ids and that every phrase's offsets slice its sentence."""
    reporter = reporter or strict()
    file = Path(json_path)
    payload = load_json(file, reporter)
    if payload is None:
        return BenchFile(file, kind, {}, [])
    images = parse_images(payload, file, reporter)
    entries: list[BenchEntry] = []
    for i, ann in enumerate(list_of(payload, "annotations", file, reporter)):
        with guard(file, f"annotations[{i}]", reporter):
            if not has_keys(ann, ("image_id", "sentence", "phrase"), file, f"annotations[{i}]", reporter):
                continue
            where = f"annotations[{i}] (image_id {ann['image_id']})"
            if int(ann["image_id"]) not in images:
                reporter.report(file, where, f"image_id {ann['image_id']} is not in 'images'; add it there.")
                continue
            if not isinstance(ann["phrase"], list):
                reporter.report(file, where, "'phrase' must be a list of phrase objects.")
                continue
            sentence = str(ann["sentence"])
            phrases = [
                _phrase(p, sentence, file, f"{where} phrase[{j}]", reporter) for j, p in enumerate(ann["phrase"])
            ]
            if None in phrases:
                continue
            entries.append(BenchEntry(int(ann["image_id"]), sentence, tuple(p for p in phrases if p), i))
    return BenchFile(file, kind, images, entries)


def resolve_findbench(bench: BenchFile, panoptic: Mapping[int, PanopticRecord], reporter: Reporter) -> list[BenchEntry]:
    """Entries whose ``annotation_id`` and ``reference`` name existing panoptic segments (others reported)."""
    kept = []
    for entry in bench.entries:
        record = panoptic.get(entry.image_id)
        if record is None:
            reporter.report(
                bench.file, bench.where(entry),
                f"image {entry.image_id} has no usable panoptic annotation (absent from, or rejected in, the "
                "panoptic JSON), so its phrases have no masks; fix the panoptic entry first.",
            )
            continue
        ok = True
        for j, phrase in enumerate(entry.phrases):
            where = f"{bench.where(entry)} phrase[{j}]"
            if record.segment(phrase.annotation_id) is None:
                ok = False
                reporter.report(
                    bench.file, where,
                    f"annotation_id {phrase.annotation_id} not found among the panoptic segments of image "
                    f"{entry.image_id}; use a segments_info id from the panoptic JSON.",
                )
            if phrase.reference is not None:
                ref_image, ref_ann = phrase.reference
                target = panoptic.get(ref_image)
                if target is None or target.segment(ref_ann) is None:
                    ok = False
                    reporter.report(
                        bench.file, f"{where} reference",
                        f"reference (image {ref_image}, annotation {ref_ann}) does not resolve to a panoptic segment; "
                        "point it at an existing image and segments_info id.",
                    )
        if ok:
            kept.append(entry)
    return kept
