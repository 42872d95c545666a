"""One rendered image -> its files (JPEG, panoptic PNG) and a compact per-image record.

The record carries everything the JSON writers and the language generator need (segment ids,
categories, colours, boxes, areas, RLE masks, image-space centroids, mean depth) so that the
rendering workers return small picklable dicts and never hold the whole dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from find3d.data.engine.catalog import STUFF, category_by_name
from find3d.data.engine.scene import Rendered, SceneSpec

MIN_THING_AREA = 30  # pixels; smaller visible slivers are left unlabelled (void) rather than annotated
JPEG_QUALITY = 92


@dataclass(frozen=True)
class ImageJob:
    image_id: int
    split: str  # "train" or "val"
    seed: int  # the dataset seed; the image's own stream is derived from (seed, image_id)
    size: int
    out: str
    clutter: float = 0.0  # share of images whose objects touch (make-data --clutter)


def file_stem(image_id: int) -> str:
    return f"{image_id:012d}"


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """COCO panoptic encoding: id = R + 256 * G + 256^2 * B."""
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def segment_map(rendered: Rendered, spec: SceneSpec, bodies: dict[int, int | str]) -> tuple[np.ndarray, list[dict]]:
    """Panoptic id map and segment descriptions; tiny or absent things become void (0)."""
    ids = np.zeros(rendered.body.shape, dtype=np.int64)
    segments: list[dict[str, Any]] = []
    per_category: dict[int, int] = {}
    # Things first in spec order, then stuff in catalogue order: a stable order for stable ids.
    things = sorted((item for item in bodies.items() if not isinstance(item[1], str)), key=lambda item: item[1])
    by_name = {what: body for body, what in bodies.items() if isinstance(what, str)}
    stuff = [(by_name[s.name], s.name) for s in STUFF]
    for body, what in [*things, *stuff]:
        mask = rendered.body == body
        area = int(mask.sum())
        isthing = not isinstance(what, str)
        if area == 0 or (isthing and area < MIN_THING_AREA):
            continue
        if isthing:
            obj = spec.objects[int(what)]
            category_id, colour = obj.category.id, obj.colour
        else:
            category_id, colour = category_by_name(str(what)).id, None
        per_category[category_id] = per_category.get(category_id, 0) + 1
        # category in the high bits, so a segment id alone says what it is and ids differ per category.
        segment_id = category_id * 256 + per_category[category_id]
        ids[mask] = segment_id
        segments.append(_describe(mask, segment_id, category_id, isthing, colour, rendered.depth))
    return ids, segments


def _describe(mask: np.ndarray, segment_id: int, category_id: int, isthing: bool, colour: str | None,
              depth: np.ndarray) -> dict[str, Any]:
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    return {
        "id": segment_id,
        "category_id": category_id,
        "isthing": isthing,
        "colour": colour,
        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
        "area": int(mask.sum()),
        "centroid": [round(float(xs.mean()), 2), round(float(ys.mean()), 2)],
        "depth": round(float(depth[mask].mean()), 4),
    }


def rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE with a JSON-friendly string ``counts``."""
    from pycocotools import mask as mask_utils

    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def write_image(job: ImageJob, rendered: Rendered, ids: np.ndarray) -> None:
    from PIL import Image

    out = Path(job.out)
    stem = file_stem(job.image_id)
    Image.fromarray(rendered.rgb).save(out / f"{job.split}2017" / f"{stem}.jpg", quality=JPEG_QUALITY)
    Image.fromarray(id2rgb(ids)).save(out / "annotations" / f"panoptic_{job.split}2017" / f"{stem}.png")


def image_record(job: ImageJob, ids: np.ndarray, segments: list[dict]) -> dict[str, Any]:
    for segment in segments:
        if segment["isthing"]:
            segment["rle"] = rle(ids == segment["id"])
    return {
        "image_id": job.image_id,
        "split": job.split,
        "file_name": f"{file_stem(job.image_id)}.jpg",
        "width": job.size,
        "height": job.size,
        "segments": segments,
    }
