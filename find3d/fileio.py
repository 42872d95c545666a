"""File helpers shared by every stage: atomic writes and validated reads.

Checkpoints, exports and caches are written to a temporary file in the target's folder and moved
into place with ``os.replace`` so that a kill never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from find3d.errors import DataError, InputError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[BinaryIO]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the permissions open() would
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_json(path: str | os.PathLike, payload: Any, indent: int | None = 2) -> None:
    with atomic_open(path, "w") as handle:
        json.dump(payload, handle, indent=indent)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; missing or malformed files raise ``DataError`` naming the file and position."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the path (or regenerate the dataset).")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
            "re-download or regenerate the file."
        ) from err


def read_npz(path: str | os.PathLike, keys: tuple[str, ...], fix: str) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of an ``.npz`` file; a missing, unreadable or incomplete file raises ``DataError``
    naming the file and ``fix``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; {fix}.")
    try:
        with np.load(path) as data:
            return {key: np.asarray(data[key]) for key in keys}
    except (OSError, KeyError, ValueError, EOFError) as err:
        raise DataError(f"{path}: unreadable or incomplete ({type(err).__name__}: {err}); {fix}.") from err


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8`` RGB; unreadable files raise ``InputError``."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"image {path}: file not found; check the path.")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"image {path}: cannot be decoded as an image ({err}); use a PNG or JPEG file.") from err


def as_rgb_array(image: Any, name: str = "image") -> np.ndarray:
    """Validate an in-memory image and return it as ``(H, W, 3) uint8``.

    Accepts a path, a PIL image, or an array/tensor shaped ``(H, W, 3)`` (uint8 or float in [0, 1]).
    """
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL image
        return np.asarray(image.convert("RGB"))
    if hasattr(image, "detach"):  # torch tensor
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.ndim == 2:
        raise InputError(f"{name}: got a single-channel {array.shape} array; pass an (H, W, 3) RGB image.")
    if array.ndim != 3 or array.shape[-1] != 3:
        raise InputError(
            f"{name}: expected an (H, W, 3) RGB image, got shape {tuple(array.shape)}; "
            "drop the alpha channel or move channels last."
        )
    if array.shape[0] < 8 or array.shape[1] < 8:
        raise InputError(f"{name}: image of {array.shape[1]}x{array.shape[0]} px is too small (min 8x8).")
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        if array.min() < 0.0 or array.max() > 1.0:
            raise InputError(f"{name}: float images must lie in [0, 1]; got [{array.min():.3g}, {array.max():.3g}].")
        return (array * 255.0 + 0.5).astype(np.uint8)
    raise InputError(f"{name}: unsupported dtype {array.dtype}; use uint8 or float in [0, 1].")
