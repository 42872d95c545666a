"""Peak-memory probe shared by the benchmarks (Linux /proc; run the scripts from bench/)."""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def status_mib(key: str) -> float:
    """A ``/proc/self/status`` size field (``VmRSS``, ``VmHWM``) in MiB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def peak_extra_mib(step: Callable[[], object]) -> float:
    """Extra resident memory at the peak of ``step``: VmHWM is reset to the current RSS first."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back so earlier runs do not hide this one
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    before = status_mib("VmRSS")
    step()
    return status_mib("VmHWM") - before
