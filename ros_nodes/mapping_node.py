"""``mapping_node``: fuses FIND embeddings of an RGB-D camera's keyframes into a live 3D map and answers
3D queries on it over ROS 2, while the robot drives.

    ros2 launch find3d mapping.launch.py checkpoint:=CKPT [record_dir:=DIR]       # full ROS 2 install
    .venv/lib/find3d/mapping_node --ros-args --params-file configs/ros/mapping_node.yaml \\
        -p checkpoint:=CKPT -p record_dir:=DIR                                     # pip-only install

The work is ``find3d.mapping.Mapper`` (keyframes by motion and sharpness, embedded on a worker that
keeps only the newest pending keyframe, fused into a voxel-hashed, bounded map: the same fusion as
``eval-3d``'s baseline); answers are ``find3d.query.answer.answer`` on the map's ``Field`` snapshot,
so they equal the Python API's on the same map.

Interfaces:
- subscriptions (topics are parameters): colour ``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8,
  mono8), depth ``sensor_msgs/Image`` aligned to the colour camera (16UC1 mm or 32FC1 m), the colour
  camera's ``sensor_msgs/CameraInfo``, and ``geometry_msgs/PoseStamped``: the colour camera's
  *optical* frame (REP-103: x right, y down, z forward) in ``frame_id``.
- service ``~/query`` and topic ``~/text_query`` with ``~/mask``, ``~/frames``, ``~/best_frame``,
  ``~/markers`` (``ros_nodes.serving``: the query node's, same types); frames are the keyframes fused
  so far, with their poses.
- ``~/map`` (PointCloud2: x, y, z, rgb of every voxel), at ``map_rate`` Hz while the map changes.
- ``/diagnostics`` (``diagnostic_msgs/DiagnosticArray``) and a log line, once a second: frames in,
  keyframes, embedded, dropped (the embedder was behind), skipped by reason, voxels (in memory, spilled
  to disk, evicted) and memory, latency image -> map update and the embedding's share.
- ``map_file``: the map is loaded from it at start, spills there when memory is full, and is saved there
  atomically every ``save_period`` seconds and at shutdown (``find3d.mapping.store``: a folder that is
  also a field export, so ``find3d query --field`` and the query node answer from it).

QoS: the sensor subscriptions are BEST_EFFORT + VOLATILE with a small depth (``sensor_queue``,
REP-2003's sensor-data profile): a camera streams faster than a keyframe is embedded, a frame that
was lost or superseded is worthless (the next one shows the same scene from a newer pose), and a
reliable subscription would make the camera driver buffer and resend frames for a slow subscriber.
Best effort also matches every driver (a reliable publisher serves a best-effort subscriber, not the
other way round). The map, answers and diagnostics follow ``ros_nodes.serving`` (map and answers
reliable + transient local).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from find3d.errors import Find3dError, InputError
from find3d.mapping.fusion import DEFAULT_MAX_VOXELS, DEFAULT_VOXEL
from ros_nodes.parameters import declare, parameter, update
from ros_nodes.serving import AnswerParameters

NODE_NAME = "find3d_mapping"
NO_CAMERA_INFO = "no camera info yet"
BAD_MESSAGE = "bad message"
WARN_EVERY = 5.0  # seconds between repeated warnings of one kind: a broken stream must not flood the log


@dataclass(frozen=True)
class MappingNodeParameters(AnswerParameters):
    """Parameters of ``mapping_node`` (defaults in ``configs/ros/mapping_node.yaml``)."""

    checkpoint: str = parameter("FIND interface checkpoint that embeds the keyframes (required).", "", read_only=True)
    device: str = parameter("Torch device for the interface: auto, cpu or cuda[:i].", "auto", read_only=True)
    frame_id: str = parameter("Fixed frame the poses are given in; the map, answers and frames are in it.", "map",
                              read_only=True)
    image_topic: str = parameter("Colour sensor_msgs/Image.", "/camera/color/image_raw", read_only=True)
    depth_topic: str = parameter("Depth sensor_msgs/Image aligned to the colour camera (16UC1 mm, 32FC1 m).",
                                 "/camera/aligned_depth_to_color/image_raw", read_only=True)
    camera_info_topic: str = parameter("sensor_msgs/CameraInfo of the colour camera.", "/camera/color/camera_info",
                                       read_only=True)
    pose_topic: str = parameter("geometry_msgs/PoseStamped of the colour camera's optical frame in frame_id.",
                                "/camera/pose", read_only=True)
    sensor_queue: int = parameter("QoS depth of the best-effort sensor subscriptions.", 5, low=1, high=100,
                                  read_only=True)
    depth_tolerance: float = parameter("Seconds between a colour image and the depth image paired with it.", 0.02,
                                       low=0.0, high=10.0, read_only=True)
    pose_tolerance: float = parameter("Seconds from a colour image to the nearest pose (interpolated between).",
                                      0.05, low=0.0, high=10.0, read_only=True)
    voxel: float = parameter("Voxel edge of the map, metres.", DEFAULT_VOXEL, low=1e-3, high=10.0, read_only=True)
    max_voxels: int = parameter("Most voxels the map holds in memory (bounds its memory); beyond it the "
                                "longest-unseen leave memory, as when_full says.", DEFAULT_MAX_VOXELS, low=1,
                                high=100_000_000, read_only=True)
    when_full: str = parameter("What happens to the voxels that leave memory: 'spill' (written to disk, into "
                               "map_file or else a temporary folder, and read back when seen again: nothing is "
                               "forgotten) or 'evict' (forgotten; each eviction is logged and counted).", "spill",
                               read_only=True)
    map_file: str = parameter("Folder the map is saved to (atomically: every save_period s and at shutdown) and "
                              "loaded from at start, if it holds a saved map; find3d query --field and the query "
                              "node read it as an export. Empty: the map is not saved.", "", read_only=True)
    save_period: float = parameter("Seconds between saves of a changed map to map_file; 0: only at shutdown.", 60.0,
                                   low=0.0, high=86400.0, read_only=True)
    max_depth: float = parameter("Depth readings farther than this (metres) are not fused.", 5.0, low=0.01,
                                 high=1000.0, read_only=True)
    min_translation: float = parameter("Metres the camera must move from the last keyframe (or turn min_rotation).",
                                       0.05, low=0.0, high=100.0, read_only=True)
    min_rotation: float = parameter("Degrees the camera must turn from the last keyframe (or move min_translation).",
                                    5.0, low=0.0, high=180.0, read_only=True)
    blur_ratio: float = parameter("Blurred below this share of the recent median sharpness; 0 disables it.", 0.5,
                                  low=0.0, high=0.99, read_only=True)
    map_rate: float = parameter("Hz at which ~/map is published while the map changes; 0: never.", 1.0, low=0.0,
                                high=100.0, read_only=True)
    record_dir: str = parameter("Folder to record the keyframes into as a scene (must be new or empty); empty: "
                                "do not record.", "", read_only=True)


def sensor_qos(depth: int) -> Any:
    """BEST_EFFORT + VOLATILE, keep the last ``depth`` (the module docstring says why)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


