"""Every example in schema_examples/ runs, and does what its docstring says.

Each example's ``main()`` runs once; its functions are then exercised on every backend
with a FakeClock and the finish_* helpers. The answers demo (``./scripts/demo``) also runs
end to end in a subprocess with its real worker.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import pkgutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

import schema_examples
from ents import EntNotFoundError, FunctionNotFoundError, RuleError, ValidationError
from schema_examples import (
    answers,
    batch,
    kitcn_app,
    messages,
    orders,
    payments,
    reminders,
    retries,
    saga,
    secrets,
    sessions,
    subscriptions,
    webapp,
)
from tests.pg import wait_for
from tests.serving import serving

DAY = 24 * 3600 * 1000
ROOT = Path(__file__).resolve().parent.parent
# quickstart is the README's first example, checked and run by tests/test_docs.py.
EXAMPLES = sorted(m.name for m in pkgutil.iter_modules(schema_examples.__path__) if m.name != "quickstart")


@pytest.fixture
def build(db_url: str, clock: Any) -> Iterator[Callable[..., Any]]:
    """``build(module, **kwargs)``: the example's App on this test's backend and clock."""
    apps: list[Any] = []

    def make(module: Any, **kwargs: Any) -> Any:
        app = module.make_app(db_url, clock, **kwargs)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


def job(app: Any, id: str) -> dict[str, Any] | None:
    return app.run(lambda ctx: ctx.db.system.get(id))  # type: ignore[no-any-return]


def state(app: Any, id: str) -> str:
    doc = job(app, id)
    assert doc is not None
    return str(doc["state"]["kind"])


# -- every example runs -----------------------------------------------------------------


def test_every_example_is_tested_here() -> None:
    assert EXAMPLES == sorted(
        ["answers", "batch", "kitcn_app", "messages", "orders", "payments", "reminders", "retries", "saga", "secrets",
         "sessions", "subscriptions", "webapp"]
    )
    for name in EXAMPLES:
        module = importlib.import_module(f"schema_examples.{name}")
        assert module.__doc__ and f"python -m schema_examples.{name}" in module.__doc__
        assert callable(module.make_app) and callable(module.main)


@pytest.mark.parametrize("name", [n for n in EXAMPLES if n != "answers"])
def test_main_runs(name: str, capsys: Any) -> None:
    result = importlib.import_module(f"schema_examples.{name}").main()
    assert capsys.readouterr().out.strip()
    assert result


def test_the_answers_demo_runs_end_to_end_with_a_real_worker(tmp_path: Path) -> None:
    """What ./scripts/demo runs: a fresh SQLite file, a background worker, real time."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "schema_examples.answers", "--db", str(tmp_path / "demo.db")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    # (whether a poll caught a job inProgress depends on timing: the next test makes sure)
    for status in ("pending", "success", "canceled"):
        assert status in out
    assert "pending -> canceled" in out  # bob's waiting job, canceled by the cascade
    assert "5. What is left: 3 answers" in out
    assert (tmp_path / "demo.db").exists()


def test_the_answers_demo_reports_every_status_change(tmp_path: Path) -> None:
    # The model answers at once, except for bob's lunch question: that one "thinks" until
    # the demo stops its worker, so it is running when bob is deleted, whatever the timing.
    lines: list[str] = []
    stopping = threading.Event()

    def think(question: str) -> float:
        if question == "What's for lunch?":
            assert stopping.wait(120), "the demo never stopped its worker"
        return 0.0

    def out(line: str) -> None:
        lines.append(line)
        if line.startswith("4. Stop the worker"):
            stopping.set()

    result = answers.run_demo(f"sqlite:///{tmp_path / 'demo.db'}", out=out, model=answers.CannedModel(think))
    assert [r["user"] for r in result["remaining"]] == ["ada"] * 3
    assert all(r["status"] == "success" and r["text"] for r in result["remaining"])
    for history in result["history"].values():
        assert history[0] == "pending" and history[-1] == "success"
    # bob's job that waited for an hour was canceled by the cascade and never ran
    assert result["bob_before_delete"]["Will it rain tomorrow?"] == "pending"
    assert result["canceled"]["Will it rain tomorrow?"] == result["final"]["Will it rain tomorrow?"] == "canceled"
    assert "Will it rain tomorrow?" not in result["replied"]
    # the one that was running went on to its end, and its job stayed canceled
    assert result["bob_before_delete"]["What's for lunch?"] == "inProgress"
    assert result["final"]["What's for lunch?"] == "canceled"
    assert "What's for lunch?" in result["replied"]
    assert any("inProgress" in line for line in lines)


