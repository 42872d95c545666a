"""Live mapping without ROS: keyframes by motion, embedded on a worker, fused into a ``LiveMap``.

``Mapper.wants(c2w)`` is the cheap test a caller makes before decoding a frame (has the camera moved
``min_translation`` metres or ``min_rotation`` degrees from the last keyframe? ingest-bag's
``KeyframeSelector``); ``offer(frame)`` checks sharpness and hands the keyframe to a
``LatestWorker``, which embeds it (``Interface.embed_pixels``), back-projects the cells with depth
(``find3d.mapping.fusion.cell_samples``), fuses them (``LiveMap.add``) and records the keyframe
(``SceneRecorder``). ``stats()`` counts frames in, keyframes, embedded, dropped (the worker was
behind) and skipped by reason, and times the latest updates: image arrival -> map updated, and the
embedding's part of it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from find3d.config import doc
from find3d.errors import ConfigError
from find3d.ingest.keyframes import BLURRED, DUPLICATE, KeyframeSelector
from find3d.mapping.fusion import DEFAULT_MAX_VOXELS, DEFAULT_VOXEL, cell_samples
from find3d.mapping.live import Keyframe, LiveMap
from find3d.mapping.worker import LatestWorker

LATENCY_WINDOW = 50  # updates the latency figures are averaged over


@dataclass
class MappingConfig:
    """How a live map is built."""

    voxel: float = doc("Voxel edge of the map, metres.", DEFAULT_VOXEL)
    max_voxels: int = doc("Most voxels the map holds; beyond it the longest-unseen are evicted.", DEFAULT_MAX_VOXELS)
    max_depth: float = doc("Depth readings farther than this (metres) are not fused (noisy far range).", 5.0)
    min_translation: float = doc("Metres the camera must move from the last keyframe (or turn min_rotation).", 0.05)
    min_rotation: float = doc("Degrees the camera must turn from the last keyframe (or move min_translation).", 5.0)
    blur_ratio: float = doc("A keyframe candidate is blurred below this share of the recent median sharpness; "
                            "0 disables it.", 0.5)

    def __post_init__(self) -> None:
        checks = {"voxel": self.voxel > 0, "max_voxels": self.max_voxels >= 1, "max_depth": self.max_depth > 0,
                  "min_translation": self.min_translation >= 0, "min_rotation": self.min_rotation >= 0,
                  "blur_ratio": 0 <= self.blur_ratio < 1}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"mapping: {', '.join(f'{n}={getattr(self, n)}' for n in bad)} out of range; need "
                              "voxel > 0, max_voxels >= 1, max_depth > 0, min_translation / min_rotation >= 0 "
                              "and 0 <= blur_ratio < 1.")


@dataclass
class Frame:
    """One colour image with its aligned depth, camera and pose."""

    rgb: np.ndarray  # (H, W, 3) uint8
    depth_mm: np.ndarray  # (H, W) uint16 millimetres, 0 = no reading
    camera: Any  # find3d.ingest.camera.Intrinsics (nerfstudio pixel convention)
    c2w: np.ndarray  # (4, 4) OpenGL camera-to-world in the map frame
    stamp_ns: int = 0
    received: float = field(default_factory=time.perf_counter)  # when its image arrived


@dataclass
class Timing:
    """One map update: seconds from image arrival to the map holding it, and embedding's part."""

    latency: float
    embed: float
    record: float = 0.0  # writing the keyframe into the recorded scene


