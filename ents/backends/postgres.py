"""PostgreSQL: many worker processes on many machines, the same guarantees.

Needs ``pip install 'ents[postgres]'`` (psycopg 3 and psycopg-pool), imported only when a
``postgresql://`` URL is opened. Mutations run SERIALIZABLE, so uniqueness checks and
read-modify-write mutations stay correct under concurrency; serialization failures and
deadlocks are retried by ents. Queries read a REPEATABLE READ snapshot. Workers claim
jobs with ``FOR UPDATE SKIP LOCKED`` and wake each other with LISTEN/NOTIFY.

URL options (removed before connecting): ``pool_size`` (default 10) and
``connect_timeout`` (seconds to wait for a connection, default 10).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from sqlalchemy.dialects import postgresql as sa_pg

from ..errors import ConfigurationError
from ..values import dumps, loads_doc
from .base import Backend, Connection, Dialect, Params, redact_url

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.types.json import set_json_loads
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - checked in open_backend first
    raise ConfigurationError("PostgreSQL support needs psycopg 3: pip install 'ents[postgres]'") from exc

log = logging.getLogger("ents.postgres")

#: prefix of the NOTIFY channel; the rest names the database and schema, so that apps in
#: different schemas of one server do not wake each other's workers
CHANNEL_PREFIX = "ents_jobs_"
_TRANSIENT = (
    pg_errors.SerializationFailure,
    pg_errors.DeadlockDetected,
    pg_errors.LockNotAvailable,
    pg_errors.AdminShutdown,
    pg_errors.CannotConnectNow,
)


class PostgresDialect(Dialect):
    name = "postgresql"
    param = "%s"
    skip_locked = "FOR UPDATE SKIP LOCKED"
    native_json = True
    native_bool = True
    max_params = 60000
    multi_process = True
    batch_size = 5000
    json_param = "%s::jsonb"
    mod_op = "%%"
    driver_errors = (psycopg.Error,)
    index_includes_rid = True
    cheap_savepoints = False

    def json_extract(self, column_sql: str, path: Sequence[str], params: list[Any]) -> str:
        params.append(list(path))
        # A JSON null reads as SQL NULL, as a missing key does (and as on SQLite).
        return f"NULLIF({column_sql} #> %s::text[], 'null'::jsonb)"

    def json_value_param(self, value: Any) -> tuple[str, Any]:
        return "%s::jsonb", dumps(value)

    def is_not_distinct(self, left: str, right: str) -> str:
        return f"{left} IS NOT DISTINCT FROM {right}"

    def is_distinct(self, left: str, right: str) -> str:
        return f"{left} IS DISTINCT FROM {right}"

    def order_term(self, expr: str, desc: bool) -> str:
        return f"{expr} DESC NULLS LAST" if desc else f"{expr} ASC NULLS FIRST"

    def index_term(self, column_sql: str) -> str:
        return f"{column_sql} ASC NULLS FIRST"

    def in_clause(self, column_sql: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column_sql} = ANY(%s)", [list(values)]

    def classify(self, exc: BaseException) -> str | None:
        if isinstance(exc, pg_errors.UniqueViolation):
            return "unique"
        if isinstance(exc, _TRANSIENT):
            return "transient"
        if isinstance(exc, PoolTimeout):
            return "transient"
        if isinstance(exc, pg_errors.ProgramLimitExceeded):
            # e.g. "index row requires 1000016 bytes, maximum size is 8191": the statement
            # can never succeed, so it is not retried (the connection is fine).
            return None
        if isinstance(exc, psycopg.OperationalError) and not isinstance(exc, pg_errors.QueryCanceled):
            return "connection"
        return None


class _PgConnection(Connection):
    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Params = ()) -> Any:
        return self.raw.execute(sql, params)  # type: ignore[arg-type]

    def begin(self, write: bool) -> None:
        if write:
            self.raw.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
        else:
            self.raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def commit(self) -> None:
        self.raw.execute("COMMIT")

    def rollback(self) -> None:
        if self.raw.closed or self.raw.broken:
            return
        if self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self.raw.execute("ROLLBACK")

    def close(self) -> None:
        self.raw.close()


def _hosts(url: str) -> list[tuple[str, int]]:
    """The ``(host, port)`` pairs of a PostgreSQL URL (libpq allows ``h1:5432,h2:5433``).

    Checked here because libpq would only fail when connecting, after a timeout and with
    a less helpful message, and Python's URL parser raises a bare ValueError.
    """
    shown = redact_url(url)
    # As in redact_url: the user part ends at the last "@" before the options, so that no
    # piece of a password with an unescaped "/" or "@" is ever taken for a host.
    head = url.partition("://")[2].partition("?")[0].partition("#")[0]
    netloc = head[head.rfind("@") + 1 :].partition("/")[0]
    found: list[tuple[str, int]] = []
    for item in netloc.split(",") if netloc else []:
        if item.startswith("["):
            host, bracket, port = item[1:].partition("]")
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                bracket = ""
            if not bracket or (port and not port.startswith(":")):
                raise ConfigurationError(f"Malformed IPv6 host {item!r} in '{shown}': write it as [::1] or [::1]:5432")
            port = port[1:]
        else:
            if "[" in item or "]" in item or item.count(":") > 1:
                raise ConfigurationError(f"Malformed host {item!r} in '{shown}': an IPv6 address goes in brackets, [::1]:5432")
            host, _, port = item.partition(":")
        found.append((host or "localhost", _port(port, shown)))
    return found or [("localhost", 5432)]


def _port(text: str, shown: str) -> int:
    if not text:
        return 5432
    if not (text.isascii() and text.isdigit() and len(text) <= 5 and 1 <= int(text) <= 65535):
        raise ConfigurationError(f"Port {text!r} in '{shown}' is not a port number (1 to 65535)")
    return int(text)


def _split_url(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in ("pool_size", "connect_timeout")}
    rest = [(k, v) for k, v in query if k not in ours]
    scheme = "postgresql"
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(rest, quote_via=quote), parts.fragment)), ours


def _configure(conn: psycopg.Connection[Any]) -> None:
    set_json_loads(loads_doc, conn)
    conn.prepare_threshold = 2


class PostgresBackend(Backend):
    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = PostgresDialect()
        shown = redact_url(url)
        self._hosts = _hosts(url)
        try:
            self.conninfo, options = _split_url(url)
            query = parse_qsl(urlsplit(url).query, keep_blank_values=True)
        except ValueError as exc:
            raise ConfigurationError(f"Malformed PostgreSQL URL '{shown}': {exc}") from None
        for key, value in query:
            if key == "port":
                for port in value.split(","):
                    _port(port, shown)
        try:
            size = int(options.get("pool_size", 10))
            self.connect_timeout = float(options.get("connect_timeout", 10))
        except ValueError:
            raise ConfigurationError(f"Bad pool_size or connect_timeout in '{shown}'") from None
        if size < 1:
            raise ConfigurationError(f"pool_size must be at least 1 in '{shown}'")
        if not 0 < self.connect_timeout < float("inf"):
            raise ConfigurationError(f"connect_timeout must be a positive number of seconds in '{shown}'")
        self.pool: ConnectionPool[Any] = ConnectionPool(
            self.conninfo,
            kwargs={"autocommit": True},
            min_size=1,
            max_size=size,
            configure=_configure,
            timeout=self.connect_timeout,
            open=False,
            name="ents",
        )
        try:
            self.pool.open(wait=True, timeout=self.connect_timeout)
        except PoolTimeout as exc:
            self.pool.close()
            raise ConfigurationError(f"Cannot connect to PostgreSQL at {self.describe()}: {exc}") from exc
        self._local = threading.local()
        self._channel: str | None = None

    def _job_channel(self, conn: Connection | None = None) -> str:
        """The NOTIFY channel of this database and schema (asked once, after the schema
        exists: before, ``current_schema()`` is NULL)."""
        if self._channel is None:
            if conn is not None:
                db, schema = conn.execute("SELECT current_database(), current_schema()").fetchone()
            else:
                with self.connection() as own:
                    db, schema = own.execute("SELECT current_database(), current_schema()").fetchone()
                    own.rollback()
            self._channel = CHANNEL_PREFIX + hashlib.sha256(f"{db}.{schema}".encode()).hexdigest()[:24]
        return self._channel

    def describe(self) -> str:
        """``postgresql://host:port/db``: no user, password or options."""
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self._hosts)
        head = self.url.partition("://")[2].partition("?")[0].partition("#")[0]
        _, slash, database = head[head.rfind("@") + 1 :].partition("/")  # as in _hosts
        return f"postgresql://{hosts}{slash}{database}"

    def storage_namespace(self) -> str:
        with self.connection() as conn:
            db, schema = conn.execute("SELECT current_database(), current_schema()").fetchone()
            conn.rollback()
        host, port = self._hosts[0]
        return f"{host}_{port}_{db}_{schema}"

    def connect(self) -> Connection:
        try:
            raw = self.pool.getconn()
        except PoolTimeout as exc:
            raise exc
        return _PgConnection(raw)

    def release(self, conn: Connection) -> None:
        assert isinstance(conn, _PgConnection)
        raw = conn.raw
        if not raw.closed and raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            try:
                raw.execute("ROLLBACK")
            except Exception:
                raw.close()
        self.pool.putconn(raw)

    # -- schema --------------------------------------------------------------------------

    def json_type(self) -> Any:
        return sa_pg.JSONB()

    def sa_dialect(self) -> Any:
        return sa_pg.dialect()

    def introspect_tables(self, conn: Connection) -> set[str]:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
        return {r[0] for r in rows}

    def introspect_columns(self, conn: Connection, table: str) -> set[str]:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = %s",
            (table,),
        ).fetchall()
        return {r[0] for r in rows}

    def introspect_indexes(self, conn: Connection, table: str) -> set[str]:
        rows = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s", (table,)
        ).fetchall()
        return {r[0] for r in rows}

    def lock_schema(self, conn: Connection) -> None:
        # A session lock, taken outside the transaction: the transaction that follows gets
        # its snapshot after the previous holder committed, so it sees the tables it made.
        conn.execute("SELECT pg_advisory_lock(hashtext(current_schema() || ':ents-schema'))")

    def unlock_schema(self, conn: Connection) -> None:
        conn.execute("SELECT pg_advisory_unlock(hashtext(current_schema() || ':ents-schema'))")

    # -- wake-ups ----------------------------------------------------------------------------

    def notify(self, conn: Connection, payload: str) -> None:
        conn.execute(f"NOTIFY {self._job_channel(conn)}")

    def watch(self, callback: Callable[[], None], interval: float = 0.05) -> Callable[[], None]:
        return _Listener(self.conninfo, self._job_channel(), callback, self._notify_channel).stop

    def _notify_channel(self, channel: str) -> None:
        """NOTIFY ``channel`` from a pooled connection (best effort: used to stop a listener)."""
        try:
            # A short wait for a connection: when every one is busy, the listener's own
            # wait (LISTEN_WAIT_S) ends it soon enough.
            raw = self.pool.getconn(timeout=1.0)
        except Exception:  # a closed pool or a lost server: likewise
            return
        try:
            raw.execute(f"NOTIFY {channel}")  # pooled connections are in autocommit mode
        except Exception:
            pass
        finally:
            self.pool.putconn(raw)

    def close(self) -> None:
        self.pool.close()