# -- answers (seed 000) -------------------------------------------------------------------


def test_answers(build: Any, clock: Any) -> None:
    app = build(answers)
    ada = app.run_mutation(answers.create_user, {"name": "ada"})
    bob = app.run_mutation(answers.create_user, {"name": "bob"})
    now = app.run_mutation(answers.ask, {"user_id": ada, "question": "What is the answer to life?"})
    app.run_mutation(answers.ask, {"user_id": bob, "question": "Will it rain?", "delay_ms": 60_000})
    listing = app.client().query(answers.list_answers)
    assert [(r["user"], r["status"], r["text"]) for r in listing] == [("ada", "pending", None), ("bob", "pending", None)]
    app.finish_in_progress_scheduled_functions()
    assert [(r["status"], r["text"]) for r in app.run_query(answers.list_answers)] == [("success", "42."), ("pending", None)]
    later_job = app.run(lambda ctx: ctx.table("users").get_x(bob).edge("answers").first_x().action_id)
    app.client().mutation(answers.delete_user, {"user_id": bob})
    assert state(app, later_job) == "canceled"
    clock.advance(60_000)
    assert app.finish_in_progress_scheduled_functions() == 0
    assert [r["id"] for r in app.run_query(answers.list_answers)] == [now]
    with pytest.raises(FunctionNotFoundError):
        app.client().action(answers.generate_answer, {"answer_id": now})


# -- self-destructing messages ------------------------------------------------------------


def test_messages(build: Any, clock: Any) -> None:
    app = build(messages)
    start = clock.now()
    short = app.run_mutation(messages.send_expiring_message, {"body": "short", "expires_in_ms": 1000.0})
    long = app.run_mutation(messages.send_expiring_message, {"body": "long", "expires_in_ms": 5000.0})
    early = app.run_mutation(messages.send_expiring_message, {"body": "early", "expires_in_ms": 5000.0})
    assert [r["expires_at"] - start for r in app.run_query(messages.list_messages)] == [1000, 5000, 5000]
    early_job = app.run(lambda ctx: ctx.table("messages").get_x(early).expiry_id)
    app.run_mutation(messages.delete_message, {"message_id": early})
    assert state(app, early_job) == "canceled"
    clock.advance(999)
    app.finish_in_progress_scheduled_functions()
    assert [r["id"] for r in app.run_query(messages.list_messages)] == [short, long]
    clock.advance(1)
    app.finish_in_progress_scheduled_functions()
    assert [r["id"] for r in app.run_query(messages.list_messages)] == [long]
    app.finish_all_scheduled_functions()
    assert app.run_query(messages.list_messages) == []
    with pytest.raises(ValidationError):
        app.run_mutation(messages.send_expiring_message, {"body": "x", "expires_in_ms": 0.0})


# -- reminders ---------------------------------------------------------------------------


def test_reminders(build: Any, clock: Any) -> None:
    app = build(reminders)
    ada = app.run(lambda ctx: ctx.table("users").insert({"name": "ada"}))
    bob = app.run(lambda ctx: ctx.table("users").insert({"name": "bob"}))
    now = clock.now()
    first = app.run_mutation(reminders.schedule_reminder, {"user_id": ada, "message": "one", "send_at": now + 1000})
    second = app.run_mutation(reminders.schedule_reminder, {"user_id": ada, "message": "two", "send_at": now + 2000})
    bobs = app.run_mutation(reminders.schedule_reminder, {"user_id": bob, "message": "bob's", "send_at": now + 3000})
    with pytest.raises(ValidationError) as info:
        app.run_mutation(reminders.schedule_reminder, {"user_id": ada, "message": "past", "send_at": now})
    assert info.value.field == "send_at"

    app.run_mutation(reminders.cancel_reminder, {"reminder_id": second})
    with pytest.raises(ValidationError):
        app.run_mutation(reminders.cancel_reminder, {"reminder_id": second})
    bob_job = app.run(lambda ctx: ctx.table("reminders").get_x(bobs).job_id)
    app.run(lambda ctx: ctx.table("users").get_x(bob).delete())  # cascades; the edge cancels
    assert state(app, bob_job) == "canceled"

    clock.advance(999)
    app.finish_in_progress_scheduled_functions()
    assert app.run_query(reminders.inbox, {"user_id": ada}) == []
    app.finish_all_scheduled_functions()
    assert app.run_query(reminders.inbox, {"user_id": ada}) == ["one"]
    rows = app.run_query(reminders.list_reminders, {"user_id": ada})
    assert [(r["id"], r["status"], r["job"]) for r in rows] == [(first, "sent", "success"), (second, "canceled", "canceled")]
    assert clock.now() == now + 1000  # nothing else was due


