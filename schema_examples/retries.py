"""An action that retries with exponential backoff and jitter (seeds 001, 002 and 004).

Scheduled actions run at most once and are not retried (they may have side effects), so
an action that calls a flaky service retries itself: on failure it schedules its next
attempt ``2**attempt`` seconds later plus up to a second of random jitter (so that many
failing clients do not retry in lockstep), records the attempt, and gives up after
``max_attempts``. Each delivery's ``job`` edge always points at its current attempt.

The same with ents' opt-in retry policy: ``app.internal_action(deliver,
retry=RetryPolicy(...))`` re-runs the job itself on failure (``NonRetryableError`` stops at
once) and keeps a log of the attempts in the job's document.

    python -m schema_examples.retries
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any, Literal

from ents import App, NonRetryableError, RetryPolicy, define_ent, define_ent_schema
from ents.clock import Clock
from ents.testing import FakeClock

MAX_ATTEMPTS = 5

schema = define_ent_schema(
    {
        "deliveries": define_ent({"url": str, "payload": dict[str, Any]})
        .field("status", Literal["pending", "delivered", "failed"], default="pending")
        .field("attempt", int, default=0)
        .field("next_retry_at", float | None)
        .field("response", str | None)
        .field("error", str | None)
        .edge("job", to="_scheduled_functions", deletion="hard"),
    }
)


class EndpointError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class FlakyEndpoint:
    """Stands in for a webhook receiver: each URL fails its first ``failures[url]`` calls
    with a 503; a URL containing "/gone" always answers 410."""

    def __init__(self, failures: dict[str, int] | None = None) -> None:
        self.failures = dict(failures or {})
        self.calls: Counter[str] = Counter()

    def post(self, url: str, payload: dict[str, Any]) -> str:
        self.calls[url] += 1
        if "/gone" in url:
            raise EndpointError(410)
        if self.calls[url] <= self.failures.get(url, 0):
            raise EndpointError(503)
        return f"200 OK ({len(payload)} fields)"


def backoff_ms(attempt: int, rand: float) -> float:
    """Seed 004's delay before attempt ``attempt + 1``: ``2**attempt`` s plus jitter < 1 s."""
    return 2**attempt * 1000 + rand * 1000


# -- the seed's manual pattern ----------------------------------------------------------


def send_webhook(ctx: Any, url: str, payload: dict[str, Any]) -> str:
    delivery_id = ctx.table("deliveries").insert({"url": url, "payload": payload})
    job_id = ctx.scheduler.run_after(0, process_with_retry, {"delivery_id": delivery_id})
    ctx.table("deliveries").get_x(delivery_id).patch({"job_id": job_id})
    return str(delivery_id)


def process_with_retry(ctx: Any, delivery_id: str, attempt: int = 0, max_attempts: int = MAX_ATTEMPTS) -> None:
    delivery = ctx.run_query(get_delivery, {"delivery_id": delivery_id})
    if delivery is None or delivery["status"] != "pending":
        return
    try:
        response = ctx.app.endpoint.post(delivery["url"], delivery["payload"])
    except EndpointError as exc:
        if attempt + 1 < max_attempts:
            delay = backoff_ms(attempt, random.random())
            job_id = ctx.scheduler.run_after(
                delay,
                process_with_retry,
                {"delivery_id": delivery_id, "attempt": attempt + 1, "max_attempts": max_attempts},
            )
            ctx.run_mutation(
                update_attempt,
                {
                    "delivery_id": delivery_id,
                    "attempt": attempt + 1,
                    "next_retry_at": ctx.app.clock.now() + delay,
                    "job_id": job_id,
                    "error": str(exc),
                },
            )
        else:
            ctx.run_mutation(mark_failed, {"delivery_id": delivery_id, "error": str(exc)})
        return
    ctx.run_mutation(mark_delivered, {"delivery_id": delivery_id, "response": response})


def get_delivery(ctx: Any, delivery_id: str) -> dict[str, Any] | None:
    delivery = ctx.table("deliveries").get(delivery_id)
    return delivery.doc() if delivery is not None else None


def update_attempt(ctx: Any, delivery_id: str, attempt: int, next_retry_at: float, job_id: str, error: str) -> None:
    ctx.table("deliveries").get_x(delivery_id).patch(
        {"attempt": attempt, "next_retry_at": next_retry_at, "job_id": job_id, "error": error}
    )


