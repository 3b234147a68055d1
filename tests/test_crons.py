"""Cron jobs: definitions and their errors, schedules (UTC and time zones through DST),
execution rules (at most one run at a time, no bursts), reconciliation, ctx.crons, and
several worker processes on one database.

Time moves only on a FakeClock: ``drive`` acts as an ideal worker, jumping from one due
time to the next, so a week of schedule runs in milliseconds.
"""

from __future__ import annotations

import multiprocessing
import os
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ents import (
    App,
    FunctionNotFoundError,
    SchedulerError,
    ValidationError,
    cron_jobs,
    define_ent,
    define_ent_schema,
)
from ents.crons import compile_schedule, fire_due, next_cron_due
from ents.testing import FakeClock

schema = define_ent_schema({"events": define_ent({"what": str, "at": float})})

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def ms(*args: int, tz: Any = UTC) -> float:
    return datetime(*args, tzinfo=tz).timestamp() * 1000


def utc(t: float) -> datetime:
    return datetime.fromtimestamp(t / 1000, UTC)


def local(t: float, tz: Any) -> str:
    return datetime.fromtimestamp(t / 1000, tz).strftime("%Y-%m-%d %H:%M %Z")


class Fns:
    """The functions crons run in these tests, registered on one App."""

    def __init__(self, app: App, clock: FakeClock) -> None:
        self.overruns = [25]

        @app.internal_mutation
        def log(ctx, what: str) -> None:
            ctx.table("events").insert({"what": what, "at": ctx.now})

        @app.internal_mutation
        def fail(ctx, what: str) -> None:
            raise RuntimeError(f"boom {what}")

        @app.internal_action
        def act(ctx, what: str) -> None:
            ctx.run_mutation(log, {"what": what})

        @app.internal_action
        def overrun(ctx, what: str) -> None:
            # Its first run lasts 25 s of fake time, during which another worker pass looks
            # for due work; later runs are instant.
            ctx.run_mutation(log, {"what": f"{what} start"})
            if self.overruns:
                clock.advance(self.overruns.pop() * SECOND)
                app.finish_in_progress_scheduled_functions()
            ctx.run_mutation(log, {"what": f"{what} end"})

        @app.query
        def read(ctx) -> int:
            return 0

        self.log, self.fail, self.act, self.overrun, self.read = log, fail, act, overrun, read


@pytest.fixture
def crons():
    return cron_jobs()


@pytest.fixture
def app(make_app, crons, clock):
    app = make_app(schema, crons=crons)
    app.fns = Fns(app, clock)
    return app


def events(app: App, what: str | None = None) -> list[float]:
    rows = app.run(lambda ctx: ctx.table("events").collect())
    return [e.at for e in rows if what is None or e.what == what]


def cron_doc(app: App, name: str) -> Any:
    return app.run(lambda ctx: ctx.db.system.query("_cron_jobs").filter(lambda q: q.eq(q.field("name"), name)).unique())


def cron_names(app: App) -> list[str]:
    return sorted(c["name"] for c in app.run(lambda ctx: ctx.db.system.query("_cron_jobs").collect()))


def next_pending(app: App) -> float | None:
    job = app.run(lambda ctx: ctx.table("_scheduled_functions", "by_state", lambda q: q.eq("state", "pending")).first())
    return job.scheduled_time if job is not None else None


def drive(app: App, clock: FakeClock, until: float) -> None:
    """Be an ideal worker until ``until``: run what is due, then jump to the next due time."""
    app.finish_in_progress_scheduled_functions()
    while True:
        due = [t for t in (next_cron_due(app), next_pending(app)) if t is not None]
        if not due or min(due) > until:
            break
        if min(due) > clock.now():
            clock.set_time(min(due))
        app.finish_in_progress_scheduled_functions()
    if until > clock.now():
        clock.set_time(until)


# -- definitions ----------------------------------------------------------------------------


def test_every_kind_of_schedule_is_stored_like_convex(app, crons, clock):
    f = app.fns
    crons.interval("a", {"hours": 2}, f.log, {"what": "a"})
    crons.interval("b", {"minutes": 1.5}, f.log, {"what": "b"})
    crons.hourly("c", {"minute_utc": 5}, f.log, {"what": "c"})
    crons.daily("d", {"hour_utc": 8, "minute_utc": 30}, f.log, {"what": "d"})
    crons.weekly("e", {"day_of_week": "Sunday", "hour_utc": 2, "minute_utc": 0}, f.act, {"what": "e"})
    crons.monthly("f", {"day": 1, "hour_utc": 9, "minute_utc": 0}, f.log, {"what": "f"})
    crons.cron("g", "0  9 * * 1-5", f.log, {"what": "g"})
    crons.daily("h", {"hour": 9, "minute": 0}, f.log, {"what": "h"}, tz="Europe/Paris")
    crons.register("i", {"type": "weekly", "day_of_week": "monday", "hour": 7, "minute": 15}, f.log.name, {"what": "i"}, tz=NEW_YORK)
    assert len(crons) == 9 and "a" in crons
    app.finish_in_progress_scheduled_functions()
    docs = {d["name"]: d for d in app.run(lambda ctx: ctx.db.system.query("_cron_jobs").collect())}
    assert {n: (d["schedule"], d["tz"]) for n, d in docs.items()} == {
        "a": ({"type": "interval", "seconds": 7200}, None),
        "b": ({"type": "interval", "seconds": 90}, None),
        "c": ({"type": "hourly", "minute_utc": 5}, None),
        "d": ({"type": "daily", "hour_utc": 8, "minute_utc": 30}, None),
        "e": ({"type": "weekly", "day_of_week": "sunday", "hour_utc": 2, "minute_utc": 0}, None),
        "f": ({"type": "monthly", "day": 1, "hour_utc": 9, "minute_utc": 0}, None),
        "g": ({"type": "cron", "cron": "0 9 * * 1-5"}, None),
        "h": ({"type": "daily", "hour": 9, "minute": 0}, "Europe/Paris"),
        "i": ({"type": "weekly", "day_of_week": "monday", "hour": 7, "minute": 15}, "America/New_York"),
    }
    now = clock.now()  # 2026-01-01 00:00 UTC, a Thursday
    assert docs["a"]["function"] == f.log.name and docs["a"]["args"] == {"what": "a"}
    assert docs["e"]["function"] == f.act.name and docs["a"]["origin"] == "static"
    # Interval crons ran at once; calendar crons wait for their first occurrence.
    assert docs["a"]["next_run"] == now + 2 * HOUR and docs["b"]["next_run"] == now + 90 * SECOND
    assert [r["state"] for r in docs["a"]["last_runs"]] == ["success"]
    assert docs["c"]["next_run"] == now + 5 * MINUTE
    assert docs["d"]["next_run"] == now + 8.5 * HOUR
    assert docs["e"]["next_run"] == ms(2026, 1, 4, 2, 0)
    assert docs["f"]["next_run"] == ms(2026, 1, 1, 9, 0)
    assert docs["g"]["next_run"] == ms(2026, 1, 1, 9, 0)
    assert docs["h"]["next_run"] == ms(2026, 1, 1, 9, 0, tz=PARIS) == ms(2026, 1, 1, 8, 0)
    assert docs["i"]["next_run"] == ms(2026, 1, 5, 7, 15, tz=NEW_YORK)
    assert sorted(events(app)) == [now, now]  # a and b


