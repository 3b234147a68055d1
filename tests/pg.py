"""PostgreSQL for tests: use $ENTS_TEST_PG_URL, a server on 127.0.0.1:5432, or start one.

Each test gets a fresh schema (dropped afterwards), so tests never see each other's data.
When no server can be found or started, PostgreSQL tests are skipped with the reason.
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
_server_proc_dir: str | None = None


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
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
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return None
    except Exception as exc:  # pragma: no cover - depends on the machine
        return f"cannot connect to {url}: {exc}"


def _start_throwaway() -> tuple[str | None, str | None]:
    initdb = shutil.which("initdb")
    pg_ctl = shutil.which("pg_ctl")
    if not initdb or not pg_ctl:
        for candidate in sorted(os.listdir("/usr/lib/postgresql"), reverse=True) if os.path.isdir("/usr/lib/postgresql") else []:
            bindir = f"/usr/lib/postgresql/{candidate}/bin"
            if os.path.exists(f"{bindir}/initdb"):
                initdb, pg_ctl = f"{bindir}/initdb", f"{bindir}/pg_ctl"
                break
    if not initdb or not pg_ctl:
        return None, "no PostgreSQL server on 127.0.0.1:5432 and no initdb/pg_ctl binaries to start one"
    global _server_proc_dir
    tmp = tempfile.mkdtemp(prefix="ents-pg-")
    data = os.path.join(tmp, "data")
    user_args: list[str] = []
    run_as: list[str] = []
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root: run it as the owner of a temp dir we chown.
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            return None, "running as root and there is no 'postgres' user to run a throwaway server"
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    try:
        subprocess.run([*run_as, initdb, "-D", data, "-A", "trust", "-U", "postgres", *user_args], check=True, capture_output=True, timeout=120)
        subprocess.run(
            [*run_as, pg_ctl, "-D", data, "-o", f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off", "-l", os.path.join(tmp, "log"), "-w", "start"],
            check=True,
            capture_output=True,
            timeout=120,
        )
    except Exception as exc:  # pragma: no cover - depends on the machine
        return None, f"could not start a throwaway PostgreSQL server: {exc}"
    _server_proc_dir = tmp
    import atexit

    atexit.register(lambda: subprocess.run([*run_as, pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True))
    return f"postgresql://postgres@127.0.0.1:{port}/postgres", None


def server_url() -> str:
    """The URL of a usable server, or skip the test saying why there is none."""
    global _server_url, _server_error
    if _server_url is None and _server_error is None:
        url = os.environ.get("ENTS_TEST_PG_URL")
        if url:
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
    if _server_url is None:
        if os.environ.get("ENTS_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL required but unavailable: {_server_error}")
        pytest.skip(f"PostgreSQL unavailable: {_server_error}")
    return _server_url


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


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False
