"""Console noise of the libraries find3d calls, silenced where find3d calls them.

Only output that is not the user's business goes: pybullet's build banner (printed by its C module
on import), deprecation notices nerfstudio triggers inside torch (``torch.cuda.amp`` FutureWarnings,
tensor-indexing UserWarnings, one per camera call site), and the model-loading progress bar of
transformers. Every filter names the library module the warning comes from, so the same warning
raised by find3d's own code, or any warning not listed here, still shows.

``filter_library_warnings`` runs at interpreter start (from the torchvision start-up hook, see
``find3d.compat.torchvision_ops``), because nerfstudio emits its import-time FutureWarnings in every
``ns-*`` command before it loads find3d's plugin.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import warnings
from collections.abc import Iterator
from types import ModuleType

#: (category, message regex, module regex) of warnings that only a library's maintainers can act on
LIBRARY_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    (FutureWarning, r"`torch\.cuda\.amp\.\w+\(args\.\.\.\)` is deprecated", r"nerfstudio\."),
    (UserWarning, r"Using a non-tuple sequence for multidimensional indexing is deprecated", r"nerfstudio\."),
    (UserWarning, r"Converting a tensor with requires_grad=True to a scalar", r"nerfstudio\."),
    (UserWarning, r"To copy construct from a tensor, it is recommended", r"nerfstudio\."),
)


def filter_library_warnings() -> None:
    """Install the ``LIBRARY_WARNINGS`` filters (idempotent: ``warnings`` drops duplicate filters)."""
    for category, message, module in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


@contextlib.contextmanager
def c_output_silenced() -> Iterator[None]:
    """Send what C code prints (file descriptors 1 and 2) to /dev/null inside the block.

    C's stdio may buffer output to a pipe until exit, so it is flushed inside the block: a banner goes
    to /dev/null now instead of to the terminal when the process ends. Python exceptions raised in the
    block still reach the user: they are printed after it.
    """
    import ctypes

    sys.stdout.flush()
    sys.stderr.flush()
    libc = ctypes.CDLL(None)
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    try:
        with open(os.devnull, "wb") as null:
            for fd in saved:
                os.dup2(null.fileno(), fd)
            try:
                yield
            finally:
                libc.fflush(None)
                for fd, copy in saved.items():
                    os.dup2(copy, fd)
    finally:
        for copy in saved.values():
            os.close(copy)


def import_quietly(name: str) -> ModuleType:
    """``importlib.import_module(name)`` without the banner its C extension prints (pybullet)."""
    if name in sys.modules:
        return sys.modules[name]
    with c_output_silenced():
        return importlib.import_module(name)


@contextlib.contextmanager
def no_transformers_progress() -> Iterator[None]:
    """Hide transformers' per-load "Loading weights" progress bar (a packaged model loads in < 1 s)."""
    from transformers.utils import logging

    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's share), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def loader_workers(requested: int) -> int:
    """Data-loader worker processes: ``requested``, capped to the usable cores (more only queue and stall)."""
    return max(0, min(requested, usable_cpus()))
