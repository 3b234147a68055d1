"""convex-test's scheduler tests (``convex/scheduler.test.ts``), ported, with the one other
scheduling test of its suite ("scheduled function does not receive auth",
``convex/authentication.test.ts``).

The functions of ``convex/scheduler.ts`` (and ``assertNoAuth`` / ``scheduledNoAuth`` of
``convex/authentication.ts``) are registered on each test's App under the original names.

Fake timers: the App has a FakeClock, under which nothing runs by itself. What a fired timer
does in convex-test (start the due jobs) is ``app.finish_in_progress_scheduled_functions()``
here, so ``vi.advanceTimersByTime(ms)`` is ``clock.advance(ms)``, and ``vi.runAllTimers()`` is
:func:`run_all_timers` (time jumps to the last pending job's due time). A job's ``args`` is the
argument dict itself (Convex shows a one-element array of it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from ents import App, SchedulerError, define_ent, define_ent_schema
from ents.testing import FakeClock

#: how long an action polls for the effect of the mutation it scheduled before giving up
#: (the original polls 100 times 10 ms apart; a busy machine needs far longer)
POLL_TIMEOUT_S = 60.0


def schema() -> Any:
    """``convex/schema.ts`` without its search and vector indexes (ents has neither)."""
    return define_ent_schema(
        {
            "messages": define_ent(
                {"author": str, "body": str, "embedding": list[float] | None, "score": float | None}
            )
            .index("author", ["author"])
            .index("author_body", ["author", "body"])
            .index("author_score", ["author", "score"]),
        }
    )


def register(app: App) -> None:
    """``convex/scheduler.ts`` and the scheduling functions of ``convex/authentication.ts``."""

    @app.internal_query(name="scheduler:list")
    def list_(ctx: Any) -> list[dict[str, Any]]:
        return ctx.db.query("messages").collect()  # type: ignore[no-any-return]

    @app.mutation(name="scheduler:add")
    def add(ctx: Any, body: str, author: str, bigint: int | None = None) -> None:
        # bigint is only there to test serialization of scheduled function arguments
        if body == "FAIL THIS":
            raise Exception("failed as intended")
        ctx.db.insert("messages", {"body": body, "author": author})

    @app.action(name="scheduler:action_calling_mutation")
    def action_calling_mutation(ctx: Any, body: str, bigint: int | None = None) -> None:
        args: dict[str, Any] = {"body": body, "author": "AI"}
        if bigint is not None:  # JS drops an `undefined` argument
            args["bigint"] = bigint
        ctx.run_mutation("scheduler:add", args)

    @app.internal_query(name="scheduler:jobs")
    def jobs(ctx: Any) -> list[dict[str, Any]]:
        return ctx.db.system.query("_scheduled_functions").collect()  # type: ignore[no-any-return]

    @app.mutation(name="scheduler:mutation_scheduling_action")
    def mutation_scheduling_action(ctx: Any, body: str, delay_ms: float, bigint: int | None = None) -> str:
        args: dict[str, Any] = {"body": body}
        if bigint is not None:  # JS drops an `undefined` argument
            args["bigint"] = bigint
        job_id: str = ctx.scheduler.run_after(delay_ms, "scheduler:action_calling_mutation", args)
        return job_id

    @app.mutation(name="scheduler:cancel")
    def cancel(ctx: Any, id: str) -> None:
        ctx.scheduler.cancel(id)

    @app.action(name="scheduler:action_scheduling_action")
    def action_scheduling_action(ctx: Any, body: str, delay_ms: float) -> str:
        job_id: str = ctx.scheduler.run_after(delay_ms, "scheduler:action_calling_mutation", {"body": body})
        return job_id

    @app.action(name="scheduler:cancel_action")
    def cancel_action(ctx: Any, id: str) -> None:
        ctx.scheduler.cancel(id)

    @app.action(name="scheduler:action_scheduling_action_n_times")
    def action_scheduling_action_n_times(ctx: Any, count: int) -> None:
        ctx.run_mutation("scheduler:add", {"body": f"count {count}", "author": "AI"})
        if count > 0:
            ctx.scheduler.run_after(0, "scheduler:action_scheduling_action_n_times", {"count": count - 1})

    @app.action(name="scheduler:action_with_internal_set_timeout")
    async def action_with_internal_set_timeout(ctx: Any, body: str) -> None:
        # The original awaits a 100 ms setTimeout (work that takes time) before writing.
        await asyncio.sleep(0.1)
        await ctx.run_mutation("scheduler:add", {"body": body, "author": "AI"})

    @app.mutation(name="scheduler:mutation_scheduling_action_with_timeout")
    def mutation_scheduling_action_with_timeout(ctx: Any, body: str) -> None:
        ctx.scheduler.run_after(0, "scheduler:action_with_internal_set_timeout", {"body": body})

    @app.mutation(name="scheduler:self_scheduling_mutation")
    def self_scheduling_mutation(ctx: Any) -> None:
        ctx.scheduler.run_after(1000, "scheduler:self_scheduling_mutation", {})

    @app.mutation(name="scheduler:schedule_now_and_later")
    def schedule_now_and_later(ctx: Any) -> None:
        ctx.scheduler.run_after(0, "scheduler:add", {"body": "immediate", "author": "AI"})
        ctx.scheduler.run_after(60000, "scheduler:add", {"body": "delayed", "author": "AI"})

    @app.mutation(name="scheduler:child_schedules_add")
    def child_schedules_add(ctx: Any, body: str) -> None:
        ctx.scheduler.run_after(0, "scheduler:add", {"body": body, "author": "AI"})

    @app.mutation(name="scheduler:parent_runs_mutation_that_schedules")
    def parent_runs_mutation_that_schedules(ctx: Any, body: str) -> None:
        ctx.run_mutation("scheduler:child_schedules_add", {"body": body})

    @app.action(name="scheduler:action_schedules_mutation_and_polls")
    def action_schedules_mutation_and_polls(ctx: Any, body: str) -> None:
        ctx.scheduler.run_after(0, "scheduler:add", {"body": body, "author": "AI"})
        deadline = time.monotonic() + POLL_TIMEOUT_S
        while time.monotonic() < deadline:
            messages = ctx.run_query("scheduler:list_public", {})
            if any(m["body"] == body for m in messages):
                return
            time.sleep(0.01)
        raise Exception("polled too long without seeing scheduled mutation")

    @app.query(name="scheduler:list_public")
    def list_public(ctx: Any) -> list[dict[str, Any]]:
        return ctx.db.query("messages").collect()  # type: ignore[no-any-return]

    @app.mutation(name="authentication:assert_no_auth")
    def assert_no_auth(ctx: Any) -> None:
        if ctx.auth.get_user_identity():
            raise Exception("Expected no auth")

    @app.mutation(name="authentication:scheduled_no_auth")
    def scheduled_no_auth(ctx: Any) -> str:
        job_id: str = ctx.scheduler.run_after(0, "authentication:assert_no_auth")
        return job_id


def convex_test(make_app: Callable[..., App], **kwargs: Any) -> App:
    """``convexTest(schema)``: an App with the schema and functions above."""
    app = make_app(schema(), **kwargs)
    register(app)
    return app


@pytest.fixture
def t(make_app: Callable[..., App]) -> App:
    return convex_test(make_app)


def run_all_timers(app: App, clock: FakeClock) -> None:
    """``vi.runAllTimers()``: time jumps to the due time of the last pending job."""
    due = [j["scheduled_time"] for j in app.run_query("scheduler:jobs") if j["state"]["kind"] == "pending"]
    if due and max(due) > clock.now():
        clock.set_time(max(due))


def jobs(app: App) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = app.run_query("scheduler:jobs")
    return result


def messages(app: App) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = app.run_query("scheduler:list")
    return result


def matches(actual: Any, expected: Any) -> bool:
    """vitest's ``toMatchObject``: dicts match on the expected keys, lists item by item."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and matches(actual[k], v) for k, v in expected.items())
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(matches(a, e) for a, e in zip(actual, expected, strict=True))
        )
    return bool(actual == expected)


