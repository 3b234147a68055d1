"""Subscriptions that expire after 30 days and can be cancelled (seed 001, kitcn).

kitcn's ``createSubscription`` schedules ``expire`` 30 days out and stores the job id in
``expirationJobId``; ``cancelSubscription`` cancels that job, then deletes the row. Here
the job id lives in an edge with ``deletion="hard"``, so deleting the subscription is
enough: the pending expiration is canceled with it. The edge also tells when each
subscription expires.

    python -m schema_examples.subscriptions
"""

from __future__ import annotations

from typing import Any, Literal

from ents import App, EntNotFoundError, define_ent, define_ent_schema
from ents.clock import Clock
from ents.testing import FakeClock

DAY_MS = 24 * 60 * 60 * 1000
TERM_MS = 30 * DAY_MS

schema = define_ent_schema(
    {
        "users": define_ent({"name": str}).edges("subscriptions", ref=True),
        "subscriptions": define_ent({"plan_id": str})
        .field("status", Literal["active", "expired"], default="active")
        .edge("user")
        .edge("expiration", to="_scheduled_functions", deletion="hard"),
    }
)


def create_subscription(ctx: Any, user_id: str, plan_id: str) -> str:
    subscription_id = ctx.table("subscriptions").insert({"plan_id": plan_id, "user_id": user_id})
    job_id = ctx.scheduler.run_after(TERM_MS, expire, {"subscription_id": subscription_id})
    ctx.table("subscriptions").get_x(subscription_id).patch({"expiration_id": job_id})
    return str(subscription_id)


def cancel_subscription(ctx: Any, subscription_id: str) -> None:
    subscription = ctx.table("subscriptions").get(subscription_id)
    if subscription is None:
        raise EntNotFoundError(
            f"Subscription `{subscription_id}` not found", table="subscriptions", id=subscription_id
        )
    # kitcn cancels the job by hand first; the edge's deletion="hard" does it here.
    subscription.delete()


def expire(ctx: Any, subscription_id: str) -> None:
    subscription = ctx.table("subscriptions").get(subscription_id)
    if subscription is not None:  # the target may be gone: check before acting
        subscription.patch({"status": "expired"})


def list_subscriptions(ctx: Any) -> list[dict[str, Any]]:
    return ctx.table("subscriptions").map(  # type: ignore[no-any-return]
        lambda s: {
            "id": s._id,
            "user": s.edge("user").name,
            "plan_id": s.plan_id,
            "status": s.status,
            "expires_at": s.edge("expiration").scheduled_time if s.edge("expiration") else None,
        }
    )


def make_app(url: str | None = None, clock: Clock | None = None) -> App:
    """The subscriptions app on ``url`` (in-memory SQLite by default)."""
    app = App(schema, url or "sqlite://", clock=clock)
    app.mutation(create_subscription)
    app.mutation(cancel_subscription)
    app.query(list_subscriptions)
    app.internal_mutation(expire)
    return app


def main() -> dict[str, Any]:
    clock = FakeClock()  # simulated time: a month passes instantly
    with make_app(clock=clock) as app:
        start = clock.now()
        users = {name: app.run(lambda ctx, n=name: ctx.table("users").insert({"name": n})) for name in ("ada", "bob")}
        app.run_mutation(create_subscription, {"user_id": users["ada"], "plan_id": "pro"})
        bobs = app.run_mutation(create_subscription, {"user_id": users["bob"], "plan_id": "basic"})
        bob_job = app.run(lambda ctx: ctx.table("subscriptions").get_x(bobs).expiration_id)

        def show(label: str) -> list[dict[str, Any]]:
            rows = app.run_query(list_subscriptions)
            print(f"day {(clock.now() - start) / DAY_MS:.0f}, {label}:")
            for r in rows:
                print(f"    {r['user']:<4} {r['plan_id']:<6} {r['status']:<8} term ends on day {(r['expires_at'] - start) / DAY_MS:.0f}")
            return rows

        show("two new subscriptions")
        clock.advance(10 * DAY_MS)
        app.run_mutation(cancel_subscription, {"subscription_id": bobs})
        bob_state = app.run(lambda ctx: ctx.db.system.get(bob_job)["state"]["kind"])
        print(f"day 10, bob cancels: his subscription is deleted and its expiration job is {bob_state}")
        clock.advance(20 * DAY_MS)
        app.finish_in_progress_scheduled_functions()
        rows = show("thirty days after the start")
        return {"subscriptions": rows, "bob_expiration": bob_state}


if __name__ == "__main__":
    main()
