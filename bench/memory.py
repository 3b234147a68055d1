"""Worker memory while many pending (future-dated) jobs sit in the table.

Each measurement runs in a fresh process: open the App, read the resident set size
(RSS), start ``app.worker()`` (housekeeping every second so that it runs during the
measurement), schedule a trickle of due no-op mutations for it to run next to the big
pending backlog, let it idle, and sample RSS every 20 ms. Measured on an empty job table
(the idle baseline) and with ``--jobs`` / 5 and ``--jobs`` pending jobs due in a day.
The tables are filled through ents (``run_at``, 1000 per mutation) in a separate process.

Flat means: the peak does not grow with the number of pending jobs. The check allows
32 MiB, the size of one SQLite page cache as ents configures it (cache_size=-32000).

    python -m bench.memory [--quick] [--jobs N]      # default N=200000; --jobs 1000000 for the 1M figure
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

from .common import (
    Row,
    Section,
    Table,
    Target,
    ents_url,
    parser,
    progress,
    rss_mib,
    run_main,
    temp_dir,
)

DAY_MS = 24 * 3600 * 1000
SYNC = "NORMAL"


def make_app(path: str) -> Any:
    from ents import App, define_ent, define_ent_schema

    app = App(define_ent_schema({"counters": define_ent({"value": int})}), ents_url(path, SYNC))
    ran: list[int] = []

    @app.internal_mutation
    def later(ctx: Any, i: int) -> None:
        pass

    @app.internal_mutation
    def tick(ctx: Any, i: int) -> None:
        ran.append(i)

    @app.internal_mutation
    def fill(ctx: Any, n: int, due: float) -> None:
        for i in range(n):
            ctx.scheduler.run_at(due, later, {"i": i})

    @app.internal_mutation
    def trickle(ctx: Any, i: int) -> None:
        ctx.scheduler.run_after(0, tick, {"i": i})

    app.bench = {"fill": fill, "trickle": trickle, "ran": ran}  # type: ignore[attr-defined]
    return app


def populate(path: str, n: int) -> dict[str, Any]:
    app = make_app(path)
    due = time.time() * 1000 + DAY_MS
    t0 = time.perf_counter()
    done = 0
    while done < n:
        m = min(1000, n - done)
        app.run_mutation(app.bench["fill"], {"n": m, "due": due})
        done += m
    dt = time.perf_counter() - t0
    app.close()
    return {"scheduled": n, "seconds": dt}


def measure(path: str, trickle: int, idle_s: float) -> dict[str, Any]:
    import sqlite3

    rss_import = rss_mib()[0]
    app = make_app(path)
    app.run(lambda ctx: ctx.table("counters").first())  # touch the database once
    rss_open = rss_mib()[0]
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(rss_mib()[0])
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    worker = app.worker(housekeeping_interval=1.0)
    worker.start()
    for i in range(trickle):
        app.run_mutation(app.bench["trickle"], {"i": i})
        time.sleep(0.01)
    deadline = time.monotonic() + 30
    while len(app.bench["ran"]) < trickle and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(idle_s)
    worker.stop(timeout=30)
    stop.set()
    sampler.join()
    rss_end, hwm = rss_mib()
    mon = sqlite3.connect(path)
    pending = mon.execute("SELECT count(*) FROM \"_scheduled_functions\" WHERE \"state\" = 'pending'").fetchone()[0]
    mon.close()
    app.close()
    return {
        "rss_import": rss_import,
        "rss_open": rss_open,
        "rss_peak": max(samples) if samples else rss_end,
        "rss_end": rss_end,
        "vm_hwm": hwm,
        "pending_after": pending,
        "trickle_ran": len(app.bench["ran"]),
        "trickle": trickle,
        "samples": len(samples),
    }


def child(role: str, path: str, n: int, trickle: int, idle_s: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.memory", "--role", role, "--db", path, "--jobs", str(n),
           "--trickle", str(trickle), "--idle", str(idle_s)]
    cp = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if cp.returncode != 0:
        raise RuntimeError(f"{role} child failed ({cp.returncode}):\n{cp.stderr[-4000:]}")
    return json.loads(cp.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def build(section: Section, args: Any) -> None:
    n = args.jobs or (20_000 if args.quick else 200_000)
    trickle = 50 if args.quick else 300
    idle_s = 1.5 if args.quick else 3.0
    sizes = [0, n // 5, n]
    section.params = {"pending jobs": n, "also measured at": n // 5, "trickle of due jobs": trickle,
                      "idle after trickle (s)": idle_s, "synchronous": SYNC}
    results: dict[int, dict[str, Any]] = {}
    with temp_dir("memory") as d:
        for size in sizes:
            path = os.path.join(d, f"mem-{size}.db")
            if size:
                progress(f"memory: scheduling {size:,} future jobs through ents")
                pop = child("populate", path, size, trickle, idle_s)
                section.notes.append(f"Filling {size:,} pending jobs took {pop['seconds']:.1f} s "
                                     f"({size / pop['seconds']:,.0f} jobs/s scheduled, 1000 per mutation).")
                section.notes.append(f"Database file with {size:,} jobs: {os.path.getsize(path) / 2**20:.0f} MiB.")
            progress(f"memory: measuring the worker with {size:,} pending jobs")
            results[size] = r = child("measure", path, size, trickle, idle_s)
            section.check(f"{size:,} pending: the worker ran the {trickle} due jobs and left the {size:,} future ones pending",
                          r["trickle_ran"] == trickle and r["pending_after"] == size,
                          f"ran {r['trickle_ran']}, pending after {r['pending_after']}")
    rows = []
    for size in sizes:
        r = results[size]
        label = "empty job table (idle baseline)" if size == 0 else f"{size:,} pending jobs"
        rows.append(Row(f"{label}: RSS with App open, before worker", r["rss_open"], "MiB", is_ents=False))
        rows.append(Row(f"{label}: peak RSS while the worker runs", r["rss_peak"], "MiB", is_ents=size == n,
                        detail=f"end {r['rss_end']:.1f} MiB; process high-water mark {r['vm_hwm']:.1f} MiB; {r['samples']} samples"))
    section.tables.append(Table("Worker resident memory (MiB; lower is better)", rows, False, None, compare=False))
    base = results[0]["rss_peak"]
    grow_small = results[n // 5]["rss_peak"] - base
    grow = results[n]["rss_peak"] - base
    section.targets.append(Target(f"peak RSS with {n:,} pending − idle baseline peak", grow, "<=", 32.0,
                                  f"flat; with {n // 5:,} pending: {grow_small:+.1f} MiB", unit="MiB"))
    section.check(f"worker memory stays flat with {n:,} pending jobs (peak within 32 MiB of the idle baseline)", grow <= 32.0,
                  f"{grow:+.1f} MiB")


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=None, help="pending jobs (default 200000; 1000000 for the issue's figure)")
    p.add_argument("--role", choices=["populate", "measure"], help=argparse_suppress())
    p.add_argument("--db", help=argparse_suppress())
    p.add_argument("--trickle", type=int, default=300, help=argparse_suppress())
    p.add_argument("--idle", type=float, default=3.0, help=argparse_suppress())
    args = p.parse_known_args()[0]
    if args.role == "populate":
        print(json.dumps(populate(args.db, args.jobs)))
        return
    if args.role == "measure":
        print(json.dumps(measure(args.db, args.trickle, args.idle)))
        return
    run_main("memory", "Worker memory with many pending jobs", build, p)


def argparse_suppress() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
