"""Cron jobs: recurring mutations and actions, defined in code or registered at run time.

::

    crons = cron_jobs()
    crons.interval("sync", {"minutes": 5}, sync_feeds)
    crons.daily("digest", {"hour_utc": 8, "minute_utc": 0}, send_digest, {"kind": "daily"})
    crons.cron("standup", "0 9 * * 1-5", remind, tz="Europe/Paris")
    app = App(schema, crons=crons)

Every cron is a row of the ``_cron_jobs`` system table (``ctx.db.system.query("_cron_jobs")``):
``name``, ``schedule`` (e.g. ``{"type": "daily", "hour_utc": 8, "minute_utc": 0}``), ``function``,
``args``, ``tz``, ``origin`` (``"static"`` for crons defined with :func:`cron_jobs`,
``"runtime"`` for crons registered with ``ctx.crons``), ``next_run`` (ms), ``current_job``
(the id of its pending or running job, if any) and ``last_runs``: the outcome of its last
ten runs, oldest first, each ``{"job_id", "scheduled_time", "completed_time", "state", "error"?}``
with ``state`` one of ``"success"``, ``"failed"``, ``"canceled"``.

Execution. An occurrence becomes an ordinary ``_scheduled_functions`` job, created in the
transaction that advances the cron's ``next_run``, so it then runs with the scheduler's
guarantees: a mutation exactly once, an action at most once. Its ``scheduled_time`` is the
occurrence it stands for, and ``(cron, scheduled_time)`` is unique: two workers, even in
several processes on one database, can never create the same occurrence twice.

* At most one run of a cron at a time: no occurrence is created while the cron's previous
  job is pending or in progress.
* No bursts: occurrences missed while a run overran or no worker was up collapse into one
  run, started as soon as possible (its ``scheduled_time`` is the first missed occurrence);
  the cron then keeps its schedule (the next run is the first occurrence after now).
* Reconciliation, by name, whenever scheduling starts (a worker starts, or a testing helper
  runs): crons added to :func:`cron_jobs` are created (an interval cron runs at once, a
  calendar cron at its next occurrence); a cron whose schedule or time zone changed restarts
  from now; a changed function or arguments apply from the next run; crons removed from the
  code stop (their pending job is canceled). Crons registered at run time are left alone,
  unless the code now defines a cron of the same name, which takes it over.

Time zones. Calendar schedules are in UTC unless ``tz="<IANA zone>"`` is given, in which
case they are wall-clock times in that zone (``{"hour": 9, "minute": 0}`` rather than
``hour_utc`` / ``minute_utc``). Across daylight-saving changes a wall-clock time maps to an
instant like RFC 5545 and JavaScript's Temporal ("compatible") do:

* a time that does not exist (clocks jump from 02:00 to 03:00) runs shifted forward by the
  length of the gap: 02:30 runs at 03:30 that day, once;
* a time that occurs twice (clocks go back from 03:00 to 02:00) runs once, at its first
  occurrence, so a daily 02:30 job still runs once per local day, unless the cron's hour
  field is ``*`` ("every 15 minutes", ``hourly``): such a cron is not tied to an hour of the
  day and runs at both, keeping its real-time rhythm through the change.

Errors. A cron definition is checked when it is made: bad names, duplicate names,
out-of-range fields, malformed cron strings or strings that never match (``"0 0 31 2 *"``),
non-positive intervals, unknown time zones and queries as targets raise
:class:`~ents.errors.SchedulerError`. A target given by name is resolved when scheduling
starts (or at once by ``ctx.crons``): an unknown one raises
:class:`~ents.errors.FunctionNotFoundError`, arguments that do not fit its signature a
:class:`~ents.errors.ValidationError`. Every message names the cron.
"""

from __future__ import annotations

import builtins
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from .errors import FunctionNotFoundError, SchedulerError, ValidationError
from .functions import FunctionDef
from .scheduler import JOBS, schedule
from .values import Doc, check_str, float_of, normalize, show, show_name

if TYPE_CHECKING:
    from .app import App
    from .transaction import Transaction

__all__ = ["CronJobs", "RuntimeCrons", "cron_jobs"]

log = logging.getLogger("ents.crons")

CRONS = "_cron_jobs"
RECENT_RUNS = 10
DAY_MS = 24 * 3600 * 1000
FIRE_BATCH = 100
DAYS_OF_WEEK = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_UNITS = {"seconds": 1, "minutes": 60, "hours": 3600}
_FIELDS = {
    "hourly": ("minute",),
    "daily": ("hour", "minute"),
    "weekly": ("day_of_week", "hour", "minute"),
    "monthly": ("day", "hour", "minute"),
}
_RANGES = {"minute": (0, 59), "hour": (0, 23), "day": (1, 31)}
_UTC_NAMES = ("UTC", "Etc/UTC")
_ACTIVE = ("pending", "inProgress")


