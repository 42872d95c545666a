"""A worker thread that never queues without bound: one item in hand, at most one waiting.

Sensors keep publishing while a keyframe is embedded (hundreds of milliseconds on a CPU). A queue
would grow without bound whenever embedding is slower than keyframes arrive, and the map would lag
ever further behind the robot; instead ``submit`` replaces the waiting item with the newer one and
counts the older as dropped, so the worker always picks up the newest keyframe next and memory holds
at most two frames, whatever the rates.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class LatestWorker:
    """``process(item)`` on a daemon thread, for the newest submitted item (module docstring)."""

    def __init__(self, process: Callable[[Any], None], on_error: Callable[[Any, BaseException], None],
                 name: str = "find3d-mapping") -> None:
        self.process, self.on_error = process, on_error
        self.submitted = self.done = self.dropped = self.failed = 0
        self._pending: Any | None = None
        self._busy = False
        self._closed = False
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> bool:
        """Hand ``item`` over; False when it replaced a waiting item (that one is dropped, never processed)."""
        with self._wake:
            replaced = self._pending is not None
            self.dropped += replaced
            self.submitted += 1
            self._pending = item
            self._wake.notify()
            return not replaced

    def idle(self) -> bool:
        """Nothing waiting and nothing in hand."""
        with self._wake:
            return self._pending is None and not self._busy

    def wait_idle(self, timeout: float) -> bool:
        with self._wake:
            return self._wake.wait_for(lambda: self._pending is None and not self._busy, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Finish the item in hand, drop the waiting one, stop the thread."""
        with self._wake:
            self._closed = True
            self._pending = None
            self._wake.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._pending is not None or self._closed)
                if self._closed:
                    return
                item, self._pending, self._busy = self._pending, None, True
            try:
                self.process(item)
                failed = False
            except Exception as err:  # one bad frame must not stop the map: report it and go on
                failed = True
                self.on_error(item, err)
            with self._wake:
                self._busy = False
                self.done += not failed
                self.failed += failed
                self._wake.notify_all()
