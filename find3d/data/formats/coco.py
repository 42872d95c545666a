"""COCO 2017 loaders: panoptic (JSON + PNG), instances (polygons and RLE), captions.

Class indices are contiguous in the order the file's ``categories`` list them (what detectron2 and
FIND do for COCO, where that order is already "things, then stuff"); ``Category.index`` is that
position and ``Segment.category`` / ``InstanceAnnotation.category`` refer to it.

Records only hold file names and ids: images and masks are read on demand, so loading the JSON of
a 118k-image split stays cheap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from find3d.data.formats.problems import Reporter, guard, has_keys, image_exists, list_of, strict
from find3d.errors import DataError, InputError
from find3d.fileio import load_image, read_json


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """Panoptic PNG colours to segment ids: ``id = R + 256 * G + 256**2 * B`` (COCO panoptic API)."""
    rgb = np.asarray(rgb, dtype=np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids to panoptic PNG colours (inverse of ``rgb2id``), ``(H, W, 3) uint8``."""
    ids = np.asarray(ids, dtype=np.uint32)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def load_json(path: str | os.PathLike, reporter: Reporter) -> Any | None:
    """``read_json`` whose errors (missing file, malformed JSON) go to ``reporter``."""
    try:
        return read_json(path)
    except DataError as err:
        reporter.report(path, "whole file", str(err).removeprefix(f"{path}: "))
        return None


def read_rgb(path: str | os.PathLike, file: str | os.PathLike, where: str) -> np.ndarray:
    """Read an image named by a dataset entry; failures become ``DataError`` naming file and entry."""
    try:
        return load_image(path)
    except InputError as err:
        raise DataError(f"{file}: {where}: {err} Copy the image there or regenerate the dataset.") from err


@dataclass(frozen=True)
class Category:
    id: int  # category id as written in the file
    name: str
    isthing: bool
    index: int  # contiguous class index (position in the file's ``categories``)


@dataclass
class CategoryTable:
    categories: list[Category] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.by_id = {cat.id: cat for cat in self.categories}

    @property
    def names(self) -> list[str]:
        return [cat.name for cat in self.categories]

    @property
    def isthing(self) -> list[bool]:
        return [cat.isthing for cat in self.categories]


def parse_categories(payload: Any, file: str | os.PathLike, reporter: Reporter) -> CategoryTable:
    """Categories in file order; ``isthing`` defaults to True (instances files have no stuff)."""
    categories: list[Category] = []
    for i, cat in enumerate(list_of(payload, "categories", file, reporter)):
        with guard(file, f"categories[{i}]", reporter):
            if not has_keys(cat, ("id", "name"), file, f"categories[{i}]", reporter):
                continue
            if any(c.id == cat["id"] for c in categories):
                reporter.report(file, f"categories[{i}] (id {cat['id']})", "duplicate category id; make ids unique.")
                continue
            categories.append(Category(int(cat["id"]), str(cat["name"]), bool(cat.get("isthing", 1)), len(categories)))
    return CategoryTable(categories)


@dataclass(frozen=True)
class ImageInfo:
    id: int
    file_name: str
    width: int | None = None
    height: int | None = None


def parse_images(payload: Any, file: str | os.PathLike, reporter: Reporter) -> dict[int, ImageInfo]:
    images: dict[int, ImageInfo] = {}
    for i, img in enumerate(list_of(payload, "images", file, reporter)):
        with guard(file, f"images[{i}]", reporter):
            if not has_keys(img, ("id", "file_name"), file, f"images[{i}]", reporter):
                continue
            image_id = int(img["id"])
            images[image_id] = ImageInfo(image_id, str(img["file_name"]), img.get("width"), img.get("height"))
    return images


# ----------------------------------------------------------------------------------------- panoptic


@dataclass(frozen=True)
class PanopticSegment:
    id: int  # segment id in the PNG (rgb2id)
    category_id: int
    category: int  # contiguous class index
    isthing: bool
    iscrowd: bool
    bbox: tuple[float, float, float, float] | None
    area: int | None


@dataclass
class PanopticRecord:
    """One image of a COCO panoptic file; the PNG is decoded only when masks are asked for."""

    image_id: int
    image_path: Path
    png_path: Path
    segments: list[PanopticSegment]
    source: Path  # the panoptic JSON, for error messages
    width: int | None = None
    height: int | None = None

    def segment(self, segment_id: int) -> PanopticSegment | None:
        return next((s for s in self.segments if s.id == segment_id), None)

    def load_image(self) -> np.ndarray:
        return read_rgb(self.image_path, self.source, f"image_id {self.image_id}")

    def load_ids(self) -> np.ndarray:
        """The PNG as an ``(H, W) uint32`` array of segment ids."""
        return rgb2id(read_rgb(self.png_path, self.source, f"image_id {self.image_id} (panoptic PNG)"))

    def masks(self, reporter: Reporter | None = None) -> dict[int, np.ndarray]:
        """``segment id -> (H, W) bool``; a listed segment that is absent from the PNG is a problem."""
        reporter = reporter or strict()
        ids = self.load_ids()
        where = f"image_id {self.image_id} ({self.png_path.name})"
        if self.width is not None and self.height is not None and ids.shape != (self.height, self.width):
            reporter.report(
                self.source, where,
                f"PNG is {ids.shape[1]}x{ids.shape[0]} but the image is {self.width}x{self.height}; "
                "re-export the PNG at the image's size.",
            )
        out: dict[int, np.ndarray] = {}
        for seg in self.segments:
            mask = ids == seg.id
            if not mask.any():
                reporter.report(
                    self.source, f"{where} segment {seg.id}",
                    "segment id absent from the PNG (empty mask); drop it from segments_info or fix the PNG.",
                )
                continue
            out[seg.id] = mask
        return out