# -- describe("with fake timers") -------------------------------------------------------


def test_mutation_scheduling_action(t: App, clock: FakeClock) -> None:
    # "mutation scheduling action" (scheduler.test.ts)
    t.run_mutation("scheduler:mutation_scheduling_action", {"delay_ms": 10000, "body": "through scheduler"})
    assert matches(jobs(t), [{"state": {"kind": "pending"}, "args": {"body": "through scheduler"}}])

    clock.advance(5000)
    t.finish_in_progress_scheduled_functions()

    assert matches(jobs(t), [{"state": {"kind": "pending"}}])

    run_all_timers(t, clock)

    t.finish_in_progress_scheduled_functions()

    assert matches(messages(t), [{"body": "through scheduler", "author": "AI"}])
    assert matches(jobs(t), [{"state": {"kind": "success"}}])


def test_mutation_scheduling_action_then_mutation_fails(t: App, clock: FakeClock) -> None:
    # "mutation scheduling action then mutation fails" (scheduler.test.ts)
    t.run_mutation("scheduler:mutation_scheduling_action", {"delay_ms": 10000, "body": "through scheduler"})
    run_all_timers(t, clock)
    t.finish_in_progress_scheduled_functions()
    assert matches(jobs(t), [{"state": {"kind": "success"}}])
    # An unrelated mutation throws an error. This does not affect the scheduled functions
    # which have already run and committed.
    with pytest.raises(Exception, match="failed as intended"):
        t.run_mutation("scheduler:add", {"body": "FAIL THIS", "author": "AI"})
    assert matches(jobs(t), [{"state": {"kind": "success"}}])


