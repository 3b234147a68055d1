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

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy.dialects import postgresql as sa_pg

from ..errors import ConfigurationError
from ..values import dumps, loads_doc
from .base import Backend, Connection, Dialect, Params

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.types.json import set_json_loads
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - checked in open_backend first
    raise ConfigurationError("PostgreSQL support needs psycopg 3: pip install 'ents[postgres]'") from exc

log = logging.getLogger("ents.postgres")

CHANNEL = "ents_jobs"
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


def _split_url(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in ("pool_size", "connect_timeout")}
    rest = [(k, v) for k, v in query if k not in ours]
    scheme = "postgresql"
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(rest), parts.fragment)), ours


def _configure(conn: psycopg.Connection[Any]) -> None:
    set_json_loads(loads_doc, conn)
    conn.prepare_threshold = 2


class PostgresBackend(Backend):
    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = PostgresDialect()
        self.conninfo, options = _split_url(url)
        try:
            size = int(options.get("pool_size", 10))
            self.connect_timeout = float(options.get("connect_timeout", 10))
        except ValueError:
            raise ConfigurationError(f"Bad pool_size or connect_timeout in {url!r}") from None
        if size < 1:
            raise ConfigurationError(f"pool_size must be at least 1 in {url!r}")
        if not 0 < self.connect_timeout < float("inf"):
            raise ConfigurationError(f"connect_timeout must be a positive number of seconds in {url!r}")
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

    def describe(self) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or "localhost"
        return f"postgresql://{host}:{parts.port or 5432}{parts.path}"

    def storage_namespace(self) -> str:
        with self.connection() as conn:
            db, schema = conn.execute("SELECT current_database(), current_schema()").fetchone()
            conn.rollback()
        parts = urlsplit(self.url)
        return f"{parts.hostname or 'localhost'}_{parts.port or 5432}_{db}_{schema}"

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
        conn.execute(f"NOTIFY {CHANNEL}")

    def watch(self, callback: Callable[[], None], interval: float = 0.05) -> Callable[[], None]:
        return _Listener(self.conninfo, callback).stop

    def close(self) -> None:
        self.pool.close()


class _Listener:
    """LISTENs on a dedicated connection; reconnects with backoff after a server restart."""

    def __init__(self, conninfo: str, callback: Callable[[], None]) -> None:
        self._conninfo = conninfo
        self._callback = callback
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._thread = threading.Thread(target=self._run, name="ents-pg-listen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    self._conn = conn
                    conn.execute(f"LISTEN {CHANNEL}")
                    # Something may have been scheduled while we were not listening.
                    self._callback()
                    delay = 0.1
                    while not self._stop.is_set():
                        got = False
                        for _ in conn.notifies(timeout=1.0, stop_after=64):
                            got = True
                        if got:
                            self._callback()
            except Exception as exc:
                if self._stop.is_set():
                    return
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
            finally:
                self._conn = None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)