#: how long the listening thread waits for notifications before it looks again at whether
#: it must stop; a notification is handed on the moment it arrives, never after this wait
#: (and stop() sends one of its own, so stopping never waits for it either)
LISTEN_WAIT_S = 1.0


class _Listener:
    """LISTENs on a dedicated connection; reconnects with backoff after a server restart.

    Each notification calls ``callback`` as soon as it is read. ``Worker.wake`` coalesces
    wake-ups, so a burst of notifications costs a few lock operations, not a query each.
    """

    def __init__(self, conninfo: str, channel: str, callback: Callable[[], None], notify: Callable[[str], None]) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._callback = callback
        self._notify = notify
        # A channel of our own, on which stop() wakes this thread out of its wait.
        self._stop_channel = f"ents_stop_{uuid.uuid4().hex}"
        self._stop = threading.Event()
        self._listening = False
        self._thread = threading.Thread(target=self._run, name="ents-pg-listen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {self._channel}")
                    conn.execute(f"LISTEN {self._stop_channel}")
                    self._listening = True
                    # Something may have been scheduled while we were not listening.
                    self._callback()
                    delay = 0.1
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=LISTEN_WAIT_S):
                            if self._stop.is_set() or note.channel == self._stop_channel:
                                return
                            self._callback()
            except Exception as exc:
                if self._stop.is_set():
                    return
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
            finally:
                self._listening = False

    def stop(self) -> None:
        self._stop.set()
        if self._listening and self._thread.is_alive():
            self._notify(self._stop_channel)
        self._thread.join(timeout=3)
