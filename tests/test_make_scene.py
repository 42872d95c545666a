"""make-scene writes a nerfstudio dataset whose poses, intrinsics, depth and 3D ground truth agree."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from find3d.cli import main
from find3d.data.make_scene import make_scene
from find3d.errors import InputError

SIZE = 128


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scene")
    make_scene(out, seed=3, views=10, heldout=2, size=SIZE)
    return out


def _transforms(scene: Path) -> dict:
    return json.loads((scene / "transforms.json").read_text())


def _depth_m(scene: Path, frame: dict) -> np.ndarray:
    return np.asarray(Image.open(scene / frame["depth_file_path"])).astype(np.float64) / 1000.0


def _world_points(meta: dict, frame: dict, depth: np.ndarray) -> np.ndarray:
    """Back-projection written from the nerfstudio/OpenGL conventions, independently of make_scene."""
    v, u = np.mgrid[0:meta["h"], 0:meta["w"]] + 0.5
    rays = np.stack([(u - meta["cx"]) / meta["fl_x"], -(v - meta["cy"]) / meta["fl_y"], -np.ones_like(u)], -1)
    c2w = np.asarray(frame["transform_matrix"])
    return (rays * depth[..., None]) @ c2w[:3, :3].T + c2w[:3, 3]


def _project(meta: dict, frame: dict, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w2c = np.linalg.inv(np.asarray(frame["transform_matrix"]))
    cam = xyz @ w2c[:3, :3].T + w2c[:3, 3]
    z = -cam[:, 2]
    u = meta["fl_x"] * cam[:, 0] / z + meta["cx"]
    v = -meta["fl_y"] * cam[:, 1] / z + meta["cy"]
    return u, v, z


def test_layout_and_nerfstudio_splits(scene: Path) -> None:
    meta = _transforms(scene)
    assert meta["camera_model"] == "OPENCV" and (meta["w"], meta["h"]) == (SIZE, SIZE)
    names = [f["file_path"] for f in meta["frames"]]
    assert len(names) == 12 and len(meta["train_filenames"]) == 10
    assert meta["val_filenames"] == meta["test_filenames"] and len(meta["val_filenames"]) == 2
    assert set(meta["train_filenames"]).isdisjoint(meta["val_filenames"])
    assert set(meta["train_filenames"]) | set(meta["val_filenames"]) == set(names)
    for frame in meta["frames"]:
        for key in ("file_path", "depth_file_path", "instance_path"):
            assert Image.open(scene / frame[key]).size == (SIZE, SIZE)
        assert np.asarray(Image.open(scene / frame["depth_file_path"])).dtype == np.uint16
        c2w = np.asarray(frame["transform_matrix"])
        # The camera looks (-z) at the table centre from the upper hemisphere.
        towards = np.array([0.0, 0.0, 0.625]) - c2w[:3, 3]
        assert np.dot(-c2w[:3, 2], towards / np.linalg.norm(towards)) > 0.999 and c2w[2, 3] > 0.625


def test_nerfstudio_dataparser_reads_the_scene(scene: Path) -> None:
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    parser = NerfstudioDataParserConfig(data=scene).setup()
    train = parser.get_dataparser_outputs("train")
    test = parser.get_dataparser_outputs("test")
    assert len(train.image_filenames) == 10 and len(test.image_filenames) == 2
    assert len(train.metadata["depth_filenames"]) == 10
    assert float(train.cameras.fx[0]) == pytest.approx(_transforms(scene)["fl_x"])


def test_depth_is_pybullets_linearised_depth(scene: Path) -> None:
    """Re-render frame 1 and unproject pybullet's depth buffer through the inverse projection matrix."""
    from find3d.data.engine.scene import Camera, SceneBuilder, compose_scene

    meta = _transforms(scene)
    frame = meta["frames"][0]
    c2w = np.asarray(frame["transform_matrix"])
    fov = math.degrees(2 * math.atan(meta["h"] / 2 / meta["fl_y"]))
    camera = Camera(eye=tuple(c2w[:3, 3]), target=(0.0, 0.0, 0.625), fov_deg=fov)
    spec = compose_scene(np.random.default_rng([3, 0]), min_objects=5, max_objects=7)
    builder = SceneBuilder()
    try:
        builder.build(spec)
        rendered = builder.render(camera, spec.light, SIZE, SIZE)
    finally:
        builder.close()
    ndc_z = 2.0 * rendered.raw_depth.astype(np.float64) - 1.0
    clip = np.stack([np.zeros_like(ndc_z), np.zeros_like(ndc_z), ndc_z, np.ones_like(ndc_z)], -1)
    eye = clip @ np.linalg.inv(camera.projection_matrix(SIZE, SIZE)).T
    z_depth = -eye[..., 2] / eye[..., 3]
    stored = _depth_m(scene, frame)
    hit = stored > 0
    assert hit.mean() > 0.5
    assert np.abs(stored[hit] - z_depth[hit]).max() <= 0.0006  # millimetre rounding
    assert np.array_equal(np.asarray(Image.open(scene / frame["file_path"])), rendered.rgb)