def test_duplicate_names_are_refused(app, crons):
    crons.interval("sync", {"minutes": 5}, app.fns.log, {"what": "x"})
    with pytest.raises(SchedulerError, match='Cron "sync": defined twice'):
        crons.daily("sync", {"hour_utc": 1, "minute_utc": 0}, app.fns.log, {"what": "y"})
    for bad in ("", "   ", None, 3):
        with pytest.raises(SchedulerError, match="non-empty string"):
            crons.interval(bad, {"minutes": 5}, app.fns.log)


@pytest.mark.parametrize(
    "define, message",
    [
        (lambda c, f: c.hourly("x", {"minute_utc": 60}, f), "minute must be an integer from 0 to 59, got 60"),
        (lambda c, f: c.hourly("x", {"minute_utc": -1}, f), "from 0 to 59"),
        (lambda c, f: c.hourly("x", {"minute_utc": 1.5}, f), "from 0 to 59"),
        (lambda c, f: c.hourly("x", {"minute_utc": True}, f), "from 0 to 59"),
        (lambda c, f: c.daily("x", {"hour_utc": 24, "minute_utc": 0}, f), "hour must be an integer from 0 to 23"),
        (lambda c, f: c.daily("x", {"hour_utc": 8}, f), "missing minute"),
        (lambda c, f: c.daily("x", {"hour_utc": 8, "minute_utc": 0, "second": 0}, f), "unknown field 'second'"),
        (lambda c, f: c.daily("x", {"hour_utc": 8, "hour": 8, "minute_utc": 0}, f), 'give "hour" once'),
        (lambda c, f: c.daily("x", {"hour_utc": 8, "minute_utc": 0}, f, tz="Europe/Paris"), '"hour_utc" is a UTC time but the cron has tz="Europe/Paris"'),
        (lambda c, f: c.daily("x", "8:00", f), "takes its schedule as a dict"),
        (lambda c, f: c.weekly("x", {"day_of_week": "funday", "hour_utc": 1, "minute_utc": 0}, f), "day_of_week must be one of sunday"),
        (lambda c, f: c.weekly("x", {"day_of_week": 1, "hour_utc": 1, "minute_utc": 0}, f), "day_of_week must be one of"),
        (lambda c, f: c.monthly("x", {"day": 0, "hour_utc": 1, "minute_utc": 0}, f), "day must be an integer from 1 to 31"),
        (lambda c, f: c.monthly("x", {"day": 32, "hour_utc": 1, "minute_utc": 0}, f), "day must be an integer from 1 to 31"),
        (lambda c, f: c.daily("x", {"hour": 8, "minute": 0}, f, tz="Mars/Olympus"), 'unknown time zone "Mars/Olympus"'),
        (lambda c, f: c.daily("x", {"hour": 8, "minute": 0}, f, tz=5), "IANA time zone name"),
    ],
)
def test_out_of_range_and_contradictory_fields_are_refused(app, crons, define, message):
    with pytest.raises(SchedulerError, match='Cron "x"') as info:
        define(crons, app.fns.log)
    assert message in info.value.message
    assert len(crons) == 0


@pytest.mark.parametrize(
    "expression, message",
    [
        ("0 9 * *", "needs 5 fields"),
        ("0 9 * * * *", "needs 5 fields"),
        ("", "needs 5 fields"),
        ("@reboot", "needs 5 fields"),
        ("61 * * * *", "invalid cron expression"),
        ("0 24 * * *", "invalid cron expression"),
        ("a b c d e", "invalid cron expression"),
        ("*/0 * * * *", "invalid cron expression"),
        ("0 0 31 2 *", "never matches"),
        ("0 0 30 2 *", "never matches"),
        ("0 0 31 4,6,9,11 *", "never matches"),
    ],
)
def test_malformed_or_never_matching_cron_strings_are_refused(app, crons, expression, message):
    with pytest.raises(SchedulerError, match=f'Cron "bad".*{message}'):
        crons.cron("bad", expression, app.fns.log, {"what": "x"})


def test_valid_cron_strings(app, crons):
    for i, expression in enumerate(["* * * * *", "*/15 9-17 * * mon-fri", "0 0 29 2 *", "0 9 L * *", "0 0 1 JAN *", "@daily", "H 3 * * *"]):
        crons.cron(f"ok{i}", expression, app.fns.log, {"what": "x"})
    app.finish_in_progress_scheduled_functions()
    assert len(cron_names(app)) == 7


