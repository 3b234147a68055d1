"""Async calls: ``await app.run_query_async(...)`` and friends, without blocking the loop.

Every database call of ents is blocking (sqlite3, psycopg), so an ``async`` caller (a FastAPI
endpoint, the HTTP API) runs it in a thread and awaits the result. The threads are bounded and
belong to the App:

* queries, mutations and their transactions run in at most :func:`db_threads` threads: on
  PostgreSQL as many as the connection pool holds (``pool_size`` in the URL, 10 by default),
  so that a thread never waits for a connection another of these threads holds; on SQLite a
  few (writers take turns there anyway);
* a synchronous action runs in one of at most ``ACTION_THREADS`` threads (it holds no
  connection while it does its own work, only during its ``ctx.run_*`` steps);
* an ``async def`` action runs on the caller's event loop, and each step of its context
  (``await ctx.run_query(...)``) in a thread of its own.

More calls than threads wait for a free one; the loop goes on serving meanwhile.

A call that has started runs to its end even if its caller stops waiting (a cancelled task, a
client that went away): a mutation commits or fails as it would have, only its result is
lost. Cancelling the awaiting task never interrupts a transaction halfway.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from .context import ActionCtx, AsyncActionCtx
from .functions import FunctionDef, Kind

if TYPE_CHECKING:
    from .app import App, Client

log = logging.getLogger("ents")
T = TypeVar("T")

#: synchronous actions run at once by the async calls of one App; more wait their turn
ACTION_THREADS = 32
#: threads for queries and mutations on SQLite (one writer at a time; readers in parallel)
SQLITE_DB_THREADS = 4


def db_threads(app: App) -> int:
    """How many threads run one App's async queries and mutations at once.

    On PostgreSQL, the connection pool's size: each of these threads holds at most one
    connection at a time, so they never starve one another of connections. A worker in the
    same process takes connections from the same pool: give it room with a larger
    ``pool_size`` (see the README, "Web frameworks and the HTTP API").
    """
    pool = getattr(app.backend, "pool", None)
    size = getattr(pool, "max_size", None)
    if isinstance(size, int) and size > 0:
        return size
    return SQLITE_DB_THREADS


class _Threads:
    """The executors of one App (created on its first async call)."""

    def __init__(self, db: int) -> None:
        self.db = ThreadPoolExecutor(max_workers=db, thread_name_prefix="ents-async")
        self.actions = ThreadPoolExecutor(max_workers=ACTION_THREADS, thread_name_prefix="ents-async-action")
        # Work whose caller stopped waiting: kept referenced until it ends.
        self.orphans: set[asyncio.Future[Any]] = set()


# Keyed weakly by App: an App that is dropped takes its threads with it (an idle executor's
# threads exit once the executor is collected).
_threads: weakref.WeakKeyDictionary[App, _Threads] = weakref.WeakKeyDictionary()
_threads_lock = threading.Lock()


def _threads_of(app: App) -> _Threads:
    threads = _threads.get(app)
    if threads is None:
        with _threads_lock:
            threads = _threads.get(app)
            if threads is None:
                threads = _threads[app] = _Threads(db_threads(app))
    return threads


async def run_blocking(app: App, fn: Callable[[], T], *, action: bool = False) -> T:
    """Run ``fn()`` (blocking work on ``app``) in one of the App's threads and await it.

    The caller's context variables go with it (as with ``asyncio.to_thread``). If the caller
    is cancelled, the work still runs to its end; only its result is dropped.
    """
    threads = _threads_of(app)
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    future = loop.run_in_executor(threads.actions if action else threads.db, context.run, fn)
    return await _finish(threads, future)


async def _finish(threads: _Threads, future: asyncio.Future[T]) -> T:
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if not future.done():
            threads.orphans.add(future)
            future.add_done_callback(_orphan_done(threads))
        raise


def _orphan_done(threads: _Threads) -> Callable[[asyncio.Future[Any]], None]:
    def done(future: asyncio.Future[Any]) -> None:
        threads.orphans.discard(future)
        if not future.cancelled() and future.exception() is not None:
            # Nobody waits for it any more: say that it failed, without the traceback.
            log.info("a call whose caller stopped waiting failed: %s", type(future.exception()).__name__)

    return done


async def call_async(
    app: App,
    fn: Any,
    args: dict[str, Any] | None,
    kind: Kind,
    *,
    identity: Any = None,
    client: Client | None = None,
) -> Any:
    """``app.run_<kind>`` (or ``client.<kind>``) awaited: same checks, same result, same errors."""
    fdef: FunctionDef = client._resolve_public(fn) if client is not None else app.functions.resolve(fn)
    if kind == "action" and fdef.kind == "action" and fdef.is_async:
        return await run_async_action(app, fdef, args, identity=client._identity if client is not None else identity)
    call: Callable[[], Any]
    if client is not None:
        method = getattr(client, kind)
        call = lambda: method(fdef, args)  # noqa: E731
    else:
        run = {"query": app.run_query, "mutation": app.run_mutation, "action": app.run_action}[kind]
        call = lambda: run(fdef, args, identity=identity)  # noqa: E731
    # A wrong kind raises from the sync call, with its message.
    return await run_blocking(app, call, action=fdef.kind == "action")


async def run_async_action(app: App, fdef: FunctionDef, args: dict[str, Any] | None, *, identity: Any) -> Any:
    """Run an ``async def`` action on the running loop (as ``app.run_action`` does in a loop
    of its own): arguments and result validated, its ctx closed when it returns."""
    kwargs = fdef.validate_args(args)
    threads = _threads_of(app)

    async def run() -> Any:
        ctx = ActionCtx(app, identity=identity, function=fdef.name)
        try:
            result = await fdef.handler(AsyncActionCtx(ctx), **kwargs)
        finally:
            ctx._end()
        return fdef.validate_result(result)

    # A task of its own, so that cancelling the caller does not interrupt the action midway.
    task: asyncio.Future[Any] = asyncio.ensure_future(run())
    return await _finish(threads, task)


__all__ = ["ACTION_THREADS", "SQLITE_DB_THREADS", "call_async", "db_threads", "run_async_action", "run_blocking"]
