"""PostgreSQL-only guarantees: many worker processes, a killed worker, a server restart,
and clear errors when the driver or the server is missing."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from ents import App, ConfigurationError, DatabaseError, define_ent, define_ent_schema
from tests.pg import PrivateServer, fresh_schema_url, wait_for
from tests.test_worker import _jobs_app, _start_worker, _stderr, _stop, jobs_by_state


def test_missing_driver_gives_the_install_hint(monkeypatch):
    from ents.backends import open_backend

    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'ents\[postgres\]'"):
        open_backend("postgresql://localhost/x")


def test_an_sqlite_app_never_imports_the_postgresql_driver():
    """psycopg is an optional extra: an App on SQLite, its worker and its CLI run without it."""
    import subprocess

    code = (
        "import sys; from ents import App, define_ent, define_ent_schema; import ents.cli, ents.worker; "
        "app = App(define_ent_schema({'t': define_ent({'x': int})}), 'sqlite://'); "
        "app.run(lambda ctx: ctx.table('t').insert({'x': 1})); app.finish_in_progress_scheduled_functions(); "
        "print('psycopg' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_unreachable_server_is_a_clear_error(monkeypatch):
    """Opening gives up after the URL's connect_timeout (not the default 10 s, nor never)."""
    from ents.backends import postgres

    waits: list[float] = []

    class Pool(postgres.ConnectionPool):  # type: ignore[misc,type-arg]
        def open(self, wait: bool = False, timeout: float = 30.0) -> None:
            waits.append(timeout)
            super().open(wait=wait, timeout=timeout)

    monkeypatch.setattr(postgres, "ConnectionPool", Pool)
    schema = define_ent_schema({"t": define_ent({"x": int})})
    with pytest.raises(ConfigurationError, match="Cannot connect to PostgreSQL at postgresql://127.0.0.1:1/"):
        App(schema, "postgresql://postgres@127.0.0.1:1/nope?connect_timeout=1")
    assert waits == [1.0]


@pytest.fixture
def pg_url(request):
    return fresh_schema_url(request)


@pytest.mark.parametrize(
    "batches",
    [pytest.param(2, id="2000-jobs"), pytest.param(20, id="20000-jobs", marks=pytest.mark.slow)],
)
def test_four_workers_drain_many_jobs_with_one_killed(pg_url, tmp_path, batches):
    """Four worker processes drain batches of 1000 mutations and 10 actions each; one is
    SIGKILLed half-way. The default run drains 2,020 jobs, ``-m slow`` 20,200."""
    log = tmp_path / "actions.log"
    app = _jobs_app(pg_url, log)
    mutations, actions = 1000 * batches, 10 * batches
    total = mutations + actions
    for batch in range(batches):
        app.run_mutation("jobs:schedule_many", {"prefix": f"m{batch}-", "n": 1000})
    app.run_mutation("jobs:schedule_many", {"prefix": "a-", "n": actions, "kind": "action", "seconds": 0.01})
    procs = [_start_worker(pg_url, log, "--batch-size", "50") for _ in range(4)]
    try:
        assert wait_for(lambda: jobs_by_state(app).get("success", 0) >= total // 2, timeout=240), (jobs_by_state(app), _stderr(log))
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(60)
        assert wait_for(
            lambda: sum(v for k, v in jobs_by_state(app).items() if k in ("success", "failed")) == total, timeout=240
        ), (jobs_by_state(app), _stderr(log))
    finally:
        _stop(procs)
    states = jobs_by_state(app)
    # Mutations are never lost nor run twice; an action interrupted by the kill fails.
    keys = [r.key for r in app.run(lambda ctx: ctx.table("runs").collect())]
    assert len(keys) == len(set(keys))
    assert sum(1 for k in keys if k.startswith("m")) == mutations
    failed = app.run(lambda ctx: ctx.table("_scheduled_functions", "by_state", lambda q: q.eq("state", "failed")).collect())
    assert all(j.state.error == "Transient error while executing action" and j.name == "jobs:slow_action" for j in failed)
    assert states.get("success", 0) + states.get("failed", 0) == total
    starts = [line.split()[1] for line in log.read_text().splitlines() if line.startswith("start")]
    assert len(starts) == len(set(starts))
    app.close()


def test_server_restart_loses_and_doubles_nothing(tmp_path):
    try:
        server = PrivateServer()
    except Exception as exc:
        if os.environ.get("ENTS_REQUIRE_POSTGRES"):
            pytest.fail(f"cannot start a private PostgreSQL server: {exc}")
        pytest.skip(f"cannot start a private PostgreSQL server: {exc}")
    schema = define_ent_schema({"runs": define_ent({}).field("key", str, unique=True)})
    app = App(schema, server.url)

    @app.internal_mutation
    def record(ctx, key: str) -> None:
        ctx.table("runs").insert({"key": key})

    @app.mutation
    def submit(ctx, key: str) -> None:
        ctx.scheduler.run_after(0, record, {"key": key})

    accepted: list[str] = []
    unsure: list[str] = []
    stop = threading.Event()

    def producer() -> None:
        i = 0
        while not stop.is_set():
            key = f"k{i}"
            i += 1
            try:
                app.run_mutation(submit, {"key": key})
                accepted.append(key)
            except DatabaseError:
                unsure.append(key)  # lost connection at commit: may or may not exist
            time.sleep(0.002)

    worker = app.worker(housekeeping_interval=1).start()
    t = threading.Thread(target=producer)
    t.start()
    try:
        assert wait_for(lambda: len(accepted) >= 200, timeout=60)
        server.restart()
        before = len(accepted)
        assert wait_for(lambda: len(accepted) >= before + 200, timeout=60)
    finally:
        stop.set()
        t.join()
    assert wait_for(lambda: jobs_by_state(app).get("pending", 0) == 0, timeout=60)
    worker.stop()
    keys = [r.key for r in app.run(lambda ctx: ctx.table("runs").collect())]
    # A job run twice would fail on the unique key: every job succeeded, once.
    assert set(jobs_by_state(app)) == {"success"}, jobs_by_state(app)
    assert set(accepted) <= set(keys)
    assert set(keys) <= set(accepted) | set(unsure)
    app.close()
    server.stop()


def test_processes_opening_a_fresh_database_at_once_all_succeed(pg_url, tmp_path):
    """Schema creation is serialized (a session advisory lock before the transaction): six
    processes opening one empty database together all get the same tables and numbering."""
    import subprocess

    code = (
        "import sys, json; from tests.schemas import blog; from ents import App; "
        "app = App(blog(), sys.argv[1], storage_dir=sys.argv[2]); "
        "print(json.dumps(sorted(app.codec.numbers.items()))); app.close()"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, pg_url, str(tmp_path / "blobs")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        for _ in range(6)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-800:] for _, err in outs]
    assert len({out for out, _ in outs}) == 1


