"""Worker processes for the PostgreSQL drain benchmark (``bench.scheduler_pg``).

Every contender's worker is a separate OS process that imports its library, connects,
prints ``ready`` on stdout and then blocks on stdin until the driver writes ``go``
(so that interpreter start-up and imports are outside the timed region, alike for all):

* ents: the real command line, ``python -m ents worker bench.pg_workers:ents_worker_app
  --batch-size B``; :func:`ents_worker_app` is the ``MODULE:APP`` factory that holds the
  barrier. Stopped by the driver with SIGTERM (the CLI's graceful stop) once drained.
* raw psycopg: ``python -m bench.pg_workers raw``: claim ONE job with
  ``SELECT ... FOR UPDATE SKIP LOCKED``, run it (bump the counter), mark it done, COMMIT;
  exits when no job is left.
* Procrastinate: ``python -m bench.pg_workers procrastinate --concurrency C``: an async
  task that bumps the counter, ``app.run_worker(wait=False)`` (exits once caught up).

The database URL (with its ``search_path``) comes from ``$BENCH_PG_URL``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

URL_ENV = "BENCH_PG_URL"
PER_MUTATION = 1000


def barrier() -> None:
    """Tell the driver we are connected, then wait for it to say go."""
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    line = sys.stdin.readline()
    if line.strip() != "go":
        raise SystemExit(f"pg_workers: expected 'go' from the driver, got {line!r}")


# -- ents ----------------------------------------------------------------------------------


def make_ents_app(url: str) -> Any:
    """The benchmark's App: a ``counters`` ent, ``bench.bump`` and ``bench.enqueue``."""
    from ents import App, define_ent, define_ent_schema

    schema = define_ent_schema({"counters": define_ent({"name": str, "value": int})})
    app = App(schema, url)

    @app.internal_mutation(name="bench.bump")
    def bump(ctx: Any, counter: str) -> None:
        c = ctx.table("counters").get_x(counter)
        c.patch({"value": c.value + 1})

    @app.internal_mutation(name="bench.enqueue")
    def enqueue(ctx: Any, counter: str, n: int) -> None:
        for _ in range(n):
            ctx.scheduler.run_after(0, bump, {"counter": counter})

    @app.internal_mutation(name="bench.enqueue_each")
    def enqueue_each(ctx: Any, counters: list[str]) -> None:
        for c in counters:
            ctx.scheduler.run_after(0, bump, {"counter": c})

    app.bench = {"bump": bump, "enqueue": enqueue, "enqueue_each": enqueue_each}  # type: ignore[attr-defined]
    return app


def ents_worker_app() -> Any:
    """``MODULE:APP`` factory for ``python -m ents worker``: connect, then wait for go."""
    app = make_ents_app(os.environ[URL_ENV])
    barrier()
    return app


# -- what-if experiments (bench.profile_pg --try ...): patched in this process only ------------

EXPERIMENTS = {
    "claim-order": "claim ORDER BY ... ASC NULLS FIRST, matching the pending_by_kind index (no sort of every pending job)",
    "lease-claim": "mutation jobs are claimed (leased) by a short READ COMMITTED statement, then run SERIALIZABLE "
    "touching their own job rows only by primary key (no range read of the job table inside the batch); "
    "a prototype: no time budget, and recovery of expired mutation leases is not implemented. Measured with 4 "
    "workers: serialization failures remain (btree predicate locks are per page, and neighbouring batches share "
    "primary-key leaf pages), no throughput gain over claim-order alone",
}


