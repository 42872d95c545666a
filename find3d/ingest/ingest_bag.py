"""``find3d ingest-bag BAG --out SCENE``: a rosbag2 recording -> the nerfstudio scene make-scene writes.

Two passes over the bag, each reading only the topics it needs:

1. the small topics: tf / a pose topic, camera_info, and the stamps of the depth images, so that
   every colour image's pose and depth partner are known before its pixels are touched;
2. colour and depth: each colour image with a pose (and a depth partner, when depth is ingested)
   that moved enough since the last kept frame is decoded, scored for sharpness and written; its
   depth image is written when it streams past (depth may be recorded just before or after it).

The output appears only when it is complete (``find3d.ingest.scene``); a summary lists the frames
kept and the frames dropped by reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import typing
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from find3d.config import from_dict
from find3d.errors import DataError
from find3d.ingest import keyframes
from find3d.ingest.bag import CAMERA_INFO, COMPRESSED_IMAGE, IMAGE, ODOMETRY, POSE_STAMPED, TF_MESSAGE, Bag
from find3d.ingest.camera import Intrinsics, intrinsics_from_camera_info
from find3d.ingest.config import NO_DEPTH, IngestConfig
from find3d.ingest.images import decode_colour, decode_depth_mm, is_compressed_depth, is_depth, sharpness
from find3d.ingest.keyframes import KeyframeSelector
from find3d.ingest.scene import SceneWriter
from find3d.ingest.sources import PoseSource, TopicPoses, add_pose_message, extrinsic_matrix, tf_poses
from find3d.ingest.tf import TransformTree, stamp_ns
from find3d.ingest.track import PoseTrack
from find3d.poses import optical_to_opengl

_NS = 1_000_000_000
#: depth images kept in memory this long (s) past their stamp, waiting for a colour partner logged late
_DEPTH_CACHE_S = 1.0


# ----------------------------------------------------------------------------------------- command
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=Path, help="rosbag2 folder (with metadata.yaml) or a .db3 / .mcap file")
    parser.add_argument("--out", required=True, type=Path, help="scene folder to create (must not exist or be empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier scene in --out")
    hints = typing.get_type_hints(IngestConfig)
    for f in dataclasses.fields(IngestConfig):
        hint = hints[f.name]
        kind = next((a for a in typing.get_args(hint) if a is not type(None)), hint)  # X | None -> X
        shown = "" if f.default in ("", None) else f" (default: {f.default})"  # the help says what empty means
        options: dict[str, Any] = {"default": None, "help": f.metadata["help"] + shown}
        if typing.get_origin(kind) is list:
            options.update(nargs="+", type=typing.get_args(kind)[0], metavar="V")
        else:
            options.update(type=kind, metavar=f.name.split("_")[-1].upper())
        parser.add_argument(f"--{f.name.replace('_', '-')}", **options)


def run(args: argparse.Namespace) -> int:
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(IngestConfig)
             if getattr(args, f.name) is not None}
    config = from_dict(IngestConfig, given, where="ingest-bag")
    summary = ingest_bag(args.bag, args.out, config, overwrite=args.overwrite)
    print("\n".join(summary.lines()))
    return 0


# ----------------------------------------------------------------------------------------- result
@dataclass
class IngestSummary:
    """What an ingest read, kept and dropped (``lines()`` is what the command prints)."""

    out: Path
    topics: dict[str, str | None]
    poses: str
    messages: int = 0
    images: int = 0
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        lines = [f"ingest-bag: {self.kept} of {self.images} images kept -> {self.out}",
                 f"  {self.messages} messages in {self.seconds:.1f} s "
                 f"({self.messages / max(self.seconds, 1e-9):.0f} messages/s)",
                 "  topics: " + ", ".join(f"{role} {topic}" for role, topic in self.topics.items() if topic),
                 f"  poses: {self.poses}"]
        for reason, count in self.dropped.most_common():
            lines.append(f"  dropped {count}: {reason}")
        return lines


@dataclass
class _Topics:
    image: str
    camera_info: str
    depth: str | None
    pose: str | None  # a PoseStamped / Odometry topic, or None for tf
    tf: list[str]
    first_image: Any  # its header names the camera frame

    def small(self) -> list[str]:
        return [*self.tf, *([self.pose] if self.pose else []), self.camera_info, *([self.depth] if self.depth else [])]

    def large(self) -> list[str]:
        return [self.image, *([self.depth] if self.depth else [])]


# ----------------------------------------------------------------------------------------- ingest
def ingest_bag(bag_path: str | Path, out: str | Path, config: IngestConfig | None = None,
               overwrite: bool = False) -> IngestSummary:
    """Ingest ``bag_path`` into the scene folder ``out``; raises DataError / InputError on a bad bag."""
    config = config or IngestConfig()
    start = time.perf_counter()
    writer = SceneWriter(out, overwrite)  # refuses a bad --out before any of the bag is read
    with Bag(bag_path) as bag:
        topics = _resolve_topics(bag, config)
        reads = bag.count(topics.small()) + bag.count(topics.large())
        with tqdm(total=reads, desc="ingest-bag", unit="msg", disable=None) as bar:
            context = _read_small(bag, topics, config, bar)
            summary = IngestSummary(Path(out), {"image": topics.image, "depth": topics.depth,
                                                "camera_info": topics.camera_info, "pose": topics.pose},
                                    context.poses.description, messages=bag.count({*topics.small(), *topics.large()}))
            with writer:
                frames = _read_frames(bag, topics, context, config, writer, summary, bar)
                if not frames:
                    raise DataError(_nothing_kept(bag, topics, config, summary))
                extra = {**_splits(frames),
                         "ingest": {"bag": str(Path(bag_path).resolve()), **summary.topics, "poses": summary.poses}}
                writer.finish(frames, context.camera, extra)
    summary.kept = len(frames)
    summary.seconds = time.perf_counter() - start
    return summary


def _resolve_topics(bag: Bag, config: IngestConfig) -> _Topics:
    """The topics to read: as given (type-checked) or found by type, with the ROS naming conventions."""
    firsts: dict[str, Any] = {}

    def first(topic: str) -> Any:
        if topic not in firsts:
            firsts[topic] = bag.first(topic)
        return firsts[topic]

    colour_types = (IMAGE, COMPRESSED_IMAGE)
    colour = None if config.image_topic else sorted(
        t for t, kind in bag.types.items() if kind in colour_types and (first(t) is not None) and not (
            is_depth(first(t)) if kind == IMAGE else is_compressed_depth(first(t))))
    image = bag.choose("colour image", "--image-topic", colour_types, config.image_topic, colour)
    assert image is not None
    first_image = first(image)
    if first_image is None:
        raise DataError(f"bag {bag.path}: the image topic {image} has no messages; pass --image-topic with the "
                        f"topic your camera recorded:\n{bag.topic_table()}")

    depth = None
    if config.depth_topic != NO_DEPTH:
        candidates = None if config.depth_topic else sorted(
            t for t, kind in bag.types.items() if kind == IMAGE and first(t) is not None and is_depth(first(t)))
        depth = bag.choose("depth image", "--depth-topic", (IMAGE,), config.depth_topic, candidates, required=False)

    infos = None
    if not config.camera_info_topic:
        infos = sorted(t for t, kind in bag.types.items() if kind == CAMERA_INFO)
        # image_transport convention: /ns/image_raw[/compressed] has its calibration on /ns/camera_info.
        sibling = image.removesuffix("/compressed").rsplit("/", 1)[0] + "/camera_info"
        infos = [sibling] if len(infos) > 1 and sibling in infos else infos
    camera_info = bag.choose("camera info", "--camera-info-topic", (CAMERA_INFO,), config.camera_info_topic, infos)
    assert camera_info is not None

    pose, tf = _pose_topics(bag, config)
    return _Topics(image, camera_info, depth, pose, tf, first_image)


def _pose_topics(bag: Bag, config: IngestConfig) -> tuple[str | None, list[str]]:
    """(pose topic or None for tf mode, the tf topics to read).

    tf mode when the bag records moving transforms (or only tf, no pose topic) and no pose topic or
    extrinsic is asked for. With a pose topic, /tf_static is still read (unless an extrinsic is given):
    it holds the camera's place on the robot."""
    pose_types = (POSE_STAMPED, ODOMETRY)
    tf = [t for t in (config.tf_topic, config.tf_static_topic) if t in bag.types]
    for topic in tf:
        bag.check_type(topic, (TF_MESSAGE,), "--tf-topic" if topic == config.tf_topic else "--tf-static-topic")
    statics = [config.tf_static_topic] if config.tf_static_topic in tf and config.camera_extrinsic is None else []
    if config.pose_topic:
        bag.check_type(config.pose_topic, pose_types, "--pose-topic")
        return config.pose_topic, statics
    candidates = sorted(t for t, kind in bag.types.items() if kind in pose_types)
    if tf and config.camera_extrinsic is None and (config.tf_topic in tf or not candidates):
        return None, tf
    if candidates:
        return bag.choose("pose", "--pose-topic", pose_types, "", candidates), statics
    if tf:
        raise DataError(f"bag {bag.path}: --camera-extrinsic places the camera on a pose topic's body, but the bag "
                        f"has no PoseStamped / Odometry topic (its poses are on {' and '.join(tf)}); drop "
                        "--camera-extrinsic to use tf.")
    raise DataError(f"bag {bag.path}: the images have no poses: there is no {config.tf_topic} or "
                    f"{config.tf_static_topic} topic and no PoseStamped / Odometry topic; the bag's topics are:\n"
                    f"{bag.topic_table()}\nrecord tf (or the robot's odometry) together with the images, or "
                    "pass --tf-topic / --pose-topic if the poses are there under another name.")


