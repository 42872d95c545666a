"""Find which dataset files are present under a root, per split.

Two layouts are accepted for every file (first match wins, find3d's own names first):

==================  =========================================  ===============================================
file                find3d / data engine                       official (COCO, Mask2Former, FIND, X-Decoder, REFER)
==================  =========================================  ===============================================
images              ``{split}2017/``                           same
panoptic JSON       ``annotations/panoptic_{split}2017.json``  same
panoptic PNGs       ``annotations/panoptic_{split}2017/``      ``panoptic_{split}2017/`` (Mask2Former)
instances           ``annotations/instances_{split}2017.json`` same
captions            ``annotations/captions_{split}2017.json``  same
COCO-Entity         ``findbench/coco_entity_{split}.json``     ``annotations/entity_{split}2017.json`` (FIND)
COCO-Paragraph      ``findbench/coco_paragraph_{split}.json``  ``annotations/entity_{split}2017_long.json``
interleave          ``findbench/coco_interleave_{split}.json`` ``annotations/interleave_{split}2017.json``
RefCOCO-g           ``refcocog/refs(umd).p`` + ``instances.json``  ``annotations/refcocog/`` (same files), or
                                                               ``annotations/refcocog_umd_{split}.json``
Karpathy            ``karpathy/dataset_coco.json``             ``dataset_coco.json``, ``annotations/dataset_coco.json``
==================  =========================================  ===============================================

The root may be the folder holding these or its parent when they sit in ``coco/`` (FIND's
``data/coco/`` layout). FIND's Karpathy ``.arrow`` files are not read: use ``dataset_coco.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "val")


@dataclass
class SplitFiles:
    """The files of one COCO 2017 split (``None`` where absent)."""

    split: str
    image_dir: Path
    panoptic_json: Path | None = None
    panoptic_dir: Path | None = None
    instances_json: Path | None = None
    captions_json: Path | None = None
    entity_json: Path | None = None
    paragraph_json: Path | None = None
    interleave_json: Path | None = None
    refs_json: Path | None = None  # X-Decoder's refcocog_umd_{split}.json

    def present(self) -> list[Path]:
        paths = [self.panoptic_json, self.instances_json, self.captions_json, self.entity_json,
                 self.paragraph_json, self.interleave_json, self.refs_json]
        return [p for p in paths if p is not None]


@dataclass
class DatasetFiles:
    """What ``discover`` found: per-split files plus the split-independent RefCOCO-g and Karpathy files."""

    root: Path
    splits: dict[str, SplitFiles] = field(default_factory=dict)
    refs_pickle: Path | None = None
    refs_instances: Path | None = None
    karpathy_json: Path | None = None

    def present(self) -> list[Path]:
        paths = [p for files in self.splits.values() for p in files.present()]
        extra = [self.refs_pickle, self.refs_instances, self.karpathy_json]
        return paths + [p for p in extra if p is not None]

    def image_dirs(self) -> list[Path]:
        return [files.image_dir for files in self.splits.values()]


def _first(root: Path, names: list[str], want_dir: bool = False) -> Path | None:
    for name in names:
        path = root / name
        if (path.is_dir() if want_dir else path.is_file()):
            return path
    return None


def _split_files(root: Path, split: str) -> SplitFiles:
    s = f"{split}2017"
    return SplitFiles(
        split=split,
        image_dir=root / s,
        panoptic_json=_first(root, [f"annotations/panoptic_{s}.json"]),
        panoptic_dir=_first(root, [f"annotations/panoptic_{s}", f"panoptic_{s}"], want_dir=True),
        instances_json=_first(root, [f"annotations/instances_{s}.json"]),
        captions_json=_first(root, [f"annotations/captions_{s}.json"]),
        entity_json=_first(root, [f"findbench/coco_entity_{split}.json", f"annotations/entity_{s}.json"]),
        paragraph_json=_first(root, [f"findbench/coco_paragraph_{split}.json", f"annotations/entity_{s}_long.json"]),
        interleave_json=_first(root, [f"findbench/coco_interleave_{split}.json", f"annotations/interleave_{s}.json"]),
        refs_json=_first(root, [f"annotations/refcocog_umd_{split}.json"]),
    )


def discover(root: str | os.PathLike) -> DatasetFiles:
    """The dataset files under ``root`` (or ``root/coco``); a split is listed when any of its files exist."""
    root = Path(root)
    if not (root / "annotations").is_dir() and (root / "coco").is_dir():
        root = root / "coco"
    found = DatasetFiles(root)
    for split in SPLITS:
        files = _split_files(root, split)
        if files.present() or files.image_dir.is_dir():
            found.splits[split] = files
    ref_dir = _first(root, ["refcocog", "annotations/refcocog"], want_dir=True)
    if ref_dir is not None:
        found.refs_pickle = _first(ref_dir, ["refs(umd).p", "refs(google).p"])
        found.refs_instances = _first(ref_dir, ["instances.json"])
    karpathy = ["karpathy/dataset_coco.json", "dataset_coco.json", "annotations/dataset_coco.json"]
    found.karpathy_json = _first(root, karpathy)
    return found
