"""Async calls: ``await app.run_*_async`` and ``await client.*_async``.

Same results and errors as the sync calls; the event loop keeps serving while they run
(checked with events, never with timings); a call whose caller stops waiting still runs to
its end; database work runs in a bounded set of threads per App.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from ents import (
    App,
    ContextError,
    ConvexError,
    FunctionNotFoundError,
    ValidationError,
    define_ent,
    define_ent_schema,
)
from ents.aio import ACTION_THREADS, SQLITE_DB_THREADS, db_threads
from tests.pg import wait_for

WAIT = 60.0  # bounds a broken test only: every wait below ends on an event

schema = define_ent_schema({"notes": define_ent({"text": str}).field("owner", str | None, default=None)})


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` on a fresh loop, failing (not hanging) a test that never finishes."""
    return asyncio.run(asyncio.wait_for(coro, WAIT * 2))


def build(make_app: Callable[..., App]) -> App:
    app = make_app(schema)

    @app.mutation
    def add(ctx: Any, text: str) -> str:
        identity = ctx.auth.get_user_identity()
        return str(ctx.table("notes").insert({"text": text, "owner": identity}))

    @app.query
    def texts(ctx: Any) -> list[str]:
        return [n.text for n in ctx.table("notes")]

    @app.internal_query
    def hidden(ctx: Any) -> int:
        return 1

    @app.action
    def shout(ctx: Any, text: str) -> str:
        ctx.run_mutation(add, {"text": text.upper()})
        return text.upper()

    @app.action
    async def whisper(ctx: Any, text: str) -> dict[str, Any]:
        await ctx.run_mutation(add, {"text": text.lower()})
        return {"text": text.lower(), "who": ctx.auth.get_user_identity(), "thread": threading.get_ident()}

    @app.query
    def refuse(ctx: Any) -> None:
        raise ConvexError({"code": "NOPE"})

    return app


def test_async_calls_give_what_sync_calls_give(make_app: Callable[..., App]) -> None:
    app = build(make_app)
    fns = app.functions.by_name
    add, texts, shout, whisper = (fns[f"{__name__}:build.<locals>.{n}"] for n in ("add", "texts", "shout", "whisper"))

    async def main() -> None:
        note = await app.run_mutation_async(add, {"text": "a"})
        assert app.run_query(texts) == await app.run_query_async(texts) == ["a"]
        assert app.run(lambda ctx: ctx.table("notes").get_x(note).text) == "a"
        assert await app.run_action_async(shout, {"text": "b"}) == "B"
        # by name, and an async action on the caller's loop (its own thread is the loop's)
        out = await app.run_action_async(whisper.name, {"text": "C"}, identity="ada")
        assert out["text"] == "c" and out["who"] == "ada" and out["thread"] == threading.get_ident()
        assert await app.run_query_async(texts.name) == ["a", "B", "c"]

    run(main())


def test_async_errors_are_the_sync_errors(make_app: Callable[..., App]) -> None:
    app = build(make_app)
    fns = app.functions.by_name
    add, texts, hidden, refuse, whisper = (
        fns[f"{__name__}:build.<locals>.{n}"] for n in ("add", "texts", "hidden", "refuse", "whisper")
    )
    client = app.client(identity="eve")

    async def error_of(coro: Coroutine[Any, Any, Any]) -> BaseException:
        try:
            await coro
        except Exception as exc:
            return exc
        raise AssertionError("no error")

    def sync_error(fn: Callable[[], Any]) -> BaseException:
        try:
            fn()
        except Exception as exc:
            return exc
        raise AssertionError("no error")

    async def main() -> None:
        cases = [
            (client.query_async(hidden), lambda: client.query(hidden)),
            (client.query_async("nope:missing"), lambda: client.query("nope:missing")),
            (client.mutation_async(texts), lambda: client.mutation(texts)),
            (app.run_mutation_async(add, {"text": 1}), lambda: app.run_mutation(add, {"text": 1})),
            (client.action_async(whisper, {}), lambda: client.action(whisper, {})),
            (client.query_async(refuse), lambda: client.query(refuse)),
        ]
        for coro, sync in cases:
            got, want = await error_of(coro), sync_error(sync)
            assert type(got) is type(want) and str(got) == str(want)
        assert isinstance(await error_of(client.query_async(hidden)), FunctionNotFoundError)
        assert isinstance(await error_of(app.run_mutation_async(add, {"text": 1})), ValidationError)
        assert (await error_of(client.query_async(refuse))).data == {"code": "NOPE"}  # type: ignore[attr-defined]
        # a client's identity reaches the function; nothing was written by the failures
        await client.mutation_async(add, {"text": "mine"})
        assert app.run(lambda ctx: [n.owner for n in ctx.table("notes")]) == ["eve"]
        assert await client.action_async(whisper, {"text": "X"}) == {"text": "x", "who": "eve", "thread": threading.get_ident()}

    run(main())