@dataclass
class _Context:
    """What the first pass learnt: the camera, a pose source, and when depth images were taken."""

    camera: dict[str, Any]
    width: int
    height: int
    poses: PoseSource
    depth_stamps: np.ndarray


def _read_small(bag: Bag, topics: _Topics, config: IngestConfig, bar: tqdm) -> _Context:
    tree, track = TransformTree(), PoseTrack(topics.pose or "")
    intrinsics: Intrinsics | None = None
    depth_stamps: list[int] = []
    body = ""  # the frame an Odometry topic gives the pose of (its child_frame_id)
    for message in bag.messages(topics.small()):
        bar.update()
        msg = message.msg
        if message.topic in topics.tf:
            tree.add(msg, static=message.topic == config.tf_static_topic, topic=message.topic)
        elif message.topic == topics.pose:
            add_pose_message(track, msg, message.log_ns)
            body = body or str(getattr(msg, "child_frame_id", "")).lstrip("/")
        elif message.topic == topics.depth:
            depth_stamps.append(stamp_ns(msg.header.stamp) or message.log_ns)
        elif message.topic == topics.camera_info:
            current = intrinsics_from_camera_info(msg, topics.camera_info)
            if intrinsics is None:
                intrinsics = current
            elif current != intrinsics:
                raise DataError(f"{topics.camera_info}: the camera's intrinsics change during the recording "
                                f"({intrinsics} then {current}); a scene has one camera: ingest a recording with "
                                "one calibration (or pass --camera-info-topic with another camera).")
    if intrinsics is None:
        raise DataError(f"bag {bag.path}: {topics.camera_info} has no messages, so the camera's intrinsics are "
                        "unknown; record the camera_info topic with the images, or pass --camera-info-topic.")
    tolerance = int(config.pose_tolerance * _NS)
    frame = (config.camera_frame or str(topics.first_image.header.frame_id)).lstrip("/")
    if topics.pose:
        if not len(track):
            raise DataError(f"bag {bag.path}: the pose topic {topics.pose} has no messages; record the robot's "
                            "poses with the images, or pass --pose-topic with another topic.")
        extrinsic, how = _extrinsic(config, tree, body, frame, topics.pose)
        poses: PoseSource = TopicPoses(topics.pose, track, extrinsic, tolerance, how)
    else:
        if not frame:
            raise DataError(f"{topics.image}: the images carry no header.frame_id, so their tf frame is unknown; "
                            "pass --camera-frame with the camera's optical frame.")
        poses = tf_poses(tree, config.fixed_frame, frame, tolerance, " + ".join(topics.tf))
    return _Context(intrinsics.to_transforms(), intrinsics.width, intrinsics.height, poses,
                    np.unique(np.array(depth_stamps, dtype=np.int64)))


