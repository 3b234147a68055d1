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