@pytest.mark.parametrize(
    "schedule, message",
    [
        ({"seconds": 0}, "positive number of seconds"),
        ({"minutes": -5}, "positive number of minutes"),
        ({"hours": float("nan")}, "positive number of hours"),
        ({"hours": float("inf")}, "positive number of hours"),
        ({"seconds": True}, "positive number"),
        ({"seconds": "10"}, "positive number"),
        ({"days": 1}, "one of"),
        ({"minutes": 1, "seconds": 30}, "one of"),
        ({}, "one of"),
    ],
)
def test_non_positive_or_malformed_intervals_are_refused(app, crons, schedule, message):
    with pytest.raises(SchedulerError, match=f'Cron "i": .*{message}'):
        crons.interval("i", schedule, app.fns.log, {"what": "x"})


def test_a_query_target_is_refused_at_once_by_object_and_at_scheduling_start_by_name(app, crons):
    with pytest.raises(SchedulerError, match=r'Cron "q": `.*read` is a query'):
        crons.interval("q", {"minutes": 1}, app.fns.read)
    crons.interval("q", {"minutes": 1}, app.fns.read.name)  # by name: the App resolves it later
    with pytest.raises(SchedulerError, match=r'Cron "q": `.*read` is a query') as info:
        app.finish_in_progress_scheduled_functions()
    assert info.value.function == app.fns.read.name
    assert cron_names(app) == []


def test_an_unknown_target_or_bad_arguments_fail_when_scheduling_starts(make_app, clock):
    crons = cron_jobs()
    crons.daily("ghost", {"hour_utc": 1, "minute_utc": 0}, "tests.nowhere:nothing")
    app = make_app(schema, crons=crons)
    Fns(app, clock)
    with pytest.raises(FunctionNotFoundError, match='Cron "ghost": Could not find function `tests.nowhere:nothing`'):
        app.finish_in_progress_scheduled_functions()

    crons = cron_jobs()
    app2 = make_app(schema, crons=crons, url="sqlite://")
    fns = Fns(app2, clock)
    crons.interval("typo", {"minutes": 1}, fns.log, {"wat": "x"})
    with pytest.raises(ValidationError, match='Cron "typo": Invalid arguments for function') as info:
        app2.finish_in_progress_scheduled_functions()
    assert info.value.function == fns.log.name
    assert cron_names(app2) == []
    with pytest.raises(SchedulerError, match="arguments must be a dict"):
        crons.interval("list args", {"minutes": 1}, fns.log, ["x"])  # type: ignore[arg-type]


def test_functions_of_another_app_or_undecorated_are_refused(app, crons, make_app, clock):
    other = make_app(schema, url="sqlite://")
    foreign = Fns(other, clock).log
    crons.interval("foreign", {"minutes": 1}, foreign, {"what": "x"})
    with pytest.raises(FunctionNotFoundError, match='Cron "foreign": .*registered on another App'):
        app.finish_in_progress_scheduled_functions()

    def plain(ctx) -> None: ...

    crons2 = cron_jobs()
    crons2.interval("plain", {"minutes": 1}, plain)
    app.crons = crons2
    with pytest.raises(FunctionNotFoundError, match='Cron "plain": Function `.*plain` is not registered'):
        app.finish_in_progress_scheduled_functions()


# -- running on schedule ----------------------------------------------------------------------


def test_interval_runs_at_once_then_keeps_its_rhythm(app, crons, clock):
    start = clock.now()
    crons.interval("tick", {"seconds": 30}, app.fns.log, {"what": "tick"})
    drive(app, clock, start + 5 * MINUTE)
    assert events(app) == [start + i * 30 * SECOND for i in range(11)]
    doc = cron_doc(app, "tick")
    assert doc["next_run"] == start + 5.5 * MINUTE
    assert doc["current_job"] is None


def test_a_week_of_weekday_9am_runs(app, crons, clock):
    clock.set_time(datetime(2026, 1, 4, 12, tzinfo=UTC))  # a Sunday
    crons.cron("standup", "0 9 * * 1-5", app.fns.log, {"what": "standup"})
    crons.daily("digest", {"hour_utc": 8, "minute_utc": 0}, app.fns.act, {"what": "digest"})
    crons.weekly("backup", {"day_of_week": "sunday", "hour_utc": 2, "minute_utc": 0}, app.fns.log, {"what": "backup"})
    crons.hourly("metrics", {"minute_utc": 15}, app.fns.log, {"what": "metrics"})
    drive(app, clock, ms(2026, 1, 11, 12))
    standups = [utc(t) for t in events(app, "standup")]
    assert [(d.strftime("%a"), d.hour, d.minute) for d in standups] == [(day, 9, 0) for day in ("Mon", "Tue", "Wed", "Thu", "Fri")]
    assert [utc(t).day for t in events(app, "digest")] == [5, 6, 7, 8, 9, 10, 11]
    assert [utc(t) for t in events(app, "backup")] == [datetime(2026, 1, 11, 2, tzinfo=UTC)]
    metrics = events(app, "metrics")
    assert len(metrics) == 7 * 24 and all(utc(t).minute == 15 for t in metrics)
    assert all(b - a == HOUR for a, b in zip(metrics, metrics[1:], strict=False))
    runs = cron_doc(app, "standup")["last_runs"]
    assert [r["state"] for r in runs] == ["success"] * 5
    assert [r["scheduled_time"] for r in runs] == [t for t in events(app, "standup")]
    assert cron_doc(app, "standup")["next_run"] == ms(2026, 1, 12, 9)


def test_monthly_skips_months_without_the_day_like_cron(app, crons, clock):
    crons.monthly("eom", {"day": 31, "hour_utc": 0, "minute_utc": 0}, app.fns.log, {"what": "eom"})
    crons.cron("last", "0 0 L * *", app.fns.log, {"what": "last"})
    drive(app, clock, ms(2026, 7, 1))
    assert [utc(t).month for t in events(app, "eom")] == [1, 3, 5]
    assert [(utc(t).month, utc(t).day) for t in events(app, "last")] == [(1, 31), (2, 28), (3, 31), (4, 30), (5, 31), (6, 30)]