def _extrinsic(config: IngestConfig, tree: TransformTree, body: str, camera: str, topic: str,
               ) -> tuple[np.ndarray, str]:
    """The camera optical frame in the pose topic's body frame, and where it came from.

    Given (--camera-extrinsic), else the static tf chain from an Odometry's child frame to the camera;
    a PoseStamped (or an Odometry of the camera itself) is taken as the camera's own pose."""
    if config.camera_extrinsic is not None:
        return extrinsic_matrix(config.camera_extrinsic), "--camera-extrinsic"
    if not body or body == camera:
        return np.eye(4), "the camera's own pose"
    if body in tree.frames and camera in tree.frames and tree.connects(body, camera):
        extrinsic, _ = tree.lookup(body, camera, 0, 0)  # static edges only: any stamp
        assert extrinsic is not None
        return extrinsic, f"{config.tf_static_topic} {body} -> {camera}"
    raise DataError(f"{topic}: its poses are of {body!r}, but the camera frame is {camera!r} and no "
                    f"{config.tf_static_topic} chain connects them (trees: {'; '.join(tree.trees()) or 'none'}); "
                    "pass --camera-extrinsic X Y Z QX QY QZ QW (the camera in the body frame), or record the "
                    "robot's static transforms.")


def _read_frames(bag: Bag, topics: _Topics, context: _Context, config: IngestConfig, writer: SceneWriter,
                 summary: IngestSummary, bar: tqdm) -> list[dict[str, Any]]:
    """The second pass: choose, decode and write the frames; returns their transforms.json entries."""
    frames = _Frames(topics, context, config, writer, summary)
    for message in bag.messages(topics.large()):
        bar.update()
        stamp = stamp_ns(message.msg.header.stamp) or message.log_ns  # a zero stamp: the driver never set it
        if message.topic == topics.depth:
            frames.depth(stamp, message.msg)
        else:
            frames.colour(stamp, message.msg)
    return frames.finish()


