"""The 3D pipeline end to end through the command line: make-scene → embed-frames (a real interface
checkpoint) → ns-train find-field → export-field → query (text, image crop, interleaved) → eval-3d."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from find3d.cli import main


@pytest.mark.slow
def test_export_records_the_interface(pipeline: dict[str, Path]) -> None:
    meta = json.loads((pipeline["field"] / "meta.json").read_text())
    assert meta["checkpoint"] == str(pipeline["checkpoint"].resolve())
    assert 100 < meta["count"] <= 4000 and meta["dim"] == 64  # the tiny interface's projection size


@pytest.mark.slow
def test_query_cli_text_image_and_interleaved(pipeline: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import find3d
    from find3d.query.field import read_ply

    scene, field_dir = pipeline["scene"], pipeline["field"]
    # No --checkpoint: the command reads the one embed-frames recorded in the export.
    # the tiny test interface is not calibrated: --acceptance 0 takes each query's best instance
    assert main(["query", "--field", str(field_dir), "mug", "--top-k", "2", "--threshold", "0.5",
                 "--acceptance", "0"]) == 0
    saved = np.load(field_dir / "query.npz")
    indices, scores = saved["indices"], saved["scores"]
    assert np.all(scores >= 0.5) and np.all(np.diff(scores) <= 0)
    points, _ = read_ply(field_dir / "mask.ply")
    assert len(points) == len(indices)
    frames = json.loads((field_dir / "frames.json").read_text())
    assert frames["query"] == "mug" and len(frames["frames"]) == 2
    scene_frames = json.loads((scene / "transforms.json").read_text())["frames"]
    poses = {f["file_path"]: f["transform_matrix"] for f in scene_frames}
    for hit in frames["frames"]:
        assert 0.0 <= hit["score"] <= 1.0
        np.testing.assert_allclose(hit["c2w"], poses[hit["file_path"]])
    assert len(list(field_dir.glob("relevancy_*.png"))) == 2

    # The Python API is the same call.
    interface = find3d.Interface.from_checkpoint(pipeline["checkpoint"], device="cpu")
    result = find3d.Field.load(field_dir).query("mug", interface=interface, threshold=0.5, top_k_frames=2,
                                                acceptance=0.0)
    np.testing.assert_array_equal(result.indices, indices)

    # An image crop, and an interleaved query whose reference is resolved from the working directory.
    crop = np.asarray(Image.open(scene / "images" / "frame_00001.png").convert("RGB"))[16:48, 16:48]
    Image.fromarray(crop).save(pipeline["root"] / "crop.png")
    monkeypatch.chdir(pipeline["root"])
    for name, args in (("image", ["--image", "crop.png"]), ("interleaved", ["the mug next to <image:crop.png>"])):
        out = pipeline["root"] / name
        assert main(["query", "--field", str(field_dir), *args, "--out", str(out), "--top-k", "1",
                     "--acceptance", "0"]) == 0
        assert len(read_ply(out / "mask.ply")[0]) == len(np.load(out / "query.npz")["indices"])
        assert len(json.loads((out / "frames.json").read_text())["frames"]) == 1
    assert main(["query", "--field", str(field_dir)]) == 2  # neither text nor --image: a usage error


@pytest.mark.slow
def test_query_cli_says_not_found(pipeline: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing reaches the acceptance: no points, "not found" printed and written, and one picture of the closest
    instance with the verdict on it instead of relevancy pictures. (The query is its own negative, so no
    instance scores above 0.5, whatever the tiny test interface makes of it.)"""
    from find3d.query.field import read_ply

    out = pipeline["root"] / "absent"
    assert main(["query", "--field", str(pipeline["field"]), "the duck", "--negatives", "the duck",
                 "--acceptance", "0.6", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("no 'the duck' in this scene (closest: the "), printed
    answer = json.loads((out / "frames.json").read_text())
    assert answer["found"] is False and answer["points"] == 0 and answer["frames"] == []
    assert answer["closest"]["name"] and 0.0 <= answer["closest"]["score"] < 1.0
    assert len(np.load(out / "query.npz")["indices"]) == 0 and len(read_ply(out / "mask.ply")[0]) == 0
    assert not list(out.glob("relevancy_*.png")) and len(list(out.glob("not_found_*.png"))) == 1


@pytest.mark.slow
def test_eval_3d(pipeline: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval-3d", "--scene", str(pipeline["scene"]), "--field", str(pipeline["field"])]) == 0
    printed = capsys.readouterr().out
    results = json.loads((pipeline["field"] / "eval_3d.json").read_text())
    objects = json.loads((pipeline["scene"] / "ground_truth" / "objects.json").read_text())["objects"]
    categories = {o["category"] for o in objects.values() if o["isthing"] or o["category"] == "table"}
    for method in ("field", "fusion_baseline"):
        report = results[method]
        assert set(report["per_category"]) == categories
        for key in ("miou", "localisation_accuracy", "frame_top1", "frame_top5"):
            assert 0.0 <= report[key] <= 1.0
        assert report["frame_top5"] >= report["frame_top1"]
        assert sum(c["localisation"]["views"] for c in report["per_category"].values()) > 0
        attributes = report["attributes"]["queries"]
        assert attributes and all(0.0 <= r["iou"] <= 1.0 for r in attributes)
        assert report["attributes"]["target_iou"] == pytest.approx(np.mean([r["iou"] for r in attributes]))
        instances = report["instances"]
        for key in ("ap25_agnostic", "ap50_agnostic", "ap25_mean_category", "ap50_mean_category"):
            assert 0.0 <= instances[key] <= 1.0, key
        assert instances["ap25_agnostic"] >= instances["ap50_agnostic"] and instances["gt_instances"] >= 5
        absent = report["absent"]
        asked = {row["query"] for row in absent["queries"]}
        assert {"the laptop", "a screwdriver"} <= asked and not asked & {f"the {c}" for c in categories}
        assert absent["not_found_share"] == pytest.approx(np.mean([not row["found"] for row in absent["queries"]]))
        assert 0.0 <= report["present_found_share"] <= 1.0
    assert "| miou |" in printed and (pipeline["field"] / "fusion" / "meta.json").is_file()
    assert "| instance ap50_agnostic |" in printed and "answered 'not found'" in printed
    fusion = json.loads((pipeline["field"] / "fusion" / "meta.json").read_text())
    assert fusion["segments"]["count"] > 0  # the map's own instances, from the frames' masks
