"""find3d.mapping without ROS: the voxel map against a brute-force fusion, its memory bound and eviction,
cell back-projection against make-scene's, the newest-only worker, sensor pairing, the scene recorder,
and (slow) the Mapper on a real interface equal to eval-3d's fusion baseline on the same scene."""

from __future__ import annotations

import json
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
from fixtures.tabletop import observations, two_touching_balls
from PIL import Image

from find3d.errors import DataError, InputError
from find3d.ingest.camera import Intrinsics
from find3d.ingest.keyframes import NO_DEPTH, NO_POSE
from find3d.mapping.fusion import Samples, VoxelMap, bound_bytes, cell_samples
from find3d.mapping.record import SceneRecorder
from find3d.mapping.sync import SUPERSEDED, Pairing
from find3d.mapping.worker import LatestWorker


def _samples(rng: np.random.Generator, n: int, dim: int, spread: float = 0.3, centre=(0.0, 0.0, 0.0)) -> Samples:
    features = rng.normal(size=(n, dim)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    xyz = rng.uniform(-spread, spread, size=(n, 3)) + np.asarray(centre)
    return Samples(xyz, features, rng.uniform(0, 1, size=(n, 3)).astype(np.float32))


def test_voxel_map_equals_brute_force_fusion() -> None:
    rng = np.random.default_rng(0)
    fused, voxel, dim = VoxelMap(8, voxel=0.05), 0.05, 8
    frames = [_samples(rng, 500, dim, centre=(0.1 * i, -2.0, 3.0)) for i in range(4)]
    truth: dict[tuple, list] = {}
    for frame in frames:
        fused.integrate(frame)
        for p, f, c in zip(frame.xyz, frame.features, frame.colors):
            key = tuple(np.floor(p / voxel).astype(int))
            entry = truth.setdefault(key, [np.zeros(dim), np.zeros(3), np.zeros(3), 0])
            entry[0] += f
            entry[1] += p
            entry[2] += c
            entry[3] += 1
    assert len(fused) == len(truth)
    points, features, colors, weights = fused.points(), fused.features(), fused.colors(), fused.weights()
    by_voxel = {tuple(np.floor(p / voxel).astype(int)): i for i, p in enumerate(points.astype(np.float64))}
    for key, (f, p, c, n) in truth.items():
        i = by_voxel[key]
        assert weights[i] == n
        np.testing.assert_allclose(points[i], p / n, atol=1e-6)
        np.testing.assert_allclose(colors[i], c / n, atol=1e-6)
        np.testing.assert_allclose(features[i], f / np.linalg.norm(f), atol=1e-5)


def test_memory_is_bounded_and_the_longest_unseen_voxels_go() -> None:
    rng = np.random.default_rng(1)
    dim, cap = 16, 2000
    fused = VoxelMap(dim, voxel=0.01, max_voxels=cap)
    home = _samples(rng, 300, dim, spread=0.05, centre=(0.0, 5.0, 0.0))  # seen again and again: must survive
    sizes, first = [], None
    for step in range(30):  # a robot driving on: every frame covers new ground
        frame = _samples(rng, 400, dim, spread=0.1, centre=(step * 1.0, 0.0, 0.0))
        first = fused.voxel_keys(frame.xyz)[0] if first is None else first
        fused.integrate(frame)
        fused.integrate(home)
        sizes.append(fused.nbytes)
        assert len(fused) <= cap and fused.nbytes <= bound_bytes(dim, cap)
    assert fused.evicted > 0 and max(sizes[10:]) == min(sizes[10:])  # memory flat once full
    assert np.isin(fused.voxel_keys(home.xyz)[0], fused.keys).all()  # the voxels seen in the newest frames stay
    assert not np.isin(first, fused.keys).any()  # the first frame's ground, unseen since, is gone
    assert len(np.unique(fused.slots)) == len(fused) == len(fused.keys) and np.all(np.diff(fused.keys) > 0)
    # A single frame larger than the whole map keeps as many of its voxels as fit.
    small = VoxelMap(dim, voxel=0.001, max_voxels=50)
    small.integrate(_samples(rng, 400, dim))
    assert len(small) == 50


def test_the_map_cuts_touching_objects_apart_by_the_masks_that_saw_them() -> None:
    """The live map keeps the view-consensus evidence frame by frame: two touching balls, merged into one 2D
    mask by 3 of 10 frames, are two instances of the map; without masks, one (as geometry alone has it)."""
    rng = np.random.default_rng(6)
    points, part = two_touching_balls(rng)
    unit = np.zeros((len(points), 4), np.float32)
    unit[:, 0] = 1.0
    grey = np.full((len(points), 3), 0.5, np.float32)
    with_masks, without = VoxelMap(4), VoxelMap(4)
    for seen, masks in observations(part, 10, 3, rng):
        with_masks.integrate(Samples(points[seen].astype(np.float64), unit[seen], grey[seen], masks))
        without.integrate(Samples(points[seen].astype(np.float64), unit[seen], grey[seen]))
    for fused, instances in ((with_masks, 2), (without, 1)):
        labels = fused.segments()
        # each voxel belongs to the part most of its points come from
        voxel = np.searchsorted(fused.keys, fused.voxel_keys(points)[0])
        rows = fused.slots[voxel]
        balls = {int(np.bincount(labels[rows[part == ball]] + 1).argmax()) - 1 for ball in (1, 2)}
        assert len(balls) == instances and -1 not in balls
        assert labels.shape == (len(fused),) and labels.dtype == np.int32


def test_bad_samples_are_refused_or_skipped() -> None:
    rng = np.random.default_rng(2)
    fused = VoxelMap(4)
    frame = _samples(rng, 10, 4)
    frame.xyz[:3] = [np.nan, np.inf, 1e12]  # no reading, and beyond the addressable 42 km
    assert fused.integrate(frame) == len(np.unique(np.floor(frame.xyz[3:] / fused.voxel), axis=0))
    with pytest.raises(InputError, match="8-d"):
        VoxelMap(8).integrate(frame)
    with pytest.raises(InputError):
        VoxelMap(4, voxel=0.0)


def test_cell_samples_back_project_like_make_scene(tmp_path: Path) -> None:
    from find3d.data.make_scene import backproject, make_scene

    scene = tmp_path / "scene"
    make_scene(scene, seed=3, views=2, heldout=0, size=48)
    meta = json.loads((scene / "transforms.json").read_text())
    frame = meta["frames"][0]
    depth = np.asarray(Image.open(scene / frame["depth_file_path"])).astype(np.float64) / 1000.0
    rgb = np.asarray(Image.open(scene / frame["file_path"]).convert("RGB"))
    c2w = np.asarray(frame["transform_matrix"])
    features = np.ones((12, 12, 5), np.float32)
    samples = cell_samples(features, depth, Intrinsics.from_transforms(meta), c2w, rgb)
    rows = ((np.arange(12) + 0.5) * 4).astype(int)
    expected = backproject(depth, meta["fl_x"], 48, c2w)[rows][:, rows][depth[rows][:, rows] > 0]
    np.testing.assert_allclose(samples.xyz, expected, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(samples.features, axis=1), 1.0, atol=1e-6)
    assert samples.colors.max() <= 1.0 and len(cell_samples(features, depth, Intrinsics.from_transforms(meta), c2w,
                                                             rgb, max_depth=0.01)) == 0
    with pytest.raises(InputError, match="differ in size"):
        cell_samples(features, depth, Intrinsics.from_transforms(meta), c2w, rgb[:10])


def test_the_worker_keeps_only_the_newest_pending_item() -> None:
    done, errors, gate = [], [], threading.Event()

    def process(item: int) -> None:
        gate.wait(5)
        if item == 7:
            raise ValueError("a bad frame")
        done.append(item)

    worker = LatestWorker(process, lambda item, err: errors.append((item, str(err))))
    worker.submit(0)
    time.sleep(0.2)  # 0 is in hand; 1..9 arrive while it is: only the newest may wait
    accepted = [worker.submit(i) for i in range(1, 10)]
    assert accepted[0] and not any(accepted[1:]) and worker.dropped == 8
    gate.set()
    assert worker.wait_idle(5)
    assert done == [0, 9] and worker.done == 2 and worker.submitted == 10
    worker.submit(7)
    assert worker.wait_idle(5) and errors == [(7, "a bad frame")] and worker.failed == 1
    worker.submit(8)  # and it lives on
    assert worker.wait_idle(5) and done[-1] == 8
    worker.close()


def test_pairing_matches_stamps_in_any_order_and_gives_up_with_reasons() -> None:
    ms = 1_000_000
    pairing = Pairing(depth_tolerance_ns=20 * ms, pose_tolerance_ns=50 * ms, keep=5, wait=2)
    identity = ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0])
    assert pairing.add_colour(100 * ms, "c100", 0.0) == ([], [])  # waits for its depth and pose
    assert pairing.add_depth(101 * ms, "d101") == ([], [])
    paired, reasons = pairing.add_pose(90 * ms, [1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0])
    assert reasons == [] and [(p.colour, p.depth) for p in paired] == [("c100", "d101")]
    # between two poses the translation is interpolated
    pairing.add_pose(190 * ms, [2.0, 0.0, 0.0], identity[1])
    pairing.add_depth(140 * ms, "d140")
    paired, _ = pairing.add_colour(140 * ms, "c140", 0.0)
    assert paired[0].c2w[0, 3] == pytest.approx(1.5)
    # a depth image came after it, none near it: given up as "no depth"
    pairing.add_colour(300 * ms, "c300", 0.0)
    assert pairing.add_depth(400 * ms, "d400")[1] == [NO_DEPTH]
    # a pose came after it, none near it: "no pose"
    pairing.add_pose(500 * ms, *identity)
    pairing.add_depth(600 * ms, "d600")
    pairing.add_colour(600 * ms, "c600", 0.0)
    assert pairing.add_pose(700 * ms, *identity)[1] == [NO_POSE]
    # colour piling up without depth is bounded
    assert [pairing.add_colour(t * ms, "c", 0.0)[1] for t in (800, 810, 820)][-1] == [SUPERSEDED]
    assert len(pairing.waiting) == 2 and len(pairing.depths) <= 5 and len(pairing.poses) <= 5
    with pytest.raises(DataError):
        pairing.add_pose(900 * ms, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0])


