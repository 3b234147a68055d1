"""``ctx.scheduler``: run_after, run_at and cancel, and the ``_scheduled_functions`` rules.

From a mutation, scheduling writes a ``pending`` row in the mutation's own transaction:
if the mutation fails nothing was scheduled, and a job due at once can only start after
the commit (no other transaction can see it before). From an action each call commits at
once and survives the action's failure.

Limits (as Convex): at most 1000 functions and 8 MB of arguments scheduled by one
function call, times within five years of now, non-negative delays; queries cannot be
scheduled. A job scheduled by an action that was canceled while running is created
``canceled``.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .errors import EntNotFoundError, InvalidIdError, SchedulerError
from .functions import FunctionDef
from .values import dumps, float_of, normalize, show

if TYPE_CHECKING:
    from .transaction import Transaction

JOBS = "_scheduled_functions"
MAX_JOBS_PER_CALL = 1000
MAX_ARGS_BYTES = 8 * 1024 * 1024
FIVE_YEARS_MS = 5 * 365 * 24 * 3600 * 1000
RETENTION_MS = 7 * 24 * 3600 * 1000
TRANSIENT_ACTION_ERROR = "Transient error while executing action"

_INSERT_COLS = ("name", "args", "scheduled_time", "completed_time", "state", "kind", "attempts", "cron")


def _as_float(value: int | float) -> float:
    # An int too large for a float is simply out of range: infinite here, refused by the
    # finiteness checks below with a SchedulerError.
    as_float = float_of(value)
    if as_float is None:
        return math.inf if value > 0 else -math.inf
    return as_float


def to_ms_delay(delay: Any) -> float:
    if isinstance(delay, timedelta):
        value = delay.total_seconds() * 1000
    elif isinstance(delay, (int, float)) and not isinstance(delay, bool):
        value = _as_float(delay)
    else:
        raise SchedulerError(f"run_after() takes a delay in milliseconds or a timedelta, got {type(delay).__name__} {show(delay)}")
    if math.isnan(value) or math.isinf(value):
        raise SchedulerError(f"run_after() delay must be a finite number of milliseconds, got {show(delay)}")
    if value < 0:
        raise SchedulerError(f"run_after() delay must be non-negative, got {show(delay)} ms")
    return value


def to_ms_time(ts: Any) -> float:
    if isinstance(ts, datetime):
        if ts.tzinfo is None or ts.utcoffset() is None:
            raise SchedulerError(
                "run_at() needs an aware datetime (e.g. datetime(..., tzinfo=timezone.utc)); a naive "
                "datetime has no defined instant"
            )
        return ts.timestamp() * 1000
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        value = _as_float(ts)
        if math.isnan(value) or math.isinf(value):
            raise SchedulerError(f"run_at() needs a finite timestamp in milliseconds, got {show(ts)}")
        return value
    raise SchedulerError(f"run_at() takes a timestamp in milliseconds or an aware datetime, got {type(ts).__name__} {show(ts)}")


def _check_window(ts: float, now: float, what: str) -> None:
    if ts > now + FIVE_YEARS_MS:
        raise SchedulerError(f"{what}: the time is more than five years in the future")
    if ts < now - FIVE_YEARS_MS:
        raise SchedulerError(f"{what}: the time is more than five years in the past")


def resolve_schedulable(tx: Transaction, fn: Any) -> FunctionDef:
    fdef = tx.app.functions.resolve(fn)
    if fdef.kind == "query":
        raise SchedulerError(
            f"Cannot schedule `{fdef.name}`: it is a query; only mutations and actions can be scheduled",
            function=fdef.name,
        )
    return fdef


def schedule(tx: Transaction, fdef: FunctionDef, args: Any, due: float, *, count: bool = True, cron: str | None = None) -> int:
    """Insert a pending job; returns its row key. Raises SchedulerError past the limits."""
    tx.require_write("schedule functions")
    stored = fdef.json_args(args)
    text = dumps(stored)
    size = len(text.encode("utf-8"))
    if count:
        if tx.scheduled_count + 1 > MAX_JOBS_PER_CALL:
            raise SchedulerError(
                f"Too many functions scheduled by one call of `{tx.function or 'this function'}`: the limit is {MAX_JOBS_PER_CALL}",
                function=tx.function,
            )
        if tx.scheduled_bytes + size > MAX_ARGS_BYTES:
            raise SchedulerError(
                f"Arguments of the functions scheduled by one call of `{tx.function or 'this function'}` exceed 8 MB "
                f"(this one is {size} bytes)",
                function=tx.function,
            )
    return _insert_job(tx, fdef.name, fdef.kind, text, due, size, count=count, cron=cron)


def _insert_job(tx: Transaction, name: str, kind: str, args_text: str, due: float, size: int, *, count: bool, cron: str | None) -> int:
    canceled = tx.origin_canceled is not None and tx.origin_canceled()
    state = "canceled" if canceled else "pending"
    rid = tx.insert_row(tx.rt(JOBS), _INSERT_COLS, (name, args_text, due, tx.now if canceled else None, state, kind, 0, cron))
    if rid is None:  # pragma: no cover - only a cron occurrence can conflict
        raise SchedulerError(f"Job for `{name}` at {due} already exists", function=name)
    if count:
        tx.scheduled_count += 1
        tx.scheduled_bytes += size
    if not canceled:
        tx.note_new_job(due)
        tx.app.backend.notify(tx.conn, "jobs")
    tx.touched()
    return rid


def follow_origin(tx: Transaction, job: int | None) -> None:
    """Make what ``tx`` schedules start canceled once ``job`` (the running action that
    ``tx`` is a step of) has been canceled; nothing when ``job`` is None."""
    if job is None:
        return
    q, p = tx.dialect.q, tx.dialect.param
    sql = f"SELECT {q('state')} FROM {q(JOBS)} WHERE {q('_rid')} = {p}"

    def canceled() -> bool:
        row = tx.fetchone(sql, (job,))
        return row is not None and row[0] == "canceled"

    tx.origin_canceled = canceled


def schedule_internal(tx: Transaction, name: str, args: dict[str, Any], due: float) -> int:
    """Schedule one of ents' own internal mutations (not counted against user limits)."""
    fdef = tx.app.functions.resolve(name)
    text = dumps(normalize(args))
    return _insert_job(tx, fdef.name, fdef.kind, text, due, 0, count=False, cron=None)


