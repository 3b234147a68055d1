"""Self-destructing messages: each message schedules its own deletion.

Seed 004 ("Delayed execution") and seed 002: ``run_after(expires_in_ms, destroy, ...)``.
The job is linked to the message with an edge, so a listing can show when each message
expires, and deleting a message early cancels its pending self-destruct
(``deletion="hard"``) instead of leaving a job that would find nothing to do.

    python -m schema_examples.messages
"""

from __future__ import annotations

from typing import Any

from ents import App, ValidationError, define_ent, define_ent_schema
from ents.clock import Clock
from ents.testing import FakeClock

schema = define_ent_schema(
    {
        "messages": define_ent({"body": str}).edge("expiry", to="_scheduled_functions", deletion="hard"),
    }
)


def send_expiring_message(ctx: Any, body: str, expires_in_ms: float) -> str:
    if expires_in_ms <= 0:
        raise ValidationError("expires_in_ms must be positive", field="expires_in_ms")
    message_id = ctx.table("messages").insert({"body": body})
    job_id = ctx.scheduler.run_after(expires_in_ms, destroy, {"message_id": message_id})
    ctx.table("messages").get_x(message_id).patch({"expiry_id": job_id})
    return str(message_id)


def destroy(ctx: Any, message_id: str) -> bool:
    """The scheduled self-destruct. The message may already be gone: check, then delete."""
    message = ctx.table("messages").get(message_id)
    if message is None:
        return False
    message.delete()
    return True


def delete_message(ctx: Any, message_id: str) -> None:
    """Delete early; the edge cancels the pending self-destruct."""
    ctx.table("messages").get_x(message_id).delete()


def list_messages(ctx: Any) -> list[dict[str, Any]]:
    return ctx.table("messages").map(  # type: ignore[no-any-return]
        lambda m: {
            "id": m._id,
            "body": m.body,
            "expires_at": m.edge("expiry").scheduled_time if m.edge("expiry") else None,
        }
    )


def make_app(url: str | None = None, clock: Clock | None = None) -> App:
    """The messages app on ``url`` (in-memory SQLite by default)."""
    app = App(schema, url or "sqlite://", clock=clock)
    app.mutation(send_expiring_message)
    app.mutation(delete_message)
    app.query(list_messages)
    app.internal_mutation(destroy)
    return app


def main() -> dict[str, Any]:
    clock = FakeClock()  # simulated time: minutes pass instantly
    with make_app(clock=clock) as app:
        start = clock.now()

        def show(label: str) -> list[dict[str, Any]]:
            rows = app.run_query(list_messages)
            print(f"t+{(clock.now() - start) / 60_000:.0f} min, {label}:")
            for r in rows:
                print(f"    {r['body']!r:<28} self-destructs at t+{(r['expires_at'] - start) / 60_000:.0f} min")
            if not rows:
                print("    (no messages)")
            return rows

        app.run_mutation(send_expiring_message, {"body": "the password is swordfish", "expires_in_ms": 60_000})
        app.run_mutation(send_expiring_message, {"body": "meet at noon", "expires_in_ms": 10 * 60_000})
        oops = app.run_mutation(send_expiring_message, {"body": "sent to the wrong chat", "expires_in_ms": 60 * 60_000})
        show("three messages sent")
        job_id = app.run(lambda ctx: ctx.table("messages").get_x(oops).expiry_id)
        app.run_mutation(delete_message, {"message_id": oops})
        canceled = app.run(lambda ctx: ctx.db.system.get(job_id)["state"]["kind"])
        print(f"deleted 'sent to the wrong chat' by hand: its self-destruct job is {canceled}")
        clock.advance(60_000)
        app.finish_in_progress_scheduled_functions()
        show("one minute later")
        app.finish_all_scheduled_functions()
        rows = show("after the last self-destruct")
        return {"left": rows, "canceled": canceled}


if __name__ == "__main__":
    main()
