"""The scheduler's contract: run_after / run_at / cancel, states, limits, atomicity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ents import (
    EntNotFoundError,
    FunctionNotFoundError,
    SchedulerError,
    ValidationError,
    define_ent,
    define_ent_schema,
)
from ents.scheduler import RETENTION_MS

schema = define_ent_schema(
    {
        "events": define_ent({"what": str}),
    }
)

DAY = 24 * 3600 * 1000


@pytest.fixture
def app(make_app):
    app = make_app(schema)
    f = {}

    def reg(fn):
        f[fn.__name__] = fn
        return fn

    @reg
    @app.internal_mutation
    def log(ctx, what: str) -> None:
        ctx.table("events").insert({"what": what})

    @reg
    @app.internal_mutation
    def fail(ctx, what: str) -> None:
        ctx.table("events").insert({"what": what})
        raise ValueError(f"failed on {what}")

    @reg
    @app.internal_mutation
    def anything(ctx, value) -> None:
        ctx.table("events").insert({"what": repr(value)})

    @reg
    @app.internal_mutation
    def whoami(ctx) -> None:
        ctx.table("events").insert({"what": f"identity={ctx.auth.get_user_identity()!r}"})

    @reg
    @app.mutation
    def schedule_log(ctx, what: str, delay: float = 0) -> str:
        return ctx.scheduler.run_after(delay, log, {"what": what})

    @reg
    @app.mutation
    def schedule_then_fail(ctx) -> None:
        ctx.scheduler.run_after(0, log, {"what": "never"})
        raise RuntimeError("mutation failed")

    @reg
    @app.internal_action
    def action_schedules_then_fails(ctx) -> None:
        ctx.scheduler.run_after(0, log, {"what": "survives"})
        raise RuntimeError("action failed")

    @reg
    @app.internal_action
    def long_action(ctx, me: str) -> None:
        # Cancels itself mid-flight, then schedules: what it schedules must be canceled.
        ctx.run_mutation(log, {"what": "action started"})
        ctx.scheduler.cancel(me) if me else None
        ctx.scheduler.run_after(0, log, {"what": "scheduled after cancel"})
        ctx.run_mutation(schedule_log, {"what": "scheduled by a mutation after cancel"})

    @reg
    @app.internal_mutation
    def forever(ctx) -> None:
        ctx.scheduler.run_after(1000, forever, {})

    @reg
    @app.query
    def read_job(ctx, id: str):
        return ctx.db.system.get(id)

    app.f = f
    return app


def events(app):
    return [e.what for e in app.run(lambda ctx: ctx.table("events").collect())]


def job(app, id):
    return app.run(lambda ctx: ctx.db.system.get(id))


def test_run_after_creates_a_pending_job_that_runs_once(app, clock):
    id = app.run_mutation(app.f["schedule_log"], {"what": "hi", "delay": 5000})
    j = job(app, id)
    assert j["state"] == {"kind": "pending"}
    assert j["name"] == app.f["log"].name
    assert j["args"] == {"what": "hi"}
    assert j["scheduled_time"] == clock.now() + 5000
    assert "completed_time" not in j
    assert app.finish_in_progress_scheduled_functions() == 0
    assert events(app) == []
    clock.advance(5000)
    assert app.finish_in_progress_scheduled_functions() == 1
    assert events(app) == ["hi"]
    j = job(app, id)
    assert j["state"] == {"kind": "success"}
    assert j["completed_time"] == clock.now()
    assert app.finish_in_progress_scheduled_functions() == 0
    assert events(app) == ["hi"]


def test_job_document_is_readable_every_documented_way(app):
    id = app.run_mutation(app.f["schedule_log"], {"what": "x"})

    def reads(ctx):
        return [
            ctx.db.system.get(id),
            ctx.table("_scheduled_functions").get_x(id).doc(),
            ctx.table.system("_scheduled_functions").get_x(id).doc(),
            ctx.db.system.query("_scheduled_functions").filter(lambda q: q.eq(q.field("state.kind"), "pending")).collect()[0],
            ctx.table("_scheduled_functions", "by_state", lambda q: q.eq("state", "pending")).first_x().doc(),
        ]

    docs = app.run(reads)
    assert all(d == docs[0] for d in docs)
    ent = app.run(lambda ctx: ctx.table("_scheduled_functions").get_x(id))
    assert ent.state.kind == "pending" and ent["state"]["kind"] == "pending"


def test_timedelta_datetime_and_past_times(app, clock):
    def sched(ctx):
        a = ctx.scheduler.run_after(timedelta(seconds=2), app.f["log"], {"what": "td"})
        b = ctx.scheduler.run_at(datetime.fromtimestamp((clock.now() + 3000) / 1000, tz=UTC), app.f["log"], {"what": "dt"})
        c = ctx.scheduler.run_at(clock.now() - 60_000, app.f["log"], {"what": "past"})
        return a, b, c

    a, b, c = app.run(sched)
    assert job(app, a)["scheduled_time"] == clock.now() + 2000
    assert job(app, b)["scheduled_time"] == clock.now() + 3000
    app.finish_in_progress_scheduled_functions()
    assert events(app) == ["past"]
    clock.advance(3000)
    app.finish_in_progress_scheduled_functions()
    assert sorted(events(app)) == ["dt", "past", "td"]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s, f, now: s.run_after(-1, f, {"what": "x"}), "non-negative"),
        (lambda s, f, now: s.run_after(float("nan"), f, {"what": "x"}), "finite"),
        (lambda s, f, now: s.run_after("5", f, {"what": "x"}), "milliseconds"),
        (lambda s, f, now: s.run_at(now + 6 * 365 * 24 * 3600 * 1000, f, {"what": "x"}), "five years in the future"),
        (lambda s, f, now: s.run_at(now - 6 * 365 * 24 * 3600 * 1000, f, {"what": "x"}), "five years in the past"),
        (lambda s, f, now: s.run_at(datetime(2030, 1, 1), f, {"what": "x"}), "aware datetime"),
    ],
)
def test_bad_times_are_refused_and_change_nothing(app, clock, call, message):
    with pytest.raises(SchedulerError, match=message):
        app.run(lambda ctx: (ctx.table("events").insert({"what": "side effect"}), call(ctx.scheduler, app.f["log"], clock.now())))
    assert events(app) == []
    assert app.run(lambda ctx: ctx.table("_scheduled_functions").first()) is None


def test_unknown_functions_queries_and_bad_args_cannot_be_scheduled(app):
    with pytest.raises(FunctionNotFoundError, match="nope"):
        app.run(lambda ctx: ctx.scheduler.run_after(0, "tests:nope", {}))
    with pytest.raises(SchedulerError, match="it is a query"):
        app.run(lambda ctx: ctx.scheduler.run_after(0, app.f["read_job"], {"id": "x"}))
    with pytest.raises(ValidationError, match="argument `what`"):
        app.run(lambda ctx: ctx.scheduler.run_after(0, app.f["log"], {"what": 5}))
    with pytest.raises(ValidationError, match="cannot be stored"):
        app.run(lambda ctx: ctx.scheduler.run_after(0, app.f["anything"], {"value": object()}))
    with pytest.raises(ValidationError, match="finite"):
        app.run(lambda ctx: ctx.scheduler.run_after(0, app.f["anything"], {"value": [1.0, float("inf")]}))
    assert app.run(lambda ctx: ctx.table("_scheduled_functions").first()) is None


def test_at_most_1000_functions_per_call(app):
    def too_many(ctx):
        for i in range(1001):
            ctx.scheduler.run_after(0, app.f["log"], {"what": str(i)})

    with pytest.raises(SchedulerError, match="limit is 1000"):
        app.run(too_many)
    assert app.run(lambda ctx: ctx.table("_scheduled_functions").first()) is None
    app.run(lambda ctx: [ctx.scheduler.run_after(0, app.f["log"], {"what": str(i)}) for i in range(1000)])
    assert len(app.run(lambda ctx: ctx.table("_scheduled_functions").collect())) == 1000


def test_at_most_8mb_of_arguments_per_call(app):
    big = "x" * (3 * 1024 * 1024)

    def heavy(ctx):
        for _ in range(3):
            ctx.scheduler.run_after(0, app.f["log"], {"what": big})

    with pytest.raises(SchedulerError, match="exceed 8 MB"):
        app.run(heavy)
    assert app.run(lambda ctx: ctx.table("_scheduled_functions").first()) is None


def test_scheduling_from_a_failed_mutation_schedules_nothing(app):
    with pytest.raises(RuntimeError):
        app.run_mutation(app.f["schedule_then_fail"])
    assert app.run(lambda ctx: ctx.table("_scheduled_functions").first()) is None


def test_scheduling_from_an_action_survives_its_failure(app):
    with pytest.raises(RuntimeError, match="action failed"):
        app.run_action(app.f["action_schedules_then_fails"])
    app.finish_in_progress_scheduled_functions()
    assert events(app) == ["survives"]


def test_failed_scheduled_mutation_rolls_back_and_records_the_error(app):
    id = app.run(lambda ctx: ctx.scheduler.run_after(0, app.f["fail"], {"what": "w"}))
    app.finish_in_progress_scheduled_functions()
    j = job(app, id)
    assert j["state"]["kind"] == "failed"
    assert "failed on w" in j["state"]["error"]
    assert events(app) == []


def test_failed_job_does_not_stop_the_others_in_its_batch(app):
    def sched(ctx):
        ctx.scheduler.run_after(0, app.f["log"], {"what": "a"})
        ctx.scheduler.run_after(0, app.f["fail"], {"what": "b"})
        ctx.scheduler.run_after(0, app.f["log"], {"what": "c"})

    app.run(sched)
    app.finish_in_progress_scheduled_functions()
    assert sorted(events(app)) == ["a", "c"]
    states = sorted(j.state.kind for j in app.run(lambda ctx: ctx.table("_scheduled_functions").collect()))
    assert states == ["failed", "success", "success"]


def test_cancel_pending_job_never_runs(app, clock):
    id = app.run_mutation(app.f["schedule_log"], {"what": "x", "delay": 1000})
    app.run(lambda ctx: ctx.scheduler.cancel(id))
    j = job(app, id)
    assert j["state"] == {"kind": "canceled"} and j["completed_time"] == clock.now()
    clock.advance(2000)
    app.finish_in_progress_scheduled_functions()
    assert events(app) == []
    app.run(lambda ctx: ctx.scheduler.cancel(id))  # canceling again is harmless
    assert job(app, id)["state"] == {"kind": "canceled"}


def test_cancel_of_finished_job_raises(app):
    id = app.run_mutation(app.f["schedule_log"], {"what": "x"})
    app.finish_in_progress_scheduled_functions()
    with pytest.raises(SchedulerError, match='already completed \\(state "success"\\)'):
        app.run(lambda ctx: ctx.scheduler.cancel(id))


def test_cancel_of_bad_or_unknown_ids(app):
    with pytest.raises(SchedulerError, match="Invalid id"):
        app.run(lambda ctx: ctx.scheduler.cancel("nonsense"))
    other = app.run(lambda ctx: ctx.table("events").insert({"what": "e"}))
    with pytest.raises(SchedulerError, match="events"):
        app.run(lambda ctx: ctx.scheduler.cancel(other))
    id = app.run_mutation(app.f["schedule_log"], {"what": "x"})
    app.finish_in_progress_scheduled_functions()
    app.run(lambda ctx: ctx.table("events").first_x())  # keep the db busy
    from ents.worker import Executor

    clock_app = app
    clock_app.clock.advance(RETENTION_MS + 1)
    Executor(app, "test").purge()
    with pytest.raises(EntNotFoundError, match="no such scheduled function"):
        app.run(lambda ctx: ctx.scheduler.cancel(id))


def test_cancel_running_action_lets_it_finish_and_cancels_what_it_schedules(app):
    # The action cancels its own job mid-run (as another client would).
    def sched(ctx):
        return ctx.scheduler.run_after(0, app.f["long_action"], {"me": ""})

    id = app.run(sched)
    app.run(lambda ctx: None)
    # Re-schedule with the real id known: patch args through a fresh job.
    app.run(lambda ctx: ctx.scheduler.cancel(id))
    id = app.run(lambda ctx: ctx.scheduler.run_after(0, app.f["long_action"], {"me": "PLACEHOLDER"}))
    # Replace the placeholder with the job's own id so the action cancels itself.
    app._transact(
        lambda tx: tx.execute(
            'UPDATE "_scheduled_functions" SET "args" = ' + tx.dialect.json_param + ' WHERE "_rid" = ' + tx.dialect.param,
            (f'{{"me": "{id}"}}', app.codec.decode(id)[1]),
        ),
        write=True,
    )
    app.finish_in_progress_scheduled_functions()
    assert events(app) == ["action started"]
    assert job(app, id)["state"] == {"kind": "canceled"}
    kinds = sorted(
        (j.args.get("what"), j.state.kind)
        for j in app.run(lambda ctx: ctx.table("_scheduled_functions").collect())
        if j.name == app.f["log"].name
    )
    assert kinds == [("scheduled after cancel", "canceled"), ("scheduled by a mutation after cancel", "canceled")]


def test_scheduled_functions_run_without_identity(app):
    app.run(lambda ctx: ctx.scheduler.run_after(0, app.f["whoami"], {}), identity={"subject": "u"})
    app.finish_in_progress_scheduled_functions()
    assert events(app) == ["identity=None"]


def test_finished_jobs_are_purged_after_seven_days(app, clock):
    id = app.run_mutation(app.f["schedule_log"], {"what": "x"})
    pending = app.run_mutation(app.f["schedule_log"], {"what": "later", "delay": 30 * DAY})
    app.finish_in_progress_scheduled_functions()
    clock.advance(RETENTION_MS - 1)
    app.finish_in_progress_scheduled_functions()
    assert job(app, id) is not None
    clock.advance(2)
    app.finish_in_progress_scheduled_functions()
    assert job(app, id) is None
    assert job(app, pending)["state"]["kind"] == "pending"


def test_finish_all_advances_time_and_guards_against_endless_rescheduling(app, clock):
    start = clock.now()
    app.run_mutation(app.f["schedule_log"], {"what": "a", "delay": 10_000})
    app.run_mutation(app.f["schedule_log"], {"what": "b", "delay": 20_000})
    assert app.finish_all_scheduled_functions() == 2
    assert events(app) == ["a", "b"]
    assert clock.now() == start + 20_000
    app.run(lambda ctx: ctx.scheduler.run_after(0, app.f["forever"], {}))
    with pytest.raises(SchedulerError, match="keeps rescheduling itself"):
        app.finish_all_scheduled_functions(max_iterations=20)


def test_finish_all_needs_a_fake_clock(tmp_path):
    from ents import App

    app = App(schema, "sqlite://")
    with pytest.raises(SchedulerError, match="FakeClock"):
        app.finish_all_scheduled_functions()
    app.close()


def test_job_scheduled_in_a_mutation_sees_its_writes(app):
    @app.internal_mutation
    def check(ctx, eid: str) -> None:
        ctx.table("events").insert({"what": "saw " + ctx.table("events").get_x(eid).what})

    def sched(ctx):
        eid = ctx.table("events").insert({"what": "written"})
        ctx.scheduler.run_after(0, check, {"eid": eid})

    app.run(sched)
    app.finish_in_progress_scheduled_functions()
    assert events(app) == ["written", "saw written"]
