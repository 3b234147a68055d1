"""An App for crash and concurrency tests: worker processes import it by name.

``ENTS_TEST_URL`` names the database; action side effects are appended (with fsync) to the
file named by ``ENTS_TEST_LOG``, outside the database, so tests can count how many times each
action really started.

Test-only crash hooks: ``ENTS_CRASH="<point>:<n>"`` makes the process SIGKILL itself the
n-th time it reaches ``<point>``:

* ``mutation``   inside a scheduled mutation, after its writes (before the batch commits)
* ``commit``     just before a COMMIT is sent (a claim, a batch of mutations, an outcome)
* ``postcommit`` just after a COMMIT returned (e.g. actions claimed but not started yet)
* ``action``     inside an action, after its start was logged
* ``cascade``    inside a cascading delete, between two cascade steps
* ``cron``       while a cron advances (occurrence job created, next run moved, not committed)

The points are reached in the worker process only (the test process never sets the
variable), so a test drives the kill deterministically from a seed.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from ents import App, RetryPolicy, cron_jobs, define_ent, define_ent_schema

schema = define_ent_schema(
    {
        # One row per applied scheduled mutation: a second run of a job would violate the key.
        "runs": define_ent({}).field("key", str, unique=True),
        "counters": define_ent({"n": int}).field("name", str, unique=True),
        "owners": define_ent({"name": str})
        .edges("pets", ref=True)
        .edge("job", to="_scheduled_functions", deletion="hard"),
        "pets": define_ent({"name": str}).edge("owner"),
        # For concurrency tests: unique emails, and what cancels/deletes saw before acting.
        "users": define_ent({"name": str}).field("email", str, unique=True),
        "observations": define_ent({"what": str, "job": str, "state_before": str}),
    }
)

TICK_SECONDS = 0.2

_counts: dict[str, int] = {}


def _crash_spec() -> tuple[str, int] | None:
    spec = os.environ.get("ENTS_CRASH")
    if not spec:
        return None
    point, _, n = spec.partition(":")
    return point, int(n or 1)


def maybe_die(point: str) -> None:
    """SIGKILL this process the n-th time ``point`` is reached (see the module doc)."""
    spec = _crash_spec()
    if spec is None or spec[0] != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] >= spec[1]:
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # pragma: no cover - the signal is on its way


def log_line(line: str) -> None:
    path = os.environ.get("ENTS_TEST_LOG")
    if not path:
        return
    with open(path, "a") as f:
        f.write(f"{line} {os.getpid()}\n")
        f.flush()
        os.fsync(f.fileno())


def _install_hooks() -> None:
    """Wrap a few library internals so that ``maybe_die`` runs at the named points."""
    spec = _crash_spec()
    if spec is None:
        return
    point = spec[0]
    if point in ("commit", "postcommit"):
        from ents.backends import sqlite as sqlite_backend

        classes: list[Any] = [sqlite_backend._SQLiteConnection]
        try:
            from ents.backends import postgres as pg_backend

            classes.append(pg_backend._PgConnection)
        except Exception:  # pragma: no cover - psycopg missing
            pass
        for cls in classes:
            original = cls.commit

            def commit(self: Any, _original: Any = original) -> None:
                maybe_die("commit")
                _original(self)
                maybe_die("postcommit")

            cls.commit = commit
    elif point == "cascade":
        from ents import deletion

        original_cascade = deletion._cascade

        def cascade(*args: Any, **kwargs: Any) -> Any:
            result = original_cascade(*args, **kwargs)
            maybe_die("cascade")
            return result

        deletion._cascade = cascade
    elif point == "cron":
        from ents import crons as crons_module

        original_fire = crons_module._fire

        def fire(*args: Any, **kwargs: Any) -> Any:
            created = original_fire(*args, **kwargs)
            if created:
                maybe_die("cron")
            return created

        crons_module._fire = fire


def _bump(ctx: Any, name: str, by: int = 1) -> None:
    row = ctx.table("counters").get("name", name)
    if row is None:
        ctx.table("counters").insert({"name": name, "n": by})
    else:
        row.patch({"n": row.n + by})


def make_app(url: str | None = None, *, with_cron: bool = True) -> App:
    crons = cron_jobs()
    if with_cron:
        crons.interval("tick", {"seconds": TICK_SECONDS}, "crash:tick")
    app = App(schema, url or os.environ["ENTS_TEST_URL"], crons=crons)

    @app.internal_mutation(name="crash:bump")
    def bump(ctx: Any, key: str, follow: bool = False) -> None:
        ctx.table("runs").insert({"key": key})
        _bump(ctx, "mutations")
        if follow:
            # Scheduled atomically with this run: exists if and only if the run committed.
            ctx.scheduler.run_after(0, "crash:follow", {"key": key})
        maybe_die("mutation")

    @app.internal_mutation(name="crash:follow")
    def follow(ctx: Any, key: str) -> None:
        ctx.table("runs").insert({"key": f"follow-{key}"})

    @app.internal_mutation(name="crash:tick")
    def tick(ctx: Any) -> None:
        _bump(ctx, "ticks")
        maybe_die("mutation")

    @app.internal_action(name="crash:act")
    def act(ctx: Any, key: str, seconds: float = 0.0) -> None:
        log_line(f"start {key}")
        maybe_die("action")
        time.sleep(seconds)
        ctx.run_mutation("crash:record", {"key": f"act-{key}"})
        log_line(f"end {key}")

    def retrying(ctx: Any, key: str) -> None:
        log_line(f"start {key}")
        maybe_die("action")
        ctx.run_mutation("crash:record", {"key": f"act-{key}"})
        log_line(f"end {key}")

    # Retried actions: at least once, at most max_attempts, also across worker crashes.
    app.internal_action(retrying, name="crash:retry_act3", retry=RetryPolicy(max_attempts=3, initial_backoff_ms=50))
    app.internal_action(retrying, name="crash:retry_act2", retry=RetryPolicy(max_attempts=2, initial_backoff_ms=50))

    @app.mutation(name="crash:schedule_retry")
    def schedule_retry(ctx: Any, key: str, max_attempts: int) -> str:
        return ctx.scheduler.run_after(0, f"crash:retry_act{max_attempts}", {"key": key})

    @app.internal_mutation(name="crash:record")
    def record(ctx: Any, key: str) -> None:
        ctx.table("runs").insert({"key": key})

    @app.internal_mutation(name="crash:never")
    def never(ctx: Any, key: str) -> None:
        # Linked to an owner with deletion="hard": must not run once the owner is deleted.
        ctx.table("runs").insert({"key": f"linked-{key}"})

    @app.internal_action(name="crash:never_action")
    def never_action(ctx: Any, key: str) -> None:
        log_line(f"start linked-{key}")
        ctx.run_mutation("crash:record", {"key": f"linked-{key}"})

    @app.internal_mutation(name="crash:delete_owner")
    def delete_owner(ctx: Any, name: str) -> None:
        owner = ctx.table("owners").filter(lambda q: q.eq(q.field("name"), name)).first()
        if owner is not None:
            owner.delete()
        _bump(ctx, "deletes")
        maybe_die("mutation")

    @app.mutation(name="crash:seed")
    def seed(
        ctx: Any,
        prefix: str,
        mutations: int = 0,
        actions: int = 0,
        action_seconds: float = 0.0,
        owners: int = 0,
        pets: int = 3,
        linked_delay_ms: float = 3_600_000,
    ) -> None:
        for i in range(mutations):
            ctx.scheduler.run_after(0, "crash:bump", {"key": f"{prefix}m{i}", "follow": i % 3 == 0})
        for i in range(actions):
            ctx.scheduler.run_after(0, "crash:act", {"key": f"{prefix}a{i}", "seconds": action_seconds})
        for i in range(owners):
            name = f"{prefix}o{i}"
            oid = ctx.table("owners").insert({"name": name})
            for j in range(pets):
                ctx.table("pets").insert({"name": f"{name}p{j}", "owner_id": oid})
            target = "crash:never" if i % 2 else "crash:never_action"
            job = ctx.scheduler.run_after(linked_delay_ms, target, {"key": name})
            ctx.table("owners").get_x(oid).patch({"job_id": job})
            ctx.scheduler.run_after(0, "crash:delete_owner", {"name": name})

    # -- for concurrency tests (called by driver processes) -----------------------------

    @app.mutation(name="crash:make_linked")
    def make_linked(ctx: Any, name: str, delay_ms: float, action: bool = False) -> str:
        oid = ctx.table("owners").insert({"name": name})
        ctx.table("pets").insert({"name": f"{name}p", "owner_id": oid})
        target = "crash:never_action" if action else "crash:never"
        job = ctx.scheduler.run_after(delay_ms, target, {"key": name})
        ctx.table("owners").get_x(oid).patch({"job_id": job})
        return oid

    @app.mutation(name="crash:schedule_one")
    def schedule_one(ctx: Any, key: str, delay_ms: float, action: bool = False) -> str:
        if action:
            return ctx.scheduler.run_after(delay_ms, "crash:act", {"key": key, "seconds": 0.05})
        return ctx.scheduler.run_after(delay_ms, "crash:bump", {"key": key})

    @app.mutation(name="crash:cancel")
    def cancel(ctx: Any, job: str) -> str:
        state = ctx.db.system.get(job)["state"]["kind"]
        if state in ("pending", "inProgress"):
            ctx.scheduler.cancel(job)
            ctx.table("observations").insert({"what": "cancel", "job": job, "state_before": state})
        return state

    @app.mutation(name="crash:delete_linked")
    def delete_linked(ctx: Any, owner: str) -> str | None:
        o = ctx.table("owners").get(owner)
        if o is None:
            return None
        job = o.job_id
        state = ctx.db.system.get(job)["state"]["kind"]
        o.delete()
        ctx.table("observations").insert({"what": "delete", "job": job, "state_before": state})
        return state

    @app.mutation(name="crash:add_user")
    def add_user(ctx: Any, email: str) -> str:
        return ctx.table("users").insert({"name": email, "email": email})

    @app.mutation(name="crash:rename_user")
    def rename_user(ctx: Any, email: str, new_email: str) -> None:
        u = ctx.table("users").get("email", email)
        if u is not None:
            u.patch({"email": new_email})

    return app


def _factory() -> App:
    _install_hooks()
    return make_app(with_cron=os.environ.get("ENTS_TEST_CRON", "1") == "1")


app = _factory if os.environ.get("ENTS_TEST_URL") else None
