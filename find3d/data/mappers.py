"""Dataset mappers: one joined ``ImageRecord`` -> one multi-task ``Sample`` (detectron2 / Mask2Former style).

Geometry is one affine map per sample (scale, crop or pad, optional flip) applied with OpenCV to the
image (bilinear) and to every mask (nearest), so masks stay aligned with the pixels by construction.
Training uses large-scale jitter as Mask2Former / FIND do; evaluation is deterministic (resize,
then centre on a fixed canvas). Spatial prompts and visual references are drawn *after* the
geometry, on the masks the model will see. All randomness comes from the ``numpy.random.Generator``
passed in, so a seed reproduces a sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import cv2
import numpy as np

from find3d.data.formats.coco import PanopticRecord
from find3d.data.formats.findbench import BenchEntry
from find3d.data.formats.join import ImageRecord
from find3d.data.samples import (
    InterleaveEntity,
    InterleaveEntry,
    Phrase,
    Sample,
    Segment,
    SpatialKind,
    SpatialPrompt,
    VisualRef,
)
from find3d.errors import DataError

if TYPE_CHECKING:
    from find3d.data.dataset import DataConfig

# Shapes FIND draws on a segment when an interleave phrase is shown visually (boxes are spatial-only).
VISUAL_REF_KINDS: tuple[SpatialKind, ...] = ("point", "scribble", "polygon", "circle")


# ------------------------------------------------------------------------------------------ geometry


@dataclass(frozen=True)
class Affine:
    """A source-to-output pixel map ``[x', y'] = M @ [x, y, 1]`` (pixel-centre convention) and output size."""

    matrix: np.ndarray  # (2, 3) float64
    size: tuple[int, int]  # (height, width) of the output

    def image(self, image: np.ndarray) -> np.ndarray:
        h, w = self.size
        return cv2.warpAffine(image, self.matrix, (w, h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))

    def mask(self, mask: np.ndarray) -> np.ndarray:
        h, w = self.size
        out = cv2.warpAffine(mask.astype(np.uint8), self.matrix, (w, h), flags=cv2.INTER_NEAREST,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return out.astype(bool)


def _affine(scale: float, offset_x: float, offset_y: float, size: tuple[int, int], flip: bool) -> Affine:
    """Scale about pixel centres, then shift by ``-offset`` (crop) or ``+`` (pad), then mirror if ``flip``."""
    # A pixel centre at x + 0.5 maps to s * (x + 0.5); back to integer-index coordinates.
    tx = 0.5 * scale - 0.5 - offset_x
    ty = 0.5 * scale - 0.5 - offset_y
    matrix = np.array([[scale, 0.0, tx], [0.0, scale, ty]], dtype=np.float64)
    if flip:
        matrix[0] = [-scale, 0.0, size[1] - 1 - tx]
    return Affine(matrix, size)


def train_transform(height: int, width: int, size: int, scale_range: tuple[float, float], flip: bool,
                    rng: np.random.Generator) -> Affine:
    """Large-scale jitter: fit the longer side to ``size`` times a random scale, random crop (or pad
    bottom/right) to ``size x size``, horizontal flip with probability 0.5 when ``flip``."""
    scale = size / max(height, width) * rng.uniform(*scale_range)
    scaled_h, scaled_w = round(height * scale), round(width * scale)
    crop_y = int(rng.integers(0, max(scaled_h - size, 0) + 1))
    crop_x = int(rng.integers(0, max(scaled_w - size, 0) + 1))
    mirror = bool(flip and rng.random() < 0.5)
    return _affine(scale, crop_x, crop_y, (size, size), mirror)


def eval_transform(height: int, width: int, size: int, max_size: int) -> Affine:
    """Deterministic: shorter side to ``size`` unless the longer would pass ``max_size``, centred on a
    ``max_size x max_size`` canvas (nothing is cropped, so every target survives)."""
    scale = min(size / min(height, width), max_size / max(height, width))
    pad_x = (max_size - round(width * scale)) // 2
    pad_y = (max_size - round(height * scale)) // 2
    return _affine(scale, -pad_x, -pad_y, (max_size, max_size), False)


# ----------------------------------------------------------------------------------- spatial prompts


def _stroke(shape: tuple[int, ...]) -> int:
    """Stroke / dot radius in pixels: ~1.5 % of the image, at least 1 (clicks stay visible at any size)."""
    return max(1, round(0.015 * max(shape[:2])))


def _interior_points(target: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` random (x, y) pixels of ``target``, preferring pixels away from its border."""
    dist = cv2.distanceTransform(target.astype(np.uint8), cv2.DIST_L2, 3)
    # Keep the deeper half of the mask when it has one, so clicks are not on the boundary.
    ys, xs = np.nonzero(dist >= max(1.0, 0.5 * float(dist.max())))
    if len(ys) == 0:
        ys, xs = np.nonzero(target)
    pick = rng.integers(0, len(ys), size=count)
    return np.stack([xs[pick], ys[pick]], axis=1).astype(np.int32)


