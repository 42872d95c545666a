"""The README's main job: `find3d demo` runs every stage on generated data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FIND3D = str(Path(sys.executable).parent / "find3d")


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    result = subprocess.run([FIND3D, "demo", "--out", str(tmp_path), "--images", "16"],
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "find3d demo: done" in result.stdout
    assert (tmp_path / "data" / "annotations" / "panoptic_train2017.json").is_file()
    assert (tmp_path / "scene" / "transforms.json").is_file()