@dataclass
class PanopticSet:
    file: Path
    categories: CategoryTable
    records: dict[int, PanopticRecord]


def _panoptic_segment(
    seg: Any, table: CategoryTable, file: Path, where: str, reporter: Reporter
) -> PanopticSegment | None:
    if not has_keys(seg, ("id", "category_id"), file, where, reporter):
        return None
    cat = table.by_id.get(int(seg["category_id"]))
    if cat is None:
        reporter.report(file, where, f"category_id {seg['category_id']} is not in 'categories'; add it or fix the id.")
        return None
    bbox = tuple(float(v) for v in seg["bbox"]) if "bbox" in seg else None
    area = int(seg["area"]) if "area" in seg else None
    return PanopticSegment(int(seg["id"]), cat.id, cat.index, cat.isthing, bool(seg.get("iscrowd", 0)), bbox, area)


def load_panoptic(
    json_path: str | os.PathLike,
    png_dir: str | os.PathLike,
    image_dir: str | os.PathLike,
    reporter: Reporter | None = None,
) -> PanopticSet:
    """Read ``panoptic_{split}2017.json``; checks keys, categories, and that image and PNG files exist."""
    reporter = reporter or strict()
    file, png_dir, image_dir = Path(json_path), Path(png_dir), Path(image_dir)
    payload = load_json(file, reporter)
    if payload is None:
        return PanopticSet(file, CategoryTable(), {})
    table = parse_categories(payload, file, reporter)
    images = parse_images(payload, file, reporter)
    records: dict[int, PanopticRecord] = {}
    for i, ann in enumerate(list_of(payload, "annotations", file, reporter)):
        with guard(file, f"annotations[{i}]", reporter):
            if not has_keys(ann, ("image_id", "file_name", "segments_info"), file, f"annotations[{i}]", reporter):
                continue
            image_id = int(ann["image_id"])
            where = f"annotations[{i}] (image_id {image_id})"
            info = images.get(image_id)
            # The panoptic PNG shares the image's stem; the image name comes from 'images' when listed.
            image_name = info.file_name if info else Path(ann["file_name"]).stem + ".jpg"
            image_path, png_path = image_dir / image_name, png_dir / ann["file_name"]
            if not (image_exists(image_path, file, where, reporter) and image_exists(png_path, file, where, reporter)):
                continue
            if not isinstance(ann["segments_info"], list):
                reporter.report(file, where, "'segments_info' must be a list; fix or regenerate the file.")
                continue
            segments, seen = [], set()
            for j, seg in enumerate(ann["segments_info"]):
                parsed = _panoptic_segment(seg, table, file, f"{where} segments_info[{j}]", reporter)
                if parsed is None:
                    continue
                if parsed.id in seen:
                    reporter.report(file, f"{where} segment {parsed.id}", "duplicate segment id; make ids unique.")
                    continue
                seen.add(parsed.id)
                segments.append(parsed)
            width, height = (info.width, info.height) if info else (None, None)
            records[image_id] = PanopticRecord(image_id, image_path, png_path, segments, file, width, height)
    return PanopticSet(file, table, records)


