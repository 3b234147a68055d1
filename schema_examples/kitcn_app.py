"""kitcn's scheduling guide (seed 001), ported to ents.crpc procedures and ctx.orm.

Every example of the guide, with kitcn's names in snake_case:

* crons: ``cleanup stale data`` every 2 hours (``find_many`` of stale sessions, each
  deleted with ``ctx.orm.delete(...).where(eq("id", ...))``) and ``daily report`` at
  09:00 UTC (an action: ``caller.actions.get_daily_stats`` then
  ``caller.schedule.now.create_report``);
* ``process_order``: marks the order processing, charges it 5 s later
  (``caller.schedule.after(5000).charge``);
* ``create_item``: ``insert(...).values(...).returning("id")``, then
  ``caller.schedule.now.send_notification`` (runs once the mutation commits);
* ``schedule_reminder``: ``caller.schedule.at(send_at).send``; a time in the past is a
  ``CRPCError("BAD_REQUEST", ...)``;
* ``create_subscription`` / ``cancel_subscription``: the expiration job id is stored on the
  row and canceled with ``caller.schedule.cancel`` (``NOT_FOUND`` for an unknown id);
* ``get_job_status`` / ``list_pending_jobs``: ``ctx.orm.system.get`` and
  ``ctx.orm.system.query("_scheduled_functions")``.

``auth_mutation`` is ``c.mutation.use(require_user)``: it refuses callers without an
identity (``UNAUTHORIZED``) and gives the others ``ctx.user_id``. Auth is not propagated to
scheduled procedures, so the user id is passed as input (as the guide says).

    python -m schema_examples.kitcn_app
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from ents import App, cron_jobs, define_ent, define_ent_schema
from ents.clock import Clock
from ents.crpc import CRPCError, create_caller, init_crpc
from ents.orm import eq
from ents.testing import FakeClock

MODULE = "schema_examples.kitcn_app"
SECOND_MS = 1000
DAY_MS = 24 * 60 * 60 * 1000
CHARGE_DELAY_MS = 5 * SECOND_MS
SUBSCRIPTION_MS = 30 * DAY_MS
STALE_AFTER_MS = 30 * DAY_MS

schema = define_ent_schema(
    {
        "sessions": define_ent({"token": str}).field("last_active_at", float, index=True),
        "orders": define_ent({"total_cents": int}).field("status", Literal["pending", "processing", "paid"], default="pending"),
        "items": define_ent({"name": str}),
        "notifications": define_ent({"item_id": str, "text": str}),
        "sent_reminders": define_ent({"message": str}).field("sent_at", float),
        "subscriptions": define_ent({"user_id": str, "plan_id": str})
        .field("status", Literal["active", "expired"], default="active")
        .field("expiration_job_id", str | None, default=None, index=True),
        "reports": define_ent({"type": str, "data": dict[str, Any]}),
    }
)


def ref(name: str) -> str:
    """The function name of one of this module's procedures (``module:function``)."""
    return f"{MODULE}:{name}"


# -- inputs and outputs ---------------------------------------------------------------------------


class Empty(BaseModel):
    pass


class Deleted(BaseModel):
    deleted_count: int


class OrderTotal(BaseModel):
    total_cents: int


class OrderInput(BaseModel):
    order_id: str


class ItemInput(BaseModel):
    name: str


class Notify(BaseModel):
    item_id: str


class ReminderInput(BaseModel):
    message: str
    send_at: float


class Message(BaseModel):
    message: str


class Plan(BaseModel):
    plan_id: str


class UserInput(BaseModel):
    user_id: str


class SubscriptionInput(BaseModel):
    subscription_id: str


class ReportInput(BaseModel):
    type: str
    data: dict[str, Any]


class JobInput(BaseModel):
    job_id: str


class JobState(BaseModel):
    kind: Literal["pending", "inProgress", "success", "failed", "canceled"]


class JobStatus(BaseModel):
    name: str
    scheduled_time: float
    completed_time: float | None = None
    state: JobState


class TableInput(BaseModel):
    table: str


class PendingJob(BaseModel):
    id: str
    name: str
    scheduled_time: float


# -- middleware -----------------------------------------------------------------------------------


def require_user(ctx: Any, next: Any) -> Any:
    """kitcn's ``authMutation``: signed-in callers only; adds ``ctx.user_id``."""
    identity = ctx.auth.get_user_identity()
    if identity is None:
        raise CRPCError("UNAUTHORIZED", "Sign in first")
    return next(ctx.extend(user_id=identity["subject"]))


# -- crons ------------------------------------------------------------------------------------------


def cleanup_stale_data(ctx: Any, input: Empty) -> dict[str, int]:
    thirty_days_ago = ctx.now - STALE_AFTER_MS
    stale_sessions = ctx.orm.query.sessions.find_many(where={"last_active_at": {"lt": thirty_days_ago}}, limit=1000)
    for session_row in stale_sessions:
        ctx.orm.delete("sessions").where(eq("id", session_row.id))
    return {"deleted_count": len(stale_sessions)}


