"""Order processing after a delay, as a multi-step workflow (seeds 001 and 004).

``process_order`` marks the order processing and schedules ``charge`` 5 seconds later
(kitcn's ``caller.schedule.after(5000)``), leaving a short window to cancel. ``charge`` is
an action: it calls the payment provider, then records the outcome with a mutation and,
when paid, schedules fulfillment at once (seed 004, "Multi-step workflow"). The charge job
is linked to the order with an edge, so cancelling (deleting) the order within the window
cancels the charge.

    python -m schema_examples.orders
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

from ents import App, ValidationError, define_ent, define_ent_schema
from ents.clock import Clock
from ents.testing import FakeClock

CHARGE_DELAY_MS = 5000

schema = define_ent_schema(
    {
        "orders": define_ent({"products": list[str], "total_cents": int, "card": str})
        .field("status", Literal["new", "processing", "paid", "failed", "shipped"], default="new")
        .field("charge_id", str | None)
        .field("error", str | None)
        .edge("payment", to="_scheduled_functions", deletion="hard"),
    }
)


class PaymentDeclined(Exception):
    pass


class FakePaymentProvider:
    """Stands in for Stripe & co.: declines cards starting with "0000"."""

    def __init__(self) -> None:
        self.charges: list[tuple[str, int]] = []
        self._ids = itertools.count(1)

    def charge(self, card: str, amount_cents: int) -> str:
        if card.startswith("0000"):
            raise PaymentDeclined(f"card ending {card[-4:]} was declined")
        self.charges.append((card, amount_cents))
        return f"ch_{next(self._ids)}"


def place_order(ctx: Any, products: list[str], total_cents: int, card: str) -> str:
    if not products or total_cents <= 0:
        raise ValidationError("An order needs products and a positive total", table="orders")
    return str(ctx.table("orders").insert({"products": products, "total_cents": total_cents, "card": card}))


def process_order(ctx: Any, order_id: str) -> None:
    order = ctx.table("orders").get_x(order_id)
    if order.status != "new":
        raise ValidationError(f"Order `{order_id}` is already {order.status}", table="orders", id=order_id)
    job_id = ctx.scheduler.run_after(CHARGE_DELAY_MS, charge, {"order_id": order_id})
    order.patch({"status": "processing", "payment_id": job_id})


def cancel_order(ctx: Any, order_id: str) -> None:
    """Within the delay the charge is still pending; deleting the order cancels it."""
    order = ctx.table("orders").get_x(order_id)
    if order.status not in ("new", "processing"):
        raise ValidationError(f"Order `{order_id}` is already {order.status}", table="orders", id=order_id)
    order.delete()


def charge(ctx: Any, order_id: str) -> None:
    order = ctx.run_query(get_order, {"order_id": order_id})
    if order is None or order["status"] != "processing":
        return
    try:
        charge_id = ctx.app.payments.charge(order["card"], order["total_cents"])
    except PaymentDeclined as exc:
        ctx.run_mutation(mark_failed, {"order_id": order_id, "error": str(exc)})
        return
    ctx.run_mutation(mark_paid, {"order_id": order_id, "charge_id": charge_id})
    ctx.scheduler.run_after(0, fulfill, {"order_id": order_id})


def get_order(ctx: Any, order_id: str) -> dict[str, Any] | None:
    order = ctx.table("orders").get(order_id)
    return order.doc() if order is not None else None


def mark_paid(ctx: Any, order_id: str, charge_id: str) -> None:
    ctx.table("orders").get_x(order_id).patch({"status": "paid", "charge_id": charge_id})


def mark_failed(ctx: Any, order_id: str, error: str) -> None:
    ctx.table("orders").get_x(order_id).patch({"status": "failed", "error": error})


def fulfill(ctx: Any, order_id: str) -> None:
    order = ctx.table("orders").get(order_id)
    if order is not None and order.status == "paid":
        order.patch({"status": "shipped"})


def list_orders(ctx: Any) -> list[dict[str, Any]]:
    return ctx.table("orders").map(  # type: ignore[no-any-return]
        lambda o: {
            "id": o._id,
            "products": o.products,
            "status": o.status,
            "error": o.error,
            "payment": o.edge("payment").state.kind if o.edge("payment") else None,
        }
    )


def make_app(url: str | None = None, clock: Clock | None = None, payments: FakePaymentProvider | None = None) -> App:
    """The orders app on ``url`` (in-memory SQLite by default)."""
    app = App(schema, url or "sqlite://", clock=clock)
    app.payments = payments or FakePaymentProvider()  # what charge calls
    app.mutation(place_order)
    app.mutation(process_order)
    app.mutation(cancel_order)
    app.query(list_orders)
    app.internal_query(get_order)
    app.internal_mutation(mark_paid)
    app.internal_mutation(mark_failed)
    app.internal_mutation(fulfill)
    app.internal_action(charge)
    return app


def main() -> dict[str, Any]:
    clock = FakeClock()  # simulated time
    with make_app(clock=clock) as app:
        orders = {
            "books": app.run_mutation(place_order, {"products": ["SICP", "TAOCP"], "total_cents": 12_000, "card": "4242 4242"}),
            "lamp": app.run_mutation(place_order, {"products": ["lamp"], "total_cents": 3_500, "card": "0000 1111"}),
            "socks": app.run_mutation(place_order, {"products": ["socks"], "total_cents": 900, "card": "4242 4242"}),
        }
        for order_id in orders.values():
            app.run_mutation(process_order, {"order_id": order_id})
        print(f"three orders processing; each is charged {CHARGE_DELAY_MS / 1000:.0f}s later")
        clock.advance(2000)
        app.run_mutation(cancel_order, {"order_id": orders["socks"]})
        print("2s in, the socks order is cancelled: its charge never happens")
        clock.advance(CHARGE_DELAY_MS)
        app.finish_in_progress_scheduled_functions()
        rows = app.run_query(list_orders)
        for r in rows:
            detail = f" ({r['error']})" if r["error"] else ""
            print(f"    {', '.join(r['products']):<12} {r['status']:<8} charge job: {r['payment']}{detail}")
        print(f"charges made: {app.payments.charges}")
        return {"orders": rows, "charges": list(app.payments.charges)}


if __name__ == "__main__":
    main()
