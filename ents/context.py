"""The ``ctx`` handed to functions: queries, mutations and actions.

* ``QueryCtx``: ``ctx.table``, ``ctx.db`` (read-only), ``ctx.auth``, ``ctx.storage`` reads.
* ``MutationCtx``: all of the above with writes, plus ``ctx.scheduler`` and ``ctx.crons``.
* ``ActionCtx``: no database access; ``ctx.run_query``, ``ctx.run_mutation``,
  ``ctx.run_action``, ``ctx.scheduler`` and ``ctx.storage``, each step its own transaction.
  An ``async def`` action gets :class:`AsyncActionCtx`, whose methods are awaitable.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from . import writer
from .errors import (
    ContextError,
    FunctionNotFoundError,
    InvalidIdError,
    ReadOnlyError,
    ValidationError,
)
from .functions import a_kind
from .orm import Orm
from .query import Page, Query, SystemTableQuery, TableFactory, TableQuery
from .rules import SkipRules, rules_view
from .scheduler import Scheduler, follow_origin
from .storage import Storage
from .values import show

if TYPE_CHECKING:
    from .app import App
    from .transaction import Transaction


class Auth:
    """``ctx.auth``: who called. Scheduled functions and crons have no identity."""

    def __init__(self, identity: Any) -> None:
        self._identity = identity

    def get_user_identity(self) -> Any:
        return self._identity


# -- ctx.db ---------------------------------------------------------------------------


class DbQuery:
    """Convex's document-level query: ``ctx.db.query("t").with_index(...).filter(...).collect()``."""

    def __init__(self, query: Query) -> None:
        self._q = query

    def with_index(self, index: str, range_fn: Callable[[Any], Any] | None = None) -> DbQuery:
        q = self._q
        if q._index is not None or q._range_fn is not None:
            raise ValidationError("with_index() can be used once per query", table=q._rt.name)
        if not isinstance(index, str):
            raise ValidationError(f"with_index() takes the name of an index, got {show(index)}", table=q._rt.name)
        return DbQuery(type(q)(q._tx, q._rt, index=index, range_fn=range_fn, filters=q._filters, desc=q._desc, limit=q._limit))

    def filter(self, fn: Callable[[Any], Any]) -> DbQuery:
        return DbQuery(self._q.filter(fn))

    def order(self, direction: str) -> DbQuery:
        return DbQuery(self._q.order(direction))

    def collect(self) -> list[dict[str, Any]]:
        return [_doc(e) for e in self._q]

    def take(self, n: int) -> list[dict[str, Any]]:
        return [_doc(e) for e in self._q.take(n)]

    def first(self) -> dict[str, Any] | None:
        e = self._q.first()
        return _doc(e) if e is not None else None

    def unique(self) -> dict[str, Any] | None:
        e = self._q.unique()
        return _doc(e) if e is not None else None

    def paginate(self, opts: dict[str, Any]) -> Page:
        """``{"page": [documents], "is_done", "continue_cursor"}``; ``.map(fn)`` maps the page."""
        return self._q.paginate(opts).map(_doc)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for e in self._q:
            yield _doc(e)


def _doc(ent: Any) -> dict[str, Any]:
    from .values import Doc

    return Doc(ent.doc())


class SystemDb:
    """``ctx.db.system``: read system tables by id or query."""

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    def get(self, id: str) -> dict[str, Any] | None:
        self._tx.check_open("ctx.db.system")
        table = _table_of(self._tx, id)
        if not table.startswith("_"):
            raise ValidationError(f"ctx.db.system.get() reads system tables; `{id}` is an id of \"{table}\"", table=table)
        ent = TableFactory(self._tx)(table).get(id)
        return _doc(ent) if ent is not None else None

    def query(self, table: str) -> DbQuery:
        return DbQuery(TableFactory(self._tx).system(table))


def _table_of(tx: Transaction, id: Any) -> str:
    table, _ = tx.app.codec.decode(id)
    rt = tx.runtimes.get(table)
    if rt is None:
        raise InvalidIdError(f"Invalid id `{id}`: it does not belong to any table of this schema", id=str(id))
    return table


