"""Frames, messages and objects the ROS nodes rely on: the optical-frame pair, a point that projects to a
known pixel through a Frame's pose and CameraInfo, PointCloud2 / Image codecs, 3D objects, and
``<image:N>`` naming in-memory images."""

from __future__ import annotations

import numpy as np
import pytest
from geometry_msgs.msg import Pose
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from find3d.errors import InputError
from find3d.interface.syntax import parse_query
from find3d.poses import matrix_to_pose, opengl_to_optical, optical_to_opengl, pose_to_matrix
from find3d.query.field import FrameHit
from find3d.query.objects import group_objects
from find3d.query.render import project_points
from ros_nodes.conversions import (
    check_overrides,
    fill_camera_info,
    fill_cloud,
    fill_pose,
    image_to_rgb,
    mask_to_array,
    mask_to_image,
    read_cloud,
    request_images,
    rgb_to_image,
)


def random_c2w(seed: int) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    c2w = np.eye(4)
    c2w[:3, :3] = Rotation.from_rotvec(rng.normal(size=3)).as_matrix()
    c2w[:3, 3] = rng.normal(size=3)
    return c2w


def test_optical_pair_are_inverses_and_flip_y_and_z() -> None:
    c2w = random_c2w(0)
    optical = opengl_to_optical(c2w)
    np.testing.assert_allclose(optical_to_opengl(optical), c2w, atol=1e-12)
    np.testing.assert_allclose(optical[:3, 0], c2w[:3, 0])  # x right in both
    np.testing.assert_allclose(optical[:3, 1], -c2w[:3, 1])  # y down vs up
    np.testing.assert_allclose(optical[:3, 2], -c2w[:3, 2])  # z forward vs back (OpenGL looks along -z)
    translation, quaternion = matrix_to_pose(optical)
    np.testing.assert_allclose(pose_to_matrix(translation, quaternion), optical, atol=1e-12)
    with pytest.raises(InputError, match="4x4"):
        opengl_to_optical(np.eye(3))


def test_a_point_projects_to_the_known_pixel_through_the_frame_message() -> None:
    c2w = random_c2w(1)
    hit = FrameHit(index=0, file_path="images/a.png", score=1.0, c2w=c2w, fx=80.0, fy=70.0, cx=32.0, cy=24.0,
                   width=64, height=48)
    # A point 2 m in front of the camera, 0.25 m right and 0.1 m up (OpenGL camera coordinates).
    world = (c2w @ np.array([0.25, 0.1, -2.0, 1.0]))[:3]
    uv, depth = project_points(world[None], c2w, hit.fx, hit.fy, hit.cx, hit.cy)  # nerfstudio pixel convention
    assert depth[0] == pytest.approx(2.0)
    pose, info = fill_pose(Pose(), c2w), fill_camera_info(CameraInfo(), hit, Header(frame_id="map"))
    optical = pose_to_matrix([pose.position.x, pose.position.y, pose.position.z],
                             [pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w])
    x, y, z = (np.linalg.inv(optical) @ np.append(world, 1.0))[:3]
    k = np.asarray(info.k).reshape(3, 3)
    pixel = k @ np.array([x, y, z]) / z  # as image_geometry / OpenCV project it
    assert z == pytest.approx(2.0) and x > 0 and y < 0  # right of and above the optical axis
    # The pixel 80 * 0.25 / 2 right and 70 * 0.1 / 2 above the principal point; ROS centres pixels at integers.
    np.testing.assert_allclose(pixel[:2], [32.0 + 10.0 - 0.5, 24.0 - 3.5 - 0.5], atol=1e-9)
    np.testing.assert_allclose(pixel[:2], uv[0] - 0.5, atol=1e-9)
    # The image's own optical frame, so a TF-aware consumer never reads the pixels as being in "map".
    assert (info.width, info.height, info.header.frame_id) == (64, 48, "find3d_frame_0_optical")


def test_point_cloud_round_trip() -> None:
    rng = np.random.default_rng(2)
    points = rng.normal(size=(50, 3)).astype(np.float32)
    colors = rng.uniform(size=(50, 3)).astype(np.float32)
    relevancy = rng.uniform(size=50).astype(np.float32)
    message = fill_cloud(PointCloud2(), PointField, points, colors, relevancy)
    assert [f.name for f in message.fields] == ["x", "y", "z", "rgb", "relevancy"]
    assert (message.point_step, message.row_step, message.width) == (20, 1000, 50)
    cloud = read_cloud(message)
    np.testing.assert_array_equal(np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=1), points)
    np.testing.assert_array_equal(cloud["relevancy"], relevancy)
    np.testing.assert_array_equal(cloud["rgb"], np.round(colors * 255).astype(np.uint8))
    plain = read_cloud(fill_cloud(PointCloud2(), PointField, points, colors))
    assert "relevancy" not in plain and len(plain["x"]) == 50


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_images_decode_in_every_encoding_with_padded_rows(encoding: str) -> None:
    rgb = np.random.default_rng(3).integers(0, 256, size=(9, 11, 3), dtype=np.uint8)
    if encoding == "mono8":
        rgb = np.repeat(rgb[..., :1], 3, axis=2)
    channels = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "rgba8": np.dstack([rgb, np.full((9, 11), 7, np.uint8)]),
                "bgra8": np.dstack([rgb[..., ::-1], np.full((9, 11), 7, np.uint8)]), "mono8": rgb[..., :1]}[encoding]
    padded = np.zeros((9, 11 * channels.shape[2] + 5), np.uint8)  # rows padded to a larger step
    padded[:, :11 * channels.shape[2]] = channels.reshape(9, -1)
    message = Image(height=9, width=11, encoding=encoding, step=padded.shape[1], data=padded.tobytes())
    np.testing.assert_array_equal(image_to_rgb(message), rgb)
    np.testing.assert_array_equal(image_to_rgb(rgb_to_image(rgb, Image())), rgb)


