"""Reminders at a time the user picks, which the user can cancel.

Seed 001 (kitcn, ``caller.schedule.at(timestamp)``) and seed 004 ("Scheduled at a
specific time", "Cancel scheduled functions"): ``run_at(send_at, ...)`` returns the job
id, stored in an edge; cancelling calls ``ctx.scheduler.cancel`` on it. The edge shows each
reminder's state, and deleting a reminder (or its user) cancels it too.

    python -m schema_examples.reminders
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from ents import App, ValidationError, define_ent, define_ent_schema
from ents.clock import Clock
from ents.testing import FakeClock

schema = define_ent_schema(
    {
        "users": define_ent({"name": str}).edges("reminders", ref=True).edges("inbox", to="notifications", ref=True),
        "reminders": define_ent({"message": str, "send_at": float})
        .field("status", Literal["scheduled", "sent", "canceled"], default="scheduled")
        .edge("user")
        .edge("job", to="_scheduled_functions", deletion="hard"),
        # What "sending" does here: a push service would be called from an action instead.
        "notifications": define_ent({"text": str, "sent_at": float}).edge("user"),
    }
)


def schedule_reminder(ctx: Any, user_id: str, message: str, send_at: float) -> str:
    """Remind ``user_id`` of ``message`` at ``send_at`` (ms since the epoch, in the future)."""
    if send_at <= ctx.now:
        raise ValidationError("Reminder time must be in the future", table="reminders", field="send_at")
    reminder_id = ctx.table("reminders").insert({"message": message, "send_at": send_at, "user_id": user_id})
    job_id = ctx.scheduler.run_at(send_at, send_reminder, {"reminder_id": reminder_id})
    ctx.table("reminders").get_x(reminder_id).patch({"job_id": job_id})
    return str(reminder_id)


def cancel_reminder(ctx: Any, reminder_id: str) -> None:
    """Cancel a reminder that has not gone out yet; it stays listed as canceled."""
    reminder = ctx.table("reminders").get_x(reminder_id)
    if reminder.status != "scheduled":
        raise ValidationError(f"Reminder `{reminder_id}` was already {reminder.status}", table="reminders", id=reminder_id)
    ctx.scheduler.cancel(reminder.job_id)
    reminder.patch({"status": "canceled"})


def send_reminder(ctx: Any, reminder_id: str) -> None:
    reminder = ctx.table("reminders").get(reminder_id)
    if reminder is None or reminder.status != "scheduled":
        return  # deleted or canceled meanwhile
    ctx.table("notifications").insert({"text": reminder.message, "sent_at": ctx.now, "user_id": reminder.user_id})
    reminder.patch({"status": "sent"})


def list_reminders(ctx: Any, user_id: str) -> list[dict[str, Any]]:
    return ctx.table("users").get_x(user_id).edge("reminders").map(  # type: ignore[no-any-return]
        lambda r: {
            "id": r._id,
            "message": r.message,
            "send_at": r.send_at,
            "status": r.status,
            "job": r.edge("job").state.kind if r.edge("job") else None,
        }
    )


def inbox(ctx: Any, user_id: str) -> list[str]:
    return [n.text for n in ctx.table("users").get_x(user_id).edge("inbox")]


def make_app(url: str | None = None, clock: Clock | None = None) -> App:
    """The reminders app on ``url`` (in-memory SQLite by default)."""
    app = App(schema, url or "sqlite://", clock=clock)
    app.mutation(schedule_reminder)
    app.mutation(cancel_reminder)
    app.query(list_reminders)
    app.query(inbox)
    app.internal_mutation(send_reminder)
    return app


def main() -> dict[str, Any]:
    clock = FakeClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))  # simulated time
    with make_app(clock=clock) as app:
        ada = app.run(lambda ctx: ctx.table("users").insert({"name": "ada"}))

        def at(hour: int, minute: int = 0) -> float:
            return datetime(2026, 3, 2, hour, minute, tzinfo=UTC).timestamp() * 1000

        app.run_mutation(schedule_reminder, {"user_id": ada, "message": "stand-up", "send_at": at(9, 30)})
        lunch = app.run_mutation(schedule_reminder, {"user_id": ada, "message": "lunch with bob", "send_at": at(12)})
        app.run_mutation(schedule_reminder, {"user_id": ada, "message": "water the plants", "send_at": at(18)})
        try:
            app.run_mutation(schedule_reminder, {"user_id": ada, "message": "too late", "send_at": at(7)})
        except ValidationError as exc:
            print(f"07:00 is refused: {exc}")
        app.run_mutation(cancel_reminder, {"reminder_id": lunch})
        print("lunch is off: its reminder is canceled")
        app.finish_all_scheduled_functions()
        rows = app.run_query(list_reminders, {"user_id": ada})
        print("at the end of the day:")
        for r in rows:
            when = datetime.fromtimestamp(r["send_at"] / 1000, UTC).strftime("%H:%M")
            print(f"    {when}  {r['message']:<18} {r['status']:<9} (job {r['job']})")
        received = app.run_query(inbox, {"user_id": ada})
        print(f"ada's inbox: {received}")
        return {"reminders": rows, "inbox": received}


if __name__ == "__main__":
    main()