class Db:
    """``ctx.db``: Convex's document API. Writes follow the same rules as ``ctx.table``
    (validation, uniqueness, edges); ``delete`` is always a hard delete with cascades."""

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx
        self.system = SystemDb(tx)

    def _open(self, method: str) -> Transaction:
        tx = self._tx
        if tx.closed:
            raise tx.closed_error(f"ctx.db.{method}()")
        return tx

    def get(self, id: str) -> dict[str, Any] | None:
        tx = self._open("get")
        table = _table_of(tx, id)
        ent = TableFactory(tx).for_db(table).get(id)
        return _doc(ent) if ent is not None else None

    def query(self, table: str) -> DbQuery:
        """Documents of ``table``, also of a many:many edge table (``_id``,
        ``_creation_time`` and its two id fields), which is read-only."""
        return DbQuery(TableFactory(self._tx).for_db(table))

    def normalize_id(self, table: str, id: Any) -> str | None:
        return TableFactory(self._tx).for_db(table).normalize_id(id)

    def insert(self, table: str, value: dict[str, Any]) -> str:
        q = TableFactory(self._open("insert")).for_db(table)
        if isinstance(q, SystemTableQuery):
            raise ReadOnlyError(f'System table "{table}" is read-only', table=table)
        return q.insert(value)

    def patch(self, id: str, value: dict[str, Any]) -> None:
        tx = self._open("patch")
        table = _table_of(tx, id)
        writer.patch(tx, tx.runtimes[table], tx.app.codec.decode_for(table, id), value)

    def replace(self, id: str, value: dict[str, Any]) -> None:
        from .writer import replace

        table = _table_of(self._open("replace"), id)
        rt = self._tx.rt(table)
        replace(self._tx, rt, self._tx.app.codec.decode_for(table, id), value)

    def delete(self, id: str) -> None:
        from .deletion import hard_delete
        from .errors import EntNotFoundError
        from .writer import _check_writable

        table = _table_of(self._open("delete"), id)
        rt = self._tx.rt(table)
        _check_writable(self._tx, rt, "delete a document of")
        rid = self._tx.app.codec.decode_for(table, id)
        if not hard_delete(self._tx, table, [rid]):
            raise EntNotFoundError(f'Document not found with id `{id}` in table "{table}"', table=table, id=str(id))


# -- contexts -------------------------------------------------------------------------


class QueryCtx:
    """The context of a query: read-only access to the database."""

    # Built lazily: most functions touch one or two of these, and a context is made per call.
    __slots__ = ("_tx", "_table", "_db", "_auth", "_storage", "_scheduler")

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx
        self._table: TableFactory | None = None
        self._db: Db | None = None
        self._auth: Auth | None = None
        self._storage: Storage | None = None
        self._scheduler: Scheduler | None = None

    @property
    def table(self) -> TableFactory:
        """``ctx.table("users")``: read (and in mutations, write) ents."""
        t = self._table
        if t is None:
            tx = self._tx
            rules = tx.app.rules
            t = self._table = TableFactory(tx if rules is None else rules_view(self, tx, rules))
        return t

    @property
    def skip_rules(self) -> SkipRules:
        """``ctx.skip_rules.table(...)``: ``ctx.table`` without the App's rules."""
        return SkipRules(self._tx)

    @property
    def db(self) -> Db:
        """Convex's document API (``ctx.db.get(id)``, ``ctx.db.query(table)``, ...)."""
        d = self._db
        if d is None:
            d = self._db = Db(self._tx)
        return d

    @property
    def orm(self) -> Orm:
        """kitcn's ORM-style reads and writes over ``ctx.table`` (see ents.orm)."""
        return Orm(self)

    @property
    def auth(self) -> Auth:
        a = self._auth
        if a is None:
            a = self._auth = Auth(self._tx.identity)
        return a

    @property
    def storage(self) -> Storage:
        s = self._storage
        if s is None:
            s = self._storage = Storage(self._tx)
        return s

    @property
    def app(self) -> App:
        return self._tx.app

    @property
    def now(self) -> float:
        """The time this transaction started (ms), from the App's clock."""
        return self._tx.now

    @property
    def scheduler(self) -> Scheduler:
        raise ContextError("ctx.scheduler is not available in queries: queries only read. Schedule from a mutation or an action.")

    @property
    def crons(self) -> Any:
        raise ContextError("ctx.crons is not available in queries: queries only read. Register crons from a mutation.")

    def run_query(self, fn: Any, args: dict[str, Any] | None = None) -> Any:
        """Run a query (public or internal) inside this transaction and return its result."""
        return _run_nested(self._tx, fn, args, "query")

    def run_mutation(self, fn: Any, args: dict[str, Any] | None = None) -> Any:
        raise ContextError(
            "ctx.run_mutation is not available in queries: queries only read. Call it from a mutation or an action."
        )

    def run_action(self, fn: Any, args: dict[str, Any] | None = None) -> Any:
        raise ContextError(
            "ctx.run_action is not available in queries and mutations: they run in one transaction, which an "
            "action cannot be part of. Schedule the action instead: ctx.scheduler.run_after(0, fn, args)."
        )