@pytest.mark.parametrize("kind", ["sync action", "async action", "mutation"])
def test_the_loop_answers_a_ping_while_a_slow_call_runs(make_app: Callable[..., App], kind: str) -> None:
    """A web app awaits a slow call while another request (/ping) comes in on the same loop.

    The slow function waits for an event that is set only once /ping has been answered: a
    call that blocked the loop would keep /ping waiting until the function gave up."""
    app = make_app(schema)
    started = threading.Event()
    release = threading.Event()

    def wait_for_release() -> None:
        started.set()
        if not release.wait(WAIT):
            raise TimeoutError("never released: the loop did not answer /ping meanwhile")

    @app.action
    def slow_sync(ctx: Any) -> str:
        wait_for_release()
        return "done"

    @app.mutation
    def slow_mutation(ctx: Any) -> str:
        ctx.table("notes").insert({"text": "slow"})
        wait_for_release()
        return "done"

    async_release: dict[str, asyncio.Event] = {}

    @app.action
    async def slow_async(ctx: Any) -> str:
        started.set()
        await asyncio.wait_for(async_release["event"].wait(), WAIT)
        return "done"

    slow = {"sync action": slow_sync, "async action": slow_async, "mutation": slow_mutation}[kind]

    async def slow_endpoint(request: Request) -> JSONResponse:
        if kind == "mutation":
            return JSONResponse(await app.run_mutation_async(slow))
        return JSONResponse(await app.run_action_async(slow))

    async def ping(request: Request) -> PlainTextResponse:
        return PlainTextResponse("pong")

    web = Starlette(routes=[Route("/slow", slow_endpoint), Route("/ping", ping)])

    async def main() -> None:
        async_release["event"] = asyncio.Event()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=web), base_url="http://test") as http:
            slow_request = asyncio.create_task(http.get("/slow"))
            assert await asyncio.to_thread(started.wait, WAIT), "the slow function never started"
            pong = await http.get("/ping")
            assert pong.text == "pong"
            assert not slow_request.done()  # /ping was answered while the slow call ran
            release.set()
            async_release["event"].set()
            assert (await slow_request).json() == "done"

    run(main())


def test_a_cancelled_caller_does_not_stop_a_mutation_halfway(make_app: Callable[..., App]) -> None:
    """The task awaiting a mutation is cancelled (a client went away): the mutation goes on
    to its end in its thread and commits."""
    app = make_app(schema)
    started = threading.Event()
    release = threading.Event()

    @app.mutation
    def write_slowly(ctx: Any) -> None:
        ctx.table("notes").insert({"text": "first"})
        started.set()
        assert release.wait(WAIT)
        ctx.table("notes").insert({"text": "second"})

    async def main() -> None:
        task = asyncio.create_task(app.run_mutation_async(write_slowly))
        assert await asyncio.to_thread(started.wait, WAIT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()

    run(main())
    texts = lambda: app.run(lambda ctx: sorted(n.text for n in ctx.table("notes")))  # noqa: E731
    assert wait_for(lambda: texts() == ["first", "second"], WAIT), texts()


def test_a_cancelled_caller_does_not_stop_an_async_action_halfway(make_app: Callable[..., App]) -> None:
    app = make_app(schema)

    @app.mutation
    def add(ctx: Any, text: str) -> None:
        ctx.table("notes").insert({"text": text})

    gate: dict[str, asyncio.Event] = {}

    @app.action
    async def two_steps(ctx: Any) -> None:
        await ctx.run_mutation(add, {"text": "one"})
        gate["started"].set()
        await gate["release"].wait()
        await ctx.run_mutation(add, {"text": "two"})
        gate["done"].set()

    async def main() -> None:
        gate.update(started=asyncio.Event(), release=asyncio.Event(), done=asyncio.Event())
        task = asyncio.create_task(app.run_action_async(two_steps))
        await gate["started"].wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate["release"].set()
        await asyncio.wait_for(gate["done"].wait(), WAIT)

    run(main())
    assert app.run(lambda ctx: sorted(n.text for n in ctx.table("notes"))) == ["one", "two"]


def test_an_async_actions_ctx_is_closed_once_it_returns(make_app: Callable[..., App]) -> None:
    app = build(make_app)
    kept: list[Any] = []

    @app.action
    async def keep(ctx: Any) -> None:
        kept.append(ctx)

    run(app.run_action_async(keep))
    with pytest.raises(ContextError, match="used after the action returned"):
        run(kept[0].run_query(app.functions.by_name[f"{__name__}:build.<locals>.texts"]))


def test_database_threads_are_bounded_by_the_connection_pool(db_url: str, backend: str, tmp_path: Any) -> None:
    """On PostgreSQL as many threads run async queries as the pool has connections (so that
    none waits for a connection another holds); on SQLite a few."""
    if backend == "memory":
        pytest.skip("in-memory SQLite runs one transaction at a time, whatever the threads")
    url = db_url + ("&pool_size=3" if backend == "postgres" else "")
    limit = 3 if backend == "postgres" else SQLITE_DB_THREADS
    app = App(schema, url, storage_dir=str(tmp_path / "files"))
    lock = threading.Lock()
    state = {"running": 0, "most": 0}
    go = threading.Event()

    @app.query
    def held(ctx: Any) -> int:
        len(list(ctx.table("notes")))  # inside its transaction, on a connection
        with lock:
            state["running"] += 1
            state["most"] = max(state["most"], state["running"])
        try:
            assert go.wait(WAIT)
        finally:
            with lock:
                state["running"] -= 1
        return 1

    async def main() -> list[Any]:
        calls = [asyncio.create_task(app.run_query_async(held)) for _ in range(limit * 2 + 1)]
        reached = await asyncio.to_thread(wait_for, lambda: state["running"] == limit, WAIT)
        go.set()
        assert reached, f"only {state['running']} queries ran at once, expected {limit}"
        return await asyncio.gather(*calls)

    try:
        assert db_threads(app) == limit
        assert run(main()) == [1] * (limit * 2 + 1)
        assert state["most"] == limit
    finally:
        app.close()
    assert ACTION_THREADS >= limit


def test_async_calls_on_a_closed_app_fail_clearly(make_app: Callable[..., App]) -> None:
    app = build(make_app)
    texts = app.functions.by_name[f"{__name__}:build.<locals>.texts"]
    app.close()
    with pytest.raises(Exception, match="closed"):
        run(app.run_query_async(texts))