class Mapper:
    """A ``LiveMap`` fed with keyframes (module docstring). ``interface``: a ``find3d.Interface``."""

    def __init__(self, interface: Any, config: MappingConfig | None = None, recorder: Any | None = None,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.interface, self.config, self.recorder = interface, config or MappingConfig(), recorder
        self.on_error = on_error or (lambda _: None)
        self.map = LiveMap(int(interface.dim), self.config.voxel, self.config.max_voxels)
        self.selector = KeyframeSelector(self.config.min_translation, self.config.min_rotation, 0.0,
                                         self.config.blur_ratio, 15)
        self.received = 0
        self.keyframes = 0
        self.skipped: Counter[str] = Counter()
        self.timings: deque[Timing] = deque(maxlen=LATENCY_WINDOW)
        self._lock = threading.Lock()
        # Held around every use of the interface (embedding here, query encoding by a node's service
        # thread): one forward pass at a time, so torch's thread pool is never shared by two.
        self.interface_lock = threading.Lock()
        self.worker = LatestWorker(self._fuse, self._failed)

    def warm_up(self) -> None:
        """One forward pass on a blank image, so that the first keyframe is not slowed by torch's lazy
        set-up (which would make the worker drop the keyframes that arrive meanwhile)."""
        with self.interface_lock:
            self.interface.embed_pixels(np.zeros((64, 64, 3), np.uint8))

    # ------------------------------------------------------------------------------ from sensors
    def count_in(self) -> None:
        """One more colour image arrived (paired or not)."""
        with self._lock:
            self.received += 1

    def skip(self, reason: str) -> None:
        with self._lock:
            self.skipped[reason] += 1

    def wants(self, c2w: np.ndarray) -> bool:
        """Whether a frame at ``c2w`` moved enough to be a keyframe (counted as a duplicate if not)."""
        with self._lock:
            moved = self.selector.moved_enough(np.asarray(c2w, dtype=np.float64))
        if not moved:
            self.skip(DUPLICATE)
        return moved

    def offer(self, frame: Frame) -> bool:
        """Submit a frame that ``wants`` accepted; False if it was blurred (not a keyframe)."""
        from find3d.ingest.images import sharpness

        with self._lock:
            if not self.selector.sharp_enough(sharpness(frame.rgb)):
                self.skipped[BLURRED] += 1
                return False
            self.selector.keep(np.asarray(frame.c2w, dtype=np.float64))
            self.keyframes += 1
        self.worker.submit(frame)
        return True

    # -------------------------------------------------------------------------------- the worker
    def _fuse(self, frame: Frame) -> None:
        started = time.perf_counter()
        with self.interface_lock:
            embedding = self.interface.embed_pixels(frame.rgb)
        features = embedding.features.numpy()
        vector = embedding.image_vector.numpy()
        embedded = time.perf_counter()
        samples = cell_samples(features, frame.depth_mm / 1000.0, frame.camera, frame.c2w, frame.rgb,
                               self.config.max_depth, embedding.segments)
        name, recording = f"keyframe_{len(self.map.keyframes):05d}", time.perf_counter()
        if self.recorder is not None:
            name = self.recorder.add(frame.rgb, frame.depth_mm, frame.c2w, frame.camera, frame.stamp_ns)
        recorded = time.perf_counter()
        self.map.add(Keyframe(name, np.asarray(frame.c2w, dtype=np.float64), frame.camera, vector, frame.stamp_ns),
                     samples)
        done = time.perf_counter()
        with self._lock:
            self.timings.append(Timing(done - frame.received, embedded - started, recorded - recording))

    def _failed(self, frame: Frame, error: BaseException) -> None:
        self.on_error(f"keyframe at {frame.stamp_ns} ns not fused: {error}")

    # ----------------------------------------------------------------------------------- reading
    def stats(self) -> dict[str, Any]:
        """Counters and the mean latency over the last updates (seconds; None before the first)."""
        with self._lock:
            timings = list(self.timings)
            out: dict[str, Any] = {"frames_in": self.received, "keyframes": self.keyframes,
                                   "skipped": dict(self.skipped)}
        out.update(embedded=self.worker.done, dropped=self.worker.dropped, failed=self.worker.failed,
                   voxels=len(self.map), map_bytes=self.map.nbytes(),
                   latency=float(np.mean([t.latency for t in timings])) if timings else None,
                   embed=float(np.mean([t.embed for t in timings])) if timings else None)
        return out

    def wait_idle(self, timeout: float = 60.0) -> bool:
        return self.worker.wait_idle(timeout)

    def close(self) -> None:
        self.worker.close()
