"""A map that forgets nothing and survives its process: voxels spilled to disk and taken back (the map equals
one that never left memory), eviction only when asked for, saved maps that are field exports, reload after
a SIGKILL in the middle of a save (a real child process), and a Mapper that carries on from its map file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fixtures.maps import DIM, ROOMS, SPACING, VIEWS, frame, keyframe, mapped

from find3d.errors import InputError
from find3d.mapping.cold import ColdStore
from find3d.mapping.fusion import VoxelMap
from find3d.mapping.store import load_map, save_map, saved
from find3d.query.field import Field, segment_vectors

TESTS = Path(__file__).resolve().parent
STEPS = (ROOMS + 1) * VIEWS  # every room, then the first again
SMALL = 2500  # voxels in memory: a room (about 2000) and a bit


def by_key(voxels: VoxelMap) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    keys, rows = voxels.gathered()
    order = np.argsort(keys)
    return keys[order], {name: array[order] for name, array in rows.items()}


def key_order(points: np.ndarray) -> np.ndarray:
    """Rows of a map's field in voxel-key order (a voxel's centroid lies inside it)."""
    return np.argsort(VoxelMap(DIM).voxel_keys(points)[0])


def assert_same_map(got: VoxelMap, expected: VoxelMap) -> None:
    """Voxel for voxel: exact sums and counts, embeddings up to the runs' float16 directions."""
    (keys, rows), (want_keys, want) = by_key(got), by_key(expected)
    np.testing.assert_array_equal(keys, want_keys)
    for name in want:
        if name == "feature":
            np.testing.assert_allclose(rows[name], want[name], atol=2e-3 * np.abs(want[name]).max())
        elif name != "seen":  # seen: the tick a voxel was last seen, equal except for eviction order ties
            np.testing.assert_array_equal(rows[name], want[name], err_msg=name)


def test_a_spilling_map_forgets_nothing(tmp_path: Path) -> None:
    small, full = mapped(STEPS, SMALL, tmp_path / "map"), mapped(STEPS, SMALL)
    voxels = small.voxels
    assert voxels.count <= SMALL < len(full.voxels) and voxels.spilled > 0 and voxels.evicted == 0
    assert len(voxels.cold.runs) > 1 and len(voxels) == len(full.voxels)
    assert_same_map(voxels, full.voxels)
    # the first room was spilled, and taken back into memory (with all it had gathered) when the walk came back
    assert np.isin(voxels.voxel_keys(frame(STEPS - 1).xyz)[0], voxels.keys).all()
    assert len(voxels.cold) < voxels.spilled
    # the same instances as the map that never spilled: the balls apart in every room
    labels, want = voxels.segments(), full.voxels.segments()
    order, want_order = np.argsort(voxels.gathered()[0]), np.argsort(full.voxels.gathered()[0])
    np.testing.assert_array_equal(labels[order], want[want_order])
    assert labels.max() + 1 >= 3 * ROOMS  # per room: the table and two balls
    copy = voxels.copy()  # a save's copy takes the instances along, in its own row order
    carried, copy._segments = copy.segments(), None
    np.testing.assert_array_equal(carried, copy.segments())
    # a query across rooms: the first ball of every room, those on disk as those in memory
    field, want = small.field(), full.field()
    assert field.features.dtype == np.float16  # the spilled map's field is on disk, memory-mapped
    found, expected = (f.query(np.eye(DIM)[1], threshold=0.9, top_k_frames=1) for f in (field, want))
    rooms = np.unique(np.floor(field.points[found.indices, 0] / SPACING + 0.5))
    assert rooms.tolist() == list(range(ROOMS)) and len(found.indices) == len(expected.indices)
    assert found.frames and found.frames[0].index == expected.frames[0].index


def test_a_copy_after_more_frames_cuts_its_instances_again() -> None:
    """A query cuts the instances, more frames add voxels, then a save copies the map: the old cut (fewer
    voxels than the map now holds) must not be carried over (a mapping node crashed in its last save)."""
    voxels = VoxelMap(DIM, 0.02)
    voxels.integrate(frame(0))
    voxels.segments()
    assert voxels.integrate(frame(VIEWS)) > 0  # the next room: new voxels
    copy = voxels.copy()
    np.testing.assert_array_equal(copy.segments()[np.argsort(copy.gathered()[0])],
                                  voxels.segments()[np.argsort(voxels.gathered()[0])])


def test_eviction_only_when_asked_and_counted(tmp_path: Path) -> None:
    evicting = VoxelMap(DIM, 0.02, SMALL, ColdStore(tmp_path, DIM), spill=False)
    for step in range(STEPS):
        evicting.integrate(frame(step))
    assert evicting.evicted > 0 and evicting.spilled == 0 and not evicting.cold.runs
    assert len(evicting) == evicting.count <= SMALL
    with pytest.raises(InputError, match="cold store"):
        VoxelMap(DIM, spill=True)


