"""The ROS 2 query node as its own process over real DDS (localhost, this run's domain), on a field
exported by the real pipeline: service answers equal ``find3d.Field.query``, the topic path with a
late subscriber, bad requests, start-up failures and a clean SIGINT."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from fixtures.ros import REPO, call, exited, ros_client, start_node, stop, wait_for

from find3d.poses import optical_to_opengl, pose_to_matrix

PARAMS_FILE = REPO / "configs" / "ros" / "query_node.yaml"
pytestmark = pytest.mark.slow


#: the tiny test interface is not the calibrated packaged one: every best instance counts as found
ACCEPTANCE = 0.0


@pytest.fixture(scope="module")
def node(pipeline: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """The query node on the pipeline's field, started as a launch file would (same parameters file)."""
    process = start_node("query_node", {"field": pipeline["field"], "checkpoint": pipeline["checkpoint"],
                                        "acceptance": ACCEPTANCE}, tmp_path_factory.mktemp("ros_logs"), PARAMS_FILE)
    yield process
    code, output = stop(process)
    assert code == 0 and "Traceback" not in output, output[-3000:]


@pytest.fixture(scope="module")
def client(node):  # noqa: ARG001 - the node must be running
    from find3d_interfaces.srv import Query

    with ros_client("test_query_client") as ros:
        service = ros.create_client(Query, "/find3d_query/query")
        assert service.wait_for_service(timeout_sec=90), "query node did not come up"
        yield ros, service


@pytest.fixture(scope="module")
def crop(pipeline: dict[str, Path]) -> np.ndarray:
    from find3d.fileio import load_image

    return load_image(pipeline["scene"] / "images" / "frame_00001.png")[12:52, 12:52]


def request(query: str, images=(), masks=(), threshold: float = 0.0, top_k: int = 0):
    from find3d_interfaces.srv import Query
    from sensor_msgs.msg import Image

    from ros_nodes.conversions import mask_to_image, rgb_to_image

    return Query.Request(query=query, images=[rgb_to_image(i, Image()) for i in images],
                         masks=[mask_to_image(m, Image()) for m in masks], threshold=threshold, top_k=top_k)


def test_service_answers_equal_the_python_api(client, pipeline, crop) -> None:
    import find3d
    from find3d.query.answer import answer as answer_query
    from ros_nodes.conversions import read_cloud

    ros, service = client
    field = find3d.Field.load(pipeline["field"])
    interface = find3d.Interface.from_checkpoint(pipeline["checkpoint"], device="cpu")
    poses = {f["file_path"]: np.asarray(f["transform_matrix"])
             for f in json.loads((pipeline["scene"] / "transforms.json").read_text())["frames"]}
    box = np.zeros(crop.shape[:2], bool)
    box[5:30, 8:35] = True
    cases = [("mug", [], []), ("<image:0>", [crop], []), ("the mug next to <image:0>", [crop], [box])]
    for text, images, masks in cases:
        answer = call(ros, service, request(text, images, masks, threshold=0.5, top_k=2))
        assert answer.success, answer.message
        expected = answer_query(field, interface, text, images=images, masks=masks or None, threshold=0.5,
                                top_k=2, acceptance=ACCEPTANCE).result
        if text == "<image:0>" or "<" not in text:  # text and crop answers are Field.query's, point for point
            direct = field.query(text, threshold=0.5, top_k_frames=2, interface=interface, images=images,
                                 acceptance=ACCEPTANCE)
            np.testing.assert_array_equal(direct.indices, expected.indices)
        cloud = read_cloud(answer.mask)
        assert answer.selected == len(expected.indices) == len(cloud["x"]) and answer.total == len(field)
        positions = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=1)
        np.testing.assert_array_equal(positions, field.points[expected.indices])  # same points, same order
        np.testing.assert_allclose(cloud["relevancy"], expected.scores, atol=1e-6)
        np.testing.assert_array_equal(cloud["rgb"], np.round(field.colors[expected.indices] * 255))
        assert [f.index for f in answer.frames] == [hit.index for hit in expected.frames]
        for frame in answer.frames:
            assert frame.pose.header.frame_id == "map"
            position, orientation = frame.pose.pose.position, frame.pose.pose.orientation
            optical = pose_to_matrix([position.x, position.y, position.z],
                                     [orientation.x, orientation.y, orientation.z, orientation.w])
            np.testing.assert_allclose(optical_to_opengl(optical), poses[frame.file_path], atol=1e-6)
            assert frame.camera_info.width == 64 and frame.camera_info.k[2] == pytest.approx(31.5)
            # the intrinsics are the camera's own optical frame's, as ROS's camera_info has them
            assert frame.camera_info.header.frame_id == f"find3d_frame_{frame.index}_optical"
        # An interleaved query answers each entity too: the head's words, then the reference.
        assert [e.entity for e in answer.entities] == (["the mug", "<image:0>"] if "next" in text else [])