class _Frames:
    """The kept frames of the second pass, and the depth images on their way to them."""

    def __init__(self, topics: _Topics, context: _Context, config: IngestConfig, writer: SceneWriter,
                 summary: IngestSummary) -> None:
        self.topics, self.context, self.writer, self.summary = topics, context, writer, summary
        self.selector = KeyframeSelector(config.min_translation, config.min_rotation, config.min_sharpness,
                                         config.blur_ratio, config.sharpness_window)
        self.depth_tolerance = int(config.depth_tolerance * _NS)
        self.frames: dict[str, dict[str, Any]] = {}  # by image file name, in the order they were kept
        self.wanted: dict[int, list[str]] = {}  # depth stamp -> kept frames waiting for that depth image
        self.cache: dict[int, Any] = {}  # depth stamp -> recent depth message, for colour logged after it

    def depth(self, stamp: int, msg: Any) -> None:
        for name in self.wanted.pop(stamp, []):
            self._write_depth(name, msg)
        self.cache[stamp] = msg

    def colour(self, stamp: int, msg: Any) -> None:
        self.summary.images += 1
        horizon = stamp - self.depth_tolerance - int(_DEPTH_CACHE_S * _NS)
        for old in [s for s in self.cache if s < horizon]:
            del self.cache[old]
        kept = self._choose(stamp, msg)
        if isinstance(kept, str):
            self.summary.dropped[kept] += 1
            return
        c2w, partner, rgb = kept
        self.selector.keep(c2w)
        name = self.writer.name(len(self.frames))
        self.writer.write_image(name, rgb)
        frame = {"file_path": f"images/{name}", "transform_matrix": optical_to_opengl(c2w).tolist()}
        if partner is not None:
            frame["depth_file_path"] = f"depths/{name}"
            if partner in self.cache:
                self._write_depth(name, self.cache[partner])
            else:
                self.wanted.setdefault(partner, []).append(name)
        self.frames[name] = {**frame, "stamp_ns": stamp}

    def _choose(self, stamp: int, msg: Any) -> tuple[np.ndarray, int | None, np.ndarray] | str:
        """(optical camera-to-world, depth stamp, RGB) of a frame to keep, or why it is dropped.

        The cheap checks come first, so that frames dropped for pose, depth or motion are never decoded."""
        c2w, why = self.context.poses.camera_to_world(stamp)
        if c2w is None:
            return f"{keyframes.NO_POSE} ({why})"
        partner = _nearest(self.context.depth_stamps, stamp, self.depth_tolerance) if self.topics.depth else None
        if self.topics.depth and partner is None:
            return keyframes.NO_DEPTH
        if not self.selector.moved_enough(c2w):
            return keyframes.DUPLICATE
        rgb = decode_colour(msg, self.topics.image)
        if rgb.shape[:2] != (self.context.height, self.context.width):
            raise DataError(f"{self.topics.image}: images are {rgb.shape[1]}x{rgb.shape[0]} but "
                            f"{self.topics.camera_info} describes {self.context.width}x{self.context.height}; "
                            "pass --camera-info-topic with this camera's info.")
        if not self.selector.sharp_enough(sharpness(rgb)):
            return keyframes.BLURRED
        return c2w, partner, rgb

    def _write_depth(self, name: str, msg: Any) -> None:
        depth = decode_depth_mm(msg, str(self.topics.depth))
        if depth.shape != (self.context.height, self.context.width):
            raise DataError(f"{self.topics.depth}: depth images are {depth.shape[1]}x{depth.shape[0]} but the "
                            f"colour camera is {self.context.width}x{self.context.height}; record depth aligned "
                            "to the colour camera (e.g. the driver's align_depth option), or pass --depth-topic none.")
        self.writer.write_depth(name, depth)

    def finish(self) -> list[dict[str, Any]]:
        """The frames, less those whose depth never streamed past.

        That is rare: the depth image was seen in the first pass but left the cache before its colour
        image came (colour logged over a second after it). The numbering keeps their gap:
        transforms.json lists the files, nothing relies on consecutive names."""
        for names in self.wanted.values():
            for name in names:
                self.writer.remove(name)
                del self.frames[name]
                self.summary.dropped[keyframes.NO_DEPTH] += 1
        return list(self.frames.values())


