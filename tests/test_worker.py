"""The worker: background running, graceful stop, concurrency, and several processes.

These tests use the real clock and real threads/processes; they wait for outcomes with a
generous timeout, never for a fixed time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ents import App, define_ent, define_ent_schema
from ents.scheduler import TRANSIENT_ACTION_ERROR
from tests.pg import wait_for

ROOT = Path(__file__).resolve().parent.parent

schema = define_ent_schema({"events": define_ent({"what": str})})


def jobs_by_state(app: App) -> dict[str, int]:
    out: dict[str, int] = {}
    for j in app.run(lambda ctx: ctx.table("_scheduled_functions").collect()):
        out[j.state.kind] = out.get(j.state.kind, 0) + 1
    return out


@pytest.fixture
def url(tmp_path, backend, request):
    if backend == "memory":
        pytest.skip("worker tests use a database several connections can share")
    from tests.conftest import _url_for

    return _url_for(backend, tmp_path, request)


def test_worker_runs_jobs_in_the_background_and_stops(url):
    app = App(schema, url)

    @app.internal_mutation
    def log(ctx, what: str) -> None:
        ctx.table("events").insert({"what": what})

    with app.worker() as worker:
        app.run(lambda ctx: ctx.scheduler.run_after(0, log, {"what": "now"}))
        app.run(lambda ctx: ctx.scheduler.run_after(50, log, {"what": "soon"}))
        assert wait_for(lambda: len(app.run(lambda ctx: ctx.table("events").collect())) == 2)
    assert worker.jobs_run == 2
    assert jobs_by_state(app) == {"success": 2}
    app.close()


def test_stop_lets_running_actions_finish(url):
    app = App(schema, url)
    started = threading.Event()
    saw_stop: list[bool] = []

    @app.internal_action
    def slow(ctx) -> None:
        started.set()
        # Still running when stop() is called: it goes on only once the stop was asked for.
        saw_stop.append(wait_for(lambda: worker._stopping))
        ctx.run_mutation(log, {"what": "finished"})

    @app.internal_mutation
    def log(ctx, what: str) -> None:
        ctx.table("events").insert({"what": what})

    worker = app.worker().start()
    app.run(lambda ctx: ctx.scheduler.run_after(0, slow, {}))
    assert started.wait(60), "the worker never started the action"
    worker.stop()
    assert saw_stop == [True]
    assert [e.what for e in app.run(lambda ctx: ctx.table("events").collect())] == ["finished"]
    assert jobs_by_state(app) == {"success": 1}
    app.close()


def test_actions_run_concurrently_up_to_the_limit(url):
    app = App(schema, url)
    lock = threading.Lock()
    state = {"now": 0, "max": 0, "done": 0}
    # Each action waits until three run at once: with a limit below 3 the barrier breaks
    # (the actions fail), above it a fourth would start beside them (max > 3).
    together = threading.Barrier(3, timeout=60)

    @app.internal_action
    def work(ctx, i: int) -> None:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        together.wait()
        with lock:
            state["now"] -= 1
            state["done"] += 1

    with app.worker(concurrency=3):
        app.run(lambda ctx: [ctx.scheduler.run_after(0, work, {"i": i}) for i in range(12)])
        assert wait_for(lambda: state["done"] == 12, timeout=120), (state, jobs_by_state(app))
    assert state["max"] == 3
    assert jobs_by_state(app) == {"success": 12}
    app.close()


def test_cancel_of_a_running_action(url):
    app = App(schema, url)
    started, release = threading.Event(), threading.Event()

    @app.internal_mutation
    def log(ctx, what: str) -> None:
        ctx.table("events").insert({"what": what})

    @app.internal_action
    def blocked(ctx) -> None:
        started.set()
        assert release.wait(60), "the test never released the action"
        ctx.scheduler.run_after(0, log, {"what": "after cancel"})
        ctx.run_mutation(log, {"what": "action went on"})

    with app.worker():
        id = app.run(lambda ctx: ctx.scheduler.run_after(0, blocked, {}))
        assert started.wait(60), "the worker never started the action"
        app.run(lambda ctx: ctx.scheduler.cancel(id))
        release.set()
        assert wait_for(lambda: app.run(lambda ctx: ctx.db.system.get(id))["completed_time"] is not None and len(app.run(lambda ctx: ctx.table("events").collect())) == 1)
    # Run whatever is due now: a child wrongly left pending would run here (it must not).
    app.finish_in_progress_scheduled_functions()
    assert [e.what for e in app.run(lambda ctx: ctx.table("events").collect())] == ["action went on"]
    assert app.run(lambda ctx: ctx.db.system.get(id))["state"] == {"kind": "canceled"}
    children = [j for j in app.run(lambda ctx: ctx.table("_scheduled_functions").collect()) if j.name == log.name]
    assert [c.state.kind for c in children] == ["canceled"]
    app.close()


# -- several processes ---------------------------------------------------------------


def _start_worker(url: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """A worker process; its stderr goes to a file beside ``log`` (see :func:`_stderr`)."""
    env = dict(os.environ, ENTS_TEST_URL=url, ENTS_TEST_LOG=str(log), PYTHONPATH=str(ROOT))
    err = log.parent / f"worker-{len(list(log.parent.glob('worker-*.stderr')))}.stderr"
    with open(err, "wb") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "ents", "--log-level", "WARNING", "worker", "tests.apps.jobs_app:app", *extra],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=f,
        )


def _stderr(log: Path) -> str:
    """What the worker processes started with ``log`` wrote to stderr (for failure messages)."""
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(log.parent.glob("worker-*.stderr")))


def _jobs_app(url: str, log: Path) -> App:
    os.environ["ENTS_TEST_URL"] = url
    os.environ["ENTS_TEST_LOG"] = str(log)
    from tests.apps import jobs_app

    return jobs_app.make_app()


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(60)


def test_two_worker_processes_never_run_a_job_twice(url, tmp_path):
    log = tmp_path / "actions.log"
    app = _jobs_app(url, log)
    procs = [_start_worker(url, log), _start_worker(url, log)]
    try:
        for batch in range(4):
            app.run_mutation("jobs:schedule_many", {"prefix": f"m{batch}-", "n": 500})
        app.run_mutation("jobs:schedule_many", {"prefix": "a-", "n": 60, "kind": "action"})
        total = 4 * 500 + 60
        assert wait_for(lambda: jobs_by_state(app).get("success", 0) == total, timeout=240), (jobs_by_state(app), _stderr(log))
    finally:
        _stop(procs)
    assert jobs_by_state(app) == {"success": 2060}
    keys = [r.key for r in app.run(lambda ctx: ctx.table("runs").collect())]
    assert len(keys) == len(set(keys)) == 2060
    starts = [line.split()[1] for line in log.read_text().splitlines() if line.startswith("start")]
    assert len(starts) == len(set(starts)) == 60
    app.close()


def test_killed_worker_loses_no_mutation_and_reruns_no_action(url, tmp_path):
    log = tmp_path / "actions.log"
    app = _jobs_app(url, log)
    for batch in range(6):
        app.run_mutation("jobs:schedule_many", {"prefix": f"m{batch}-", "n": 500})
    # The actions outlive the victim: they are still running whenever it is killed.
    app.run_mutation("jobs:schedule_many", {"prefix": "slow-", "n": 4, "kind": "action", "seconds": 3600})
    victim = _start_worker(url, log)
    try:
        # Kill it while slow actions run and mutation batches are still being drained.
        assert wait_for(lambda: log.exists() and log.read_text().count("start") >= 4, timeout=120), ("the worker never started the four slow actions", _stderr(log))
        victim.send_signal(signal.SIGKILL)
        victim.wait(60)
        done_before = jobs_by_state(app)
        assert done_before.get("inProgress") == 4, (done_before, _stderr(log))
        # A new worker recovers the abandoned actions at once (their process is gone).
        survivor = _start_worker(url, log)
        try:
            assert wait_for(lambda: jobs_by_state(app).get("success", 0) == 3000 and jobs_by_state(app).get("failed", 0) == 4, timeout=240), (jobs_by_state(app), _stderr(log))
        finally:
            _stop([survivor])
    finally:
        _stop([victim])
    assert jobs_by_state(app) == {"success": 3000, "failed": 4}
    keys = [r.key for r in app.run(lambda ctx: ctx.table("runs").collect())]
    assert len(keys) == len(set(keys)) == 3000
    for j in app.run(lambda ctx: ctx.table("_scheduled_functions", "by_state", lambda q: q.eq("state", "failed")).collect()):
        assert j.state.error == TRANSIENT_ACTION_ERROR
    lines = log.read_text().splitlines()
    starts = [x.split()[1] for x in lines if x.startswith("start")]
    assert sorted(starts) == sorted(set(starts)) and len(starts) == 4  # never re-run
    assert not any(x.startswith("end") for x in lines)
    app.close()


# -- claiming actions ------------------------------------------------------------------


def test_finish_in_progress_claims_each_action_only_as_it_starts(make_app):
    """A claim commits a job as inProgress; one claimed before its turn would end failed,
    never run, if the process died first. So while one action runs, the others due are
    still pending."""
    app = make_app(schema)
    seen: list[dict[str, int]] = []

    @app.internal_query
    def states(ctx) -> dict[str, int]:
        out: dict[str, int] = {}
        for j in ctx.table("_scheduled_functions"):
            out[j.state.kind] = out.get(j.state.kind, 0) + 1
        return out

    @app.internal_action
    def work(ctx, i: int) -> None:
        seen.append(ctx.run_query(states, {}))

    app.run(lambda ctx: [ctx.scheduler.run_after(0, work, {"i": i}) for i in range(4)])
    assert app.finish_in_progress_scheduled_functions() == 4
    assert seen == [
        {"inProgress": 1, "pending": 3},
        {"success": 1, "inProgress": 1, "pending": 2},
        {"success": 2, "inProgress": 1, "pending": 1},
        {"success": 3, "inProgress": 1},
    ]


def test_a_worker_claims_only_the_actions_it_can_start(url):
    app = App(schema, url)
    release = threading.Event()
    started: list[int] = []

    @app.internal_action
    def blocked(ctx, i: int) -> None:
        started.append(i)
        release.wait(30)

    app.run(lambda ctx: [ctx.scheduler.run_after(0, blocked, {"i": i}) for i in range(5)])
    try:
        with app.worker(concurrency=2):
            assert wait_for(lambda: len(started) == 2, timeout=30)
            assert jobs_by_state(app) == {"inProgress": 2, "pending": 3}
            release.set()
            assert wait_for(lambda: jobs_by_state(app) == {"success": 5}, timeout=30)
    finally:
        release.set()
    app.close()


def test_a_dead_worker_on_this_machine_is_noticed_at_once(url):
    """A worker process on this machine that dies holding an action is noticed the moment
    it exits, not at the next housekeeping nor when its lease expires: here both are an
    hour away, so only the notice can end the wait."""
    import socket

    from ents.worker import Executor

    app = App(schema, url)

    @app.internal_action
    def held(ctx) -> None:  # never runs here: the process below claims it
        raise AssertionError("a claimed action ran again")

    @app.internal_mutation
    def log(ctx, what: str) -> None:
        ctx.table("events").insert({"what": what})

    # A stand-in for another worker process: it holds the action's lease for an hour.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        job = app.run(lambda ctx: ctx.scheduler.run_after(0, held, {}))
        claimed = Executor(app, f"{socket.gethostname()}:{other.pid}:other", lease_ms=3_600_000).claim_due_actions(5)
        assert [c[0] for c in claimed] == [app.codec.decode(job)[1]]
        with app.worker(housekeeping_interval=3600, lease_ms=3_600_000):
            # Once this job ran, the worker is past its start-up recovery (which would find
            # a process dead by then) and waits for work.
            app.run(lambda ctx: ctx.scheduler.run_after(0, log, {"what": "ready"}))
            assert wait_for(lambda: jobs_by_state(app).get("success") == 1, timeout=30)
            assert jobs_by_state(app) == {"success": 1, "inProgress": 1}
            other.kill()
            other.wait(30)
            assert wait_for(lambda: app.run(lambda ctx: ctx.db.system.get(job))["state"]["kind"] == "failed", timeout=30)
        assert app.run(lambda ctx: ctx.db.system.get(job))["state"] == {"kind": "failed", "error": TRANSIENT_ACTION_ERROR}
    finally:
        other.kill()
        other.wait(30)
    app.close()