class MappingNode:
    """The ROS side of live mapping: parameters, QoS, message decoding and publication around ``Mapper``."""

    def __init__(self, node: Any) -> None:
        from geometry_msgs.msg import PoseStamped
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        from find3d.mapping.sync import Pairing
        from ros_nodes.serving import QueryServer, state_qos

        self.node = node
        self.params = params = declare(node, MappingNodeParameters)
        node.add_post_set_parameters_callback(self._on_parameters)
        self.mapper = build_mapper(params, self._warn)
        self.mapper.warm_up()
        self.pairing = Pairing(int(params.depth_tolerance * 1e9), int(params.pose_tolerance * 1e9))
        self.camera: Any | None = None
        self._warned: dict[str, float] = {}
        self._published = -1
        self._last: dict[str, Any] = {}
        self.server = QueryServer(node, self.answer, lambda: (self.params.threshold, self.params.top_k),
                                  lambda: self.params.frame_id)
        sensors, timers = MutuallyExclusiveCallbackGroup(), MutuallyExclusiveCallbackGroup()
        qos = sensor_qos(params.sensor_queue)
        node.create_subscription(Image, params.image_topic, self._on_colour, qos, callback_group=sensors)
        node.create_subscription(Image, params.depth_topic, self._on_depth, qos, callback_group=sensors)
        node.create_subscription(CameraInfo, params.camera_info_topic, self._on_camera_info, qos,
                                 callback_group=sensors)
        node.create_subscription(PoseStamped, params.pose_topic, self._on_pose, qos, callback_group=sensors)
        self.map_publisher = node.create_publisher(PointCloud2, "~/map", state_qos())
        if params.map_rate > 0:
            node.create_timer(1.0 / params.map_rate, self._publish_map, callback_group=timers)
        self._diagnostics = self._diagnostics_publisher()
        node.create_timer(1.0, self._report, callback_group=timers)
        if params.map_file and params.save_period > 0:  # a group of its own: a long save delays no other timer
            node.create_timer(params.save_period, self._save, callback_group=MutuallyExclusiveCallbackGroup())
        saving = (f"; map file {params.map_file}" + (f" (loaded: {self.mapper.loaded} voxels)" if self.mapper.loaded
                                                     else " (new)")) if params.map_file else ""
        node.get_logger().info(
            f"mapping {params.image_topic} + {params.depth_topic} at poses {params.pose_topic} in frame "
            f"'{params.frame_id}' ({params.voxel:g} m voxels, at most {params.max_voxels} in memory, then "
            f"{params.when_full}){saving}; service {node.get_fully_qualified_name()}/query"
            + (f"; recording to {params.record_dir}" if params.record_dir else ""))

    def _on_parameters(self, parameters: list[Any]) -> None:
        self.params = update(self.params, parameters)

    # ---------------------------------------------------------------------------------- sensors
    def _stamp(self, header: Any) -> int:
        from find3d.ingest.tf import stamp_ns

        # A driver that never sets stamps: the arrival time stands in (pairing then works by arrival).
        return stamp_ns(header.stamp) or self.node.get_clock().now().nanoseconds

    def _on_colour(self, message: Any) -> None:
        self.mapper.count_in()
        self._guarded(self.params.image_topic, lambda: self.pairing.add_colour(self._stamp(message.header), message,
                                                                               time.perf_counter()))

    def _on_depth(self, message: Any) -> None:
        self._guarded(self.params.depth_topic, lambda: self.pairing.add_depth(self._stamp(message.header), message))

    def _on_pose(self, message: Any) -> None:
        def add() -> tuple[list, list]:
            frame = message.header.frame_id.lstrip("/")
            if frame and frame != self.params.frame_id.lstrip("/"):
                raise InputError(f"pose in frame '{frame}', but frame_id is '{self.params.frame_id}'; publish "
                                 "the camera pose in that frame, or set frame_id.")
            p, q = message.pose.position, message.pose.orientation
            return self.pairing.add_pose(self._stamp(message.header), [p.x, p.y, p.z], [q.x, q.y, q.z, q.w])

        self._guarded(self.params.pose_topic, add)

    def _on_camera_info(self, message: Any) -> None:
        from find3d.ingest.camera import intrinsics_from_camera_info

        try:
            self.camera = intrinsics_from_camera_info(message, self.params.camera_info_topic)
        except Find3dError as err:
            self._warn(str(err), self.params.camera_info_topic)
            self.mapper.skip(BAD_MESSAGE)
            return
        if any(self.camera.distortion.values()):  # recorded for training, but fusion casts pinhole rays
            self._warn(f"{self.params.camera_info_topic}: distortion {self.camera.distortion} is not undone by the "
                       "map's back-projection; map the rectified image (image_proc's image_rect) for exact "
                       "geometry.", "distortion")

    def _guarded(self, topic: str, step: Any) -> None:
        """Run one sensor step and map what it paired; no message, however bad, escapes as an exception."""
        paired = self._safely(topic, step) or ([], [])
        for reason in paired[1]:
            self.mapper.skip(reason)
        for frame in paired[0]:
            self._safely(topic, lambda frame=frame: self._map(frame))

    def _safely(self, topic: str, step: Any) -> Any:
        try:
            return step()
        except Find3dError as err:
            self._warn(str(err), topic)
        except Exception as err:  # a bug must not stop the map: say it, keep the node up
            self._warn(f"{topic}: unexpected {err!r}", "bug")
        self.mapper.skip(BAD_MESSAGE)
        return None

    def _map(self, paired: Any) -> None:
        """One colour image with its depth and pose: to the mapper if it is a keyframe (cheap checks first)."""
        from find3d.errors import DataError
        from find3d.ingest.images import decode_colour, decode_depth_mm
        from find3d.mapping.mapper import Frame
        from find3d.poses import optical_to_opengl

        c2w = optical_to_opengl(paired.c2w)
        if self.camera is None:
            self.mapper.skip(NO_CAMERA_INFO)
            return
        if not self.mapper.wants(c2w):
            return
        rgb = decode_colour(paired.colour, self.params.image_topic)
        depth = decode_depth_mm(paired.depth, self.params.depth_topic)
        size = (self.camera.height, self.camera.width)
        if rgb.shape[:2] != size or depth.shape != size:
            raise DataError(f"colour {rgb.shape[1]}x{rgb.shape[0]} and depth {depth.shape[1]}x{depth.shape[0]} "
                            f"images, camera info {size[1]}x{size[0]}: they must match; align the depth to the "
                            "colour camera (e.g. the driver's align_depth option).")
        self.mapper.offer(Frame(rgb, depth, self.camera, c2w, paired.stamp_ns, paired.received))

    def _warn(self, message: str, kind: str = "worker") -> None:
        now = time.monotonic()
        if now - self._warned.get(kind, -np.inf) >= WARN_EVERY:
            self._warned[kind] = now
            self.node.get_logger().warning(message)

    # ---------------------------------------------------------------------------------- queries
    def answer(self, query: str, images: list[np.ndarray], masks: list[np.ndarray | None], threshold: float,
               top_k: int) -> tuple[Any, np.ndarray, np.ndarray]:
        """``find3d.query.answer.answer`` on the live map's snapshot."""
        from find3d.query.answer import answer

        field = self.mapper.map.field()
        if len(field) == 0:
            raise InputError("the map is empty: no keyframe has been fused yet; check that colour, depth, camera "
                             "info and pose topics are publishing (see /diagnostics), then ask again.")
        with self.mapper.interface_lock:
            result = answer(field, self.mapper.interface, query, images=images, masks=masks or None,
                            threshold=threshold, top_k=top_k, **self.params.options())
        return result, field.points, field.colors

    # ------------------------------------------------------------------------------------ saving
    def _save(self) -> None:
        """The save timer: a failed save (disk full, folder gone) is logged, and the next one tries again."""
        try:
            if self.mapper.save():
                self.node.get_logger().info(f"saved the map ({len(self.mapper.map)} voxels) to "
                                            f"{self.params.map_file} in {self.mapper.save_seconds:.1f} s")
        except (Find3dError, OSError) as err:
            self._warn(f"map not saved to {self.params.map_file}: {err}", "save")

    def close(self) -> None:
        """At shutdown (``ros_nodes.serving.run_node``): stop mapping and save the map a last time."""
        try:
            self.mapper.close()
            if self.params.map_file:
                self.node.get_logger().info(f"map ({len(self.mapper.map)} voxels) saved to {self.params.map_file}")
        except (Find3dError, OSError) as err:
            self.node.get_logger().error(f"map not saved to {self.params.map_file}: {err}")

    # ------------------------------------------------------------------------------ publication
    def _publish_map(self) -> None:
        from ros_nodes.serving import cloud_message

        version = self.mapper.map.version
        if version == self._published:
            return
        points, colors = self.mapper.map.cloud()
        self.map_publisher.publish(cloud_message(points, colors, None, self.server.header()))
        self._published = version

    def _diagnostics_publisher(self) -> Any:
        from diagnostic_msgs.msg import DiagnosticArray

        return self.node.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def _report(self) -> None:
        """Once a second: the mapper's counters on /diagnostics, and in the log when they changed."""
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        stats = self.mapper.stats()
        counters = {k: stats[k] for k in ("frames_in", "keyframes", "embedded", "dropped", "failed", "voxels",
                                          "in_memory", "spilled", "evicted")}
        skipped = ", ".join(f"{count} {reason}" for reason, count in sorted(stats["skipped"].items())) or "none"
        latency = (f"{1e3 * stats['latency']:.0f} ms (embedding {1e3 * stats['embed']:.0f} ms)"
                   if stats["latency"] is not None else "n/a")
        values = {**counters, "map_bytes": stats["map_bytes"], "disk_bytes": stats["disk_bytes"], "skipped": skipped,
                  "latency": latency}
        level = DiagnosticStatus.WARN if stats["failed"] or stats["evicted"] else DiagnosticStatus.OK
        name = self.node.get_name()
        status = DiagnosticStatus(level=level, name=f"{name}: mapping", hardware_id=name,
                                  message=f"{stats['embedded']} keyframes fused, {stats['voxels']} voxels",
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        self._diagnostics.publish(DiagnosticArray(header=self.server.header(), status=[status]))
        if counters != self._last:
            self._last = counters
            self.node.get_logger().info(
                f"frames in {stats['frames_in']}, keyframes {stats['keyframes']}, embedded {stats['embedded']}, "
                f"dropped {stats['dropped']}, failed {stats['failed']}; skipped: {skipped}; {stats['voxels']} "
                f"voxels ({stats['in_memory']} in memory, {stats['map_bytes'] / 2**20:.1f} MiB; {stats['spilled']} "
                f"spilled, {stats['evicted']} evicted); latency {latency}")


def build_mapper(params: MappingNodeParameters, warn: Any) -> Any:
    """The interface, the recorder and the ``Mapper``; Find3dError with the fix when one cannot be made."""
    from find3d import Interface
    from find3d.mapping.mapper import Mapper, MappingConfig
    from find3d.mapping.record import SceneRecorder
    from find3d.mapping.store import saved

    if not params.checkpoint:
        raise InputError("parameter `checkpoint` is not set: pass -p checkpoint:=CKPT (a `find3d train-interface` "
                         "checkpoint), or checkpoint:=CKPT to the launch file.")
    config = MappingConfig(voxel=params.voxel, max_voxels=params.max_voxels, max_depth=params.max_depth,
                           min_translation=params.min_translation, min_rotation=params.min_rotation,
                           blur_ratio=params.blur_ratio, when_full=params.when_full)
    if params.map_file:
        saved(params.map_file)  # a folder of other files is refused before the model loads
    recorder = SceneRecorder(params.record_dir) if params.record_dir else None
    interface = Interface.from_checkpoint(params.checkpoint, device=params.device)
    meta = {"checkpoint": str(Path(params.checkpoint).resolve()), "model": interface.fingerprint,
            "scene": str(Path(params.record_dir).resolve()) if params.record_dir else None}
    return Mapper(interface, config, recorder, on_error=warn, map_file=params.map_file or None, meta=meta)


def main(argv: list[str] | None = None) -> int:
    """Run the node until SIGINT / shutdown; exit 0 then, 1 when it cannot start."""
    from ros_nodes.serving import run_node

    # Four threads: queries (one at a time), sensors, timers and saves each keep one, so a long query or
    # save never stalls the sensor callbacks, and the mapper's worker thread embeds beside all of them.
    return run_node(NODE_NAME, MappingNode, argv, threads=4)


if __name__ == "__main__":
    sys.exit(main())