def test_reminders_at_an_aware_datetime(build: Any) -> None:
    app = build(reminders)
    ada = app.run(lambda ctx: ctx.table("users").insert({"name": "ada"}))
    send_at = datetime(2026, 6, 1, 9, 0, tzinfo=UTC).timestamp() * 1000
    app.run_mutation(reminders.schedule_reminder, {"user_id": ada, "message": "summer", "send_at": send_at})
    app.finish_all_scheduled_functions()
    assert app.clock.now() == send_at
    assert app.run_query(reminders.inbox, {"user_id": ada}) == ["summer"]


# -- subscriptions (kitcn) ----------------------------------------------------------------


def test_subscriptions(build: Any, clock: Any) -> None:
    app = build(subscriptions)
    ada = app.run(lambda ctx: ctx.table("users").insert({"name": "ada"}))
    bob = app.run(lambda ctx: ctx.table("users").insert({"name": "bob"}))
    start = clock.now()
    mine = app.run_mutation(subscriptions.create_subscription, {"user_id": ada, "plan_id": "pro"})
    his = app.run_mutation(subscriptions.create_subscription, {"user_id": bob, "plan_id": "basic"})
    rows = app.run_query(subscriptions.list_subscriptions)
    assert [r["expires_at"] for r in rows] == [start + 30 * DAY] * 2
    his_job = app.run(lambda ctx: ctx.table("subscriptions").get_x(his).expiration_id)
    clock.advance(10 * DAY)
    app.run_mutation(subscriptions.cancel_subscription, {"subscription_id": his})
    assert state(app, his_job) == "canceled"
    with pytest.raises(EntNotFoundError):
        app.run_mutation(subscriptions.cancel_subscription, {"subscription_id": his})
    clock.advance(20 * DAY - 1)
    app.finish_in_progress_scheduled_functions()
    assert [r["status"] for r in app.run_query(subscriptions.list_subscriptions)] == ["active"]
    clock.advance(1)
    app.finish_in_progress_scheduled_functions()
    rows = app.run_query(subscriptions.list_subscriptions)
    assert [(r["id"], r["status"]) for r in rows] == [(mine, "expired")]


# -- kitcn procedures and ctx.orm ---------------------------------------------------------


