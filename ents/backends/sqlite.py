"""Embedded SQLite: a file in WAL mode (or memory), no server.

Writers take the database lock at ``BEGIN IMMEDIATE`` so that two writers never deadlock
on a lock upgrade; readers see a consistent snapshot. Each thread has its own connection
to a file database; an in-memory database has one connection shared under a lock.
Several processes may open the same file: SQLite serializes their writes, and ents
retries "database is busy" transparently.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sa_sqlite

from ..errors import ConfigurationError
from .base import Backend, Connection, Dialect, Params, redact_url

_TRANSIENT_CODES = {5, 6, 261, 262, 517, 773}  # BUSY, LOCKED and their extended codes
_UNIQUE_CODES = {1555, 2067}  # CONSTRAINT_PRIMARYKEY, CONSTRAINT_UNIQUE


def _as_real(value: int) -> float:
    try:
        return float(value)
    except OverflowError:
        return float("inf") if value > 0 else float("-inf")


class SQLiteDialect(Dialect):
    name = "sqlite"
    param = "?"
    native_json = False
    native_bool = False
    max_params = 32000
    multi_process = True
    rid_from_cursor = True
    rid_order = True
    driver_errors = (sqlite3.Error,)

    def json_extract(self, column_sql: str, path: Sequence[str], params: list[Any]) -> str:
        for p in path:
            if '"' in p or "\\" in p:
                from ..errors import ValidationError

                raise ValidationError(f"Nested field names used in filters may not contain quotes or backslashes: {p!r}")
        params.append("$" + "".join(f'[{p}]' if p.isdigit() else f'."{p}"' for p in path))
        return f"json_extract({column_sql}, ?)"

    def json_value_param(self, value: Any) -> tuple[str, Any]:
        if isinstance(value, bool):
            return "?", int(value)
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            # json_extract reads an integer beyond 64 bits as a REAL (and beyond a double's
            # range as an infinity): compare with what SQLite sees, since the driver cannot
            # bind such an integer at all.
            return "?", _as_real(value)
        if isinstance(value, (dict, list)):
            # json_extract gives objects and arrays back as minified JSON text
            from ..values import dumps

            return "?", dumps(value)
        return "?", value

    def json_sort_expr(self, column_sql: str) -> str:
        # A constant path (not user input), so the same expression can back an index.
        return f"json_extract({column_sql}, '$')"

    def bool_to_db(self, value: bool) -> Any:
        return 1 if value else 0

    def classify(self, exc: BaseException) -> str | None:
        if isinstance(exc, sqlite3.IntegrityError):
            code = getattr(exc, "sqlite_errorcode", None)
            if code in _UNIQUE_CODES or "UNIQUE constraint failed" in str(exc):
                return "unique"
            return None
        if isinstance(exc, sqlite3.OperationalError):
            code = getattr(exc, "sqlite_errorcode", None)
            msg = str(exc)
            if code in _TRANSIENT_CODES or "database is locked" in msg or "database is busy" in msg:
                return "transient"
        return None


def _busy_timeout(text: str | None, default: int, url: str) -> int:
    if text is None:
        return default
    try:
        ms = int(text)
    except ValueError:
        ms = -1
    if not 0 <= ms <= 2**31 - 1:
        raise ConfigurationError(
            f"busy_timeout must be a whole number of milliseconds from 0 to {2**31 - 1}, got {text!r} in '{redact_url(url)}'"
        )
    return ms


def _hint(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return (
            " (ents must be able to write the file and to create its -wal and -shm files beside it: "
            "is the file, its directory or its filesystem read-only?)"
        )
    return ""


class _SQLiteConnection(Connection):
    def __init__(self, raw: sqlite3.Connection) -> None:
        self.raw = raw
        # Bound straight to the driver: no Python frame per statement.
        self.execute = raw.execute  # type: ignore[method-assign,assignment]

    def execute(self, sql: str, params: Params = ()) -> Any:  # pragma: no cover - replaced
        return self.raw.execute(sql, params)

    def begin(self, write: bool) -> None:
        self.raw.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def commit(self) -> None:
        self.raw.execute("COMMIT")

    def rollback(self) -> None:
        if self.raw.in_transaction:
            self.raw.execute("ROLLBACK")

    def close(self) -> None:
        self.raw.close()


def parse_sqlite_url(url: str) -> tuple[str | None, dict[str, str]]:
    """``sqlite://`` is memory; ``sqlite:///rel.db`` and ``sqlite:////abs.db`` are files."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unbalanced "[" in the host part
        raise ConfigurationError(f"Malformed SQLite URL '{shown}': {exc}") from None
    if parts.scheme != "sqlite":
        raise ConfigurationError(f"Not an SQLite URL: '{shown}'")
    options = {k.lower(): v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.netloc not in ("", "localhost"):
        raise ConfigurationError(
            f"SQLite URL '{shown}' has a host; use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path = unquote(parts.path)
    if "\x00" in path:
        raise ConfigurationError(f"SQLite URL '{shown}': a file path cannot contain a NUL character")
    if path in ("", "/", "/:memory:"):
        return None, options
    return path[1:] if path.startswith("/") else path, options


class SQLiteBackend(Backend):
    def __init__(self, url: str, *, busy_timeout_ms: int = 5000) -> None:
        self.url = url
        self.dialect = SQLiteDialect()
        self.path, options = parse_sqlite_url(url)
        sync = options.get("synchronous", "full").upper()
        if sync not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ConfigurationError(f"Unknown SQLite synchronous setting {sync!r} in '{redact_url(url)}'")
        self.synchronous = sync
        self.busy_timeout_ms = _busy_timeout(options.get("busy_timeout"), busy_timeout_ms, url)
        self._local = threading.local()
        self._all: weakref.WeakSet[_SQLiteConnection] = weakref.WeakSet()
        self._conns: list[_SQLiteConnection] = []
        self._lock = threading.RLock()
        self._closed = False
        self._shared: _SQLiteConnection | None = None
        if self.path is None:
            self.dialect.multi_process = False
            self._shared = self._open()
        else:
            directory = os.path.dirname(os.path.abspath(self.path))
            if not os.path.isdir(directory):
                raise ConfigurationError(
                    f"Cannot open SQLite database {self.path!r}: directory {directory!r} does not exist"
                )

    @property
    def memory(self) -> bool:
        return self.path is None

    def _open(self) -> _SQLiteConnection:
        target = ":memory:" if self.path is None else self.path
        try:
            raw = sqlite3.connect(
                target,
                isolation_level=None,
                check_same_thread=False,
                timeout=self.busy_timeout_ms / 1000,
                cached_statements=512,
            )
        except (sqlite3.Error, ValueError) as exc:  # ValueError: a path the OS cannot take
            raise ConfigurationError(f"Cannot open SQLite database {target!r}: {exc}") from exc
        try:
            # The first statements are where an odd file shows itself: not a database, a
            # read-only file or directory (WAL mode writes the file and creates -wal and
            # -shm files beside it), a device.
            if self.path is not None:
                mode = raw.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":  # pragma: no cover - e.g. a network filesystem
                    raise ConfigurationError(f"Cannot enable WAL mode on {self.path!r} (got {mode})")
            raw.execute(f"PRAGMA synchronous={self.synchronous}")
            raw.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
            raw.execute("PRAGMA foreign_keys=OFF")
            raw.execute("PRAGMA temp_store=MEMORY")
            raw.execute("PRAGMA cache_size=-32000")
        except BaseException as exc:
            raw.close()
            if isinstance(exc, sqlite3.Error):
                raise ConfigurationError(f"Cannot open SQLite database {target!r}: {exc}{_hint(exc)}") from exc
            raise
        conn = _SQLiteConnection(raw)
        with self._lock:
            self._conns.append(conn)
        return conn

    def connect(self) -> Connection:
        if self._closed:
            raise ConfigurationError("The App was closed")
        if self._shared is not None:
            self._lock.acquire()
            return self._shared
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            self._local.conn = conn
        return conn

    def release(self, conn: Connection) -> None:
        if self._shared is not None:
            self._lock.release()

    def json_type(self) -> Any:
        return sa.Text()

    def sa_dialect(self) -> Any:
        return sa_sqlite.dialect()

    def introspect_tables(self, conn: Connection) -> set[str]:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return {r[0] for r in rows}

    def introspect_columns(self, conn: Connection, table: str) -> set[str]:
        rows = conn.execute(f"PRAGMA table_info({self.dialect.q(table)})").fetchall()
        return {r[1] for r in rows}

    def introspect_indexes(self, conn: Connection, table: str) -> set[str]:
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", (table,)
        ).fetchall()
        return {r[0] for r in rows}

    def introspect_index_sql(self, conn: Connection, table: str) -> dict[str, str] | None:
        rows = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (table,)
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    def watch(self, callback: Callable[[], None], interval: float = 0.05) -> Callable[[], None]:
        if self.path is None:
            return lambda: None
        return _DataVersionWatcher(self.path, callback, interval).stop

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for conn in self._conns:
                try:
                    conn.close()
                except Exception:  # pragma: no cover
                    pass
            self._conns.clear()


class _DataVersionWatcher:
    """Calls back when another connection commits to the file.

    SQLite has no notifications between processes. ``PRAGMA data_version`` is read from
    shared memory without touching the disk, so a background thread checking it every
    ``interval`` seconds is cheap; wake-ups within one process never wait for it.
    """

    def __init__(self, path: str, callback: Callable[[], None], interval: float) -> None:
        self._raw = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._callback = callback
        self._interval = interval
        self._stop = threading.Event()
        self._version = self._read()
        self._thread = threading.Thread(target=self._run, name="ents-sqlite-watch", daemon=True)
        self._thread.start()

    def _read(self) -> int:
        return int(self._raw.execute("PRAGMA data_version").fetchone()[0])

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                version = self._read()
            except sqlite3.Error:  # pragma: no cover - file vanished under us
                continue
            if version != self._version:
                self._version = version
                self._callback()
        self._raw.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
