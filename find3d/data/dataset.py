"""``FindDataset``: the map-style dataset training and evaluation read.

It discovers the files under a root, joins per image every annotation present (COCO panoptic or
instances, captions, COCO-Karpathy captions, RefCOCO-g refs, FIND-Bench entity / paragraph /
interleave entries) and maps each image to a ``Sample`` with ``FindMapper``. It has ``__len__`` and
``__getitem__`` and needs no torch import, so ``torch.utils.data.DataLoader`` takes it as is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from find3d.config import doc
from find3d.data.formats.discover import discover
from find3d.data.formats.join import ImageRecord, join_split
from find3d.data.formats.problems import strict
from find3d.data.mappers import FindMapper, ReferenceLoader
from find3d.data.samples import Sample, SpatialKind
from find3d.errors import ConfigError, DataError


@dataclass
class DataConfig:
    image_size: int = doc("Training crop size (square); in evaluation, the target length of the shorter side.", 384)
    eval_max_size: int | None = doc(
        "Evaluation canvas side (square) and cap on the longer side; empty means image_size (whole image fits).", None
    )
    augment: bool = doc("Random scale / crop / flip (training); false gives deterministic evaluation geometry.", True)
    min_scale: float = doc("Smallest large-scale-jitter factor relative to fitting the image in image_size.", 0.5)
    max_scale: float = doc("Largest large-scale-jitter factor.", 1.5)
    flip: bool = doc("Horizontal flip with probability 0.5 when augmenting.", True)
    interleave_visual_prob: float = doc(
        "Probability that an interleave phrase is shown as a visual reference instead of text (FIND: 0.5).", 0.5
    )
    max_phrases: int = doc(
        "Most grounding phrases kept per image (a random subset, re-drawn every epoch).", 16, minimum=1)
    max_spatial: int = doc("Most interactive (spatial) prompts drawn per image.", 8, minimum=1)
    max_interleave: int = doc(
        "Most interleave entries kept per image (a random subset, re-drawn every epoch); all of them train "
        "interleave grounding in the same step, the first one interleave retrieval.", 4, minimum=1)
    spatial_kinds: list[str] = doc(
        "Interactive prompt kinds to draw from: point, box, scribble, polygon, circle, mask.",
        factory=lambda: ["point", "box", "scribble", "polygon", "circle"],
    )
    seed: int = doc("Seed of the per-sample random generator (with the epoch and index): same seed, same samples.", 0)

    def __post_init__(self) -> None:
        valid = set(SpatialKind.__args__)
        unknown = [k for k in self.spatial_kinds if k not in valid]
        if unknown or not self.spatial_kinds:
            raise ConfigError(f"data.spatial_kinds: {unknown or 'empty'}; choose from {sorted(valid)}.")
        if not 0.0 <= self.interleave_visual_prob <= 1.0:
            raise ConfigError("data.interleave_visual_prob must lie in [0, 1].")
        if not 0 < self.min_scale <= self.max_scale:
            raise ConfigError("data.min_scale / max_scale: need 0 < min_scale <= max_scale.")
        if self.image_size < 8:
            raise ConfigError("data.image_size must be at least 8.")


class FindDataset:
    """``FindDataset(root, split, config)[i] -> Sample``; ``class_names`` / ``isthing`` describe the classes.

    Class indices are contiguous in the order of the panoptic file's ``categories`` (instances file
    when there is no panoptic file). Problems in the files raise ``DataError`` naming file and entry.
    """

    def __init__(self, root: str | os.PathLike, split: str, config: DataConfig | None = None) -> None:
        self.root = Path(root)
        self.split = split
        self.config = config or DataConfig()
        if not self.root.is_dir():
            what = "is a file, not a dataset folder" if self.root.exists() else "folder does not exist"
            raise DataError(f"{self.root}: {what}; make a dataset there with `find3d make-data --out {self.root}`, "
                            "or pass a COCO-layout dataset folder (train-interface data=DIR, eval --data DIR).")
        files = discover(self.root)
        if split not in files.splits:
            raise DataError(
                f"{self.root}: no '{split}' split found (have {sorted(files.splits) or 'none'}); "
                "check the folder layout (see find3d.data.formats.discover) or run `find3d check-data`."
            )
        joined = join_split(files, split, strict())
        if not joined.records:
            raise DataError(f"{self.root}: split '{split}' has no annotated images; run `find3d check-data`.")
        self.records: list[ImageRecord] = joined.records
        self.class_names: list[str] = joined.categories.names
        self.isthing: list[bool] = joined.categories.isthing
        self.mapper = FindMapper(self.config, ReferenceLoader(joined.panoptic))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw fresh augmentations / prompts each epoch while staying reproducible."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index %= len(self)
        rng = np.random.default_rng([self.config.seed, self.epoch, index])
        return self.mapper(self.records[index], rng)