def test_bad_images_and_masks_are_input_errors() -> None:
    good = rgb_to_image(np.zeros((10, 12, 3), np.uint8), Image())
    with pytest.raises(InputError, match="'yuv422' is not supported"):
        image_to_rgb(Image(height=10, width=12, encoding="yuv422", step=24, data=bytes(240)))
    with pytest.raises(InputError, match="no pixels"):
        image_to_rgb(Image(height=0, width=0, encoding="rgb8"))
    with pytest.raises(InputError, match="truncated"):
        image_to_rgb(Image(height=10, width=12, encoding="rgb8", step=36, data=bytes(good.data)[:100]))
    with pytest.raises(InputError, match="step"):
        image_to_rgb(Image(height=10, width=12, encoding="rgb8", step=12, data=bytes(120)))
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True
    np.testing.assert_array_equal(mask_to_array(mask_to_image(mask, Image())), mask)
    assert mask_to_array(Image()) is None  # an empty mask selects the whole image
    with pytest.raises(InputError, match="mono8"):
        mask_to_array(good)
    with pytest.raises(InputError, match="one per image"):
        request_images([good, good], [Image()])


def test_request_overrides() -> None:
    assert check_overrides(0.0, 0, (0.5, 3)) == (0.5, 3)  # 0: the node's parameters
    assert check_overrides(0.7, 5, (0.5, 3)) == (0.7, 5)
    for threshold, top_k in ((float("nan"), 0), (1.5, 0), (-0.1, 0), (0.5, -2), (float("inf"), 0)):
        with pytest.raises(InputError):
            check_overrides(threshold, top_k, (0.5, 3))


def test_objects_are_connected_groups_in_3d() -> None:
    rng = np.random.default_rng(4)
    mug = rng.uniform(0.0, 0.08, size=(200, 3))  # an 8 cm object ...
    duck = rng.uniform(0.0, 0.06, size=(120, 3)) + np.array([0.5, 0.0, 0.0])  # ... and another 42 cm away
    speck = np.array([[1.0, 1.0, 1.0]])
    points = np.vstack([mug, duck, speck]).astype(np.float32)
    relevancy = np.concatenate([np.full(200, 0.9), np.full(120, 0.7), [0.99]]).astype(np.float32)
    order = np.argsort(-relevancy, kind="stable")
    objects = group_objects(points, order, relevancy, voxel=0.03, min_points=5)
    assert [len(obj.indices) for obj in objects] == [200, 120]  # the speck is dropped; most relevancy first
    assert set(objects[0].indices) == set(range(200)) and objects[0].score == pytest.approx(0.9)
    np.testing.assert_allclose(objects[1].lower, duck.min(axis=0), atol=1e-6)
    np.testing.assert_allclose(objects[1].center, (duck.min(axis=0) + duck.max(axis=0)) / 2, atol=1e-6)
    assert list(objects[0].indices) == sorted(objects[0].indices, key=lambda i: -relevancy[i])
    assert group_objects(points, np.zeros(0, np.int64), relevancy) == []
    with pytest.raises(InputError, match="voxel"):
        group_objects(points, order, relevancy, voxel=0.0)


def test_image_references_name_in_memory_images() -> None:
    keys = np.random.default_rng(5).integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    region = np.zeros((20, 30), bool)
    region[5:10, 5:15] = True
    entry = parse_query("the mug next to <image:0> and <image:1#box=0,0,10,10>", images=[keys, keys],
                        masks=[region, None])
    refs = [e.ref for e in entry.entities]
    assert [r.source for r in refs] == ["<image:0>", "<image:1>"]
    np.testing.assert_array_equal(refs[0].mask, region)
    assert refs[1].mask.sum() == 100 and refs[1].mask[:10, :10].all()
    for text, images, masks, message in [
        ("<image:1>", [keys], None, "carries 1: use <image:0>"),
        ("<image:0>", [], None, "carries none"),
        ("<image:x>", [keys], None, "names no image"),
        ("<image:0>", [keys], [np.ones((5, 5), bool)], "mask 0 is 5x5 but image 0 is 30x20"),
        ("<image:0>", [keys], [np.zeros((20, 30), bool)], "empty"),
        ("<image:0#box=0,0,5,5>", [keys], [region], "both a mask and"),
        ("<image:0#keys.png>", [keys], None, "only #box="),
        ("<image:0>", [keys], [None, None], "2 given for 1 images"),
    ]:
        with pytest.raises(InputError, match=message):
            parse_query(text, images=images, masks=masks)