def mark_delivered(ctx: Any, delivery_id: str, response: str) -> None:
    ctx.table("deliveries").get_x(delivery_id).patch({"status": "delivered", "response": response, "next_retry_at": None})


def mark_failed(ctx: Any, delivery_id: str, error: str) -> None:
    ctx.table("deliveries").get_x(delivery_id).patch({"status": "failed", "error": error, "next_retry_at": None})


# -- the same with a retry policy -------------------------------------------------------

POLICY = RetryPolicy(max_attempts=MAX_ATTEMPTS, initial_backoff_ms=1000, base=2, jitter=0.5)


def send_webhook_with_policy(ctx: Any, url: str, payload: dict[str, Any]) -> str:
    delivery_id = ctx.table("deliveries").insert({"url": url, "payload": payload})
    job_id = ctx.scheduler.run_after(0, deliver, {"delivery_id": delivery_id})
    ctx.table("deliveries").get_x(delivery_id).patch({"job_id": job_id})
    return str(delivery_id)


def deliver(ctx: Any, delivery_id: str) -> None:
    """Just the work: raising lets the policy schedule the next attempt."""
    delivery = ctx.run_query(get_delivery, {"delivery_id": delivery_id})
    if delivery is None or delivery["status"] != "pending":
        return
    try:
        response = ctx.app.endpoint.post(delivery["url"], delivery["payload"])
    except EndpointError as exc:
        if 400 <= exc.status < 500:
            ctx.run_mutation(mark_failed, {"delivery_id": delivery_id, "error": str(exc)})
            raise NonRetryableError(str(exc)) from exc  # retrying cannot help
        raise
    ctx.run_mutation(mark_delivered, {"delivery_id": delivery_id, "response": response})


def list_deliveries(ctx: Any) -> list[dict[str, Any]]:
    def row(d: Any) -> dict[str, Any]:
        job = d.edge("job")
        return {
            "id": d._id,
            "url": d.url,
            "status": d.status,
            "attempt": d.attempt,
            "error": d.error,
            "job": job.state.kind if job else None,
            "job_attempts": len(job.get("attempts", [])) if job else 0,
        }

    return ctx.table("deliveries").map(row)  # type: ignore[no-any-return]


def make_app(url: str | None = None, clock: Clock | None = None, endpoint: FlakyEndpoint | None = None) -> App:
    """The webhooks app on ``url`` (in-memory SQLite by default)."""
    app = App(schema, url or "sqlite://", clock=clock)
    app.endpoint = endpoint or FlakyEndpoint()  # what the actions call
    app.mutation(send_webhook)
    app.mutation(send_webhook_with_policy)
    app.query(list_deliveries)
    app.internal_query(get_delivery)
    app.internal_mutation(update_attempt)
    app.internal_mutation(mark_delivered)
    app.internal_mutation(mark_failed)
    app.internal_action(process_with_retry)
    app.internal_action(deliver, retry=POLICY)
    return app


def main() -> dict[str, Any]:
    clock = FakeClock()  # simulated time: backoffs pass instantly
    endpoint = FlakyEndpoint(
        {
            "https://a.example/hook": 0,
            "https://b.example/hook": 2,
            "https://c.example/hook": 99,
            "https://b.example/hook?policy": 3,
            "https://d.example/gone": 0,
        }
    )
    with make_app(clock=clock, endpoint=endpoint) as app:
        start = clock.now()
        urls = list(endpoint.failures)
        for url in urls[:3]:
            app.run_mutation(send_webhook, {"url": url, "payload": {"event": "paid"}})
        for url in urls[3:]:
            app.run_mutation(send_webhook_with_policy, {"url": url, "payload": {"event": "paid"}})
        app.finish_all_scheduled_functions()
        rows = app.run_query(list_deliveries)
        print("manual backoff (process_with_retry), then a RetryPolicy (deliver):")
        for r in rows:
            tries = endpoint.calls[r["url"]]
            print(f"    {r['url']:<32} {r['status']:<9} after {tries} tr{'y' if tries == 1 else 'ies'}")
        c = rows[2]["id"]
        times = app.run(
            lambda ctx: [
                (j.scheduled_time - start) / 1000
                for j in ctx.table("_scheduled_functions")
                if j.name.endswith(":process_with_retry") and j.args["delivery_id"] == c
            ]
        )
        print(f"c.example was tried at {', '.join(f'{t:.1f}s' for t in times)}: 2**n s apart, plus jitter")
        return {"deliveries": rows, "calls": dict(endpoint.calls), "c_times": times}


if __name__ == "__main__":
    main()
