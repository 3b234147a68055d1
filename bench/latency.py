"""Due-to-start latency of scheduled mutations under a steady trickle.

A worker (``app.worker().start()``) runs in this process. The main thread calls
``app.run_mutation(schedule_probe, ...)`` at a steady rate; each call schedules one
``probe`` mutation with ``run_at(due)``. The probe records ``time.time()`` when its handler
starts; latency = start − due. Two kinds of due time:

* ``due now``: ``due`` is read just before the scheduling mutation runs, so the latency
  includes that mutation's own commit (and fsync at FULL): what a caller of
  ``run_after(0, ...)`` sees;
* ``due in 50 ms``: the job is already committed when it falls due; the worker has to
  wake up on time (timer path).

Every probe must run exactly once and end ``success``.

    python -m bench.latency [--quick] [--jobs M] [--rate R] [--sync normal,full]
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import Counter
from typing import Any

from .common import (
    Row,
    Section,
    Table,
    Target,
    ents_url,
    parser,
    percentile,
    progress,
    run_main,
    temp_dir,
)

FUTURE_MS = 50.0


def measure(d: str, sync: str, m: int, rate: float, offset_ms: float) -> tuple[list[float], dict[str, Any]]:
    from ents import App, define_ent, define_ent_schema

    path = os.path.join(d, f"lat-{sync}-{int(offset_ms)}-{time.monotonic_ns()}.db")
    app = App(define_ent_schema({"probes": define_ent({"k": int})}), ents_url(path, sync))
    started: dict[int, float] = {}
    calls: Counter[int] = Counter()
    lock = threading.Lock()

    @app.internal_mutation
    def probe(ctx: Any, k: int, due: float) -> None:
        t = time.time() * 1000
        with lock:
            calls[k] += 1
            started.setdefault(k, t - due)

    @app.internal_mutation
    def schedule_probe(ctx: Any, k: int, due: float) -> None:
        ctx.scheduler.run_at(due, probe, {"k": k, "due": due})

    worker = app.worker()
    worker.start()
    time.sleep(0.2)  # let the worker reach its idle wait
    period = 1.0 / rate
    call_ms: list[float] = []
    t0 = time.perf_counter()
    for k in range(m):
        target = t0 + k * period
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        due = time.time() * 1000 + offset_ms
        c0 = time.perf_counter()
        app.run_mutation(schedule_probe, {"k": k, "due": due})
        call_ms.append((time.perf_counter() - c0) * 1000)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with lock:
            if len(started) >= m:
                break
        time.sleep(0.01)
    worker.stop(timeout=30)
    mon = sqlite3.connect(path)
    states = dict(mon.execute('SELECT "state", count(*) FROM "_scheduled_functions" GROUP BY "state"').fetchall())
    mon.close()
    app.close()
    info = {"ran": len(started), "twice": sum(1 for c in calls.values() if c > 1), "states": states, "call_ms": call_ms}
    return [started[k] for k in sorted(started)], info


def build(section: Section, args: Any) -> None:
    syncs = [s.strip().upper() for s in args.sync.split(",") if s.strip()]
    m = args.jobs or (40 if args.quick else 500)
    rate = args.rate or 50.0
    section.params = {"jobs per variant": m, "rate (jobs/s)": rate, "synchronous": "/".join(syncs)}
    with temp_dir("latency") as d:
        for sync in syncs:
            rows = []
            for offset, label in ((0.0, "due now (includes the scheduling commit)"), (FUTURE_MS, f"due in {FUTURE_MS:.0f} ms (timer wake-up)")):
                progress(f"latency {sync}: {label}: {m} jobs at {rate}/s")
                lat, info = measure(d, sync, m, rate, offset)
                ok = info["ran"] == m and info["twice"] == 0 and info["states"] == {"success": m}
                section.check(f"{sync}, {label}: each of {m} probes ran exactly once and is marked success", ok,
                              f"ran {info['ran']}, twice {info['twice']}, states {info['states']}")
                p50, p90, p99 = (percentile(lat, p) for p in (50, 90, 99))
                worst = max(lat) if lat else float("nan")
                rows.append(Row(f"ents worker, {label}: p50", p50, "ms", n=len(lat), is_ents=True))
                rows.append(Row(f"ents worker, {label}: p90", p90, "ms", n=len(lat), is_ents=True))
                rows.append(Row(f"ents worker, {label}: p99", p99, "ms", n=len(lat), is_ents=True,
                                detail=f"max {worst:.1f} ms; min {min(lat) if lat else float('nan'):.1f} ms"))
                calls = info["call_ms"]
                rows.append(Row("(for comparison) the scheduling run_mutation call itself: p50", percentile(calls, 50), "ms",
                                n=len(calls), detail=f"p99 {percentile(calls, 99):.1f} ms, max {max(calls):.1f} ms"))
                section.targets.append(Target(f"{sync}, {label}: p99 latency in ms", p99, "<=", 20.0, "issue 3: p99 under 20 ms",
                                              unit="ms"))
            section.tables.append(Table(f"Due-to-start latency, synchronous={sync} (ms; lower is better)", rows, False, None, compare=False))
    section.notes.append("Latencies are wall-clock: start of the probe's handler minus its due time.")
    section.notes.append("The scheduling calls commit every 1/rate seconds from the main thread while the worker claims "
                         "and runs jobs: both need SQLite's single writer lock, so at FULL a slow fsync of one delays the "
                         "other. Compare the latency tail with the tail of the scheduling call itself.")


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=None, help="probes per variant (default 500)")
    p.add_argument("--rate", type=float, default=None, help="probes scheduled per second (default 50)")
    p.add_argument("--sync", default="normal,full")
    run_main("latency", "Due-to-start latency under a steady trickle", build, p)


if __name__ == "__main__":
    main()
