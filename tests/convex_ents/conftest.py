"""Fixtures of the ported Convex Ents test suite.

Convex Ents' tests run each case inside one ``t.run(...)`` of convex-test: one mutation
transaction on a fresh database with the schema of its test project. Here each case builds an
App on the backend of the current parameter (``make_app`` from ``tests/conftest.py``: in-memory
SQLite, file SQLite, PostgreSQL) with a fake clock, and runs its body with ``app.run(...)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ents import App, EntSchema
from tests.convex_ents.schema import build_schema

#: the bytes ``getNewFileId`` of the test project stores (``setup.testing.ts``)
FILE_BYTES = bytes([0b00001100, 0b00000000])


def register_functions(app: App) -> None:
    """The functions of the test project that the tests schedule (``migrations.ts``)."""

    @app.internal_mutation(name="migrations:users_capitalize_name")
    def users_capitalize_name(ctx: Any, fn: str | None = None) -> None:
        # A convex-helpers migration in the original; the tests only schedule it (and cancel
        # it, or check that it is pending), so a plain mutation doing the same job will do.
        for user in ctx.table("users"):
            user.patch({"name": user.name[:1].upper() + user.name[1:]})


def ents_app(make_app: Callable[..., App], schema: EntSchema | None = None, **kwargs: Any) -> App:
    """An App with the test project's schema (or ``schema``) and functions."""
    app = make_app(schema if schema is not None else build_schema(), **kwargs)
    register_functions(app)
    return app


def new_file_id(ctx: Any) -> str:
    """``getNewFileId``: stores a two-byte file and returns its ``_storage`` id."""
    file_id: str = ctx.storage.store(FILE_BYTES)
    return file_id


@pytest.fixture
def app(make_app: Callable[..., App]) -> App:
    """The test project's App on the current backend (the ``ctx`` of the original tests)."""
    return ents_app(make_app)
