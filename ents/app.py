"""The App: a schema bound to a database, a clock and a set of functions.

``App(schema, url)`` opens (and creates or migrates) the database. Functions are
registered with the decorators; trusted code calls them with ``app.run_query`` /
``run_mutation`` / ``run_action`` / ``run``; untrusted callers go through
``app.client(identity=...)``, which cannot see internal functions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .aio import call_async
from .backends import open_backend, redact_url
from .clock import Clock, SystemClock
from .context import ActionCtx, AsyncActionCtx, MutationCtx, QueryCtx
from .ddl import sync_schema
from .errors import ConfigurationError, DatabaseError, EntsError, FunctionNotFoundError, SchemaError
from .functions import FunctionDef, Kind, Registry, RetryPolicy, a_kind
from .ids import IdCodec
from .runtime import TableRuntime
from .scheduler import follow_origin
from .schema import EntSchema
from .storage import BlobStore
from .transaction import Transaction
from .writer import ConflictRace

if TYPE_CHECKING:
    from .crons import CronJobs
    from .rules import RulesFunction
    from .worker import Worker

log = logging.getLogger("ents")
F = TypeVar("F", bound=Callable[..., Any])

#: transient errors (busy database, serialization failures) are retried this long
RETRY_SECONDS = 30.0


class App:
    """An ents application: schema + database + clock + functions (+ crons)."""

    def __init__(
        self,
        schema: EntSchema,
        url: str | None = None,
        *,
        clock: Clock | None = None,
        crons: CronJobs | None = None,
        storage_dir: str | None = None,
        storage_url: str | None = None,
        scheduled_delete_batch: int = 1000,
        rules: RulesFunction | None = None,
    ) -> None:
        if not isinstance(schema, EntSchema):
            raise SchemaError("App() takes the result of define_ent_schema(...)")
        if rules is not None and not callable(rules):
            raise ConfigurationError("App(rules=...) takes a function of ctx returning {table: Rules(...)}")
        #: row-level rules: ``rules(ctx)`` is built once per function call (see ents.rules)
        self.rules = rules
        self.schema = schema
        self.backend = open_backend(url)
        self.url = self.backend.url
        self.clock: Clock = clock or SystemClock()
        try:
            numbers = sync_schema(self.backend, schema.tables)
        except BaseException as exc:
            self.backend.close()
            if isinstance(exc, self.backend.dialect.driver_errors):
                # e.g. a read-only SQLite file that opened but cannot take the schema
                raise ConfigurationError(f"Cannot prepare the database at {self.backend.describe()}: {exc}") from exc
            raise
        self.codec = IdCodec(numbers)
        self.runtimes: dict[str, TableRuntime] = {
            name: TableRuntime(t, self.backend.dialect, self.codec) for name, t in schema.tables.items()
        }
        self.blobs = self._blob_store(storage_dir, storage_url)
        self.functions = Registry()
        self.scheduled_delete_batch = scheduled_delete_batch
        self._wake_lock = threading.Lock()
        self._wake_callbacks: list[Callable[[float], None]] = []
        self.crons: CronJobs | None = crons
        self._register_builtins()
        self._closed = False

    def _blob_store(self, storage_dir: str | None, storage_url: str | None) -> BlobStore:
        if storage_dir is not None:
            return BlobStore(storage_dir, storage_url)
        path = getattr(self.backend, "path", None)
        if path:
            return BlobStore(path + ".files", storage_url)
        if getattr(self.backend, "memory", False):
            return BlobStore.temporary_store(storage_url)
        # A server database: one directory per database and schema, so that two apps on
        # one server never share blob files. Set storage_dir to put them elsewhere.
        return BlobStore(os.path.join("ents-files", self.backend.storage_namespace()), storage_url)

    def _register_builtins(self) -> None:
        from .deletion import SCHEDULED_DELETE, scheduled_delete_step

        app = self

        def scheduled_delete(ctx: Any, table: str, id: str, deletion_time: float) -> None:
            tx = ctx._tx
            if not scheduled_delete_step(tx, table, id, deletion_time, app.scheduled_delete_batch):
                from .scheduler import schedule_internal

                schedule_internal(tx, SCHEDULED_DELETE, {"table": table, "id": id, "deletion_time": deletion_time}, tx.now)

        self.functions.add(FunctionDef(self, scheduled_delete, "mutation", True, name=SCHEDULED_DELETE))

    # -- registration -----------------------------------------------------------------

    def _decorator(self, kind: Kind, internal: bool, fn: Any, name: str | None, retry: RetryPolicy | None = None) -> Any:
        def register(handler: Callable[..., Any]) -> FunctionDef:
            return self.functions.add(FunctionDef(self, handler, kind, internal, name=name, retry=retry))

        if fn is None:
            return register
        return register(fn)

    def query(self, fn: F | None = None, *, name: str | None = None) -> Any:
        """Register a public query (read-only, one consistent snapshot)."""
        return self._decorator("query", False, fn, name)

    def mutation(self, fn: F | None = None, *, name: str | None = None) -> Any:
        """Register a public mutation (one transaction, all or nothing)."""
        return self._decorator("mutation", False, fn, name)

    def action(self, fn: F | None = None, *, name: str | None = None, retry: RetryPolicy | None = None) -> Any:
        """Register a public action (no direct database access; may be async)."""
        return self._decorator("action", False, fn, name, retry)

    def internal_query(self, fn: F | None = None, *, name: str | None = None) -> Any:
        """Register a query that clients cannot call."""
        return self._decorator("query", True, fn, name)

    def internal_mutation(self, fn: F | None = None, *, name: str | None = None) -> Any:
        """Register a mutation that clients cannot call."""
        return self._decorator("mutation", True, fn, name)

    def internal_action(self, fn: F | None = None, *, name: str | None = None, retry: RetryPolicy | None = None) -> Any:
        """Register an action that clients cannot call; ``retry=RetryPolicy(...)`` opts into retries."""
        return self._decorator("action", True, fn, name, retry)

    # -- transactions -----------------------------------------------------------------

    def _transact(
        self,
        body: Callable[[Transaction], Any],
        *,
        write: bool,
        identity: Any = None,
        function: str | None = None,
    ) -> Any:
        """Run ``body`` in one transaction, retrying transient failures with backoff."""
        if self._closed:
            raise EntsError("This App was closed")
        backend = self.backend
        dialect = backend.dialect
        attempt = 0
        deadline = 0.0  # set at the first failure: retries go on for RETRY_SECONDS from there
        while True:
            try:
                conn = backend.connect()
            except Exception as exc:
                deadline = deadline or time.monotonic() + RETRY_SECONDS
                if dialect.classify(exc) in ("transient", "connection") and time.monotonic() < deadline:
                    attempt += 1
                    time.sleep(min(0.01 * 2**attempt, 1.0))
                    continue
                raise DatabaseError(f"Cannot connect to the database at {backend.describe()}: {exc}") from exc
            tx = Transaction(self, conn, write=write, now=self.clock.now(), identity=identity, function=function)
            committing = False
            try:
                conn.begin(write)
                result = body(tx)
                committing = True
                conn.commit()
            except BaseException as exc:
                try:
                    conn.rollback()
                except Exception:  # pragma: no cover - the connection may be gone
                    pass
                backend.release(conn)
                tx.rolled_back()
                kind = "conflict" if isinstance(exc, ConflictRace) else dialect.classify(exc)
                if committing and kind == "connection":
                    # The COMMIT may or may not have reached the database: never replay it.
                    raise DatabaseError(
                        f"Lost the database connection while committing `{function or 'transaction'}`; "
                        "it may or may not have been applied",
                        function=function,
                    ) from exc
                transient = kind in ("transient", "conflict", "connection")
                deadline = deadline or time.monotonic() + RETRY_SECONDS
                if transient and time.monotonic() < deadline:
                    attempt += 1
                    time.sleep(min(0.001 * 2**attempt, 0.1) * (0.5 + random.random()))
                    continue
                if transient:
                    raise DatabaseError(
                        f"The database stayed unavailable or busy for {RETRY_SECONDS:.0f}s; gave up after "
                        f"{attempt} retries ({exc})",
                        function=function,
                    ) from exc
                if dialect.driver_errors and isinstance(exc, dialect.driver_errors):
                    raise DatabaseError(f"Database error in `{function or 'transaction'}`: {exc}", function=function) from exc
                raise
            backend.release(conn)
            tx.committed()
            if tx.earliest_new_job is not None:
                self._wake(tx.earliest_new_job)
            return result

    # -- calling functions ------------------------------------------------------------

    def _call(self, fn: Any, args: Any, kind: Kind, *, identity: Any = None, origin_job: int | None = None, client: bool = False) -> Any:
        fdef = self.functions.resolve(fn)
        if client and fdef.internal:
            raise FunctionNotFoundError(f"Could not find public function `{fdef.name}`", function=fdef.name)
        if fdef.kind != kind:
            raise FunctionNotFoundError(
                f"Trying to execute `{fdef.name}` as {a_kind(kind)}, but it is defined as {a_kind(fdef.kind)}",
                function=fdef.name,
            )
        kwargs = fdef.validate_args(args)
        if kind == "action":
            return self._run_action_handler(fdef, kwargs, identity=identity, job=origin_job)

        def body(tx: Transaction) -> Any:
            if kind == "mutation":
                follow_origin(tx, origin_job)
                ctx: QueryCtx = MutationCtx(tx)
            else:
                ctx = QueryCtx(tx)
            return fdef.validate_result(fdef.handler(ctx, **kwargs))

        return self._transact(body, write=kind == "mutation", identity=identity, function=fdef.name)

    def _run_action_handler(self, fdef: FunctionDef, kwargs: dict[str, Any], *, identity: Any, job: int | None) -> Any:
        ctx = ActionCtx(self, identity=identity, job=job, function=fdef.name)
        try:
            if fdef.is_async:
                result = _run_coroutine(fdef.handler(AsyncActionCtx(ctx), **kwargs))
            else:
                result = fdef.handler(ctx, **kwargs)
        finally:
            ctx._end()
        return fdef.validate_result(result)

    def run_query(self, fn: Any, args: dict[str, Any] | None = None, *, identity: Any = None) -> Any:
        """Run a query (public or internal) and return its result."""
        return self._call(fn, args, "query", identity=identity)

    def run_mutation(self, fn: Any, args: dict[str, Any] | None = None, *, identity: Any = None) -> Any:
        """Run a mutation (public or internal) in one transaction and return its result."""
        return self._call(fn, args, "mutation", identity=identity)

    def run_action(self, fn: Any, args: dict[str, Any] | None = None, *, identity: Any = None) -> Any:
        """Run an action (public or internal) and return its result."""
        return self._call(fn, args, "action", identity=identity)

    def run(self, fn: Callable[[MutationCtx], Any], *, identity: Any = None) -> Any:
        """Run ad-hoc code with a mutation ``ctx`` in one transaction (all or nothing)."""
        return self._transact(lambda tx: fn(MutationCtx(tx)), write=True, identity=identity, function="app.run")

    def client(self, identity: Any = None) -> Client:
        """An untrusted caller: public functions only, with ``identity`` as ``ctx.auth``."""
        return Client(self, identity)

    # -- scheduling -------------------------------------------------------------------

    def _wake(self, due: float) -> None:
        with self._wake_lock:
            callbacks = list(self._wake_callbacks)
        for cb in callbacks:
            cb(due)

    def _on_wake(self, callback: Callable[[float], None]) -> Callable[[], None]:
        with self._wake_lock:
            self._wake_callbacks.append(callback)

        def remove() -> None:
            with self._wake_lock:
                if callback in self._wake_callbacks:
                    self._wake_callbacks.remove(callback)

        return remove

    def worker(self, **options: Any) -> Worker:
        """A worker that runs due jobs and crons: ``.run()``, ``.start()``, ``.stop()``."""
        from .worker import Worker

        return Worker(self, **options)

    def finish_in_progress_scheduled_functions(self) -> int:
        """Run every job and cron run due now, and what they make due now; returns how many ran."""
        from .worker import finish_in_progress

        return finish_in_progress(self)

    def finish_all_scheduled_functions(self, max_iterations: int = 100) -> int:
        """Advance a fake clock job by job until no scheduled function is pending."""
        from .worker import finish_all

        return finish_all(self, max_iterations)

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Close connections (and a temporary file store)."""
        if self._closed:
            return
        self._closed = True
        self.backend.close()
        self.blobs.close()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"App('{redact_url(self.url)}')"

    # -- async calls (ents.aio) -------------------------------------------------------

    async def run_query_async(self, fn: Any, args: dict[str, Any] | None = None, *, identity: Any = None) -> Any:
        """``run_query`` for async code: the event loop keeps running meanwhile (see ents.aio)."""
        return await call_async(self, fn, args, "query", identity=identity)

    async def run_mutation_async(self, fn: Any, args: dict[str, Any] | None = None, *, identity: Any = None) -> Any:
        """``run_mutation`` for async code; once started, the mutation runs to its end (and
        commits) even if the awaiting task is cancelled."""
        return await call_async(self, fn, args, "mutation", identity=identity)

    async def run_action_async(self, fn: Any, args: dict[str, Any] | None = None, *, identity: Any = None) -> Any:
        """``run_action`` for async code: an ``async def`` action runs on the caller's loop, a
        plain one in a thread."""
        return await call_async(self, fn, args, "action", identity=identity)