def test_missed_occurrences_do_not_run_in_a_burst(app, crons, clock):
    start = clock.now()
    crons.cron("minutely", "* * * * *", app.fns.log, {"what": "m"})
    crons.interval("ten", {"minutes": 10}, app.fns.log, {"what": "ten"})
    drive(app, clock, start + 3 * MINUTE)
    assert events(app, "m") == [start + MINUTE, start + 2 * MINUTE, start + 3 * MINUTE]
    # No worker for three days and a bit.
    clock.set_time(start + 3 * DAY + 95 * SECOND)
    app.finish_in_progress_scheduled_functions()
    late = clock.now()
    assert events(app, "m")[3:] == [late]
    assert events(app, "ten") == [start, late]
    m, ten = cron_doc(app, "minutely"), cron_doc(app, "ten")
    # The late run stands for the first missed occurrence; then the schedule is kept.
    assert m["last_runs"][-1]["scheduled_time"] == start + 4 * MINUTE
    assert m["next_run"] == start + 3 * DAY + 2 * MINUTE
    assert ten["last_runs"][-1]["scheduled_time"] == start + 10 * MINUTE
    assert ten["next_run"] == start + 3 * DAY + 10 * MINUTE
    assert app.finish_in_progress_scheduled_functions() == 0
    drive(app, clock, start + 3 * DAY + 10 * MINUTE)
    assert events(app, "m")[4:] == [start + 3 * DAY + i * MINUTE for i in range(2, 11)]
    assert events(app, "ten")[2:] == [start + 3 * DAY + 10 * MINUTE]


def test_at_most_one_run_at_a_time_with_an_overrunning_action(app, crons, clock):
    start = clock.now()
    crons.interval("slow", {"seconds": 10}, app.fns.overrun, {"what": "slow"})
    app.finish_in_progress_scheduled_functions()
    # The first run took 25 s; the worker pass made while it ran (at 25 s) started nothing.
    assert [e - start for e in events(app)] == [0, 25 * SECOND, 25 * SECOND, 25 * SECOND]
    whats = [e.what for e in app.run(lambda ctx: ctx.table("events").collect())]
    assert whats == ["slow start", "slow end", "slow start", "slow end"]
    doc = cron_doc(app, "slow")
    # The second run, started as soon as the first ended, stands for the 10 s occurrence;
    # the 20 s one was skipped, and the schedule goes on at 30 s.
    assert [r["scheduled_time"] - start for r in doc["last_runs"]] == [0, 10 * SECOND]
    assert [r["state"] for r in doc["last_runs"]] == ["success", "success"]
    assert doc["next_run"] == start + 30 * SECOND and clock.now() == start + 25 * SECOND
    jobs = app.run(lambda ctx: ctx.table("_scheduled_functions").collect())
    assert [j.scheduled_time - start for j in jobs] == [0, 10 * SECOND]


def test_a_pending_run_blocks_the_next_and_a_canceled_one_is_recorded(app, crons, clock):
    start = clock.now()
    crons.interval("poll", {"minutes": 1}, app.fns.act, {"what": "poll"})
    from ents.crons import reconcile

    reconcile(app)
    assert fire_due(app) == 1  # created, not run
    job_id = cron_doc(app, "poll")["current_job"]
    assert app.run(lambda ctx: ctx.db.system.get(job_id))["state"] == {"kind": "pending"}
    clock.advance(5 * MINUTE)
    assert fire_due(app) == 0
    assert next_cron_due(app) is None  # nothing can start: the worker sleeps until the job ends
    app.run(lambda ctx: ctx.scheduler.cancel(job_id))
    assert next_cron_due(app) == start + MINUTE
    assert fire_due(app) == 1
    doc = cron_doc(app, "poll")
    assert doc["last_runs"] == [
        {"job_id": job_id, "scheduled_time": start, "completed_time": clock.now(), "state": "canceled"}
    ]
    assert doc["current_job"] != job_id and doc["next_run"] == start + 6 * MINUTE
    app.finish_in_progress_scheduled_functions()
    assert events(app) == [clock.now()]


def test_failures_are_recorded_and_only_the_last_ten_runs_kept(app, crons, clock):
    start = clock.now()
    crons.interval("flaky", {"minutes": 1}, app.fns.fail, {"what": "x"})
    drive(app, clock, start + 14 * MINUTE)
    runs = cron_doc(app, "flaky")["last_runs"]
    assert len(runs) == 10
    assert [r["scheduled_time"] for r in runs] == [start + i * MINUTE for i in range(5, 15)]
    assert all(r["state"] == "failed" and r["error"] == "RuntimeError: boom x" for r in runs)
    job = app.run(lambda ctx: ctx.db.system.get(runs[-1]["job_id"]))
    assert job["state"] == {"kind": "failed", "error": "RuntimeError: boom x"}
    assert job["name"] == app.fns.fail.name and job["scheduled_time"] == start + 14 * MINUTE


def test_crons_run_with_no_identity_and_their_jobs_are_ordinary_jobs(app, crons, clock):
    @app.internal_mutation
    def who(ctx) -> None:
        ctx.table("events").insert({"what": repr(ctx.auth.get_user_identity()), "at": ctx.now})

    crons.interval("who", {"hours": 1}, who)
    app.finish_in_progress_scheduled_functions()
    assert [e.what for e in app.run(lambda ctx: ctx.table("events").collect())] == ["None"]
    jobs = app.run(lambda ctx: ctx.db.system.query("_scheduled_functions").collect())
    assert len(jobs) == 1 and jobs[0]["name"] == who.name and jobs[0]["args"] == {}
    assert jobs[0]["state"] == {"kind": "success"} and jobs[0]["scheduled_time"] == clock.now()