def count_since(ctx: Any, input: Empty) -> dict[str, int]:
    since = ctx.now - DAY_MS
    return {
        "orders": len(ctx.orm.query.orders.find_many(where={"_creation_time": {"gte": since}}, columns=["id"])),
        "items": len(ctx.orm.query.items.find_many(where={"_creation_time": {"gte": since}}, columns=["id"])),
    }


def get_daily_stats(ctx: Any, input: Empty) -> dict[str, int]:
    stats: dict[str, int] = create_caller(ctx).count_since({})
    return stats


def generate_daily_report(ctx: Any, input: Empty) -> None:
    caller = create_caller(ctx)
    stats = caller.actions.get_daily_stats({})
    caller.schedule.now.create_report({"type": "daily", "data": stats})


def create_report(ctx: Any, input: ReportInput) -> str:
    [row] = ctx.orm.insert("reports").values(input.model_dump()).returning("id")
    return str(row.id)


# -- orders -------------------------------------------------------------------------------------------


def place_order(ctx: Any, input: OrderTotal) -> str:
    [order_id] = ctx.orm.insert("orders").values({"total_cents": input.total_cents})
    return str(order_id)


def process_order(ctx: Any, input: OrderInput) -> None:
    caller = create_caller(ctx)
    ctx.orm.update("orders").set({"status": "processing"}).where(eq("id", input.order_id))
    caller.schedule.after(CHARGE_DELAY_MS).charge({"order_id": input.order_id})  # run after 5 seconds


def charge(ctx: Any, input: OrderInput) -> None:
    # the order may have changed (or gone) since this was scheduled: check first
    ctx.orm.update("orders").set({"status": "paid"}).where({"id": input.order_id, "status": "processing"})


# -- items ---------------------------------------------------------------------------------------------


def create_item(ctx: Any, input: ItemInput) -> str:
    caller = create_caller(ctx)
    [row] = ctx.orm.insert("items").values({"name": input.name}).returning("id")
    caller.schedule.now.send_notification({"item_id": row.id})  # runs once this mutation commits
    return str(row.id)


def send_notification(ctx: Any, input: Notify) -> None:
    create_caller(ctx).record_notification({"item_id": input.item_id})


def record_notification(ctx: Any, input: Notify) -> None:
    ctx.orm.insert("notifications").values({"item_id": input.item_id, "text": "New item"})


# -- reminders -------------------------------------------------------------------------------------------


def schedule_reminder(ctx: Any, input: ReminderInput) -> None:
    caller = create_caller(ctx)
    if input.send_at <= ctx.now:
        raise CRPCError("BAD_REQUEST", "Reminder time must be in the future")
    caller.schedule.at(input.send_at).send({"message": input.message})


def send(ctx: Any, input: Message) -> None:
    ctx.orm.insert("sent_reminders").values({"message": input.message, "sent_at": ctx.now})


# -- subscriptions ------------------------------------------------------------------------------------------


def create_subscription(ctx: Any, input: Plan) -> str:
    caller = create_caller(ctx)
    # expire in 30 days
    expiration_job_id = caller.schedule.after(SUBSCRIPTION_MS).expire({"user_id": ctx.user_id})
    [row] = (
        ctx.orm.insert("subscriptions")
        .values({"user_id": ctx.user_id, "plan_id": input.plan_id, "expiration_job_id": expiration_job_id})
        .returning("id")
    )
    return str(row.id)


def cancel_subscription(ctx: Any, input: SubscriptionInput) -> None:
    caller = create_caller(ctx)
    subscription = ctx.orm.query.subscriptions.find_first(where={"id": input.subscription_id})
    if subscription is None:
        raise CRPCError("NOT_FOUND", "Subscription not found")
    if subscription.expiration_job_id:
        caller.schedule.cancel(subscription.expiration_job_id)
    ctx.orm.delete("subscriptions").where(eq("id", subscription.id))


def expire(ctx: Any, input: UserInput) -> None:
    ctx.orm.update("subscriptions").set({"status": "expired"}).where({"user_id": input.user_id, "status": "active"})


# -- job status ------------------------------------------------------------------------------------------------


def get_job_status(ctx: Any, input: JobInput) -> Any:
    return ctx.orm.system.get(input.job_id)


def list_pending_jobs(ctx: Any, input: Empty) -> list[dict[str, Any]]:
    jobs = ctx.orm.system.query("_scheduled_functions").filter(lambda q: q.eq(q.field("state.kind"), "pending")).collect()
    return [{"id": j.id, "name": j.name, "scheduled_time": j.scheduled_time} for j in jobs]


def list_rows(ctx: Any, input: TableInput) -> list[dict[str, Any]]:
    return ctx.orm.query[input.table].find_many()  # type: ignore[no-any-return]


# -- the app ------------------------------------------------------------------------------------------------


