"""The official-format loaders on a hand-written dataset (and its FIND / Mask2Former re-arrangement)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures.tiny_coco import ENTITY_SENTENCE, write_tiny_dataset

from find3d.data.dataset import DataConfig, FindDataset
from find3d.data.formats import (
    discover,
    id2rgb,
    load_captions,
    load_findbench,
    load_instances,
    load_karpathy,
    load_panoptic,
    load_refs,
    rgb2id,
)
from find3d.errors import DataError


@pytest.fixture()
def tiny(tmp_path):
    return write_tiny_dataset(tmp_path / "tiny")


def test_rgb2id_inverts_id2rgb():
    ids = np.array([[0, 1, 255], [256, 65536, 16777215]], dtype=np.uint32)
    assert (rgb2id(id2rgb(ids)) == ids).all()
    assert rgb2id(np.array([1, 2, 3], dtype=np.uint8)) == 1 + 2 * 256 + 3 * 65536


def test_discover_finds_every_file(tiny):
    found = discover(tiny.root)
    assert sorted(found.splits) == ["train", "val"]
    val = found.splits["val"]
    assert val.panoptic_json.name == "panoptic_val2017.json"
    assert val.panoptic_dir == tiny.root / "annotations" / "panoptic_val2017"
    assert val.instances_json and val.captions_json and val.entity_json and val.interleave_json
    assert val.paragraph_json is None
    assert found.refs_pickle.name == "refs(umd).p" and found.refs_instances.name == "instances.json"
    assert found.karpathy_json.name == "dataset_coco.json"


def test_panoptic_records_masks_and_class_order(tiny):
    root = tiny.root
    panoptic = load_panoptic(root / "annotations/panoptic_val2017.json", root / "annotations/panoptic_val2017",
                             root / "val2017")
    # Contiguous indices follow the file's category order (things first here, as in COCO).
    assert panoptic.categories.names == ["cup", "ball", "table"]
    assert panoptic.categories.isthing == [True, True, False]
    record = panoptic.records[1]
    assert [(s.id, s.category, s.isthing) for s in record.segments] == [(11, 0, True), (12, 1, True), (13, 2, False)]
    masks = record.masks()
    for segment_id in (11, 12, 13):
        assert (masks[segment_id] == tiny.mask(1, segment_id)).all()
    image = record.load_image()
    assert image.shape == (48, 64, 3)
    assert np.abs(image[20, 16].astype(int) - (220, 30, 30)).max() < 12  # the cup is red


def test_instances_polygon_and_rle(tiny):
    instances = load_instances(tiny.root / "annotations/instances_val2017.json", tiny.root / "val2017")
    assert instances.categories.names == ["cup", "ball"]
    assert [a.id for a in instances.by_image(1)] == [501, 502]
    assert (instances.mask(502) == tiny.mask(1, 12)).all()  # compressed RLE is exact
    assert instances.annotations[504].iscrowd and (instances.mask(504) == tiny.mask(2, 21)).all()  # uncompressed
    polygon = instances.mask(501)  # polygon rasterisation may add the far edge
    truth = tiny.mask(1, 11)
    assert (polygon & truth).sum() / (polygon | truth).sum() > 0.9


def test_captions_refs_karpathy(tiny):
    root = tiny.root
    captions = load_captions(root / "annotations/captions_val2017.json")
    assert captions.captions[1] == ["A red cup and a blue ball on a grey table.", "Two toys on a table."]
    refs = load_refs(root / "refcocog/refs(umd).p", root / "refcocog/instances.json")
    assert [(r.ref_id, r.ann_id, r.image_id, r.split) for r in refs.refs] == [(1, 9001, 1, "val"), (2, 9002, 2, "val")]
    assert refs.refs[1].sentences == ("a large cup", "the cup on the right")
    assert (refs.instances.mask(9002) & tiny.mask(2, 21)).sum() == tiny.mask(2, 21).sum()
    karpathy = load_karpathy(root / "karpathy/dataset_coco.json")
    assert karpathy.images[3].split == "train" and karpathy.images[3].sentences == ("A blue ball.",)


def test_findbench_entity_and_interleave(tiny):
    entity = load_findbench(tiny.root / "findbench/coco_entity_val.json", "entity")
    (entry,) = entity.entries
    assert entry.sentence == ENTITY_SENTENCE
    assert [(p.text, p.annotation_id) for p in entry.phrases] == [("red cup", 11), ("blue ball", 12), ("table", 13)]
    assert all(entry.sentence[p.start:p.end] == p.text for p in entry.phrases)
    interleave = load_findbench(tiny.root / "findbench/coco_interleave_val.json", "interleave")
    assert interleave.entries[0].phrases[0].reference == (1, 11)
    assert interleave.entries[0].phrases[1].reference is None


def test_dataset_joins_every_source(tiny):
    dataset = FindDataset(tiny.root, "val", DataConfig(image_size=64, augment=False))
    assert len(dataset) == 2
    assert dataset.class_names == ["cup", "ball", "table"] and dataset.isthing == [True, True, False]
    first = dataset.records[0]
    assert first.key == "coco/val2017/000000000001"
    assert first.panoptic is not None and len(first.instances) == 2
    assert [ref.ref_id for ref, _ in first.refs] == [1]
    assert [kind for kind, _ in first.bench] == ["entity"]
    # COCO captions plus the Karpathy sentence for cocoid 1.
    assert first.captions == ["A red cup and a blue ball on a grey table.", "Two toys on a table.", "A cup and a ball."]
    train = FindDataset(tiny.root, "train", DataConfig(image_size=64))
    assert len(train) == 1 and train.records[0].captions == ["A blue ball."]


def _to_official_layout(root: Path) -> Path:
    """Re-arrange the files into FIND's ``data/coco`` layout with the official names."""
    coco = root.parent / "data" / "coco"
    shutil.copytree(root, coco)
    ann = coco / "annotations"
    for split in ("train", "val"):
        (ann / f"panoptic_{split}2017").rename(coco / f"panoptic_{split}2017")  # Mask2Former place
    (coco / "findbench/coco_entity_val.json").rename(ann / "entity_val2017.json")
    (coco / "findbench/coco_interleave_val.json").rename(ann / "interleave_val2017.json")
    shutil.rmtree(coco / "findbench")
    (coco / "refcocog").rename(ann / "refcocog")
    (coco / "karpathy/dataset_coco.json").rename(coco / "dataset_coco.json")
    return coco.parent