# -- time zones and daylight saving -------------------------------------------------------------


def series(schedule: dict[str, Any], tz: str | None, start: float, n: int) -> list[float]:
    plan = compile_schedule("t", schedule, tz)
    out = [plan.first_run(start)]
    while len(out) < n:
        out.append(plan.next_after(out[-1], out[-1]))
    return out


def test_daily_9am_in_paris_runs_once_per_local_day_across_both_dst_changes(app, crons, clock):
    crons.daily("paris", {"hour": 9, "minute": 0}, app.fns.log, {"what": "paris"}, tz="Europe/Paris")
    clock.set_time(ms(2026, 3, 26))
    drive(app, clock, ms(2026, 4, 2))
    runs = [local(t, PARIS) for t in events(app)]
    assert runs == [f"2026-03-{d} 09:00 {'CET' if d < 29 else 'CEST'}" for d in range(26, 32)] + ["2026-04-01 09:00 CEST"]
    assert [utc(t).hour for t in events(app)] == [8, 8, 8, 7, 7, 7, 7]
    clock.set_time(ms(2026, 10, 23))
    drive(app, clock, ms(2026, 10, 28))
    autumn = [local(t, PARIS) for t in events(app)[7:]]
    # (The first is the one late run standing for the months no worker was up.)
    assert autumn == ["2026-10-23 02:00 CEST", "2026-10-23 09:00 CEST", "2026-10-24 09:00 CEST", "2026-10-25 09:00 CET", "2026-10-26 09:00 CET", "2026-10-27 09:00 CET"]


def test_a_skipped_wall_clock_time_runs_shifted_by_the_gap_and_a_repeated_one_once():
    # Paris: 2026-03-29 02:00 CET -> 03:00 CEST, 2026-10-25 03:00 CEST -> 02:00 CET.
    spring = series({"type": "daily", "hour": 2, "minute": 30}, "Europe/Paris", ms(2026, 3, 27), 4)
    assert [local(t, PARIS) for t in spring] == [
        "2026-03-27 02:30 CET",
        "2026-03-28 02:30 CET",
        "2026-03-29 03:30 CEST",
        "2026-03-30 02:30 CEST",
    ]
    autumn = series({"type": "daily", "hour": 2, "minute": 30}, "Europe/Paris", ms(2026, 10, 24), 3)
    assert [local(t, PARIS) for t in autumn] == ["2026-10-24 02:30 CEST", "2026-10-25 02:30 CEST", "2026-10-26 02:30 CET"]
    # New York: 2026-03-08 02:00 EST -> 03:00 EDT, 2026-11-01 02:00 EDT -> 01:00 EST.
    spring = series({"type": "cron", "cron": "30 2 * * *"}, "America/New_York", ms(2026, 3, 7, 12), 3)
    assert [local(t, NEW_YORK) for t in spring] == ["2026-03-08 03:30 EDT", "2026-03-09 02:30 EDT", "2026-03-10 02:30 EDT"]
    autumn = series({"type": "daily", "hour": 1, "minute": 30}, "America/New_York", ms(2026, 10, 31, 12), 3)
    assert [local(t, NEW_YORK) for t in autumn] == ["2026-11-01 01:30 EDT", "2026-11-02 01:30 EST", "2026-11-03 01:30 EST"]
    sunday = series({"type": "weekly", "day_of_week": "sunday", "hour": 2, "minute": 30}, "America/New_York", ms(2026, 3, 1, 12), 2)
    assert [local(t, NEW_YORK) for t in sunday] == ["2026-03-08 03:30 EDT", "2026-03-15 02:30 EDT"]


def test_crons_not_tied_to_an_hour_keep_real_time_rhythm_through_dst():
    for start, tz in [(ms(2026, 3, 28, 22), "Europe/Paris"), (ms(2026, 10, 24, 22), "Europe/Paris"), (ms(2026, 3, 8, 4), "America/New_York"), (ms(2026, 11, 1, 2), "America/New_York")]:
        hourly = series({"type": "hourly", "minute": 30}, tz, start, 8)
        assert all(b - a == HOUR for a, b in zip(hourly, hourly[1:], strict=False)), (tz, [utc(t) for t in hourly])
        quarter = series({"type": "cron", "cron": "*/15 * * * *"}, tz, start, 32)
        assert all(b - a == 15 * MINUTE for a, b in zip(quarter, quarter[1:], strict=False)), tz
    fall = series({"type": "hourly", "minute": 30}, "America/New_York", ms(2026, 11, 1, 4), 4)
    assert [local(t, NEW_YORK) for t in fall] == ["2026-11-01 00:30 EDT", "2026-11-01 01:30 EDT", "2026-11-01 01:30 EST", "2026-11-01 02:30 EST"]
    # ... while a cron at fixed hours runs once per local time.
    fixed = series({"type": "cron", "cron": "30 0-3 * * *"}, "America/New_York", ms(2026, 11, 1, 4), 4)
    assert [local(t, NEW_YORK) for t in fixed] == ["2026-11-01 00:30 EDT", "2026-11-01 01:30 EDT", "2026-11-01 02:30 EST", "2026-11-01 03:30 EST"]


def test_utc_schedules_ignore_dst_and_tz_utc_is_utc(app, crons, clock):
    crons.daily("utc", {"hour_utc": 9, "minute_utc": 0}, app.fns.log, {"what": "utc"})
    crons.daily("tz utc", {"hour": 9, "minute": 0}, app.fns.log, {"what": "tz utc"}, tz="UTC")
    clock.set_time(ms(2026, 3, 27))
    drive(app, clock, ms(2026, 3, 31))
    assert events(app, "utc") == events(app, "tz utc") == [ms(2026, 3, d, 9) for d in (27, 28, 29, 30)]
    assert cron_doc(app, "tz utc")["schedule"] == {"type": "daily", "hour_utc": 9, "minute_utc": 0}