# ---------------------------------------------------------------------------------------- instances


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Polygons, uncompressed RLE or compressed RLE to an ``(H, W) bool`` mask (pycocotools).

    Raises ``ValueError`` for a malformed segmentation; callers turn it into a reported problem.
    """
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if isinstance(p, list)]
        if not polygons or len(polygons) != len(segmentation) or any(len(p) < 6 or len(p) % 2 for p in polygons):
            raise ValueError("polygons must be lists of at least 3 (x, y) pairs")
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and {"counts", "size"} <= segmentation.keys():
        if list(segmentation["size"]) != [height, width]:
            raise ValueError(f"RLE size {segmentation['size']} differs from the image size [{height}, {width}]")
        counts = segmentation["counts"]
        if isinstance(counts, list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            rle = {"size": [height, width], "counts": counts.encode() if isinstance(counts, str) else counts}
    else:
        raise ValueError("segmentation must be a list of polygons or an RLE object with 'counts' and 'size'")
    return mask_utils.decode(rle).astype(bool)


@dataclass(frozen=True)
class InstanceAnnotation:
    id: int
    image_id: int
    category_id: int
    category: int  # contiguous class index
    iscrowd: bool
    bbox: tuple[float, float, float, float] | None
    segmentation: Any  # polygons or RLE, decoded by ``InstancesSet.mask``


@dataclass
class InstancesSet:
    file: Path
    image_dir: Path
    images: dict[int, ImageInfo]
    annotations: dict[int, InstanceAnnotation]
    categories: CategoryTable

    def __post_init__(self) -> None:
        self._by_image: dict[int, list[InstanceAnnotation]] = {}
        for ann in self.annotations.values():
            self._by_image.setdefault(ann.image_id, []).append(ann)

    def by_image(self, image_id: int) -> list[InstanceAnnotation]:
        return self._by_image.get(image_id, [])

    def mask(self, ann_id: int, reporter: Reporter | None = None) -> np.ndarray | None:
        """The annotation's mask; malformed or empty segmentations are reported (``None`` if collected)."""
        reporter = reporter or strict()
        ann = self.annotations[ann_id]
        info = self.images[ann.image_id]
        where = f"annotation id {ann_id} (image_id {ann.image_id})"
        if info.width is None or info.height is None:
            reporter.report(self.file, f"image_id {ann.image_id}", "image has no width/height; add them.")
            return None
        try:
            mask = decode_segmentation(ann.segmentation, int(info.height), int(info.width))
        except (ValueError, TypeError) as err:
            reporter.report(self.file, where, f"malformed segmentation ({err}); fix or drop the annotation.")
            return None
        if not mask.any():
            reporter.report(self.file, where, "empty mask (no pixel inside the segmentation); drop the annotation.")
            return None
        return mask


def load_instances(
    json_path: str | os.PathLike, image_dir: str | os.PathLike, reporter: Reporter | None = None
) -> InstancesSet:
    """Read an instances file (``instances_{split}2017.json`` or RefCOCO-g's ``instances.json``).

    Image files are not required here: RefCOCO-g's instances describe COCO images stored elsewhere.
    """
    reporter = reporter or strict()
    file = Path(json_path)
    return instances_from_payload(load_json(file, reporter), file, Path(image_dir), reporter)


def instances_from_payload(payload: Any, file: Path, image_dir: Path, reporter: Reporter) -> InstancesSet:
    """Parse an already-read instances payload (``None`` when the file could not be read)."""
    if payload is None:
        return InstancesSet(file, image_dir, {}, {}, CategoryTable())
    table = parse_categories(payload, file, reporter)
    images = parse_images(payload, file, reporter)
    annotations: dict[int, InstanceAnnotation] = {}
    keys = ("id", "image_id", "category_id", "segmentation")
    for i, ann in enumerate(list_of(payload, "annotations", file, reporter)):
        with guard(file, f"annotations[{i}]", reporter):
            if not has_keys(ann, keys, file, f"annotations[{i}]", reporter):
                continue
            where = f"annotations[{i}] (id {ann['id']})"
            cat = table.by_id.get(int(ann["category_id"]))
            if int(ann["image_id"]) not in images:
                reporter.report(file, where, f"image_id {ann['image_id']} is not in 'images'; add the image.")
            elif cat is None:
                reporter.report(file, where, f"category_id {ann['category_id']} is not in 'categories'.")
            else:
                bbox = tuple(float(v) for v in ann["bbox"]) if "bbox" in ann else None
                annotations[int(ann["id"])] = InstanceAnnotation(
                    int(ann["id"]), int(ann["image_id"]), cat.id, cat.index, bool(ann.get("iscrowd", 0)), bbox,
                    ann["segmentation"],
                )
    return InstancesSet(file, image_dir, images, annotations, table)


# ----------------------------------------------------------------------------------------- captions


@dataclass
class CaptionSet:
    file: Path
    images: dict[int, ImageInfo]
    captions: dict[int, list[str]]


def load_captions(json_path: str | os.PathLike, reporter: Reporter | None = None) -> CaptionSet:
    """Read ``captions_{split}2017.json`` into ``image_id -> [caption, ...]``."""
    reporter = reporter or strict()
    file = Path(json_path)
    payload = load_json(file, reporter)
    if payload is None:
        return CaptionSet(file, {}, {})
    images = parse_images(payload, file, reporter)
    captions: dict[int, list[str]] = {}
    for i, ann in enumerate(list_of(payload, "annotations", file, reporter)):
        with guard(file, f"annotations[{i}]", reporter):
            if not has_keys(ann, ("image_id", "caption"), file, f"annotations[{i}]", reporter):
                continue
            if int(ann["image_id"]) not in images:
                reporter.report(file, f"annotations[{i}]", f"image_id {ann['image_id']} is not in 'images'.")
            elif not str(ann["caption"]).strip():
                reporter.report(file, f"annotations[{i}]", "empty caption; drop the entry.")
            else:
                captions.setdefault(int(ann["image_id"]), []).append(str(ann["caption"]).strip())
    return CaptionSet(file, images, captions)