def decode_job_id(tx: Transaction, id: Any) -> int:
    try:
        return tx.app.codec.decode_for(JOBS, id, what="a scheduled function id")
    except InvalidIdError as exc:
        raise SchedulerError(exc.message, table=JOBS, id=exc.id) from None


def cancel(tx: Transaction, id: Any) -> None:
    """Cancel one job (see module doc); raises SchedulerError for a finished job."""
    tx.require_write("cancel scheduled functions")
    rid = decode_job_id(tx, id)
    d = tx.dialect
    q = d.q
    row = tx.fetchone(f"SELECT {q('state')} FROM {q(JOBS)} WHERE {q('_rid')} = {d.param}", (rid,))
    if row is None:
        raise EntNotFoundError(
            f"Cannot cancel `{id}`: no such scheduled function (finished jobs are purged after 7 days)",
            table=JOBS,
            id=str(id),
        )
    state = row[0]
    if state == "canceled":
        return
    if state in ("success", "failed"):
        raise SchedulerError(
            f'Cannot cancel scheduled function `{id}`: it already completed (state "{state}")',
            table=JOBS,
            id=str(id),
        )
    cancel_jobs(tx, [rid], quiet=True)


def cancel_jobs(tx: Transaction, rids: list[int], *, quiet: bool) -> int:
    """Cancel every pending or running job among ``rids``; finished ones are left alone."""
    d = tx.dialect
    q = d.q
    n = tx.run_in_chunks(
        f"UPDATE {q(JOBS)} SET {q('state')} = 'canceled', {q('completed_time')} = {d.param}",
        q("_rid"),
        rids,
        params=(tx.now,),
        suffix=f" AND {q('state')} IN ('pending', 'inProgress')",
    )
    tx.touched()
    return n


class Scheduler:
    """``ctx.scheduler`` inside a mutation: scheduling is part of the transaction."""

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    def run_after(self, delay: Any, fn: Any, args: dict[str, Any] | None = None) -> str:
        """Run ``fn(args)`` ``delay`` ms (or a timedelta) from now; returns the job id."""
        tx = self._tx
        tx.check_open("ctx.scheduler")
        ms = to_ms_delay(delay)
        fdef = resolve_schedulable(tx, fn)
        _check_window(tx.now + ms, tx.now, f"run_after() of `{fdef.name}`")
        rid = schedule(tx, fdef, args, tx.now + ms)
        return tx.rt(JOBS).encode_rid(rid)

    def run_at(self, timestamp: Any, fn: Any, args: dict[str, Any] | None = None) -> str:
        """Run ``fn(args)`` at ``timestamp`` (ms or aware datetime); a past time runs at once."""
        tx = self._tx
        tx.check_open("ctx.scheduler")
        ts = to_ms_time(timestamp)
        fdef = resolve_schedulable(tx, fn)
        _check_window(ts, tx.now, f"run_at() of `{fdef.name}`")
        rid = schedule(tx, fdef, args, ts)
        return tx.rt(JOBS).encode_rid(rid)

    def cancel(self, id: str) -> None:
        """Cancel a job: a pending one never runs; a running action finishes, but what it
        schedules from now on is canceled; a finished job raises SchedulerError."""
        self._tx.check_open("ctx.scheduler")
        cancel(self._tx, id)
