"""Wall-clock probes shared by the benchmarks: median time, growth exponent (run the scripts from bench/)."""

from __future__ import annotations

import math
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


def growth_exponent(small: float, large: float, ratio: float) -> float:
    """The slope of log(time) against log(size) from a run of ``small`` seconds to one of ``large`` seconds
    on a ``ratio`` times larger input (1: linear); 0 when the sizes do not differ."""
    if ratio <= 1:
        return 0.0
    return math.log(max(large, 1e-6) / max(small, 1e-6)) / math.log(ratio)