def test_cancel_mutation(t: App, clock: FakeClock) -> None:
    # "cancel mutation" (scheduler.test.ts)
    id = t.run_mutation("scheduler:mutation_scheduling_action", {"body": "through scheduler", "delay_ms": 10000})
    t.run_mutation("scheduler:cancel", {"id": id})
    assert matches(jobs(t), [{"state": {"kind": "canceled"}}])

    clock.advance(10000)  # vi.runAllTimers(): the canceled job's timer
    t.finish_in_progress_scheduled_functions()

    assert messages(t) == []


def test_action_scheduling_action(t: App, clock: FakeClock) -> None:
    # "action scheduling action" (scheduler.test.ts)
    t.run_action("scheduler:action_scheduling_action", {"delay_ms": 0, "body": "through scheduler"})
    assert matches(jobs(t), [{"state": {"kind": "pending"}, "args": {"body": "through scheduler"}}])

    run_all_timers(t, clock)

    t.finish_in_progress_scheduled_functions()

    assert matches(messages(t), [{"body": "through scheduler", "author": "AI"}])
    assert matches(jobs(t), [{"state": {"kind": "success"}}])


def test_action_scheduling_action_many_times(t: App) -> None:
    # "action scheduling action many times" (scheduler.test.ts); also ensures that
    # recursively-scheduled functions are run by finish_all_scheduled_functions.
    t.run_action("scheduler:action_scheduling_action_n_times", {"count": 10})

    t.finish_all_scheduled_functions()

    result = messages(t)[-1]
    assert matches(result, {"body": "count 0", "author": "AI"})


def test_cancel_action(t: App, clock: FakeClock) -> None:
    # "cancel action" (scheduler.test.ts)
    id = t.run_action("scheduler:action_scheduling_action", {"body": "through scheduler", "delay_ms": 10000})
    t.run_action("scheduler:cancel_action", {"id": id})
    assert matches(jobs(t), [{"state": {"kind": "canceled"}}])

    clock.advance(10000)  # vi.runAllTimers(): the canceled job's timer
    t.finish_in_progress_scheduled_functions()

    assert messages(t) == []


def test_failed_scheduled_function(t: App, clock: FakeClock) -> None:
    # "failed scheduled function" (scheduler.test.ts)
    t.run_mutation("scheduler:mutation_scheduling_action", {"delay_ms": 0, "body": "FAIL THIS"})
    run_all_timers(t, clock)
    t.finish_in_progress_scheduled_functions()
    assert matches(jobs(t), [{"state": {"kind": "failed"}, "args": {"body": "FAIL THIS"}}])


