"""Serving find3d answers over ROS 2: the ``~/query`` service, the ``~/text_query`` topic and the
latest-answer topics, shared by every node that answers queries (the query node on an exported
field, the mapping node on its live map), so all of them answer and publish alike.

QoS, on purpose:
- results and maps (``STATE``) are RELIABLE + TRANSIENT_LOCAL, depth 1: each is a state ("the
  latest answer", "the map"), not a stream; a subscriber that joins late (RViz opened afterwards, a
  planner restarted) gets the current one at once, and nothing older is worth keeping.
- ``~/text_query`` (``COMMAND``) is RELIABLE + VOLATILE, depth 10: a query is a command that must not
  be dropped, but one sent before the node existed is stale and must not run on start-up.
- ``~/query`` (``REQUEST``) is RELIABLE + VOLATILE, depth 100 (the ROS default is 10): a burst of
  requests from several clients waits its turn instead of the oldest being dropped unanswered.

Concurrency: queries (service and topic) run in one mutually exclusive callback group, so with a
multi-threaded executor they are answered one at a time while the node's other callbacks
(parameter services, timers, sensor subscriptions) keep running.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from find3d.errors import Find3dError, InputError
from find3d.query.field import ACCEPTANCE
from find3d.query.objects import MIN_OBJECT_POINTS, OBJECT_VOXEL
from ros_nodes.conversions import check_overrides, fill_camera_info, fill_cloud, fill_pose, request_images
from ros_nodes.parameters import parameter

#: (query, images, masks, threshold, top_k) -> (find3d.query.answer.Answer, points (N, 3), colours (N, 3))
AnswerFn = Callable[[str, list, list, float, int], tuple[Any, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class AnswerParameters:
    """The parameters of every answering node that shape an answer (each node's own dataclass extends it)."""

    threshold: float = parameter("Least relevancy of a selected segment, or point with whole_objects off (a "
                                 "request's non-zero threshold wins).", 0.5, low=0.0, high=1.0)
    top_k: int = parameter("Best frames per answer (a request's non-zero top_k wins).", 3, low=1, high=1000)
    negatives: list | None = parameter("Negative phrases relevancy is measured against; unset: find3d's default "
                                       "(as Field.query's negatives=None).", None, kind=list)
    whole_objects: bool = parameter("Answer with whole 3D instances (lifted from FIND's 2D masks, scored by their "
                                    "mean embedding; the best one when none reaches the threshold but it reaches "
                                    "acceptance, else 'not found') instead of single points.", True)
    acceptance: float = parameter("Least relevancy of the best instance for a whole-object query to count as found; "
                                  "below it the answer is 'not found' (calibrated for find3d's packaged interface: "
                                  "bench/results/absent.md).", ACCEPTANCE, low=0.0, high=1.0)
    object_voxel: float = parameter("Voxel edge (m) within which selected points join one object.", OBJECT_VOXEL,
                                    low=1e-4, high=10.0)
    min_object_points: int = parameter("Least points an object keeps; smaller groups are dropped as speckle.",
                                       MIN_OBJECT_POINTS, low=1, high=1_000_000)

    def options(self) -> dict[str, Any]:
        """``find3d.query.answer.answer``'s keyword arguments from these parameters (threshold and top_k
        come per request, see ``QueryServer``)."""
        return {"negatives": self.negatives, "object_voxel": self.object_voxel,
                "min_object_points": self.min_object_points, "objects": self.whole_objects,
                "acceptance": self.acceptance}


def state_qos() -> Any:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def request_qos() -> Any:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


def command_qos() -> Any:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


class QueryServer:
    """``~/query`` + ``~/text_query`` answered by ``answer_fn``, with ``~/mask``, ``~/frames``,
    ``~/best_frame`` and ``~/markers`` carrying the latest answer.

    ``defaults()`` gives the node's current ``(threshold, top_k)`` and ``frame_id()`` its world frame,
    read at each query so live parameter changes apply to the next one.
    """

    def __init__(self, node: Any, answer_fn: AnswerFn, defaults: Callable[[], tuple[float, int]],
                 frame_id: Callable[[], str]) -> None:
        from find3d_interfaces.srv import Query
        from geometry_msgs.msg import PoseArray, PoseStamped
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
        from sensor_msgs.msg import PointCloud2
        from std_msgs.msg import String
        from visualization_msgs.msg import MarkerArray

        self.node, self.answer_fn, self.defaults, self.frame_id = node, answer_fn, defaults, frame_id
        self.publishers = {name: node.create_publisher(kind, f"~/{name}", state_qos()) for name, kind in
                           (("mask", PointCloud2), ("frames", PoseArray), ("best_frame", PoseStamped),
                            ("markers", MarkerArray))}
        self.group = MutuallyExclusiveCallbackGroup()
        node.create_service(Query, "~/query", self.on_query, qos_profile=request_qos(), callback_group=self.group)
        node.create_subscription(String, "~/text_query", self._on_text, command_qos(), callback_group=self.group)

    def header(self) -> Any:
        from std_msgs.msg import Header

        return Header(frame_id=self.frame_id(), stamp=self.node.get_clock().now().to_msg())

    def on_query(self, request: Any, response: Any, by_topic: bool = False) -> Any:
        """Answer one request; every failure becomes ``success: false`` with the reason, never an exception.

        The answer goes out on the latest-answer topics when it was asked by topic (whose only reply
        they are) or when someone listens; a service caller has its reply, and at a hundred calls a
        second serialising unwatched clouds is a tenth of the node's time.
        """
        started = time.perf_counter()
        try:
            if not request.query.strip():
                raise InputError("query: empty text; send words, <image:N> naming one of `images`, or both.")
            threshold, top_k = check_overrides(float(request.threshold), int(request.top_k), self.defaults())
            images, masks = request_images(request.images, request.masks)
            result, points, colors = self.answer_fn(request.query, images, masks, threshold, top_k)
        except Find3dError as err:
            return self._refuse(response, request.query, str(err))
        except Exception as err:  # a bug must not take the node (and every other client) down
            self.node.get_logger().error(f"query {request.query!r} failed: {err!r}")
            return self._refuse(response, request.query, f"internal error: {err!r}")
        header = self.header()
        fill_response(response, result, points, colors, header, request.query)
        if by_topic or any(publisher.get_subscription_count() for publisher in self.publishers.values()):
            self.publish(response, header)
        log = self.node.get_logger().info if by_topic else self.node.get_logger().debug
        log(f"query {request.query!r}: {response.message} ({1e3 * (time.perf_counter() - started):.0f} ms)")
        return response

    def _on_text(self, message: Any) -> None:
        from find3d_interfaces.srv import Query

        self.on_query(Query.Request(query=message.data), Query.Response(), by_topic=True)

    def _refuse(self, response: Any, query: str, reason: str) -> Any:
        self.node.get_logger().warning(f"query {query!r} refused: {reason}")
        response.success, response.message = False, reason
        return response

    def publish(self, response: Any, header: Any) -> None:
        from geometry_msgs.msg import PoseArray

        self.publishers["mask"].publish(response.mask)
        self.publishers["frames"].publish(PoseArray(header=header, poses=[f.pose.pose for f in response.frames]))
        if response.frames:
            self.publishers["best_frame"].publish(response.frames[0].pose)
        self.publishers["markers"].publish(markers(response.objects, header))


# ------------------------------------------------------------------------------------ messages


def cloud_message(points: np.ndarray, colors: np.ndarray, relevancy: np.ndarray | None, header: Any) -> Any:
    """A PointCloud2 (x, y, z, rgb [, relevancy]) in ``header``'s frame."""
    from sensor_msgs.msg import PointCloud2, PointField

    return fill_cloud(PointCloud2(header=header), PointField, points, colors, relevancy)


def object_message(obj: Any) -> Any:
    from find3d_interfaces.msg import Object

    message = Object(score=float(obj.score), points=len(obj.indices))
    message.center.x, message.center.y, message.center.z = (float(v) for v in obj.center)
    message.size.x, message.size.y, message.size.z = (float(v) for v in obj.size)
    return message


def fill_response(response: Any, result: Any, points: np.ndarray, colors: np.ndarray, header: Any,
                  query: str = "") -> Any:
    """A Query response from a ``find3d.query.answer.Answer`` over ``points`` / ``colors``; an answer that
    found nothing keeps ``success`` (the request was fine) with no points and a message saying so."""
    from find3d_interfaces.msg import EntityMask, Frame

    whole = result.result
    response.success = True
    response.mask = cloud_message(points[whole.indices], colors[whole.indices], whole.scores, header)
    response.objects = [object_message(obj) for obj in result.objects]
    response.entities = [
        EntityMask(entity=entity.entity, selected=len(entity.indices),
                   mask=cloud_message(points[entity.indices], colors[entity.indices], entity.scores, header),
                   objects=[object_message(obj) for obj in entity.objects])
        for entity in result.entities]
    frames = []
    for hit in whole.frames:
        frame = Frame(index=hit.index, file_path=hit.file_path, score=float(hit.score))
        frame.pose.header = header
        fill_pose(frame.pose.pose, hit.c2w)
        fill_camera_info(frame.camera_info, hit, header)
        frames.append(frame)
    response.frames = frames
    response.selected, response.total, response.threshold = len(whole.indices), len(points), whole.threshold
    if not whole.found:  # the request was fine; the scene has no such thing, and the robot must hear it
        response.message = whole.describe(query)
        return response
    best = f"; best frame {frames[0].file_path} ({frames[0].score:.2f})" if frames else ""
    response.message = (f"{response.selected} of {response.total} points selected (threshold {whole.threshold:g}), "
                        f"{len(result.objects)} object(s){best}")
    return response


def markers(objects: list[Any], header: Any) -> Any:
    """A translucent box and a text label per object, after a DELETEALL that clears the last answer's."""
    from visualization_msgs.msg import Marker, MarkerArray

    out = [Marker(header=header, ns="find3d", action=Marker.DELETEALL)]
    for index, obj in enumerate(objects):
        box = Marker(header=header, ns="find3d/objects", id=index, type=Marker.CUBE, action=Marker.ADD)
        box.pose.position, box.pose.orientation.w = obj.center, 1.0
        box.scale.x, box.scale.y, box.scale.z = (max(v, 0.01) for v in (obj.size.x, obj.size.y, obj.size.z))
        box.color.r, box.color.g, box.color.b, box.color.a = 1.0, 0.3, 0.1, 0.4
        label = Marker(header=header, ns="find3d/labels", id=index, type=Marker.TEXT_VIEW_FACING,
                       action=Marker.ADD, text=f"#{index} {obj.score:.2f} ({obj.points} pts)")
        label.pose.position.x, label.pose.position.y = obj.center.x, obj.center.y
        label.pose.position.z = obj.center.z + obj.size.z / 2 + 0.05
        label.pose.orientation.w, label.scale.z = 1.0, 0.05
        label.color.r = label.color.g = label.color.b = label.color.a = 1.0
        out += [box, label]
    return MarkerArray(markers=out)


# ------------------------------------------------------------------------------------ process


def run_node(name: str, build: Callable[[Any], Any], argv: list[str] | None = None, threads: int = 2) -> int:
    """Create node ``name``, let ``build(node)`` set it up, spin it on a multi-threaded executor until
    SIGINT / SIGTERM / shutdown (exit 0), then call the built object's ``close()`` if it has one (a mapping
    node saves its map; further signals are ignored meanwhile); a user error while starting (bad path,
    checkpoint or parameters file) is one fatal log line and exit 1, never a traceback."""
    import signal
    import sys

    import rclpy
    from rclpy._rclpy_pybind11 import RCLError  # what rclpy.init raises for a bad --ros-args / --params-file
    from rclpy.exceptions import ParameterException
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
    from rclpy.signals import SignalHandlerOptions, install_signal_handlers

    # Python's own SIGINT handling while loading: Ctrl-C interrupts a slow model load at once (rclpy's
    # handler would only mark the context shut down and let the load run on); rclpy's from spin on.
    # Set explicitly: a process started in the background of a shell inherits SIGINT as ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        rclpy.init(args=sys.argv if argv is None else argv, signal_handler_options=SignalHandlerOptions.NO)
    except RCLError as err:
        print(f"{name}: cannot start: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    node = rclpy.create_node(name)
    code, built = 0, None
    try:
        built = build(node)
        install_signal_handlers(SignalHandlerOptions.ALL)
        executor = MultiThreadedExecutor(num_threads=threads)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (Find3dError, ParameterException) as err:
        node.get_logger().fatal(f"cannot start: {err}")
        code = 1
    finally:
        # The node is ending: a second SIGINT / SIGTERM (Ctrl-C twice, a supervisor's SIGINT after its SIGTERM)
        # must not cut the last save of the map short; SIGKILL still ends the process at once.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if hasattr(built, "close"):
            built.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return code
