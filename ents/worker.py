"""Running scheduled functions: the job executor, the worker and the testing helpers.

Scheduled mutations run exactly once: a batch of due mutation jobs is claimed, each job
runs in its own savepoint, and its writes and its ``success`` (or ``failed``) mark commit
in the same transaction as the claim. If the process dies, the transaction never
committed and the jobs are still pending; if two workers race, the database lets only
one claim each job (SQLite serializes writers, PostgreSQL skips locked rows).

Scheduled actions run at most once: ``inProgress`` (with a lease owned by the worker) is
committed before the handler starts. The worker renews its leases; a job whose lease
expired (its worker died) is marked ``failed`` with "Transient error while executing
action" and is never run again, unless its action has a retry policy and attempts left.
"""

from __future__ import annotations

import logging
import math
import os
import random
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .context import MutationCtx
from .errors import EntsError, FunctionNotFoundError, SchedulerError
from .functions import FunctionDef, NonRetryableError
from .scheduler import JOBS, RETENTION_MS, TRANSIENT_ACTION_ERROR
from .storage import sweep_strays
from .values import dumps, loads
from .writer import ConflictRace

if TYPE_CHECKING:
    from .app import App
    from .transaction import Transaction

log = logging.getLogger("ents.worker")

PURGE_BATCH = 1000
#: mutation jobs a worker runs per transaction (one commit for all of them), unless the
#: batch's time budget runs out first: cheap jobs share a commit, slow ones do not wait long
DEFAULT_BATCH = 500


def _json(value: Any) -> Any:
    """A JSON column's value: text on SQLite, already decoded on PostgreSQL."""
    if isinstance(value, (str, bytes, bytearray)):
        return loads(bytes(value) if isinstance(value, bytearray) else value)
    return value


def error_message(exc: BaseException) -> str:
    if isinstance(exc, EntsError):
        return f"{type(exc).__name__}: {exc.message}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class _JobFailed(Exception):
    """A job failed in a batch run without savepoints: roll back and run the batch again."""

    def __init__(self, rid: int, error: str) -> None:
        super().__init__(error)
        self.rid = rid
        self.error = error