def test_official_names_load_the_same(tiny):
    official = _to_official_layout(tiny.root)
    config = DataConfig(image_size=64, augment=False)
    ours, theirs = FindDataset(tiny.root, "val", config), FindDataset(official, "val", config)
    for i in range(len(ours)):
        a, b = ours[i], theirs[i]
        assert a.key == b.key and (a.image == b.image).all() and a.captions == b.captions
        assert [p.text for p in a.phrases] == [p.text for p in b.phrases]
        assert [e.sentence for e in a.interleave] == [e.sentence for e in b.interleave]


def _edit_json(path: Path, edit) -> None:
    payload = json.loads(path.read_text())
    edit(payload)
    path.write_text(json.dumps(payload))


def test_loaders_raise_data_error_naming_file_and_entry(tiny):
    root = tiny.root
    entity = root / "findbench/coco_entity_val.json"
    _edit_json(entity, lambda p: p["annotations"][0]["phrase"][1].update(start_idx=3))
    with pytest.raises(DataError, match=r"coco_entity_val\.json: annotations\[0\].*phrase\[1\].*blue ball"):
        load_findbench(entity, "entity")
    with pytest.raises(DataError, match=r"coco_entity_val\.json"):
        FindDataset(root, "val")
    captions = root / "annotations/captions_val2017.json"
    captions.write_text("{not json")
    with pytest.raises(DataError, match=r"captions_val2017\.json.*not valid JSON"):
        load_captions(captions)


def test_xdecoder_refcocog_json_matches_the_pickle(tiny):
    # X-Decoder / FIND ship RefCOCO-g val as annotations/refcocog_umd_val.json: instances + 'sentences'.
    root = tiny.root
    config = DataConfig(image_size=64, augment=False)
    expected = [sorted(p.text for p in FindDataset(root, "val", config)[i].phrases) for i in range(2)]
    refs = load_refs(root / "refcocog/refs(umd).p", root / "refcocog/instances.json")
    merged = json.loads((root / "refcocog/instances.json").read_text())
    for ann in merged["annotations"]:
        ref = next(r for r in refs.refs if r.ann_id == ann["id"])
        ann.update(ref_id=ref.ref_id, split=ref.split, sentences=[{"sent": s} for s in ref.sentences])
    (root / "annotations/refcocog_umd_val.json").write_text(json.dumps(merged))
    shutil.rmtree(root / "refcocog")
    assert discover(root).splits["val"].refs_json.name == "refcocog_umd_val.json"
    dataset = FindDataset(root, "val", config)
    assert [sorted(p.text for p in dataset[i].phrases) for i in range(2)] == expected
