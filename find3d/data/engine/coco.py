"""Assemble the official-format JSON / pickle files from per-image records.

Each function returns the payload of one file; ``make_data`` writes them atomically. Id schemes:
image ids are 1..N; a panoptic ``segments_info.id`` is unique within its image (it is what FIND-Bench
``annotation_id`` names); an instance annotation id is ``image_id * 1000 + k`` (unique in the
dataset; what RefCOCOg ``ann_id`` names).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from find3d.data.engine import language
from find3d.data.engine.catalog import coco_categories

INFO = {"description": "find3d synthetic tabletop dataset (pybullet)", "version": "1.0", "year": 2026}


def _images(records: list[dict]) -> list[dict]:
    return [{"id": r["image_id"], "file_name": r["file_name"], "width": r["width"], "height": r["height"]}
            for r in records]


def instance_annotations(record: dict) -> list[dict]:
    things = [s for s in record["segments"] if s["isthing"]]
    return [
        {"id": record["image_id"] * 1000 + k, "image_id": record["image_id"], "category_id": s["category_id"],
         "segmentation": s["rle"], "area": s["area"], "bbox": s["bbox"], "iscrowd": 0}
        for k, s in enumerate(things, start=1)
    ]


def panoptic(records: list[dict]) -> dict[str, Any]:
    annotations = [
        {"image_id": r["image_id"], "file_name": r["file_name"].replace(".jpg", ".png"),
         "segments_info": [{"id": s["id"], "category_id": s["category_id"], "iscrowd": 0, "bbox": s["bbox"],
                            "area": s["area"]} for s in r["segments"]]}
        for r in records
    ]
    return {"info": INFO, "licenses": [], "images": _images(records), "annotations": annotations,
            "categories": coco_categories()}


def instances(records: list[dict]) -> dict[str, Any]:
    things = [c for c in coco_categories() if c["isthing"]]
    annotations = [a for r in records for a in instance_annotations(r)]
    return {"info": INFO, "licenses": [], "images": _images(records), "annotations": annotations,
            "categories": things}


def captions(records: list[dict], texts: dict[int, list[str]]) -> dict[str, Any]:
    annotations = []
    for r in records:
        for k, caption in enumerate(texts[r["image_id"]]):
            annotations.append({"id": r["image_id"] * 100 + k, "image_id": r["image_id"], "caption": caption})
    return {"info": INFO, "licenses": [], "images": _images(records), "annotations": annotations}


def refs(records: list[dict]) -> list[dict]:
    """RefCOCOg (umd) refs: one ref per annotated thing, sentences that single it out."""
    out: list[dict] = []
    sent_id = 0
    for r in records:
        expressions = language.referring_expressions(r)
        segment_to_ann = {}
        for annotation, segment in zip(instance_annotations(r), [s for s in r["segments"] if s["isthing"]]):
            segment_to_ann[segment["id"]] = annotation
        for segment_id, texts in expressions.items():
            annotation = segment_to_ann[segment_id]
            sentences = []
            for text in texts:
                sentences.append({"sent": text, "raw": text, "tokens": language.tokens(text), "sent_id": sent_id})
                sent_id += 1
            stem = r["file_name"].removesuffix(".jpg")
            out.append({
                "ref_id": len(out), "ann_id": annotation["id"], "image_id": r["image_id"], "split": r["split"],
                "sentences": sentences, "sent_ids": [s["sent_id"] for s in sentences],
                "category_id": annotation["category_id"], "file_name": f"{stem}_{annotation['id']}.jpg",
            })
    return out


def karpathy(records: list[dict], texts: dict[int, list[str]]) -> dict[str, Any]:
    """Karpathy split: train images -> train; val images alternate val / test (as the 5k/5k split does)."""
    images = []
    sent_id = 0
    val_index = 0
    for index, r in enumerate(records):
        if r["split"] == "train":
            split = "train"
        else:
            split = "val" if val_index % 2 == 0 else "test"
            val_index += 1
        sentences = []
        for text in texts[r["image_id"]]:
            sentences.append({"raw": text, "tokens": language.tokens(text), "imgid": index, "sentid": sent_id})
            sent_id += 1
        images.append({
            "filepath": f"{r['split']}2017", "filename": r["file_name"], "imgid": index, "cocoid": r["image_id"],
            "split": split, "sentences": sentences, "sentids": [s["sentid"] for s in sentences],
        })
    return {"dataset": "coco", "images": images}


def findbench(records: list[dict], entries: dict[int, language.Sentence]) -> dict[str, Any]:
    annotations = [{"image_id": r["image_id"], "sentence": entries[r["image_id"]].text,
                    "phrase": entries[r["image_id"]].phrases} for r in records]
    return {"images": [{"id": r["image_id"], "file_name": r["file_name"]} for r in records],
            "annotations": annotations}


def interleave(records: list[dict], entries: dict[int, language.Sentence], seed: int) -> dict[str, Any]:
    """Entity entries where some thing phrases become visual: a same-category segment of another image.

    Each thing phrase with a candidate turns visual with probability 1/2, and at least one per entry
    does, so entries mix text and image references as FIND-Bench interleave entries do.
    """
    by_category: dict[int, list[tuple[int, int]]] = {}
    for r in records:
        for s in r["segments"]:
            if s["isthing"]:
                by_category.setdefault(s["category_id"], []).append((r["image_id"], s["id"]))
    payload = findbench(records, entries)
    for record, annotation in zip(records, payload["annotations"]):
        rng = np.random.default_rng([seed, record["image_id"], 3])
        category_of = {s["id"]: s["category_id"] for s in record["segments"] if s["isthing"]}
        phrases = [dict(phrase) for phrase in annotation["phrase"]]
        options = [[c for c in by_category.get(category_of.get(p["annotation_id"], -1), [])
                    if c[0] != record["image_id"]] for p in phrases]
        usable = [i for i, candidates in enumerate(options) if candidates]
        visual = {i for i in usable if rng.random() < 0.5}
        if usable and not visual:
            visual = {usable[int(rng.integers(len(usable)))]}
        for i in sorted(visual):
            image_id, segment_id = options[i][int(rng.integers(len(options[i])))]
            phrases[i]["reference"] = {"image_id": image_id, "annotation_id": segment_id}
        annotation["phrase"] = phrases
    return payload