def apply_experiments(names: list[str]) -> None:
    """Monkeypatch ents in this process to measure what a suggested change would buy."""
    for name in names:
        if name not in EXPERIMENTS:
            raise SystemExit(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    if "claim-order" in names:
        from ents.worker import Executor

        orig_init = Executor.__init__

        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            orig_init(self, *args, **kwargs)
            if self.app.backend.dialect.name == "postgresql":
                q = self._q
                old = f"ORDER BY {q('scheduled_time')}, {q('_creation_time')}, {q('_rid')}"
                assert old in self._claim, self._claim
                self._claim = self._claim.replace(
                    old, f"ORDER BY {q('scheduled_time')} NULLS FIRST, {q('_creation_time')} NULLS FIRST, {q('_rid')} NULLS FIRST"
                )

        Executor.__init__ = init  # type: ignore[method-assign]
    if "lease-claim" in names:
        _lease_claim()


def _lease_claim() -> None:
    from ents.scheduler import JOBS
    from ents.worker import Executor, _JobFailed

    def run_due_mutations(self: Any, limit: int = 100, budget_s: float = 0.05) -> int:
        app = self.app
        q, p = self._q, self._p
        jobs = q(JOBS)
        backend = app.backend
        if backend.dialect.name != "postgresql":
            raise SystemExit("the lease-claim experiment is for PostgreSQL")
        now = app.clock.now()
        conn = backend.connect()
        try:  # autocommit: this statement is its own READ COMMITTED transaction
            rows = conn.execute(
                f"UPDATE {jobs} SET {q('state')} = 'inProgress', {q('lease_owner')} = {p}, {q('lease_expires')} = {p} "
                f"WHERE {q('_rid')} IN (SELECT {q('_rid')} FROM {jobs} WHERE {q('state')} = 'pending' AND {q('kind')} = 'mutation' "
                f"AND {q('scheduled_time')} <= {p} ORDER BY {q('scheduled_time')} NULLS FIRST, {q('_creation_time')} NULLS FIRST, "
                f"{q('_rid')} NULLS FIRST LIMIT {p} FOR UPDATE SKIP LOCKED) "
                f"RETURNING {q('_rid')}, {q('name')}, {q('args')}, {q('cron')}",
                (self.owner, now + self.lease_ms, now, limit),
            ).fetchall()
        finally:
            backend.release(conn)
        if not rows:
            return 0
        rows.sort()
        known_failures: dict[int, str] = {}

        def body(tx: Any) -> int:
            succeeded: list[int] = []
            for rid, name, args_text, cron in rows:
                if cron is not None:
                    raise SystemExit("the lease-claim prototype does not handle cron jobs")
                error = known_failures.get(rid) or self._run_mutation_job(tx, rid, name, args_text, False)
                if error is None:
                    succeeded.append(rid)
                else:
                    tx.execute(
                        f"UPDATE {jobs} SET {q('state')} = 'failed', {q('error')} = {p}, {q('completed_time')} = {p}, "
                        f"{q('lease_owner')} = NULL, {q('lease_expires')} = NULL WHERE {q('_rid')} = {p} AND {q('lease_owner')} = {p}",
                        (error, tx.now, rid, self.owner),
                    )
            if succeeded:
                cur = tx.execute(
                    f"UPDATE {jobs} SET {q('state')} = 'success', {q('completed_time')} = {p}, {q('lease_owner')} = NULL, "
                    f"{q('lease_expires')} = NULL WHERE {q('_rid')} = ANY({p}) AND {q('lease_owner')} = {p}",
                    (tx.now, succeeded, self.owner),
                )
                if cur.rowcount != len(succeeded):
                    raise RuntimeError(f"lease lost: marked {cur.rowcount} of {len(succeeded)} jobs")
            return len(rows)

        while True:
            try:
                return app._transact(body, write=True, function="scheduler")  # type: ignore[no-any-return]
            except _JobFailed as failed:
                known_failures[failed.rid] = failed.error

    Executor.run_due_mutations = run_due_mutations  # type: ignore[method-assign]


def ents_cli(argv: list[str]) -> int:
    """``python -m bench.pg_workers ents-cli [--try X] -- <ents CLI arguments>``."""
    tries: list[str] = []
    while argv and argv[0] == "--try":
        tries.append(argv[1])
        argv = argv[2:]
    if argv and argv[0] == "--":
        argv = argv[1:]
    apply_experiments(tries)
    from ents.cli import main as cli_main

    return cli_main(argv)


# -- raw psycopg ------------------------------------------------------------------------------

RAW_SCHEMA = """
CREATE TABLE jobs (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    args JSONB NOT NULL,
    state TEXT NOT NULL,
    scheduled_time DOUBLE PRECISION NOT NULL,
    completed_time DOUBLE PRECISION,
    error TEXT
);
CREATE INDEX jobs_pending ON jobs (scheduled_time, id) WHERE state = 'pending';
CREATE TABLE counters (id INTEGER PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO counters (id, value) VALUES (1, 0);
"""

RAW_CLAIM = (
    "SELECT id, name, args FROM jobs WHERE state = 'pending' AND scheduled_time <= %s "
    "ORDER BY scheduled_time, id LIMIT 1 FOR UPDATE SKIP LOCKED"
)


def now_ms() -> float:
    return time.time() * 1000


def raw_setup(url: str, n: int) -> None:
    """Create the raw loop's tables and N pending jobs (1000 per transaction)."""
    import psycopg
    from psycopg.types.json import Jsonb

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(RAW_SCHEMA)
        done = 0
        while done < n:
            m = min(PER_MUTATION, n - done)
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO jobs (name, args, state, scheduled_time) VALUES ('bump', %s, 'pending', %s)",
                    [(Jsonb({"counter": 1}), now_ms())] * m,
                )
            done += m


