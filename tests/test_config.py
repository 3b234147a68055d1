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
