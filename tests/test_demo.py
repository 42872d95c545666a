"""The README's main job: `find3d demo` runs the whole 2D -> 3D -> query pipeline on generated data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

FIND3D = str(Path(sys.executable).parent / "find3d")


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
    query = tmp_path / "query"
    assert len(np.load(query / "query.npz")["indices"]) > 0
    assert len(json.loads((query / "frames.json").read_text())["frames"]) == 3
    assert len(list(query.glob("relevancy_*.png"))) == 3