def test_kitcn_app(build: Any, clock: Any) -> None:
    from ents.crpc import CRPCError

    ref = kitcn_app.ref
    clock.set_time(datetime(2026, 1, 2, 8, 0, tzinfo=UTC))
    app = build(kitcn_app)
    ada = app.client(identity={"subject": "ada"})

    def rows(table: str) -> list[dict[str, Any]]:
        return app.run_query(ref("list_rows"), {"table": table})  # type: ignore[no-any-return]

    def pending() -> list[str]:
        return sorted(j["name"].partition(":")[2] for j in ada.query(ref("list_pending_jobs"), {}))

    # authMutation: no identity, no call (and nothing written)
    with pytest.raises(CRPCError, match="Sign in first") as refused:
        app.client().mutation(ref("create_item"), {"name": "x"})
    assert refused.value.code == "UNAUTHORIZED" and refused.value.http_status == 401 and rows("items") == []
    with pytest.raises(FunctionNotFoundError):
        ada.mutation(ref("charge"), {"order_id": "x"})  # private procedures are internal functions
    with pytest.raises(ValidationError, match="Invalid arguments for function `schema_examples.kitcn_app:create_item`"):
        ada.mutation(ref("create_item"), {"title": "x"})

    # create item: returning("id"), then the notification once the mutation committed
    item = ada.mutation(ref("create_item"), {"name": "lamp"})
    assert [r["id"] for r in rows("items")] == [item] and pending() == ["send_notification"]
    app.finish_in_progress_scheduled_functions()
    assert [(n["item_id"], n["text"]) for n in rows("notifications")] == [(item, "New item")]

    # process order: processing now, charged 5 s later
    order = ada.mutation(ref("place_order"), {"total_cents": 1200})
    ada.mutation(ref("process_order"), {"order_id": order})
    assert rows("orders")[0]["status"] == "processing"
    clock.advance(kitcn_app.CHARGE_DELAY_MS - 1)
    app.finish_in_progress_scheduled_functions()
    assert rows("orders")[0]["status"] == "processing"
    clock.advance(1)
    app.finish_in_progress_scheduled_functions()
    assert rows("orders")[0]["status"] == "paid"

    # reminders: at a time, BAD_REQUEST for the past (nothing scheduled)
    with pytest.raises(CRPCError, match="Reminder time must be in the future") as past:
        ada.mutation(ref("schedule_reminder"), {"message": "late", "send_at": clock.now()})
    assert (past.value.code, past.value.http_status, past.value.data["code"]) == ("BAD_REQUEST", 400, "BAD_REQUEST")
    at = clock.now() + 60_000
    ada.mutation(ref("schedule_reminder"), {"message": "stand up", "send_at": at})
    clock.advance(60_000)
    app.finish_in_progress_scheduled_functions()
    assert [(r["message"], r["sent_at"]) for r in rows("sent_reminders")] == [("stand up", at)]

    # subscriptions: the job id is stored, cancel cancels it, NOT_FOUND afterwards
    keep = ada.mutation(ref("create_subscription"), {"plan_id": "pro"})
    drop = ada.mutation(ref("create_subscription"), {"plan_id": "trial"})
    jobs = {s["id"]: s["expiration_job_id"] for s in rows("subscriptions")}
    status = ada.query(ref("get_job_status"), {"job_id": jobs[drop]})
    assert status == {"name": ref("expire"), "scheduled_time": clock.now() + kitcn_app.SUBSCRIPTION_MS,
                      "completed_time": None, "state": {"kind": "pending"}}
    assert pending() == ["expire", "expire"]
    ada.mutation(ref("cancel_subscription"), {"subscription_id": drop})
    assert ada.query(ref("get_job_status"), {"job_id": jobs[drop]})["state"]["kind"] == "canceled"
    with pytest.raises(CRPCError, match="Subscription not found") as missing:
        ada.mutation(ref("cancel_subscription"), {"subscription_id": drop})
    assert missing.value.http_status == 404
    assert [p["id"] for p in ada.query(ref("list_pending_jobs"), {})] == [jobs[keep]]
    clock.advance(kitcn_app.SUBSCRIPTION_MS)
    app.finish_in_progress_scheduled_functions()
    assert [(s["id"], s["status"]) for s in rows("subscriptions")] == [(keep, "expired")]
    assert ada.query(ref("get_job_status"), {"job_id": jobs[keep]})["completed_time"] == clock.now()


def test_kitcn_app_crons(build: Any, clock: Any) -> None:
    clock.set_time(datetime(2026, 1, 2, 7, 0, tzinfo=UTC))
    app = build(kitcn_app)
    ref = kitcn_app.ref
    now = clock.now()
    app.run(lambda ctx: ctx.orm.insert("sessions").values(
        [{"token": f"old{i}", "last_active_at": now - 31 * DAY} for i in range(3)]
        + [{"token": "fresh", "last_active_at": now - DAY}]))
    ada = app.client(identity={"subject": "ada"})
    ada.mutation(ref("place_order"), {"total_cents": 5})
    ada.mutation(ref("create_item"), {"name": "lamp"})
    app.finish_in_progress_scheduled_functions()  # the interval cron runs first when scheduling starts
    assert [s["token"] for s in app.run_query(ref("list_rows"), {"table": "sessions"})] == ["fresh"]
    assert app.run_mutation(ref("cleanup_stale_data"), {}) == {"deleted_count": 0}
    clock.set_time(datetime(2026, 1, 2, 9, 0, tzinfo=UTC))
    app.finish_in_progress_scheduled_functions()
    reports = app.run_query(ref("list_rows"), {"table": "reports"})
    assert [(r["type"], r["data"]) for r in reports] == [("daily", {"orders": 1, "items": 1})]


# -- orders ------------------------------------------------------------------------------