def test_recorder_writes_a_scene_that_reads_back(tmp_path: Path) -> None:
    from find3d.field.embeddings import scene_frames

    camera = Intrinsics(width=8, height=6, fx=10.0, fy=11.0, cx=4.0, cy=3.0,
                        distortion={"k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0, "k3": 0.0})
    recorder = SceneRecorder(tmp_path / "rec")
    rgb = np.random.default_rng(0).integers(0, 255, (6, 8, 3), dtype=np.uint8)
    depth = np.full((6, 8), 1234, np.uint16)
    poses = [np.eye(4), np.diag([1.0, -1.0, -1.0, 1.0])]
    for pose in poses:
        recorder.add(rgb, depth, pose, camera, stamp_ns=5)
    meta = json.loads((tmp_path / "rec" / "transforms.json").read_text())
    assert Intrinsics.from_transforms(meta) == camera
    frames = scene_frames(tmp_path / "rec")
    assert [f["file_path"] for f in frames] == ["images/frame_00001.png", "images/frame_00002.png"]
    assert meta["train_filenames"] == [f["file_path"] for f in frames]
    assert meta["val_filenames"] == [frames[0]["file_path"]]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "rec" / frames[1]["file_path"])), rgb)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "rec" / frames[1]["depth_file_path"])), depth)
    np.testing.assert_array_equal(frames[1]["transform_matrix"], poses[1])
    assert not list((tmp_path / "rec").rglob(".*.tmp"))
    with pytest.raises(InputError, match="not an empty folder"):
        SceneRecorder(tmp_path / "rec")