def raw_worker() -> int:
    """Claim, run and complete one job per transaction until none is left; returns jobs run."""
    import psycopg

    conn = psycopg.connect(os.environ[URL_ENV], autocommit=True)
    ex = conn.execute

    def bump(args: dict[str, Any]) -> None:
        ex("UPDATE counters SET value = value + 1 WHERE id = %s", (args["counter"],))

    handlers = {"bump": bump}
    barrier()
    ran = 0
    while True:
        ex("BEGIN")
        row = ex(RAW_CLAIM, (now_ms(),)).fetchone()
        if row is None:
            ex("COMMIT")
            break
        job_id, name, args = row
        try:
            handlers[name](args)
        except Exception as exc:  # a failing job rolls back its writes and is marked failed
            ex("ROLLBACK")
            ex("BEGIN")
            ex("UPDATE jobs SET state = 'failed', error = %s, completed_time = %s WHERE id = %s", (str(exc), now_ms(), job_id))
        else:
            ex("UPDATE jobs SET state = 'success', completed_time = %s WHERE id = %s", (now_ms(), job_id))
        ex("COMMIT")
        ran += 1
    conn.close()
    return ran


# -- Procrastinate ----------------------------------------------------------------------------


def make_procrastinate_app(url: str) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="bench.bump", pass_context=True)
    async def bump(context: Any, counter: int) -> None:
        # As a Procrastinate user would: the task's own write, through the app's pool.
        await context.app.connector.execute_query_async(
            "UPDATE counters SET value = value + 1 WHERE id = %(counter)s", counter=counter
        )

    app.bench_bump = bump  # type: ignore[attr-defined]
    return app


def procrastinate_setup(url: str, n: int) -> None:
    """Procrastinate's schema, the counter table, and N deferred jobs (1000 per batch)."""
    import psycopg

    app = make_procrastinate_app(url)
    with app.open():
        app.schema_manager.apply_schema()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE counters (id INTEGER PRIMARY KEY, value BIGINT NOT NULL)")
            conn.execute("INSERT INTO counters (id, value) VALUES (1, 0)")
        done = 0
        while done < n:
            m = min(PER_MUTATION, n - done)
            app.bench_bump.batch_defer(*([{"counter": 1}] * m))
            done += m


def procrastinate_worker(concurrency: int) -> None:
    import asyncio
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = make_procrastinate_app(os.environ[URL_ENV])

    async def main() -> None:
        async with app.open_async():
            await app.connector.execute_query_async("SELECT 1")  # connected before the barrier
            await asyncio.get_running_loop().run_in_executor(None, barrier)
            await app.run_worker_async(
                concurrency=concurrency,
                wait=False,
                install_signal_handlers=False,
                delete_jobs="never",
                listen_notify=True,
            )

    asyncio.run(main())


def main() -> None:
    if sys.argv[1:2] == ["ents-cli"]:
        sys.exit(ents_cli(sys.argv[2:]))
    p = argparse.ArgumentParser(description="a worker process of bench.scheduler_pg")
    p.add_argument("kind", choices=["raw", "procrastinate"])
    p.add_argument("--concurrency", type=int, default=1)
    args = p.parse_args()
    if args.kind == "raw":
        print(f"bench-raw-ran {raw_worker()}", file=sys.stderr)
    else:
        procrastinate_worker(args.concurrency)


if __name__ == "__main__":
    main()