def test_self_scheduling_mutation(t: App) -> None:
    # "self-scheduling mutation" (scheduler.test.ts). convex-test's message ("Check for
    # infinitely recursive scheduled functions") is its own helper's; ents' helper raises a
    # SchedulerError that says a function keeps rescheduling itself.
    t.run_mutation("scheduler:self_scheduling_mutation", {})

    with pytest.raises(SchedulerError, match="rescheduling itself"):
        t.finish_all_scheduled_functions()


def test_scheduled_action_that_uses_set_timeout_internally(t: App) -> None:
    # "scheduled action that uses setTimeout internally" (scheduler.test.ts): the scheduled
    # action waits 100 ms before it writes; the helper waits for it.
    t.run_mutation("scheduler:mutation_scheduling_action_with_timeout", {"body": "delayed action"})
    t.finish_all_scheduled_functions()
    assert matches(messages(t), [{"body": "delayed action", "author": "AI"}])


def test_new_convex_test_after_orphaned_scheduled_functions(
    make_app: Callable[..., App], backend: str, tmp_path: Any, request: Any, clock: FakeClock
) -> None:
    # "new convexTest after orphaned scheduled functions" (scheduler.test.ts). A first App
    # has a job whose time has come that nothing runs; a second App, on a fresh database,
    # works normally.
    t1 = convex_test(make_app)
    t1.run_mutation("scheduler:mutation_scheduling_action", {"body": "orphaned", "delay_ms": 0})
    run_all_timers(t1, clock)
    # Don't run the due job: leave it orphaned.

    t2 = convex_test(make_app, url=fresh_url(backend, tmp_path, request), clock=None)
    t2.run_mutation("scheduler:add", {"body": "fresh", "author": "test"})
    assert matches(messages(t2), [{"body": "fresh", "author": "test"}])
    assert jobs(t2) == []
    assert matches(jobs(t1), [{"state": {"kind": "pending"}}])


def fresh_url(backend: str, tmp_path: Any, request: Any) -> str:
    """A database URL of the current backend, other than the one ``make_app`` uses."""
    if backend == "memory":
        return "sqlite://"
    if backend == "file":
        return f"sqlite:///{tmp_path / 'second.db'}"
    from tests.pg import fresh_schema_url

    return fresh_schema_url(request)


def test_advancing_time_fires_only_jobs_whose_scheduled_time_has_arrived(t: App, clock: FakeClock) -> None:
    # "advancing time fires only jobs whose scheduledTime has arrived" (scheduler.test.ts)
    t.run_mutation("scheduler:schedule_now_and_later", {})

    # Fire the immediate (delay=0) but not the delayed (delay=60s).
    clock.advance(0)
    t.finish_in_progress_scheduled_functions()

    assert matches(messages(t), [{"body": "immediate"}])
    all_jobs = jobs(t)
    assert len([j for j in all_jobs if j["state"]["kind"] == "pending"]) == 1
    assert len([j for j in all_jobs if j["state"]["kind"] == "success"]) == 1

    # Drain the delayed one too.
    t.finish_all_scheduled_functions()
    assert matches(messages(t), [{"body": "immediate"}, {"body": "delayed"}])


def test_scheduled_functions_dont_fire_until_time_advances(t: App, clock: FakeClock) -> None:
    # "scheduled functions don't fire until time advances" (scheduler.test.ts): with a fake
    # clock nothing runs by itself, even a job due at once.
    t.run_mutation("scheduler:mutation_scheduling_action", {"body": "scheduled", "delay_ms": 0})

    assert matches(jobs(t), [{"state": {"kind": "pending"}}])

    run_all_timers(t, clock)
    t.finish_in_progress_scheduled_functions()

    assert matches(jobs(t), [{"state": {"kind": "success"}}])


def test_scheduled_mutations_serialize_after_the_parent_commits(t: App, clock: FakeClock) -> None:
    # "scheduled mutations serialize after the parent commits" (scheduler.test.ts)
    def parent(ctx: Any) -> None:
        ctx.scheduler.run_after(0, "scheduler:add", {"body": "A-scheduled", "author": "AI"})
        ctx.db.insert("messages", {"body": "B-parent-after", "author": "ME"})

    t.run(parent)
    run_all_timers(t, clock)
    t.finish_in_progress_scheduled_functions()

    assert [m["body"] for m in messages(t)] == ["B-parent-after", "A-scheduled"]