class Executor:
    """Claims and runs jobs; shared by workers and the testing helpers."""

    def __init__(self, app: App, owner: str, lease_ms: float = 30_000) -> None:
        self.app = app
        self.owner = owner
        self.lease_ms = lease_ms
        # Action jobs this executor claimed and has not finished. Only their leases are
        # renewed: a job under our name that is not in here was claimed by a transaction
        # whose outcome we never learned (e.g. the connection dropped during COMMIT) or
        # could not be finished; it must expire and be recovered, not be kept alive.
        self._held: set[int] = set()
        self._held_lock = threading.Lock()
        d = app.backend.dialect
        q = d.q
        p = d.param
        jobs = q(JOBS)
        lock = f" {d.skip_locked}" if d.skip_locked else ""
        # Written with the dialect's NULL ordering, which is how the indexes are built:
        # otherwise PostgreSQL cannot walk the index and sorts every pending job per claim.
        keys = ("scheduled_time", "_rid") if d.rid_order else ("scheduled_time", "_creation_time", "_rid")
        order = "ORDER BY " + ", ".join(d.order_term(q(c), False) for c in keys)
        self._claim = (
            f"SELECT {q('_rid')}, {q('name')}, {q('args')}, {q('cron')}, {q('attempts')}, {q('attempt_log')} FROM {jobs} "
            f"WHERE {q('state')} = 'pending' AND {q('kind')} = {p} AND {q('scheduled_time')} <= {p} "
            f"{order} LIMIT {p}{lock}"
        )
        # A read first when claiming actions: the common case (none due) takes no write lock.
        self._action_due = (
            f"SELECT 1 FROM {jobs} WHERE {q('state')} = 'pending' AND {q('kind')} = 'action' "
            f"AND {q('scheduled_time')} <= {p} LIMIT 1"
        )
        self._q = q
        self._p = p
        # A cap on mutation jobs per batch, set by conflicts (0: none, the caller's limit):
        # halved when a batch is retried after a conflict, doubled by each batch without one.
        self._batch = 0

    # -- mutations --------------------------------------------------------------------

    def run_due_mutations(self, limit: int = 100, budget_s: float = 0.05) -> int:
        """Run due mutation jobs in one transaction (group commit); returns how many ran.

        Jobs first run without savepoints (each costs statements, and on PostgreSQL a
        round trip). When one fails, the whole batch rolls back and runs again with that
        job recorded as failed: where savepoints are cheap (SQLite) the second run gives
        every job its own savepoint, so further failures roll back alone; elsewhere it
        stays optimistic. Mutations are transactions, so running one again after a
        rollback is safe (it is how conflicts are retried too).
        """
        app = self.app
        q, p = self._q, self._p
        jobs = q(JOBS)
        finished: list[tuple[str | None, int, str, str | None]] = []
        known_failures: dict[int, str] = {}
        savepoints = False
        start = size = min(limit, self._batch or limit)
        tries = 0  # runs of body in the current _transact call

        def body(tx: Transaction) -> int:
            nonlocal size, tries
            finished.clear()
            tries += 1
            if tries > 1:
                # _transact retries this batch after a conflict with another transaction (a
                # serialization failure, a busy database): retry a smaller one, so that
                # workers contending for the same rows waste less work.
                size = max(1, size // 2)
            rows = tx.fetchall(self._claim, ("mutation", tx.now, size))
            if not rows:
                return 0
            started = time.monotonic()
            succeeded: list[int] = []
            for n, (rid, name, args_text, cron, _attempts, _log) in enumerate(rows):
                if n and time.monotonic() - started > budget_s:
                    break
                if rid in known_failures:
                    error: str | None = known_failures[rid]
                else:
                    error = self._run_mutation_job(tx, rid, name, args_text, savepoints)
                if error is None:
                    succeeded.append(rid)
                else:
                    tx.execute(
                        f"UPDATE {jobs} SET {q('state')} = 'failed', {q('error')} = {p}, {q('completed_time')} = {p} "
                        f"WHERE {q('_rid')} = {p}",
                        (error, tx.now, rid),
                    )
                finished.append((cron, rid, "success" if error is None else "failed", error))
            if succeeded:
                tx.run_in_chunks(
                    f"UPDATE {jobs} SET {q('state')} = 'success', {q('completed_time')} = {p}",
                    q("_rid"),
                    succeeded,
                    params=(tx.now,),
                )
            self._crons_done(tx, finished)
            return len(finished)

        while True:
            tries = 0
            try:
                done: int = app._transact(body, write=True, function="scheduler")
            except _JobFailed as failed:  # a failing job, not a conflict: rerun, same size
                known_failures[failed.rid] = failed.error
                savepoints = app.backend.dialect.cheap_savepoints
                continue
            if size < start:  # retried after conflicts (in this call or a rerun): keep the cap
                self._batch = size
            elif self._batch:
                self._batch = 0 if self._batch * 2 >= limit else self._batch * 2
            return done

    def _run_mutation_job(self, tx: Transaction, rid: int, name: str, args_text: Any, savepoint: bool = True) -> str | None:
        """Run one job's mutation inside the batch transaction; its error message, or None.

        Without a savepoint a failure raises _JobFailed, which aborts the batch.
        """
        tx.scheduled_count = 0
        tx.scheduled_bytes = 0
        tx.function = name
        tx.identity = None
        dialect = tx.dialect
        try:
            if savepoint:
                with tx.savepoint():
                    self._call_mutation(tx, name, args_text)
            else:
                self._call_mutation(tx, name, args_text)
        except ConflictRace:
            raise
        except Exception as exc:
            if dialect.classify(exc) in ("transient", "connection"):
                raise
            log.info("scheduled mutation %s (%s) failed: %s", name, rid, exc)
            if not savepoint:
                raise _JobFailed(rid, error_message(exc)) from exc
            return error_message(exc)
        return None

    def _call_mutation(self, tx: Transaction, name: str, args_text: Any) -> None:
        fdef = self._resolve(name, "mutation")
        kwargs = fdef.validate_args(_json(args_text))
        result = fdef.handler(MutationCtx(tx), **kwargs)
        fdef.validate_result(result)

    def _resolve(self, name: str, kind: str) -> FunctionDef:
        fdef = self.app.functions.resolve(name)
        if fdef.kind != kind:
            raise FunctionNotFoundError(f"Scheduled function `{name}` is now a {fdef.kind}, not a {kind}", function=name)
        return fdef

    def _crons_done(self, tx: Transaction, finished: list[tuple[str | None, int, str, str | None]]) -> None:
        runs = [f for f in finished if f[0] is not None]
        if runs:
            from .crons import record_runs

            record_runs(tx, runs)

    # -- actions ----------------------------------------------------------------------

    def claim_due_actions(self, limit: int) -> list[tuple[Any, ...]]:
        """Mark up to ``limit`` due action jobs ``inProgress`` under our lease (committed)."""
        if limit <= 0:
            return []
        q, p = self._q, self._p
        probe = self._action_due
        if self.app._transact(lambda tx: tx.fetchone(probe, (tx.now,)), write=False, function="scheduler") is None:
            return []

        def body(tx: Transaction) -> list[tuple[Any, ...]]:
            rows = tx.fetchall(self._claim, ("action", tx.now, limit))
            if rows:
                tx.run_in_chunks(
                    f"UPDATE {q(JOBS)} SET {q('state')} = 'inProgress', {q('lease_owner')} = {p}, "
                    f"{q('lease_expires')} = {p}, {q('attempts')} = {q('attempts')} + 1, {q('started_time')} = {p}",
                    q("_rid"),
                    [r[0] for r in rows],
                    params=(self.owner, tx.now + self.lease_ms, tx.now),
                )
            return [tuple(r) for r in rows]

        jobs: list[tuple[Any, ...]] = self.app._transact(body, write=True, function="scheduler")
        with self._held_lock:
            self._held.update(int(j[0]) for j in jobs)
        return jobs

    def run_action_job(self, job: tuple[Any, ...]) -> None:
        """Run a claimed action job to completion and record its outcome."""
        try:
            self._run_action_job(job)
        finally:
            with self._held_lock:
                self._held.discard(int(job[0]))

    def _run_action_job(self, job: tuple[Any, ...]) -> None:
        rid, name, args_text, cron, attempts, attempt_log = job
        attempt = int(attempts or 0) + 1
        started = self.app.clock.now()
        fdef: FunctionDef | None = None
        try:
            fdef = self._resolve(name, "action")
            kwargs = fdef.validate_args(_json(args_text))
            self.app._run_action_handler(fdef, kwargs, identity=None, job=rid)
        except BaseException as exc:  # noqa: BLE001 - a job's failure is recorded, not raised
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            message = error_message(exc)
            log.info("scheduled action %s (%s) failed: %s", name, rid, message)
            retry = fdef.retry if fdef is not None else None
            if retry is not None and attempt < retry.max_attempts and not isinstance(exc, NonRetryableError):
                self._retry_later(rid, cron, attempt, attempt_log, message, started, retry.delay_ms(attempt, random.random()), fdef)
            else:
                self._finish_action(rid, cron, "failed", message, attempt, attempt_log, started, fdef)
            return
        self._finish_action(rid, cron, "success", None, attempt, attempt_log, started, fdef)

    def _log_entry(self, attempt: int, started: float | None, error: str | None, now: float) -> dict[str, Any]:
        entry: dict[str, Any] = {"attempt": attempt}
        if started is not None:  # None: claimed by an older version of ents
            entry["started_time"] = float(started)
        entry["finished_time"] = now
        if error is not None:
            entry["error"] = error
        return entry

    def _finish_action(self, rid: int, cron: str | None, state: str, error: str | None, attempt: int, attempt_log: Any, started: float, fdef: FunctionDef | None) -> None:
        q, p = self._q, self._p

        def body(tx: Transaction) -> None:
            log_text = None
            if fdef is not None and fdef.retry is not None:
                entries = list(_json(attempt_log)) if attempt_log else []
                entries.append(self._log_entry(attempt, started, error, tx.now))
                log_text = dumps(entries)
            cur = tx.execute(
                f"UPDATE {q(JOBS)} SET {q('state')} = CASE WHEN {q('state')} = 'canceled' THEN 'canceled' ELSE {p} END, "
                f"{q('error')} = CASE WHEN {q('state')} = 'canceled' THEN NULL ELSE {p} END, "
                f"{q('completed_time')} = CASE WHEN {q('state')} = 'canceled' THEN {q('completed_time')} ELSE {p} END, "
                f"{q('lease_owner')} = NULL, {q('lease_expires')} = NULL, "
                f"{q('attempt_log')} = COALESCE({self.app.backend.dialect.json_param}, {q('attempt_log')}) "
                f"WHERE {q('_rid')} = {p} AND {q('lease_owner')} = {p}",
                (state, error, tx.now, log_text, rid, self.owner),
            )
            if cur.rowcount == 0:
                log.warning("action job %s finished after its lease was lost; outcome %s not recorded", rid, state)
                return
            if cron is not None:
                row = tx.fetchone(f"SELECT {q('state')} FROM {q(JOBS)} WHERE {q('_rid')} = {p}", (rid,))
                self._crons_done(tx, [(cron, rid, row[0] if row else state, error)])

        self.app._transact(body, write=True, function="scheduler")

    def _retry_later(
        self, rid: int, cron: str | None, attempt: int, attempt_log: Any, error: str, started: float, delay_ms: float, fdef: FunctionDef | None
    ) -> None:
        q, p = self._q, self._p

        def body(tx: Transaction) -> bool:
            entries = list(_json(attempt_log)) if attempt_log else []
            entries.append(self._log_entry(attempt, started, error, tx.now))
            cur = tx.execute(
                f"UPDATE {q(JOBS)} SET {q('state')} = 'pending', {q('scheduled_time')} = {p}, "
                f"{q('lease_owner')} = NULL, {q('lease_expires')} = NULL, {q('attempt_log')} = {self.app.backend.dialect.json_param} "
                f"WHERE {q('_rid')} = {p} AND {q('lease_owner')} = {p} AND {q('state')} = 'inProgress'",
                (tx.now + delay_ms, dumps(entries), rid, self.owner),
            )
            if cur.rowcount:
                tx.note_new_job(tx.now + delay_ms)
                self.app.backend.notify(tx.conn, "jobs")
            return bool(cur.rowcount)

        if not self.app._transact(body, write=True, function="scheduler"):
            # Canceled while this attempt ran (or the lease was lost): no retry. Record the
            # attempt and release the lease as for a final outcome; a canceled job stays
            # canceled, and a lost lease is left to whoever took the job over.
            self._finish_action(rid, cron, "failed", error, attempt, attempt_log, started, fdef)

    def renew_leases(self) -> None:
        """Extend the leases of the action jobs this executor is running (and only those)."""
        q, p = self._q, self._p
        with self._held_lock:
            held = sorted(self._held)
        if not held:
            return
        self.app._transact(
            lambda tx: tx.run_in_chunks(
                f"UPDATE {q(JOBS)} SET {q('lease_expires')} = {p}",
                q("_rid"),
                held,
                where=f"{q('lease_owner')} = {p} AND {q('state')} = 'inProgress'",
                params=(tx.now + self.lease_ms, self.owner),
            ),
            write=True,
            function="scheduler",
        )

    # -- housekeeping -----------------------------------------------------------------

    def recover_abandoned(self) -> int:
        """Fail (or retry, with a retry policy) actions whose worker died; returns how many."""
        q, p = self._q, self._p
        app = self.app

        def body(tx: Transaction) -> int:
            rows = tx.fetchall(
                f"SELECT {q('_rid')}, {q('name')}, {q('lease_owner')}, {q('lease_expires')}, {q('attempts')}, "
                f"{q('attempt_log')}, {q('cron')}, {q('started_time')} FROM {q(JOBS)} WHERE {q('state')} = 'inProgress'"
            )
            n = 0
            finished: list[tuple[str | None, int, str, str | None]] = []
            with self._held_lock:
                held = set(self._held)
            for rid, name, owner, expires, attempts, attempt_log, cron, started in rows:
                if owner == self.owner:
                    # Ours but not running here (its claim's outcome was lost): it is
                    # abandoned once its lease, no longer renewed, runs out.
                    if rid in held or not (expires is None or expires < tx.now):
                        continue
                elif not (expires is None or expires < tx.now or _owner_dead(owner)):
                    continue
                retry = None
                try:
                    retry = app.functions.resolve(name).retry
                except FunctionNotFoundError:
                    pass
                entries = list(_json(attempt_log)) if attempt_log else []
                if retry is not None:
                    entries.append(self._log_entry(int(attempts or 1), started, TRANSIENT_ACTION_ERROR, tx.now))
                if retry is not None and int(attempts or 1) < retry.max_attempts:
                    due = tx.now + retry.delay_ms(int(attempts or 1), random.random())
                    tx.execute(
                        f"UPDATE {q(JOBS)} SET {q('state')} = 'pending', {q('scheduled_time')} = {p}, {q('lease_owner')} = NULL, "
                        f"{q('lease_expires')} = NULL, {q('attempt_log')} = {tx.dialect.json_param} WHERE {q('_rid')} = {p} AND {q('state')} = 'inProgress'",
                        (due, dumps(entries), rid),
                    )
                    tx.note_new_job(due)
                    app.backend.notify(tx.conn, "jobs")  # other processes' workers too
                else:
                    tx.execute(
                        f"UPDATE {q(JOBS)} SET {q('state')} = 'failed', {q('error')} = {p}, {q('completed_time')} = {p}, "
                        f"{q('lease_owner')} = NULL, {q('lease_expires')} = NULL, "
                        f"{q('attempt_log')} = COALESCE({tx.dialect.json_param}, {q('attempt_log')}) "
                        f"WHERE {q('_rid')} = {p} AND {q('state')} = 'inProgress'",
                        (TRANSIENT_ACTION_ERROR, tx.now, dumps(entries) if retry is not None else None, rid),
                    )
                    finished.append((cron, rid, "failed", TRANSIENT_ACTION_ERROR))
                n += 1
            self._crons_done(tx, finished)
            if n:
                log.warning("recovered %d action job(s) abandoned by dead workers", n)
            return n

        return app._transact(body, write=True, function="scheduler")  # type: ignore[no-any-return]

    def purge(self) -> int:
        """Delete jobs finished more than 7 days ago (in batches); returns how many."""
        q, p = self._q, self._p
        total = 0
        while True:
            def body(tx: Transaction) -> int:
                rids = [
                    r[0]
                    for r in tx.fetchall(
                        f"SELECT {q('_rid')} FROM {q(JOBS)} WHERE {q('completed_time')} IS NOT NULL AND {q('completed_time')} < {p} "
                        f"ORDER BY {self.app.backend.dialect.order_term(q('completed_time'), False)} LIMIT {PURGE_BATCH}",
                        (tx.now - RETENTION_MS,),
                    )
                ]
                if rids:
                    tx.run_in_chunks(f"DELETE FROM {q(JOBS)}", q("_rid"), rids)
                return len(rids)

            n = self.app._transact(body, write=True, function="scheduler")
            total += n
            if n < PURGE_BATCH:
                return total

    def next_due(self, kind: str | None = None) -> float | None:
        """Earliest due time of a pending job (of ``kind`` if given)."""
        q, p = self._q, self._p
        sql = f"SELECT MIN({q('scheduled_time')}) FROM {q(JOBS)} WHERE {q('state')} = 'pending'"
        params: tuple[Any, ...] = ()
        if kind is not None:
            sql += f" AND {q('kind')} = {p}"
            params = (kind,)
        row = self.app._transact(lambda tx: tx.fetchone(sql, params), write=False, function="scheduler")
        return float(row[0]) if row and row[0] is not None else None

    def next_lease_expiry(self) -> float | None:
        """When the first lease held by another worker expires (None: no such lease)."""
        expiries = [e for _, e in self.lease_holders() if e is not None]
        return min(expiries) if expiries else None

    def lease_holders(self) -> list[tuple[str, float | None]]:
        """Other workers holding action leases, each with its earliest lease expiry."""
        q, p = self._q, self._p
        rows = self.app._transact(
            lambda tx: tx.fetchall(
                f"SELECT {q('lease_owner')}, MIN({q('lease_expires')}) FROM {q(JOBS)} "
                f"WHERE {q('state')} = 'inProgress' AND {q('lease_owner')} <> {p} GROUP BY {q('lease_owner')}",
                (self.owner,),
            ),
            write=False,
            function="scheduler",
        )
        return [(str(o), float(e) if e is not None else None) for o, e in rows]


def _owner_dead(owner: str | None) -> bool:
    """Whether a lease owner on this machine is a process that no longer exists."""
    if not owner:
        return True
    pid = _local_pid(owner)
    return pid is not None and _pid_dead(pid)


def _local_pid(owner: str) -> int | None:
    """The process id of a lease owner (``host:pid:tag``) on this machine, other than us."""
    parts = owner.split(":")
    if len(parts) < 3 or parts[0] != socket.gethostname():
        return None
    try:
        pid = int(parts[1])
    except ValueError:
        return None
    return pid if pid > 0 and pid != os.getpid() else None


def _pid_dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


# -- testing helpers ---------------------------------------------------------------------


def _crons_fire(app: App) -> int:
    # Always asked: crons registered at run time (ctx.crons, maybe by another process)
    # must fire even when the App defines none. Costs one indexed read when none are due.
    from .crons import fire_due

    return fire_due(app)


def _reconcile(app: App) -> None:
    from .crons import reconcile

    reconcile(app)


def finish_in_progress(app: App, max_rounds: int = 10_000) -> int:
    """Run everything due now (jobs, cron runs, and what they make due now), inline."""
    ex = Executor(app, owner=f"inline:{os.getpid()}:{uuid.uuid4().hex[:6]}")
    _reconcile(app)
    ex.recover_abandoned()
    total = 0
    for _ in range(max_rounds):
        n = _crons_fire(app)
        # No time budget: what runs in which transaction must not depend on the machine's speed.
        n += ex.run_due_mutations(limit=100, budget_s=math.inf)
        # One action per claim: a claim commits the job as inProgress, and a job claimed
        # ahead of its turn would end failed, never run, if this process died first.
        for _ in range(100):
            actions = ex.claim_due_actions(1)
            if not actions:
                break
            ex.run_action_job(actions[0])
            n += 1
        if n == 0:
            ex.purge()
            return total
        total += n
    raise SchedulerError(
        f"finish_in_progress_scheduled_functions() ran {max_rounds} rounds and jobs are still due now; "
        "a function probably reschedules itself with no delay"
    )


def finish_all(app: App, max_iterations: int = 100) -> int:
    """Advance the (fake) clock from due time to due time until nothing is pending."""
    from .clock import ManualClock

    clock = app.clock
    if not isinstance(clock, ManualClock):
        raise SchedulerError(
            "finish_all_scheduled_functions() moves time forward and needs a FakeClock: "
            "App(schema, url, clock=FakeClock())"
        )
    ex = Executor(app, owner=f"inline:{os.getpid()}")
    total = 0
    for _ in range(max_iterations):
        total += finish_in_progress(app)
        nxt = ex.next_due()
        if nxt is None:
            return total
        if nxt > clock.now():
            clock.set(nxt)
    raise SchedulerError(
        f"finish_all_scheduled_functions() gave up after {max_iterations} iterations with functions still "
        "pending; a function probably keeps rescheduling itself"
    )


class _DeathWatch:
    """Calls ``on_death`` the moment a watched process (a worker on this machine that holds
    action leases) exits, so that its actions are recovered at once, not at the next
    housekeeping.

    On Linux each process is watched through a pidfd, which becomes readable when the
    process ends: a thread sleeps in ``poll()`` and costs nothing until then. Where pidfds
    are missing, the watched processes are checked once a second instead.
    """

    def __init__(self, on_death: Callable[[], None]) -> None:
        self._on_death = on_death
        self._lock = threading.Lock()
        self._fds: dict[int, int | None] = {}  # pid -> its pidfd (None: checked by polling)
        self._closing: list[int] = []  # pidfds to close, by the thread, once poll() returned
        # Without poll() (Windows) nothing is watched: housekeeping finds dead workers.
        self._stopped = not hasattr(select, "poll")
        if self._stopped:
            return
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._run, name="ents-death-watch", daemon=True)
        self._thread.start()

    def _poke(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:  # the thread has wake-ups pending already
            pass

    def watch(self, pids: set[int]) -> None:
        """Watch exactly ``pids`` from now on."""
        dead = False
        with self._lock:
            if self._stopped or pids == self._fds.keys():
                return
            for pid in [p for p in self._fds if p not in pids]:
                old = self._fds.pop(pid)
                if old is not None:
                    self._closing.append(old)
            for pid in pids - self._fds.keys():
                fd: int | None = None
                try:
                    fd = os.pidfd_open(pid)  # type: ignore[attr-defined,unused-ignore]
                except ProcessLookupError:
                    dead = True
                    continue
                except (AttributeError, OSError):  # no pidfds here: poll this one
                    fd = None
                self._fds[pid] = fd
        self._poke()
        if dead:
            self._on_death()

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # pragma: no cover - dead workers are still found by housekeeping
            log.exception("watching worker processes failed; dead workers are found at housekeeping")

    def _loop(self) -> None:
        poller = select.poll()
        registered: set[int] = set()
        poller.register(self._wake_r, select.POLLIN)
        while True:
            with self._lock:
                if self._stopped:
                    break
                for fd in self._closing:
                    if fd in registered:
                        poller.unregister(fd)
                        registered.discard(fd)
                    os.close(fd)
                self._closing.clear()
                by_fd = {fd: pid for pid, fd in self._fds.items() if fd is not None}
                polled = [pid for pid, fd in self._fds.items() if fd is None]
            for fd in by_fd.keys() - registered:
                poller.register(fd, select.POLLIN)
                registered.add(fd)
            events = poller.poll(1000 if polled else None)
            died = [by_fd[fd] for fd, _ in events if fd in by_fd]
            died += [pid for pid in polled if _pid_dead(pid)]
            if any(fd == self._wake_r for fd, _ in events):
                os.read(self._wake_r, 4096)
            if died:
                with self._lock:
                    for pid in died:
                        gone = self._fds.pop(pid, None)
                        if gone is not None:
                            self._closing.append(gone)
                self._on_death()
        for fd in registered:
            poller.unregister(fd)
        with self._lock:
            for fd in [*self._closing, *(f for f in self._fds.values() if f is not None)]:
                os.close(fd)
            self._closing.clear()
            self._fds.clear()

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._poke()
        self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)


