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
    return statistics.median(_seconds(step) for _ in range(repeats))


def ratio_to_floor(step: Callable[[], object], floor: Callable[[], object], rounds: int = 7
                   ) -> tuple[float, float, float]:
    """(median seconds of ``step``, median seconds of ``floor``, median of the per-round ratios), the two
    timed alternately, each round's ``step`` against the faster of the ``floor`` calls around it. On a
    shared machine memory bandwidth drifts from one second to the next; timed apart, a ratio measured the
    neighbours (the 10M per-point query read 1.61x its floor timed apart, 1.06x timed alternately)."""
    step(), floor()
    steps, floors, ratios = [], [], []
    before = _seconds(floor)
    for _ in range(rounds):
        steps.append(_seconds(step))
        after = _seconds(floor)
        floors.append(after)
        ratios.append(steps[-1] / min(before, after))
        before = after
    return statistics.median(steps), statistics.median(floors), statistics.median(ratios)


def _seconds(step: Callable[[], object]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def growth_exponent(small: float, large: float, ratio: float) -> float:
    """The slope of log(time) against log(size) from a run of ``small`` seconds to one of ``large`` seconds
    on a ``ratio`` times larger input (1: linear); 0 when the sizes do not differ."""
    if ratio <= 1:
        return 0.0
    return math.log(max(large, 1e-6) / max(small, 1e-6)) / math.log(ratio)
