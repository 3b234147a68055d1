"""A daily cron that deletes stale sessions (seeds 001 and 002).

``crons.daily("cleanup stale sessions", {"hour_utc": 3, "minute_utc": 0}, ...)`` runs
``cleanup_stale_sessions`` every day at 03:00 UTC. Like kitcn's ``cleanupStaleData`` it
deletes sessions idle for 30 days, at most ``BATCH`` per transaction; when there were more,
it schedules itself to continue at once instead of growing one transaction without bound.
Sessions are found through an index on ``last_active_at``, not by scanning the table.

    python -m schema_examples.sessions
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ents import App, cron_jobs, define_ent, define_ent_schema
from ents.clock import Clock
from ents.testing import FakeClock

DAY_MS = 24 * 60 * 60 * 1000
STALE_AFTER_MS = 30 * DAY_MS
BATCH = 1000

schema = define_ent_schema(
    {
        "users": define_ent({"name": str}).edges("sessions", ref=True),
        "sessions": define_ent({"token": str})
        .field("last_active_at", float, index=True)
        .edge("user"),
    }
)


def sign_in(ctx: Any, user_id: str, token: str) -> str:
    return str(ctx.table("sessions").insert({"token": token, "user_id": user_id, "last_active_at": ctx.now}))


def touch(ctx: Any, session_id: str) -> None:
    ctx.table("sessions").get_x(session_id).patch({"last_active_at": ctx.now})


def cleanup_stale_sessions(ctx: Any, batch: int = BATCH) -> int:
    """Delete up to ``batch`` stale sessions; continue in a new transaction if more are left."""
    cutoff = ctx.now - STALE_AFTER_MS
    stale = ctx.table("sessions", "last_active_at", lambda q: q.lt("last_active_at", cutoff)).take(batch + 1).collect()
    for session in stale[:batch]:
        session.delete()
    if len(stale) > batch:
        ctx.scheduler.run_after(0, cleanup_stale_sessions, {"batch": batch})
    return min(len(stale), batch)


def count_sessions(ctx: Any) -> int:
    return len(ctx.table("sessions").collect())


def make_app(url: str | None = None, clock: Clock | None = None, batch: int = BATCH) -> App:
    """The sessions app on ``url`` (in-memory SQLite by default), with its daily cron."""
    crons = cron_jobs()
    crons.daily("cleanup stale sessions", {"hour_utc": 3, "minute_utc": 0}, cleanup_stale_sessions, {"batch": batch})
    app = App(schema, url or "sqlite://", clock=clock, crons=crons)
    app.mutation(sign_in)
    app.mutation(touch)
    app.query(count_sessions)
    app.internal_mutation(cleanup_stale_sessions)
    return app


def main() -> dict[str, Any]:
    clock = FakeClock(datetime(2026, 1, 1, 12, 0, tzinfo=UTC))  # simulated time: days pass instantly
    with make_app(clock=clock, batch=50) as app:
        ada = app.run(lambda ctx: ctx.table("users").insert({"name": "ada"}))
        sessions = [app.run_mutation(sign_in, {"user_id": ada, "token": f"t{i}"}) for i in range(120)]
        print(f"Jan 01 12:00: {len(sessions)} sessions signed in")
        clock.set_time(datetime(2026, 1, 5, 12, 0, tzinfo=UTC))
        app.run_mutation(touch, {"session_id": sessions[0]})  # one of them is still in use
        counts = []
        for _ in range(35):
            clock.advance(DAY_MS)  # to noon the next day; the cron has run at 03:00 (UTC)
            app.finish_in_progress_scheduled_functions()
            n = app.run_query(count_sessions)
            if counts and counts[-1] != n:
                day = datetime.fromtimestamp(clock.now() / 1000, UTC)
                print(f"{day:%b %d}: {counts[-1] - n} stale deleted in batches of at most 50, {n} left")
            counts.append(n)
        cron = app.run(lambda ctx: ctx.db.system.query("_cron_jobs").first())
        last = cron["last_runs"][-1]
        print(f"the cron runs daily at 03:00 UTC; last run {last['state']}, next "
              f"{datetime.fromtimestamp(cron['next_run'] / 1000, UTC):%b %d %H:%M} UTC")
        return {"counts": counts, "cron": cron}


if __name__ == "__main__":
    main()
