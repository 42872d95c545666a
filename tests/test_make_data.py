"""make-data renders real pybullet scenes into files that the official tools (pycocotools) read."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from find3d.cli import main
from find3d.data.make_data import make_data
from find3d.errors import InputError

IMAGES, SEED = 12, 7


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data")
    make_data(out, images=IMAGES, seed=SEED, workers=2)
    return out


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _rgb2id(path: Path) -> np.ndarray:
    rgb = np.asarray(Image.open(path)).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def test_manifest_and_splits(dataset: Path) -> None:
    manifest = _json(dataset / "dataset.json")
    assert manifest["generator"] == "find3d make-data"
    assert manifest["splits"] == {"train": 11, "val": 1}
    assert len(list((dataset / "train2017").glob("*.jpg"))) == 11
    assert [p.name for p in (dataset / "val2017").glob("*.jpg")] == ["000000000012.jpg"]
    assert Image.open(dataset / "val2017" / "000000000012.jpg").size == (256, 256)


def test_pycocotools_reads_instances_and_captions(dataset: Path) -> None:
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    for split in ("train", "val"):
        instances = COCO(str(dataset / "annotations" / f"instances_{split}2017.json"))
        assert instances.getAnnIds(), split
        for ann in instances.loadAnns(instances.getAnnIds()):
            mask = instances.annToMask(ann)
            assert mask.sum() == ann["area"] == mask_utils.area(ann["segmentation"])
            assert list(mask_utils.toBbox(ann["segmentation"])) == ann["bbox"]
        captions = COCO(str(dataset / "annotations" / f"captions_{split}2017.json"))
        for image_id in captions.getImgIds():
            texts = [a["caption"] for a in captions.loadAnns(captions.getAnnIds(imgIds=image_id))]
            assert len(texts) >= 3 and len(set(texts)) == len(texts)


def test_catalogue_has_things_and_stuff(dataset: Path) -> None:
    categories = _json(dataset / "annotations" / "panoptic_train2017.json")["categories"]
    assert sum(c["isthing"] for c in categories) >= 12
    assert {c["name"] for c in categories if not c["isthing"]} >= {"table", "floor", "wall"}
    panoptic = _json(dataset / "annotations" / "panoptic_train2017.json")
    seen = {s["category_id"] for a in panoptic["annotations"] for s in a["segments_info"]}
    assert len(seen) >= 10  # a 12-image dataset already shows most of the catalogue


@pytest.mark.parametrize("split", ["train", "val"])
def test_panoptic_pngs_match_segments_info(dataset: Path, split: str) -> None:
    panoptic = _json(dataset / "annotations" / f"panoptic_{split}2017.json")
    for ann in panoptic["annotations"]:
        ids = _rgb2id(dataset / "annotations" / f"panoptic_{split}2017" / ann["file_name"])
        present = set(np.unique(ids).tolist()) - {0}
        assert present == {s["id"] for s in ann["segments_info"]}, ann["file_name"]
        for segment in ann["segments_info"]:
            ys, xs = np.nonzero(ids == segment["id"])
            assert segment["area"] == len(xs)
            assert segment["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


@pytest.mark.parametrize("kind", ["entity", "paragraph", "interleave"])
@pytest.mark.parametrize("split", ["train", "val"])
def test_findbench_phrases_resolve(dataset: Path, kind: str, split: str) -> None:
    bench = _json(dataset / "findbench" / f"coco_{kind}_{split}.json")
    panoptic = _json(dataset / "annotations" / f"panoptic_{split}2017.json")
    segments = {a["image_id"]: {s["id"]: s["category_id"] for s in a["segments_info"]} for a in panoptic["annotations"]}
    isthing = {c["id"]: c["isthing"] for c in panoptic["categories"]}
    assert {i["id"] for i in bench["images"]} == set(segments)
    references = 0
    for entry in bench["annotations"]:
        assert len(entry["phrase"]) >= 2
        for phrase in entry["phrase"]:
            assert entry["sentence"][phrase["start_idx"]:phrase["end_idx"]] == phrase["phrase"]
            assert phrase["annotation_id"] in segments[entry["image_id"]]
            if "reference" in phrase:
                references += 1
                ref = phrase["reference"]
                assert ref["image_id"] != entry["image_id"]
                assert segments[ref["image_id"]][ref["annotation_id"]] == segments[entry["image_id"]][
                    phrase["annotation_id"]]
    if kind == "paragraph":
        assert all(entry["sentence"].count(". ") >= 2 for entry in bench["annotations"])
    if kind == "interleave" and split == "train":
        things = sum(isthing[segments[e["image_id"]][p["annotation_id"]]] for e in bench["annotations"]
                     for p in e["phrase"])
        # At least one visual entity per entry, yet some thing phrases stay text: entries are mixed.
        assert len(bench["annotations"]) <= references < things


def test_refs_and_karpathy_parse(dataset: Path) -> None:
    from pycocotools.coco import COCO

    refs = pickle.loads((dataset / "refcocog" / "refs(umd).p").read_bytes())
    coco = COCO(str(dataset / "refcocog" / "instances.json"))
    assert refs and set(coco.getImgIds()) == {ref["image_id"] for ref in refs}
    for ref in refs:
        ann = coco.anns[ref["ann_id"]]
        assert ann["image_id"] == ref["image_id"] and ann["category_id"] == ref["category_id"]
        assert ref["split"] == ("val" if ref["image_id"] == IMAGES else "train")
        name = coco.cats[ref["category_id"]]["name"]
        for sentence in ref["sentences"]:
            assert name in sentence["sent"] and sentence["tokens"] == sentence["sent"].replace(",", "").split()
    karpathy = _json(dataset / "karpathy" / "dataset_coco.json")
    assert karpathy["dataset"] == "coco" and len(karpathy["images"]) == IMAGES
    for image in karpathy["images"]:
        assert image["split"] in {"train", "val", "test", "restval"}
        assert (dataset / image["filepath"] / image["filename"]).is_file()
        assert image["sentids"] == [s["sentid"] for s in image["sentences"]]
        assert all(s["imgid"] == image["imgid"] for s in image["sentences"])


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_whatever_the_workers(dataset: Path, tmp_path: Path) -> None:
    make_data(tmp_path / "again", images=IMAGES, seed=SEED, workers=1)
    assert _digest(tmp_path / "again") == _digest(dataset)
    make_data(tmp_path / "other", images=2, seed=SEED + 1, workers=1)
    first = np.asarray(Image.open(tmp_path / "other" / "train2017" / "000000000001.jpg"))
    assert not np.array_equal(first, np.asarray(Image.open(dataset / "train2017" / "000000000001.jpg")))


def test_bad_input_names_the_fix(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="at least 1 image"):
        make_data(tmp_path / "none", images=0)
    with pytest.raises(InputError, match="--overwrite"):
        make_data(dataset, images=1)
    make_data(tmp_path / "twice", images=1, seed=1)
    make_data(tmp_path / "twice", images=1, seed=2, overwrite=True)
    assert _json(tmp_path / "twice" / "dataset.json")["seed"] == 2
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="writable"):
        make_data(tmp_path / "file" / "data", images=1)
    assert main(["make-data", "--out", str(tmp_path / "cli"), "--images", "0"]) == 2


def _touching_things(panoptic_png: Path, things: set[int]) -> int:
    """Pairs of thing segments that share a pixel edge in one panoptic PNG (objects in contact, or occluding)."""
    ids = _rgb2id(panoptic_png)
    pairs = set()
    for a, b in ((ids[:, :-1], ids[:, 1:]), (ids[:-1], ids[1:])):
        edge = (a != b) & np.isin(a, list(things)) & np.isin(b, list(things))
        pairs |= {tuple(sorted(p)) for p in zip(a[edge].tolist(), b[edge].tolist())}
    return len(pairs)


def test_clutter_share_lays_objects_in_contact(dataset: Path, tmp_path: Path) -> None:
    make_data(tmp_path / "mixed", images=IMAGES, seed=SEED, clutter=0.5, workers=1)
    assert _json(tmp_path / "mixed" / "dataset.json")["clutter"] == 0.5
    same = {name: digest == _digest(dataset).get(name) for name, digest in _digest(tmp_path / "mixed").items()
            if name.endswith(".jpg")}
    assert 0 < sum(same.values()) < len(same), same  # some images replaced, the rest byte-identical

    def touching(folder: Path) -> int:
        panoptic = _json(folder / "annotations" / "panoptic_train2017.json")
        total = 0
        for ann in panoptic["annotations"]:
            things = {s["id"] for s in ann["segments_info"] if s.get("iscrowd", 0) == 0 and
                      next(c for c in panoptic["categories"] if c["id"] == s["category_id"])["isthing"]}
            total += _touching_things(folder / "annotations" / "panoptic_train2017" / ann["file_name"], things)
        return total

    make_data(tmp_path / "clutter", images=IMAGES, seed=SEED, clutter=1.0, workers=1)
    assert touching(tmp_path / "clutter") >= 5 * max(touching(dataset), 1)  # measured: 67-74 vs 3-5
    with pytest.raises(InputError, match=r"--clutter 1.5: a share"):
        make_data(tmp_path / "bad", images=1, clutter=1.5)