class MutationCtx(QueryCtx):
    """The context of a mutation: reads, writes and scheduling, all in one transaction."""

    __slots__ = ()

    @property
    def scheduler(self) -> Scheduler:
        """``ctx.scheduler.run_after / run_at / cancel``, part of this transaction."""
        s = self._scheduler
        if s is None:
            s = self._scheduler = Scheduler(self._tx)
        return s

    @property
    def crons(self) -> Any:
        from .crons import RuntimeCrons

        return RuntimeCrons(self._tx)

    def run_mutation(self, fn: Any, args: dict[str, Any] | None = None) -> Any:
        """Run a mutation (public or internal) as a sub-transaction of this one: if it
        raises, its writes and what it scheduled are rolled back alone (catch the error to
        go on); otherwise they commit with this mutation."""
        return _run_nested(self._tx, fn, args, "mutation")


def _run_nested(tx: Transaction, fn: Any, args: Any, kind: str) -> Any:
    """Run a query or mutation inside ``tx`` under a savepoint, as Convex runs
    ``ctx.runQuery`` / ``ctx.runMutation`` called from a mutation: arguments and result
    validated, the caller's identity, internal functions allowed (the caller is trusted).
    What the callee schedules counts toward the limits of the caller's call."""
    tx.check_open(f"ctx.run_{kind}()")
    fdef = tx.app.functions.resolve(fn)
    if fdef.kind != kind:
        hint = (
            "; an action cannot run inside a transaction: schedule it with ctx.scheduler.run_after(0, ...)"
            if fdef.kind == "action"
            else ""
        )
        raise FunctionNotFoundError(
            f"Trying to execute `{fdef.name}` as {a_kind(kind)}, but it is defined as {a_kind(fdef.kind)}{hint}",
            function=fdef.name,
        )
    kwargs = fdef.validate_args(args)
    caller, writable = tx.function, tx.write
    tx.function = fdef.name
    if kind == "query":
        tx.write = False  # a query only reads, also inside a mutation
    try:
        with tx.savepoint():
            ctx = MutationCtx(tx) if kind == "mutation" else QueryCtx(tx)
            return fdef.validate_result(fdef.handler(ctx, **kwargs))
    finally:
        tx.function, tx.write = caller, writable