def test_hourly_in_new_york_runs_every_real_hour_on_the_25_hour_day(app, crons, clock):
    crons.hourly("ny", {"minute": 0}, app.fns.act, {"what": "ny"}, tz="America/New_York")
    clock.set_time(ms(2026, 11, 1, 0, 0, tz=NEW_YORK))
    drive(app, clock, ms(2026, 11, 2, 0, 0, tz=NEW_YORK) - 1)
    runs = events(app)
    assert len(runs) == 24  # 01:00 .. 23:00 local, 01:00 twice
    assert all(b - a == HOUR for a, b in zip(runs, runs[1:], strict=False))
    assert [local(t, NEW_YORK)[11:] for t in runs[:3]] == ["01:00 EDT", "01:00 EST", "02:00 EST"]


# -- reconciliation -----------------------------------------------------------------------------


def test_crons_added_after_the_app_is_created_take_effect_when_scheduling_starts(app, crons, clock):
    app.finish_in_progress_scheduled_functions()
    assert cron_names(app) == []
    crons.interval("late", {"minutes": 1}, app.fns.log, {"what": "late"})
    assert cron_names(app) == []
    app.finish_in_progress_scheduled_functions()
    assert cron_names(app) == ["late"] and events(app) == [clock.now()]
    app.crons = None
    app.finish_in_progress_scheduled_functions()
    assert cron_names(app) == []


def test_reconciliation_on_restart_over_the_same_file(backend, db_url, clock):
    if backend == "memory":
        pytest.skip("a restart needs a database that outlives the App")
    c1 = cron_jobs()
    app1 = App(schema, db_url, clock=clock, crons=c1)
    f1 = Fns(app1, clock)
    c1.interval("same", {"hours": 1}, f1.log, {"what": "same"})
    c1.daily("moved", {"hour_utc": 6, "minute_utc": 0}, f1.log, {"what": "moved"})
    c1.interval("retimed", {"hours": 3}, f1.log, {"what": "retimed"})
    c1.interval("new args", {"hours": 4}, f1.log, {"what": "old"})
    c1.cron("removed", "0 * * * *", f1.act, {"what": "removed"})
    t0 = clock.now()
    app1.finish_in_progress_scheduled_functions()
    app1.run(lambda ctx: ctx.crons.interval("runtime", {"minutes": 30}, f1.log, {"what": "runtime"}))
    app1.run(lambda ctx: ctx.crons.daily("taken over", {"hour_utc": 1, "minute_utc": 0}, f1.log, {"what": "rt"}))
    # Leave an occurrence of "removed" pending, as if the worker stopped before running it.
    clock.advance(HOUR)
    fire_due(app1)
    removed_job = cron_doc(app1, "removed")["current_job"]
    app1.close()

    clock.advance(20 * MINUTE)
    c2 = cron_jobs()
    app2 = App(schema, db_url, clock=clock, crons=c2)
    f2 = Fns(app2, clock)
    c2.interval("same", {"hours": 1}, f2.log.name, {"what": "same"})  # by name now: same cron
    c2.daily("moved", {"hour_utc": 7, "minute_utc": 0}, f2.log, {"what": "moved"})
    c2.interval("retimed", {"minutes": 90}, f2.log, {"what": "retimed"})
    c2.interval("new args", {"hours": 4}, f2.log, {"what": "new"})
    c2.interval("added", {"hours": 2}, f2.log, {"what": "added"})
    c2.daily("taken over", {"hour_utc": 2, "minute_utc": 0}, f2.log, {"what": "code"})
    try:
        app2.finish_in_progress_scheduled_functions()
        now = clock.now()
        assert cron_names(app2) == ["added", "moved", "new args", "retimed", "runtime", "same", "taken over"]
        docs = {n: cron_doc(app2, n) for n in cron_names(app2)}
        assert docs["same"]["next_run"] == t0 + 2 * HOUR  # unchanged; its 1 h run happened above
        assert docs["moved"]["next_run"] == ms(2026, 1, 1, 7)
        assert docs["new args"]["next_run"] == t0 + 4 * HOUR and docs["new args"]["args"] == {"what": "new"}
        assert docs["runtime"]["origin"] == "runtime"
        assert docs["taken over"]["origin"] == "static" and docs["taken over"]["args"] == {"what": "code"}
        assert docs["taken over"]["schedule"] == {"type": "daily", "hour_utc": 2, "minute_utc": 0}
        # Restarted from now: intervals ran at once.
        assert docs["retimed"]["next_run"] == now + 90 * MINUTE and docs["added"]["next_run"] == now + 2 * HOUR
        assert events(app2, "retimed") == [t0, now] and events(app2, "added") == [now]
        # The removed cron stopped and its pending occurrence never runs.
        assert app2.run(lambda ctx: ctx.db.system.get(removed_job))["state"] == {"kind": "canceled"}
        assert events(app2, "removed") == []
        # A second start with the same code changes nothing.
        before = app2.run(lambda ctx: ctx.db.system.query("_cron_jobs").collect())
        app2.finish_in_progress_scheduled_functions()
        assert app2.run(lambda ctx: ctx.db.system.query("_cron_jobs").collect()) == before
    finally:
        app2.close()


# -- ctx.crons ------------------------------------------------------------------------------------


