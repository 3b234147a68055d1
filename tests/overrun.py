"""A pytest plugin: a test that runs past its timeout fails, whatever swallowed the timeout.

pytest-timeout's default ("signal") method raises its failure from a SIGALRM handler, and
Python runs that handler at the next bytecode of whatever Python code runs then. When that
code is a garbage-collection callback (hypothesis installs one to time its GC pauses), a
``__del__`` or weakref callback, the exception is printed as "Exception ignored in ..." and
dropped; code that catches ``BaseException`` drops it too. The test goes on, and may pass.

This plugin takes over pytest-timeout's timer (its ``pytest_timeout_set_timer`` and
``pytest_timeout_cancel_timer`` hooks) and keeps its settings (the ``timeout`` ini value,
``--timeout``, ``@pytest.mark.timeout``). At the deadline it remembers that the test overran
and where it was, prints the threads' stacks and raises the usual failure; while the test
goes on it raises again every ``overrun_reraise`` seconds; every report of that test that
is not already a failure becomes one ("ran past its timeout ..."). If the test is still
running ``overrun_grace`` seconds after its deadline (the failures keep being swallowed, or
the main thread never returns to Python code), a watchdog thread prints the stacks and ends
the process with status 1, as pytest-timeout's "thread" method does: a run never hangs, and
under pytest-xdist the worker's crash fails that test.

The "thread" method, and tests that run outside the main thread, are left to pytest-timeout.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_timeout

RERAISE_DEFAULT = "5"
GRACE_DEFAULT = "60"


@dataclass
class _Overrun:
    timeout: float
    fired_at: list[str] = field(default_factory=list)  # where each alarm found the test
    reported: bool = False


_OVERRUN = pytest.StashKey[_Overrun]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "overrun_reraise",
        "seconds between the failures raised again into a test that swallowed its timeout",
        default=RERAISE_DEFAULT,
    )
    parser.addini(
        "overrun_grace",
        "seconds a test may go on past its timeout before the process is ended",
        default=GRACE_DEFAULT,
    )


def _where(frame: Any) -> str:
    if frame is None:
        return "outside Python code"
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # pytest-timeout declares these hooks
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    if settings.method != "signal" or threading.current_thread() is not threading.main_thread():
        return None  # pytest-timeout's own timer
    timeout = float(settings.timeout)
    reraise = float(item.config.getini("overrun_reraise"))
    grace = float(item.config.getini("overrun_grace"))
    state = _Overrun(timeout)
    item.stash[_OVERRUN] = state

    def on_alarm(signum: int, frame: Any) -> None:
        __tracebackhide__ = True
        state.fired_at.append(_where(frame))
        if len(state.fired_at) == 1:
            terminal = item.config.get_terminal_writer()
            terminal.sep("+", title=f"Timeout: {item.nodeid} ran past {timeout:g}s")
            pytest_timeout.dump_stacks(terminal)
        pytest.fail(f"Timeout: the test ran past its {timeout:g}s timeout")

    def watchdog() -> None:
        pytest_timeout.timeout_timer(item, settings)  # prints the captured output and stacks, then exits
        os._exit(1)  # (it returns only under a debugger)

    dog = threading.Timer(timeout + grace, watchdog)
    dog.daemon = True
    dog.name = f"overrun watchdog {item.nodeid}"

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        dog.cancel()

    item.cancel_timeout = cancel  # type: ignore[attr-defined] - pytest-timeout's convention
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout, reraise)
    dog.start()
    return True


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> bool | None:
    cancel = getattr(item, "cancel_timeout", None)
    if cancel is not None:
        cancel()
    return True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    state = item.stash.get(_OVERRUN, None)
    if state is None or not state.fired_at or state.reported:
        return report
    state.reported = True
    # The phase the alarm interrupted is over: no more failures raised into what follows
    # (a teardown that cleans up after the timeout); the watchdog still bounds it.
    signal.setitimer(signal.ITIMER_REAL, 0)
    if not report.failed:
        report.outcome = "failed"
        report.longrepr = (
            f"Timeout: the test ran past its {state.timeout:g}s timeout, and the failure raised at "
            f"{state.fired_at[0]} was swallowed there (raised {len(state.fired_at)} time(s) in all)"
        )
    return report
