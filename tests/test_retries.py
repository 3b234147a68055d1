"""Action retries: ``@app.internal_action(retry=RetryPolicy(...))``.

An action with a retry policy runs at least once and at most ``max_attempts`` times: a
failed attempt is re-queued after an exponential backoff with jitter, ``NonRetryableError``
stops at once, and a worker killed mid-attempt costs one attempt (the job is re-queued, not
failed, while attempts remain). Each attempt is listed in the job document's ``attempts``.
An action without a policy stays at most once.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ents import App, NonRetryableError, RetryPolicy, SchemaError, define_ent, define_ent_schema
from ents.scheduler import TRANSIENT_ACTION_ERROR
from ents.testing import FakeClock
from tests.reliability import Procs, db_url, effect_log, wait_until

schema = define_ent_schema({"events": define_ent({"what": str})})


def job(app: App, id: str) -> dict[str, Any]:
    return app.run(lambda ctx: ctx.db.system.get(id))  # type: ignore[no-any-return]


def schedule(app: App, fn: Any, args: dict[str, Any] | None = None, delay: float = 0) -> str:
    return app.run(lambda ctx: ctx.scheduler.run_after(delay, fn, args or {}))  # type: ignore[no-any-return]


def flaky_app(make_app: Any, policy: RetryPolicy, fail_times: int | None = None, exc: type[BaseException] = RuntimeError) -> tuple[App, dict[str, int]]:
    """An app whose action ``flaky`` fails ``fail_times`` times (always when None)."""
    app = make_app(schema)
    calls = {"n": 0}

    @app.internal_action(retry=policy, name="retries:flaky")
    def flaky(ctx: Any) -> None:
        calls["n"] += 1
        if fail_times is None or calls["n"] <= fail_times:
            raise exc(f"attempt {calls['n']} broke")
        ctx.run_mutation("retries:log", {"what": f"done after {calls['n']}"})

    @app.internal_mutation(name="retries:log")
    def log(ctx: Any, what: str) -> None:
        ctx.table("events").insert({"what": what})

    return app, calls


# -- backoff ---------------------------------------------------------------------------------


def test_backoff_is_exponential_with_jitter_between_attempts(make_app, clock: FakeClock):
    policy = RetryPolicy(max_attempts=4, initial_backoff_ms=1000, base=2, jitter=0.5)
    app, calls = flaky_app(make_app, policy)
    id = schedule(app, "retries:flaky")
    for attempt, base_delay in enumerate([1000, 2000, 4000], start=1):
        failed_at = clock.now()
        app.finish_in_progress_scheduled_functions()
        doc = job(app, id)
        assert calls["n"] == attempt
        assert doc["state"] == {"kind": "pending"}
        assert failed_at + base_delay <= doc["scheduled_time"] <= failed_at + base_delay * 1.5
        assert [a["attempt"] for a in doc["attempts"]] == list(range(1, attempt + 1))
        assert doc["attempts"][-1]["error"] == f"RuntimeError: attempt {attempt} broke"
        # Nothing runs before the backoff is over.
        clock.set(doc["scheduled_time"] - 1)
        app.finish_in_progress_scheduled_functions()
        assert calls["n"] == attempt
        clock.set(doc["scheduled_time"])
    app.finish_in_progress_scheduled_functions()
    doc = job(app, id)
    assert calls["n"] == 4
    assert doc["state"] == {"kind": "failed", "error": "RuntimeError: attempt 4 broke"}
    assert len(doc["attempts"]) == 4
    assert doc["completed_time"] == clock.now()
    for a in doc["attempts"]:
        assert set(a) >= {"attempt", "started_time", "finished_time", "error"}
    app.finish_all_scheduled_functions()
    assert calls["n"] == 4  # never more than max_attempts


def test_backoff_is_capped_and_jitter_zero_is_exact(make_app, clock: FakeClock):
    policy = RetryPolicy(max_attempts=4, initial_backoff_ms=1000, base=10, max_backoff_ms=5000, jitter=0)
    app, _ = flaky_app(make_app, policy)
    id = schedule(app, "retries:flaky")
    delays = []
    for _ in range(3):
        before = clock.now()
        app.finish_in_progress_scheduled_functions()
        due = job(app, id)["scheduled_time"]
        delays.append(due - before)
        clock.set(due)
    assert delays == [1000, 5000, 5000]


def test_jitter_spreads_retries(make_app, clock: FakeClock):
    policy = RetryPolicy(max_attempts=2, initial_backoff_ms=1000, base=2, jitter=1.0)
    app, _ = flaky_app(make_app, policy)
    ids = [schedule(app, "retries:flaky") for _ in range(20)]
    start = clock.now()
    app.finish_in_progress_scheduled_functions()
    dues = [job(app, id)["scheduled_time"] - start for id in ids]
    assert all(1000 <= d <= 2000 for d in dues)
    assert len(set(dues)) > 1  # 20 equal draws from [0, 1) do not happen


def test_policy_delay_never_overflows():
    policy = RetryPolicy(max_attempts=100_000, initial_backoff_ms=1, base=10, max_backoff_ms=60_000, jitter=0.5)
    for attempt in (1, 10, 400, 5000, 99_999):
        d = policy.delay_ms(attempt, 0.999)
        assert math.isfinite(d) and 0 < d <= 90_000
    assert RetryPolicy(initial_backoff_ms=0, jitter=1).delay_ms(3, 0.5) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": -1},
        {"max_attempts": 2.5},
        {"max_attempts": True},
        {"max_attempts": "3"},
        {"initial_backoff_ms": -1},
        {"initial_backoff_ms": float("nan")},
        {"initial_backoff_ms": float("inf")},
        {"max_backoff_ms": float("nan")},
        {"base": 0.5},
        {"base": float("nan")},
        {"base": float("inf")},
        {"jitter": 1.5},
        {"jitter": -0.1},
        {"jitter": float("nan")},
        {"initial_backoff_ms": "1000"},
    ],
)
def test_bad_policies_are_refused_when_defined(kwargs):
    with pytest.raises(SchemaError, match="RetryPolicy"):
        RetryPolicy(**kwargs)


def test_retry_policy_is_for_actions_only(make_app):
    app = make_app(schema)
    with pytest.raises(SchemaError, match="retry policies are for actions"):
        app._decorator("mutation", True, lambda ctx: None, "x:y", RetryPolicy())
    with pytest.raises(SchemaError, match="RetryPolicy"):
        app.internal_action(lambda ctx: None, name="x:z", retry=3)


# -- outcomes ---------------------------------------------------------------------------------


def test_success_after_failures_lists_every_attempt(make_app, clock: FakeClock):
    app, calls = flaky_app(make_app, RetryPolicy(max_attempts=5, initial_backoff_ms=10), fail_times=2)
    id = schedule(app, "retries:flaky")
    app.finish_all_scheduled_functions()
    doc = job(app, id)
    assert calls["n"] == 3
    assert doc["state"] == {"kind": "success"}
    assert [a.get("error") for a in doc["attempts"]] == ["RuntimeError: attempt 1 broke", "RuntimeError: attempt 2 broke", None]
    assert [e.what for e in app.run(lambda ctx: ctx.table("events").collect())] == ["done after 3"]
    starts = [a["started_time"] for a in doc["attempts"]]
    assert starts == sorted(starts) and len(set(starts)) == 3


def test_non_retryable_error_stops_at_once(make_app):
    app, calls = flaky_app(make_app, RetryPolicy(max_attempts=5, initial_backoff_ms=10), exc=NonRetryableError)
    id = schedule(app, "retries:flaky")
    app.finish_all_scheduled_functions()
    doc = job(app, id)
    assert calls["n"] == 1
    assert doc["state"] == {"kind": "failed", "error": "NonRetryableError: attempt 1 broke"}
    assert len(doc["attempts"]) == 1


def test_subclass_of_non_retryable_error_stops_too(make_app):
    class PaymentDeclined(NonRetryableError):
        pass

    app, calls = flaky_app(make_app, RetryPolicy(max_attempts=5, initial_backoff_ms=10), exc=PaymentDeclined)
    schedule(app, "retries:flaky")
    app.finish_all_scheduled_functions()
    assert calls["n"] == 1


def test_an_action_without_a_policy_runs_at_most_once(make_app):
    app = make_app(schema)
    calls = {"n": 0}

    @app.internal_action
    def once(ctx: Any) -> None:
        calls["n"] += 1
        raise RuntimeError("no")

    id = schedule(app, once)
    app.finish_all_scheduled_functions()
    assert calls["n"] == 1
    doc = job(app, id)
    assert doc["state"] == {"kind": "failed", "error": "RuntimeError: no"}
    assert "attempts" not in doc


def test_cancel_during_backoff_stops_the_retries(make_app, clock: FakeClock):
    app, calls = flaky_app(make_app, RetryPolicy(max_attempts=5, initial_backoff_ms=1000))
    id = schedule(app, "retries:flaky")
    app.finish_in_progress_scheduled_functions()
    assert job(app, id)["state"] == {"kind": "pending"}
    app.run(lambda ctx: ctx.scheduler.cancel(id))
    app.finish_all_scheduled_functions()
    assert calls["n"] == 1
    doc = job(app, id)
    assert doc["state"] == {"kind": "canceled"}
    assert len(doc["attempts"]) == 1


def test_cancel_during_a_failing_attempt_is_final(make_app, clock: FakeClock):
    app = make_app(schema)
    calls = {"n": 0}

    @app.internal_mutation(name="retries:cancel_me")
    def cancel_me(ctx: Any) -> None:
        for j in ctx.table("_scheduled_functions", "by_state", lambda q: q.eq("state", "inProgress")):
            ctx.scheduler.cancel(j._id)

    @app.internal_action(retry=RetryPolicy(max_attempts=5, initial_backoff_ms=10), name="retries:self_cancel")
    def self_cancel(ctx: Any) -> None:
        calls["n"] += 1
        ctx.run_mutation(cancel_me, {})
        raise RuntimeError("failed after being canceled")

    id = schedule(app, self_cancel)
    app.finish_all_scheduled_functions()
    assert calls["n"] == 1
    doc = job(app, id)
    assert doc["state"] == {"kind": "canceled"}
    assert [a["error"] for a in doc["attempts"]] == ["RuntimeError: failed after being canceled"]
    # The lease was released: nothing is left looking like a running job.
    row = app._transact(
        lambda tx: tx.fetchone('SELECT "lease_owner" FROM "_scheduled_functions" WHERE "state" = \'canceled\''), write=False
    )
    assert row == (None,)


def test_scheduled_public_action_with_retry(make_app, clock: FakeClock):
    app = make_app(schema)
    calls = {"n": 0}

    @app.action(retry=RetryPolicy(max_attempts=2, initial_backoff_ms=5))
    async def public_flaky(ctx: Any) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("first")
        return "ok"

    id = schedule(app, public_flaky)
    app.finish_all_scheduled_functions()
    assert job(app, id)["state"] == {"kind": "success"}
    # A direct call is not retried: retries belong to scheduled runs.
    calls["n"] = 0
    with pytest.raises(ValueError, match="first"):
        app.run_action(public_flaky)


# -- abandoned attempts (the worker died) -------------------------------------------------------


def _claim_as_dead_worker(app: App, id: str) -> None:
    """Claim a due action job under the lease of a process that no longer exists."""
    import socket

    from ents.worker import Executor

    dead = subprocess.run(["true"])  # a pid that has exited and been reaped
    del dead
    proc = subprocess.Popen(["true"])
    proc.wait()
    ex = Executor(app, owner=f"{socket.gethostname()}:{proc.pid}:deadbeef")
    claimed = ex.claim_due_actions(10)
    assert [app.codec.encode("_scheduled_functions", c[0]) for c in claimed] == [id]


def test_abandoned_attempt_is_requeued_with_backoff_while_attempts_remain(make_app, clock: FakeClock):
    app, calls = flaky_app(make_app, RetryPolicy(max_attempts=2, initial_backoff_ms=1000, jitter=0.5), fail_times=0)
    id = schedule(app, "retries:flaky")
    claimed_at = clock.now()
    _claim_as_dead_worker(app, id)
    assert job(app, id)["state"] == {"kind": "inProgress"}
    clock.advance(250)
    recovered_at = clock.now()
    app.finish_in_progress_scheduled_functions()  # recovers the abandoned attempt
    doc = job(app, id)
    assert doc["state"] == {"kind": "pending"}
    assert recovered_at + 1000 <= doc["scheduled_time"] <= recovered_at + 1500
    assert [a["error"] for a in doc["attempts"]] == [TRANSIENT_ACTION_ERROR]
    assert (doc["attempts"][0]["started_time"], doc["attempts"][0]["finished_time"]) == (claimed_at, recovered_at)
    app.finish_all_scheduled_functions()
    doc = job(app, id)
    assert doc["state"] == {"kind": "success"}
    assert [a.get("error") for a in doc["attempts"]] == [TRANSIENT_ACTION_ERROR, None]
    assert calls["n"] == 1


def test_abandoned_last_attempt_fails_with_the_transient_error(make_app, clock: FakeClock):
    app, calls = flaky_app(make_app, RetryPolicy(max_attempts=1), fail_times=0)
    id = schedule(app, "retries:flaky")
    _claim_as_dead_worker(app, id)
    app.finish_all_scheduled_functions()
    doc = job(app, id)
    assert doc["state"] == {"kind": "failed", "error": TRANSIENT_ACTION_ERROR}
    assert len(doc["attempts"]) == 1
    assert calls["n"] == 0


def test_abandoned_action_without_policy_fails_and_never_reruns(make_app, clock: FakeClock):
    app = make_app(schema)
    calls = {"n": 0}

    @app.internal_action
    def once(ctx: Any) -> None:
        calls["n"] += 1

    id = schedule(app, once)
    _claim_as_dead_worker(app, id)
    app.finish_all_scheduled_functions()
    assert job(app, id)["state"] == {"kind": "failed", "error": TRANSIENT_ACTION_ERROR}
    assert calls["n"] == 0


# -- a real worker killed mid-attempt -----------------------------------------------------------


@pytest.fixture
def url(backend: str, tmp_path: Path, request: Any) -> str:
    return db_url(backend, tmp_path, request)


def _job_of(app: App, id: str) -> dict[str, Any]:
    return app.run(lambda ctx: ctx.db.system.get(id))  # type: ignore[no-any-return]


def test_sigkill_mid_attempt_requeues_while_attempts_remain(url: str, tmp_path: Path):
    from tests.apps import crash_app

    procs = Procs(url, tmp_path)
    app = crash_app.make_app(url, with_cron=False)
    try:
        # 3 attempts: the first is killed, the job is re-queued and the second succeeds.
        a = app.run_mutation("crash:schedule_retry", {"key": "a", "max_attempts": 3})
        assert procs.worker("action:1", cron=False).wait(120) == -9, procs.stderr()
        survivor = procs.worker(cron=False)
        try:
            assert wait_until(lambda: _job_of(app, a)["state"]["kind"] == "success", timeout=120), (_job_of(app, a), procs.stderr())
        finally:
            procs.stop(survivor)
        doc = _job_of(app, a)
        assert [x.get("error") for x in doc["attempts"]] == [TRANSIENT_ACTION_ERROR, None]
        starts = [key for event, key, _ in effect_log(procs.log) if event == "start"]
        assert starts == ["a", "a"]  # at least once: the killed attempt and the good one

        # 2 attempts, both killed: the job fails with the transient error, never a third run.
        b = app.run_mutation("crash:schedule_retry", {"key": "b", "max_attempts": 2})
        for _ in range(2):
            assert procs.worker("action:1", cron=False).wait(120) == -9, procs.stderr()
        survivor = procs.worker(cron=False)
        try:
            assert wait_until(lambda: _job_of(app, b)["state"]["kind"] == "failed", timeout=120), (_job_of(app, b), procs.stderr())
        finally:
            procs.stop(survivor)
        doc = _job_of(app, b)
        assert doc["state"]["error"] == TRANSIENT_ACTION_ERROR
        assert [x.get("error") for x in doc["attempts"]] == [TRANSIENT_ACTION_ERROR, TRANSIENT_ACTION_ERROR]
        starts = [key for event, key, _ in effect_log(procs.log) if event == "start"]
        assert starts.count("b") == 2
    finally:
        procs.close()
        app.close()


# -- the worker's batch size -----------------------------------------------------------------


def test_a_conflict_halves_the_mutation_batch_and_quiet_batches_grow_it_back(make_app):
    """A batch retried after a conflict is retried at half its size; the next batches
    double back to the caller's limit. A job that fails is no conflict: no shrinking."""
    import sqlite3

    from ents.worker import Executor

    app = make_app(schema)
    conflicts = {"left": 1}

    @app.internal_mutation(name="batch:job")
    def work(ctx: Any, i: int) -> None:
        if conflicts["left"]:
            conflicts["left"] -= 1
            if app.backend.dialect.name == "sqlite":
                raise sqlite3.OperationalError("database is locked")
            import psycopg

            raise psycopg.errors.SerializationFailure("could not serialize access")
        if i == 30:
            raise ValueError("a failing job")
        ctx.table("events").insert({"what": str(i)})

    app.run(lambda ctx: [ctx.scheduler.run_after(0, work, {"i": i}) for i in range(100)])
    ex = Executor(app, owner="test:batches")
    # No time budget: a batch's size is then set by the limit and conflicts alone, however
    # slow the machine (the budget has its own test below).
    assert ex.run_due_mutations(limit=16, budget_s=math.inf) == 8  # conflict: retried with 8
    assert ex.run_due_mutations(limit=16, budget_s=math.inf) == 8  # the cap stays for this batch...
    assert ex.run_due_mutations(limit=16, budget_s=math.inf) == 16  # ...then doubles back; i=30 fails in it
    assert ex.run_due_mutations(limit=16, budget_s=math.inf) == 16  # a failed job shrank nothing
    states = app.run(lambda ctx: [j.state.kind for j in ctx.table("_scheduled_functions")])
    assert states.count("success") == 47 and states.count("failed") == 1
    assert app.run(lambda ctx: len(ctx.table("events").collect())) == 47


def test_a_batch_is_bounded_by_the_limit_and_the_time_budget(make_app):
    from ents.worker import DEFAULT_BATCH, Executor, Worker

    app = make_app(schema)

    @app.internal_mutation(name="batch:noop")
    def noop(ctx: Any) -> None:
        ctx.table("events").insert({"what": "x"})

    assert Worker(app).batch_size == DEFAULT_BATCH == 500
    app.run(lambda ctx: [ctx.scheduler.run_after(0, noop, {}) for _ in range(10)])
    ex = Executor(app, owner="test:budget")
    assert ex.run_due_mutations(limit=3, budget_s=math.inf) == 3
    assert ex.run_due_mutations(limit=100, budget_s=0.0) == 1  # the budget is spent: one job, always at least one
    assert ex.run_due_mutations(limit=100, budget_s=math.inf) == 6