def test_a_job_scheduled_by_another_process_wakes_the_worker_at_once(pg_url, monkeypatch):
    """The LISTEN thread hands each notification on as it arrives. Every other way the
    worker could find the job is made an hour long: the listener's own wait between looks
    at whether it must stop (which used to be when notifications were handed on),
    housekeeping, and there is no due time to sleep until (the job is scheduled while the
    worker sleeps). So the job can only run within the 30 s allowed if the notification
    woke the worker; the bound is a deadline for a failure, not a speed measurement."""
    import ents.backends.postgres as pg

    monkeypatch.setattr(pg, "LISTEN_WAIT_S", 3600.0)
    schema = define_ent_schema({"events": define_ent({"what": str})})

    def make() -> App:
        app = App(schema, pg_url)

        @app.internal_mutation(name="listen:log")
        def log(ctx, what: str) -> None:
            ctx.table("events").insert({"what": what})

        return app

    worker_app, other = make(), make()  # two pools: the worker's process never sees the commit
    try:
        with worker_app.worker(housekeeping_interval=3600) as worker:
            # The first job proves the worker listens (its LISTEN ran, its start-up is over).
            for what in ("first", "second", "third"):
                # Scheduled only once the worker sleeps: not while it still looks for work.
                assert worker._sleeping.wait(30)
                other.run(lambda ctx: ctx.scheduler.run_after(0, "listen:log", {"what": what}))  # noqa: B023
                assert wait_for(lambda: what in [e.what for e in other.run(lambda ctx: ctx.table("events").collect())], timeout=30), what  # noqa: B023
        assert worker.jobs_run == 3
    finally:
        worker_app.close()
        other.close()


def test_a_statement_that_can_never_succeed_is_not_retried(pg_url):
    """PostgreSQL refuses an index entry over a third of a page ("index row requires ...
    bytes"); that is no lost connection, so it fails at once instead of being retried for
    30 s and reported as an unavailable database. Nothing is written."""
    schema = define_ent_schema({"docs": define_ent({}).field("key", str, unique=True)})
    app = App(schema, pg_url)
    try:
        big = "".join(f"{i:08x}" for i in range(200_000))  # 1.6 MB that does not compress away
        with pytest.raises(DatabaseError) as err:
            app.run(lambda ctx: ctx.table("docs").insert({"key": big}))
        assert "stayed unavailable" not in str(err.value)
        assert app.run(lambda ctx: len(ctx.table("docs"))) == 0
    finally:
        app.close()


def test_url_options_with_spaces_reach_the_server(pg_url):
    """``options=-c a=b -c c=d`` is passed on as written (a space is not turned into '+')."""
    base, _, opts = pg_url.partition("options=")
    from urllib.parse import quote, unquote

    url = base + "options=" + quote(unquote(opts) + " -c statement_timeout=12345")
    schema = define_ent_schema({"docs": define_ent({"n": int})})
    app = App(schema, url)
    try:
        with app.backend.connection() as conn:
            assert conn.execute("SHOW statement_timeout").fetchone()[0] == "12345ms"
            conn.rollback()
    finally:
        app.close()


def test_apps_in_different_schemas_notify_on_different_channels(request):
    """Workers of an app are woken by jobs of that app, not by those of an app in another
    schema of the same database."""
    schema = define_ent_schema({"docs": define_ent({"n": int})})
    first, second = App(schema, fresh_schema_url(request)), App(schema, fresh_schema_url(request))
    again = App(schema, first.url)
    try:
        assert first.backend._job_channel() != second.backend._job_channel()
        assert first.backend._job_channel() == again.backend._job_channel()
    finally:
        for app in (first, second, again):
            app.close()