# -- schedules ------------------------------------------------------------------------------


def _fail(name: str, message: str, function: str | None = None) -> SchedulerError:
    return SchedulerError(f'Cron "{show_name(name)}": {message}', function=function)


def _interval(name: str, spec: Any) -> dict[str, Any]:
    if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in _UNITS:
        raise _fail(name, f'an interval is one of {{"seconds": n}}, {{"minutes": n}} or {{"hours": n}}; got {show(spec)}')
    unit, n = next(iter(spec.items()))
    # float_of: math.isfinite() itself overflows on an integer beyond a float's range
    as_float = float_of(n) if isinstance(n, (int, float)) and not isinstance(n, bool) else None
    if as_float is None or not math.isfinite(as_float) or n <= 0:
        raise _fail(name, f"the interval must be a positive number of {unit}, got {show(n)}")
    seconds = n * _UNITS[unit]
    if isinstance(seconds, float) and seconds.is_integer():
        seconds = int(seconds)
    return {"type": "interval", "seconds": seconds}


def _calendar(kind: str, name: str, spec: Any, tz: str | None) -> dict[str, Any]:
    """The stored form of an hourly / daily / weekly / monthly schedule.

    Clock fields are ``hour_utc`` / ``minute_utc`` in UTC (``hour`` / ``minute`` are accepted
    too) and ``hour`` / ``minute`` with a time zone, where a ``_utc`` key would contradict it.
    """
    wanted = _FIELDS[kind]
    if not isinstance(spec, Mapping):
        raise _fail(name, f"{kind}() takes a dict with {_keys_hint(wanted, tz)}, got {show(spec)}")
    values: dict[str, Any] = {}
    for key, value in spec.items():
        base = key[:-4] if isinstance(key, str) and key in ("hour_utc", "minute_utc") else key
        if base not in wanted:
            raise _fail(name, f"unknown field {show(key)} for a {kind} schedule; expected {_keys_hint(wanted, tz)}")
        if base != key and tz is not None:
            raise _fail(name, f'"{key}" is a UTC time but the cron has tz="{tz}"; use "{base}" for wall-clock time in {tz}')
        if base in values:
            raise _fail(name, f'give "{base}" once (as "{base}" or "{base}_utc"), not both')
        values[base] = _field(name, base, value)
    missing = [f for f in wanted if f not in values]
    if missing:
        raise _fail(name, f"a {kind} schedule needs {_keys_hint(wanted, tz)}; missing {', '.join(missing)}")
    out: dict[str, Any] = {"type": kind}
    for f in wanted:
        out[f + "_utc" if f in ("hour", "minute") and tz is None else f] = values[f]
    return out


def _keys_hint(fields: tuple[str, ...], tz: str | None) -> str:
    return ", ".join(f'"{f}_utc"' if f in ("hour", "minute") and tz is None else f'"{f}"' for f in fields)


def _field(name: str, field: str, value: Any) -> Any:
    if field == "day_of_week":
        day = value.strip().lower() if isinstance(value, str) else None
        if day not in DAYS_OF_WEEK:
            raise _fail(name, f"day_of_week must be one of {', '.join(DAYS_OF_WEEK)}; got {show(value)}")
        return day
    lo, hi = _RANGES[field]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _fail(name, f"{field} must be an integer from {lo} to {hi}, got {show(value)}")
    return value


def _expression(sched: Mapping[str, Any]) -> str:
    """The cron expression of a stored calendar schedule."""
    kind = sched["type"]
    if kind == "cron":
        return str(sched["cron"])
    minute = sched.get("minute_utc", sched.get("minute"))
    hour = sched.get("hour_utc", sched.get("hour"))
    if kind == "hourly":
        return f"{minute} * * * *"
    if kind == "daily":
        return f"{minute} {hour} * * *"
    if kind == "weekly":
        return f"{minute} {hour} * * {DAYS_OF_WEEK.index(sched['day_of_week'])}"
    return f"{minute} {hour} {sched['day']} * *"


def _zone(name: str, tz: Any) -> tuple[str | None, tzinfo | None]:
    """``(stored name, zone)``; UTC is stored as no zone at all."""
    if tz is None:
        return None, None
    if isinstance(tz, ZoneInfo):
        tz = tz.key
    if not isinstance(tz, str) or not tz or not _storable(tz):
        raise _fail(name, f'tz must be an IANA time zone name such as "Europe/Paris", got {show(tz)}')
    if tz in _UTC_NAMES:
        return None, None
    try:
        return tz, ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: e.g. a name too long for a file
        raise _fail(name, f'unknown time zone "{tz}"; use an IANA name such as "Europe/Paris" or "America/New_York"') from None


class Plan:
    """A compiled schedule: when a cron first runs, and when it runs after a given time."""

    def first_run(self, now: float) -> float:
        raise NotImplementedError

    def next_after(self, due: float, now: float) -> float:
        """The next occurrence after ``now``, given that the one due at ``due`` was just run."""
        raise NotImplementedError


