"""Profile the ents side of a benchmark with cProfile and print the hot spots.

    python -m bench.profile read_path            # ctx.table("users").map(lambda u: u.edge("profile").bio), 10k users
    python -m bench.profile get|insert|patch     # point operations, one per transaction (run_query / run_mutation)
    python -m bench.profile insert_batch|patch_batch|db_patch_batch   # many in one app.run
    python -m bench.profile cascade              # p.delete() for 10k parents with 3 children + a job each
    python -m bench.profile drain                # worker executor: run_due_mutations over 20k due bump jobs
    options: --sort tottime|cumulative  --top N  --n N (size)

Only the ents code path is profiled (setup is not). Profiling slows Python code down by
a roughly constant factor, so read the shares, not the absolute times.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import os
import pstats
import random
import time
from collections.abc import Callable
from typing import Any

from .common import temp_dir


def prepare_read_path(d: str, n: int) -> Callable[[], Any]:
    from .read_path import make_ents_app, seed_ents

    order = list(range(n))
    random.Random(7).shuffle(order)
    app = make_ents_app(os.path.join(d, "ents.db"))
    seed_ents(app, n, order)
    app.run_query(app.bench_all_bios)
    return lambda: [app.run_query(app.bench_all_bios) for _ in range(5)]


def prepare_point(d: str, n: int, op: str) -> Callable[[], Any]:
    from .point_ops import make_ents_app

    app = make_ents_app(os.path.join(d, "ents.db"), "NORMAL")
    ids = app.run(lambda ctx: ctx.table("users").insert_many([{"name": f"u{i}", "email": f"u{i}@x"} for i in range(n)]))
    rng = random.Random(1)
    picks = [ids[rng.randrange(n)] for _ in range(n)]
    fns = app.fns
    serial = itertools.count()
    if op == "get":
        return lambda: [app.run_query(fns["get"], {"id": i}) for i in picks]
    if op == "insert":
        return lambda: [app.run_mutation(fns["insert"], {"name": "x", "email": f"p{next(serial)}@x"}) for _ in range(n)]
    if op == "patch":
        return lambda: [app.run_mutation(fns["patch"], {"id": i, "name": "renamed"}) for i in picks]
    if op == "insert_batch":
        def ins(ctx: Any) -> None:
            t = ctx.table("users")
            for _ in range(n):
                t.insert({"name": "x", "email": f"b{next(serial)}@x"})

        return lambda: app.run(ins)
    if op == "patch_batch":
        def pat(ctx: Any) -> None:
            t = ctx.table("users")
            for i in picks:
                t.get_x(i).patch({"name": "batch"})

        return lambda: app.run(pat)
    if op == "db_patch_batch":
        def dbpat(ctx: Any) -> None:
            patch = ctx.db.patch
            for i in picks:
                patch(i, {"name": "batch"})

        return lambda: app.run(dbpat)
    raise SystemExit(f"unknown op {op}")


def prepare_cascade(d: str, n: int) -> Callable[[], Any]:
    from .cascade import ents_public_delete, open_ents, seed_ents

    path = os.path.join(d, "cascade.db")
    seed_ents(path, [("a", n), ("b", max(n // 10, 1))])
    app = open_ents(path)
    return lambda: ents_public_delete(app)


def prepare_drain(d: str, n: int) -> Callable[[], Any]:
    from ents.worker import Executor

    from .scheduler import open_ents

    app = open_ents(os.path.join(d, "drain.db"), "NORMAL")
    cid = app.run(lambda ctx: ctx.table("counters").insert({"name": "jobs", "value": 0}))
    for start in range(0, n, 1000):
        app.run_mutation(app.bench["enqueue"], {"counter": cid, "n": min(1000, n - start)})
    ex = Executor(app, owner="profile")

    def drain() -> None:
        while ex.run_due_mutations(limit=100):
            pass

    return drain


CASES = {
    "read_path": (prepare_read_path, 10_000),
    "get": (lambda d, n: prepare_point(d, n, "get"), 5000),
    "insert": (lambda d, n: prepare_point(d, n, "insert"), 5000),
    "patch": (lambda d, n: prepare_point(d, n, "patch"), 5000),
    "insert_batch": (lambda d, n: prepare_point(d, n, "insert_batch"), 10_000),
    "patch_batch": (lambda d, n: prepare_point(d, n, "patch_batch"), 10_000),
    "db_patch_batch": (lambda d, n: prepare_point(d, n, "db_patch_batch"), 10_000),
    "cascade": (prepare_cascade, 10_000),
    "drain": (prepare_drain, 20_000),
}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    p.add_argument("case", choices=sorted(CASES))
    p.add_argument("--sort", default="tottime", choices=["tottime", "cumulative"])
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--n", type=int, default=None)
    args = p.parse_args()
    prepare, default_n = CASES[args.case]
    with temp_dir("profile") as d:
        run = prepare(d, args.n or default_n)
        t0 = time.perf_counter()
        run()
        plain = time.perf_counter() - t0
        prof = cProfile.Profile()
        if args.case in ("cascade", "drain"):  # destructive: profile a second, fresh copy
            with temp_dir("profile2") as d2:
                run = prepare(d2, args.n or default_n)
                prof.enable()
                run()
                prof.disable()
        else:
            prof.enable()
            run()
            prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.strip_dirs().sort_stats(args.sort).print_stats(args.top)
    print(f"{args.case}: {plain * 1000:.1f} ms without the profiler")
    print(buf.getvalue())


if __name__ == "__main__":
    main()
