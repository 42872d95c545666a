"""File helpers shared by every stage: atomic writes and validated reads.

Checkpoints, exports and caches are written to a temporary file in the target's folder and moved
into place with ``os.replace`` so that a kill never leaves a half-written file behind. Files that are
only valid together (a field export) are written into a staging folder that replaces the old folder
in one rename (``atomic_folder``), so a kill never leaves a mix of old and new files either.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from find3d.errors import DataError, InputError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", sync: bool = True) -> Iterator[BinaryIO]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success only. ``sync``
    False skips the fsync before the rename, for a writer that syncs later, before anything relies on the
    file (``sync_files``): a kill still leaves the old file or the new one, a power cut may lose the new."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the permissions open() would
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, carry: Callable[[str], bool] | None = None) -> Iterator[Path]:
    """Write a whole folder all-or-nothing: yield an empty staging folder ``.NAME.tmp-PID`` beside ``path``,
    and when the block ends without an error, swap it in for ``path`` in one rename.

    Until then ``path`` is untouched, so a reader sees the old folder whole until the new one is complete,
    and a kill at any moment leaves the one or the other (plus a hidden staging folder that the next call
    beside ``path`` removes: its name never is ``path``). Entries of the old folder for which
    ``carry(name)`` holds are hard-linked into the new one before the swap (files the writer does not own,
    e.g. query results kept beside an export).
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(path)
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        if path.is_dir():
            for entry in path.iterdir():
                if carry is not None and carry(entry.name):
                    link_into(entry, staging / entry.name)
        _swap_in(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # after a swap: the old folder


def _remove_stale_staging(path: Path) -> None:
    """Remove the staging folders that killed runs left beside ``path`` (a live writer's are left alone);
    an old folder moved aside by an interrupted two-rename swap is moved back if ``path`` is missing."""
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*-*"):
        kind, _, pid = leftover.name[len(path.name) + 2:].partition("-")
        if kind not in ("tmp", "old") or not pid.isdigit() or (int(pid) != os.getpid() and _alive(int(pid))):
            continue
        if kind == "old" and not path.exists():
            os.rename(leftover, path)
        else:
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def link_into(source: Path, target: Path) -> None:
    """Hard-link a file or a folder tree at ``target`` (no data is copied; ``source`` keeps its own links);
    copied where the file system has no hard links."""
    if source.is_dir() and not source.is_symlink():
        shutil.copytree(source, target, symlinks=True, copy_function=_link)
    else:
        _link(source, target)


def _link(source: str | os.PathLike, target: str | os.PathLike) -> None:
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:  # a file system without hard links
        shutil.copy2(source, target, follow_symlinks=False)


def _swap_in(staging: Path, path: Path) -> None:
    """Put ``staging`` at ``path``: one rename for a new path, else an atomic exchange of the two (Linux
    ``renameat2(RENAME_EXCHANGE)``), after which ``staging`` holds the old folder. Where the exchange is not
    supported, two renames with the old folder at ``.NAME.old-PID`` in between (restored by the next call)."""
    if not path.exists():
        try:
            os.rename(staging, path)
            return
        except OSError:  # created meanwhile by another writer: exchange with it
            pass
    try:
        _exchange(staging, path)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise
        aside = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.rename(path, aside)
        os.rename(staging, path)
        shutil.rmtree(aside, ignore_errors=True)


def _exchange(first: Path, second: Path) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_cwd, exchange = -100, 2  # AT_FDCWD, RENAME_EXCHANGE
    if renameat2(at_cwd, os.fsencode(first), at_cwd, os.fsencode(second), exchange) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(first), None, str(second))


def sync_files(paths: Iterable[str | os.PathLike]) -> None:
    """fsync each file (cheap for one already on disk): what ``atomic_open(sync=False)`` deferred."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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
        if not np.isfinite(array).all():
            bad = int(np.count_nonzero(~np.isfinite(array)))
            raise InputError(f"{name}: {bad} of {array.size} values are NaN or infinite; pass finite values in "
                             "[0, 1] (e.g. np.nan_to_num(image) or fill the holes first).")
        if array.min() < 0.0 or array.max() > 1.0:
            raise InputError(f"{name}: float images must lie in [0, 1]; got [{array.min():.3g}, {array.max():.3g}].")
        return (array * 255.0 + 0.5).astype(np.uint8)
    raise InputError(f"{name}: unsupported dtype {array.dtype}; use uint8 or float in [0, 1].")