def test_orders(build: Any, clock: Any) -> None:
    app = build(orders)
    good = app.run_mutation(orders.place_order, {"products": ["book"], "total_cents": 1200, "card": "4242"})
    declined = app.run_mutation(orders.place_order, {"products": ["lamp"], "total_cents": 3500, "card": "0000 9999"})
    cancelled = app.run_mutation(orders.place_order, {"products": ["socks"], "total_cents": 900, "card": "4242"})
    for order_id in (good, declined, cancelled):
        app.run_mutation(orders.process_order, {"order_id": order_id})
    with pytest.raises(ValidationError):
        app.run_mutation(orders.process_order, {"order_id": good})
    cancelled_job = app.run(lambda ctx: ctx.table("orders").get_x(cancelled).payment_id)
    clock.advance(orders.CHARGE_DELAY_MS - 1)
    app.run_mutation(orders.cancel_order, {"order_id": cancelled})
    app.finish_in_progress_scheduled_functions()
    assert [r["status"] for r in app.run_query(orders.list_orders)] == ["processing", "processing"]
    assert app.payments.charges == []
    clock.advance(1)
    app.finish_in_progress_scheduled_functions()
    rows = {r["id"]: r for r in app.run_query(orders.list_orders)}
    assert rows[good]["status"] == "shipped" and rows[good]["payment"] == "success"
    assert rows[declined]["status"] == "failed" and "declined" in rows[declined]["error"]
    assert cancelled not in rows and state(app, cancelled_job) == "canceled"
    assert app.payments.charges == [("4242", 1200)]
    with pytest.raises(ValidationError):
        app.run_mutation(orders.cancel_order, {"order_id": good})


# -- fan-out / fan-in -----------------------------------------------------------------------


def test_batch_fans_out_and_in(build: Any) -> None:
    app = build(batch)
    batch_id = app.run_mutation(batch.start_batch, {"words": ["ab", "cd", "ef"]})
    status = app.run_query(batch.batch_status, {"batch_id": batch_id})
    assert (status["status"], status["completed_items"], status["jobs"]) == ("processing", 0, ["pending"] * 3)
    app.finish_in_progress_scheduled_functions()
    status = app.run_query(batch.batch_status, {"batch_id": batch_id})
    assert status == {
        "status": "completed",
        "completed_items": 3,
        "total_items": 3,
        "summary": "BA DC FE",
        "jobs": ["success"] * 3,
    }
    with pytest.raises(ValidationError):
        app.run_mutation(batch.start_batch, {"words": []})


def test_deleting_a_batch_cancels_its_pending_items(build: Any) -> None:
    app = build(batch)
    batch_id = app.run_mutation(batch.start_batch, {"words": ["ab", "cd"]})
    jobs = app.run(lambda ctx: [i.job_id for i in ctx.table("batches").get_x(batch_id).edge("items")])
    app.run_mutation(batch.delete_batch, {"batch_id": batch_id})
    assert [state(app, j) for j in jobs] == ["canceled", "canceled"]
    assert app.finish_in_progress_scheduled_functions() == 0


def test_batch_counts_every_item_when_actions_run_concurrently(tmp_path: Path) -> None:
    app = batch.make_app(f"sqlite:///{tmp_path / 'batch.db'}")
    try:
        words = [f"w{i}" for i in range(40)]
        with app.worker(concurrency=8):
            batch_id = app.run_mutation(batch.start_batch, {"words": words})
            assert wait_for(lambda: app.run_query(batch.batch_status, {"batch_id": batch_id})["summary"] is not None, timeout=120), (
                app.run_query(batch.batch_status, {"batch_id": batch_id})
            )
            status = app.run_query(batch.batch_status, {"batch_id": batch_id})
        assert status["completed_items"] == 40 and status["status"] == "completed"
        assert status["summary"] == " ".join(w[::-1].upper() for w in words)
    finally:
        app.close()


# -- saga --------------------------------------------------------------------------------


