"""``query_node``: answers 3D queries on an exported find3d field over ROS 2.

    ros2 launch find3d query.launch.py field:=DIR checkpoint:=CKPT            # full ROS 2 install
    .venv/lib/find3d/query_node --ros-args --params-file configs/ros/query_node.yaml \\
        -p field:=DIR -p checkpoint:=CKPT                                      # pip-only install

Loads the field and the FIND interface once; every answer is ``find3d.query.answer.answer`` (which
is ``find3d.Field.query`` plus objects and per-entity masks), so it equals the Python API's.

Interfaces (names relative to the node, ``~/``):
- service ``~/query`` (``find3d_interfaces/srv/Query``): text, image-crop and interleaved queries.
- subscription ``~/text_query`` (``std_msgs/String``): the same query by topic, for ``ros2 topic pub``.
- ``~/mask`` (PointCloud2), ``~/frames`` (PoseArray), ``~/best_frame`` (PoseStamped), ``~/markers``
  (MarkerArray: a box and a label per object): the latest answer, to a service call or a topic query.
- ``~/cloud`` (PointCloud2): the whole field, coloured, published once at start.

QoS, on purpose:
- results and the map are RELIABLE + TRANSIENT_LOCAL, depth 1: each is a state ("the latest answer",
  "the map"), not a stream; a subscriber that joins late (RViz opened afterwards, a planner restarted)
  gets the current one at once, and nothing older is worth keeping.
- ``~/text_query`` is RELIABLE + VOLATILE, depth 10: a query is a command that must not be dropped,
  but one sent before the node existed is stale and must not run on start-up.

Concurrency: queries (service and topic) run in one mutually exclusive callback group on a
multi-threaded executor, so they are answered one at a time while parameter services and
publication keep running in the default group.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from find3d.errors import Find3dError, InputError
from find3d.query.field import CANONICAL_NEGATIVES
from find3d.query.objects import MIN_OBJECT_POINTS, OBJECT_VOXEL
from ros_nodes.parameters import declare, parameter, update

NODE_NAME = "find3d_query"


@dataclass(frozen=True)
class QueryNodeParameters:
    """Parameters of ``query_node`` (defaults in ``configs/ros/query_node.yaml``)."""

    field: str = parameter("Folder written by `find3d export-field` (required).", "", read_only=True)
    checkpoint: str = parameter("FIND interface checkpoint; empty: the one recorded in the field's meta.json.", "",
                                read_only=True)
    frame_id: str = parameter("TF frame of the field's world coordinates (masks, poses, markers).", "map",
                              read_only=True)
    device: str = parameter("Torch device for the interface: auto, cpu or cuda[:i].", "auto", read_only=True)
    threshold: float = parameter("Least relevancy of a selected point (a request's non-zero threshold wins).", 0.5,
                                 low=0.0, high=1.0)
    top_k: int = parameter("Best frames per answer (a request's non-zero top_k wins).", 3, low=1, high=1000)
    negatives: list = parameter("Negative phrases relevancy is measured against (LERF's by default).",
                                list(CANONICAL_NEGATIVES))
    object_voxel: float = parameter("Voxel edge (m) within which selected points join one object.", OBJECT_VOXEL,
                                    low=1e-4, high=10.0)
    min_object_points: int = parameter("Least points an object keeps; smaller groups are dropped as speckle.",
                                       MIN_OBJECT_POINTS, low=1, high=1_000_000)


class QueryNode:
    """The ROS side of a query: parameters, QoS and message conversion around ``answer``."""

    def __init__(self, node: Any) -> None:
        from find3d_interfaces.srv import Query
        from geometry_msgs.msg import PoseArray, PoseStamped
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import PointCloud2
        from std_msgs.msg import String
        from visualization_msgs.msg import MarkerArray

        self.node = node
        self.params = declare(node, QueryNodeParameters)
        node.add_post_set_parameters_callback(self._on_parameters)
        self.field, self.interface = load(self.params)
        self.lock = threading.Lock()  # one query at a time shares the field's scratch state
        state = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        commands = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
        self.publishers = {
            "mask": node.create_publisher(PointCloud2, "~/mask", state),
            "frames": node.create_publisher(PoseArray, "~/frames", state),
            "best_frame": node.create_publisher(PoseStamped, "~/best_frame", state),
            "markers": node.create_publisher(MarkerArray, "~/markers", state),
            "cloud": node.create_publisher(PointCloud2, "~/cloud", state),
        }
        queries = MutuallyExclusiveCallbackGroup()
        node.create_service(Query, "~/query", self._on_query, callback_group=queries)
        node.create_subscription(String, "~/text_query", self._on_text, commands, callback_group=queries)
        self.publishers["cloud"].publish(self._cloud(self.field.points, self.field.colors, None))
        node.get_logger().info(f"serving {len(self.field)} points of {self.field.root} in frame "
                               f"'{self.params.frame_id}': service {node.get_fully_qualified_name()}/query")

    # ---------------------------------------------------------------------------------- callbacks
    def _on_parameters(self, parameters: list[Any]) -> None:
        self.params = update(self.params, parameters)

    def _on_query(self, request: Any, response: Any) -> Any:
        from ros_nodes.conversions import check_overrides, request_images

        started = time.perf_counter()
        try:
            threshold, top_k = check_overrides(float(request.threshold), int(request.top_k),
                                               (self.params.threshold, self.params.top_k))
            images, masks = request_images(request.images, request.masks)
            result = self.answer(request.query, images, masks, threshold, top_k)
        except Find3dError as err:
            return self._refuse(response, request.query, str(err))
        except Exception as err:  # a bug must not take the node (and every other client) down
            self.node.get_logger().error(f"query {request.query!r} failed: {err!r}")
            return self._refuse(response, request.query, f"internal error: {err!r}")
        self._fill(response, result)
        self.node.get_logger().info(f"query {request.query!r}: {response.message} "
                                    f"({1e3 * (time.perf_counter() - started):.0f} ms)")
        return response

    def _on_text(self, message: Any) -> None:
        from find3d_interfaces.srv import Query

        self._on_query(Query.Request(query=message.data), Query.Response())

    def _refuse(self, response: Any, query: str, reason: str) -> Any:
        self.node.get_logger().warning(f"query {query!r} refused: {reason}")
        response.success, response.message = False, reason
        return response

    # --------------------------------------------------------------------------------------- work
    def answer(self, query: str, images: list[np.ndarray], masks: list[np.ndarray | None], threshold: float,
               top_k: int) -> Any:
        """``find3d.query.answer.answer`` with this node's field, interface and parameters."""
        from find3d.query.answer import answer

        if not isinstance(query, str) or not query.strip():
            raise InputError("query: empty text; send words, <image:N> naming one of `images`, or both.")
        params = self.params
        with self.lock:
            return answer(self.field, self.interface, query, images=images, masks=masks or None,
                          negatives=list(params.negatives), threshold=threshold, top_k=top_k,
                          object_voxel=params.object_voxel, min_object_points=params.min_object_points)

    def _fill(self, response: Any, result: Any) -> None:
        """Response and the latest-answer topics from an ``Answer``."""
        from find3d_interfaces.msg import EntityMask, Frame

        from ros_nodes.conversions import fill_camera_info, fill_pose

        header = self._header()
        whole = result.result
        response.success = True
        response.mask = self._cloud(self.field.points[whole.indices], self.field.colors[whole.indices], whole.scores)
        response.objects = [self._object(obj) for obj in result.objects]
        response.entities = [
            EntityMask(entity=entity.entity, selected=len(entity.indices),
                       mask=self._cloud(self.field.points[entity.indices], self.field.colors[entity.indices],
                                        entity.scores),
                       objects=[self._object(obj) for obj in entity.objects])
            for entity in result.entities]
        frames = []
        for hit in whole.frames:
            frame = Frame(index=hit.index, file_path=hit.file_path, score=float(hit.score))
            frame.pose.header = header
            fill_pose(frame.pose.pose, hit.c2w)
            fill_camera_info(frame.camera_info, hit, header)
            frames.append(frame)
        response.frames = frames
        response.selected, response.total, response.threshold = len(whole.indices), len(self.field), whole.threshold
        best = f"; best frame {frames[0].file_path} ({frames[0].score:.2f})" if frames else ""
        response.message = (f"{response.selected} of {response.total} points at relevancy >= {whole.threshold:g}, "
                            f"{len(result.objects)} object(s){best}")
        self._publish(response, header)

    def _publish(self, response: Any, header: Any) -> None:
        from geometry_msgs.msg import PoseArray

        self.publishers["mask"].publish(response.mask)
        self.publishers["frames"].publish(PoseArray(header=header, poses=[f.pose.pose for f in response.frames]))
        if response.frames:
            self.publishers["best_frame"].publish(response.frames[0].pose)
        self.publishers["markers"].publish(self._markers(response.objects, header))

    # -------------------------------------------------------------------------------- conversions
    def _header(self) -> Any:
        from std_msgs.msg import Header

        return Header(frame_id=self.params.frame_id, stamp=self.node.get_clock().now().to_msg())

    def _cloud(self, points: np.ndarray, colors: np.ndarray, relevancy: np.ndarray | None) -> Any:
        from sensor_msgs.msg import PointCloud2, PointField

        from ros_nodes.conversions import fill_cloud

        return fill_cloud(PointCloud2(header=self._header()), PointField, points, colors, relevancy)

    @staticmethod
    def _object(obj: Any) -> Any:
        from find3d_interfaces.msg import Object

        message = Object(score=float(obj.score), points=len(obj.indices))
        message.center.x, message.center.y, message.center.z = (float(v) for v in obj.center)
        message.size.x, message.size.y, message.size.z = (float(v) for v in obj.size)
        return message

    def _markers(self, objects: list[Any], header: Any) -> Any:
        """A translucent box and a text label per object, after a DELETEALL that clears the last answer's."""
        from visualization_msgs.msg import Marker, MarkerArray

        markers = [Marker(header=header, ns="find3d", action=Marker.DELETEALL)]
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
            markers += [box, label]
        return MarkerArray(markers=markers)