class IntervalPlan(Plan):
    """Every ``ms`` milliseconds, counted from the cron's first run."""

    def __init__(self, ms: float) -> None:
        self.ms = ms

    def first_run(self, now: float) -> float:
        return now

    def next_after(self, due: float, now: float) -> float:
        # Keep the rhythm that started at the first run; skip the slots already past.
        return due + (math.floor((now - due) / self.ms) + 1) * self.ms


class CronPlan(Plan):
    """A cron expression evaluated on wall-clock time in UTC or in an IANA zone.

    croniter only ever sees wall-clock times (written as UTC so it applies no rules of its
    own); they are mapped to instants here, which is where the DST rules of the module
    docstring live.
    """

    #: wall-clock candidates examined for one answer before giving up (never reached in practice)
    MAX_STEPS = 100_000

    def __init__(self, name: str, expression: Any, zone: tzinfo | None) -> None:
        if not isinstance(expression, str) or not _storable(expression):
            raise _fail(name, f'a cron expression is a string such as "0 9 * * 1-5", got {show(expression)}')
        text = " ".join(expression.split())
        fields = text.split(" ")
        if not (len(fields) == 5 or (len(fields) == 1 and text.startswith("@") and text != "@reboot")):
            raise _fail(
                name,
                f'"{expression}" is not a cron expression: it needs 5 fields, '
                f'"minute hour day-of-month month day-of-week" (UTC unless tz=...), found {len(fields)}',
            )
        self.name = name
        self.expression = text
        self.zone = zone
        self._hash_id = name.encode("utf-8")
        start = datetime(2000, 1, 1, tzinfo=UTC)
        try:
            it = croniter(text, start, hash_id=self._hash_id)
        except (CroniterError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise _fail(name, f'invalid cron expression "{text}": {exc}') from None
        try:
            it.get_next(datetime)
        except CroniterBadDateError:
            raise _fail(name, f'the cron expression "{text}" never matches any date') from None
        hours = it.expanded[1]
        # Not tied to an hour of the day: runs at both instants of a repeated wall-clock time.
        self._every_hour = hours == ["*"] or len(hours) == 24

    def first_run(self, now: float) -> float:
        return self.occurrence_after(now)

    def next_after(self, due: float, now: float) -> float:
        return self.occurrence_after(now)

    def occurrence_after(self, t: float) -> float:
        """The first instant (ms) strictly after ``t`` at which the cron is due."""
        if self.zone is None:
            return _ms(self._walls(t).get_next(datetime))
        # Instants map to wall-clock times by the zone's offset, which varies around DST
        # changes: start from the earliest wall time that could map after t, and stop once
        # no later wall time can map before the best instant found.
        lowest = min(self._offsets(t))
        walls = self._walls(t + lowest)
        best = math.inf
        reach = 0.0
        for _ in range(self.MAX_STEPS):
            wall = walls.get_next(datetime)
            wall_ms = _ms(wall)
            if wall_ms >= best + reach:
                return best
            for instant in self._instants(wall, wall_ms):
                if t < instant < best:
                    best = instant
                    reach = max(self._offsets(best))
        raise _fail(self.name, f'could not compute the next run of "{self.expression}"')  # pragma: no cover

    def _walls(self, start_ms: float) -> Any:
        return croniter(self.expression, datetime.fromtimestamp(start_ms / 1000, UTC), hash_id=self._hash_id)

    def _offsets(self, t: float) -> list[float]:
        # Zones change offset at most once in two days, so sampling a day apart sees every
        # offset in force from two days before t to two days after.
        return [self._offset(t + k * DAY_MS) for k in (-2, -1, 0, 1, 2)]

    def _offset(self, t: float) -> float:
        off = datetime.fromtimestamp(t / 1000, self.zone).utcoffset()
        return off.total_seconds() * 1000 if off is not None else 0.0

    def _instants(self, wall: datetime, wall_ms: float) -> tuple[float, ...]:
        naive = wall.replace(tzinfo=None)
        # PEP 495: fold=0 takes the offset in force before a transition. For a skipped time
        # that shifts it forward by the gap; for a repeated time it is the first occurrence.
        before = naive.replace(tzinfo=self.zone).utcoffset()
        after = naive.replace(tzinfo=self.zone, fold=1).utcoffset()
        assert before is not None and after is not None
        first = wall_ms - before.total_seconds() * 1000
        if after < before and self._every_hour:
            return (first, wall_ms - after.total_seconds() * 1000)
        return (first,)


def _ms(dt: datetime) -> float:
    return dt.timestamp() * 1000


def compile_schedule(name: str, sched: Mapping[str, Any], tz: str | None) -> Plan:
    """The :class:`Plan` of a stored schedule (``tz`` an IANA name or None for UTC)."""
    if sched.get("type") == "interval":
        return IntervalPlan(float(sched["seconds"]) * 1000)
    return CronPlan(name, _expression(sched), _zone(name, tz)[1])


def parse_schedule(name: str, spec: Any, tz: Any = None) -> tuple[dict[str, Any], str | None]:
    """Check a schedule as ``ctx.crons.register`` takes it; returns ``(stored form, tz)``.

    ``spec`` is a cron expression string, an interval (``{"minutes": 5}``), or a stored
    schedule such as ``{"type": "weekly", "day_of_week": "monday", "hour_utc": 9, "minute_utc": 0}``.
    """
    tz_name, _ = _zone(name, tz)
    if isinstance(spec, str):
        sched: dict[str, Any] = {"type": "cron", "cron": spec}
    elif isinstance(spec, Mapping) and "type" not in spec and set(spec) <= set(_UNITS):
        sched = {"type": "interval", **spec}
    elif isinstance(spec, Mapping) and "type" in spec:
        sched = dict(spec)
    else:
        raise _fail(
            name,
            'a schedule is a cron string ("0 9 * * 1-5"), an interval ({"minutes": 5}) or a dict with '
            f'"type" ("interval", "hourly", "daily", "weekly", "monthly" or "cron"); got {show(spec)}',
        )
    kind = sched.pop("type")
    if not isinstance(kind, str):  # e.g. a dict: unhashable, and never a schedule type
        raise _fail(name, f'unknown schedule type {show(kind)}; use "interval", "hourly", "daily", "weekly", "monthly" or "cron"')
    if kind == "interval":
        if tz_name is not None:
            raise _fail(name, f'an interval has no wall-clock time, so tz="{tz_name}" does not apply to it')
        return _interval(name, sched), None
    if kind in _FIELDS:
        return _calendar(kind, name, sched, tz_name), tz_name
    if kind == "cron":
        if set(sched) != {"cron"}:
            raise _fail(name, f'a "cron" schedule is {{"type": "cron", "cron": "m h dom mon dow"}}, got {show(spec)}')
        plan = CronPlan(name, sched["cron"], None)
        return {"type": "cron", "cron": plan.expression}, tz_name
    raise _fail(name, f'unknown schedule type {show(kind)}; use "interval", "hourly", "daily", "weekly", "monthly" or "cron"')


# -- defining crons ---------------------------------------------------------------------------


@dataclass
class CronDef:
    """One cron as defined: a checked schedule, a target (object or name) and arguments."""

    name: str
    schedule: dict[str, Any]
    tz: str | None
    fn: Any
    args: dict[str, Any]


class CronBuilder:
    """The schedule methods shared by :class:`CronJobs` and ``ctx.crons``.

    Each checks its schedule at once (SchedulerError naming the cron) and passes the
    definition on to ``_add``.
    """

    def interval(self, name: str, schedule: Mapping[str, float], fn: Any, args: dict[str, Any] | None = None) -> Any:
        """Run every ``{"seconds": n}``, ``{"minutes": n}`` or ``{"hours": n}``, the first time when
        the cron is created (or its interval changed)."""
        return self.register(name, {"type": "interval", **_as_mapping(name, schedule, "interval")}, fn, args)

    def hourly(self, name: str, schedule: Mapping[str, int], fn: Any, args: dict[str, Any] | None = None, *, tz: Any = None) -> Any:
        """Run every hour at ``{"minute_utc": m}`` (``{"minute": m}`` with ``tz``)."""
        return self.register(name, {"type": "hourly", **_as_mapping(name, schedule, "hourly")}, fn, args, tz=tz)

    def daily(self, name: str, schedule: Mapping[str, int], fn: Any, args: dict[str, Any] | None = None, *, tz: Any = None) -> Any:
        """Run every day at ``{"hour_utc": h, "minute_utc": m}`` (``hour`` / ``minute`` with ``tz``)."""
        return self.register(name, {"type": "daily", **_as_mapping(name, schedule, "daily")}, fn, args, tz=tz)

    def weekly(self, name: str, schedule: Mapping[str, Any], fn: Any, args: dict[str, Any] | None = None, *, tz: Any = None) -> Any:
        """Run every week at ``{"day_of_week": "monday", "hour_utc": h, "minute_utc": m}``."""
        return self.register(name, {"type": "weekly", **_as_mapping(name, schedule, "weekly")}, fn, args, tz=tz)

    def monthly(self, name: str, schedule: Mapping[str, int], fn: Any, args: dict[str, Any] | None = None, *, tz: Any = None) -> Any:
        """Run every month at ``{"day": d, "hour_utc": h, "minute_utc": m}``; like cron, months
        without day ``d`` (29 to 31) are skipped (``cron("...", "0 9 L * *", ...)`` runs on the last day)."""
        return self.register(name, {"type": "monthly", **_as_mapping(name, schedule, "monthly")}, fn, args, tz=tz)

    def cron(self, name: str, expression: str, fn: Any, args: dict[str, Any] | None = None, *, tz: Any = None) -> Any:
        """Run on a cron expression ``"minute hour day-of-month month day-of-week"`` (UTC unless ``tz``)."""
        return self.register(name, expression, fn, args, tz=tz)

    def register(self, name: str, schedule: Any, fn: Any, args: dict[str, Any] | None = None, *, tz: Any = None) -> Any:
        """Define cron ``name``; ``schedule`` is any form :func:`parse_schedule` takes."""
        _check_name(name)
        sched, tz_name = parse_schedule(name, schedule, tz)
        if isinstance(fn, FunctionDef) and fn.kind == "query":
            raise _query_target(name, fn.name)
        if args is not None and not isinstance(args, dict):
            raise _fail(name, f"arguments must be a dict, got {type(args).__name__} {show(args)}")
        return self._add(CronDef(name, sched, tz_name, fn, dict(args or {})))

    def _add(self, cron: CronDef) -> Any:
        raise NotImplementedError


def _as_mapping(name: str, schedule: Any, kind: str) -> Mapping[str, Any]:
    if not isinstance(schedule, Mapping):
        raise _fail(name, f"{kind}() takes its schedule as a dict, got {show(schedule)}")
    if "type" in schedule:
        raise _fail(name, f'{kind}() takes the schedule fields only, without "type"')
    return schedule


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name.strip() or not _storable(name):
        raise SchedulerError(f"A cron's name is a non-empty string of valid Unicode without NUL, got {show(name)}")


def _storable(text: str) -> bool:
    """Whether ``text`` can be stored and sent to the database (no lone surrogate, no NUL)."""
    try:
        check_str(text)
    except ValidationError:
        return False
    return True


def _query_target(name: str, function: str) -> SchedulerError:
    return _fail(name, f"`{function}` is a query; a cron runs a mutation or an action", function)


class CronJobs(CronBuilder):
    """The crons an App runs: ``App(schema, crons=cron_jobs())``.

    Names are unique. Crons may be added after the App is created; they take effect when
    scheduling starts (a worker, or the testing helpers), which reconciles the stored crons
    with these by name (see the module docstring).
    """

    def __init__(self) -> None:
        self._crons: dict[str, CronDef] = {}

    def _add(self, cron: CronDef) -> None:
        if cron.name in self._crons:
            raise _fail(cron.name, "defined twice; cron names must be unique")
        self._crons[cron.name] = cron

    def __iter__(self) -> Iterator[CronDef]:
        return iter(list(self._crons.values()))

    def __len__(self) -> int:
        return len(self._crons)

    def __contains__(self, name: object) -> bool:
        return name in self._crons

    def __repr__(self) -> str:
        return f"CronJobs({', '.join(self._crons)})"


def cron_jobs() -> CronJobs:
    """A new, empty set of crons (Convex's ``cronJobs()``)."""
    return CronJobs()


# -- the _cron_jobs table -----------------------------------------------------------------------


@dataclass
class Row:
    """A ``_cron_jobs`` row as stored (``current_job`` is the job's row key)."""

    rid: int
    name: str
    schedule: dict[str, Any]
    function: str
    args: Any
    tz: str | None
    origin: str
    next_run: float
    last_runs: list[Any]
    current_job: int | None

    def plan(self) -> Plan:
        return compile_schedule(self.name, self.schedule, self.tz)


_COLUMNS = ("name", "schedule", "function", "args", "tz", "origin", "next_run", "last_runs", "current_job")


def _rows(tx: Transaction, where: str = "", params: tuple[Any, ...] = (), *, lock: bool = False) -> list[Row]:
    rt = tx.rt(CRONS)
    suffix = f" {tx.dialect.skip_locked}" if lock and tx.dialect.skip_locked else ""
    found = tx.fetchall(f"SELECT {rt.select_list} FROM {rt.q_table}{where}{suffix}", params)
    out = []
    for r in found:
        # Plain dicts and lists (not Docs): they are compared, and passed to validators.
        get = {c: normalize(rt.decode(r, rt.col_index[c])) for c in _COLUMNS if c != "current_job"}
        out.append(Row(rid=int(r[0]), current_job=r[rt.col_index["current_job"]], **get))
    return out


def _by_name(tx: Transaction, name: str, *, lock: bool = False) -> Row | None:
    if not isinstance(name, str) or not _storable(name):
        return None  # no cron can have that name (and the driver could not send it)
    q = tx.dialect.q
    found = _rows(tx, f" WHERE {q('name')} = {tx.dialect.param}", (name,), lock=lock)
    return found[0] if found else None


def _db_values(tx: Transaction, values: dict[str, Any]) -> list[Any]:
    rt = tx.rt(CRONS)
    # current_job holds the raw row key of a job; every other column goes through the runtime.
    return [v if c == "current_job" else rt.to_db(rt.table.fields[c], v) for c, v in values.items()]


def _insert(tx: Transaction, values: dict[str, Any]) -> int | None:
    rid = tx.insert_row(tx.rt(CRONS), tuple(values), _db_values(tx, values))
    tx.touched()
    return rid


def _update(tx: Transaction, rid: int, values: dict[str, Any]) -> None:
    rt = tx.rt(CRONS)
    tx.execute(rt.update_sql(tuple(values)), (*_db_values(tx, values), rid))
    tx.touched()


def _delete(tx: Transaction, row: Row) -> None:
    q, p = tx.dialect.q, tx.dialect.param
    if row.current_job is not None:
        # A removed cron stops: its occurrence that has not started never will.
        tx.execute(
            f"UPDATE {q(JOBS)} SET {q('state')} = 'canceled', {q('completed_time')} = {p} "
            f"WHERE {q('_rid')} = {p} AND {q('state')} = 'pending'",
            (tx.now, row.current_job),
        )
    tx.execute(f"DELETE FROM {q(CRONS)} WHERE {q('_rid')} = {p}", (row.rid,))
    tx.touched()


def _job(tx: Transaction, rid: int) -> tuple[str, float, float | None, str | None] | None:
    q, p = tx.dialect.q, tx.dialect.param
    row = tx.fetchone(
        f"SELECT {q('state')}, {q('scheduled_time')}, {q('completed_time')}, {q('error')} FROM {q(JOBS)} WHERE {q('_rid')} = {p}",
        (rid,),
    )
    return (row[0], float(row[1]), row[2], row[3]) if row else None


def _with_run(runs: list[Any], entry: dict[str, Any]) -> list[Any]:
    return [*list(runs or []), entry][-RECENT_RUNS:]


def _run_entry(tx: Transaction, job_rid: int | None, scheduled: float, state: str, error: str | None, completed: float | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "job_id": tx.rt(JOBS).encode_rid(job_rid) if job_rid is not None else None,
        "scheduled_time": scheduled,
        "completed_time": completed if completed is not None else tx.now,
        "state": state,
    }
    if error is not None:
        entry["error"] = error
    return entry


def _wake(tx: Transaction, due: float) -> None:
    tx.note_new_job(due)
    tx.app.backend.notify(tx.conn, "jobs")


# -- resolving targets ------------------------------------------------------------------------


def _target(app: App, name: str, fn: Any) -> FunctionDef:
    try:
        fdef = app.functions.resolve(fn)
    except FunctionNotFoundError as exc:
        raise FunctionNotFoundError(f'Cron "{name}": {exc.message}', function=exc.function) from None
    if fdef.kind == "query":
        raise _query_target(name, fdef.name)
    return fdef


def _stored_args(fdef: FunctionDef, name: str, args: Any) -> Any:
    try:
        return fdef.json_args(args)
    except ValidationError as exc:
        raise ValidationError(f'Cron "{name}": {exc.message}', function=fdef.name, field=exc.field) from None


@dataclass
class _Wanted:
    schedule: dict[str, Any]
    tz: str | None
    function: str
    args: Any


def _resolve(app: App, cron: CronDef) -> _Wanted:
    fdef = _target(app, cron.name, cron.fn)
    return _Wanted(cron.schedule, cron.tz, fdef.name, _stored_args(fdef, cron.name, cron.args))


def _apply(tx: Transaction, row: Row | None, name: str, wanted: _Wanted, origin: str) -> int | None:
    """Create or update cron ``name``; a new or rescheduled cron starts from now.

    Returns the cron's row key, or None when there was nothing to change.
    """
    if row is None:
        next_run = compile_schedule(name, wanted.schedule, wanted.tz).first_run(tx.now)
        rid = _insert(
            tx,
            {
                "name": name,
                "schedule": wanted.schedule,
                "function": wanted.function,
                "args": wanted.args,
                "tz": wanted.tz,
                "origin": origin,
                "next_run": next_run,
                "last_runs": [],
                "current_job": None,
            },
        )
        _wake(tx, next_run)
        return rid
    changes: dict[str, Any] = {}
    if row.schedule != wanted.schedule or row.tz != wanted.tz:
        # The running job (if any) is kept: at most one run at a time holds across changes.
        changes.update(schedule=wanted.schedule, tz=wanted.tz)
        changes["next_run"] = compile_schedule(name, wanted.schedule, wanted.tz).first_run(tx.now)
    if row.function != wanted.function or row.args != wanted.args:
        changes.update(function=wanted.function, args=wanted.args)
    if row.origin != origin:
        changes["origin"] = origin
    if not changes:
        return None
    _update(tx, row.rid, changes)
    if "next_run" in changes:
        _wake(tx, changes["next_run"])
    return row.rid


# -- reconciliation ---------------------------------------------------------------------------


def reconcile(app: App) -> None:
    """Bring the stored crons in line with ``app.crons`` (see the module docstring).

    Called whenever scheduling starts. Raises for a cron whose target is unknown, a query,
    or does not take its arguments, before anything is changed.
    """
    crons = app.crons
    if crons is not None and not isinstance(crons, CronJobs):
        raise SchedulerError(f"App(crons=...) takes the result of cron_jobs(), got {type(crons).__name__}")
    wanted = {c.name: _resolve(app, c) for c in (crons or [])}

    def body(tx: Transaction, apply: bool) -> bool:
        changed = False
        rows = {r.name: r for r in _rows(tx)}
        for gone in rows.values():
            if gone.origin == "static" and gone.name not in wanted:
                changed = True
                if apply:
                    log.info("cron %r was removed from the code; it stops", gone.name)
                    _delete(tx, gone)
        for name, want in wanted.items():
            row = rows.get(name)
            if apply:
                if row is not None and row.origin != "static":
                    log.warning("cron %r registered at run time is now defined in code; the code's definition wins", name)
                changed = _apply(tx, row, name, want, "static") is not None or changed
            else:
                changed = changed or row is None or _differs(row, want)
        return changed

    # Look first without the write lock: usually nothing changed since the last start.
    if app._transact(lambda tx: body(tx, False), write=False, function="crons"):
        app._transact(lambda tx: body(tx, True), write=True, function="crons")


def _differs(row: Row, want: _Wanted) -> bool:
    return (row.schedule, row.tz, row.function, row.args, row.origin) != (want.schedule, want.tz, want.function, want.args, "static")


# -- firing -----------------------------------------------------------------------------------


def _due_sql(tx: Transaction, what: str) -> str:
    """Crons that may fire (no pending or running job), as ``SELECT <what> ...``."""
    q = tx.dialect.q
    return (
        f"SELECT {what} FROM {q(CRONS)} c LEFT JOIN {q(JOBS)} j ON j.{q('_rid')} = c.{q('current_job')} "
        f"WHERE (j.{q('_rid')} IS NULL OR j.{q('state')} NOT IN ('pending', 'inProgress'))"
    )


def next_cron_due(app: App) -> float | None:
    """When the next cron occurrence falls due (ms), ignoring crons whose run is not over."""
    q = app.backend.dialect.q

    def body(tx: Transaction) -> float | None:
        row = tx.fetchone(_due_sql(tx, f"MIN(c.{q('next_run')})"))
        return float(row[0]) if row and row[0] is not None else None

    return app._transact(body, write=False, function="crons")  # type: ignore[no-any-return]


def fire_due(app: App) -> int:
    """Create the job of every cron occurrence due now; returns how many were created."""
    d = app.backend.dialect
    q, p = d.q, d.param

    def find(tx: Transaction) -> list[int]:
        by_next_run = tx.dialect.order_term(f"c.{q('next_run')}", False)
        sql = _due_sql(tx, f"c.{q('_rid')}") + f" AND c.{q('next_run')} <= {p} ORDER BY {by_next_run} LIMIT {FIRE_BATCH}"
        return [int(r[0]) for r in tx.fetchall(sql, (tx.now,))]

    # A read first: the common case (nothing due) takes no write lock.
    if not app._transact(find, write=False, function="crons"):
        return 0

    def body(tx: Transaction) -> int:
        created = 0
        for rid in find(tx):
            found = _rows(tx, f" WHERE {q('_rid')} = {p}", (rid,), lock=True)
            if found and _fire(tx, found[0]):
                created += 1
        return created

    return app._transact(body, write=True, function="crons")  # type: ignore[no-any-return]


def _fire(tx: Transaction, row: Row) -> bool:
    """Create the job of ``row``'s due occurrence and advance its schedule; True if created.

    Runs in a write transaction that re-read the row, so another worker that fired it
    first is seen here (and on PostgreSQL the row is locked, or skipped).
    """
    if row.next_run > tx.now:
        return False
    last_runs = row.last_runs
    if row.current_job is not None:
        job = _job(tx, row.current_job)
        if job is not None and job[0] in _ACTIVE:
            return False
        if job is not None:
            # Finished without telling us (canceled from outside): record it now.
            last_runs = _with_run(last_runs, _run_entry(tx, row.current_job, job[1], job[0], job[3], job[2]))
    due = row.next_run
    try:
        plan = row.plan()
        next_run = plan.next_after(due, tx.now)
    except SchedulerError as exc:  # pragma: no cover - stored schedules were checked when made
        log.error("cron %r has a schedule that no longer compiles: %s", row.name, exc)
        return False
    q, p = tx.dialect.q, tx.dialect.param
    taken = tx.fetchone(
        f"SELECT {q('_rid')} FROM {q(JOBS)} WHERE {q('cron')} = {p} AND {q('scheduled_time')} = {p}", (row.name, due)
    )
    job_rid: int | None = None
    if taken is not None:
        # This occurrence already has its job (a cron removed and added again within one ms).
        job_rid = int(taken[0])
    else:
        try:
            fdef = _target(tx.app, row.name, row.function)
            with tx.savepoint():
                job_rid = schedule(tx, fdef, row.args, due, count=False, cron=row.name)
        except (FunctionNotFoundError, SchedulerError, ValidationError) as exc:
            # A runtime cron whose function was removed or changed since it was registered:
            # the occurrence fails (visible in last_runs) and the cron keeps its schedule.
            from .worker import error_message

            log.warning("cron %r could not run `%s`: %s", row.name, row.function, exc)
            last_runs = _with_run(last_runs, _run_entry(tx, None, due, "failed", error_message(exc)))
    _update(tx, row.rid, {"next_run": next_run, "current_job": job_rid, "last_runs": last_runs})
    _wake(tx, next_run)
    if job_rid is not None and taken is None:
        if tx.now - due > 1000:
            log.info("cron %r runs late: its occurrence due at %.0f starts at %.0f", row.name, due, tx.now)
        return True
    return False


def record_runs(tx: Transaction, runs: list[tuple[str | None, int, str, str | None]]) -> None:
    """Record finished cron jobs ``(cron, job, state, error)`` in the transaction that finished them."""
    for name, job_rid, state, error in runs:
        if name is None:
            continue
        row = _by_name(tx, name)
        if row is None:
            continue  # the cron was removed while its last job ran
        job = _job(tx, job_rid)
        scheduled = job[1] if job is not None else tx.now
        changes: dict[str, Any] = {"last_runs": _with_run(row.last_runs, _run_entry(tx, job_rid, scheduled, state, error))}
        if row.current_job == job_rid:
            changes["current_job"] = None
            if row.next_run <= tx.now:
                _wake(tx, row.next_run)  # it waited for this run to end
        _update(tx, row.rid, changes)


# -- ctx.crons --------------------------------------------------------------------------------


class RuntimeCrons(CronBuilder):
    """``ctx.crons`` in a mutation: crons created, changed and deleted at run time.

    They are stored in ``_cron_jobs`` as part of the mutation's transaction (a mutation that
    fails registers nothing), survive restarts, and are never removed by reconciliation::

        ctx.crons.register("report", "0 9 * * 1-5", send_report, {"team": tid}, tz="Europe/Paris")
        ctx.crons.daily("digest", {"hour": 8, "minute": 0}, send_digest, tz="America/New_York")
        ctx.crons.interval("poll", {"minutes": 5}, poll)
        ctx.crons.delete("report")

    ``register(name, schedule, fn, args=None, *, tz=None)`` takes a cron string, an interval
    (``{"minutes": 5}``) or a schedule dict with ``"type"`` as stored in ``_cron_jobs``; the
    ``interval`` / ``hourly`` / ``daily`` / ``weekly`` / ``monthly`` / ``cron`` methods take the
    same arguments as :class:`CronJobs`. Registering an existing name replaces its definition:
    a new schedule or time zone restarts it from now, a new function or arguments apply from
    its next run. Each returns the cron's ``_cron_jobs`` id. Names defined with
    :func:`cron_jobs` belong to the code and cannot be registered or deleted here.
    """

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    def _add(self, cron: CronDef) -> str:
        tx = self._tx
        tx.require_write("register crons")
        wanted = _resolve(tx.app, cron)
        row = _by_name(tx, cron.name)
        if row is not None and row.origin == "static":
            raise _static(cron.name, "replaced")
        _apply(tx, row, cron.name, wanted, "runtime")
        stored = _by_name(tx, cron.name)
        assert stored is not None
        return tx.rt(CRONS).encode_rid(stored.rid)

    def delete(self, name: str) -> bool:
        """Delete a cron registered at run time (its pending job is canceled); False if none."""
        tx = self._tx
        tx.require_write("delete crons")
        row = _by_name(tx, name)
        if row is None:
            return False
        if row.origin == "static":
            raise _static(name, "deleted")
        _delete(tx, row)
        return True

    def get(self, name: str) -> dict[str, Any] | None:
        """The ``_cron_jobs`` document of cron ``name``, or None."""
        row = _by_name(self._tx, name)
        return self._doc(row.rid) if row is not None else None

    def list(self) -> builtins.list[dict[str, Any]]:
        """Every cron's ``_cron_jobs`` document, by name."""
        return [self._doc(r.rid) for r in sorted(_rows(self._tx), key=lambda r: r.name)]

    def _doc(self, rid: int) -> dict[str, Any]:
        rt = self._tx.rt(CRONS)
        return Doc(rt.doc(self._tx.fetchone(rt.sql_get, (rid,))))  # type: ignore[arg-type]


def _static(name: str, what: str) -> SchedulerError:
    return _fail(name, f"is defined in code with cron_jobs() and cannot be {what} through ctx.crons; change the code instead")