def test_objects_equal_the_python_api_and_bound_their_points(client, pipeline) -> None:
    import find3d
    from find3d.query.answer import answer as answer_query
    from ros_nodes.conversions import read_cloud

    ros, service = client
    field = find3d.Field.load(pipeline["field"])
    interface = find3d.Interface.from_checkpoint(pipeline["checkpoint"], device="cpu")
    # The tiny interface's relevancy is not meaningful; a threshold at its 80th percentile selects a fifth.
    threshold = float(np.quantile(field.query("mug", interface=interface).relevancy, 0.8))
    expected = answer_query(field, interface, "mug", threshold=threshold, acceptance=ACCEPTANCE)
    answer = call(ros, service, request("mug", threshold=threshold))
    assert answer.success and answer.selected > 0, answer.message
    assert [obj.points for obj in answer.objects] == [len(obj.indices) for obj in expected.objects] != []
    for message, obj in zip(answer.objects, expected.objects):
        np.testing.assert_allclose([message.center.x, message.center.y, message.center.z], obj.center, atol=1e-6)
        assert message.score == pytest.approx(obj.score, abs=1e-6)
    cloud = read_cloud(answer.mask)
    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=1)
    best = answer.objects[0]
    center = np.array([best.center.x, best.center.y, best.center.z])
    half = np.array([best.size.x, best.size.y, best.size.z]) / 2
    assert np.all(np.abs(xyz - center) <= half + 1e-5, axis=1).sum() >= best.points  # the box bounds its points


def test_topic_query_and_a_late_subscriber(client) -> None:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.time import Time
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import String
    from visualization_msgs.msg import MarkerArray

    ros, _ = client
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    got: dict[str, list] = {"mask": [], "markers": [], "late": []}
    subs = [ros.create_subscription(PointCloud2, "/find3d_query/mask", got["mask"].append, latched),
            ros.create_subscription(MarkerArray, "/find3d_query/markers", got["markers"].append, latched)]
    publisher = ros.create_publisher(String, "/find3d_query/text_query", 10)
    assert wait_for(ros, lambda: publisher.get_subscription_count() > 0)
    sent = time.time_ns()
    publisher.publish(String(data="the duck"))

    def answered(topic: str) -> bool:  # the latest answer is newer than the query (one clock: this machine's)
        return bool(got[topic]) and Time.from_msg(_stamp(got[topic][-1])).nanoseconds >= sent

    assert wait_for(ros, lambda: answered("mask") and answered("markers"), timeout=60)
    expected = call(ros, client[1], request("the duck"))
    assert got["mask"][-1].width == expected.selected
    assert got["markers"][-1].markers[0].action == 3  # DELETEALL first, then a box and label per object
    # A subscriber that joins afterwards still gets the last answer (transient local).
    late = ros.create_subscription(PointCloud2, "/find3d_query/mask", got["late"].append, latched)
    assert wait_for(ros, lambda: bool(got["late"]), timeout=30)
    assert got["late"][-1].width == expected.selected
    for sub in [*subs, late]:
        ros.destroy_subscription(sub)