def load(params: QueryNodeParameters) -> tuple[Any, Any]:
    """The field and the interface that embedded it; Find3dError with the fix when either is unusable."""
    from find3d.query.field import Field
    from find3d.query.run_query import load_interface

    if not params.field:
        raise InputError("parameter `field` is not set: pass -p field:=DIR (a `find3d export-field` folder), "
                         "or field:=DIR to the launch file.")
    field = Field.load(Path(params.field))
    interface = load_interface(field, Path(params.checkpoint) if params.checkpoint else None, params.device)
    return field, interface


def main(argv: list[str] | None = None) -> int:
    """Run the node until SIGINT / shutdown; exit 0 then, 1 when it cannot start."""
    import rclpy
    from rclpy._rclpy_pybind11 import RCLError
    from rclpy.exceptions import ParameterException
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    try:
        rclpy.init(args=sys.argv if argv is None else argv)
    except RCLError as err:  # e.g. --params-file names a missing or malformed YAML file
        print(f"query_node: cannot start: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    node = rclpy.create_node(NODE_NAME)
    code = 0
    try:
        QueryNode(node)
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (Find3dError, ParameterException) as err:  # bad path, checkpoint or parameters file: say it, exit 1
        node.get_logger().fatal(f"cannot start: {err}")
        code = 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
