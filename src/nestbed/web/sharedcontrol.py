"""One cluster control shared by the web view's threads (the feed's ticks, node requests).

It is made when first needed and kept. When it breaks as a whole it is retired: no thread is handed it again, and
it is closed by the last thread still using it (closing it under a request in flight would fail that request too).
A new one is made no sooner than `RETRY_SECONDS` after the last one broke or could not be made, so a cluster that
cannot be reached is not connected to again on every tick.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from nestbed.errors import ExperimentError

RETRY_SECONDS = 10.0


@dataclass(eq=False)
class _Held:
    control: Any
    users: int = 0
    retired: bool = False


class SharedControl:
    def __init__(self, make: Callable[[], Any], clock: Callable[[], float] = time.monotonic,
                 retry_seconds: float = RETRY_SECONDS):
        self._make = make
        self._clock = clock
        self._retry_seconds = retry_seconds
        self._lock = threading.Lock()
        self._held: _Held | None = None
        self._not_before: float | None = None     # no new control before this clock time
        self._why = ""                            # why the last one broke or could not be made
        self._closed = False
        self.made = 0                             # controls made so far

    @contextmanager
    def using(self) -> Iterator[Any]:
        """The control, kept open for as long as the caller is inside this block."""
        held = self._take()
        try:
            yield held.control
        finally:
            self._leave(held)

    def broken(self, control: Any, why: str) -> None:
        """`control` failed as a whole: retire it (closed when its last user leaves) and wait before the next."""
        with self._lock:
            if self._held is None or self._held.control is not control:
                return                            # retired already, by another thread
            self._held.retired = True
            self._held = None
            self._wait(why)

    def close(self) -> None:
        """No control from now on; the current one is closed now, or by its last user."""
        with self._lock:
            self._closed = True
            held, self._held = self._held, None
            if held is None:
                return
            held.retired = True
            closing = held.users == 0
        if closing:
            held.control.close()

    def _wait(self, why: str) -> None:
        self._not_before = self._clock() + self._retry_seconds
        self._why = why

    def _take(self) -> _Held:
        with self._lock:
            if self._closed:
                raise ExperimentError("the web view is stopping: the cluster's control is closed")
            if self._held is None:
                now = self._clock()
                if self._not_before is not None and now < self._not_before:
                    raise ExperimentError(f"the cluster's control failed ({self._why}); connecting again in "
                                          f"{math.ceil(self._not_before - now)} s")
                try:
                    control = self._make()        # under the lock: the other threads would wait for it anyway
                except Exception as error:
                    self._wait(str(error))
                    raise
                self._held = _Held(control)
                self.made += 1
            self._held.users += 1
            return self._held

    def _leave(self, held: _Held) -> None:
        with self._lock:
            held.users -= 1
            closing = held.retired and held.users == 0
        if closing:
            held.control.close()
