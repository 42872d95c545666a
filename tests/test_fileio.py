"""Atomic writes never leave partial files; validated reads name the bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from find3d.errors import DataError, InputError
from find3d.fileio import (
    as_rgb_array,
    atomic_folder,
    atomic_open,
    atomic_torch_save,
    atomic_write_json,
    load_image,
    read_json,
)


def test_atomic_open_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "ckpt.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write(b"partial")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.bin"]  # temp file cleaned up


def test_atomic_folder_is_all_or_nothing(tmp_path):
    import subprocess

    target = tmp_path / "export"
    with atomic_folder(target) as staging:
        (staging / "a").write_text("old a")
    (target / "notes").mkdir()
    (target / "notes" / "mine.txt").write_text("kept")
    with pytest.raises(RuntimeError), atomic_folder(target) as staging:
        (staging / "a").write_text("new a")
        raise RuntimeError("killed mid-write")
    assert (target / "a").read_text() == "old a" and sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    # What a killed run leaves (its process is gone): removed by the next writer, never read as the folder.
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / f".export.tmp-{dead.pid}").mkdir()
    with atomic_folder(target, carry=lambda name: name == "notes") as staging:
        (staging / "b").write_text("new b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    assert sorted(p.name for p in target.iterdir()) == ["b", "notes"] and (target / "notes" / "mine.txt").is_file()
    # A two-rename swap interrupted between its renames (where the exchange is unsupported) is undone.
    target.rename(tmp_path / f".export.old-{dead.pid}")
    with atomic_folder(tmp_path / "other") as staging:
        (staging / "c").write_text("c")
    assert not target.exists()  # only the folder written to is recovered ...
    with atomic_folder(target) as staging:
        (staging / "d").write_text("d")
    assert sorted(p.name for p in target.iterdir()) == ["d"]  # ... and then replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "other"]


def test_atomic_files_get_ordinary_permissions(tmp_path):
    atomic_write_json(tmp_path / "x.json", {})
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    assert (tmp_path / "x.json").stat().st_mode == plain.stat().st_mode


def test_json_and_torch_round_trip(tmp_path):
    atomic_write_json(tmp_path / "a" / "x.json", {"k": [1, 2]})
    assert read_json(tmp_path / "a" / "x.json") == {"k": [1, 2]}
    atomic_torch_save({"w": torch.ones(2)}, tmp_path / "m.pt")
    assert torch.load(tmp_path / "m.pt")["w"].sum() == 2


def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"missing\.json: file not found"):
        read_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1,,}')
    with pytest.raises(DataError, match=r"bad.json: not valid JSON .* line 1"):
        read_json(bad)


def test_image_validation(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(np.full((16, 20, 3), 7, np.uint8)).save(path)
    assert load_image(path).shape == (16, 20, 3)
    assert as_rgb_array(np.zeros((16, 16, 3), np.float32)).dtype == np.uint8
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"broken\.png: cannot be decoded"):
        load_image(tmp_path / "broken.png")
    with pytest.raises(InputError, match="single-channel"):
        as_rgb_array(np.zeros((16, 16)))
    with pytest.raises(InputError, match=r"expected an \(H, W, 3\) RGB image, got shape \(16, 16, 4\)"):
        as_rgb_array(np.zeros((16, 16, 4), np.uint8))
    with pytest.raises(InputError, match="must lie in"):
        as_rgb_array(np.full((16, 16, 3), 2.0))