def draw_prompt(kind: SpatialKind, target: np.ndarray, rng: np.random.Generator) -> SpatialPrompt:
    """Draw a point / box / scribble / polygon / circle / mask prompt on a non-empty ``target`` mask.

    Every kind but ``box`` is clipped to the target, so the prompt lies inside it; a box prompt is the
    outline of the target's bounding box (the target lies inside the box).
    """
    if not target.any():
        raise ValueError("cannot draw a prompt on an empty mask")
    canvas = np.zeros(target.shape, dtype=np.uint8)
    radius = _stroke(target.shape)
    box = None
    if kind == "point":
        (x, y), = _interior_points(target, 1, rng)
        cv2.circle(canvas, (int(x), int(y)), radius, 1, thickness=-1)
    elif kind == "scribble":
        points = _interior_points(target, int(rng.integers(3, 6)), rng)
        # Order along the wider axis so the stroke sweeps across the object instead of zig-zagging.
        spread = points.max(axis=0) - points.min(axis=0)
        points = points[np.argsort(points[:, int(np.argmax(spread))])]
        cv2.polylines(canvas, [points.reshape(-1, 1, 2)], False, 1, thickness=radius)
    elif kind == "polygon":
        points = _interior_points(target, int(rng.integers(3, 8)), rng)
        cv2.fillPoly(canvas, [cv2.convexHull(points)], 1)
    elif kind == "circle":
        dist = cv2.distanceTransform(target.astype(np.uint8), cv2.DIST_L2, 3)
        (x, y), = _interior_points(target, 1, rng)
        cv2.circle(canvas, (int(x), int(y)), max(1, int(rng.uniform(0.3, 1.0) * dist[y, x])), 1, thickness=-1)
    elif kind == "box":
        ys, xs = np.nonzero(target)
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
        cv2.rectangle(canvas, (x0, y0), (x1, y1), 1, thickness=1)
        box = (float(x0), float(y0), float(x1 + 1), float(y1 + 1))
        return SpatialPrompt(kind, canvas.astype(bool), target, box)
    elif kind == "mask":
        canvas = target.astype(np.uint8)
    else:
        raise ValueError(f"unknown spatial prompt kind {kind!r}")
    prompt = canvas.astype(bool) & target
    if not prompt.any():  # a stroke thinner than the rasteriser can vanish on a 1-pixel sliver
        ys, xs = np.nonzero(target)
        prompt[ys[0], xs[0]] = True
    return SpatialPrompt(kind, prompt, target, box)


# ---------------------------------------------------------------------------------- visual references