# ------------------------------------------------------------------------- with a real interface
@pytest.mark.slow
def test_the_mapper_fuses_exactly_what_the_fusion_baseline_does(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """The live map and eval-3d's baseline are one fusion: fed the same frames, the same voxels and features."""
    import find3d
    from find3d.cli import main
    from find3d.mapping.mapper import Frame, Mapper, MappingConfig
    from find3d.query import eval_3d
    from find3d.query.answer import answer

    scene_dir = tmp_path / "scene"
    assert main(["make-scene", "--out", str(scene_dir), "--views", "6", "--heldout", "1", "--size", "64"]) == 0
    assert main(["embed-frames", "--data", str(scene_dir), "--checkpoint", str(tiny_checkpoint)]) == 0
    scene = eval_3d.Scene.load(scene_dir)
    camera = Intrinsics.from_transforms(scene.transforms)
    interface = find3d.Interface.from_checkpoint(tiny_checkpoint, device="cpu")
    # GT depth is exact, so the baseline fuses all of it; the node's default max_depth is for real sensors.
    mapper = Mapper(interface, MappingConfig(max_depth=np.inf), SceneRecorder(tmp_path / "recorded"))
    train = scene.transforms["train_filenames"]
    for path in train:
        frame = scene.frame(path)
        rgb = np.asarray(Image.open(scene_dir / path).convert("RGB"))
        depth = np.asarray(Image.open(scene_dir / frame["depth_file_path"]))
        c2w = np.asarray(frame["transform_matrix"])
        assert mapper.wants(c2w) and mapper.offer(Frame(rgb, depth, camera, c2w))
        assert mapper.wait_idle(60)
    mapper.close()
    stats = mapper.stats()
    assert stats["embedded"] == stats["keyframes"] == len(train) and stats["dropped"] == 0
    assert stats["latency"] >= stats["embed"] > 0

    frames = [{"file_path": p, "c2w": scene.frame(p)["transform_matrix"], "fl_x": camera.fx, "fl_y": camera.fy,
               "cx": camera.cx, "cy": camera.cy, "w": camera.width, "h": camera.height}
              for p in [f["file_path"] for f in scene.transforms["frames"]]]  # an export lists every frame
    baseline = eval_3d.fusion_baseline(scene, types.SimpleNamespace(frames=frames), tmp_path / "fusion")
    live = mapper.map.field()
    order_live, order_base = np.lexsort(live.points.T), np.lexsort(baseline.points.T)
    np.testing.assert_allclose(live.points[order_live], baseline.points[order_base], atol=1e-5)
    np.testing.assert_allclose(live.features[order_live], baseline.features[order_base].astype(np.float32),
                               atol=2e-3)  # the export stores float16
    # The live map answers through answer(), its frames being the keyframes, recorded as a scene.
    result = answer(live, interface, "mug", threshold=0.0, top_k=2, acceptance=0.0)  # all of it: every voxel
    assert len(result.result.indices) == len(live) and len(result.result.frames) == 2
    recorded = json.loads((tmp_path / "recorded" / "transforms.json").read_text())
    paths = {f["file_path"] for f in recorded["frames"]}
    assert {hit.file_path for hit in result.result.frames} <= paths and len(paths) == len(train)


def test_the_node_parameters_file_and_launch_file_name_real_parameters() -> None:
    """configs/ros/mapping_node.yaml and launch/mapping.launch.py cannot drift from the node's dataclass."""
    import ast
    import dataclasses

    import yaml

    from ros_nodes.mapping_node import MappingNodeParameters

    root = Path(__file__).resolve().parents[1]
    fields = {f.name: f for f in dataclasses.fields(MappingNodeParameters)}
    values = yaml.safe_load((root / "configs" / "ros" / "mapping_node.yaml").read_text())["/**"]["ros__parameters"]
    # checkpoint and record_dir come from the launch arguments; negatives is unset (find3d's default)
    assert set(values) == set(fields) - {"checkpoint", "record_dir", "negatives"}
    for name, value in values.items():
        field = fields[name]
        default = field.default_factory() if field.default is dataclasses.MISSING else field.default
        assert type(value) is type(default) and value == default, name  # the file states the dataclass defaults
    tree = ast.parse((root / "launch" / "mapping.launch.py").read_text())
    declared = {node.args[0].value for node in ast.walk(tree) if isinstance(node, ast.Call)
                and getattr(node.func, "id", "") == "DeclareLaunchArgument"}
    passed = {key.value for node in ast.walk(tree) if isinstance(node, ast.Dict) for key in node.keys}
    assert passed <= set(fields) and passed == declared - {"params_file"}
