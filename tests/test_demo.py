"""The README's main job: `find3d demo` runs the whole 2D -> 3D -> query pipeline on generated data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

FIND3D = str(Path(sys.executable).parent / "find3d")
IOU_FLOOR = 0.5


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    result = subprocess.run([FIND3D, "demo", "--out", str(tmp_path), "--images", "16", "--field-iterations", "200"],
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "find3d demo: done" in result.stdout
    assert (tmp_path / "data" / "annotations" / "panoptic_train2017.json").is_file()
    assert (tmp_path / "interface" / "checkpoints" / "last.pt").is_file()
    assert "PQ" in json.dumps(json.loads((tmp_path / "eval" / "eval.json").read_text()))
    assert (tmp_path / "scene" / "find_embeddings" / "meta.json").is_file()
    assert (tmp_path / "field" / "points.ply").is_file()
    for name in ("query", "query_interleaved"):
        query = tmp_path / name
        assert len(np.load(query / "query.npz")["indices"]) > 0
        assert len(json.loads((query / "frames.json").read_text())["frames"]) == 3
        assert len(list(query.glob("relevancy_*.png"))) == 3
    # The small object's 3D mask against the scene's ground truth: selecting every point scores under 0.05
    # on it, selecting none 0; the floor sits well above both and below what the packaged interface gets
    # (0.99 for "the robot" on seed 0 with the demo's 300 field iterations: whole-object answers). The
    # interleaved answer is only checked to be a proper subset: its target IoU is 0.0 on seed 0, the head
    # entity "the teddy bear" finding only the brown bear, not the gray one next to the reference tray
    # (bench/results/field.md says what limits it).
    answers = json.loads((tmp_path / "queries.json").read_text())
    assert set(answers) == {"query", "query_interleaved"}
    for name, entry in answers.items():
        assert 0 < entry["points"] < entry["of"], name
    assert answers["query"]["iou"] >= IOU_FLOOR, answers["query"]
    assert "3D IoU" in result.stdout