def test_a_saved_map_is_an_export_and_loads_back_whole(tmp_path: Path) -> None:
    folder = tmp_path / "map"
    live = mapped(STEPS - VIEWS - 1, SMALL, folder)
    save_map(live, folder, {"checkpoint": None})
    (folder / "notes.txt").write_text("a user's file")  # e.g. find3d query's results
    live.add(keyframe(STEPS - VIEWS - 1), frame(STEPS - VIEWS - 1))
    save_map(live, folder, {"checkpoint": None})
    field = Field.load(folder)  # what find3d query and the query node read
    want = live.field()
    assert len(field) == len(live) and len(field.frames) == len(live.keyframes)
    order, want_order = key_order(field.points), key_order(want.points)
    np.testing.assert_allclose(field.points[order], want.points[want_order], atol=1e-6)
    np.testing.assert_allclose(field.features[order], want.features[want_order], atol=2e-3)
    np.testing.assert_array_equal(field.segments[order], want.segments[want_order])
    # the instances' mean vectors are stored, as a field would compute them from its own file
    np.testing.assert_allclose(field.segment_vectors(), segment_vectors(field.segments, field.features), atol=1e-6)
    assert (folder / "notes.txt").read_text() == "a user's file"

    back = load_map(folder, SMALL)
    assert back.voxels.tick == live.voxels.tick and len(back.keyframes) == len(live.keyframes)
    np.testing.assert_array_equal(np.stack([k.image_vector for k in back.keyframes]),
                                  np.stack([k.image_vector for k in live.keyframes]))
    assert_same_map(back.voxels, live.voxels)
    for step in range(STEPS - VIEWS, STEPS):  # both carry on alike
        live.add(keyframe(step), frame(step))
        back.add(keyframe(step), frame(step))
    assert_same_map(back.voxels, live.voxels)
    keys, want_keys = back.voxels.gathered()[0], live.voxels.gathered()[0]
    order, want_order = np.argsort(keys), np.argsort(want_keys)
    np.testing.assert_array_equal(back.field().segments[order], live.field().segments[want_order])

    elsewhere = tmp_path / "copy"  # a map saved into another folder takes its runs along
    save_map(back, elsewhere)
    assert_same_map(load_map(elsewhere, SMALL).voxels, live.voxels)
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("not a map")
    with pytest.raises(InputError, match="no saved map"):
        save_map(back, other)
    assert saved(tmp_path / "new") is False and (other / "thesis.tex").exists()


def test_a_saved_map_carries_a_pca_code_written_a_chunk_at_a_time(tmp_path: Path) -> None:
    """The code of a spilled map (one chunk per part: memory, then each run) lands at each chunk's columns:
    the same as encoding all the embeddings at once, and the field answers through it."""
    from find3d.field.export import pca_code
    from find3d.mapping.live import write_map_field

    live = mapped(STEPS, SMALL, tmp_path / "map")
    assert len(live.voxels.cold.runs) > 1
    folder = tmp_path / "export"
    folder.mkdir()
    write_map_field(live.voxels, live.keyframes, folder, code_dim=4)
    field = Field.load(folder)
    assert field.code is not None and field.code.shape == (5, len(live))
    mean, components = field.decoder
    features = np.concatenate(list(live.voxels.feature_chunks()))
    np.testing.assert_allclose(field.code, pca_code(features, mean, components), atol=1e-5)
    found = field.query(np.eye(DIM)[1], threshold=0.9, top_k_frames=0)
    assert len(found.indices) > 0


@pytest.mark.slow
def test_a_kill_in_the_middle_of_a_save_leaves_the_previous_map(tmp_path: Path) -> None:
    """A child process walks and saves again and again (each run going on from the map the last one left);
    it is SIGKILLed at random moments, which land inside a save (its staging folder is left behind)."""
    folder = tmp_path / "map"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)]), "OMP_NUM_THREADS": "1"}
    rng = np.random.default_rng(0)
    mid_save, steps = 0, 0
    for _ in range(3):
        child = subprocess.Popen([sys.executable, "-m", "fixtures.maps", str(folder), str(SMALL)], cwd=TESTS,
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            first = child.stdout.readline()  # the first save done (open3d's import makes that slow)
            assert first.strip().isdigit(), child.stderr.read()
            time.sleep(rng.uniform(0.3, 1.5))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        mid_save += any(tmp_path.glob(".map.tmp-*"))
        live = load_map(folder, SMALL)
        assert live.voxels.tick > steps  # each run saved at least once more
        steps = live.voxels.tick
        assert_same_map(live.voxels, mapped(steps, SMALL).voxels)
        assert len(Field.load(folder)) == len(live)
        live.close()
    assert mid_save >= 1, "no kill landed inside a save"


@pytest.mark.slow
def test_a_mapper_carries_on_from_its_map_file(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Mapper on a real interface and make-scene frames: a second Mapper on the same map_file starts with the
    first one's map and keyframes; find3d query answers on the file; a map of another voxel size is refused."""
    from find3d import Interface
    from find3d.cli import main
    from find3d.data.make_scene import make_scene
    from find3d.mapping.mapper import Mapper, MappingConfig, scene_frames

    make_scene(tmp_path / "scene", seed=1, views=4, heldout=0, size=64)
    frames = scene_frames(tmp_path / "scene")
    interface = Interface.from_checkpoint(tiny_checkpoint, device="cpu")
    config = MappingConfig(min_translation=0.0, min_rotation=0.0, blur_ratio=0.0, max_voxels=300)
    meta = {"checkpoint": str(tiny_checkpoint), "model": interface.fingerprint}
    folder = tmp_path / "map"
    first = Mapper(interface, config, map_file=folder, meta=meta)
    for item in frames:
        first.offer(item)
        assert first.wait_idle(60)
    before = first.map.field()
    first.close()  # saves
    assert first.map.voxels.spilled > 0 and len(before) > 300
    second = Mapper(interface, config, map_file=folder, meta=meta)
    assert second.loaded == len(before) and len(second.map.keyframes) == len(frames)
    after = second.map.field()
    np.testing.assert_allclose(np.sort(after.points, axis=0), np.sort(before.points, axis=0), atol=1e-6)
    second.close()
    out = tmp_path / "answer"
    assert main(["query", "--field", str(folder), "the mug", "--out", str(out), "--top-k", "1"]) == 0
    assert (out / "frames.json").is_file() and (out / "mask.ply").is_file()
    with pytest.raises(InputError, match="voxels"):
        Mapper(interface, MappingConfig(voxel=0.05), map_file=folder, meta=meta)