def _stamp(message):
    return message.markers[0].header.stamp if hasattr(message, "markers") else message.header.stamp


def test_the_whole_field_is_published_once(client, pipeline) -> None:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2

    import find3d

    ros, _ = client
    got: list = []
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    sub = ros.create_subscription(PointCloud2, "/find3d_query/cloud", got.append, latched)
    assert wait_for(ros, lambda: bool(got), timeout=30)
    assert got[0].width == len(find3d.Field.load(pipeline["field"])) and got[0].header.frame_id == "map"
    ros.destroy_subscription(sub)


def test_bad_requests_are_refused_and_the_node_lives_on(client, node, crop) -> None:
    from find3d_interfaces.srv import Query
    from sensor_msgs.msg import Image

    from ros_nodes.conversions import rgb_to_image

    ros, service = client
    unknown = rgb_to_image(crop, Image())
    unknown.encoding = "yuv422"
    empty = Image(height=0, width=0, encoding="rgb8")
    short = rgb_to_image(crop, Image())
    short.data = bytes(short.data)[:100]
    bad = {
        "empty text": request("   "),
        "no such image": request("the mug next to <image:2>", [crop]),
        "unknown encoding": Query.Request(query="<image:0>", images=[unknown]),
        "zero size": Query.Request(query="<image:0>", images=[empty]),
        "truncated data": Query.Request(query="<image:0>", images=[short]),
        "mask of the wrong size": request("<image:0>", [crop], [np.ones((10, 10), bool)]),
        "NaN threshold": request("mug", threshold=float("nan")),
        "threshold above 1": request("mug", threshold=1.5),
        "negative top_k": request("mug", top_k=-1),
        "unbalanced syntax": request("the mug <image:0", [crop]),
    }
    for what, bad_request in bad.items():
        answer = call(ros, service, bad_request)
        assert not answer.success and answer.message, what
        assert "internal error" not in answer.message, (what, answer.message)
    assert "yuv422" in call(ros, service, bad["unknown encoding"]).message
    syntax = call(ros, service, bad["unbalanced syntax"]).message  # in the service's own terms: images by position
    assert "<image:N" in syntax and "path" not in syntax, syntax
    good = call(ros, service, request("mug", top_k=1))
    assert good.success and len(good.frames) == 1 and good.threshold == pytest.approx(0.5)  # the node's default
    assert node.poll() is None


def test_not_found_is_an_answer_over_dds(pipeline, tmp_path: Path) -> None:
    """An object the scene does not hold: the request was fine (success), nothing is selected, the message
    says so and names the closest instance, and the latched mask topic empties. (A node whose negatives
    hold the query itself: no instance scores above 0.5, whatever the tiny test interface makes of it.)"""
    from find3d_interfaces.srv import Query
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2

    process = start_node("query_node", {"field": pipeline["field"], "checkpoint": pipeline["checkpoint"],
                                        "negatives": "['the duck']", "acceptance": 0.6}, tmp_path / "logs",
                         PARAMS_FILE, name="find3d_absent")
    try:
        with ros_client("test_absent_client") as ros:
            service = ros.create_client(Query, "/find3d_absent/query")
            assert service.wait_for_service(timeout_sec=90), "node did not come up"
            latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            masks: list = []
            ros.create_subscription(PointCloud2, "/find3d_absent/mask", masks.append, latched)
            absent = call(ros, service, request("the duck"))
            assert absent.success and absent.selected == 0 and absent.mask.width == 0
            assert absent.objects == [] and absent.frames == [] and absent.total > 0
            assert absent.message.startswith("no 'the duck' in this scene (closest: the "), absent.message
            assert wait_for(ros, lambda: bool(masks) and masks[-1].width == 0, timeout=30)  # the map shows none
            assert process.poll() is None
    finally:
        code, output = stop(process)
    assert code == 0 and "Traceback" not in output, output[-3000:]


