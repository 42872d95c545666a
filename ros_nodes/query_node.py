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

QoS (results and the map reliable + transient local, the command topic reliable + volatile) and
concurrency (queries in one mutually exclusive group on a two-thread executor) are
``ros_nodes.serving``'s, shared with the mapping node; the reasons are written there.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from find3d.errors import InputError
from ros_nodes.parameters import declare, parameter, update
from ros_nodes.serving import AnswerParameters

NODE_NAME = "find3d_query"


@dataclass(frozen=True)
class QueryNodeParameters(AnswerParameters):
    """Parameters of ``query_node`` (defaults in ``configs/ros/query_node.yaml``)."""

    field: str = parameter("Folder written by `find3d export-field` (required).", "", read_only=True)
    checkpoint: str = parameter("FIND interface checkpoint; empty: the one recorded in the field's meta.json.", "",
                                read_only=True)
    frame_id: str = parameter("TF frame of the field's world coordinates (masks, poses, markers).", "map",
                              read_only=True)
    device: str = parameter("Torch device for the interface: auto, cpu or cuda[:i].", "auto", read_only=True)


class QueryNode:
    """The ROS side of a query node: parameters, the field's cloud and a ``QueryServer`` around ``answer``."""

    def __init__(self, node: Any) -> None:
        from sensor_msgs.msg import PointCloud2

        from ros_nodes.serving import QueryServer, cloud_message, state_qos

        self.node = node
        self.params = declare(node, QueryNodeParameters)
        node.add_post_set_parameters_callback(self._on_parameters)
        self.field, self.interface = load(self.params)
        self.server = QueryServer(node, self.answer, lambda: (self.params.threshold, self.params.top_k),
                                  lambda: self.params.frame_id)
        self.cloud = node.create_publisher(PointCloud2, "~/cloud", state_qos())
        self.cloud.publish(cloud_message(self.field.points, self.field.colors, None, self.server.header()))
        node.get_logger().info(f"serving {len(self.field)} points of {self.field.root} in frame "
                               f"'{self.params.frame_id}': service {node.get_fully_qualified_name()}/query")

    def _on_parameters(self, parameters: list[Any]) -> None:
        self.params = update(self.params, parameters)

    def answer(self, query: str, images: list[np.ndarray], masks: list[np.ndarray | None], threshold: float,
               top_k: int) -> tuple[Any, np.ndarray, np.ndarray]:
        """``find3d.query.answer.answer`` with this node's field, interface and parameters."""
        from find3d.query.answer import answer

        result = answer(self.field, self.interface, query, images=images, masks=masks or None,
                        threshold=threshold, top_k=top_k, **self.params.options())
        return result, self.field.points, self.field.colors


def load(params: QueryNodeParameters) -> tuple[Any, Any]:
    """The field and the interface that embedded it; Find3dError with the fix when either is unusable."""
    from find3d.query.field import Field
    from find3d.query.run_query import load_interface

    if not params.field:
        raise InputError("parameter `field` is not set: pass -p field:=DIR (a `find3d export-field` folder), "
                         "or field:=DIR to the launch file.")
    field = Field.load(Path(params.field))
    interface = load_interface(field, Path(params.checkpoint) if params.checkpoint else None, params.device,
                               option="the parameter checkpoint (-p checkpoint:=CKPT, or checkpoint:=CKPT to the "
                                      "launch file)")
    return field, interface


def main(argv: list[str] | None = None) -> int:
    """Run the node until SIGINT / shutdown; exit 0 then, 1 when it cannot start."""
    from ros_nodes.serving import run_node

    return run_node(NODE_NAME, QueryNode, argv)


if __name__ == "__main__":
    sys.exit(main())
