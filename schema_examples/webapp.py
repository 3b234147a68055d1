"""A FastAPI app on ents: endpoints that await ents calls, Convex's HTTP API mounted beside
them, and a worker running in the same process.

* ``GET /todos`` and ``POST /todos`` await ``client.query_async`` / ``mutation_async``: the
  event loop serves other requests while the database works;
* ``/convex/api/...`` is Convex's HTTP API for the same functions (``ConvexHttpClient(
  "http://host/convex")`` calls them), with the same bearer tokens;
* the worker (started and stopped with the server's lifespan) runs the reminders that
  ``add_todo`` schedules.

    python -m schema_examples.webapp      # a short demo, with an in-process HTTP client
    uvicorn schema_examples.webapp:create_web --factory    # serve it (pip install 'ents[server]' fastapi)
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import httpx
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ents import App, ConvexError, define_ent, define_ent_schema
from ents.clock import Clock
from ents.http import asgi_app, worker_lifespan

schema = define_ent_schema({
    "todos": define_ent({"text": str, "owner": str})
        .field("reminded", bool, default=False)
        .edge("reminder", to="_scheduled_functions", optional=True, deletion="hard"),
})

# Tokens and who they stand for (a real app verifies a JWT here).
TOKENS = {"ada-token": {"subject": "ada"}, "bob-token": {"subject": "bob"}}


def authenticate(token: str) -> dict[str, str]:
    """The identity of a bearer token (raises for an unknown one: 401)."""
    return TOKENS[token]


def make_app(url: str | None = None, clock: Clock | None = None) -> App:
    """The todo functions on ``url`` (in-memory SQLite by default)."""
    app = App(schema, url or "sqlite://", clock=clock)

    def owner(ctx: Any) -> str:
        identity = ctx.auth.get_user_identity()
        if identity is None:
            raise ConvexError({"code": "UNAUTHENTICATED", "message": "sign in first"})
        return str(identity["subject"])

    @app.mutation(name="todos:add")
    def add_todo(ctx: Any, text: str, remind_in_ms: float | None = None) -> str:
        todo_id = ctx.table("todos").insert({"text": text, "owner": owner(ctx)})
        if remind_in_ms is not None:
            job = ctx.scheduler.run_after(remind_in_ms, remind, {"todo_id": todo_id})
            ctx.table("todos").get_x(todo_id).patch({"reminder_id": job})
        return str(todo_id)

    @app.query(name="todos:list")
    def list_todos(ctx: Any) -> list[dict[str, Any]]:
        mine = owner(ctx)
        return [{"id": t._id, "text": t.text, "reminded": t.reminded} for t in ctx.table("todos") if t.owner == mine]

    @app.internal_mutation(name="todos:remind")
    def remind(ctx: Any, todo_id: str) -> None:
        todo = ctx.table("todos").get(todo_id)
        if todo is not None:
            todo.patch({"reminded": True})

    return app


class NewTodo(BaseModel):
    text: str
    remind_in_ms: float | None = None


def make_web(app: App, *, worker: bool = True) -> FastAPI:
    """The FastAPI application: its own endpoints, the HTTP API under /convex, a worker."""
    web = FastAPI(lifespan=worker_lifespan(app) if worker else None)

    def caller(authorization: str | None = Header(default=None)) -> Any:
        token = (authorization or "").removeprefix("Bearer ").strip()
        if token not in TOKENS:
            raise HTTPException(status_code=401, detail="a bearer token is needed")
        return app.client(identity=authenticate(token))

    @web.exception_handler(ConvexError)
    async def convex_error(request: Request, exc: ConvexError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"error": exc.data})

    @web.get("/ping")
    async def ping() -> str:
        return "pong"

    @web.get("/todos")
    async def todos(client: Any = Depends(caller)) -> Any:
        return await client.query_async("todos:list")

    @web.post("/todos", status_code=201)
    async def add(todo: NewTodo, client: Any = Depends(caller)) -> dict[str, str]:
        todo_id = await client.mutation_async("todos:add", todo.model_dump(exclude_none=True))
        return {"id": todo_id}

    web.mount("/convex", asgi_app(app, authenticate=authenticate))
    return web


def create_web() -> FastAPI:
    """For ``uvicorn schema_examples.webapp:create_web --factory``: $ENTS_DATABASE_URL or ./ents.db."""
    return make_web(make_app(os.environ.get("ENTS_DATABASE_URL", "sqlite:///ents.db")))


async def demo(web: FastAPI) -> dict[str, Any]:
    ada = {"Authorization": "Bearer ada-token"}
    transport = httpx.ASGITransport(app=web)
    async with web.router.lifespan_context(web), httpx.AsyncClient(transport=transport, base_url="http://demo") as http:
        added = (await http.post("/todos", json={"text": "water the plants", "remind_in_ms": 0}, headers=ada)).json()
        print("POST /todos ->", added)
        # The worker runs the reminder in the background; wait (bounded) until it has.
        deadline = time.monotonic() + 30
        while not (todos := (await http.get("/todos", headers=ada)).json())[0]["reminded"]:
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not run the reminder within 30 s")
            await asyncio.sleep(0.02)
        print("GET /todos ->", todos)
        convex = await http.post("/convex/api/query", json={"path": "todos:list", "args": {}}, headers=ada)
        print("POST /convex/api/query ->", convex.status_code, convex.json())
        refused = await http.post("/convex/api/mutation", json={"path": "todos:remind", "args": {"todo_id": added["id"]}})
        print("POST /convex/api/mutation (internal) ->", refused.status_code, refused.json())
        anonymous = await http.post("/convex/api/query", json={"path": "todos:list", "args": {}})
        print("POST /convex/api/query (no token) ->", anonymous.status_code, anonymous.json())
    return {"todos": todos, "convex": convex.json(), "refused": refused.status_code, "anonymous": anonymous.json()}


def main() -> dict[str, Any]:
    app = make_app()
    try:
        return asyncio.run(demo(make_web(app)))
    finally:
        app.close()


if __name__ == "__main__":
    main()
