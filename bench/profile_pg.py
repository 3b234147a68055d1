"""Where does an ents worker's time go on PostgreSQL? Statements, round trips, retries, cProfile.

    python -m bench.profile_pg                   # 1 worker: the real Worker.run() in this process
    python -m bench.profile_pg --workers 4       # this one + 3 `ents worker` processes, same barrier
    python -m bench.profile_pg --distinct-counters   # each job bumps its own counter: no hot row
    python -m bench.profile_pg --explain-claim 200000  # the claim's plan with a big backlog
    options: --jobs N (20000)  --batch-size B (the worker's default)  --top N  --sort tottime|cumulative  --no-cprofile

Schedules N due ``bench.bump`` jobs (as ``bench.scheduler_pg``) in a fresh database, then
runs ``app.worker(batch_size=B).run()`` in the main thread until no job is pending,
counting every statement this worker sends (by kind, with the wall time spent waiting
for its reply), transactions begun, committed and retried, and which errors ents
classified as transient. Prints per-job figures, then the cProfile hot spots (the
profiler slows Python down: read shares, not absolute times). The other worker
processes of ``--workers K`` are the real command line; only this one is measured.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import os
import pstats
import re
import sys
import threading
import time
from typing import Any

from .pg_workers import PER_MUTATION, URL_ENV, make_ents_app
from .scheduler_pg import DrainError, find_server, finish, fresh_database, go, spawn

CLASSES = [
    ("BEGIN", r"^BEGIN"),
    ("COMMIT", r"^COMMIT"),
    ("ROLLBACK", r"^ROLLBACK"),
    ("SAVEPOINT", r"^(SAVEPOINT|RELEASE|ROLLBACK TO)"),
    ("claim jobs (SELECT ... SKIP LOCKED)", r"FOR UPDATE SKIP LOCKED"),
    ("mark jobs success (UPDATE _scheduled_functions)", r"^UPDATE \"_scheduled_functions\" SET \"state\" = 'success'"),
    ("crons due? (SELECT _cron_jobs)", r"FROM \"_cron_jobs\""),
    ("next due (SELECT MIN scheduled_time)", r"MIN\(\"scheduled_time\"\)"),
    ("UPDATE counters (patch)", r"^UPDATE \"counters\""),
    ("SELECT counters (get_x)", r"FROM \"counters\""),
    ("NOTIFY", r"^NOTIFY"),
]


class StatementCounter:
    """Counts the statements psycopg sends from one thread, with the time spent in each call."""

    def __init__(self, thread: int) -> None:
        self.thread = thread
        self.count: collections.Counter[str] = collections.Counter()
        self.wait: collections.Counter[str] = collections.Counter()
        self.samples: dict[str, str] = {}
        self.rows = 0
        self.on = True

    def classify(self, sql: Any) -> str:
        text = sql if isinstance(sql, str) else str(sql)
        text = " ".join(text.split())
        for name, pattern in CLASSES:
            if re.search(pattern, text):
                self.samples.setdefault(name, text[:200])
                return name
        key = "other: " + text[:60]
        self.samples.setdefault(key, text[:200])
        return key

    def install(self) -> None:
        import psycopg

        counter = self

        def timed(orig: Any, prefix: str) -> Any:
            """``orig`` (a Cursor method whose first argument is the query), counted and timed
            per statement class when called from the measured thread."""

            def run(cur: Any, query: Any, *args: Any, **kw: Any) -> Any:
                if threading.get_ident() != counter.thread or not counter.on:
                    return orig(cur, query, *args, **kw)
                k = prefix + counter.classify(query)
                t = time.perf_counter()
                try:
                    return orig(cur, query, *args, **kw)
                finally:
                    counter.wait[k] += time.perf_counter() - t  # type: ignore[assignment]
                    counter.count[k] += 1

            return run

        psycopg.Cursor.execute = timed(psycopg.Cursor.execute, "")  # type: ignore[method-assign]
        psycopg.Cursor.executemany = timed(psycopg.Cursor.executemany, "executemany: ")  # type: ignore[method-assign]


def explain_claim(url: str, pending: int) -> None:
    """EXPLAIN ANALYZE the worker's claim as ents builds it, with ``pending`` due jobs."""
    import psycopg

    from ents.worker import Executor

    with fresh_database(url) as (db_url, _dbname):
        app = make_ents_app(db_url)
        cid = app.run(lambda ctx: ctx.table("counters").insert({"name": "jobs", "value": 0}))
        t0 = time.perf_counter()
        for start in range(0, pending, PER_MUTATION):
            app.run_mutation(app.bench["enqueue"], {"counter": cid, "n": min(PER_MUTATION, pending - start)})
        print(f"scheduled {pending:,} due jobs in {time.perf_counter() - t0:.1f} s")
        sql = Executor(app, "explain")._claim
        app.close()
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE \"_scheduled_functions\"")
            conn.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
            plan = [r[0] for r in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, ("mutation", time.time() * 1000 + 1000, 100))]
            conn.execute("ROLLBACK")
        print(f"\n## claim of 100 jobs with {pending:,} pending\n{sql}\n")
        print("\n".join(plan))


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.profile_pg", description=__doc__.splitlines()[0])
    p.add_argument("--url", default=None)
    p.add_argument("--jobs", type=int, default=20_000)
    from ents.worker import DEFAULT_BATCH

    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    p.add_argument("--workers", type=int, default=1, help="total worker processes (this one included)")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--sort", default="tottime", choices=["tottime", "cumulative"])
    p.add_argument("--distinct-counters", action="store_true",
                   help="each job bumps its own counter (no hot row; not the benchmark's workload)")
    p.add_argument("--explain-claim", type=int, metavar="PENDING", default=None,
                   help="only EXPLAIN ANALYZE the claim query with PENDING due jobs")
    p.add_argument("--no-cprofile", action="store_true", help="count statements only (no profiler overhead)")
    args = p.parse_args()
    url, how = find_server(args.url)
    if url is None:
        raise SystemExit(how)
    if args.explain_claim:
        explain_claim(url, args.explain_claim)
        return
    n = args.jobs
    with fresh_database(url) as (db_url, _dbname):
        app = make_ents_app(db_url)
        cid = app.run(lambda ctx: ctx.table("counters").insert({"name": "jobs", "value": 0}))
        cids: list[str] = []
        if args.distinct_counters:
            for start in range(0, n, PER_MUTATION):
                m = min(PER_MUTATION, n - start)
                ids = app.run(lambda ctx, m=m: ctx.table("counters").insert_many([{"name": "c", "value": 0}] * m))
                cids += ids
                app.run_mutation(app.bench["enqueue_each"], {"counters": ids})
        else:
            for start in range(0, n, PER_MUTATION):
                app.run_mutation(app.bench["enqueue"], {"counter": cid, "n": min(PER_MUTATION, n - start)})
        from ents.backends.postgres import PostgresDialect

        transient: collections.Counter[str] = collections.Counter()
        main_thread = threading.get_ident()
        orig_classify = PostgresDialect.classify

        seen: list[BaseException] = []  # classify() may be asked twice about one exception

        def classify(self: Any, exc: BaseException) -> str | None:
            kind = orig_classify(self, exc)
            if kind is not None and threading.get_ident() == main_thread and not any(e is exc for e in seen[-8:]):
                seen.append(exc)
                transient[f"{kind}: {type(exc).__name__}: {str(exc).splitlines()[0][:90]}"] += 1
            return kind

        PostgresDialect.classify = classify  # type: ignore[method-assign]
        stmts = StatementCounter(main_thread)
        stmts.install()
        others = None
        if args.workers > 1:
            os.environ[URL_ENV] = db_url
            cmd = [sys.executable, "-m", "ents", "--log-level", "INFO", "worker",
                   "bench.pg_workers:ents_worker_app", "--batch-size", str(args.batch_size)]
            others = spawn([cmd] * (args.workers - 1), db_url)
        worker = app.worker(batch_size=args.batch_size)
        import psycopg

        mon = psycopg.connect(db_url, autocommit=True)
        done_at: list[float] = []

        def watch() -> None:
            while True:
                time.sleep(0.005)
                if not mon.execute("SELECT EXISTS(SELECT 1 FROM \"_scheduled_functions\" WHERE \"state\" = 'pending')").fetchone()[0]:
                    done_at.append(time.perf_counter())
                    worker.stop(timeout=0)
                    return

        prof = None if args.no_cprofile else cProfile.Profile()
        if others is not None:
            go(others)
        t0 = time.perf_counter()
        threading.Thread(target=watch, daemon=True).start()
        if prof:
            prof.enable()
        worker.run()
        if prof:
            prof.disable()
        t1 = done_at[0] if done_at else time.perf_counter()
        stmts.on = False
        outputs = ""
        if others is not None:
            finish(others, terminate=True)
            outputs = "\n".join(others.outputs)
        if args.distinct_counters:
            values = app.run(lambda ctx: [c.value for c in ctx.table("counters")])
            counter = sum(values) if max(values) <= 1 else -1
        else:
            counter = app.run(lambda ctx: ctx.table("counters").get_x(cid).value)
        mine = worker.jobs_run
        mon.close()
        app.close()
    if counter != n:
        raise DrainError(f"counter {counter} != {n} (-1: a counter was bumped twice)")
    wall = t1 - t0
    total_stmts = sum(stmts.count.values())
    total_wait = sum(stmts.wait.values())
    print(f"# ents worker on PostgreSQL: {n:,} jobs, --batch-size {args.batch_size}, {args.workers} worker process(es)"
          f"{', each job its own counter' if args.distinct_counters else ', one hot counter'}"
          f"{' (cProfile on: absolute times inflated)' if prof else ''}")
    print(f"drain {wall:.2f} s = {n / wall:,.0f} jobs/s overall; this worker ran {mine:,} job(s)")
    if outputs:
        print("other workers ran: " + ", ".join(re.findall(r"stopped after (\d+) job", outputs)))
    per = max(mine, 1)
    print(f"statements sent by this worker: {total_stmts:,} = {total_stmts / per:.2f} per job it ran; "
          f"time waiting for their replies {total_wait:.2f} s = {100 * total_wait / wall:.0f}% of the drain "
          f"({total_wait / per * 1e6:.0f} µs per job), the rest is Python in this process")
    print()
    print("| statement | count | per job | wait (s) | mean wait (µs) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for k, c in stmts.count.most_common():
        print(f"| {k} | {c:,} | {c / per:.3f} | {stmts.wait[k]:.2f} | {stmts.wait[k] / c * 1e6:.0f} |")
    print()
    if transient:
        print("errors ents classified as transient/conflict in this worker (each a rolled-back, retried transaction):")
        for k, c in transient.most_common():
            print(f"  {c:6,} × {k}")
    else:
        print("no transient errors (no retried transactions) in this worker")
    print()
    print("statement samples:")
    for k, s in stmts.samples.items():
        print(f"  {k}: {s}")
    if prof:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(args.sort).print_stats(args.top)
        print(buf.getvalue())


if __name__ == "__main__":
    main()
