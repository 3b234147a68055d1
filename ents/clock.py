"""Time, from one injectable clock per App.

Everything that reads the time (creation times, due times, leases, crons, purges) asks
the App's clock, so tests can replace it with :class:`ents.testing.FakeClock` and step
through days of schedule without sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Clock:
    """Milliseconds since the Unix epoch."""

    def now(self) -> float:
        return time.time() * 1000

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Be told when time jumps (fake clocks); returns an unsubscribe function."""
        return lambda: None

    @property
    def is_real(self) -> bool:
        return True


class SystemClock(Clock):
    """The wall clock."""


class ManualClock(Clock):
    """A clock that moves only when told (base of :class:`ents.testing.FakeClock`)."""

    def __init__(self, start: float) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[], None]] = []

    @property
    def is_real(self) -> bool:
        return False

    def now(self) -> float:
        return self._now

    def set(self, ms: float) -> None:
        with self._lock:
            self._now = float(ms)
            subs = list(self._subscribers)
        for cb in subs:
            cb()

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe
