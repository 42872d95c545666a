"""The output scene, all or nothing: written into a hidden sibling folder and renamed into place at the end.

A rename within one folder is atomic, so ``--out`` either does not exist (the ingest failed or was
killed; its staging folder is removed on any exception) or holds a complete scene whose
``transforms.json`` lists exactly the images and depths beside it. The layout is make-scene's:
``images/frame_00001.png`` RGB, ``depths/frame_00001.png`` uint16 millimetres, ``transforms.json``
with OpenGL camera-to-world ``transform_matrix`` per frame.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from PIL import Image

from find3d.errors import InputError
from find3d.fileio import atomic_write_json

# PNG level 1: a third of the default's encoding time for ~15% larger files; lossless either way.
_PNG_LEVEL = 1


class SceneWriter:
    """``with SceneWriter(out, overwrite) as scene: scene.add_frame(...); scene.finish(camera, extra)``."""

    def __init__(self, out: str | os.PathLike, overwrite: bool = False) -> None:
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise InputError(f"--out {self.out}: is a file; pass a folder path.")
        if self.out.is_dir() and any(self.out.iterdir()):
            if not overwrite:
                raise InputError(f"--out {self.out}: folder is not empty; pass --overwrite or choose a new folder.")
            if not (self.out / "transforms.json").is_file():
                # --overwrite replaces the whole folder, so it must be a scene, not e.g. a home directory.
                raise InputError(f"--out {self.out}: not a scene folder (no transforms.json), so --overwrite "
                                 "will not replace it; choose a new folder.")
        self.stage: Path | None = None

    def __enter__(self) -> SceneWriter:
        parent = self.out.resolve().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.stage = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.ingest-", dir=parent))
            for folder in ("images", "depths"):
                (self.stage / folder).mkdir()
        except OSError as err:
            raise InputError(f"--out {self.out}: cannot create folders ({err.strerror}); choose a writable "
                             "location.") from err
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self.stage is not None:  # not finished: an exception (or a kill signal turned into one)
            shutil.rmtree(self.stage, ignore_errors=True)
            self.stage = None

    def name(self, index: int) -> str:
        return f"frame_{index + 1:05d}.png"

    def write_image(self, name: str, rgb: np.ndarray) -> None:
        assert self.stage is not None
        Image.fromarray(rgb).save(self.stage / "images" / name, compress_level=_PNG_LEVEL)

    def write_depth(self, name: str, depth_mm: np.ndarray) -> None:
        assert self.stage is not None
        Image.fromarray(depth_mm).save(self.stage / "depths" / name, compress_level=_PNG_LEVEL)

    def remove(self, name: str) -> None:
        """Take back a frame's files (its depth never arrived)."""
        assert self.stage is not None
        for folder in ("images", "depths"):
            (self.stage / folder / name).unlink(missing_ok=True)

    def finish(self, frames: list[dict[str, Any]], camera: dict[str, Any], extra: dict[str, Any]) -> Path:
        """Write transforms.json and move the scene into place (replacing an earlier scene there)."""
        assert self.stage is not None
        atomic_write_json(self.stage / "transforms.json", {**camera, "frames": frames, **extra})
        old = None
        if self.out.exists():
            old = self.stage.with_name(self.stage.name + "-old")
            os.replace(self.out, old)
        os.replace(self.stage, self.out)
        self.stage = None
        if old is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(old)
        return self.out
