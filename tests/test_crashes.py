"""Crash tests: worker processes SIGKILLed at chosen and random points, then restarted.

Each scenario, driven by a seed, runs a few rounds. Every round schedules fresh work
(mutations, actions, cascading deletes of ents with linked jobs; a cron ticks all along)
and starts a worker that kills itself the n-th time it reaches one crash point (see
``tests/apps/crash_app.py``: inside a mutation, just before or after a COMMIT, inside an
action, inside a cascading delete, while a cron advances) or is killed by the test at a
random moment. A clean worker then finishes the work, and the invariants are checked:

* every scheduled mutation applied exactly once (unique run keys and counters),
* no action started twice (a side-effect log kept outside the database),
* every interrupted action ``failed`` with "Transient error while executing action",
* no job left ``inProgress`` and none left pending past its due time,
* a cascading delete happened entirely or not at all, and a job linked to a deleted
  ent with ``deletion="hard"`` never ran,
* cron occurrences ran exactly once each and never two at a time,
* SQLite's ``PRAGMA integrity_check`` is ok.

CI runs a few seeds per backend; ``ENTS_SOAK=200 ./scripts/test -m slow tests/test_crashes.py``
runs 200 seeds per backend. ``ENTS_CRASH_SEED=<n>`` replays one seed.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ents import App
from ents.scheduler import TRANSIENT_ACTION_ERROR
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

POINTS = ("mutation", "commit", "postcommit", "action", "cascade", "cron", "random")
CI_SEEDS = [int(os.environ["ENTS_CRASH_SEED"])] if os.environ.get("ENTS_CRASH_SEED") else [1, 2]


@pytest.fixture
def url(backend: str, tmp_path: Path, request: Any) -> str:
    return db_url(backend, tmp_path, request)


def _counter(app: App, name: str) -> int:
    row = app.run(lambda ctx: ctx.table("counters").get("name", name))
    return int(row.n) if row is not None else 0


def _settled(app: App) -> bool:
    now = time.time() * 1000
    for j in jobs(app):
        kind = j["state"]["kind"]
        if j["name"] == "crash:tick":
            continue
        if kind == "inProgress" or (kind == "pending" and j["scheduled_time"] <= now):
            return False
    return True


def run_scenario(url: str, tmp_path: Path, seed: int, rounds: int = 3) -> list[str]:
    """One seeded crash scenario; returns what happened in each round (for messages)."""
    rng = random.Random(seed)
    procs = Procs(url, tmp_path)
    app = crash_app.make_app(url)
    history: list[str] = []
    try:
        for r in range(rounds):
            work = {
                "prefix": f"r{r}-",
                "mutations": rng.randint(20, 300),
                "actions": rng.randint(1, 6),
                "action_seconds": rng.choice([0.0, 0.05, 0.5]),
                "owners": rng.randint(1, 4),
            }
            app.run_mutation("crash:seed", work)
            point = rng.choice(POINTS)
            n = {
                "mutation": rng.randint(1, work["mutations"]),
                "commit": rng.randint(1, 12),
                "postcommit": rng.randint(1, 12),
                "action": rng.randint(1, work["actions"]),
                "cascade": rng.randint(1, work["owners"]),
                "cron": rng.randint(1, 3),
                "random": 0,
            }[point]
            if point == "random":
                proc = procs.worker()
                time.sleep(rng.uniform(0.3, 3.0))
                procs.kill(proc)
            else:
                proc = procs.worker(f"{point}:{n}")
                try:
                    proc.wait(120)
                except subprocess.TimeoutExpired:
                    procs.kill(proc)  # the point was not reached; a kill from outside then
            history.append(f"round {r}: {point}:{n} -> rc {proc.returncode}")

        survivor = procs.worker()
        try:
            assert wait_until(lambda: _settled(app), timeout=180), (history, procs.stderr())
            # The cron lives on after the crashes: wait for two more ticks.
            ticks = _counter(app, "ticks")
            assert wait_until(lambda: _counter(app, "ticks") >= ticks + 2, timeout=60), (history, procs.stderr())
        finally:
            procs.stop(survivor)
        check_invariants(app, procs, history)
        if url.startswith("sqlite"):
            sqlite_integrity(url)
    finally:
        procs.close()
        app.close()
    return history


def check_invariants(app: App, procs: Procs, history: list[str]) -> None:
    ctx_msg = f"{history}\n{procs.stderr()}"
    all_jobs = jobs(app)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for j in all_jobs:
        by_name.setdefault(j["name"], []).append(j)
    runs = app.run(lambda ctx: [r.key for r in ctx.table("runs")])
    assert len(runs) == len(set(runs)), ctx_msg
    run_keys = set(runs)
    log = effect_log(procs.log)
    starts = Counter(key for event, key, _ in log if event == "start")
    ends = Counter(key for event, key, _ in log if event == "end")

    # No job stuck: nothing in progress once a worker is back, nothing due left pending.
    assert not [j for j in all_jobs if j["state"]["kind"] == "inProgress"], ctx_msg

    # Scheduled mutations: each applied exactly once.
    bumps = by_name.get("crash:bump", [])
    assert bumps and all(j["state"]["kind"] == "success" for j in bumps), ctx_msg
    bump_keys = {j["args"]["key"] for j in bumps}
    assert bump_keys == {k for k in run_keys if not k.startswith(("act-", "linked-", "follow-"))}, ctx_msg
    assert _counter(app, "mutations") == len(bumps), ctx_msg
    # What a scheduled mutation scheduled exists exactly when its run committed, and ran once.
    follows = by_name.get("crash:follow", [])
    assert sorted(j["args"]["key"] for j in follows) == sorted(j["args"]["key"] for j in bumps if j["args"].get("follow")), ctx_msg
    assert all(j["state"]["kind"] == "success" for j in follows), ctx_msg
    assert {k for k in run_keys if k.startswith("follow-")} == {f"follow-{j['args']['key']}" for j in follows}, ctx_msg

    # Actions: never started twice; an interrupted one failed with the transient error.
    for j in by_name.get("crash:act", []):
        key = j["args"]["key"]
        kind = j["state"]["kind"]
        assert starts[key] <= 1, (key, ctx_msg)
        assert kind in ("success", "failed"), (j, ctx_msg)
        if kind == "success":
            assert starts[key] == 1 and ends[key] == 1 and f"act-{key}" in run_keys, (j, ctx_msg)
        else:
            assert j["state"]["error"] == TRANSIENT_ACTION_ERROR, (j, ctx_msg)
        if starts[key] and not ends[key]:
            assert kind == "failed", (j, ctx_msg)

    # Cascading deletes: all or nothing, and linked jobs never run.
    deletes = by_name.get("crash:delete_owner", [])
    assert deletes and all(j["state"]["kind"] == "success" for j in deletes), ctx_msg
    assert _counter(app, "deletes") == len(deletes), ctx_msg
    assert app.run(lambda ctx: ctx.table("owners").docs()) == [], ctx_msg
    assert app.run(lambda ctx: ctx.table("pets").docs()) == [], ctx_msg
    for name in ("crash:never", "crash:never_action"):
        for j in by_name.get(name, []):
            assert j["state"]["kind"] == "canceled", (j, ctx_msg)
    assert not [k for k in run_keys if k.startswith("linked-")], ctx_msg
    assert not [k for k in starts if k.startswith("linked-")], ctx_msg

    # Crons: each occurrence's mutation applied once; never two runs at a time.
    ticks = by_name.get("crash:tick", [])
    assert _counter(app, "ticks") == sum(1 for j in ticks if j["state"]["kind"] == "success"), ctx_msg
    assert sum(1 for j in ticks if j["state"]["kind"] in ("pending", "inProgress")) <= 1, ctx_msg
    assert all(j["state"]["kind"] in ("success", "pending") for j in ticks), ctx_msg
    times = [j["scheduled_time"] for j in ticks]
    assert len(times) == len(set(times)), ctx_msg


@pytest.mark.parametrize("seed", CI_SEEDS)
def test_sigkill_at_random_points_loses_and_doubles_nothing(url: str, tmp_path: Path, seed: int) -> None:
    run_scenario(url, tmp_path, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1000, 1000 + max(soak_count(), 1)))
def test_crash_soak(url: str, tmp_path: Path, seed: int) -> None:
    if not soak_count():
        pytest.skip("set ENTS_SOAK=<seeds> to run the crash soak")
    run_scenario(url, tmp_path, seed, rounds=5)


def test_every_crash_point_is_reached(url: str, tmp_path: Path) -> None:
    """Each named point really kills the worker (so the scenarios test what they claim)."""
    procs = Procs(url, tmp_path)
    app = crash_app.make_app(url)
    try:
        for i, point in enumerate(p for p in POINTS if p != "random"):
            app.run_mutation("crash:seed", {"prefix": f"p{i}-", "mutations": 5, "actions": 1, "owners": 1})
            proc = procs.worker(f"{point}:1")
            try:
                rc = proc.wait(120)
            except subprocess.TimeoutExpired:
                procs.kill(proc)
                rc = None
            assert rc == -9, (point, procs.stderr())
        survivor = procs.worker()
        try:
            assert wait_until(lambda: _settled(app), timeout=120), procs.stderr()
        finally:
            procs.stop(survivor)
        check_invariants(app, procs, ["every point once"])
    finally:
        procs.close()
        app.close()


# -- lost commit replies (the worker lives on) ---------------------------------------------------


def test_actions_claimed_by_a_commit_whose_reply_was_lost_are_not_stuck(make_app: Any) -> None:
    """A claim can commit although the worker saw an error (the connection dropped during
    COMMIT). The worker never runs those jobs; they must not stay ``inProgress`` under its
    lease forever, even while it keeps renewing the leases of the actions it does run."""
    from ents import DatabaseError, define_ent, define_ent_schema
    from ents.clock import SystemClock

    app = make_app(define_ent_schema({"events": define_ent({"what": str})}), clock=SystemClock())
    ran: list[str] = []
    release = threading.Event()

    @app.internal_action(name="lost:slow")
    def slow(ctx: Any) -> None:
        assert release.wait(120), "the test never released the action"

    @app.internal_action(name="lost:quick")
    def quick(ctx: Any, i: int) -> None:
        ran.append(f"quick {i}")

    worker = app.worker(lease_ms=300, housekeeping_interval=0.1)
    lost: list[tuple[Any, ...]] = []
    transact = app._transact

    def transact_losing_one_reply(body: Any, **kwargs: Any) -> Any:
        result = transact(body, **kwargs)
        # The claim of the quick actions commits, but its caller sees the connection drop.
        if kwargs.get("function") == "scheduler" and isinstance(result, list) and not lost:
            if result and all(isinstance(r, tuple) and r[1] == "lost:quick" for r in result):
                lost.extend(result)
                raise DatabaseError("Lost the database connection while committing `scheduler`; it may or may not have been applied")
        return result

    app._transact = transact_losing_one_reply  # type: ignore[method-assign]
    slow_id = app.run(lambda ctx: ctx.scheduler.run_after(0, slow, {}))
    with worker:
        assert wait_until(lambda: app.run(lambda ctx: ctx.db.system.get(slow_id))["state"]["kind"] == "inProgress", 30)
        ids = app.run(lambda ctx: [ctx.scheduler.run_after(0, quick, {"i": i}) for i in range(3)])
        assert wait_until(
            lambda: all(app.run(lambda ctx: ctx.db.system.get(i))["state"]["kind"] == "failed" for i in ids), timeout=60  # noqa: B023 - called at once, inside the loop
        ), [app.run(lambda ctx: ctx.db.system.get(i)) for i in ids]  # noqa: B023 - called at once, inside the loop
        # The action that really runs keeps its lease meanwhile (it is not "recovered").
        assert app.run(lambda ctx: ctx.db.system.get(slow_id))["state"]["kind"] == "inProgress"
        release.set()
        assert wait_until(lambda: app.run(lambda ctx: ctx.db.system.get(slow_id))["state"]["kind"] == "success", 30)
    assert lost and ran == []
    for i in ids:
        assert app.run(lambda ctx: ctx.db.system.get(i))["state"]["error"] == TRANSIENT_ACTION_ERROR  # noqa: B023 - called at once, inside the loop