class Client:
    """An untrusted caller of an App (``app.client(identity=...)``).

    Internal functions are refused exactly as if they did not exist, and a function can
    only be called as the kind it is.
    """

    def __init__(self, app: App, identity: Any) -> None:
        self._app = app
        self._identity = identity

    def _resolve_public(self, fn: Any) -> Any:
        # A missing and an internal function must be indistinguishable to a client: the
        # same error, built the same way, outside any ``except`` block so that neither
        # carries a ``__context__`` (a chained "Could not find function" would tell a
        # missing name from an internal one).
        name: str
        try:
            fdef = self._app.functions.resolve(fn)
        except FunctionNotFoundError as exc:
            fdef = None
            name = exc.function or str(fn)
        if fdef is not None and not fdef.internal:
            return fdef
        if fdef is not None:
            name = fdef.name
        raise FunctionNotFoundError(f"Could not find public function `{name}`", function=name)

    def query(self, fn: Any, args: dict[str, Any] | None = None) -> Any:
        return self._app._call(self._resolve_public(fn), args, "query", identity=self._identity, client=True)

    def mutation(self, fn: Any, args: dict[str, Any] | None = None) -> Any:
        return self._app._call(self._resolve_public(fn), args, "mutation", identity=self._identity, client=True)

    def action(self, fn: Any, args: dict[str, Any] | None = None) -> Any:
        return self._app._call(self._resolve_public(fn), args, "action", identity=self._identity, client=True)

    async def query_async(self, fn: Any, args: dict[str, Any] | None = None) -> Any:
        """``query`` for async code (see ``App.run_query_async``)."""
        return await call_async(self._app, fn, args, "query", client=self)

    async def mutation_async(self, fn: Any, args: dict[str, Any] | None = None) -> Any:
        """``mutation`` for async code (see ``App.run_mutation_async``)."""
        return await call_async(self._app, fn, args, "mutation", client=self)

    async def action_async(self, fn: Any, args: dict[str, Any] | None = None) -> Any:
        """``action`` for async code (see ``App.run_action_async``)."""
        return await call_async(self._app, fn, args, "action", client=self)


def _run_coroutine(coro: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Called from inside an event loop (e.g. an async test): run in a helper thread.
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as exc:  # pragma: no cover - re-raised below
            result["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")
