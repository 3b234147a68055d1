"""Testing helpers: a fake clock that moves only when told.

    clock = FakeClock()
    app = App(schema, "sqlite://", clock=clock)
    app.run_mutation(create_answer, {"question": "why?"})
    clock.advance(5000)
    app.finish_in_progress_scheduled_functions()

With a FakeClock nothing runs in the background: time moves on ``advance`` and jobs run
in ``app.finish_in_progress_scheduled_functions()`` / ``app.finish_all_scheduled_functions()``.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from .clock import ManualClock
from .errors import ValidationError
from .values import float_of, show

__all__ = ["FakeClock"]

DEFAULT_START = 1_767_225_600_000  # 2026-01-01T00:00:00Z


class FakeClock(ManualClock):
    """A clock for tests, starting at ``start`` (ms since the epoch, or an aware datetime)."""

    def __init__(self, start: Any = DEFAULT_START) -> None:
        super().__init__(_ms(start, "FakeClock(start=...)"))

    def advance(self, delta: Any) -> float:
        """Move time forward by ``delta`` ms (or a timedelta); returns the new time."""
        if isinstance(delta, timedelta):
            ms = delta.total_seconds() * 1000
        elif isinstance(delta, (int, float)) and not isinstance(delta, bool):
            ms = _finite(delta, "advance()")
        else:
            raise ValidationError(f"advance() takes milliseconds or a timedelta, got {show(delta)}")
        if ms < 0:
            raise ValidationError(f"A FakeClock only moves forward; got advance({show(delta)})")
        self.set(self.now() + ms)
        return self.now()

    def set_time(self, when: Any) -> None:
        """Jump to ``when`` (ms or aware datetime); it must not be in the past."""
        ms = _ms(when, "set_time()")
        if ms < self.now():
            raise ValidationError("A FakeClock only moves forward")
        self.set(ms)


def _finite(value: float, what: str) -> float:
    """``value`` as a float; NaN, infinities and ints too large for a float are refused."""
    ms = float_of(value)
    if ms is None or not math.isfinite(ms):
        raise ValidationError(f"{what} takes a finite number of milliseconds, got {show(value)}")
    return ms


def _ms(value: Any, what: str) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValidationError(f"{what} needs an aware datetime")
        return value.timestamp() * 1000
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _finite(value, what)
    raise ValidationError(f"{what} takes milliseconds since the epoch or an aware datetime, got {show(value)}")
