"""Idempotency keys for payments: a retried request never charges twice (seed 004).

A client that times out cannot tell whether its payment went through, so it sends the
same request again with the same idempotency key. ``process_payment`` looks the key up
first and returns the existing payment; the key is a unique field, so even two requests
racing each other cannot both insert. The charge itself runs in a scheduled action that
passes the key on to the provider and checks the payment's status first, so a second run
of it would not charge twice either.

    python -m schema_examples.payments
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

from ents import App, ValidationError, define_ent, define_ent_schema
from ents.clock import Clock

schema = define_ent_schema(
    {
        "payments": define_ent({"amount_cents": int, "customer_id": str})
        .field("idempotency_key", str, unique=True)
        .field("status", Literal["pending", "charged"], default="pending")
        .field("charge_id", str | None)
        .edge("charge_job", to="_scheduled_functions", deletion="hard"),
    }
)


class FakeProvider:
    """Stands in for a payment API that itself honours idempotency keys."""

    def __init__(self) -> None:
        self.charges: dict[str, tuple[str, int]] = {}  # charge id -> (customer, amount)
        self._by_key: dict[str, str] = {}
        self._ids = itertools.count(1)

    def charge(self, customer_id: str, amount_cents: int, idempotency_key: str) -> str:
        if idempotency_key not in self._by_key:
            charge_id = f"ch_{next(self._ids)}"
            self.charges[charge_id] = (customer_id, amount_cents)
            self._by_key[idempotency_key] = charge_id
        return self._by_key[idempotency_key]


def process_payment(ctx: Any, idempotency_key: str, amount_cents: int, customer_id: str) -> str:
    existing = ctx.table("payments").get("idempotency_key", idempotency_key)
    if existing is not None:
        if (existing.amount_cents, existing.customer_id) != (amount_cents, customer_id):
            # The same key for a different request is a client bug, not a retry.
            raise ValidationError(
                f"Idempotency key `{idempotency_key}` was already used for another payment",
                table="payments",
                field="idempotency_key",
                id=existing._id,
            )
        return str(existing._id)  # already done: the same answer as the first time
    payment_id = ctx.table("payments").insert(
        {"idempotency_key": idempotency_key, "amount_cents": amount_cents, "customer_id": customer_id}
    )
    job_id = ctx.scheduler.run_after(0, charge, {"payment_id": payment_id})
    ctx.table("payments").get_x(payment_id).patch({"charge_job_id": job_id})
    return str(payment_id)


def charge(ctx: Any, payment_id: str) -> None:
    payment = ctx.run_query(get_payment, {"payment_id": payment_id})
    if payment is None or payment["status"] != "pending":
        return
    charge_id = ctx.app.provider.charge(payment["customer_id"], payment["amount_cents"], payment["idempotency_key"])
    ctx.run_mutation(mark_charged, {"payment_id": payment_id, "charge_id": charge_id})


def get_payment(ctx: Any, payment_id: str) -> dict[str, Any] | None:
    payment = ctx.table("payments").get(payment_id)
    return payment.doc() if payment is not None else None


def mark_charged(ctx: Any, payment_id: str, charge_id: str) -> None:
    ctx.table("payments").get_x(payment_id).patch({"status": "charged", "charge_id": charge_id})


def list_payments(ctx: Any) -> list[dict[str, Any]]:
    return [
        {"id": p._id, "key": p.idempotency_key, "amount_cents": p.amount_cents, "status": p.status, "charge_id": p.charge_id}
        for p in ctx.table("payments")
    ]


def make_app(url: str | None = None, clock: Clock | None = None, provider: FakeProvider | None = None) -> App:
    """The payments app on ``url`` (in-memory SQLite by default)."""
    app = App(schema, url or "sqlite://", clock=clock)
    app.provider = provider or FakeProvider()  # what charge calls
    app.mutation(process_payment)
    app.query(list_payments)
    app.internal_query(get_payment)
    app.internal_mutation(mark_charged)
    app.internal_action(charge)
    return app


def main() -> dict[str, Any]:
    with make_app() as app:
        request = {"idempotency_key": "order-1042", "amount_cents": 4_999, "customer_id": "cus_ada"}
        ids = [app.run_mutation(process_payment, request) for _ in range(3)]  # the client retried twice
        print(f"the same request sent 3 times -> payment ids {ids}")
        app.run_mutation(process_payment, {"idempotency_key": "order-1043", "amount_cents": 1_200, "customer_id": "cus_bob"})
        try:
            app.run_mutation(process_payment, {**request, "amount_cents": 1})
        except ValidationError as exc:
            print(f"reusing a key for another amount is refused: {exc}")
        app.finish_in_progress_scheduled_functions()
        rows = app.run_query(list_payments)
        for r in rows:
            print(f"    {r['key']:<20} {r['amount_cents'] / 100:>7.2f}  {r['status']}  {r['charge_id']}")
        charges = app.provider.charges
        print(f"charges at the provider: {len(charges)}")
        return {"ids": ids, "payments": rows, "charges": dict(charges)}


if __name__ == "__main__":
    main()
