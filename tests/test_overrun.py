"""The suite's own guarantee: a test that runs past its timeout fails (tests/overrun.py).

Each case runs a small test file in a fresh pytest process with a 2 s timeout (the slow parts sleep a minute: only the
alarm ends them early) and checks
its outcome. Without the plugin the first three report "passed": pytest-timeout's failure,
raised from a signal handler, lands in code that drops it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(180)

CASES = '''
import gc
import time

from hypothesis import given, settings, strategies as st


slept = []


def _slow_gc_callback(phase, info):
    if phase == "start" and not slept:
        slept.append(True)
        time.sleep(60)  # the alarm goes off in here, during a garbage collection


@settings(max_examples=2, deadline=None, database=None)
@given(st.integers())
def test_overruns_in_a_gc_callback_while_hypothesis_runs(x):
    gc.callbacks.append(_slow_gc_callback)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(_slow_gc_callback)


def test_overruns_in_a_finalizer():
    class Slow:
        def __del__(self):
            time.sleep(60)

    Slow()


def test_overruns_in_code_that_catches_everything():
    try:
        time.sleep(60)
    except BaseException:
        pass


def test_overruns_plainly():
    time.sleep(60)


def test_in_time():
    pass
'''


def _run(pytester: Any, monkeypatch: Any, source: str, *args: str) -> Any:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(test_cases=source)
    return pytester.runpytest_subprocess(
        "-p", "tests.overrun", "-p", "no:cacheprovider", "--timeout", "2", "-o", "overrun_grace=30", "-rA", *args, timeout=150
    )


def test_a_test_that_overruns_fails_wherever_the_timeout_lands(pytester: Any, monkeypatch: Any) -> None:
    result = _run(pytester, monkeypatch, CASES)
    outcomes = {
        name.split(" - ", 1)[0]: outcome
        for outcome, name in (line.split(" ", 1) for line in result.outlines if line.startswith(("PASSED ", "FAILED ")))
    }
    assert outcomes == {
        "test_cases.py::test_overruns_in_a_gc_callback_while_hypothesis_runs": "FAILED",
        "test_cases.py::test_overruns_in_a_finalizer": "FAILED",
        "test_cases.py::test_overruns_in_code_that_catches_everything": "FAILED",
        "test_cases.py::test_overruns_plainly": "FAILED",
        "test_cases.py::test_in_time": "PASSED",
    }, result.stdout.str()
    result.stdout.fnmatch_lines(["*ran past its 2s timeout*raised at*in _slow_gc_callback was swallowed*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_a_test_that_keeps_swallowing_its_timeout_ends_the_run(pytester: Any, monkeypatch: Any) -> None:
    source = (
        "import time\n\n"
        "def test_never_ends():\n"
        "    while True:\n"
        "        try:\n"
        "            time.sleep(60)\n"
        "        except BaseException:\n"
        "            pass\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(test_cases=source)
    result = pytester.runpytest_subprocess(
        "-p", "tests.overrun", "-p", "no:cacheprovider", "--timeout", "2", "-o", "overrun_grace=2", timeout=150
    )
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*Timeout*"])
    assert "passed" not in result.stdout.str()
