"""Helpers for the reliability suite: worker and driver processes, logs, invariants.

Worker processes run ``python -m ents worker tests.apps.crash_app:app`` with the database URL
and the side-effect log in their environment; their stderr goes to a file that is printed
when an assertion fails, so a crash test that breaks can be read without re-running it.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ents import App

ROOT = Path(__file__).resolve().parent.parent
APP = "tests.apps.crash_app:app"


def soak_count() -> int:
    """``ENTS_SOAK=N`` turns on the long soak (N seeds per backend)."""
    try:
        return int(os.environ.get("ENTS_SOAK", "0"))
    except ValueError:
        return 0


def db_url(backend: str, tmp_path: Path, request: Any) -> str:
    if backend == "memory":
        pytest.skip("several processes need a database they can share (SQLite file or PostgreSQL)")
    from tests.conftest import _url_for

    return _url_for(backend, tmp_path, request)


class Procs:
    """Child processes of one test: started with logs in ``tmp``, always reaped."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.url = url
        self.tmp = tmp
        self.log = tmp / "effects.log"
        self.all: list[tuple[subprocess.Popen[bytes], Path]] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("ENTS_CRASH", "ENTS_TEST_CRON")}
        env.update(ENTS_TEST_URL=self.url, ENTS_TEST_LOG=str(self.log), PYTHONPATH=str(ROOT))
        env.update(extra)
        return env

    def _spawn(self, argv: list[str], tag: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        err = self.tmp / f"{tag}-{len(self.all)}.stderr"
        with open(err, "wb") as f:
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=f)
        self.all.append((proc, err))
        return proc

    def worker(self, crash: str | None = None, *, cron: bool = True, extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        env = self.env(ENTS_TEST_CRON="1" if cron else "0")
        if crash:
            env["ENTS_CRASH"] = crash
        argv = [sys.executable, "-m", "ents", "--log-level", "WARNING", "worker", APP, *extra]
        return self._spawn(argv, "worker", env)

    def driver(self, *args: str) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "tests.apps.driver", *args]
        return self._spawn(argv, "driver", self.env(ENTS_TEST_CRON="0"))

    def stderr(self) -> str:
        out = []
        for proc, err in self.all:
            text = err.read_text(errors="replace") if err.exists() else ""
            if text.strip():
                out.append(f"--- pid {proc.pid} rc {proc.returncode}\n{text[-4000:]}")
        return "\n".join(out)

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
        """Graceful stop (SIGTERM: running actions finish), then a kill if it hangs."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(60)

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(60)

    def close(self) -> None:
        for proc, _ in self.all:
            if proc.poll() is None:
                proc.kill()
                proc.wait(60)


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def jobs(app: App) -> list[dict[str, Any]]:
    return app.run(lambda ctx: [j.doc() for j in ctx.table("_scheduled_functions")])  # type: ignore[no-any-return]


def states(app: App) -> Counter[str]:
    return Counter(j["state"]["kind"] for j in jobs(app))


def effect_log(path: Path) -> list[tuple[str, str, str]]:
    """``(event, key, pid)`` lines written by actions (``start`` / ``end``)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            out.append((parts[0], parts[1], parts[2]))
    return out


def sqlite_integrity(url: str) -> None:
    """``PRAGMA integrity_check`` (and the quick foreign-key-free index check) is ok."""
    from ents.backends.sqlite import parse_sqlite_url

    path, _ = parse_sqlite_url(url)
    assert path is not None
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
