"""COCO-Karpathy captions (``dataset_coco.json`` from Karpathy's ``caption_datasets.zip``).

Splits are ``train``, ``restval`` (both used for training), ``val`` and ``test`` (the 5k retrieval test).
Entries join the COCO 2017 images by ``cocoid`` (the COCO image id), since 2017 folders hold the
2014 images under new names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from find3d.data.formats.coco import load_json
from find3d.data.formats.problems import Reporter, guard, has_keys, list_of, strict

KARPATHY_SPLITS = ("train", "restval", "val", "test")


@dataclass(frozen=True)
class KarpathyImage:
    cocoid: int
    filepath: str
    filename: str
    split: str
    sentences: tuple[str, ...]


@dataclass
class KarpathySet:
    file: Path
    images: dict[int, KarpathyImage]  # by cocoid


def load_karpathy(json_path: str | os.PathLike, reporter: Reporter | None = None) -> KarpathySet:
    reporter = reporter or strict()
    file = Path(json_path)
    payload = load_json(file, reporter)
    images: dict[int, KarpathyImage] = {}
    for i, img in enumerate(list_of(payload, "images", file, reporter) if payload is not None else []):
        with guard(file, f"images[{i}]", reporter):
            if not has_keys(img, ("cocoid", "filename", "split", "sentences"), file, f"images[{i}]", reporter):
                continue
            where = f"images[{i}] (cocoid {img['cocoid']})"
            if img["split"] not in KARPATHY_SPLITS:
                reporter.report(file, where, f"split {img['split']!r} is not one of {list(KARPATHY_SPLITS)}.")
                continue
            sentences = []
            for k, sent in enumerate(img["sentences"] if isinstance(img["sentences"], list) else []):
                raw = sent.get("raw") if isinstance(sent, dict) else None
                if not isinstance(raw, str) or not raw.strip():
                    reporter.report(file, f"{where} sentences[{k}]", "needs a non-empty 'raw' string.")
                    continue
                sentences.append(raw.strip())
            if not sentences:
                reporter.report(file, where, "no usable sentences; drop the image or add its captions.")
                continue
            images[int(img["cocoid"])] = KarpathyImage(
                int(img["cocoid"]), str(img.get("filepath", "")), str(img["filename"]), str(img["split"]),
                tuple(sentences),
            )
    return KarpathySet(file, images)
