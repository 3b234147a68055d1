"""Concurrency: several processes scheduling, cancelling, deleting and running at once.

Driver processes (``tests/apps/driver.py``) schedule jobs due now or soon, cancel them,
create ents with a job linked through an edge with ``deletion="hard"`` and delete them,
and fight over unique emails, while two worker processes run the jobs. The cancel and
delete mutations record, atomically with what they do, the job's state just before they
acted. Afterwards:

* a job canceled while pending never ran (no run row, no action start in the side-effect
  log); one canceled while its action ran ended ``canceled``,
* a job linked to an ent deleted while the job was pending never ran,
* every job that was not canceled ran exactly once and succeeded,
* no unique field holds a duplicate, and no ent points at a deleted one.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ents import App, UniqueConstraintError
from tests.apps import crash_app
from tests.reliability import (
    Procs,
    db_url,
    effect_log,
    jobs,
    soak_count,
    sqlite_integrity,
    wait_until,
)

SEEDS = [int(os.environ["ENTS_CONCURRENCY_SEED"])] if os.environ.get("ENTS_CONCURRENCY_SEED") else [7, 8]


@pytest.fixture
def url(backend: str, tmp_path: Path, request: Any) -> str:
    return db_url(backend, tmp_path, request)


def run_contention(url: str, tmp_path: Path, seed: int, drivers: int = 3, workers: int = 2, ops: int = 120) -> None:
    rng = random.Random(seed)
    procs = Procs(url, tmp_path)
    app = crash_app.make_app(url, with_cron=False)
    try:
        running = [procs.worker(cron=False, extra=("--concurrency", str(rng.choice([1, 4, 8])))) for _ in range(workers)]
        clients = [procs.driver(str(seed * 100 + d), str(ops)) for d in range(drivers)]
        for c in clients:
            assert c.wait(300) == 0, procs.stderr()
        assert wait_until(
            lambda: not [j for j in jobs(app) if j["state"]["kind"] in ("pending", "inProgress")], timeout=120
        ), procs.stderr()
        for w in running:
            procs.stop(w)
        check(app, procs)
        if url.startswith("sqlite"):
            sqlite_integrity(url)
    finally:
        procs.close()
        app.close()


def check(app: App, procs: Procs) -> None:
    err = procs.stderr()
    all_jobs = {j["_id"]: j for j in jobs(app)}
    runs = app.run(lambda ctx: [r.key for r in ctx.table("runs")])
    assert len(runs) == len(set(runs)), err
    run_keys = set(runs)
    starts = Counter(key for event, key, _ in effect_log(procs.log) if event == "start")
    assert all(n == 1 for n in starts.values()), (starts, err)
    seen = app.run(lambda ctx: [o.doc() for o in ctx.table("observations")])
    saw: dict[str, set[str]] = {}
    for o in seen:
        if o["state_before"] in ("pending", "inProgress"):  # a delete may find its job finished
            saw.setdefault(o["job"], set()).add(o["state_before"])

    def ran(j: dict[str, Any]) -> bool:
        key = j["args"]["key"]
        if j["name"] == "crash:bump":
            return key in run_keys
        if j["name"] == "crash:act":
            return starts[key] > 0
        if j["name"] == "crash:never":
            return f"linked-{key}" in run_keys
        if j["name"] == "crash:never_action":
            return starts[f"linked-{key}"] > 0
        raise AssertionError(j)

    assert all_jobs, err
    for id, j in all_jobs.items():
        kind = j["state"]["kind"]
        assert kind in ("success", "canceled"), (j, err)
        if kind == "success":
            assert ran(j), (j, err)
            continue
        # Canceled (by a cancel or by deleting its linked ent).
        before = saw.get(id)
        assert before, (j, "canceled but nobody canceled it", err)
        if before == {"pending"}:
            assert not ran(j), (j, "ran although canceled while pending", err)
        else:
            assert before <= {"pending", "inProgress"} and j["name"] in ("crash:act", "crash:never_action"), (j, before)
    # Observations match reality: a job seen pending by a cancel ended canceled.
    for o in seen:
        if o["state_before"] in ("pending", "inProgress"):
            assert all_jobs[o["job"]]["state"]["kind"] == "canceled", (o, all_jobs[o["job"]])
        else:
            assert all_jobs[o["job"]]["state"]["kind"] == o["state_before"], (o, all_jobs[o["job"]])

    # Uniqueness: no duplicate email, even under concurrent inserts and renames.
    emails = app.run(lambda ctx: [u.email for u in ctx.table("users")])
    assert emails and len(emails) == len(set(emails)), emails
    # Edges: no pet points at a deleted owner; deleted owners' jobs are canceled.
    owners = set(app.run(lambda ctx: [o._id for o in ctx.table("owners")]))
    assert all(p["owner_id"] in owners for p in app.run(lambda ctx: ctx.table("pets").docs()))


@pytest.mark.parametrize("seed", SEEDS)
def test_drivers_and_workers_at_once(url: str, tmp_path: Path, seed: int) -> None:
    run_contention(url, tmp_path, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2000, 2000 + max(soak_count() // 4, 1)))
def test_concurrency_soak(url: str, tmp_path: Path, seed: int) -> None:
    if not soak_count():
        pytest.skip("set ENTS_SOAK=<seeds> to run the concurrency soak")
    run_contention(url, tmp_path, seed, drivers=4, workers=3, ops=300)


def test_threads_racing_for_one_unique_value(make_app: Any) -> None:
    """Many threads insert the same email at once: exactly one wins, the rest get
    UniqueConstraintError (never a raw driver error, never a duplicate)."""
    import threading

    app = make_app(crash_app.schema)
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def insert(i: int) -> None:
        barrier.wait()
        try:
            app.run(lambda ctx: ctx.table("users").insert({"name": str(i), "email": "same@x"}))
            outcomes.append("ok")
        except UniqueConstraintError as exc:
            assert "same@x" in str(exc) and "users" in str(exc)
            outcomes.append("dup")
        except Exception as exc:  # pragma: no cover - reported below
            outcomes.append(repr(exc))

    threads = [threading.Thread(target=insert, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["dup"] * 7 + ["ok"], outcomes
    assert len(app.run(lambda ctx: ctx.table("users").docs())) == 1
