"""What dataset mappers hand to the interface: one ``Sample`` per image, all tasks together.

Loaders (``find3d.data.formats``) read records from official or generated files; mappers
(``find3d.data.mappers``) turn records into ``Sample`` objects (resized/cropped, masks aligned,
spatial prompts drawn, interleave entities made visual). The interface's collate turns a list of
samples into tensors. Arrays are numpy, masks are ``(H, W) bool`` at the sample image's size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

SpatialKind = Literal["point", "box", "scribble", "polygon", "circle", "mask"]


@dataclass
class Segment:
    """One panoptic segment: a thing instance or a stuff region."""

    mask: np.ndarray  # (H, W) bool
    category: int  # contiguous class index into the dataset's ``class_names``
    isthing: bool
    segment_id: int  # id in the panoptic PNG (``rgb2id``), kept for tracing back to the file


@dataclass
class Phrase:
    """A referring expression / entity phrase and the mask it refers to in this image."""

    text: str
    mask: np.ndarray  # (H, W) bool


@dataclass
class SpatialPrompt:
    """An interactive prompt drawn on a segment (``prompt`` rasterised) and the segment itself."""

    kind: SpatialKind
    prompt: np.ndarray  # (H, W) bool: the clicked point(s) / box outline / scribble, rasterised
    target: np.ndarray  # (H, W) bool
    box: tuple[float, float, float, float] | None = None  # (x0, y0, x1, y1) pixels, for kind == "box"


@dataclass
class VisualRef:
    """A visual reference: a segment of (usually another) image standing in for a phrase."""

    image: np.ndarray  # (h, w, 3) uint8, the reference image
    mask: np.ndarray  # (h, w) bool, the referenced segment in it (may be a drawn point/scribble)
    source: str = ""  # "image_id/annotation_id" for tracing


@dataclass
class InterleaveEntity:
    """One entity of an interleave entry: shown as text, or as a visual reference when ``ref`` is set."""

    text: str  # the phrase as written in the sentence
    span: tuple[int, int]  # [start, end) character offsets of ``text`` in the entry's sentence
    target: np.ndarray  # (H, W) bool: where the entity is in the sample's image
    ref: VisualRef | None = None


@dataclass
class InterleaveEntry:
    """A sentence whose entities (``span``s) are phrases or visual references."""

    sentence: str
    entities: list[InterleaveEntity]

    def parts(self) -> list[str | VisualRef]:
        """The entry as an ordered list of text chunks and visual references."""
        out: list[str | VisualRef] = []
        cursor = 0
        for entity in sorted(self.entities, key=lambda e: e.span[0]):
            start, end = entity.span
            if entity.ref is None:
                continue
            if start > cursor:
                out.append(self.sentence[cursor:start])
            out.append(entity.ref)
            cursor = end
        if cursor < len(self.sentence):
            out.append(self.sentence[cursor:])
        return out


@dataclass
class Sample:
    """Everything one image contributes to multi-task training or evaluation."""

    key: str  # stable, unique id, e.g. "coco/val2017/000000139"
    image: np.ndarray  # (H, W, 3) uint8
    segments: list[Segment] = field(default_factory=list)
    phrases: list[Phrase] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    spatial: list[SpatialPrompt] = field(default_factory=list)
    interleave: list[InterleaveEntry] = field(default_factory=list)
