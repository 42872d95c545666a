"""Live mapping without ROS: keyframes by motion, embedded on a worker, fused into a ``LiveMap``.

``Mapper.wants(c2w)`` is the cheap test a caller makes before decoding a frame (has the camera moved
``min_translation`` metres or ``min_rotation`` degrees from the last keyframe? ingest-bag's
``KeyframeSelector``); ``offer(frame)`` checks sharpness and hands the keyframe to a
``LatestWorker``, which embeds it (``Interface.embed_pixels``), back-projects the cells with depth
(``find3d.mapping.fusion.cell_samples``), fuses them (``LiveMap.add``) and records the keyframe
(``SceneRecorder``). ``stats()`` counts frames in, keyframes, embedded, dropped (the worker was
behind) and skipped by reason, and times the latest updates: image arrival -> map updated, and the
embedding's part of it.

With a ``map_file`` the map is loaded from it at start when it holds a saved map
(``find3d.mapping.store``), spills its longest-unseen voxels into it when memory is full, and ``save()``
/ ``close()`` write it there; without one, spills go to a temporary folder that ``close()`` deletes.
``when_full: evict`` forgets those voxels instead, and says so through ``on_error`` every time.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from find3d.config import doc
from find3d.errors import ConfigError, InputError
from find3d.ingest.keyframes import BLURRED, DUPLICATE, KeyframeSelector
from find3d.mapping.fusion import DEFAULT_MAX_VOXELS, DEFAULT_VOXEL, cell_samples
from find3d.mapping.live import Keyframe, LiveMap
from find3d.mapping.worker import LatestWorker

LATENCY_WINDOW = 50  # updates the latency figures are averaged over
WHEN_FULL = ("spill", "evict")


@dataclass
class MappingConfig:
    """How a live map is built."""

    voxel: float = doc("Voxel edge of the map, metres.", DEFAULT_VOXEL)
    max_voxels: int = doc("Most voxels the map holds in memory; beyond it the longest-unseen leave memory (when_full).",
                          DEFAULT_MAX_VOXELS)
    when_full: str = doc("What happens to the voxels that leave memory: 'spill' (written to disk and read back when "
                         "seen again: the map forgets nothing) or 'evict' (forgotten; every eviction is reported).",
                         "spill")
    max_depth: float = doc("Depth readings farther than this (metres) are not fused (noisy far range).", 5.0)
    min_translation: float = doc("Metres the camera must move from the last keyframe (or turn min_rotation).", 0.05)
    min_rotation: float = doc("Degrees the camera must turn from the last keyframe (or move min_translation).", 5.0)
    blur_ratio: float = doc("A keyframe candidate is blurred below this share of the recent median sharpness; "
                            "0 disables it.", 0.5)

    def __post_init__(self) -> None:
        checks = {"voxel": self.voxel > 0, "max_voxels": self.max_voxels >= 1, "max_depth": self.max_depth > 0,
                  "min_translation": self.min_translation >= 0, "min_rotation": self.min_rotation >= 0,
                  "blur_ratio": 0 <= self.blur_ratio < 1, "when_full": self.when_full in WHEN_FULL}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"mapping: {', '.join(f'{n}={getattr(self, n)}' for n in bad)} out of range; need "
                              "voxel > 0, max_voxels >= 1, max_depth > 0, min_translation / min_rotation >= 0, "
                              f"0 <= blur_ratio < 1 and when_full one of {', '.join(WHEN_FULL)}.")


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
    """A ``LiveMap`` fed with keyframes (module docstring). ``interface``: a ``find3d.Interface``; ``meta``: what
    a saved map records of how it was made (``checkpoint``, ``model``, ``scene``: see ``find3d.field.export``)."""

    def __init__(self, interface: Any, config: MappingConfig | None = None, recorder: Any | None = None,
                 on_error: Callable[[str], None] | None = None, map_file: str | Path | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        self.interface, self.config, self.recorder = interface, config or MappingConfig(), recorder
        self.on_error = on_error or (lambda _: None)
        self.map_file, self.meta = (Path(map_file) if map_file else None), dict(meta or {})
        self.map = self._open_map()
        self.loaded = len(self.map)  # voxels the map started with (a saved map's)
        self._evicted = self.map.voxels.evicted
        self._saved_version = self.map.version
        self.selector = KeyframeSelector(self.config.min_translation, self.config.min_rotation, 0.0,
                                         self.config.blur_ratio, 15)
        self.received = 0
        self.keyframes = 0
        self.skipped: Counter[str] = Counter()
        self.timings: deque[Timing] = deque(maxlen=LATENCY_WINDOW)
        self.save_seconds: float | None = None  # the latest save's
        self._lock = threading.Lock()
        # Held around every use of the interface (embedding here, query encoding by a node's service
        # thread): one forward pass at a time, so torch's thread pool is never shared by two.
        self.interface_lock = threading.Lock()
        self._save_lock = threading.Lock()  # one save at a time (a timer's and the one at close)
        self.worker = LatestWorker(self._fuse, self._failed)

    def _open_map(self) -> LiveMap:
        """The saved map of ``map_file`` if it holds one (checked against this interface and config), else a
        new one spilling into ``map_file`` or a temporary folder."""
        from find3d.fileio import read_json
        from find3d.mapping.cold import ColdStore
        from find3d.mapping.store import load_map, saved

        config, dim, spill = self.config, int(self.interface.dim), self.config.when_full == "spill"
        if self.map_file is not None and saved(self.map_file):
            live = load_map(self.map_file, config.max_voxels, spill)
            model, made_by = self.meta.get("model"), read_json(self.map_file / "meta.json").get("model")
            problems = []
            if live.dim != dim:
                problems.append(f"{live.dim}-d embeddings (this interface: {dim}-d)")
            if live.voxels.voxel != config.voxel:
                problems.append(f"{live.voxels.voxel:g} m voxels (voxel: {config.voxel:g})")
            if model and made_by and made_by != model:
                problems.append(f"interface model {made_by} (this checkpoint: {model})")
            if problems:
                live.close()
                raise InputError(f"map file {self.map_file}: a map of {', '.join(problems)}; pass the map's own "
                                 "checkpoint and voxel, or another map_file to start a new map.")
            return live
        if not spill:
            return LiveMap(dim, config.voxel, config.max_voxels)
        temporary = self.map_file is None
        folder = Path(tempfile.mkdtemp(prefix="find3d-map-")) if temporary else self.map_file
        return LiveMap(dim, config.voxel, config.max_voxels, cold=ColdStore(folder, dim, temporary))

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
        evicted = self.map.voxels.evicted
        if evicted > self._evicted:  # never silent: a robot's operator must know what its map forgot
            self.on_error(f"map full ({self.config.max_voxels} voxels in memory): {evicted - self._evicted} voxels "
                          f"seen longest ago evicted, {evicted} in all; they are forgotten (when_full: evict); "
                          "when_full: spill keeps them on disk.")
            self._evicted = evicted
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
        voxels = self.map.voxels
        cold = voxels.cold
        out.update(embedded=self.worker.done, dropped=self.worker.dropped, failed=self.worker.failed,
                   voxels=len(self.map), in_memory=voxels.count, spilled=voxels.spilled, evicted=voxels.evicted,
                   map_bytes=self.map.nbytes(), disk_bytes=0 if cold is None else cold.disk_bytes(),
                   save_seconds=self.save_seconds,
                   latency=float(np.mean([t.latency for t in timings])) if timings else None,
                   embed=float(np.mean([t.embed for t in timings])) if timings else None)
        return out

    def wait_idle(self, timeout: float = 60.0) -> bool:
        return self.worker.wait_idle(timeout)

    def save(self) -> bool:
        """Save the map to ``map_file`` (``find3d.mapping.store.save_map``) if it changed since the last save;
        returns whether it wrote."""
        from find3d.mapping.store import save_map

        if self.map_file is None:
            return False
        with self._save_lock:
            version = self.map.version
            if version == self._saved_version:
                return False
            started = time.perf_counter()
            save_map(self.map, self.map_file, self.meta)
            self.save_seconds, self._saved_version = time.perf_counter() - started, version
            return True

    def close(self) -> None:
        """Stop the worker (the keyframe in hand is fused), save the map (with a ``map_file``), release it."""
        self.worker.close()
        try:
            self.save()
        finally:
            self.map.close()


def scene_frames(scene: Path) -> list[Frame]:
    """The frames of a make-scene / ingest-bag / recorded scene folder (colour, depth, camera, pose), in order:
    a recorded drive played back to a ``Mapper`` (benchmarks, tests)."""
    from PIL import Image

    from find3d.fileio import read_json
    from find3d.ingest.camera import Intrinsics

    meta = read_json(scene / "transforms.json")
    camera = Intrinsics.from_transforms(meta)
    frames = []
    for entry in meta["frames"]:
        rgb = np.asarray(Image.open(scene / entry["file_path"]).convert("RGB"))
        depth = np.asarray(Image.open(scene / entry["depth_file_path"]))
        frames.append(Frame(rgb, depth, camera, np.asarray(entry["transform_matrix"])))
    return frames
