"""App configuration the README promises: SQLite durability settings, PostgreSQL URL options
and its default blob directory, and small lifecycle guarantees."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from ents import App, ConfigurationError, define_ent, define_ent_schema
from ents.testing import FakeClock

schema = define_ent_schema({"notes": define_ent({"text": str})})


def _pragma(app: App, name: str) -> Any:
    with app.backend.connection() as conn:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]


@pytest.mark.parametrize("option, expected", [("", 2), ("?synchronous=normal", 1), ("?synchronous=off", 0)])
def test_sqlite_synchronous_defaults_to_full(tmp_path: Path, option: str, expected: int) -> None:
    with App(schema, f"sqlite:///{tmp_path / 'a.db'}{option}") as app:
        assert _pragma(app, "synchronous") == expected  # FULL=2, NORMAL=1, OFF=0


def test_sqlite_busy_timeout_option(tmp_path: Path) -> None:
    with App(schema, f"sqlite:///{tmp_path / 'a.db'}?busy_timeout=1234") as app:
        assert _pragma(app, "busy_timeout") == 1234


@pytest.mark.parametrize(
    "option", ["pool_size=0", "pool_size=many", "connect_timeout=soon", "connect_timeout=-1", "connect_timeout=0", "connect_timeout=inf"]
)
def test_bad_postgres_url_options(option: str) -> None:
    """Refused before any connection is tried (the port is closed: a connection attempt
    would fail too, but with another message)."""
    pytest.importorskip("psycopg")
    name = option.split("=")[0]
    with pytest.raises(ConfigurationError, match=name) as e:
        App(schema, f"postgresql://postgres@127.0.0.1:1/x?{option}")
    assert "Cannot connect" not in str(e.value)


def test_postgres_blobs_default_to_a_directory_per_database_and_schema(request: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.pg import fresh_schema_url

    url = fresh_schema_url(request)
    monkeypatch.chdir(tmp_path)
    with App(schema, url) as app:
        schema_name = url.rsplit("%3D", 1)[1]
        assert app.blobs.directory.parts[0] == "ents-files"
        assert app.blobs.directory.name.endswith(f"_{schema_name}")
        file_id = app.run(lambda ctx: ctx.storage.store(b"x"))
        assert app.run(lambda ctx: ctx.storage.get(file_id)) == b"x"
        assert str(app.blobs.directory).startswith("ents-files" + os.sep)


def test_stopping_a_worker_that_never_started_returns() -> None:
    with App(schema, "sqlite://") as app:
        app.worker().stop()


def test_actions_read_the_app_clock_as_ctx_now() -> None:
    clock = FakeClock()
    with App(schema, "sqlite://", clock=clock) as app:

        @app.action
        def when(ctx) -> float:
            return ctx.now

        @app.action
        async def when_async(ctx) -> float:
            return ctx.now

        clock.advance(1234)
        assert app.run_action(when) == clock.now() == app.run_action(when_async)


# -- odd databases are configuration errors ----------------------------------------------


@pytest.mark.parametrize(
    "url_tail, words",
    [
        ("notes.db?busy_timeout=abc", "busy_timeout"),
        ("notes.db?busy_timeout=-1", "busy_timeout"),
        ("notes.db?busy_timeout=1e99", "busy_timeout"),
        ("bad\x00name.db", "NUL"),
        ("bad%00name.db", "NUL"),
        ("garbage.db", "not a database"),
    ],
)
def test_odd_sqlite_databases_are_configuration_errors(tmp_path: Path, url_tail: str, words: str) -> None:
    (tmp_path / "garbage.db").write_bytes(b"this is not an SQLite database, only some text. " * 40)
    with pytest.raises(ConfigurationError, match=words):
        App(schema, f"sqlite:///{tmp_path}/{url_tail}")


@pytest.mark.parametrize(
    "netloc, words",
    [
        ("[::1/db", "IPv6"),
        ("[zz]:5432/db", "IPv6"),
        ("[::1]x/db", "IPv6"),
        ("::1:5432/db", "IPv6"),
        ("127.0.0.1:99999/db", "99999"),
        ("127.0.0.1:0/db", "port"),
        ("127.0.0.1:-1/db", "port"),
        ("127.0.0.1:abc/db", "port"),
        ("127.0.0.1:5432,127.0.0.1:70000/db", "70000"),
        ("127.0.0.1/db?port=65536", "65536"),
    ],
)
def test_malformed_postgres_hosts_and_ports_are_configuration_errors(netloc: str, words: str) -> None:
    """Refused before any connection is tried (libpq would fail only after its timeout)."""
    pytest.importorskip("psycopg")
    with pytest.raises(ConfigurationError, match=words) as e:
        App(schema, f"postgresql://app:hunter2@{netloc}")
    assert "Cannot connect" not in str(e.value) and "hunter2" not in str(e.value)


def _make_read_only(paths: list[Path]) -> Any:
    """Make ``paths`` unwritable, even for root (who ignores permission bits): the immutable
    attribute where the filesystem has it, else permissions. Returns an undo function, or
    None when neither can bind this process."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in paths}
        for p in paths:
            p.chmod(0o555 if p.is_dir() else 0o444)
        return lambda: [p.chmod(m) for p, m in modes.items()]
    import shutil
    import subprocess

    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", *map(str, paths)], capture_output=True).returncode != 0:
        return None
    return lambda: subprocess.run([chattr, "-i", *map(str, paths)], capture_output=True, check=True)