def test_saga_compensates_when_the_local_step_fails(build: Any) -> None:
    app = build(saga)
    ada = app.run(lambda ctx: ctx.table("users").insert({"name": "ada", "customer_id": "cus_ada"}))
    created = app.run_action(saga.create_subscription, {"user_id": ada, "plan_id": "pro"})
    assert created["outcome"] == "created"
    again = app.run_action(saga.create_subscription, {"user_id": ada, "plan_id": "basic"})
    assert again["outcome"] == "compensated" and 'duplicate 1:1 edge "user"' in again["error"]
    failed = app.run_action(saga.create_subscription, {"user_id": ada, "plan_id": "gold"})
    assert failed == {"outcome": "failed", "error": "no such plan: gold"}
    provider = app.provider
    assert list(provider.active) == ["sub_1"] and provider.canceled == [again["canceled"]] == ["sub_2"]
    assert app.run(lambda ctx: [s.remote_id for s in ctx.table("subscriptions")]) == ["sub_1"]
    gone = app.run(lambda ctx: ctx.table("users").insert({"name": "gone", "customer_id": "cus_gone"}))
    app.run(lambda ctx: ctx.table("users").get_x(gone).delete())
    with pytest.raises(EntNotFoundError):
        app.run_action(saga.create_subscription, {"user_id": gone, "plan_id": "pro"})


def test_saga_runs_in_the_background_from_a_mutation(build: Any) -> None:
    app = build(saga)
    bob = app.run(lambda ctx: ctx.table("users").insert({"name": "bob", "customer_id": "cus_bob"}))
    job_id = app.client().mutation(saga.subscribe, {"user_id": bob, "plan_id": "basic"})
    app.finish_in_progress_scheduled_functions()
    assert state(app, job_id) == "success"
    assert app.run(lambda ctx: ctx.table("users").get_x(bob).edge("subscription").plan_id) == "basic"


# -- retries -----------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [0, 1, 2, 3])
def test_backoff_doubles_and_jitter_adds_under_a_second(attempt: int) -> None:
    assert retries.backoff_ms(attempt, 0.0) == 2**attempt * 1000
    assert 2**attempt * 1000 < retries.backoff_ms(attempt, 0.999) < 2**attempt * 1000 + 1000


def test_manual_retries_back_off_then_succeed_or_give_up(build: Any, clock: Any) -> None:
    endpoint = retries.FlakyEndpoint({"https://ok/": 2, "https://down/": 99})
    app = build(retries, endpoint=endpoint)
    start = clock.now()
    ok = app.run_mutation(retries.send_webhook, {"url": "https://ok/", "payload": {"n": 1}})
    down = app.run_mutation(retries.send_webhook, {"url": "https://down/", "payload": {"n": 2}})
    app.finish_in_progress_scheduled_functions()
    row = {r["id"]: r for r in app.run_query(retries.list_deliveries)}[ok]
    assert (row["status"], row["attempt"], row["error"], row["job"]) == ("pending", 1, "HTTP 503", "pending")
    app.finish_all_scheduled_functions()
    rows = {r["id"]: r for r in app.run_query(retries.list_deliveries)}
    assert (rows[ok]["status"], endpoint.calls["https://ok/"]) == ("delivered", 3)
    assert (rows[down]["status"], endpoint.calls["https://down/"]) == ("failed", retries.MAX_ATTEMPTS)
    # each attempt is its own job, 2**n seconds (plus < 1 s of jitter) after the previous one
    times = app.run(
        lambda ctx: [
            j.scheduled_time - start
            for j in ctx.table("_scheduled_functions")
            if j.name.endswith(":process_with_retry") and j.args["delivery_id"] == down
        ]
    )
    assert len(times) == retries.MAX_ATTEMPTS and times[0] == 0
    for n, (before, after) in enumerate(zip(times, times[1:], strict=False)):
        assert 2**n * 1000 <= after - before < 2**n * 1000 + 1000
    # the delivery's edge follows the latest attempt
    latest = app.run(lambda ctx: ctx.table("deliveries").get_x(down).edge("job").args)
    assert latest["attempt"] == retries.MAX_ATTEMPTS - 1


def test_a_retry_policy_does_the_same_in_one_job(build: Any) -> None:
    endpoint = retries.FlakyEndpoint({"https://flaky/": 3, "https://x/gone": 0, "https://never/": 99})
    app = build(retries, endpoint=endpoint)
    ids = [
        app.run_mutation(retries.send_webhook_with_policy, {"url": url, "payload": {}})
        for url in ("https://flaky/", "https://x/gone", "https://never/")
    ]
    app.finish_all_scheduled_functions()
    rows = {r["id"]: r for r in app.run_query(retries.list_deliveries)}
    flaky, gone, never = (rows[i] for i in ids)
    assert (flaky["status"], flaky["job"], flaky["job_attempts"]) == ("delivered", "success", 4)
    assert (gone["status"], gone["job"], endpoint.calls["https://x/gone"]) == ("failed", "failed", 1)
    assert (never["job"], endpoint.calls["https://never/"]) == ("failed", retries.MAX_ATTEMPTS)