def test_views_agree_on_world_points(scene: Path) -> None:
    meta = _transforms(scene)
    objects = json.loads((scene / "ground_truth" / "objects.json").read_text())["objects"]
    things = [int(k) for k, o in objects.items() if o["isthing"]]
    a, b = meta["frames"][0], meta["frames"][1]
    ids_a = np.asarray(Image.open(scene / a["instance_path"])).astype(np.int64)
    ids_b = np.asarray(Image.open(scene / b["instance_path"])).astype(np.int64)
    depth_b = _depth_m(scene, b)
    keep = np.isin(ids_a, things) & (_depth_m(scene, a) > 0)
    xyz = _world_points(meta, a, _depth_m(scene, a))[keep]
    u, v, z = _project(meta, b, xyz)
    inside = (u >= 0) & (u < SIZE) & (v >= 0) & (v < SIZE) & (z > 0)
    col, row = u[inside].astype(int), v[inside].astype(int)
    visible = np.abs(depth_b[row, col] - z[inside]) < 0.01
    assert inside.sum() > 200 and visible.mean() > 0.6  # the rest is occluded in view b
    assert (ids_b[row, col][visible] == ids_a[keep][inside][visible]).mean() > 0.95


def test_ground_truth_points(scene: Path) -> None:
    meta = _transforms(scene)
    objects = json.loads((scene / "ground_truth" / "objects.json").read_text())["objects"]
    points = np.load(scene / "ground_truth" / "points.npz")
    xyz, object_id = points["xyz"], points["object_id"]
    assert xyz.dtype == np.float32 and object_id.dtype == np.int32 and xyz.shape == (len(object_id), 3)
    assert sum(o["isthing"] for o in objects.values()) >= 5
    table = next(int(k) for k, o in objects.items() if o["category"] == "table")
    assert np.median(xyz[object_id == table, 2]) == pytest.approx(0.625, abs=0.005)
    for key, obj in objects.items():
        if obj["isthing"] and (object_id == int(key)).any():
            assert xyz[object_id == int(key), 2].min() > 0.615, obj["category"]
    # Every labelled point lies on a surface the views saw: back-project frame 1 and find its points.
    frame = meta["frames"][0]
    ids = np.asarray(Image.open(scene / frame["instance_path"])).astype(np.int64)
    seen = _world_points(meta, frame, _depth_m(scene, frame))[ids == table]
    tree_keys = {tuple(k) for k in np.floor(xyz[object_id == table] / 0.005).astype(int)}
    found = np.mean([tuple(k) in tree_keys for k in np.floor(seen[::50] / 0.005).astype(int)])
    assert found > 0.8


