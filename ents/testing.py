"""Testing helpers: a fake clock that moves only when told, and ``test_app`` for a
module-level App.

    clock = FakeClock()
    app = App(schema, "sqlite://", clock=clock)
    app.run_mutation(create_answer, {"question": "why?"})
    clock.advance(5000)
    app.finish_in_progress_scheduled_functions()

With a FakeClock nothing runs in the background: time moves on ``advance`` and jobs run
in ``app.finish_in_progress_scheduled_functions()`` / ``app.finish_all_scheduled_functions()``.

An App made at import time (``app = App(schema, url)`` and decorators, as in the README) is
tested through a copy on a fresh database: ``t = test_app(app)`` has the same schema,
functions, crons and rules, an in-memory database and a FakeClock, and takes calls by
function object or by name (``t.run_mutation(create_user, {...})``).
"""

from __future__ import annotations

import copy
import math
from datetime import datetime, timedelta
from typing import Any

from .app import App
from .clock import Clock, ManualClock
from .errors import ConfigurationError, ValidationError
from .functions import FunctionDef, Registry
from .values import float_of, show

__all__ = ["FakeClock", "test_app"]

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


# -- a module-level App, tested on a fresh database ---------------------------------------


class _CopiedRegistry(Registry):
    """The functions of a :func:`test_app` copy: a function object of the original App
    resolves to its twin here (same name, same handler)."""

    def resolve(self, ref: Any) -> FunctionDef:
        if isinstance(ref, FunctionDef):
            twin = self.by_name.get(ref.name)
            if twin is not None and twin.handler is ref.handler:
                return twin
        return super().resolve(ref)


def test_app(app: App, clock: Clock | None = None, url: str | None = None, **options: Any) -> App:
    """A copy of ``app`` for a test: the same schema, functions, crons and rules, on a fresh
    in-memory database (or ``url``) with ``clock`` (a new :class:`FakeClock` by default).

    Calls by function object or by name work on the copy: ``test_app(app).run_mutation(
    create_user, {...})`` runs the copy's ``create_user``. Functions registered on ``app``
    after the copy was made are not on it. ``options`` go to ``App(...)`` (``storage_dir``...).
    Close the copy when done (``with test_app(app) as t: ...``).
    """
    if not isinstance(app, App):
        raise ConfigurationError(f"test_app() takes an ents App, got {type(app).__name__}")
    options.setdefault("crons", app.crons)
    options.setdefault("rules", app.rules)
    options.setdefault("scheduled_delete_batch", app.scheduled_delete_batch)
    twin = App(app.schema, url or "sqlite://", clock=clock if clock is not None else FakeClock(), **options)
    registry = _CopiedRegistry()
    # The copy's own built-in functions stay: they are bound to its database.
    registry.by_name.update(twin.functions.by_name)
    for name, fdef in app.functions.by_name.items():
        if name not in registry.by_name:
            copied = copy.copy(fdef)
            copied.app = twin
            registry.by_name[name] = copied
    twin.functions = registry
    return twin


# pytest would take a function named test_* imported into a test module for a test.
test_app.__test__ = False  # type: ignore[attr-defined]