def make_app(url: str | None = None, clock: Clock | None = None) -> App:
    """The app on ``url`` (in-memory SQLite by default), its procedures and crons."""
    crons = cron_jobs()
    app = App(schema, url or "sqlite://", clock=clock, crons=crons)
    c = init_crpc(app)
    public_query = c.query
    public_mutation = c.mutation
    private_query = c.query.internal()
    private_mutation = c.mutation.internal()
    private_action = c.action.internal()
    auth_mutation = c.mutation.use(require_user)

    cleanup = private_mutation.input(Empty).output(Deleted).mutation(cleanup_stale_data)
    private_query.input(Empty).query(count_since)
    private_action.input(Empty).action(get_daily_stats)
    report = private_action.input(Empty).action(generate_daily_report)
    private_mutation.input(ReportInput).output(str).mutation(create_report)

    public_mutation.input(OrderTotal).output(str).mutation(place_order)
    auth_mutation.input(OrderInput).mutation(process_order)
    private_mutation.input(OrderInput).mutation(charge)

    auth_mutation.input(ItemInput).output(str).mutation(create_item)
    private_action.input(Notify).action(send_notification)
    private_mutation.input(Notify).mutation(record_notification)

    auth_mutation.input(ReminderInput).mutation(schedule_reminder)
    private_mutation.input(Message).mutation(send)

    auth_mutation.input(Plan).output(str).mutation(create_subscription)
    auth_mutation.input(SubscriptionInput).mutation(cancel_subscription)
    private_mutation.input(UserInput).mutation(expire)

    public_query.input(JobInput).output(JobStatus | None).query(get_job_status)
    public_query.input(Empty).output(list[PendingJob]).query(list_pending_jobs)
    private_query.input(TableInput).query(list_rows)

    crons.interval("cleanup stale data", {"hours": 2}, cleanup, {})
    crons.cron("daily report", "0 9 * * *", report, {})
    return app


def main() -> dict[str, Any]:
    clock = FakeClock(datetime(2026, 1, 1, 8, 0, tzinfo=UTC))  # simulated time: days pass instantly
    ada = {"subject": "user-ada"}
    with make_app(clock=clock) as app:
        out: dict[str, Any] = {}

        def rows(table: str) -> list[dict[str, Any]]:
            return app.run_query(ref("list_rows"), {"table": table})  # type: ignore[no-any-return]

        client = app.client(identity=ada)
        app.run(lambda ctx: ctx.orm.insert("sessions").values([{"token": "old", "last_active_at": ctx.now - 40 * DAY_MS},
                                                                {"token": "new", "last_active_at": ctx.now}]))
        order = client.mutation(ref("place_order"), {"total_cents": 1200})
        client.mutation(ref("process_order"), {"order_id": order})
        print(f"08:00 order {order} is {rows('orders')[0]['status']}; charged in 5 s")
        item = client.mutation(ref("create_item"), {"name": "lamp"})
        try:
            client.mutation(ref("schedule_reminder"), {"message": "too late", "send_at": clock.now() - 1})
        except CRPCError as err:
            print(f"a reminder in the past: {err.code} ({err.http_status}): {err.message}")
        client.mutation(ref("schedule_reminder"), {"message": "stand up", "send_at": clock.now() + 30 * 60 * SECOND_MS})
        keep = client.mutation(ref("create_subscription"), {"plan_id": "pro"})
        drop = client.mutation(ref("create_subscription"), {"plan_id": "trial"})
        drop_job = app.run(lambda ctx: ctx.orm.query.subscriptions.find_first(where={"id": drop}).expiration_job_id)
        client.mutation(ref("cancel_subscription"), {"subscription_id": drop})
        try:
            client.mutation(ref("cancel_subscription"), {"subscription_id": drop})
        except CRPCError as err:
            print(f"cancel it again: {err.code} ({err.http_status}): {err.message}")
        try:
            app.client().mutation(ref("create_item"), {"name": "anonymous"})
        except CRPCError as err:
            print(f"no identity: {err.code} ({err.http_status}): {err.message}")
        print(f"the trial's expiration job is {client.query(ref('get_job_status'), {'job_id': drop_job})['state']['kind']}")
        pending = client.query(ref("list_pending_jobs"), {})
        print(f"pending jobs: {', '.join(sorted(p['name'].partition(':')[2] for p in pending))}")
        app.finish_in_progress_scheduled_functions()  # the notification, the first cleanup
        clock.advance(CHARGE_DELAY_MS)
        app.finish_in_progress_scheduled_functions()
        print(f"08:00:05 order is {rows('orders')[0]['status']}; notifications: {[n['text'] for n in rows('notifications')]}")
        print(f"stale sessions cleaned up: {[s['token'] for s in rows('sessions')]} left")
        clock.set_time(datetime(2026, 1, 1, 9, 0, 1, tzinfo=UTC))
        app.finish_in_progress_scheduled_functions()
        print(f"09:00 daily report: {rows('reports')[0]['data']}; reminders sent: {[r['message'] for r in rows('sent_reminders')]}")
        clock.advance(SUBSCRIPTION_MS)
        app.finish_in_progress_scheduled_functions()
        print(f"30 days later: {[(s['plan_id'], s['status']) for s in rows('subscriptions')]}")
        out.update(order=rows("orders"), item=item, keep=keep, subscriptions=rows("subscriptions"), reports=rows("reports"))
        return out


if __name__ == "__main__":
    main()