def test_parameters_are_declared_with_descriptors(client) -> None:
    from rcl_interfaces.srv import DescribeParameters, SetParameters

    from ros_nodes.query_node import QueryNodeParameters

    ros, _ = client
    describe = ros.create_client(DescribeParameters, "/find3d_query/describe_parameters")
    assert describe.wait_for_service(timeout_sec=30)
    names = list(QueryNodeParameters.__dataclass_fields__)
    described = call(ros, describe, DescribeParameters.Request(names=names)).descriptors
    assert [d.name for d in described] == names and all(d.description for d in described)
    assert {d.name for d in described if d.read_only} == {"field", "checkpoint", "frame_id", "device"}
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue

    setter = ros.create_client(SetParameters, "/find3d_query/set_parameters")
    assert setter.wait_for_service(timeout_sec=30)

    def set_(name: str, value: ParameterValue) -> bool:
        answer = call(ros, setter, SetParameters.Request(parameters=[Parameter(name=name, value=value)]))
        return answer.results[0].successful

    assert not set_("field", ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="/elsewhere"))
    assert not set_("threshold", ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=2.0))  # range
    assert set_("top_k", ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=4))
    _, service = client
    assert len(call(ros, service, request("mug")).frames) == 4  # live change, used by the next query
    assert set_("top_k", ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=3))


def test_start_up_failures_exit_1_with_one_clear_line(pipeline, tmp_path: Path) -> None:
    from find3d.field.export import write_export

    other = tmp_path / "dim8"  # a field of 8-d embeddings: not made by the 64-d tiny interface
    frames = [{"file_path": "images/a.png", "c2w": np.eye(4).tolist(), "fl_x": 50.0, "fl_y": 50.0, "cx": 32.0,
               "cy": 24.0, "w": 64, "h": 48}]
    write_export(other, np.zeros((3, 3), np.float32), np.zeros((3, 3), np.float32), np.eye(3, 8, dtype=np.float32),
                 np.eye(1, 8, dtype=np.float32), frames)
    retrained = tmp_path / "retrained"  # same width, another model: what a moved-on last.pt looks like
    shutil.copytree(pipeline["field"], retrained)
    meta = json.loads((retrained / "meta.json").read_text())
    assert meta["model"], "export-field records the embedding model's content hash"
    (retrained / "meta.json").write_text(json.dumps({**meta, "model": "0" * 16}))
    cases = {"missing": {"field": tmp_path / "missing"},
             "not made with this interface": {"field": other, "checkpoint": pipeline["checkpoint"]},
             "is not the interface the field": {"field": retrained, "checkpoint": pipeline["checkpoint"]},
             "-p checkpoint:=": {"field": pipeline["field"], "checkpoint": tmp_path / "no_such.pt"},
             "parameter `field` is not set": {}}
    for expected, parameters in cases.items():
        process = start_node("query_node", parameters, tmp_path / "logs", PARAMS_FILE)
        code, output = exited(process)
        assert code == 1 and expected in output and "Traceback" not in output, output[-2000:]
        assert "--checkpoint" not in output, output[-2000:]  # a node's user sets parameters, not command flags


def test_sigint_stops_the_node_cleanly(pipeline, tmp_path: Path) -> None:
    from std_msgs.msg import String

    process = start_node("query_node", {"field": pipeline["field"]}, tmp_path / "logs", PARAMS_FILE,
                         name="find3d_sigint")
    with ros_client("test_sigint_client") as ros:
        publisher = ros.create_publisher(String, "/find3d_sigint/text_query", 10)
        assert wait_for(ros, lambda: publisher.get_subscription_count() > 0, timeout=90), "node did not come up"
    code, output = stop(process)
    assert code == 0 and "Traceback" not in output, output[-3000:]
