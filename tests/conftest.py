"""Shared fixtures: every contract test runs against each available backend.

``make_app(schema, **kwargs)`` builds an App on the backend of the current parameter:
``memory`` (sqlite://), ``file`` (a temporary SQLite file) and ``postgres`` (a fresh schema
on a PostgreSQL server; see tests/pg.py for how one is found or started).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from ents import App
from ents.testing import FakeClock

pytest_plugins = ["pytester", "tests.overrun"]

# Hypothesis' own clocks would make an outcome depend on the machine's speed: no deadline
# per example and no "too slow" health check (tests that pass their own settings list
# their suppressed health checks, too_slow among them). A failure prints its reproducer.
settings.register_profile("ents", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.load_profile("ents")

BACKENDS = [b.strip() for b in os.environ.get("ENTS_TEST_BACKENDS", "memory,file,postgres").split(",") if b.strip()]


def _url_for(kind: str, tmp_path: Any, request: Any) -> str:
    if kind == "memory":
        return "sqlite://"
    if kind == "file":
        return f"sqlite:///{tmp_path / 'test.db'}"
    if kind == "postgres":
        from tests.pg import fresh_schema_url

        return fresh_schema_url(request)
    raise ValueError(kind)


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist the controller finds (or starts) the PostgreSQL server before it
    # starts its workers, which inherit it: one throwaway server per run, not per worker.
    controller = bool(getattr(config.option, "numprocesses", None)) and not os.environ.get("PYTEST_XDIST_WORKER")
    if controller and "postgres" in BACKENDS:
        from tests.pg import share_server

        share_server()


@pytest.fixture(params=BACKENDS)
def backend(request: Any) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Any, request: Any) -> str:
    return _url_for(backend, tmp_path, request)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_app(db_url: str, clock: FakeClock, tmp_path: Any) -> Iterator[Callable[..., App]]:
    apps: list[App] = []

    def make(schema: Any, **kwargs: Any) -> App:
        kwargs.setdefault("clock", clock)
        if db_url.startswith("postgresql"):
            kwargs.setdefault("storage_dir", str(tmp_path / "blobs"))
        app = App(schema, kwargs.pop("url", db_url), **kwargs)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()