def test_a_read_only_sqlite_database_is_a_configuration_error(tmp_path: Path) -> None:
    """As on a read-only mount: WAL mode must write the file and create -wal / -shm files
    beside it, so the App cannot open it; the error says why."""
    directory = tmp_path / "ro"
    directory.mkdir()
    url = f"sqlite:///{directory / 'notes.db'}"
    with App(schema, url) as app:
        app.run(lambda ctx: ctx.table("notes").insert({"text": "kept"}))
    undo = _make_read_only([directory / "notes.db", directory])
    if undo is None:
        pytest.skip("running as root on a filesystem without the immutable attribute: nothing is read-only to root")
    try:
        with pytest.raises(ConfigurationError, match="read-only"):
            App(schema, url)
    finally:
        undo()
    with App(schema, url) as app:  # writable again: nothing was lost
        assert [n.text for n in app.run(lambda ctx: ctx.table("notes").collect())] == ["kept"]


# -- a database URL's password is never shown ----------------------------------------------

SECRET = "pa55-w0rd_SECRET"


def test_no_message_repr_or_log_line_shows_the_password(request: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Every configuration error about a URL, repr(App), describe() and the worker's log
    lines show the URL without its password (user part, ?password= and key=value forms)."""
    pytest.importorskip("psycopg")
    from ents.backends import redact_url

    shown: list[str] = []
    bad_urls = [
        f"postgress://app:{SECRET}@127.0.0.1/db",  # a misspelt scheme
        f"mysql://app:{SECRET}@127.0.0.1/db",
        f"host=127.0.0.1 password={SECRET} dbname=db",
        f"postgresql://app:{SECRET}@127.0.0.1:1/db?pool_size=0",
        f"postgresql://app:{SECRET}@127.0.0.1:1/db?pool_size=many",
        f"postgresql://app:{SECRET}@127.0.0.1:1/db?connect_timeout=soon",
        f"postgresql://app:{SECRET}@127.0.0.1:1/db?connect_timeout=-1",
        f"postgresql://127.0.0.1:1/db?password={SECRET}&pool_size=0",
        f"postgresql://app:{SECRET}@[::1/db",
        f"postgresql://app:{SECRET}@127.0.0.1:99999/db",
        f"postgresql://app:{SECRET}@127.0.0.1:1/db?connect_timeout=0.2",  # unreachable
        f"postgresql://app:{SECRET}/x@127.0.0.1:1/db?pool_size=0",  # an unescaped "/" in it
        f"postgresql://app:{SECRET[:8]}/{SECRET[8:]}@127.0.0.1:1/db?connect_timeout=0.2",
        f"sqlite://app:{SECRET}@host/db.sqlite",
    ]
    for url in bad_urls:
        with pytest.raises(ConfigurationError) as e:
            App(schema, url)
        shown += [str(e.value), repr(e.value)]
        shown.append(redact_url(url))

    from tests.pg import fresh_schema_url

    good = fresh_schema_url(request).replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@", 1)
    assert SECRET in good  # the server trusts loopback: the password is not checked
    with caplog.at_level("DEBUG", logger="ents"), App(schema, good) as app:
        shown += [repr(app), str(app), app.backend.describe()]
        app.worker().start().stop()
    shown += [r.getMessage() for r in caplog.records]
    assert any("postgres:***@" in text for text in shown)
    leaks = [text for text in shown if SECRET in text or SECRET[:6] in text or SECRET[8:] in text]
    assert not leaks, leaks
