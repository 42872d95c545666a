"""Wall-clock probe shared by the benchmarks (run the scripts from bench/)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(step: Callable[[], object], repeats: int = 5) -> float:
    """Median wall time of ``repeats`` calls of ``step``, after one warm-up call (first-call allocations,
    kernel selection, page faults)."""
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