def _splits(frames: list[dict[str, Any]]) -> dict[str, list[str]]:
    """make-scene's split keys. A recording has no held-out views and a map should use every frame, so
    all frames train; every tenth is also nerfstudio's (non-empty) val / test set for its periodic eval."""
    names = [f["file_path"] for f in frames]
    return {"train_filenames": names, "val_filenames": names[::10], "test_filenames": names[::10]}


def _nearest(stamps: np.ndarray, stamp: int, tolerance: int) -> int | None:
    """The stamp in sorted ``stamps`` closest to ``stamp``, if within ``tolerance``."""
    if not len(stamps):
        return None
    index = int(np.searchsorted(stamps, stamp))
    best = min((int(stamps[i]) for i in (index - 1, index) if 0 <= i < len(stamps)), key=lambda s: abs(s - stamp))
    return best if abs(best - stamp) <= tolerance else None


def _nothing_kept(bag: Bag, topics: _Topics, config: IngestConfig, summary: IngestSummary) -> str:
    """Why no frame survived, and what to change."""
    reasons = "; ".join(f"{count} {reason}" for reason, count in summary.dropped.most_common()) or "no images"
    fixes = []
    if any(r.startswith(keyframes.NO_POSE) for r in summary.dropped):
        fixes.append(f"the poses ({summary.poses}) do not cover the image stamps: record them over the whole "
                     f"recording, check that all nodes share one clock, or raise --pose-tolerance "
                     f"(now {config.pose_tolerance} s)")
    if keyframes.NO_DEPTH in summary.dropped:
        fixes.append(f"no {topics.depth} image lies within --depth-tolerance ({config.depth_tolerance} s) of the "
                     "colour images: raise it or pass --depth-topic none")
    if keyframes.BLURRED in summary.dropped:
        fixes.append("lower --min-sharpness / --blur-ratio")
    return (f"bag {bag.path}: none of the {summary.images} images on {topics.image} was kept ({reasons}); "
            + ("; ".join(fixes) or "check the image topic") + ".")
