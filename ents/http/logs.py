"""A function's log lines: what it logs through :mod:`logging` during one HTTP call.

Convex hands a function's ``console.log`` lines to the caller as ``logLines``, each
``"[LEVEL] message"``; ``ConvexHttpClient`` prints them as ``[CONVEX Q(name)] [LEVEL] ...``.
The Python equivalent: every log record the function (or code it calls) creates while the
call runs, in any logger but ents' own, that its logger's level lets through (the root
logger's WARNING by default). The records are caught where they are made, in the call's
context (the call's threads and tasks inherit it), so concurrent calls never see each
other's lines; handlers still get every record as before.

A call keeps at most ``MAX_LINES`` lines of at most ``MAX_LINE_CHARS`` characters each;
exceptions' tracebacks are never included.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

MAX_LINES = 256
MAX_LINE_CHARS = 8192

# Convex's level names (console.warn is WARN there).
_LEVELS = {"WARNING": "WARN", "CRITICAL": "ERROR", "FATAL": "ERROR"}

_sink: contextvars.ContextVar[LogLines | None] = contextvars.ContextVar("ents_http_log_lines", default=None)
_install_lock = threading.Lock()
_installed = False


class LogLines:
    """The lines of one call."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.dropped = 0

    def add(self, record: logging.LogRecord) -> None:
        if len(self.lines) >= MAX_LINES:
            self.dropped += 1
            return
        try:
            message = record.getMessage()
        except Exception:  # bad %-arguments: logging itself reports those to stderr
            message = str(record.msg)
        if len(message) > MAX_LINE_CHARS:
            message = message[: MAX_LINE_CHARS - 3] + "..."
        level = _LEVELS.get(record.levelname, record.levelname)
        self.lines.append(f"[{level}] {message}")

    def result(self) -> list[str]:
        if self.dropped:
            return [*self.lines, f"[WARN] {self.dropped} more log lines were left out"]
        return list(self.lines)


def _install() -> None:
    """Wrap the log record factory once per process (it sees every record that is made)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            sink = _sink.get()
            if sink is not None and not (record.name == "ents" or record.name.startswith("ents.")):
                sink.add(record)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True


@contextmanager
def capture() -> Iterator[LogLines]:
    """Collect the log lines made in this context (and the threads and tasks it starts)."""
    _install()
    lines = LogLines()
    token = _sink.set(lines)
    try:
        yield lines
    finally:
        _sink.reset(token)


__all__ = ["MAX_LINES", "MAX_LINE_CHARS", "LogLines", "capture"]