def test_runtime_crons_register_change_and_delete(app, clock):
    f = app.fns
    start = clock.now()

    @app.mutation
    def subscribe(ctx, team: str, expression: str) -> str:
        return ctx.crons.register(f"report {team}", expression, f.log, {"what": f"report {team}"}, tz="Europe/Paris")

    @app.mutation
    def unsubscribe(ctx, team: str) -> bool:
        return ctx.crons.delete(f"report {team}")

    cron_id = app.run_mutation(subscribe, {"team": "a", "expression": "0 9 * * *"})
    doc = app.run(lambda ctx: ctx.db.system.get(cron_id))
    assert doc["name"] == "report a" and doc["origin"] == "runtime" and doc["tz"] == "Europe/Paris"
    assert doc["next_run"] == ms(2026, 1, 1, 9, tz=PARIS)
    assert app.run(lambda ctx: ctx.crons.get("report a"))["_id"] == cron_id
    drive(app, clock, start + 2 * DAY)
    assert events(app) == [ms(2026, 1, 1, 9, tz=PARIS), ms(2026, 1, 2, 9, tz=PARIS)]
    # Re-registering with a new schedule restarts it from now; the id stays.
    assert app.run_mutation(subscribe, {"team": "a", "expression": "0 12 * * *"}) == cron_id
    assert cron_doc(app, "report a")["next_run"] == ms(2026, 1, 3, 12, tz=PARIS)
    assert app.run_mutation(unsubscribe, {"team": "a"}) is True
    assert app.run_mutation(unsubscribe, {"team": "a"}) is False
    drive(app, clock, start + 5 * DAY)
    assert len(events(app)) == 2 and cron_names(app) == []


def test_runtime_registration_is_atomic_with_the_mutation_and_checked(app, clock):
    f = app.fns

    def register_then_fail(ctx):
        ctx.crons.interval("doomed", {"minutes": 1}, f.log, {"what": "doomed"})
        raise RuntimeError("mutation failed")

    with pytest.raises(RuntimeError):
        app.run(register_then_fail)
    assert cron_names(app) == []
    with pytest.raises(SchedulerError, match='Cron "q": `.*read` is a query'):
        app.run(lambda ctx: ctx.crons.interval("q", {"minutes": 1}, f.read.name))
    with pytest.raises(FunctionNotFoundError, match='Cron "x": Could not find function `nope`'):
        app.run(lambda ctx: ctx.crons.register("x", "* * * * *", "nope"))
    with pytest.raises(ValidationError, match='Cron "x": Invalid arguments'):
        app.run(lambda ctx: ctx.crons.register("x", "* * * * *", f.log, {"what": 1}))
    with pytest.raises(SchedulerError, match="never matches"):
        app.run(lambda ctx: ctx.crons.register("x", "0 0 31 2 *", f.log, {"what": "x"}))
    with pytest.raises(SchedulerError, match='tz="Europe/Paris" does not apply'):
        app.run(lambda ctx: ctx.crons.register("x", {"minutes": 5}, f.log, {"what": "x"}, tz="Europe/Paris"))
    with pytest.raises(SchedulerError, match="unknown schedule type 'yearly'"):
        app.run(lambda ctx: ctx.crons.register("x", {"type": "yearly"}, f.log, {"what": "x"}))
    with pytest.raises(SchedulerError, match="a schedule is a cron string"):
        app.run(lambda ctx: ctx.crons.register("x", 5, f.log, {"what": "x"}))
    assert cron_names(app) == []


def test_runtime_register_takes_every_schedule_form(app, clock):
    f = app.fns

    def register(ctx):
        ctx.crons.register("s", "30 6 * * *", f.log, {"what": "s"})
        ctx.crons.register("i", {"minutes": 5}, f.log, {"what": "i"})
        ctx.crons.register("w", {"type": "weekly", "day_of_week": "friday", "hour_utc": 17, "minute_utc": 0}, f.log, {"what": "w"})
        ctx.crons.register("c", {"type": "cron", "cron": "0 0 * * 0"}, f.act, {"what": "c"}, tz="Asia/Tokyo")
        ctx.crons.monthly("m", {"day": 15, "hour": 10, "minute": 0}, f.log.name, {"what": "m"}, tz="Europe/Paris")
        return [d["name"] for d in ctx.crons.list()]

    assert app.run(register) == ["c", "i", "m", "s", "w"]
    docs = {n: cron_doc(app, n) for n in cron_names(app)}
    assert docs["i"]["schedule"] == {"type": "interval", "seconds": 300} and docs["i"]["next_run"] == clock.now()
    # A stored schedule can be registered again as is.
    again = app.run(lambda ctx: ctx.crons.register("w2", docs["w"]["schedule"], f.log, {"what": "w"}))
    assert app.run(lambda ctx: ctx.db.system.get(again))["next_run"] == docs["w"]["next_run"] == ms(2026, 1, 2, 17)
    assert docs["c"]["next_run"] == ms(2026, 1, 4, 0, tz=ZoneInfo("Asia/Tokyo"))
    app.finish_in_progress_scheduled_functions()
    assert events(app, "i") == [clock.now()]


def test_runtime_crons_cannot_replace_or_delete_crons_defined_in_code(app, crons):
    crons.interval("code", {"hours": 1}, app.fns.log, {"what": "code"})
    app.finish_in_progress_scheduled_functions()
    with pytest.raises(SchedulerError, match='Cron "code": is defined in code with cron_jobs\\(\\) and cannot be replaced'):
        app.run(lambda ctx: ctx.crons.interval("code", {"hours": 2}, app.fns.log, {"what": "x"}))
    with pytest.raises(SchedulerError, match="cannot be deleted"):
        app.run(lambda ctx: ctx.crons.delete("code"))
    assert cron_doc(app, "code")["schedule"] == {"type": "interval", "seconds": 3600}


def test_runtime_crons_survive_reconciliation_and_args_changes_keep_the_schedule(app, crons, clock):
    f = app.fns
    start = clock.now()
    app.run(lambda ctx: ctx.crons.interval("rt", {"hours": 1}, f.log, {"what": "v1"}))
    app.finish_in_progress_scheduled_functions()
    clock.advance(10 * MINUTE)
    app.run(lambda ctx: ctx.crons.interval("rt", {"hours": 1}, f.act, {"what": "v2"}))
    doc = cron_doc(app, "rt")
    assert doc["next_run"] == start + HOUR and doc["function"] == f.act.name and doc["args"] == {"what": "v2"}
    crons.interval("static", {"hours": 1}, f.log, {"what": "static"})
    drive(app, clock, start + HOUR)
    assert cron_names(app) == ["rt", "static"]
    assert [e.what for e in app.run(lambda ctx: ctx.table("events").collect())] == ["v1", "static", "v2"]


