"""The narrow interface between ents and a database.

A backend only moves rows. It opens connections, begins, commits and rolls back
transactions, runs parameterised SQL, classifies driver errors, creates tables from the
schema and carries wake-up notifications between processes. Everything with meaning
(edges, cascades, uniqueness, claiming, retries, job states) lives above it, in shared code
that writes SQL through the small set of dialect hooks below. SQLite and PostgreSQL differ
only in those hooks and capability flags.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

Params = Sequence[Any]

_SECRET_KEY = re.compile(r"(?i)([^=&;\s?]*pass[^=&;\s]*)=('(?:[^'\\]|\\.)*'|[^&;#\s]*)")


def redact_url(url: Any) -> str:
    """``url`` as it may be shown: in a message, a ``repr``, a log line.

    The password of the user part (``user:***@host``) and of any option whose name
    contains "pass" (``?password=***``, also in a ``key=value`` connection string) is
    replaced by ``***``. Never raises, even for a URL no parser accepts.
    """
    if not isinstance(url, str):
        return f"<{type(url).__name__}>"
    scheme, sep, rest = url.partition("://")
    if sep:
        # The user part ends at the last "@" before the options: an unescaped "@" or "/"
        # inside a password must not leave part of it visible.
        head, qmark, query = rest.partition("?")
        at = head.rfind("@")
        if at >= 0:
            user, colon, _ = head[:at].partition(":")
            head = f"{user}{':***' if colon else ''}{head[at:]}"
        url = f"{scheme}{sep}{head}{qmark}{query}"
    url = _SECRET_KEY.sub(lambda m: f"{m.group(1)}=***", url)
    return url if url.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in url)


class Connection(ABC):
    """One database connection, used by one thread at a time."""

    @abstractmethod
    def execute(self, sql: str, params: Params = ()) -> Any:
        """Run one statement; returns a DB-API cursor (fetchone, fetchall, rowcount)."""

    @abstractmethod
    def begin(self, write: bool) -> None:
        """Begin a transaction: serializable for writes, a consistent snapshot for reads."""

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def rollback(self) -> None: ...

    def savepoint(self, name: str) -> None:
        self.execute(f"SAVEPOINT {name}")

    def release(self, name: str) -> None:
        self.execute(f"RELEASE SAVEPOINT {name}")

    def rollback_to(self, name: str) -> None:
        self.execute(f"ROLLBACK TO SAVEPOINT {name}")

    @abstractmethod
    def close(self) -> None: ...


class Dialect:
    """SQL differences between backends, as small hooks and capability flags."""

    name = "generic"
    #: placeholder for one positional parameter
    param = "?"
    #: ``SELECT ... FOR UPDATE SKIP LOCKED`` for claiming rows without blocking
    skip_locked = ""
    #: whether JSON columns are native (decoded by the driver) or text
    native_json = False
    #: whether booleans come back as bool (True) or as 0/1 (False)
    native_bool = False
    #: largest number of parameters one statement may carry
    max_params = 999
    #: several processes may run workers against the same database
    multi_process = True
    #: savepoints cost nothing worth saving (in-process SQLite) vs a round trip each
    cheap_savepoints = True
    #: whether indexes must list the row key explicitly (SQLite adds its rowid implicitly)
    index_includes_rid = False
    #: whether creation order is row-key order: with one writer at a time, ents keeps
    #: ``_creation_time`` from decreasing as ``_rid`` grows, so tables need no index on it
    #: and queries order by ``(index fields, _rid)`` (see ``Transaction.creation_time``)
    rid_order = False
    #: the driver's exception classes (wrapped in DatabaseError when they escape)
    driver_errors: tuple[type[BaseException], ...] = ()

    def q(self, ident: str) -> str:
        return '"' + ident.replace('"', '""') + '"'

    def sql(self, text: str) -> str:
        """Translate ``?`` placeholders to this dialect's style."""
        return text if self.param == "?" else text.replace("?", self.param)

    def json_extract(self, column_sql: str, path: Sequence[str], params: list[Any]) -> str:
        """An SQL expression giving the value at ``path`` inside a JSON column.

        The path is passed as a parameter (appended to ``params``), never spliced into SQL.
        """
        raise NotImplementedError

    #: the modulo operator as written in SQL text for this driver
    mod_op = "%"

    def json_sort_expr(self, column_sql: str) -> str:
        """What indexes and ORDER BY use for a JSON column: its value, compared as such."""
        return column_sql

    def json_value_param(self, value: Any) -> tuple[str, Any]:
        """SQL and parameter comparing equal to a scalar extracted by :meth:`json_extract`."""
        return self.param, value

    def is_not_distinct(self, left: str, right: str) -> str:
        return f"{left} IS {right}"

    def is_distinct(self, left: str, right: str) -> str:
        return f"{left} IS NOT {right}"

    def order_term(self, expr: str, desc: bool) -> str:
        """Order with NULL first ascending and last descending, like Convex."""
        return f"{expr} DESC" if desc else f"{expr} ASC"

    def index_term(self, column_sql: str) -> str:
        return column_sql

    #: placeholder for a JSON value given as text
    json_param = "?"

    #: whether an insert reports its new row id through the cursor (``lastrowid``) rather
    #: than a RETURNING row; SQLite's RETURNING costs several times the insert itself
    rid_from_cursor = False

    def insert_ignore(self, table: str, columns: Sequence[str], json_columns: frozenset[str] = frozenset()) -> str:
        """An INSERT that skips a row conflicting with a unique index and reports the new
        row id (see ``rid_from_cursor``); ``Transaction.insert_rid`` runs it."""
        cols = ", ".join(self.q(c) for c in columns)
        marks = ", ".join(self.json_param if c in json_columns else self.param for c in columns)
        sql = f"INSERT INTO {self.q(table)} ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING"
        return sql if self.rid_from_cursor else f"{sql} RETURNING {self.q('_rid')}"

    def bool_to_db(self, value: bool) -> Any:
        return value

    def classify(self, exc: BaseException) -> str | None:
        """``"transient"`` for errors worth retrying (the transaction did not commit),
        ``"connection"`` for a lost connection (retry, but never after a COMMIT was sent),
        ``"unique"`` for unique violations, None otherwise."""
        return None

    #: how many values one IN (...) lookup carries; larger sets are split
    batch_size = 500

    def in_clause(self, column_sql: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """``column IN (...)`` for a non-empty list of at most ``batch_size`` values.

        The list is padded to a power of two (repeating its last value) so that only a
        handful of distinct statements exist and the driver's statement cache keeps them.
        """
        n = len(values)
        size = 1 << (n - 1).bit_length() if n > 1 else 1
        padded = list(values)
        if size > n:
            padded.extend([values[-1]] * (size - n))
        return f"{column_sql} IN ({', '.join([self.param] * size)})", padded


class Backend(ABC):
    """A database: connections, schema creation and cross-process wake-ups."""

    dialect: Dialect
    url: str

    @abstractmethod
    def connect(self) -> Connection:
        """A connection for the calling thread (returned with :meth:`release`)."""

    @abstractmethod
    def release(self, conn: Connection) -> None: ...

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        conn = self.connect()
        try:
            yield conn
        finally:
            self.release(conn)

    # -- schema ------------------------------------------------------------------------

    @abstractmethod
    def json_type(self) -> Any:
        """The SQLAlchemy type of JSON columns."""

    @abstractmethod
    def sa_dialect(self) -> Any:
        """The SQLAlchemy dialect DDL is compiled for."""

    @abstractmethod
    def introspect_tables(self, conn: Connection) -> set[str]: ...

    @abstractmethod
    def introspect_columns(self, conn: Connection, table: str) -> set[str]: ...

    @abstractmethod
    def introspect_indexes(self, conn: Connection, table: str) -> set[str]: ...

    def introspect_index_sql(self, conn: Connection, table: str) -> dict[str, str] | None:
        """Each index's CREATE statement as the database keeps it, when it keeps it in the
        form ents writes it (so that a changed definition can be told); None otherwise."""
        return None

    def lock_schema(self, conn: Connection) -> None:  # noqa: B027 - optional hook
        """Serialize schema changes between processes; called before the schema
        transaction begins (SQLite's BEGIN IMMEDIATE already serializes them)."""

    def unlock_schema(self, conn: Connection) -> None:  # noqa: B027 - optional hook
        """Release :meth:`lock_schema` (after the transaction ended, either way)."""

    # -- wake-ups between processes -----------------------------------------------------

    def notify(self, conn: Connection, payload: str) -> None:  # noqa: B027 - optional hook
        """Tell other processes jobs changed; delivered when the transaction commits."""

    def watch(self, callback: Callable[[], None], interval: float = 0.05) -> Callable[[], None]:
        """Call ``callback`` when another process may have scheduled work; returns a stopper."""
        return lambda: None

    def describe(self) -> str:
        """Where the database is, for messages and logs (never with a password)."""
        return redact_url(self.url)

    def storage_namespace(self) -> str:
        """A directory name unique to this database (for the default blob directory)."""
        return "default"

    @abstractmethod
    def close(self) -> None: ...
