"""ingest-bag: rosbag2 recordings (written with the real `rosbags` writer, from a real make-scene scene,
in both storage plugins) come back as the scene they were made of; bad bags fail cleanly."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fixtures.field import train_field
from PIL import Image
from scipy.spatial.transform import Rotation

from find3d.cli import main
from find3d.data.make_scene import backproject, make_scene
from find3d.errors import ConfigError, DataError, InputError
from find3d.ingest import messages
from find3d.ingest.bag import Bag
from find3d.ingest.camera import Intrinsics, intrinsics_from_camera_info
from find3d.ingest.config import IngestConfig
from find3d.ingest.images import decode_colour, decode_depth_mm
from find3d.ingest.ingest_bag import ingest_bag
from find3d.ingest.track import PoseTrack
from find3d.poses import matrix_to_pose, opengl_to_optical, optical_to_opengl, pose_to_matrix

SIZE = 64
VIEWS = 8
T0 = 1_700_000_000 * 10**9  # first image stamp (ns)
DT = 100_000_000  # 10 Hz
CAMERA = "camera_optical_frame"
#: base_link -> camera_optical_frame: a camera 30 cm up, looking forward and slightly down
EXTRINSIC = pose_to_matrix(np.array([0.1, -0.05, 0.3]),
                           Rotation.from_euler("zyx", [-90.0, 0.0, -100.0], degrees=True).as_quat())


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scene") / "scene"
    make_scene(out, seed=1, views=VIEWS, heldout=0, size=SIZE)
    return out


def _transforms(scene: Path) -> dict[str, Any]:
    return json.loads((scene / "transforms.json").read_text())


# ------------------------------------------------------------------------------ writing a bag
def _camera_info(meta: dict[str, Any], stamp: int) -> Any:
    return messages.camera_info_message(Intrinsics.from_transforms(meta), stamp, CAMERA)


def _padded(msg: Any, pad: int) -> Any:
    """``msg`` with each row padded by ``pad`` bytes past its pixels (drivers may align rows)."""
    rows = np.asarray(msg.data).reshape(msg.height, msg.step)
    msg.data = np.concatenate([rows, np.zeros((msg.height, pad), np.uint8)], axis=1).ravel()
    msg.step += pad
    return msg


def _nudge(matrix: np.ndarray, sign: float) -> np.ndarray:
    """``matrix`` moved by ±2 cm and turned by ±3° about an odd axis: their midpoint (lerp + slerp) is ``matrix``."""
    out = matrix.copy()
    out[:3, 3] += sign * np.array([0.02, -0.01, 0.015])
    out[:3, :3] = matrix[:3, :3] @ Rotation.from_rotvec(sign * np.radians(3.0) * np.array([0.6, 0.0, 0.8])).as_matrix()
    return out


def write_bag(scene: Path, path: Path, storage: str = "sqlite3", encoding: str = "rgb8",
              depth: str | None = "16UC1", poses: str | None = "tf", repeat: int = 1, blurred: frozenset = frozenset(),
              tf_offset: int = 0, static_child: str = CAMERA, interpolate: bool = False, tf_type: str | None = None,
              second_camera: bool = False, camera_info: bool = True, map_to_odom: np.ndarray | None = None,
              period: int = DT, late_view: int | None = None, zero_quaternion_view: int | None = None,
              static: bool = True) -> Path:
    """A bag of the scene's views as a robot would record them: views 100 ms apart (each ``repeat`` times,
    33 ms apart, as a 30 Hz camera standing still), /tf odom -> base_link, /tf_static base_link -> camera."""
    meta = _transforms(scene)
    recorded: list[messages.Recorded] = []

    def add(topic: str, msgtype: str, stamp: int, msg: Any) -> None:
        recorded.append(messages.Recorded(topic, msgtype, stamp, msg))

    if poses is not None and tf_type is None and static:
        statics = [messages.transform_message("base_link", static_child, EXTRINSIC, T0)]
        if map_to_odom is not None:  # with a leading slash, as some ROS 1-era drivers still publish
            statics.append(messages.transform_message("/map", "odom", map_to_odom, T0))
        static = messages.tf_message(statics)
        add("/tf_static", "tf2_msgs/msg/TFMessage", T0 - 1, static)
    if tf_type is not None:
        add("/tf", tf_type, T0 - 1, messages.typestore().types[tf_type](data="not a transform"))
    for view, frame in enumerate(meta["frames"]):
        camera = opengl_to_optical(np.asarray(frame["transform_matrix"]))
        base = camera @ np.linalg.inv(EXTRINSIC)
        rgb = np.asarray(Image.open(scene / frame["file_path"]).convert("RGB"))
        if view in blurred:
            rgb = cv2.GaussianBlur(rgb, (0, 0), 3.0)
        mm = np.asarray(Image.open(scene / frame["depth_file_path"]))
        for copy in range(repeat):
            stamp = T0 + view * period + copy * 33_000_000
            if poses == "tf" and tf_type is None:
                samples = [(stamp - 10_000_000, _nudge(base, -1)), (stamp + 10_000_000, _nudge(base, 1))] \
                    if interpolate else [(stamp, base)]
                for when, matrix in samples:
                    moving = messages.transform_message("odom", "base_link", matrix, when + tf_offset)
                    if view == zero_quaternion_view:  # a publisher bug seen in the wild: an unset orientation
                        moving.transform.rotation.w = 0.0
                        moving.transform.rotation.x = moving.transform.rotation.y = moving.transform.rotation.z = 0.0
                    add("/tf", "tf2_msgs/msg/TFMessage", when, messages.tf_message([moving]))
            elif poses == "odometry":
                add("/odom", "nav_msgs/msg/Odometry", stamp, messages.odometry(base, stamp, "odom", "base_link"))
            elif poses == "pose_stamped":
                add("/camera_pose", "geometry_msgs/msg/PoseStamped", stamp, messages.pose_stamped(camera, stamp, "map"))
            msgtype, image = messages.image_message(rgb, encoding, stamp, CAMERA)
            topic = "/camera/color/image_raw" + ("/compressed" if msgtype.endswith("CompressedImage") else "")
            add(topic, msgtype, stamp + (period * VIEWS if view == late_view else 1), image)
            if second_camera:
                add("/camera2/color/image_raw", "sensor_msgs/msg/Image", stamp + 1,
                    messages.image_message(rgb, "rgb8", stamp, CAMERA)[1])
            if depth is not None:
                add("/camera/aligned_depth_to_color/image_raw", "sensor_msgs/msg/Image", stamp + 2,
                    messages.depth_message(mm, depth, stamp, CAMERA))
            if camera_info:
                add("/camera/color/camera_info", "sensor_msgs/msg/CameraInfo", stamp + 3, _camera_info(meta, stamp))
                if depth is not None:  # a second CameraInfo: the sibling rule must pick the colour one
                    add("/camera/aligned_depth_to_color/camera_info", "sensor_msgs/msg/CameraInfo", stamp + 3,
                        _camera_info(meta, stamp))
    return messages.write_bag(path, sorted(recorded, key=lambda m: m.log_ns), storage)


def _assert_same_scene(ingested: Path, scene: Path, views: list[int] | None = None, depth: bool = True) -> None:
    """Poses and intrinsics within 1e-5, images and depth equal, frame by frame (``views`` kept, in order)."""
    got, want = _transforms(ingested), _transforms(scene)
    for key in ("fl_x", "fl_y", "cx", "cy", "w", "h", "k1", "k2", "p1", "p2"):
        assert abs(got[key] - want[key]) <= 1e-5, key
    assert got["camera_model"] == want["camera_model"] == "OPENCV"
    views = list(range(len(want["frames"]))) if views is None else views
    assert len(got["frames"]) == len(views)
    for frame, view in zip(got["frames"], views):
        reference = want["frames"][view]
        np.testing.assert_allclose(frame["transform_matrix"], reference["transform_matrix"], atol=1e-5)
        np.testing.assert_array_equal(np.asarray(Image.open(ingested / frame["file_path"])),
                                      np.asarray(Image.open(scene / reference["file_path"]).convert("RGB")))
        if depth:
            written = np.asarray(Image.open(ingested / frame["depth_file_path"]))
            assert written.dtype == np.uint16
            np.testing.assert_array_equal(written, np.asarray(Image.open(scene / reference["depth_file_path"])))
        else:
            assert "depth_file_path" not in frame
    assert set(got["train_filenames"]) == {f["file_path"] for f in got["frames"]}
    assert got["val_filenames"] and set(got["val_filenames"]) <= set(got["train_filenames"])


def _nothing_left(folder: Path, keep: set[str]) -> None:
    """Only ``keep`` (the bags) remain: no output and no hidden staging folder."""
    assert {p.name for p in folder.iterdir()} == keep


# ------------------------------------------------------------------------------ conventions
def test_optical_and_opengl_conversions_are_inverses() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        c2w = pose_to_matrix(rng.normal(size=3), rng.normal(size=4))
        np.testing.assert_allclose(opengl_to_optical(optical_to_opengl(c2w)), c2w, atol=1e-12)
        np.testing.assert_allclose(optical_to_opengl(opengl_to_optical(c2w)), c2w, atol=1e-12)
        optical = opengl_to_optical(c2w)
        # Same camera centre; optical z (forward) is OpenGL -z, optical y (down) is OpenGL -y.
        np.testing.assert_allclose(optical[:3, 3], c2w[:3, 3])
        np.testing.assert_allclose(optical[:3, 2], -c2w[:3, 2])
        np.testing.assert_allclose(optical[:3, 1], -c2w[:3, 1])


def test_a_scene_point_projects_to_its_pixel_through_the_ros_camera(scene: Path) -> None:
    """A pixel back-projected in nerfstudio's convention lands on the same pixel through the ROS optical pose
    and the ROS CameraInfo K (pixel centres at integers): the conventions the bag writer and ingest-bag use."""
    meta = _transforms(scene)
    frame = meta["frames"][2]
    depth = np.asarray(Image.open(scene / frame["depth_file_path"])).astype(np.float64) / 1000.0
    c2w = np.asarray(frame["transform_matrix"])
    world = backproject(depth, meta["fl_x"], SIZE, c2w)
    v, u = 20, 41
    assert depth[v, u] > 0
    w2c = np.linalg.inv(opengl_to_optical(c2w))
    camera = w2c[:3, :3] @ world[v, u] + w2c[:3, 3]
    k = np.asarray(_camera_info(meta, T0).k).reshape(3, 3)
    pixel = k @ camera
    np.testing.assert_allclose(pixel[:2] / pixel[2], [u, v], atol=1e-6)
    assert camera[2] == pytest.approx(depth[v, u])  # z forward is the scene's z-depth


def test_pose_track_interpolates_by_slerp_and_refuses_far_stamps() -> None:
    track = PoseTrack("odom -> base_link")
    track.add(0, np.zeros(3), Rotation.identity().as_quat())
    track.add(1000, np.array([2.0, 0.0, 0.0]), Rotation.from_euler("z", 90, degrees=True).as_quat())
    quarter = track.at(250, tolerance_ns=300)
    assert quarter is not None
    np.testing.assert_allclose(quarter[:3, 3], [0.5, 0.0, 0.0])
    np.testing.assert_allclose(Rotation.from_matrix(quarter[:3, :3]).as_euler("xyz", degrees=True), [0, 0, 22.5],
                               atol=1e-9)
    assert track.at(1100, tolerance_ns=200) is not None  # past the end, within tolerance: held
    assert track.at(1500, tolerance_ns=200) is None
    assert track.at(500, tolerance_ns=200) is None  # nearest sample 500 ns away


def test_every_colour_and_depth_encoding_decodes() -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    for encoding in ("rgb8", "bgr8", "rgba8", "bgra8", "png"):
        msgtype, msg = messages.image_message(rgb, encoding, T0, CAMERA)
        assert msgtype.endswith("CompressedImage") == (encoding == "png")
        np.testing.assert_array_equal(decode_colour(msg, "/c"), rgb)
    _, mono = messages.image_message(rgb, "mono8", T0, CAMERA)
    np.testing.assert_array_equal(decode_colour(mono, "/c"), np.repeat(rgb[..., :1], 3, axis=2))
    padded = _padded(messages.image_message(rgb, "bgr8", T0, CAMERA)[1], 2)
    np.testing.assert_array_equal(decode_colour(padded, "/c"), rgb)
    smooth = cv2.GaussianBlur(rgb, (0, 0), 2.0)
    jpeg = messages.image_message(smooth, "jpeg", T0, CAMERA)[1]
    assert np.abs(decode_colour(jpeg, "/c").astype(int) - smooth).mean() < 4
    mm = rng.integers(0, 5000, (12, 10), dtype=np.uint16)
    mono16 = messages.raw_image(mm, "mono16", T0, CAMERA)  # how some drivers label millimetre depth
    np.testing.assert_array_equal(decode_depth_mm(mono16, "/d"), mm)
    for encoding in ("16UC1", "32FC1"):  # 32FC1 holds NaN where mm == 0
        np.testing.assert_array_equal(decode_depth_mm(messages.depth_message(mm, encoding, T0, CAMERA), "/d"), mm)
    big = messages.raw_image(mm.astype(">u2"), "16UC1", T0, CAMERA)
    assert big.is_bigendian == 1
    np.testing.assert_array_equal(decode_depth_mm(_padded(big, 4), "/d"), mm)
    with pytest.raises(DataError, match=r"/c: image encoding '8UC3'"):
        decode_colour(messages.raw_image(rgb, "8UC3", T0, CAMERA), "/c")
    msg = messages.raw_image(rgb, "rgb8", T0, CAMERA)
    msg.data = msg.data[:-5]
    with pytest.raises(DataError, match="truncated"):
        decode_colour(msg, "/c")


def test_camera_info_distortion_models_and_uncalibrated_cameras(scene: Path) -> None:
    info = _camera_info(_transforms(scene), T0)
    info.d = np.array([0.1, -0.05, 0.001, 0.002, 0.01])
    camera = intrinsics_from_camera_info(info, "/info").to_transforms()
    assert camera["camera_model"] == "OPENCV"
    assert [camera[k] for k in ("k1", "k2", "p1", "p2", "k3")] == [0.1, -0.05, 0.001, 0.002, 0.01]
    info.distortion_model, info.d = "equidistant", np.array([0.2, 0.01, -0.003, 0.0004])
    camera = intrinsics_from_camera_info(info, "/info").to_transforms()
    assert camera["camera_model"] == "OPENCV_FISHEYE" and camera["k4"] == 0.0004
    info.distortion_model, info.d = "rational_polynomial", np.array([0.1, 0.0, 0.0, 0.0, 0.0, 0.3, 0.0, 0.0])
    with pytest.raises(DataError, match=r"/info: rational_polynomial .* rectify"):
        intrinsics_from_camera_info(info, "/info")
    info.distortion_model, info.d, info.k = "plumb_bob", np.zeros(5), np.zeros(9)
    with pytest.raises(DataError, match=r"/info: .* uncalibrated"):
        intrinsics_from_camera_info(info, "/info")


# ------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize(("storage", "encoding", "depth"), [
    ("sqlite3", "rgb8", "16UC1"), ("mcap", "rgb8", "16UC1"), ("mcap", "bgr8", "32FC1"), ("sqlite3", "png", "16UC1"),
])
def test_bag_from_a_scene_ingests_back_into_that_scene(scene: Path, tmp_path: Path, storage: str, encoding: str,
                                                       depth: str) -> None:
    bag = write_bag(scene, tmp_path / "bag", storage, encoding=encoding, depth=depth)
    summary = ingest_bag(bag, tmp_path / "out")
    assert summary.kept == summary.images == VIEWS and not summary.dropped
    assert summary.poses == f"tf odom -> {CAMERA}"  # no map frame: odom is the default's second choice
    assert summary.topics["camera_info"] == "/camera/color/camera_info"  # the image topic's sibling
    _assert_same_scene(tmp_path / "out", scene)
    _nothing_left(tmp_path, {"bag", "out"})


def test_tf_between_image_stamps_is_interpolated(scene: Path, tmp_path: Path) -> None:
    bag = write_bag(scene, tmp_path / "bag", "mcap", interpolate=True, depth=None)
    ingest_bag(bag, tmp_path / "out")
    _assert_same_scene(tmp_path / "out", scene, depth=False)


def test_map_is_the_default_fixed_frame_when_the_camera_connects_to_it(scene: Path, tmp_path: Path) -> None:
    map_to_odom = pose_to_matrix(np.array([1.0, -2.0, 0.1]), Rotation.from_euler("z", 30, degrees=True).as_quat())
    bag = write_bag(scene, tmp_path / "bag", "mcap", map_to_odom=map_to_odom, depth=None)
    summary = ingest_bag(bag, tmp_path / "map")
    assert summary.poses == f"tf map -> {CAMERA}"
    frames = _transforms(tmp_path / "map")["frames"]
    for frame, reference in zip(frames, _transforms(scene)["frames"]):
        np.testing.assert_allclose(frame["transform_matrix"], map_to_odom @ np.asarray(reference["transform_matrix"]),
                                   atol=1e-5)
    ingest_bag(bag, tmp_path / "odom", IngestConfig(fixed_frame="/odom"))  # odom hangs below map; "/" as tf2
    _assert_same_scene(tmp_path / "odom", scene, depth=False)


@pytest.mark.parametrize(("poses", "given", "source"), [
    ("odometry", False, f"/tf_static base_link -> {CAMERA}"),  # the robot's static tf places the camera
    ("odometry", True, "--camera-extrinsic"),
    ("pose_stamped", False, "the camera's own pose"),
])
def test_poses_from_a_pose_topic(scene: Path, tmp_path: Path, poses: str, given: bool, source: str) -> None:
    """No /tf in these bags (only /tf_static), so the pose topic is found by type."""
    bag = write_bag(scene, tmp_path / "bag", "sqlite3", poses=poses)
    extrinsic = None
    if given:  # the camera in base_link, as the odometry is the robot's
        translation, quaternion = matrix_to_pose(EXTRINSIC)
        extrinsic = [*translation.tolist(), *quaternion.tolist()]
    summary = ingest_bag(bag, tmp_path / "out", IngestConfig(camera_extrinsic=extrinsic))
    topic = "/odom" if poses == "odometry" else "/camera_pose"
    assert summary.poses == f"pose topic {topic}, camera by {source}"
    _assert_same_scene(tmp_path / "out", scene)


def test_odometry_without_an_extrinsic_or_static_tf(scene: Path, tmp_path: Path) -> None:
    bag = write_bag(scene, tmp_path / "bag", "mcap", poses="odometry", static=False)
    message = _fails(bag, tmp_path / "out", "/odom: its poses are of 'base_link', but the camera frame is "
                                            "'camera_optical_frame'")
    assert "--camera-extrinsic X Y Z QX QY QZ QW" in message


def test_keyframes_drop_duplicates_and_blurred_frames(scene: Path, tmp_path: Path) -> None:
    bag = write_bag(scene, tmp_path / "bag", "mcap", repeat=3, blurred=frozenset({4}))
    summary = ingest_bag(bag, tmp_path / "out")
    assert summary.images == 3 * VIEWS
    # The blurred view's three copies: the first is judged and dropped, the next two are candidates too
    # (nothing was kept since view 3), so all three go as blurred; the other views keep their first copy.
    assert summary.dropped == {"duplicate (moved too little)": 2 * (VIEWS - 1), "blurred": 3}
    _assert_same_scene(tmp_path / "out", scene, views=[v for v in range(VIEWS) if v != 4])
    # Raising the motion thresholds past the orbit's steps keeps only the first frame.
    summary = ingest_bag(bag, tmp_path / "out2", IngestConfig(min_translation=10.0, min_rotation=360.0))
    assert summary.kept == 1


def test_a_colour_image_logged_long_after_its_depth_is_dropped_whole(scene: Path, tmp_path: Path) -> None:
    """View 0's colour is logged after all others, 4 s after its depth, which has left the depth cache
    by then: the frame goes (counted as no depth), and no file of it remains."""
    bag = write_bag(scene, tmp_path / "bag", "sqlite3", period=500_000_000, late_view=0)
    summary = ingest_bag(bag, tmp_path / "out")
    assert summary.kept == VIEWS - 1 and summary.dropped == {"no depth within tolerance": 1}
    _assert_same_scene(tmp_path / "out", scene, views=list(range(1, VIEWS)))
    assert len(list((tmp_path / "out" / "images").iterdir())) == VIEWS - 1
    assert len(list((tmp_path / "out" / "depths").iterdir())) == VIEWS - 1


def test_cli_ingests_and_reports(scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bag = write_bag(scene, tmp_path / "bag", "mcap", second_camera=True)
    out = tmp_path / "out"
    assert main(["ingest-bag", str(bag), "--out", str(out), "--image-topic", "/camera/color/image_raw",
                 "--min-rotation", "2.5"]) == 0
    printed = capsys.readouterr().out
    assert f"{VIEWS} of {VIEWS} images kept" in printed and "messages/s" in printed
    _assert_same_scene(out, scene)
    assert main(["ingest-bag", str(bag), "--out", str(out)]) == 2  # not empty, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["ingest-bag", str(bag), "--out", str(out), "--overwrite",
                 "--image-topic", "/camera/color/image_raw"]) == 0
    _assert_same_scene(out, scene)
    assert main(["ingest-bag", str(bag), "--out", str(tmp_path / "x"), "--blur-ratio", "2"]) == 2
    assert "--blur-ratio" in capsys.readouterr().err
    _nothing_left(tmp_path, {"bag", "out"})


# ------------------------------------------------------------------------------ bad bags
@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("kept", [0.5, 0.99])  # sqlite3 at 99% opens, and fails reading a message page
def test_a_truncated_bag_is_a_data_error(scene: Path, tmp_path: Path, storage: str, kept: float) -> None:
    bag = write_bag(scene, tmp_path / "bag", storage)
    storage_file = next(p for p in bag.iterdir() if p.suffix in (".db3", ".mcap"))
    data = storage_file.read_bytes()
    storage_file.write_bytes(data[: int(len(data) * kept)])
    with pytest.raises(DataError, match="truncated or corrupt") as error:
        ingest_bag(bag, tmp_path / "out")
    assert str(bag) in str(error.value)
    _nothing_left(tmp_path, {"bag"})


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_a_storage_file_alone_ingests_and_a_folder_without_metadata_is_a_data_error(
        scene: Path, tmp_path: Path, storage: str) -> None:
    bag = write_bag(scene, tmp_path / "bag", storage, depth=None)
    (bag / "metadata.yaml").unlink()
    _fails(bag, tmp_path / "out", "no metadata.yaml; pass its .db3 / .mcap file")
    storage_file = next(p for p in bag.iterdir() if p.suffix in (".db3", ".mcap"))
    ingest_bag(storage_file, tmp_path / "out")
    _assert_same_scene(tmp_path / "out", scene, depth=False)


def _fails(bag: Path, out: Path, match: str, config: IngestConfig | None = None,
           error: type[Exception] = DataError) -> str:
    before = {p.name for p in out.parent.iterdir()}
    with pytest.raises(error, match=match) as raised:
        ingest_bag(bag, out, config)
    _nothing_left(out.parent, before)
    return str(raised.value)


def test_wrong_topic_types_name_the_topic_and_the_flag(scene: Path, tmp_path: Path) -> None:
    bag = write_bag(scene, tmp_path / "bag", "sqlite3", tf_type="std_msgs/msg/String")
    message = _fails(bag, tmp_path / "out", r"topic /tf has type std_msgs/msg/String")
    assert "tf2_msgs/msg/TFMessage" in message and "--tf-topic" in message
    good = write_bag(scene, tmp_path / "good", "sqlite3")
    with pytest.raises(DataError, match=r"camera_info has type sensor_msgs/msg/CameraInfo.*--image-topic"):
        ingest_bag(good, tmp_path / "out", IngestConfig(image_topic="/camera/color/camera_info"))
    with pytest.raises(DataError, match=r"no topic /nope \(--depth-topic\)"):
        ingest_bag(good, tmp_path / "out", IngestConfig(depth_topic="/nope"))
    _nothing_left(tmp_path, {"bag", "good"})


def test_a_transform_that_is_not_rigid_names_its_edge(scene: Path, tmp_path: Path) -> None:
    bag = write_bag(scene, tmp_path / "bag", "mcap", zero_quaternion_view=3)
    _fails(bag, tmp_path / "out", r"/tf odom -> base_link at \d+ ns: .* quaternion \[0\.0, 0\.0, 0\.0, 0\.0\]")


def test_images_without_poses(scene: Path, tmp_path: Path) -> None:
    bag = write_bag(scene, tmp_path / "bag", "mcap", poses=None)
    message = _fails(bag, tmp_path / "out", "the images have no poses")
    assert "/camera/color/image_raw" in message and "--pose-topic" in message
    # tf recorded, but 10 s off the image stamps (e.g. a second clock): every image is dropped.
    late = write_bag(scene, tmp_path / "late", "mcap", tf_offset=10 * 10**9)
    message = _fails(late, tmp_path / "out", f"none of the {VIEWS} images on /camera/color/image_raw was kept")
    assert "no odom -> base_link transform within the pose tolerance" in message and "--pose-tolerance" in message


def test_a_pose_chain_that_never_connects(scene: Path, tmp_path: Path) -> None:
    bag = write_bag(scene, tmp_path / "bag", "sqlite3", static_child="camera_link")
    message = _fails(bag, tmp_path / "out", "the camera frame 'camera_optical_frame' is not in the tf tree")
    assert "odom: base_link, camera_link" in message
    # The optical frame exists but hangs off a tree the fixed frame is not in.
    message = _fails(bag, tmp_path / "out", "never connects", IngestConfig(camera_frame="camera_link",
                                                                         fixed_frame="map"))
    assert "--fixed-frame" in message


def test_ambiguous_or_missing_topics_list_the_bag(scene: Path, tmp_path: Path) -> None:
    bag = write_bag(scene, tmp_path / "bag", "mcap", second_camera=True)
    message = _fails(bag, tmp_path / "out", "2 colour image topics")
    assert re.search(r"/camera2/color/image_raw +sensor_msgs/msg/Image", message) and "--image-topic" in message
    bare = write_bag(scene, tmp_path / "bare", "mcap", camera_info=False)
    message = _fails(bare, tmp_path / "out", r"no camera info topic \(sensor_msgs/msg/CameraInfo\)")
    assert "--camera-info-topic" in message
    _nothing_left(tmp_path, {"bag", "bare"})


def test_bad_output_and_options_fail_before_reading(scene: Path, tmp_path: Path) -> None:
    bag = write_bag(scene, tmp_path / "bag", "sqlite3")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        ingest_bag(bag, tmp_path / "taken")
    with pytest.raises(InputError, match="not a scene folder"):
        ingest_bag(bag, tmp_path / "taken", overwrite=True)
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    with pytest.raises(ConfigError, match="camera_extrinsic"):
        IngestConfig(camera_extrinsic=[0.0, 1.0])
    with pytest.raises(InputError, match="not found"):
        ingest_bag(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(DataError, match=r"no PoseStamped / Odometry topic .* drop --camera-extrinsic"):
        ingest_bag(bag, tmp_path / "out", IngestConfig(camera_extrinsic=[0.0] * 6 + [1.0]))
    assert not (tmp_path / "out").exists()
    with Bag(bag) as opened:  # the reader lists what it found, for the errors above
        assert opened.types["/tf_static"] == "tf2_msgs/msg/TFMessage" and opened.count(["/tf"]) == VIEWS


# ------------------------------------------------------------------------------ like any other scene
@pytest.mark.slow
def test_an_ingested_scene_trains_exports_and_answers_queries(scene: Path, tmp_path: Path,
                                                              tiny_checkpoint: Path) -> None:
    import torch

    torch.set_num_threads(1)
    out = tmp_path / "ingested"
    assert main(["ingest-bag", str(write_bag(scene, tmp_path / "bag", "mcap")), "--out", str(out)]) == 0
    assert main(["embed-frames", "--data", str(out), "--checkpoint", str(tiny_checkpoint)]) == 0
    config = train_field(out, tmp_path / "runs")
    field = tmp_path / "field"
    assert main(["export-field", "--config", str(config), "--out", str(field), "--num-points", "2000"]) == 0
    assert main(["query", "--field", str(field), "mug", "--top-k", "2", "--threshold", "0.5"]) == 0
    frames = json.loads((field / "frames.json").read_text())["frames"]
    poses = {f["file_path"]: f["transform_matrix"] for f in _transforms(out)["frames"]}
    assert len(frames) == 2 and all(np.allclose(hit["c2w"], poses[hit["file_path"]]) for hit in frames)