def test_a_runtime_cron_whose_function_disappeared_records_a_failure_and_keeps_its_schedule(make_app, clock, db_url):
    app = make_app(schema)
    f = Fns(app, clock)

    @app.internal_mutation
    def temporary(ctx) -> None:
        pass

    start = clock.now()
    app.run(lambda ctx: ctx.crons.interval("orphan", {"minutes": 1}, temporary))
    del app.functions.by_name[temporary.name]  # as if a new deploy dropped the function
    app.finish_in_progress_scheduled_functions()
    doc = cron_doc(app, "orphan")
    assert doc["last_runs"][0]["state"] == "failed" and "Could not find function" in doc["last_runs"][0]["error"]
    assert doc["last_runs"][0]["job_id"] is None and doc["next_run"] == start + MINUTE
    assert f.log is not None


def test_cron_documents_are_readable_like_other_system_tables(app, crons):
    crons.daily("d", {"hour_utc": 3, "minute_utc": 0}, app.fns.log, {"what": "d"})
    app.finish_in_progress_scheduled_functions()

    def reads(ctx):
        return [
            ctx.db.system.query("_cron_jobs").first(),
            ctx.table("_cron_jobs").first_x().doc(),
            ctx.table("_cron_jobs", "by_name", lambda q: q.eq("name", "d")).unique_x().doc(),
            ctx.crons.get("d"),
        ]

    docs = app.run(reads)
    assert all(d == docs[0] for d in docs)
    assert set(docs[0]) == {"_id", "_creation_time", "name", "schedule", "function", "args", "tz", "origin", "next_run", "last_runs", "current_job"}
    with pytest.raises(Exception, match="read-only"):
        app.run(lambda ctx: ctx.table("_cron_jobs").insert({"name": "x"}))


# -- several workers --------------------------------------------------------------------------


def _shared_app(url: str, clock: FakeClock) -> App:
    """The App both worker processes and the test run: same crons, same function names."""
    app = App(define_ent_schema({"ticks": define_ent({"cron": str, "at": float, "pid": int})}), url, clock=clock)

    @app.internal_mutation(name="crons_test:tick")
    def tick(ctx, cron: str) -> None:
        ctx.table("ticks").insert({"cron": cron, "at": ctx.now, "pid": os.getpid()})

    @app.internal_action(name="crons_test:tick_action")
    def tick_action(ctx, cron: str) -> None:
        ctx.run_mutation(tick, {"cron": cron})

    crons = cron_jobs()
    crons.cron("every minute", "* * * * *", tick, {"cron": "every minute"})
    crons.interval("action", {"minutes": 1}, tick_action, {"cron": "action"})
    crons.interval("fast", {"seconds": 20}, tick, {"cron": "fast"})
    app.crons = crons
    return app


def _worker_process(url: str, start: float, steps: int, barrier: Any) -> None:
    clock = FakeClock(start)
    app = _shared_app(url, clock)
    try:
        for i in range(steps):
            # Both processes look at the same instant at the same time: they race for every occurrence.
            barrier.wait()
            clock.set(start + i * MINUTE)
            app.finish_in_progress_scheduled_functions()
        barrier.wait()
    finally:
        app.close()


def test_two_worker_processes_never_run_an_occurrence_twice(backend, db_url, clock):
    if backend == "memory":
        pytest.skip("several processes need a shared database")
    start, steps = clock.now(), 30
    App(schema, db_url, clock=clock).close()  # create the database before the race
    ctx = multiprocessing.get_context("spawn")
    # A process that dies breaks the barrier for the other (BrokenBarrierError) instead of
    # leaving it waiting for ever.
    barrier = ctx.Barrier(2, timeout=120)
    procs = [ctx.Process(target=_worker_process, args=(db_url, start, steps, barrier)) for _ in range(2)]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(240)
        assert [p.exitcode for p in procs] == [0, 0], "a worker process failed or never finished (see its stderr)"
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(30)

    app = _shared_app(db_url, clock)
    try:
        ticks = app.run(lambda ctx: ctx.table("ticks").collect())
        by_cron: dict[str, list[float]] = {}
        for t in ticks:
            by_cron.setdefault(t.cron, []).append(t.at - start)
        # One run per occurrence: the minutely cron from the 2nd step, the intervals from the
        # 1st; "fast" (20 s) is due every step but never runs twice in one (no bursts).
        assert sorted(by_cron["every minute"]) == [i * MINUTE for i in range(1, steps)]
        assert sorted(by_cron["action"]) == [i * MINUTE for i in range(steps)]
        assert sorted(by_cron["fast"]) == [i * MINUTE for i in range(steps)]
        jobs = app.run(lambda ctx: ctx.table("_scheduled_functions").collect())
        assert len(jobs) == len(ticks) == 3 * steps - 1
        assert all(j.state.kind == "success" for j in jobs)
    finally:
        app.close()


def test_a_running_worker_fires_crons_registered_after_it_started(backend, db_url, clock):
    if backend == "memory":
        pytest.skip("the worker test uses a database several connections can share")
    from tests.pg import wait_for

    app = App(schema, db_url, clock=clock)  # no crons in code
    f = Fns(app, clock)
    start = clock.now()
    try:
        with app.worker():
            app.run(lambda ctx: ctx.crons.interval("poll", {"minutes": 1}, f.log, {"what": "poll"}))
            assert wait_for(lambda: events(app) == [start])
            # The worker sleeps until the next occurrence; moving the clock wakes it.
            clock.advance(MINUTE)
            assert wait_for(lambda: events(app) == [start, start + MINUTE])
    finally:
        app.close()
