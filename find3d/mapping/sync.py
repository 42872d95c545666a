"""Colour images paired with the depth image and the camera pose at their stamp, from bounded buffers.

Drivers publish colour, aligned depth and poses on separate topics, in any order and at their own
rates (``message_filters`` is not on PyPI). ``Pairing`` keeps the last ``keep`` depth images and
poses and at most ``wait`` colour images waiting for theirs. A colour image is paired with the depth
image nearest its stamp (within ``depth_tolerance``) and the pose at its stamp (interpolated by
``find3d.ingest.track.PoseTrack``, within ``pose_tolerance``, as ingest-bag does); it is given up,
with the reason, once a newer depth image or pose has come without a match, or when newer colour
images push it out. Everything is bounded, so a stalled topic cannot grow memory.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from find3d.ingest.keyframes import NO_DEPTH, NO_POSE
from find3d.ingest.track import PoseTrack, checked

SUPERSEDED = "superseded while waiting for its depth or pose"


@dataclass
class Paired:
    stamp_ns: int
    colour: Any
    depth: Any
    c2w: np.ndarray  # (4, 4) camera-to-world as the poses give it (optical frame for ROS poses)
    received: float  # when the colour image arrived (the caller's clock), for latency


class Pairing:
    """``add_depth`` / ``add_pose`` / ``add_colour``; each returns ``(paired frames, reasons given up)``."""

    def __init__(self, depth_tolerance_ns: int, pose_tolerance_ns: int, keep: int = 30, wait: int = 4,
                 need_depth: bool = True) -> None:
        self.depth_tolerance, self.pose_tolerance = int(depth_tolerance_ns), int(pose_tolerance_ns)
        self.need_depth = need_depth
        self.depths: deque[tuple[int, Any]] = deque(maxlen=keep)
        self.poses: deque[tuple[int, np.ndarray, np.ndarray]] = deque(maxlen=keep)
        self.waiting: deque[tuple[int, Any, float]] = deque()
        self.wait = wait
        self._track: PoseTrack | None = None

    def add_depth(self, stamp_ns: int, depth: Any) -> tuple[list[Paired], list[str]]:
        self.depths.append((int(stamp_ns), depth))
        return self._drain()

    def add_pose(self, stamp_ns: int, translation: Any, quaternion: Any) -> tuple[list[Paired], list[str]]:
        """A camera pose; a NaN or all-zero rotation raises ``DataError`` and is not kept."""
        translation, quaternion = checked(translation, quaternion, f"pose at {stamp_ns} ns")
        self.poses.append((int(stamp_ns), translation, quaternion))
        self._track = None
        return self._drain()

    def add_colour(self, stamp_ns: int, colour: Any, received: float) -> tuple[list[Paired], list[str]]:
        self.waiting.append((int(stamp_ns), colour, received))
        gone = []
        while len(self.waiting) > self.wait:
            self.waiting.popleft()
            gone.append(SUPERSEDED)
        paired, reasons = self._drain()
        return paired, gone + reasons

    def _pose(self, stamp: int) -> np.ndarray | None:
        if self._track is None:
            self._track = PoseTrack("pose")
            for sample in self.poses:
                self._track.add(*sample)
        return self._track.at(stamp, self.pose_tolerance)

    def _depth(self, stamp: int) -> Any | None:
        best = min(self.depths, key=lambda item: abs(item[0] - stamp), default=None)
        return best[1] if best is not None and abs(best[0] - stamp) <= self.depth_tolerance else None

    def _drain(self) -> tuple[list[Paired], list[str]]:
        paired, reasons, still = [], [], deque()
        newest_depth = max((s for s, _ in self.depths), default=None)
        newest_pose = max((s for s, _, _ in self.poses), default=None)
        for stamp, colour, received in self.waiting:
            depth = self._depth(stamp) if self.need_depth else None
            c2w = self._pose(stamp)
            if (depth is not None or not self.need_depth) and c2w is not None:
                paired.append(Paired(stamp, colour, depth, c2w, received))
            elif self.need_depth and depth is None and newest_depth is not None \
                    and newest_depth > stamp + self.depth_tolerance:
                reasons.append(NO_DEPTH)
            elif c2w is None and newest_pose is not None and newest_pose > stamp + self.pose_tolerance:
                reasons.append(NO_POSE)
            else:
                still.append((stamp, colour, received))
        self.waiting = still
        return paired, reasons