class ReferenceLoader:
    """Turns a FIND-Bench ``reference`` (image id, panoptic segment id) into a ``VisualRef``."""

    def __init__(self, panoptic: dict[int, PanopticRecord]) -> None:
        self.panoptic = panoptic
        # References repeat (nearest same-class segments); keep a few decoded images around.
        self._load = lru_cache(maxsize=8)(self._decode)

    def __getstate__(self) -> dict:
        # DataLoader workers started with 'spawn' pickle the dataset; the cache is rebuilt there.
        return {"panoptic": self.panoptic}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["panoptic"])

    def _decode(self, image_id: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        record = self.panoptic.get(image_id)
        if record is None:
            raise DataError(f"reference image {image_id}: no panoptic annotation; run `find3d check-data`.")
        return record.load_image(), record.masks()

    def __call__(self, image_id: int, segment_id: int) -> VisualRef:
        image, masks = self._load(image_id)
        if segment_id not in masks:
            raise DataError(f"reference image {image_id}: segment {segment_id} not found; run `find3d check-data`.")
        return VisualRef(image=image, mask=masks[segment_id], source=f"{image_id}/{segment_id}")


# ---------------------------------------------------------------------------------------- the mapper


def _subsample(items: list, limit: int, rng: np.random.Generator, shuffle: bool) -> list:
    """At most ``limit`` items, shuffled when ``shuffle``. A subset is always random, augmenting or not:
    the first ``limit`` would train on the same items every epoch."""
    if (shuffle or len(items) > limit) and len(items) > 1:
        items = [items[i] for i in rng.permutation(len(items))]
    return items[:limit]


class FindMapper:
    """Record -> ``Sample`` with panoptic segments, grounding phrases, spatial prompts, captions and
    interleave entries. ``train=True`` augments and shuffles; ``False`` is deterministic geometry."""

    def __init__(self, config: DataConfig, references: Callable[[int, int], VisualRef] | None = None,
                 train: bool | None = None) -> None:
        self.config = config
        self.references = references
        self.train = config.augment if train is None else train

    def transform(self, height: int, width: int, rng: np.random.Generator) -> Affine:
        cfg = self.config
        if self.train:
            return train_transform(height, width, cfg.image_size, (cfg.min_scale, cfg.max_scale), cfg.flip, rng)
        return eval_transform(height, width, cfg.image_size, cfg.eval_max_size or cfg.image_size)

    def __call__(self, record: ImageRecord, rng: np.random.Generator) -> Sample:
        image = record.load_image()
        geometry = self.transform(image.shape[0], image.shape[1], rng)
        out_image = geometry.image(image)
        panoptic_masks = record.panoptic.masks() if record.panoptic is not None else {}
        segments = self._segments(record, panoptic_masks, geometry)
        return Sample(
            key=record.key,
            image=out_image,
            segments=segments,
            phrases=self._phrases(record, panoptic_masks, geometry, rng),
            captions=list(record.captions),
            spatial=self._spatial(segments, rng),
            interleave=self._interleave(record, panoptic_masks, geometry, out_image, rng),
        )

    def _segments(self, record: ImageRecord, masks: dict[int, np.ndarray], geometry: Affine) -> list[Segment]:
        """Panoptic segments (crowd regions skipped, as Mask2Former does); instances when no panoptic."""
        out = []
        if record.panoptic is not None:
            for seg in record.panoptic.segments:
                if not seg.iscrowd and seg.id in masks:
                    out.append(Segment(geometry.mask(masks[seg.id]), seg.category, seg.isthing, seg.id))
        elif record.instance_set is not None:
            for ann in record.instances:
                mask = record.instance_set.mask(ann.id) if not ann.iscrowd else None
                if mask is not None:
                    out.append(Segment(geometry.mask(mask), ann.category, True, ann.id))
        return [s for s in out if s.mask.any()]  # crops can remove a segment entirely

    def _phrases(self, record: ImageRecord, masks: dict[int, np.ndarray], geometry: Affine,
                 rng: np.random.Generator) -> list[Phrase]:
        """Grounding: every RefCOCO-g sentence and every COCO-Entity phrase with its mask."""
        pairs: list[tuple[str, np.ndarray]] = []
        for ref, instances in record.refs:
            mask = instances.mask(ref.ann_id)
            if mask is not None:
                transformed = geometry.mask(mask)
                pairs.extend((sentence, transformed) for sentence in ref.sentences)
        for kind, entry in record.bench:
            if kind == "entity":
                pairs.extend((p.text, geometry.mask(masks[p.annotation_id])) for p in entry.phrases)
        phrases = [Phrase(text, mask) for text, mask in pairs if mask.any()]
        return _subsample(phrases, self.config.max_phrases, rng, self.train)

    def _spatial(self, segments: Sequence[Segment], rng: np.random.Generator) -> list[SpatialPrompt]:
        """Interactive prompts: one random kind drawn on each of up to ``max_spatial`` random segments."""
        chosen = _subsample(list(segments), self.config.max_spatial, rng, shuffle=True)
        kinds = self.config.spatial_kinds
        return [draw_prompt(kinds[int(rng.integers(len(kinds)))], seg.mask, rng) for seg in chosen]

    def _interleave(self, record: ImageRecord, masks: dict[int, np.ndarray], geometry: Affine,
                    image: np.ndarray, rng: np.random.Generator) -> list[InterleaveEntry]:
        entries = [self._entry(record.image_id, entry, masks, geometry, image, rng) for _, entry in record.bench]
        return _subsample(entries, self.config.max_interleave, rng, self.train)

    def _entry(self, image_id: int, entry: BenchEntry, masks: dict[int, np.ndarray], geometry: Affine,
               image: np.ndarray, rng: np.random.Generator) -> InterleaveEntry:
        """Each phrase becomes visual with probability ``interleave_visual_prob`` (FIND): a cross-image
        ``reference`` travels as that image and segment; otherwise a shape drawn on the segment itself."""
        entities = []
        for phrase in entry.phrases:
            target = geometry.mask(masks[phrase.annotation_id])
            ref = None
            if rng.random() < self.config.interleave_visual_prob:
                if phrase.reference is not None and self.references is not None:
                    ref = self.references(*phrase.reference)
                elif phrase.reference is None and target.any():
                    kind = VISUAL_REF_KINDS[int(rng.integers(len(VISUAL_REF_KINDS)))]
                    drawn = draw_prompt(kind, target, rng)
                    ref = VisualRef(image=image, mask=drawn.prompt, source=f"{image_id}/{phrase.annotation_id}")
            entities.append(InterleaveEntity(phrase.text, (phrase.start, phrase.end), target, ref))
        return InterleaveEntry(entry.sentence, entities)
