"""A saga: a step in another system, a local step, and a compensating step (seed 004).

``create_subscription`` is an action: step 1 creates the subscription at the payment
provider; step 2 records it locally with a mutation. Nothing can make the two atomic, so
when step 2 fails (here: the user already has a subscription, which the 1:1 edge
enforces) the action compensates by cancelling what step 1 created. When step 1 fails,
nothing was created and there is nothing to undo.

    python -m schema_examples.saga
"""

from __future__ import annotations

import itertools
from typing import Any

from ents import App, EntNotFoundError, UniqueConstraintError, define_ent, define_ent_schema
from ents.clock import Clock

schema = define_ent_schema(
    {
        "users": define_ent({"name": str, "customer_id": str}).edge("subscription", ref=True),
        # 1:1: a user has at most one subscription, enforced by the database.
        "subscriptions": define_ent({"plan_id": str, "remote_id": str}).edge("user"),
    }
)


class ProviderError(Exception):
    pass


class FakeProvider:
    """Stands in for a payment provider's subscription API."""

    def __init__(self) -> None:
        self.active: dict[str, tuple[str, str]] = {}  # remote id -> (customer, plan)
        self.canceled: list[str] = []
        self._ids = itertools.count(1)

    def create(self, customer_id: str, plan_id: str) -> str:
        if plan_id not in ("basic", "pro"):
            raise ProviderError(f"no such plan: {plan_id}")
        remote_id = f"sub_{next(self._ids)}"
        self.active[remote_id] = (customer_id, plan_id)
        return remote_id

    def cancel(self, remote_id: str) -> None:
        self.active.pop(remote_id, None)
        self.canceled.append(remote_id)


def create_subscription(ctx: Any, user_id: str, plan_id: str) -> dict[str, Any]:
    """The saga. Its outcome: ``"created"`` (with the subscription's id), ``"failed"`` at
    step 1 (nothing to undo) or ``"compensated"`` (step 2 failed, step 1 was undone)."""
    user = ctx.run_query(get_user, {"user_id": user_id})
    if user is None:
        raise EntNotFoundError(f"User `{user_id}` not found", table="users", id=user_id)
    provider = ctx.app.provider

    # Step 1: the remote subscription. If it fails, nothing was created: stop.
    try:
        remote_id = provider.create(user["customer_id"], plan_id)
    except ProviderError as exc:
        return {"outcome": "failed", "error": str(exc)}

    # Step 2: the local record. If it fails, compensate step 1.
    try:
        args = {"user_id": user_id, "plan_id": plan_id, "remote_id": remote_id}
        subscription_id = ctx.run_mutation(record_subscription, args)
    except UniqueConstraintError as exc:
        provider.cancel(remote_id)
        return {"outcome": "compensated", "error": exc.message, "canceled": remote_id}
    return {"outcome": "created", "subscription_id": subscription_id}


def get_user(ctx: Any, user_id: str) -> dict[str, Any] | None:
    user = ctx.table("users").get(user_id)
    return user.doc() if user is not None else None


def record_subscription(ctx: Any, user_id: str, plan_id: str, remote_id: str) -> str:
    return str(ctx.table("subscriptions").insert({"plan_id": plan_id, "remote_id": remote_id, "user_id": user_id}))


def subscribe(ctx: Any, user_id: str, plan_id: str) -> str:
    """The public entry point: run the saga in the background, right after this commits."""
    ctx.table("users").get_x(user_id)
    return str(ctx.scheduler.run_after(0, create_subscription, {"user_id": user_id, "plan_id": plan_id}))


def make_app(url: str | None = None, clock: Clock | None = None, provider: FakeProvider | None = None) -> App:
    """The saga app on ``url`` (in-memory SQLite by default)."""
    app = App(schema, url or "sqlite://", clock=clock)
    app.provider = provider or FakeProvider()  # what the saga calls
    app.mutation(subscribe)
    app.internal_query(get_user)
    app.internal_mutation(record_subscription)
    app.internal_action(create_subscription)
    return app


def main() -> dict[str, Any]:
    with make_app() as app:
        ada = app.run(lambda ctx: ctx.table("users").insert({"name": "ada", "customer_id": "cus_ada"}))
        provider = app.provider
        outcomes = {}
        for label, plan in (("ada subscribes to pro", "pro"), ("ada subscribes again", "basic"), ("ada picks a bad plan", "gold")):
            result = outcomes[label] = app.run_action(create_subscription, {"user_id": ada, "plan_id": plan})
            detail = {
                "created": f"subscription {result.get('subscription_id')}",
                "compensated": f"step 2 failed, so remote {result.get('canceled')} was canceled",
                "failed": f"step 1 failed ({result.get('error')}): nothing to undo",
            }[result["outcome"]]
            print(f"{label:<22} -> {result['outcome']}: {detail}")
        print(f"provider: active {sorted(provider.active)}, canceled by compensation {provider.canceled}")
        local = app.run(lambda ctx: [s.remote_id for s in ctx.table("subscriptions")])
        print(f"local subscriptions: {local}")
        return {"outcomes": outcomes, "active": dict(provider.active), "canceled": list(provider.canceled), "local": local}


if __name__ == "__main__":
    main()
