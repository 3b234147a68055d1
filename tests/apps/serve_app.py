"""An App served by ``ents serve`` in tests/test_http.py (database from $ENTS_TEST_URL)."""

from __future__ import annotations

import os
from typing import Any

from ents import App, define_ent, define_ent_schema

schema = define_ent_schema({"greetings": define_ent({"text": str}).field("sent", bool, default=False)})

app = App(schema, os.environ["ENTS_TEST_URL"])


def authenticate(token: str) -> str:
    """Tokens are "token-<name>"; anything else is refused."""
    if not token.startswith("token-"):
        raise PermissionError("unknown token")
    return token.removeprefix("token-")


@app.mutation(name="greetings:greet")
def greet(ctx: Any) -> str:
    greeting = ctx.table("greetings").insert({"text": f"hello {ctx.auth.get_user_identity()}"})
    ctx.scheduler.run_after(0, send, {"greeting_id": greeting})  # the worker beside the server runs it
    return str(greeting)


@app.internal_mutation(name="greetings:send")
def send(ctx: Any, greeting_id: str) -> None:
    ctx.table("greetings").get_x(greeting_id).patch({"sent": True})


@app.query(name="greetings:list")
def greetings(ctx: Any) -> list[dict[str, Any]]:
    return [{"text": g.text, "sent": g.sent} for g in ctx.table("greetings")]