# -- the worker --------------------------------------------------------------------------


class Worker:
    """Runs due jobs and crons in the background of an App.

    ``run()`` blocks until ``stop()``; ``start()`` runs it in a thread. Mutations run in
    batches (group commit); actions run concurrently up to ``concurrency``.
    """

    def __init__(
        self,
        app: App,
        *,
        concurrency: int = 8,
        batch_size: int = DEFAULT_BATCH,
        lease_ms: float = 30_000,
        poll_interval: float = 0.05,
        housekeeping_interval: float = 10.0,
        storage_sweep_interval: float = 3600.0,
        name: str | None = None,
    ) -> None:
        if concurrency < 1 or batch_size < 1:
            raise EntsError("Worker concurrency and batch_size must be at least 1")
        self.app = app
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.lease_ms = lease_ms
        self.poll_interval = poll_interval
        self.housekeeping_interval = housekeeping_interval
        #: seconds between sweeps of stray blob files (see ents.storage.sweep_strays); the
        #: first runs at the first housekeeping after start
        self.storage_sweep_interval = storage_sweep_interval
        self.owner = name or new_owner()
        self.executor = Executor(app, self.owner, lease_ms)
        self._cond = threading.Condition()
        self._stopping = False
        self._woken = False
        self._wake_at: float | None = None
        self._running: set[Future[None]] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        # Set when a worker process on this machine that held leases died: its actions are
        # recovered before the next step (see _DeathWatch).
        self._recover_now = False
        # Set while the loop sleeps waiting for work (tests wait for it before they act).
        self._sleeping = threading.Event()
        self._done = threading.Event()
        self._done.set()  # not running yet: stop() has nothing to wait for
        self.jobs_run = 0

    # -- control ----------------------------------------------------------------------

    def start(self) -> Worker:
        """Run in a background thread; returns self."""
        if self._thread is not None:
            raise EntsError("This worker was already started")
        self._thread = threading.Thread(target=self.run, name=f"ents-worker-{self.owner}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking jobs, let running ones finish, then return."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        elif self._thread is None:
            self._done.wait(timeout)

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def wake(self, due: float | None = None) -> None:
        with self._cond:
            if due is None or self._wake_at is None or due <= self._wake_at:
                self._woken = True
                self._cond.notify_all()

    # -- loop -------------------------------------------------------------------------

    def run(self) -> None:
        """Run until :meth:`stop` is called."""
        app = self.app
        self._deaths = _DeathWatch(self._on_death)
        self._done.clear()
        remove_wake = app._on_wake(self.wake)
        stop_watch = app.backend.watch(lambda: self.wake(None), self.poll_interval)
        unsubscribe = app.clock.subscribe(lambda: self.wake(None))
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="ents-action")
        log.info("worker %s started on %s (concurrency %d)", self.owner, app.backend.describe(), self.concurrency)
        sweeper: threading.Thread | None = None
        try:
            _reconcile(app)
            self.executor.recover_abandoned()
            last_housekeeping = time.monotonic()
            last_renew = time.monotonic()
            last_sweep = -math.inf
            while True:
                with self._cond:
                    if self._stopping:
                        break
                    self._woken = False
                if self._recover_now:
                    self._recover_now = False
                    self._safe(self.executor.recover_abandoned)
                did = self._step()
                now_mono = time.monotonic()
                if self._running and now_mono - last_renew > self.lease_ms / 3000:
                    self._safe(self.executor.renew_leases)
                    last_renew = now_mono
                if now_mono - last_housekeeping > self.housekeeping_interval:
                    self._safe(self.executor.recover_abandoned)
                    self._safe(self._lease_expiry)  # also watches workers that came up since
                    self._safe(self.executor.purge)
                    if now_mono - last_sweep > self.storage_sweep_interval and not (sweeper and sweeper.is_alive()):
                        # A directory walk: beside the loop, so that due jobs do not wait for it.
                        sweeper = threading.Thread(
                            target=self._safe,
                            args=(lambda: sweep_strays(app, stop=lambda: self._stopping),),
                            name=f"ents-sweep-{self.owner}",
                            daemon=True,
                        )
                        sweeper.start()
                        last_sweep = now_mono
                    last_housekeeping = now_mono
                if did:
                    continue
                self._idle()
        finally:
            log.info("worker %s stopping; waiting for %d running action(s)", self.owner, len(self._running))
            self._pool.shutdown(wait=True)
            if sweeper is not None:
                sweeper.join()  # it stops between files once _stopping is set
            remove_wake()
            stop_watch()
            unsubscribe()
            self._deaths.stop()
            self._done.set()
            log.info("worker %s stopped after %d job(s)", self.owner, self.jobs_run)

    def _on_death(self) -> None:
        self._recover_now = True
        self.wake(None)

    def _lease_expiry(self) -> float | None:
        """The earliest expiry of another worker's lease; watches the processes on this
        machine that hold leases, and has the dead ones' actions recovered now."""
        holders = self.executor.lease_holders()
        pids: set[int] = set()
        for owner, _ in holders:
            pid = _local_pid(owner)
            if pid is not None:
                pids.add(pid)
        self._deaths.watch(pids)
        expiries = [e for _, e in holders if e is not None]
        return min(expiries) if expiries else None

    def _safe(self, fn: Any) -> Any:
        try:
            return fn()
        except Exception:
            log.exception("worker housekeeping failed")
            return None

    def _step(self) -> int:
        did = 0
        try:
            did += _crons_fire(self.app)
            did += self.executor.run_due_mutations(limit=self.batch_size)
            free = self.concurrency - len(self._running)
            if free > 0:
                for job in self.executor.claim_due_actions(free):
                    self._submit(job)
                    did += 1
        except Exception:
            log.exception("worker step failed; retrying shortly")
            time.sleep(0.5)
        self.jobs_run += did
        return did

    def _submit(self, job: tuple[Any, ...]) -> None:
        assert self._pool is not None
        fut = self._pool.submit(self.executor.run_action_job, job)
        with self._cond:
            self._running.add(fut)

        def done(f: Future[None]) -> None:
            with self._cond:
                self._running.discard(f)
                self._woken = True
                self._cond.notify_all()
            exc = f.exception()
            if exc is not None:  # pragma: no cover - run_action_job records failures itself
                log.error("action job crashed: %s", exc)

        fut.add_done_callback(done)

    def _idle(self) -> None:
        """Sleep until the next job or cron is due, a lease needs renewing, or a wake-up."""
        app = self.app
        candidates = []
        full = self.concurrency - len(self._running) <= 0
        # With every action slot busy, only mutations can start; a finishing action wakes us.
        nxt = self._safe(lambda: self.executor.next_due("mutation" if full else None))
        if nxt is not None:
            candidates.append(nxt)
        from .crons import next_cron_due

        cron_next = self._safe(lambda: next_cron_due(app))
        if cron_next is not None:
            candidates.append(cron_next)
        expiry = self._safe(self._lease_expiry)
        if expiry is not None:
            candidates.append(expiry + 1)
        now = app.clock.now()
        timeout = self.housekeeping_interval
        if self._running:
            timeout = min(timeout, self.lease_ms / 3000)
        if candidates and app.clock.is_real:
            timeout = min(timeout, max(0.0, (min(candidates) - now) / 1000))
        elif candidates and min(candidates) <= now:
            timeout = 0
        with self._cond:
            self._wake_at = min(candidates) if candidates else None
            if not self._woken and not self._stopping and not self._recover_now and timeout > 0:
                self._sleeping.set()
                self._cond.wait(timeout)
                self._sleeping.clear()
            self._wake_at = None
