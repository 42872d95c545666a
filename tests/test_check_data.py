"""``find3d check-data``: one deliberately broken copy per problem, each named with file and entry."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
from fixtures.tiny_coco import write_tiny_dataset

from find3d.cli import main
from find3d.data.check import check_data
from find3d.data.dataset import DataConfig, FindDataset
from find3d.data.formats import load_instances
from find3d.errors import DataError


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("clean") / "tiny").root


def _edit_json(path: Path, edit) -> None:
    payload = json.loads(path.read_text())
    edit(payload)
    path.write_text(json.dumps(payload))


def _missing_image(root: Path) -> None:
    (root / "val2017/000000000002.jpg").unlink()


def _missing_png(root: Path) -> None:
    (root / "annotations/panoptic_val2017/000000000001.png").unlink()


def _segment_absent_from_png(root: Path) -> None:
    _edit_json(root / "annotations/panoptic_val2017.json", lambda p: p["annotations"][0]["segments_info"].append(
        {"id": 99, "category_id": 1, "iscrowd": 0, "bbox": [0, 0, 1, 1], "area": 1}))


def _annotation_id_not_found(root: Path) -> None:
    _edit_json(root / "findbench/coco_entity_val.json",
               lambda p: p["annotations"][0]["phrase"][0].update(annotation_id=77))


def _reference_not_resolving(root: Path) -> None:
    _edit_json(root / "findbench/coco_interleave_val.json",
               lambda p: p["annotations"][0]["phrase"][0]["reference"].update(annotation_id=999))


def _bad_offsets(root: Path) -> None:
    def widen(payload: dict) -> None:
        payload["annotations"][0]["phrase"][1]["end_idx"] += 2

    _edit_json(root / "findbench/coco_entity_val.json", widen)


def _empty_mask(root: Path) -> None:
    _edit_json(root / "annotations/instances_val2017.json",
               lambda p: p["annotations"][0].update(segmentation=[[10, 10, 10, 10, 10, 10]]))


def _malformed_json(root: Path) -> None:
    path = root / "annotations/captions_val2017.json"
    path.write_text(path.read_text()[:40])


def _missing_keys(root: Path) -> None:
    _edit_json(root / "annotations/panoptic_val2017.json", lambda p: p["annotations"][1].pop("segments_info"))


def _wrong_value_type(root: Path) -> None:
    _edit_json(root / "findbench/coco_entity_val.json",
               lambda p: p["annotations"][0]["phrase"][2].update(annotation_id="the table"))


def _ref_ann_not_found(root: Path) -> None:
    path = root / "refcocog/refs(umd).p"
    refs = pickle.loads(path.read_bytes())
    refs[1]["ann_id"] = 12345
    path.write_bytes(pickle.dumps(refs))


# (break the copy, file named, entry named, message fragment)
CASES = {
    "missing image": (_missing_image, "panoptic_val2017.json", "image_id 2", "000000000002.jpg not found"),
    "missing PNG": (_missing_png, "panoptic_val2017.json", "image_id 1", "000000000001.png not found"),
    "segment absent from PNG": (_segment_absent_from_png, "panoptic_val2017.json", "segment 99", "absent from the PNG"),
    "annotation_id not found": (_annotation_id_not_found, "coco_entity_val.json",
                                "annotations[0] (image_id 1) phrase[0]", "annotation_id 77 not found"),
    "reference not resolving": (_reference_not_resolving, "coco_interleave_val.json", "phrase[0] reference",
                                "annotation 999"),
    "phrase offsets": (_bad_offsets, "coco_entity_val.json", "annotations[0] (image_id 1) phrase[1]",
                       "not the phrase 'blue ball'"),
    "empty mask": (_empty_mask, "instances_val2017.json", "annotation id 501", "empty mask"),
    "malformed JSON": (_malformed_json, "captions_val2017.json", "whole file", "not valid JSON"),
    "missing keys": (_missing_keys, "panoptic_val2017.json", "annotations[1]", "segments_info"),
    "ref ann_id not found": (_ref_ann_not_found, "refs(umd).p", "ref_id 2", "ann_id 12345 not found"),
    "wrong value type": (_wrong_value_type, "coco_entity_val.json", "annotations[0]", "malformed value"),
}


def test_clean_dataset_passes(clean, capsys):
    assert check_data(clean) == []
    assert main(["check-data", str(clean)]) == 0
    out = capsys.readouterr().out
    assert "annotations/panoptic_val2017.json: 2 images, 5 segments" in out
    assert "findbench/coco_interleave_val.json: 1 entries, 2 phrases" in out
    assert "refcocog/refs(umd).p: 2 refs, 3 sentences" in out
    assert out.strip().endswith("clean")


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_problem_is_named_with_file_and_entry(clean, tmp_path, capsys, case):
    breaker, file_name, entry, fragment = CASES[case]
    root = tmp_path / "broken"
    shutil.copytree(clean, root)
    breaker(root)
    problems = check_data(root)
    matching = [p for p in problems if Path(p.file).name == file_name and entry in p.entry and fragment in p.message]
    assert matching, f"{case}: no problem naming {file_name} / {entry!r} / {fragment!r} in {problems}"
    assert main(["check-data", str(root)]) == 1
    assert str(matching[0]) in capsys.readouterr().out


@pytest.mark.parametrize("case", sorted(set(CASES) - {"empty mask"}))
def test_loaders_raise_the_same_problem(clean, tmp_path, case):
    # The dataset raises on the same problem when it is built or when the bad sample is mapped.
    breaker, file_name, entry, fragment = CASES[case]
    root = tmp_path / "broken"
    shutil.copytree(clean, root)
    breaker(root)
    with pytest.raises(DataError) as err:
        dataset = FindDataset(root, "val", DataConfig(image_size=32))
        for index in range(len(dataset)):
            dataset[index]
    message = str(err.value)
    assert file_name in message and entry in message and fragment in message


def test_instances_loader_raises_on_empty_mask(clean, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(clean, root)
    _empty_mask(root)
    instances = load_instances(root / "annotations/instances_val2017.json", root / "val2017")
    with pytest.raises(DataError, match=r"instances_val2017\.json: annotation id 501 .*empty mask"):
        instances.mask(501)


def test_empty_folder_is_a_problem(tmp_path):
    (problem,) = check_data(tmp_path)
    assert "no dataset files found" in problem.message


def test_engine_output_loads_and_checks_clean(tmp_path):
    from find3d.data.make_data import make_data

    root = tmp_path / "engine"
    make_data(root, images=12, seed=0)
    assert check_data(root) == []
    for split in ("train", "val"):
        dataset = FindDataset(root, split, DataConfig(image_size=64))
        assert len(dataset) > 0 and dataset.class_names
        for index in range(len(dataset)):
            sample = dataset[index]
            assert sample.image.shape == (64, 64, 3)
            assert sample.segments and sample.captions and sample.phrases
            assert all(0 <= s.category < len(dataset.class_names) for s in sample.segments)
            for entry in sample.interleave:
                assert all(entry.sentence[slice(*e.span)] == e.text for e in entry.entities)
