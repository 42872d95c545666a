"""``make-scene --rooms``: a floor of rooms in make-scene's layout, each object in its room, a drive that visits
the rooms in turn and looks from one into the next, exact ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from find3d.cli import main
from find3d.data.floor import ROOM, room_centres, room_of_points


def test_a_floor_of_rooms(tmp_path: Path) -> None:
    out = tmp_path / "floor"
    assert main(["make-scene", "--out", str(out), "--rooms", "3", "--views", "6", "--heldout", "3",
                 "--size", "48", "--seed", "4"]) == 0
    transforms = json.loads((out / "transforms.json").read_text())
    truth = json.loads((out / "ground_truth" / "objects.json").read_text())
    frames = transforms["frames"]
    assert len(frames) == 6 + 3 + 2  # two views on the way between rooms
    assert [f["room"] for f in frames] == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert len(transforms["val_filenames"]) == 3 and len(transforms["train_filenames"]) == 8
    assert len(truth["rooms"]) == 3 and [r["centre"] for r in truth["rooms"]] == [list(c) for c in room_centres(3)]
    with np.load(out / "ground_truth" / "points.npz") as points:
        xyz, object_id = points["xyz"], points["object_id"]
    tables = [int(i) for i, o in truth["objects"].items() if o["category"] == "table"]
    assert sorted(truth["objects"][str(i)]["room"] for i in tables) == [0, 1, 2]
    inside = room_of_points(out, xyz)
    for key, entry in truth["objects"].items():
        mine = object_id == int(key)
        if mine.any():  # every ground-truth point of an object lies in the object's room
            assert set(inside[mine].tolist()) == {entry["room"]}, (key, entry)
    things_per_room = [sum(1 for o in truth["objects"].values() if o["isthing"] and o["room"] == r) for r in range(3)]
    assert all(count >= 5 for count in things_per_room)
    # the view on the way to room 1 sees room 1's table, 2 m off; a view in room 0 sees its own table
    table_of = {truth["objects"][str(i)]["room"]: i for i in tables}
    for index, room in ((3, 1), (0, 0)):
        instances = np.asarray(Image.open(out / frames[index]["instance_path"]))
        assert (instances == table_of[room]).mean() > 0.02, (index, room)
    assert np.all(np.abs(np.diff(np.array(room_centres(8)), axis=0)).sum(axis=1) == ROOM)  # neighbours, a room apart


def test_a_floor_as_a_phone_captures_it(tmp_path: Path) -> None:
    """--rooms goes with --sensor: a phone's floor has JPEGs and no depth, ground truth stays exact."""
    out = tmp_path / "floor"
    assert main(["make-scene", "--out", str(out), "--rooms", "2", "--views", "4", "--heldout", "0",
                 "--size", "48", "--seed", "4", "--sensor", "rgb", "--pose-noise", "0.002"]) == 0
    frames = json.loads((out / "transforms.json").read_text())["frames"]
    assert len(frames) == 5 and [f["room"] for f in frames] == [0, 0, 1, 1, 1]  # the view between looks ahead
    assert all(f["file_path"].endswith(".jpg") and "depth_file_path" not in f for f in frames)
    assert not (out / "depths").exists() and (out / "ground_truth" / "points.npz").is_file()