# -- idempotent payments -------------------------------------------------------------------


def test_payments_with_the_same_key_charge_once(build: Any) -> None:
    app = build(payments)
    request = {"idempotency_key": "k1", "amount_cents": 500, "customer_id": "cus_1"}
    ids = {app.run_mutation(payments.process_payment, request) for _ in range(3)}
    assert len(ids) == 1
    other = app.run_mutation(payments.process_payment, {**request, "idempotency_key": "k2"})
    with pytest.raises(ValidationError) as info:
        app.run_mutation(payments.process_payment, {**request, "amount_cents": 501})
    assert info.value.field == "idempotency_key"
    app.finish_in_progress_scheduled_functions()
    # a retried request after the charge still answers with the same payment
    assert app.run_mutation(payments.process_payment, request) in ids
    app.finish_in_progress_scheduled_functions()
    rows = app.run_query(payments.list_payments)
    assert [(r["id"], r["status"]) for r in rows] == [(ids.pop(), "charged"), (other, "charged")]
    assert len(app.provider.charges) == 2


def test_concurrent_requests_with_one_key_make_one_payment(db_url: str, backend: str) -> None:
    if backend == "memory":
        pytest.skip("an in-memory database runs one transaction at a time")
    app = payments.make_app(db_url)
    try:
        request = {"idempotency_key": "race", "amount_cents": 100, "customer_id": "cus_1"}
        barrier = threading.Barrier(6)
        results: list[str] = []

        def client() -> None:
            barrier.wait()
            results.append(app.run_mutation(payments.process_payment, request))

        threads = [threading.Thread(target=client) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(results) == 6 and len(set(results)) == 1, results
        assert len(app.run_query(payments.list_payments)) == 1
    finally:
        app.close()


# -- daily cleanup cron --------------------------------------------------------------------


def test_the_daily_cron_deletes_stale_sessions_in_batches(db_url: str) -> None:
    from ents.testing import FakeClock

    clock = FakeClock(datetime(2026, 1, 1, 12, 0, tzinfo=UTC))
    app = sessions.make_app(db_url, clock, batch=3)
    try:
        ada = app.run(lambda ctx: ctx.table("users").insert({"name": "ada"}))
        stale = [app.run_mutation(sessions.sign_in, {"user_id": ada, "token": f"s{i}"}) for i in range(7)]
        clock.advance(DAY)
        fresh = app.run_mutation(sessions.sign_in, {"user_id": ada, "token": "fresh"})
        crons = app.run(lambda ctx: ctx.db.system.query("_cron_jobs").collect())
        assert crons == []  # crons are reconciled when scheduling starts
        # The cron's first run is at 03:00 after scheduling starts: Jan 31, when the first
        # seven sessions are still half a day short of 30 days old.
        clock.set_time(datetime(2026, 1, 31, 2, 59, tzinfo=UTC))
        app.finish_in_progress_scheduled_functions()
        clock.set_time(datetime(2026, 1, 31, 3, 0, tzinfo=UTC))
        app.finish_in_progress_scheduled_functions()
        assert app.run_query(sessions.count_sessions) == 8
        # Feb 1 at 03:00 they are stale: three batches of at most 3 delete them.
        clock.set_time(datetime(2026, 2, 1, 3, 0, tzinfo=UTC))
        app.finish_in_progress_scheduled_functions()
        assert app.run(lambda ctx: [s._id for s in ctx.table("sessions")]) == [fresh]
        assert all(app.run(lambda ctx: [ctx.table("sessions").get(s) is None for s in stale]))
        runs = app.run(
            lambda ctx: [
                (j.scheduled_time, j.state.kind)
                for j in ctx.table("_scheduled_functions")
                if j.name.endswith(":cleanup_stale_sessions")
            ]
        )
        jan31 = datetime(2026, 1, 31, 3, 0, tzinfo=UTC).timestamp() * 1000
        feb1 = jan31 + DAY
        # Jan 31's run; Feb 1's run and its two continuations (3 + 3 + 1)
        assert runs == [(jan31, "success"), (feb1, "success"), (feb1, "success"), (feb1, "success")]
        (cron,) = app.run(lambda ctx: ctx.db.system.query("_cron_jobs").collect())
        assert cron["name"] == "cleanup stale sessions"
        assert cron["next_run"] == feb1 + DAY
    finally:
        app.close()


# -- secrets (rules) ---------------------------------------------------------------------


def test_secrets_each_user_sees_and_changes_only_their_own(build: Any) -> None:
    app = build(secrets)
    ada_id = app.run_mutation(secrets.sign_up, {"name": "Ada", "token": "a"})
    bob_id = app.run_mutation(secrets.sign_up, {"name": "Bob", "token": "b"})
    ada, bob = app.client(identity={"token": "a"}), app.client(identity={"token": "b"})
    diary = ada.mutation(secrets.add_secret, {"text": "diary"})
    pin = bob.mutation(secrets.add_secret, {"text": "pin"})
    assert ada.query(secrets.my_secrets) == ["diary"] and bob.query(secrets.my_secrets) == ["pin"]
    assert app.client().query(secrets.my_secrets) == []
    assert bob.query(secrets.read_secret, {"secret_id": diary}) is None
    assert bob.query(secrets.read_secret, {"secret_id": pin}) == "pin"
    with pytest.raises(RuleError, match='Cannot insert into table "secrets"'):
        bob.mutation(secrets.give_secret, {"text": "gift", "owner_id": ada_id})
    assert bob.mutation(secrets.give_secret, {"text": "note to self", "owner_id": bob_id})
    with pytest.raises(EntNotFoundError, match="cannot be read"):
        bob.mutation(secrets.delete_secret, {"secret_id": diary})
    with pytest.raises(FunctionNotFoundError):
        bob.query(secrets.count_all_secrets)
    assert app.run_query(secrets.count_all_secrets) == 3
    ada.mutation(secrets.delete_secret, {"secret_id": diary})
    assert ada.query(secrets.my_secrets) == [] and app.run_query(secrets.count_all_secrets) == 2


# -- webapp (FastAPI, the HTTP API, a worker beside it) ------------------------------------

ADA = {"Authorization": "Bearer ada-token"}
BOB = {"Authorization": "Bearer bob-token"}


def test_webapp_endpoints_await_ents_calls_and_serve_the_http_api(build: Any, clock: Any) -> None:
    app = build(webapp)
    web = webapp.make_web(app, worker=False)  # jobs run below with the fake clock

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=web), base_url="http://t") as http:
            assert (await http.get("/ping")).json() == "pong"
            assert (await http.get("/todos")).status_code == 401
            added = await http.post("/todos", json={"text": "plants", "remind_in_ms": 60_000}, headers=ADA)
            assert added.status_code == 201
            todo = added.json()["id"]
            assert (await http.get("/todos", headers=ADA)).json() == [{"id": todo, "text": "plants", "reminded": False}]
            assert (await http.get("/todos", headers=BOB)).json() == []
            # the same function over Convex's HTTP API, with the same tokens
            r = await http.post("/convex/api/query", json={"path": "todos:list", "args": {}}, headers=ADA)
            assert r.json() == {"status": "success", "value": [{"id": todo, "text": "plants", "reminded": False}],
                                "logLines": []}
            r = await http.post("/convex/api/query", json={"path": "todos:list", "args": {}})
            assert r.status_code == 560 and r.json()["errorData"]["code"] == "UNAUTHENTICATED"
            r = await http.post("/convex/api/query", json={"path": "todos:list", "args": {}}, headers={"Authorization": "Bearer x"})
            assert r.status_code == 401
            r = await http.post("/convex/api/mutation", json={"path": "todos:remind", "args": {"todo_id": todo}})
            assert (r.status_code, r.json()["code"]) == (400, "FunctionNotFound")
            clock.advance(60_000)
            app.finish_in_progress_scheduled_functions()
            assert (await http.get("/todos", headers=ADA)).json()[0]["reminded"] is True

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_webapp_runs_its_worker_beside_the_server(tmp_path: Path) -> None:
    """Served by uvicorn: the lifespan starts the worker, which runs the reminder."""
    app = webapp.make_app(f"sqlite:///{tmp_path / 'web.db'}")
    try:
        with serving(webapp.make_web(app)) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            assert http.post("/todos", json={"text": "now", "remind_in_ms": 0}, headers=ADA).status_code == 201
            assert wait_for(lambda: http.get("/todos", headers=ADA).json()[0]["reminded"]), "the worker never ran the reminder"
    finally:
        app.close()
