"""One database transaction with the state ents keeps alongside it.

A Transaction wraps a backend connection for the duration of one query, mutation or
internal step. Besides running SQL it records what must happen only once the
transaction commits (delete a blob file, wake the worker) or if it rolls back (remove a
blob written by a failed mutation), and a write sequence number that tells cached edge
lookups when they went stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .errors import ContextError, EntsError, ReadOnlyError
from .values import show_name

if TYPE_CHECKING:
    from .app import App
    from .backends.base import Connection
    from .runtime import TableRuntime


class Transaction:
    # Bookkeeping most transactions never touch: class defaults, set per instance on first use.
    write_seq = 0
    _savepoints = 0
    # scheduler bookkeeping (see scheduler.py)
    scheduled_count = 0
    scheduled_bytes = 0
    earliest_new_job: float | None = None
    origin_canceled: Callable[[], bool] | None = None
    _ct_floor: dict[str, float] | None = None
    #: set once the transaction has committed or rolled back (see :meth:`close`)
    closed = False

    def __init__(
        self,
        app: App,
        conn: Connection,
        *,
        write: bool,
        now: float,
        identity: Any = None,
        function: str | None = None,
    ) -> None:
        self.app = app
        self.conn = conn
        self.write = write
        self.now = now
        self.identity = identity
        self.function = function
        self.dialect = app.backend.dialect
        self.runtimes = app.runtimes
        self.after_commit: list[Callable[[], None]] = []
        self.after_rollback: list[Callable[[], None]] = []

    # -- SQL ---------------------------------------------------------------------------

    def execute(self, sql: str, params: Iterable[Any] = ()) -> Any:
        return self.conn.execute(sql, tuple(params) if not isinstance(params, (tuple, list)) else params)

    def fetchone(self, sql: str, params: Iterable[Any] = ()) -> tuple[Any, ...] | None:
        return self.execute(sql, params).fetchone()  # type: ignore[no-any-return]

    def creation_time(self, table: str) -> float:
        """``_creation_time`` for a row this transaction inserts into ``table``: its time,
        except that where the dialect orders by row key (``rid_order``) it never goes below
        the newest row's, so creation order and row-key order agree even when clocks of
        processes sharing the database differ or step back."""
        floors = self._ct_floor
        if floors is not None:
            floor = floors.get(table)
            if floor is not None and floor >= self.now:
                return floor  # every later insert of the transaction
        elif not self.dialect.rid_order:
            return self.now
        else:
            floors = self._ct_floor = {}
            floor = None
        if floor is None:
            q = self.dialect.q
            row = self.conn.execute(f"SELECT {q('_creation_time')} FROM {q(table)} ORDER BY {q('_rid')} DESC LIMIT 1").fetchone()
            floor = self.now if row is None else row[0]
        ct = floors[table] = max(self.now, floor)
        return ct

    def insert_row(self, rt: TableRuntime, cols: tuple[str, ...], vals: Sequence[Any]) -> int | None:
        """Insert a row of ``rt`` (``cols``: its columns but ``_creation_time``, which is set
        here); the new row id, or None when a unique index refused the row."""
        return self.insert_rid(rt.insert_sql(cols), (self.creation_time(rt.name), *vals))

    def insert_rid(self, sql: str, params: Sequence[Any]) -> int | None:
        """Run an insert from ``TableRuntime.insert_sql``: the new row id, or None when a
        unique index refused the row."""
        cur = self.conn.execute(sql, params)
        if self.dialect.rid_from_cursor:
            return cur.lastrowid if cur.rowcount == 1 else None  # type: ignore[no-any-return]
        row = cur.fetchone()
        return None if row is None else int(row[0])

    def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        return self.execute(sql, params).fetchall()  # type: ignore[no-any-return]

    def rt(self, table: str) -> TableRuntime:
        # A non-string (e.g. a list) would raise TypeError from the dict lookup.
        rt = self.runtimes.get(table) if isinstance(table, str) else None
        if rt is None:
            known = ", ".join(sorted(t for t in self.runtimes if not self.app.schema.tables[t].is_edge_table))
            shown = show_name(table)
            raise EntsError(f'Table "{shown}" is not defined in the schema (tables: {known})', table=shown)
        return rt

    def in_chunks(
        self, sql_prefix: str, column_sql: str, values: list[Any], *, where: str = "", params: tuple[Any, ...] = (), suffix: str = ""
    ) -> Iterator[tuple[Any, ...]]:
        """Run ``<prefix> WHERE [<where> AND] <column> IN (...) <suffix>`` over ``values`` in batches.

        ``params`` bind the placeholders of ``where``.
        """
        size = self.dialect.batch_size
        lead = f"{where} AND " if where else ""
        for start in range(0, len(values), size):
            chunk = values[start : start + size]
            cond, chunk_params = self.dialect.in_clause(column_sql, chunk)
            yield from self.execute(f"{sql_prefix} WHERE {lead}{cond}{suffix}", [*params, *chunk_params]).fetchall()

    def run_in_chunks(
        self, sql_prefix: str, column_sql: str, values: list[Any], *, where: str = "", params: tuple[Any, ...] = (), suffix: str = ""
    ) -> int:
        """Like :meth:`in_chunks` for statements without results; returns rows affected."""
        size = self.dialect.batch_size
        lead = f"{where} AND " if where else ""
        total = 0
        for start in range(0, len(values), size):
            chunk = values[start : start + size]
            cond, chunk_params = self.dialect.in_clause(column_sql, chunk)
            cur = self.execute(f"{sql_prefix} WHERE {lead}{cond}{suffix}", [*params, *chunk_params])
            total += max(cur.rowcount, 0)
        return total

    # -- guards and savepoints ---------------------------------------------------------

    def require_write(self, what: str) -> None:
        if not self.write:
            if self.closed:
                raise self.closed_error(f"An object of a transaction (asked to {what})")
            raise ReadOnlyError(
                f"Cannot {what} in a query: queries only read. Use a mutation to write.",
                function=self.function,
            )

    def touched(self) -> None:
        self.write_seq += 1

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        self._savepoints += 1
        name = f"ents_sp{self._savepoints}"
        self.conn.savepoint(name)
        mark_commit = len(self.after_commit)
        mark_rollback = len(self.after_rollback)
        saved = (self.scheduled_count, self.scheduled_bytes, self.earliest_new_job)
        try:
            yield
        except BaseException as exc:
            try:
                self.conn.rollback_to(name)
                self.conn.release(name)
            except Exception:
                # The transaction itself is broken (e.g. the connection dropped); the
                # original error is what matters, and the whole transaction rolls back.
                raise exc from None

            # What the rolled-back work asked to do after commit no longer applies.
            del self.after_commit[mark_commit:]
            undo = self.after_rollback[mark_rollback:]
            del self.after_rollback[mark_rollback:]
            for fn in reversed(undo):
                _quietly(fn)
            self.scheduled_count, self.scheduled_bytes, self.earliest_new_job = saved
            self.write_seq += 1
            raise
        else:
            self.conn.release(name)

    def note_new_job(self, due: float) -> None:
        if self.earliest_new_job is None or due < self.earliest_new_job:
            self.earliest_new_job = due

    # -- the closed guard --------------------------------------------------------------
    #
    # Ents, queries, ids, ctx.table / ctx.db / ctx.scheduler / ctx.storage and the ctx
    # itself hold their transaction. One that escapes it (returned from app.run, kept in a
    # closure or a global) must not reach the database afterwards: its connection is back
    # in the pool, and on PostgreSQL may serve someone else's transaction by then. When
    # the transaction ends, close() swaps the connection for one that refuses every
    # statement, so no path can get through; the public entry points ask ``closed`` first
    # (one attribute read) so that the error names what was used.

    def close(self) -> None:
        """Mark the transaction ended: every later read or write through it is refused."""
        self.closed = True
        self.write = False
        self.conn = _CLOSED  # type: ignore[assignment]

    def closed_error(self, what: str) -> ContextError:
        """The error for ``what`` (e.g. 'A query of table "users"') used after the end."""
        return ContextError(
            f"{what} was used after its transaction ended; read it again inside a function",
            function=self.function,
        )

    def check_open(self, what: str) -> None:
        if self.closed:
            raise self.closed_error(what)

    def committed(self) -> None:
        # close(), inlined: this runs once per transaction
        self.closed = True
        self.write = False
        self.conn = _CLOSED  # type: ignore[assignment]
        if self.after_commit:
            for fn in self.after_commit:
                _quietly(fn)
            self.after_commit.clear()
        self.after_rollback.clear()

    def rolled_back(self) -> None:
        self.close()
        for fn in reversed(self.after_rollback):
            _quietly(fn)
        self.after_rollback.clear()
        self.after_commit.clear()


class _ClosedConnection:
    """Stands in for the connection of every ended transaction: refuses every use."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        raise ContextError(
            "An object of a transaction was used after its transaction ended; read it again inside a function"
        )


# One for all: closing a transaction (done on every commit) allocates nothing.
_CLOSED = _ClosedConnection()


def _quietly(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:  # pragma: no cover - cleanup must not mask the real outcome
        import logging

        logging.getLogger("ents").exception("cleanup step failed")
