"""The keyframes a map fused, recorded as a scene folder while mapping ("map now, refine later").

The layout is ``find3d make-scene``'s (and ``ingest-bag``'s): ``images/frame_00001.png`` RGB,
``depths/frame_00001.png`` uint16 millimetres, ``transforms.json`` with OpenGL camera-to-world
``transform_matrix`` per frame and the camera's intrinsics, so ``find3d embed-frames --data DIR``
then ``ns-train find-field --data DIR`` train a field on it offline. Unlike ingest-bag's
all-or-nothing writer the folder grows while the robot drives, and it is a complete scene at every
moment: each PNG is written atomically before ``transforms.json`` (rewritten atomically after every
keyframe) lists it, so a node killed at any point leaves a scene of the keyframes recorded so far.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from find3d.errors import InputError
from find3d.fileio import atomic_open, atomic_write_json

_PNG_LEVEL = 1  # as ingest-bag: a third of the default's encoding time, lossless either way
VAL_EVERY = 10  # as ingest-bag: every frame trains, every tenth is also nerfstudio's val / test set


class SceneRecorder:
    """``add(rgb, depth_mm, c2w, camera)`` per keyframe into the scene folder ``out``."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            raise InputError(f"record folder {self.out}: exists and is not an empty folder; pass a new folder "
                             "(each mapping run records its own scene).")
        try:
            for folder in ("images", "depths"):
                (self.out / folder).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"record folder {self.out}: cannot create it ({err.strerror}); choose a writable "
                             "location.") from err
        self.frames: list[dict[str, Any]] = []
        self.camera: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def add(self, rgb: np.ndarray, depth_mm: np.ndarray | None, c2w: np.ndarray, camera: Any,
            stamp_ns: int = 0) -> str:
        """Write one keyframe (``c2w`` OpenGL, ``camera`` an ``Intrinsics``); returns its ``file_path``."""
        name = f"frame_{len(self.frames) + 1:05d}.png"
        self._png(self.out / "images" / name, rgb)
        frame: dict[str, Any] = {"file_path": f"images/{name}",
                                 "transform_matrix": np.asarray(c2w, dtype=np.float64).tolist()}
        if depth_mm is not None:
            self._png(self.out / "depths" / name, np.asarray(depth_mm, dtype=np.uint16))
            frame["depth_file_path"] = f"depths/{name}"
        keys = camera.to_transforms()
        if self.camera is None:
            self.camera = keys
        elif keys != self.camera:  # a camera that changed mid-run: nerfstudio reads per-frame intrinsics
            frame.update(keys)
        self.frames.append({**frame, "stamp_ns": int(stamp_ns)})
        names = [f["file_path"] for f in self.frames]
        atomic_write_json(self.out / "transforms.json",
                          {**self.camera, "frames": self.frames, "train_filenames": names,
                           "val_filenames": names[::VAL_EVERY], "test_filenames": names[::VAL_EVERY]})
        return frame["file_path"]

    @staticmethod
    def _png(path: Path, pixels: np.ndarray) -> None:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="png", compress_level=_PNG_LEVEL)
        with atomic_open(path, "wb") as handle:
            handle.write(buffer.getvalue())