def test_rollback_cancels_scheduled_function(t: App, clock: FakeClock) -> None:
    # "rollback cancels scheduled function" (scheduler.test.ts)
    def parent(ctx: Any) -> None:
        ctx.scheduler.run_after(0, "scheduler:add", {"body": "should-not-run", "author": "AI"})
        raise Exception("rollback")

    with pytest.raises(Exception, match="rollback"):
        t.run(parent)

    run_all_timers(t, clock)
    t.finish_in_progress_scheduled_functions()

    assert messages(t) == []
    assert jobs(t) == []


def test_scheduling_from_a_nested_mutation_still_runs_as_top_level(t: App, clock: FakeClock) -> None:
    # "scheduling from a nested mutation still runs as top-level" (scheduler.test.ts): a job
    # scheduled inside a `ctx.run_mutation` of a mutation runs once the outer one committed.
    t.run_mutation("scheduler:parent_runs_mutation_that_schedules", {"body": "from-nested"})
    run_all_timers(t, clock)
    t.finish_in_progress_scheduled_functions()
    assert [m["body"] for m in messages(t)] == ["from-nested"]


def test_argument_serialization(t: App, clock: FakeClock) -> None:
    # "argument serialization" (scheduler.test.ts); a JS BigInt (v.int64) is a Python int
    t.run_mutation(
        "scheduler:mutation_scheduling_action", {"delay_ms": 10000, "body": "through scheduler", "bigint": 1}
    )
    assert matches(jobs(t), [{"state": {"kind": "pending"}, "args": {"body": "through scheduler", "bigint": 1}}])
    assert type(jobs(t)[0]["args"]["bigint"]) is int

    clock.advance(5000)
    t.finish_in_progress_scheduled_functions()

    assert matches(jobs(t), [{"state": {"kind": "pending"}}])

    run_all_timers(t, clock)

    t.finish_in_progress_scheduled_functions()

    assert matches(messages(t), [{"body": "through scheduler", "author": "AI"}])
    assert matches(jobs(t), [{"state": {"kind": "success"}}])


# -- describe("with real timers") -------------------------------------------------------


def test_action_can_schedule_a_mutation_and_poll_for_its_effect_without_finish(
    make_app: Callable[..., App],
) -> None:
    # "action can schedule a mutation and poll for its effect without finish*"
    # (scheduler.test.ts). With a real clock a worker runs the scheduled mutation while the
    # action is still polling for it.
    t = convex_test(make_app, clock=None)
    worker = t.worker()
    worker.start()
    try:
        t.run_action("scheduler:action_schedules_mutation_and_polls", {"body": "polled"})
    finally:
        worker.stop()
    assert [m["body"] for m in messages(t)] == ["polled"]


def test_finish_in_progress_scheduled_functions_awaits_work_after_the_timer_fires(
    make_app: Callable[..., App],
) -> None:
    # "finishInProgressScheduledFunctions awaits work after the setTimeout fires"
    # (scheduler.test.ts). With a real clock, a job scheduled with no delay is due by the
    # time the helper runs (the original sleeps 10 ms to let its setTimeout(0) fire).
    t = convex_test(make_app, clock=None)
    t.run_mutation("scheduler:mutation_scheduling_action", {"body": "real-timer", "delay_ms": 0})
    t.finish_in_progress_scheduled_functions()
    assert matches(messages(t), [{"body": "real-timer", "author": "AI"}])


# -- authentication.test.ts --------------------------------------------------------------


def test_scheduled_function_does_not_receive_auth(t: App) -> None:
    # "scheduled function does not receive auth" (authentication.test.ts)
    as_sarah = t.client(identity={"name": "Sarah"})
    # Sarah schedules a mutation that fails if it has an identity
    scheduled = as_sarah.mutation("authentication:scheduled_no_auth", {})
    t.finish_all_scheduled_functions()

    result = t.run(lambda ctx: ctx.db.system.get(scheduled))
    assert result is not None
    assert result["state"]["kind"] == "success"
