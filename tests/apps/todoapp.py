"""A todo app written as the README writes one: a module-level ``app`` and decorators.

Its database is whatever ``$TODO_DATABASE_URL`` says (a file by default in a real
deployment); the tests never touch it: they run ``ents.testing.test_app(app)``, a copy on
a fresh in-memory database with a FakeClock (tests/test_module_app.py).
"""

from __future__ import annotations

import os
from typing import Any

from ents import App, Rules, cron_jobs, define_ent, define_ent_schema

schema = define_ent_schema({
    "users": define_ent({"name": str}).field("email", str, unique=True).edges("todos", ref=True),
    "todos": define_ent({"text": str}).field("done", bool, default=False).edge("user")
        .edge("reminder", to="_scheduled_functions", optional=True, deletion="hard"),
    "digests": define_ent({"open": int}),
})


def rules(ctx: Any) -> dict[str, Rules]:
    viewer = ctx.auth.get_user_identity()
    # A signed-in user reads only their own todos; trusted calls (no identity) read all.
    return {"todos": Rules(read=lambda todo: viewer is None or todo.edge("user").email == viewer)}


crons = cron_jobs()
app = App(schema, os.environ.get("TODO_DATABASE_URL", "sqlite://"), crons=crons, rules=rules)


@app.mutation
def create_user(ctx: Any, name: str, email: str) -> str:
    return str(ctx.table("users").insert({"name": name, "email": email}))


@app.mutation
def add_todo(ctx: Any, user_id: str, text: str, remind_in_ms: float | None = None) -> str:
    todo_id = ctx.table("todos").insert({"text": text, "user_id": user_id})
    if remind_in_ms is not None:
        job = ctx.scheduler.run_after(remind_in_ms, remind, {"todo_id": todo_id})
        ctx.table("todos").get_x(todo_id).patch({"reminder_id": job})
    return str(todo_id)


@app.internal_mutation
def remind(ctx: Any, todo_id: str) -> None:
    todo = ctx.table("todos").get_x(todo_id)
    todo.patch({"text": f"(reminded) {todo.text}"})


@app.query
def my_todos(ctx: Any) -> list[str]:
    return [t.text for t in ctx.table("todos")]


@app.internal_mutation
def write_digest(ctx: Any) -> None:
    ctx.table("digests").insert({"open": len([t for t in ctx.table("todos") if not t.done])})


@app.action
def count_open(ctx: Any) -> int:
    return len(ctx.run_query(my_todos))


crons.daily("digest", {"hour_utc": 7, "minute_utc": 0}, write_digest)