class _NoDb:
    def __init__(self, what: str) -> None:
        self._what = what

    def __getattr__(self, name: str) -> Any:
        raise ContextError(
            f"{self._what} is not available in actions: actions have no direct database access. "
            "Use ctx.run_query(...) and ctx.run_mutation(...) to read and write."
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__getattr__("__call__")


class ActionScheduler:
    """``ctx.scheduler`` in an action: every call commits at once. The limits on what one
    function call schedules (1000 functions, 8 MB of arguments) count over the whole
    action call, across its calls of ``ctx.scheduler``."""

    def __init__(self, ctx: ActionCtx) -> None:
        self._ctx = ctx
        self._lock = threading.Lock()
        self._count = 0
        self._bytes = 0

    def _schedule(self, body: Callable[[Scheduler], str]) -> str:
        # One at a time, so that concurrent calls (an async action's gather) cannot
        # together pass the limits; each call is one short transaction.
        with self._lock:

            def run(tx: Transaction) -> tuple[str, int, int]:
                tx.scheduled_count, tx.scheduled_bytes = self._count, self._bytes
                job = body(Scheduler(tx))
                return job, tx.scheduled_count, tx.scheduled_bytes

            job, self._count, self._bytes = self._ctx._step(run)
            return job

    def run_after(self, delay: Any, fn: Any, args: dict[str, Any] | None = None) -> str:
        return self._schedule(lambda s: s.run_after(delay, fn, args))

    def run_at(self, timestamp: Any, fn: Any, args: dict[str, Any] | None = None) -> str:
        return self._schedule(lambda s: s.run_at(timestamp, fn, args))

    def cancel(self, id: str) -> None:
        self._ctx._step(lambda tx: Scheduler(tx).cancel(id))


class ActionStorage:
    """``ctx.storage`` in an action: every call is its own transaction."""

    def __init__(self, ctx: ActionCtx) -> None:
        self._ctx = ctx

    def store(self, data: bytes, content_type: str | None = None) -> str:
        return self._ctx._step(lambda tx: Storage(tx).store(data, content_type))  # type: ignore[no-any-return]

    def get(self, id: str) -> bytes | None:
        return self._ctx._read(lambda tx: Storage(tx).get(id))  # type: ignore[no-any-return]

    def get_url(self, id: str) -> str | None:
        return self._ctx._read(lambda tx: Storage(tx).get_url(id))  # type: ignore[no-any-return]

    def get_metadata(self, id: str) -> dict[str, Any] | None:
        return self._ctx._read(lambda tx: Storage(tx).get_metadata(id))  # type: ignore[no-any-return]

    def delete(self, id: str) -> None:
        self._ctx._step(lambda tx: Storage(tx).delete(id))


class ActionCtx:
    """The context of an action: calls other functions; no direct database access.

    It serves one call of the action: once the action has returned (or raised), using it
    raises ContextError, as for a transaction's objects.
    """

    db = _NoDb("ctx.db")
    table = _NoDb("ctx.table")
    skip_rules = _NoDb("ctx.skip_rules")
    orm = _NoDb("ctx.orm")

    def __init__(self, app: App, identity: Any = None, job: int | None = None, function: str | None = None) -> None:
        self._app = app
        self._identity = identity
        self._job = job
        self._function = function
        self._ended = False
        self.auth = Auth(identity)
        self.scheduler = ActionScheduler(self)
        self.storage = ActionStorage(self)

    def _end(self) -> None:
        self._ended = True

    def _check_open(self) -> None:
        if self._ended:
            raise ContextError(
                f"The ctx of action `{self._function or 'action'}` was used after the action returned; "
                "use it inside the action"
            )

    @property
    def app(self) -> App:
        return self._app

    @property
    def now(self) -> float:
        """The current time (ms) from the App's clock."""
        return self._app.clock.now()

    def _step(self, body: Callable[[Transaction], Any]) -> Any:
        self._check_open()

        def run(tx: Transaction) -> Any:
            follow_origin(tx, self._job)
            return body(tx)

        return self._app._transact(run, write=True, identity=self._identity, function=self._function or "action")

    def _read(self, body: Callable[[Transaction], Any]) -> Any:
        self._check_open()
        return self._app._transact(body, write=False, identity=self._identity, function=self._function or "action")

    def run_query(self, fn: Any, args: dict[str, Any] | None = None) -> Any:
        """Run a query (public or internal) in its own read transaction."""
        self._check_open()
        return self._app._call(fn, args, "query", identity=self._identity, origin_job=self._job)

    def run_mutation(self, fn: Any, args: dict[str, Any] | None = None) -> Any:
        """Run a mutation (public or internal) in its own transaction; what it schedules
        counts toward its own limits, not the action's (each function call has its own)."""
        self._check_open()
        return self._app._call(fn, args, "mutation", identity=self._identity, origin_job=self._job)

    def run_action(self, fn: Any, args: dict[str, Any] | None = None) -> Any:
        """Run another action and wait for its result."""
        self._check_open()
        return self._app._call(fn, args, "action", identity=self._identity, origin_job=self._job)


class _AsyncProxy:
    """Wraps a synchronous facade so that each method is awaitable (run in a thread)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(attr, *args, **kwargs)

        return call


class AsyncActionCtx:
    """The context of an ``async def`` action: like ActionCtx, with awaitable methods."""

    db = _NoDb("ctx.db")
    table = _NoDb("ctx.table")
    skip_rules = _NoDb("ctx.skip_rules")
    orm = _NoDb("ctx.orm")

    def __init__(self, sync: ActionCtx) -> None:
        self._sync = sync
        self.auth = sync.auth
        self.scheduler = _AsyncProxy(sync.scheduler)
        self.storage = _AsyncProxy(sync.storage)

    @property
    def app(self) -> App:
        return self._sync.app

    @property
    def now(self) -> float:
        return self._sync.now

    async def run_query(self, fn: Any, args: dict[str, Any] | None = None) -> Any:
        return await asyncio.to_thread(self._sync.run_query, fn, args)

    async def run_mutation(self, fn: Any, args: dict[str, Any] | None = None) -> Any:
        return await asyncio.to_thread(self._sync.run_mutation, fn, args)

    async def run_action(self, fn: Any, args: dict[str, Any] | None = None) -> Any:
        return await asyncio.to_thread(self._sync.run_action, fn, args)


__all__ = [
    "Auth",
    "QueryCtx",
    "MutationCtx",
    "ActionCtx",
    "AsyncActionCtx",
    "Db",
    "DbQuery",
    "TableQuery",
]
