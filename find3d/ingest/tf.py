"""The transform tree of ``/tf`` and ``/tf_static``, and chains through it at a given time.

As in tf2, each frame has at most one parent; an edge is a ``TransformStamped`` (parent =
``header.frame_id``, child = ``child_frame_id``) that maps child coordinates into the parent. Static
edges hold one transform for all time, moving edges are ``PoseTrack`` time series. A chain from a
fixed frame to the camera runs up from both to their common ancestor, so it also works when the
fixed frame is not the root (e.g. ``odom`` under ``map``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from find3d.errors import DataError
from find3d.ingest.track import PoseTrack, checked
from find3d.poses import pose_to_matrix


def _frame(name: str) -> str:
    """tf2 ignores a leading slash (a ROS 1 habit some drivers keep)."""
    return name.lstrip("/")


def stamp_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` -> nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def vector(v: Any) -> np.ndarray:
    return np.array([v.x, v.y, v.z], dtype=np.float64)


def quaternion(q: Any) -> np.ndarray:
    return np.array([q.x, q.y, q.z, q.w], dtype=np.float64)


@dataclass
class TransformTree:
    """Edges by child frame: ``parent[child]``, then a static matrix or a moving track."""

    parent: dict[str, str] = field(default_factory=dict)
    static: dict[str, np.ndarray] = field(default_factory=dict)
    moving: dict[str, PoseTrack] = field(default_factory=dict)
    _topic_of: dict[str, str] = field(default_factory=dict, repr=False)

    def add(self, message: Any, static: bool, topic: str) -> None:
        """Add every transform of a ``tf2_msgs/TFMessage``."""
        for transform in message.transforms:
            parent, child = _frame(transform.header.frame_id), _frame(transform.child_frame_id)
            if not parent or not child or parent == child:
                raise DataError(f"{topic}: a transform from {parent!r} to {child!r} is malformed (empty or equal "
                                "frame ids); fix the node that publishes it and re-record.")
            known = self.parent.get(child)
            if known is not None and known != parent:
                raise DataError(f"{topic}: frame {child!r} has two parents, {known!r} ({self._topic_of[child]}) and "
                                f"{parent!r}; a tf tree allows one; fix the publishers and re-record.")
            if (child in self.static) != static and known is not None:
                raise DataError(f"frame {child!r} is published on both the static and the moving tf topic "
                                f"({self._topic_of[child]}, {topic}); fix the publishers and re-record.")
            self.parent[child] = parent
            self._topic_of[child] = topic
            translation, rotation = vector(transform.transform.translation), quaternion(transform.transform.rotation)
            if static:
                self.static[child] = pose_to_matrix(*checked(translation, rotation, f"{topic} {parent} -> {child}"))
            else:
                track = self.moving.setdefault(child, PoseTrack(f"{topic} {parent} -> {child}"))
                track.add(stamp_ns(transform.header.stamp), translation, rotation)

    @property
    def frames(self) -> set[str]:
        return set(self.parent) | set(self.parent.values())

    def _ancestors(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self.parent:
            chain.append(self.parent[chain[-1]])
            if len(chain) > len(self.parent) + 1:
                raise DataError(f"the tf tree has a loop through {chain[-1]!r}; fix the publishers and re-record.")
        return chain

    def connects(self, target: str, source: str) -> bool:
        return bool(set(self._ancestors(target)) & set(self._ancestors(source)))

    def chain(self, target: str, source: str) -> tuple[list[str], list[str]]:
        """(frames from the common ancestor down to ``target``, ... down to ``source``), ancestor excluded."""
        up_target, up_source = self._ancestors(target), self._ancestors(source)
        common = next(f for f in up_source if f in set(up_target))
        return up_target[: up_target.index(common)], up_source[: up_source.index(common)]

    def lookup(self, target: str, source: str, stamp: int, tolerance_ns: int) -> tuple[np.ndarray | None, str]:
        """(4, 4) pose of ``source`` in ``target`` at ``stamp`` (or None and the edge that had no sample near it)."""
        to_target, to_source = self.chain(target, source)
        in_common = []
        for frames in (to_target, to_source):
            transform = np.eye(4)
            for child in frames:  # child-most first: T_ancestor_frame = T_ancestor_parent @ T_parent_child
                edge = self._edge(child, stamp, tolerance_ns)
                if edge is None:
                    return None, f"{self.parent[child]} -> {child}"
                transform = edge @ transform
            in_common.append(transform)
        return np.linalg.inv(in_common[0]) @ in_common[1], ""

    def _edge(self, child: str, stamp: int, tolerance_ns: int) -> np.ndarray | None:
        if child in self.static:
            return self.static[child]
        return self.moving[child].at(stamp, tolerance_ns)

    def trees(self) -> list[str]:
        """Each connected tree as 'root: frame, frame, ...' (for the error when a chain never connects)."""
        groups: dict[str, list[str]] = {}
        for frame in sorted(self.frames):
            groups.setdefault(self._ancestors(frame)[-1], []).append(frame)
        return [f"{root}: {', '.join(f for f in members if f != root) or '(no children)'}"
                for root, members in sorted(groups.items())]