def test_same_seed_same_bytes(scene: Path, tmp_path: Path) -> None:
    make_scene(tmp_path / "again", seed=3, views=10, heldout=2, size=SIZE)
    files = sorted(p.relative_to(scene) for p in scene.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*") if p.is_file())
    for name in files:
        assert (scene / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name


def test_bad_input(tmp_path: Path, scene: Path) -> None:
    with pytest.raises(InputError, match="--views"):
        make_scene(tmp_path / "s", views=0)
    with pytest.raises(InputError, match="--overwrite"):
        make_scene(scene)
    assert main(["make-scene", "--out", str(tmp_path / "cli"), "--views", "0"]) == 2


def test_clutter_puts_objects_in_contact_with_exact_ground_truth(tmp_path: Path) -> None:
    """--clutter: most things touch another one (beside / lean / on, as objects.json records): their collision
    shapes are exactly as far apart as drawn (touching, or overlapping by at most MAX_OVERLAP), what rests
    "on" a support lies above its bottom, and the ground truth is as exact as ever."""
    from find3d.data.engine.clutter import MAX_OVERLAP, compose_clutter
    from find3d.data.engine.scene import SceneBuilder

    scene = tmp_path / "clutter"
    make_scene(scene, seed=4, views=10, heldout=2, size=SIZE, clutter=True, repeat=True)
    objects = json.loads((scene / "ground_truth" / "objects.json").read_text())["objects"]
    contacts = {int(k): o["contact"] for k, o in objects.items() if o.get("contact")}
    things = [int(k) for k, o in objects.items() if o["isthing"]]
    assert len(contacts) >= len(things) // 2 and {c["kind"] for c in contacts.values()} <= {"beside", "lean", "on"}
    spec = compose_clutter(np.random.default_rng([4, 2]), min_objects=5, max_objects=7, repeat=True)  # make_scene's
    builder = SceneBuilder()
    try:
        bodies = {index: body for body, index in builder.build(spec).items() if not isinstance(index, str)}
        for index, placed in enumerate(spec.objects):
            contact = placed.contact
            if contact is None:
                continue
            assert contacts[index + 1] == {"kind": contact.kind, "partner": contact.partner + 1}
            distance = builder._distance(bodies[index], bodies[contact.partner])
            assert -MAX_OVERLAP - 1e-4 <= distance <= 1e-4 and distance == pytest.approx(contact.gap, abs=1e-4)
    finally:
        builder.close()
    points = np.load(scene / "ground_truth" / "points.npz")
    xyz, object_id = points["xyz"], points["object_id"]
    for thing, contact in contacts.items():
        if contact["kind"] == "on" and (object_id == thing).any():
            assert np.median(xyz[object_id == thing, 2]) > xyz[object_id == contact["partner"], 2].min()
    # Deterministic, as the default layout is.
    make_scene(tmp_path / "again", seed=4, views=10, heldout=2, size=SIZE, clutter=True, repeat=True)
    assert (scene / "ground_truth" / "points.npz").read_bytes() == \
        (tmp_path / "again" / "ground_truth" / "points.npz").read_bytes()


# ------------------------------------------------------------------------------------------ sensors
SENSOR_SIZE = 96


@pytest.fixture(scope="module")
def sensor_scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small scene per sensor model, the same seed (and a drifting-pose rgbd one)."""
    root = tmp_path_factory.mktemp("sensors")
    scenes = {}
    for name, sensor, pose_noise in (("ideal", "ideal", 0.0), ("rgbd", "rgbd", 0.0), ("rgb", "rgb", 0.0),
                                     ("drift", "rgbd", 0.01)):
        make_scene(root / name, seed=5, views=6, heldout=2, size=SENSOR_SIZE, close=True, sensor=sensor,
                   pose_noise=pose_noise)
        scenes[name] = root / name
    return scenes


def test_rgbd_sensor_noise_holes_and_flying_pixels(sensor_scenes: dict[str, Path]) -> None:
    ideal, rgbd = sensor_scenes["ideal"], sensor_scenes["rgbd"]
    errors, depths, holes, flying = [], [], [], []
    for frame in _transforms(rgbd)["frames"]:
        exact, noisy = _depth_m(ideal, frame), _depth_m(rgbd, frame)
        hit = exact > 0
        holes.append(((noisy == 0) & hit).sum() / hit.sum())
        both = hit & (noisy > 0)
        errors.append(np.abs(noisy - exact)[both])
        depths.append(exact[both])
        # Flying pixels: readings far from every exact depth of their 3x3 neighbourhood.
        padded = np.pad(exact, 1, mode="edge")
        window = np.stack([padded[r:r + SENSOR_SIZE, c:c + SENSOR_SIZE] for r in range(3) for c in range(3)])
        off = np.abs(window - noisy).min(axis=0)
        flying.append(((off > 0.05) & both).sum())
    error, depth = np.concatenate(errors), np.concatenate(depths)
    near, far = error[depth < np.median(depth)], error[depth >= np.median(depth)]
    print(f"rgbd: holes {np.mean(holes):.3f}, median error {np.median(error) * 1000:.1f} mm "
          f"(near half {np.median(near) * 1000:.1f}, far half {np.median(far) * 1000:.1f}), "
          f"flying pixels per view {np.mean(flying):.0f}")
    assert 0.01 < np.mean(holes) < 0.2
    assert 0.0005 < np.median(error) < 0.02 and np.median(far) > np.median(near)  # grows with distance
    assert np.mean(flying) > 5
    # Colour, instance masks and the 3D ground truth are the exact render's.
    for name in ("ground_truth/points.npz", "ground_truth/objects.json", "images/frame_00002.png",
                 "instances/frame_00002.png"):
        assert (ideal / name).read_bytes() == (rgbd / name).read_bytes(), name


def test_rgb_sensor_is_a_phone_capture(sensor_scenes: dict[str, Path]) -> None:
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    ideal, rgb = sensor_scenes["ideal"], sensor_scenes["rgb"]
    meta = _transforms(rgb)
    assert not (rgb / "depths").exists()
    assert all("depth_file_path" not in f and f["file_path"].endswith(".jpg") for f in meta["frames"])
    ratios = []
    for frame, reference in zip(meta["frames"], _transforms(ideal)["frames"]):
        image = Image.open(rgb / frame["file_path"])
        assert image.format == "JPEG" and image.size == (SENSOR_SIZE, SENSOR_SIZE)
        exact = np.asarray(Image.open(ideal / reference["file_path"]), dtype=np.float64)
        ratios.append(np.asarray(image, dtype=np.float64).mean() / exact.mean())
        assert frame["transform_matrix"] == reference["transform_matrix"]
    print(f"rgb: brightness against the render per frame {np.round(ratios, 2).tolist()}")
    assert np.ptp(ratios) > 0.05  # auto-exposure varies between frames
    assert (ideal / "ground_truth/points.npz").read_bytes() == (rgb / "ground_truth/points.npz").read_bytes()
    outputs = NerfstudioDataParserConfig(data=rgb).setup().get_dataparser_outputs("train")
    assert len(outputs.image_filenames) == 6 and not outputs.metadata.get("depth_filenames")


def test_pose_noise_drifts_from_the_first_frame(sensor_scenes: dict[str, Path], tmp_path: Path) -> None:
    exact, drift = (_transforms(sensor_scenes[name])["frames"] for name in ("rgbd", "drift"))
    offsets = [np.linalg.norm(np.asarray(a["transform_matrix"])[:3, 3] - np.asarray(b["transform_matrix"])[:3, 3])
               for a, b in zip(exact, drift)]
    assert offsets[0] == 0.0 and max(offsets) > 0.01
    for frame in drift:  # still rigid poses
        rotation = np.asarray(frame["transform_matrix"])[:3, :3]
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-6)
    assert (sensor_scenes["rgbd"] / "depths/frame_00003.png").read_bytes() == \
        (sensor_scenes["drift"] / "depths/frame_00003.png").read_bytes()
    # Deterministic per seed.
    make_scene(tmp_path / "again", seed=5, views=6, heldout=2, size=SENSOR_SIZE, close=True, sensor="rgbd",
               pose_noise=0.01)
    for name in ("transforms.json", "depths/frame_00004.png"):
        assert (tmp_path / "again" / name).read_bytes() == (sensor_scenes["drift"] / name).read_bytes()
    with pytest.raises(InputError, match="--sensor"):
        make_scene(tmp_path / "bad", sensor="lidar")
    with pytest.raises(InputError, match="--pose-noise"):
        make_scene(tmp_path / "bad", pose_noise=-1.0)
