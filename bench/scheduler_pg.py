"""Scheduler drain on PostgreSQL: 1 and 4 worker processes, every job exactly once.

Workload: N jobs (default 20,000) are created before the clock starts, each a no-op that
bumps ONE counter row; then 1 or 4 worker processes drain them. Contenders, each in a
fresh database on the same server (created before and dropped after every drain):

* ents: ``python -m ents worker bench.pg_workers:ents_worker_app`` (the default ``--batch-size``)
  (the real command line, one OS process per worker); jobs scheduled with
  ``ctx.scheduler.run_after(0, bump, ...)``, 1000 per mutation; ``bump`` is an internal
  mutation doing ``get_x`` + ``patch`` of the counter ent. Mutations are SERIALIZABLE, the
  worker claims batches with ``FOR UPDATE SKIP LOCKED`` and commits each batch once.
* raw psycopg: a loop that claims ONE job (``SELECT ... LIMIT 1 FOR UPDATE SKIP
  LOCKED``), runs it (``UPDATE counters``), marks it ``success`` and commits, per job;
  READ COMMITTED (PostgreSQL's default).
* Procrastinate: an async task bumping the counter through the app's connector,
  ``run_worker(wait=False, concurrency=1)``; with 4 = 4 processes of concurrency 1 each
  (``--procrastinate-mode concurrency`` runs 1 process of concurrency 4 instead).

Every worker process starts, imports, connects and then waits on a barrier; the clock
runs from "go" until a separate connection sees no job pending (or in progress), polled
every 5 ms. Stopping the processes is outside it. Contenders alternate, order reversed
every other round; the median round is reported with the min-max range.

Checks after each drain: the counter equals N, and every job row is ``success``
(ents, raw) / ``succeeded`` (Procrastinate): no job lost, none run twice.

Server: ``--url``, else ``$ENTS_BENCH_PG_URL``, else ``$ENTS_TEST_PG_URL``, else
``postgresql://postgres@127.0.0.1:5432/postgres``. When none answers (or psycopg is not
installed) the benchmark reports itself skipped, with the reason.

    python -m bench.scheduler_pg [--quick] [--jobs N] [--rounds R] [--workers 1,4] [--batch-size B]
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from .common import (
    REPO,
    DrainError,
    Row,
    Section,
    Table,
    Target,
    median,
    parser,
    progress,
    ratio,
    run_main,
    wait_drained,
)
from .pg_workers import PER_MUTATION, URL_ENV

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
POLL_S = 0.005
READY_TIMEOUT_S = 120.0
EXIT_TIMEOUT_S = 60.0


# -- the server --------------------------------------------------------------------------


def find_server(explicit: str | None) -> tuple[str | None, str]:
    """(url, how it was found) or (None, why there is none)."""
    try:
        import psycopg
    except ImportError:
        return None, "psycopg is not installed (pip install -e '.[postgres]')"
    candidates = [(explicit, "--url")] if explicit else []
    for env in ("ENTS_BENCH_PG_URL", "ENTS_TEST_PG_URL"):
        if os.environ.get(env):
            candidates.append((os.environ[env], f"${env}"))
    if not candidates:
        candidates.append((DEFAULT_URL, "default"))
    errors = []
    for url, how in candidates:
        try:
            with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
                conn.execute("SELECT 1")
            return url, how
        except Exception as exc:
            errors.append(f"{redact(url)} ({how}): {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}")
    return None, "no PostgreSQL server reachable: " + "; ".join(errors)


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return url


def with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def with_search_path(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


@contextlib.contextmanager
def fresh_database(base: str) -> Iterator[tuple[str, str]]:
    """A new, empty database (dropped afterwards); (url, its name).

    Without CREATEDB rights, falls back to a fresh schema in the server's database.
    A database of its own also gives clean pg_stat_database counters per drain.
    """
    import psycopg

    name = "ents_bench_" + uuid.uuid4().hex[:10]
    kind = "database"
    with psycopg.connect(base, autocommit=True) as conn:
        try:
            conn.execute(f'CREATE DATABASE "{name}"')
        except psycopg.Error:
            kind = "schema"
            conn.execute(f'CREATE SCHEMA "{name}"')
    url = with_database(base, name) if kind == "database" else with_search_path(base, name)
    try:
        yield url, (name if kind == "database" else "")
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            if kind == "database":
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            else:
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def db_stats(conn: Any, dbname: str) -> dict[str, int]:
    if not dbname:
        return {}
    conn.execute("SELECT pg_stat_force_next_flush()")  # this connection's own counts are in what follows
    row = conn.execute(
        "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted FROM pg_stat_database WHERE datname = %s",
        (dbname,),
    ).fetchone()
    return dict(zip(("commits", "rollbacks", "inserted", "updated", "deleted"), row, strict=True)) if row else {}


# -- worker processes ----------------------------------------------------------------------


@dataclass
class Procs:
    procs: list[subprocess.Popen[str]]
    logs: list[Any]
    outputs: list[str] = field(default_factory=list)

    def alive(self) -> list[bool]:
        return [p.poll() is None for p in self.procs]


def spawn(cmds: list[list[str]], url: str) -> Procs:
    env = dict(os.environ)
    env[URL_ENV] = url
    env["PYTHONUNBUFFERED"] = "1"
    procs, logs = [], []
    for cmd in cmds:
        log = tempfile.TemporaryFile(mode="w+", prefix="bench-pg-worker-")
        logs.append(log)
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True))
    ps = Procs(procs, logs)
    deadline = time.monotonic() + READY_TIMEOUT_S
    for p in procs:
        assert p.stdout is not None
        line = p.stdout.readline()  # blocks until "ready" (or EOF if the process died)
        if line.strip() != "ready" or time.monotonic() > deadline:
            kill(ps)
            raise DrainError(f"worker {' '.join(p.args)} did not get ready (said {line!r}):\n{read_logs(ps)[-3000:]}")
    return ps


def go(ps: Procs) -> float:
    t0 = time.perf_counter()
    for p in ps.procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    return t0


def read_logs(ps: Procs) -> str:
    out = []
    for log in ps.logs:
        log.seek(0)
        out.append(log.read())
    return "\n".join(out)


def kill(ps: Procs) -> None:
    for p in ps.procs:
        if p.poll() is None:
            p.kill()
    for p in ps.procs:
        with contextlib.suppress(Exception):
            p.wait(10)


def finish(ps: Procs, terminate: bool) -> list[int | None]:
    """SIGTERM (ents) or wait for the processes to exit on their own; kill stragglers."""
    if terminate:
        for p in ps.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + EXIT_TIMEOUT_S
    codes: list[int | None] = []
    for p in ps.procs:
        try:
            codes.append(p.wait(max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            codes.append(None)
    kill(ps)
    for p in ps.procs:
        for stream in (p.stdin, p.stdout):
            with contextlib.suppress(Exception):
                if stream is not None:
                    stream.close()
    ps.outputs = [read_logs(Procs([p], [log])) for p, log in zip(ps.procs, ps.logs, strict=True)]
    for log in ps.logs:
        log.close()
    return codes


def _dead(ps: Procs, exit_on_own: bool) -> str | None:
    """Why the worker processes can no longer drain (None while they can)."""
    alive = ps.alive()
    if (exit_on_own or all(alive)) and any(alive):
        return None
    return f"worker process(es) exited (exit codes {[p.poll() for p in ps.procs]}):\n{read_logs(ps)[-3000:]}\n"


# -- one drain per contender -------------------------------------------------------------------


@dataclass
class Outcome:
    seconds: float
    counter: int | None
    states: dict[str, int]
    stats: dict[str, int]
    per_worker: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _drain(url: str, dbname: str, cmds: list[list[str]], pending_sql: str, what: str, exit_on_own: bool,
           counter: Callable[[], int], states_sql: str) -> Outcome:
    import psycopg

    with psycopg.connect(url, autocommit=True) as mon:
        polls = [0]  # the monitor's own statements (each an autocommit transaction), left out of the stats

        def has_pending() -> bool:
            polls[0] += 1
            return bool(mon.execute(f"SELECT EXISTS({pending_sql})").fetchone()[0])

        def pending_count() -> int:
            polls[0] += 1
            return int(mon.execute(f"SELECT count(*) FROM ({pending_sql}) AS p").fetchone()[0])

        ps = spawn(cmds, url)
        before = db_stats(mon, dbname)
        error = None
        t0 = go(ps)
        try:
            t1 = wait_drained(has_pending, pending_count, what, lambda: _dead(ps, exit_on_own), POLL_S)
        except DrainError as exc:
            error = str(exc)
            t1 = time.perf_counter()
        codes = finish(ps, terminate=not exit_on_own)
        time.sleep(0.6)  # exited backends have flushed their statistics by now
        after = db_stats(mon, dbname)
        stats = {k: after[k] - before.get(k, 0) for k in after}
        if "commits" in stats:
            stats["commits"] -= polls[0] + 2  # the monitor's polls, its first stats read and its second flush
        states = dict(mon.execute(states_sql).fetchall())
        out = Outcome(t1 - t0, counter(), states, stats)
        logs = "\n".join(ps.outputs)
        out.per_worker = [int(m) for m in re.findall(r"stopped after (\d+) job", logs)]
        out.per_worker += [int(m) for m in re.findall(r"^bench-raw-ran (\d+)$", logs, re.M)]
        bad = [c for c in codes if c not in (0, -signal.SIGTERM)]
        if bad:
            out.notes.append(f"exit codes {codes}")
        trouble = [ln for ln in logs.splitlines() if re.search(r"ERROR|Traceback|CRITICAL", ln)]
        if trouble:
            out.notes.append(f"{len(trouble)} error line(s) in worker logs, first: {trouble[0][:300]}")
        if error:
            raise DrainError(f"{error}; states {states}; counter {out.counter}")
        return out


def ents_drain(url: str, dbname: str, n: int, workers: int, batch: int) -> Outcome:
    from .pg_workers import make_ents_app

    app = make_ents_app(url)
    try:
        cid = app.run(lambda ctx: ctx.table("counters").insert({"name": "jobs", "value": 0}))
        done = 0
        while done < n:
            m = min(PER_MUTATION, n - done)
            app.run_mutation(app.bench["enqueue"], {"counter": cid, "n": m})
            done += m
        cmd = [sys.executable, "-m", "ents", "--log-level", "INFO", "worker", "bench.pg_workers:ents_worker_app",
               "--batch-size", str(batch)]
        return _drain(
            url, dbname, [cmd] * workers,
            "SELECT 1 FROM \"_scheduled_functions\" WHERE \"state\" = 'pending'",
            f"ents, {workers} worker(s)", False,
            lambda: int(app.run(lambda ctx: ctx.table("counters").get_x(cid).value)),
            "SELECT \"state\", count(*) FROM \"_scheduled_functions\" GROUP BY \"state\"",
        )
    finally:
        app.close()


def raw_drain(url: str, dbname: str, n: int, workers: int) -> Outcome:
    import psycopg

    from .pg_workers import raw_setup

    raw_setup(url, n)

    def counter() -> int:
        with psycopg.connect(url) as c:
            return int(c.execute("SELECT value FROM counters WHERE id = 1").fetchone()[0])

    cmd = [sys.executable, "-m", "bench.pg_workers", "raw"]
    return _drain(url, dbname, [cmd] * workers, "SELECT 1 FROM jobs WHERE state = 'pending'",
                  f"raw psycopg, {workers} process(es)", True, counter,
                  "SELECT state, count(*) FROM jobs GROUP BY state")


def procrastinate_drain(url: str, dbname: str, n: int, processes: int, concurrency: int) -> Outcome:
    import psycopg

    from .pg_workers import procrastinate_setup

    procrastinate_setup(url, n)

    def counter() -> int:
        with psycopg.connect(url) as c:
            return int(c.execute("SELECT value FROM counters WHERE id = 1").fetchone()[0])

    cmd = [sys.executable, "-m", "bench.pg_workers", "procrastinate", "--concurrency", str(concurrency)]
    return _drain(url, dbname, [cmd] * processes,
                  "SELECT 1 FROM procrastinate_jobs WHERE status IN ('todo', 'doing')",
                  f"Procrastinate, {processes} process(es) x concurrency {concurrency}", True, counter,
                  "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY status")


# -- the benchmark -----------------------------------------------------------------------


def procrastinate_version() -> str | None:
    try:
        from importlib.metadata import version

        import procrastinate  # noqa: F401

        return version("procrastinate")
    except Exception:
        return None


def build(section: Section, args: Any) -> None:
    url, how = find_server(args.url)
    workers_list = [int(w) for w in args.workers.split(",") if w.strip()]
    n = args.jobs or (2000 if args.quick else 20_000)
    sizes = {"ents": n, "raw": args.raw_jobs or n,
             "proc": args.procrastinate_jobs or (1000 if args.quick else min(n, 5000))}
    rounds = args.rounds or (1 if args.quick else 3)
    batch = args.batch_size
    pversion = procrastinate_version()
    section.params = {"jobs (ents)": sizes["ents"], "jobs (raw loop)": sizes["raw"], "jobs (Procrastinate)": sizes["proc"],
                      "scheduled per mutation/batch": PER_MUTATION, "workers": "/".join(map(str, workers_list)),
                      "ents --batch-size": batch, "rounds": rounds}
    titles = {w: f"{w} worker process{'es' if w > 1 else ''}: drain due no-op jobs that bump one counter (jobs/s; higher is better)"
              for w in workers_list}
    if url is None:
        section.skipped = f"{how}. Start a server (or set ENTS_BENCH_PG_URL) to run it."
        progress(section.skipped)
        for w in workers_list:
            section.targets.append(Target(f"{w} worker(s): ents ÷ Procrastinate jobs/s", None, ">=", 3.0, "skipped: no server"))
            section.targets.append(Target(f"{w} worker(s): ents ÷ raw SKIP LOCKED loop jobs/s", None, ">=", 1.0, "skipped: no server"))
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers', 'max_connections')"
        ).fetchall())
    section.params["server"] = f"PostgreSQL {server} at {redact(url)} ({how})"
    section.params["server settings"] = ", ".join(f"{k}={v}" for k, v in sorted(settings.items()))
    section.params["psycopg"] = psycopg.__version__
    section.params["Procrastinate"] = pversion or "not installed"

    proc_mode = args.procrastinate_mode

    def proc_shape(w: int) -> tuple[int, int]:
        return (1, w) if proc_mode == "concurrency" else (w, 1)

    labels: dict[int, dict[str, str]] = {}
    contenders: list[tuple[int, str, str, Callable[[str, str], Outcome]]] = []
    chosen = {x.strip() for x in args.contenders.split(",")}
    for w in workers_list:
        p, c = proc_shape(w)
        plural = "es" if w > 1 else ""
        labels[w] = {
            "ents": f"ents: {w} × `ents worker --batch-size {batch}` process{plural}",
            "raw": f"raw psycopg SKIP LOCKED, 1 job per transaction, {w} process{plural}",
            "proc": f"Procrastinate {pversion}: {p} process{'es' if p > 1 else ''} × concurrency {c}",
        }
        if "ents" in chosen:
            contenders.append((w, "ents", labels[w]["ents"], lambda u, d, w=w: ents_drain(u, d, sizes["ents"], w, batch)))
        if "raw" in chosen:
            contenders.append((w, "raw", labels[w]["raw"], lambda u, d, w=w: raw_drain(u, d, sizes["raw"], w)))
        if pversion and "procrastinate" in chosen:
            contenders.append((w, "proc", labels[w]["proc"], lambda u, d, p=p, c=c: procrastinate_drain(u, d, sizes["proc"], p, c)))
    if not pversion:
        section.notes.append("Procrastinate is not installed (pip install -e '.[bench]'): its rows are missing.")

    rates: dict[str, list[float]] = {label: [] for _, _, label, _ in contenders}
    extra: dict[str, list[Outcome]] = {label: [] for _, _, label, _ in contenders}
    for r in range(rounds):
        order = contenders if r % 2 == 0 else list(reversed(contenders))
        for _w, kind, label, fn in order:
            n = sizes[kind]
            progress(f"scheduler_pg: round {r + 1}/{rounds}: {label}, {n} jobs")
            with fresh_database(url) as (db_url, dbname):
                try:
                    out = fn(db_url, dbname)
                except DrainError as exc:
                    section.check(f"{label}: drained all {n} jobs (round {r + 1})", False, str(exc)[:3000])
                    continue
            rate = n / out.seconds
            rates[label].append(rate)
            extra[label].append(out)
            ok_states = out.states == ({"succeeded": n} if kind == "proc" else {"success": n})
            section.check(f"{label}, round {r + 1}: each of {n:,} jobs ran exactly once and is marked done",
                          out.counter == n and ok_states,
                          f"counter {out.counter}, job states {out.states}" + (f"; {'; '.join(out.notes)}" if out.notes else ""))
            progress(f"scheduler_pg:   {rate:,.0f} jobs/s ({out.seconds:.2f} s); counter {out.counter}; "
                     f"states {out.states}; db stats {out.stats}; per worker {out.per_worker}")

    def detail(label: str, n: int) -> str:
        outs = extra[label]
        if not outs:
            return ""
        parts = []
        st = [o.stats for o in outs if o.stats]
        if st:
            commits = median([s["commits"] / n for s in st])
            rollbacks = median([s["rollbacks"] for s in st])
            parts.append(f"{commits:.2f} commits/job, {rollbacks:,.0f} rollbacks (median per drain)")
        pw = [o.per_worker for o in outs if len(o.per_worker) > 1]
        if pw:
            parts.append("jobs per process " + "/".join(f"{x:,}" for x in sorted(pw[-1], reverse=True)))
        return "; ".join(parts)

    for w in workers_list:
        rows = []
        value: dict[str, float | None] = {"ents": None, "raw": None, "proc": None}
        for kind in ("ents", "raw", "proc"):
            label = labels[w][kind]
            if label not in rates:
                continue
            v = rates[label]
            value[kind] = median(v) if v else None
            rows.append(Row(label, value[kind], "jobs/s", n=sizes[kind], detail=detail(label, sizes[kind]),
                            spread=f"{min(v):,.0f}–{max(v):,.0f}" if len(v) > 1 else "", is_ents=kind == "ents"))
        section.tables.append(Table(titles[w], rows, True, labels[w]["raw"] if labels[w]["raw"] in rates else None))
        e, raw, proc = value["ents"], value["raw"], value["proc"]

        def paired(kind: str, w: int = w) -> str:
            """Range of the round-by-round ratios (the contenders of a round ran minutes apart, not hours)."""
            a, b = rates.get(labels[w]["ents"], []), rates.get(labels[w][kind], [])
            if len(a) < 2 or len(a) != len(b):
                return ""
            rs = [x / y for x, y in zip(a, b, strict=True)]
            return f"; per-round ratios {min(rs):.2f}–{max(rs):.2f}x"

        section.targets.append(Target(f"{w} worker(s): ents ÷ Procrastinate jobs/s", ratio(e, proc), ">=", 3.0,
                                      "issue 6: ahead of Procrastinate by 3x or more" + paired("proc")))
        section.targets.append(Target(f"{w} worker(s): ents ÷ raw SKIP LOCKED loop jobs/s", ratio(e, raw), ">=", 1.0,
                                      "issue 6: at least as fast as the raw one-job-per-transaction loop" + paired("raw")))
    if len(workers_list) > 1:
        lo, hi = min(workers_list), max(workers_list)
        scale = []
        for kind, name in (("ents", "ents"), ("raw", "raw loop"), ("proc", "Procrastinate")):
            a, b = rates.get(labels[lo][kind]), rates.get(labels[hi][kind])
            if a and b:
                scale.append(f"{name} {median(b) / median(a):.2f}x")
        section.notes.append(f"Scaling from {lo} to {hi} worker processes (median ÷ median): " + ", ".join(scale) + ".")
    section.notes.append(
        "Every job bumps the same counter row, as the workload prescribes; writers of that row queue on its lock. "
        "ents runs mutations SERIALIZABLE, so two batches that both bump it cannot commit concurrently: the later one "
        "fails with a serialization error and is retried (rollbacks above). The raw loop (READ COMMITTED) and "
        "Procrastinate (the task's own autocommit UPDATE) just wait for the row lock.")
    section.notes.append(
        "commits/job and rollbacks come from pg_stat_database of the drain's own database: every transaction of the "
        "workers from the barrier until they exited (the monitor's polls subtracted), so start-up, idle polls "
        "and housekeeping are included.")
    section.notes.append("Where an ents worker's time goes (statements per job and the wait for each, retried transactions, "
                         "cProfile): `python -m bench.profile_pg [--workers 4]`.")
    if proc_mode != "concurrency":
        section.notes.append("Procrastinate with N workers = N processes of concurrency 1 (as ents and the raw loop: one "
                             "OS process per worker); `--procrastinate-mode concurrency` measures 1 process × concurrency N.")


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--url", help=f"PostgreSQL server URL (default $ENTS_BENCH_PG_URL, $ENTS_TEST_PG_URL or {DEFAULT_URL})")
    p.add_argument("--jobs", type=int, default=None, help="jobs per drain (default 20000)")
    p.add_argument("--raw-jobs", type=int, default=None, help="jobs per drain for the raw loop (default: --jobs)")
    p.add_argument("--procrastinate-jobs", type=int, default=None,
                   help="jobs per drain for Procrastinate (default min(--jobs, 5000): it runs ~100 jobs/s here)")
    p.add_argument("--contenders", default="ents,raw,procrastinate", help="comma-separated subset of ents,raw,procrastinate")
    p.add_argument("--workers", default="1,4", help="comma-separated worker process counts (default 1,4)")
    from ents.worker import DEFAULT_BATCH

    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH,
                   help=f"ents worker --batch-size (default {DEFAULT_BATCH}, the CLI default)")
    p.add_argument("--procrastinate-mode", choices=["processes", "concurrency"], default="processes",
                   help="N Procrastinate workers as N processes (default) or 1 process with concurrency N")
    run_main("scheduler_pg", "Scheduler drain on PostgreSQL", build, p)


if __name__ == "__main__":
    main()
