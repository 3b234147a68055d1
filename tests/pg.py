"""PostgreSQL for tests: use $ENTS_TEST_PG_URL, a server on 127.0.0.1:5432, or start one.

Each test gets a fresh schema (dropped afterwards), so tests never see each other's data,
also when several test processes (pytest-xdist) share the server. When no server can be
found or started, PostgreSQL tests are skipped with the reason (they fail instead when
``ENTS_REQUIRE_POSTGRES`` is set).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from typing import Any
from urllib.parse import quote

import pytest

_server_url: str | None = None
_server_error: str | None = None
#: set by share_server when there is no server: the reason, for the processes it starts
UNAVAILABLE_VAR = "ENTS_TEST_PG_UNAVAILABLE"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _try_connect(url: str) -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'ents[postgres]')"
    try:
        with psycopg.connect(url, connect_timeout=30) as conn:
            conn.execute("SELECT 1")
        return None
    except Exception as exc:  # pragma: no cover - depends on the machine
        return f"cannot connect to {url}: {exc}"


def _binaries() -> tuple[str | None, str | None]:
    initdb = shutil.which("initdb")
    pg_ctl = shutil.which("pg_ctl")
    if (not initdb or not pg_ctl) and os.path.isdir("/usr/lib/postgresql"):
        for candidate in sorted(os.listdir("/usr/lib/postgresql"), reverse=True):
            bindir = f"/usr/lib/postgresql/{candidate}/bin"
            if os.path.exists(f"{bindir}/initdb"):
                return f"{bindir}/initdb", f"{bindir}/pg_ctl"
    return initdb, pg_ctl


class PrivateServer:
    """A throwaway PostgreSQL server in a temp dir, on a free port (can be restarted)."""

    def __init__(self) -> None:
        initdb, pg_ctl = _binaries()
        if not initdb or not pg_ctl:
            raise RuntimeError("no initdb/pg_ctl binaries to start a PostgreSQL server")
        self.pg_ctl = pg_ctl
        self.tmp = tempfile.mkdtemp(prefix="ents-pg-")
        self.data = os.path.join(self.tmp, "data")
        self.run_as: list[str] = []
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: run it as the 'postgres' user.
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no 'postgres' user to run a server") from None
            os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
            self.run_as = ["runuser", "-u", "postgres", "--"]
        self.port = _free_port()
        subprocess.run([*self.run_as, initdb, "-D", self.data, "-A", "trust", "-U", "postgres"], check=True, capture_output=True, timeout=180)
        self.start()
        import atexit

        atexit.register(self.stop)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run([*self.run_as, self.pg_ctl, "-D", self.data, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.tmp} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._ctl("-o", opts, "-l", os.path.join(self.tmp, "log"), "-w", "start")

    def restart(self) -> None:
        self._ctl("-m", "fast", "-w", "stop")
        self.start()

    def stop(self) -> None:
        try:
            self._ctl("-m", "immediate", "-w", "stop")
        except Exception:
            pass


def _start_throwaway() -> tuple[str | None, str | None]:
    try:
        server = PrivateServer()
    except Exception as exc:  # pragma: no cover - depends on the machine
        return None, f"no PostgreSQL server on 127.0.0.1:5432 and none could be started: {exc}"
    return server.url, None


def _resolve() -> tuple[str | None, str | None]:
    """Find (or start) a server once per process: its URL, or why there is none."""
    global _server_url, _server_error
    if _server_url is None and _server_error is None:
        _server_error = os.environ.get(UNAVAILABLE_VAR) or None
        url = os.environ.get("ENTS_TEST_PG_URL")
        if _server_error:
            pass  # the run's first process looked already (see share_server)
        elif url:
            _server_error = _try_connect(url)
            _server_url = url if _server_error is None else None
        elif _port_open("127.0.0.1", 5432) and _try_connect("postgresql://postgres@127.0.0.1:5432/postgres") is None:
            _server_url = "postgresql://postgres@127.0.0.1:5432/postgres"
        else:
            _server_url, _server_error = _start_throwaway()
            if _server_url is not None:
                _server_error = _try_connect(_server_url)
                if _server_error:
                    _server_url = None
    return _server_url, _server_error


def share_server() -> None:
    """Find (or start) the server in this process, for the processes it starts next.

    Run by the pytest-xdist controller before it starts its workers: they inherit the URL
    (or the reason there is none) through the environment, so a throwaway server is
    started once per run and stopped when the controller exits, after every worker.
    """
    url, error = _resolve()
    if url is not None:
        os.environ["ENTS_TEST_PG_URL"] = url
    else:
        os.environ[UNAVAILABLE_VAR] = error or "unknown reason"


def server_url() -> str:
    """The URL of a usable server, or skip the test saying why there is none (fail it
    when ``ENTS_REQUIRE_POSTGRES`` is set, as in CI)."""
    url, error = _resolve()
    if url is None:
        if os.environ.get("ENTS_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL required but unavailable: {error}")
        pytest.skip(f"PostgreSQL unavailable: {error}")
    return url


def fresh_schema_url(request: Any) -> str:
    """A URL whose search_path is a new, empty schema dropped after the test."""
    base = server_url()
    import psycopg

    schema = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')

    def drop() -> None:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    request.addfinalizer(drop)
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}"


def wait_for(predicate: Any, timeout: float = 60.0) -> bool:
    """Poll ``predicate`` until it is true; False if it is still false after ``timeout``
    seconds. Callers assert on the result with a message saying what did not happen: the
    timeout only bounds a test that is broken, so it is generous (a loaded machine is slow)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())
