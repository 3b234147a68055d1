"""Testing a module-level App, as convex-test tests a Convex project.

tests/apps/todoapp.py is written the README's way (``app = App(schema, url)`` at import,
decorators, module-level crons and rules). ``test_app(app)`` gives each test a copy with the
same schema, functions, crons and rules on a fresh database and a FakeClock, and the
module's function objects call the copy's functions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from ents import App, ConfigurationError, FunctionNotFoundError, define_ent, define_ent_schema
from ents.testing import FakeClock, test_app
from tests.apps import todoapp
from tests.apps.todoapp import add_todo, count_open, create_user, my_todos, remind

DAY = 24 * 3600 * 1000


@pytest.fixture
def t() -> Iterator[App]:
    with test_app(todoapp.app) as t:
        yield t


def test_function_objects_call_the_copy(t: App) -> None:
    ada = t.run_mutation(create_user, {"name": "Ada", "email": "ada@example.com"})
    t.run_mutation(add_todo, {"user_id": ada, "text": "write tests"})
    assert t.run_query(my_todos) == ["write tests"]
    assert t.run_query(my_todos.name) == ["write tests"]  # by name too
    assert t.run_action(count_open) == 1  # an action's ctx.run_query(my_todos) runs the copy's
    assert asyncio.run(t.run_query_async(my_todos)) == ["write tests"]
    # the module's own App and its database are untouched
    assert todoapp.app.run_query(my_todos) == []
    assert t.functions.resolve(create_user) is not create_user and t.functions.resolve(create_user).app is t


def test_the_copy_has_its_own_fake_clock_and_scheduler(t: App) -> None:
    assert isinstance(t.clock, FakeClock)
    ada = t.run_mutation(create_user, {"name": "Ada", "email": "ada@example.com"})
    t.run_mutation(add_todo, {"user_id": ada, "text": "call Bob", "remind_in_ms": 60_000})
    t.finish_in_progress_scheduled_functions()
    assert t.run_query(my_todos) == ["call Bob"]  # not due yet
    t.clock.advance(60_000)  # type: ignore[attr-defined]
    t.finish_in_progress_scheduled_functions()
    assert t.run_query(my_todos) == ["(reminded) call Bob"]


def test_the_copy_runs_the_modules_crons(t: App) -> None:
    ada = t.run_mutation(create_user, {"name": "Ada", "email": "ada@example.com"})
    t.run_mutation(add_todo, {"user_id": ada, "text": "one"})
    t.finish_in_progress_scheduled_functions()  # registers the crons: the first run is at 07:00
    t.clock.advance(DAY)  # type: ignore[attr-defined]
    t.finish_in_progress_scheduled_functions()
    assert t.run(lambda ctx: [d.open for d in ctx.table("digests")]) == [1]


def test_the_copy_keeps_the_modules_rules_and_visibility(t: App) -> None:
    ada = t.run_mutation(create_user, {"name": "Ada", "email": "ada@example.com"})
    bob = t.run_mutation(create_user, {"name": "Bob", "email": "bob@example.com"})
    t.run_mutation(add_todo, {"user_id": ada, "text": "ada's"})
    t.run_mutation(add_todo, {"user_id": bob, "text": "bob's"})
    assert t.client(identity="ada@example.com").query(my_todos) == ["ada's"]
    with pytest.raises(FunctionNotFoundError, match="Could not find public function"):
        t.client().mutation(remind, {"todo_id": "x"})


def test_a_copy_at_a_url_and_with_a_given_clock(db_url: str, tmp_path: Any) -> None:
    clock = FakeClock(start=0)
    with test_app(todoapp.app, clock=clock, url=db_url, storage_dir=str(tmp_path / "files")) as t:
        assert t.clock is clock and t.run_query(my_todos) == []
        t.run_mutation(create_user, {"name": "Ada", "email": "ada@example.com"})
        assert t.run(lambda ctx: ctx.table("users").first_x().name) == "Ada"


def test_each_copy_is_fresh(t: App) -> None:
    t.run_mutation(create_user, {"name": "Ada", "email": "ada@example.com"})
    with test_app(todoapp.app) as other:
        assert other.run(lambda ctx: len(list(ctx.table("users")))) == 0


def test_functions_of_another_app_are_still_refused(t: App) -> None:
    other = App(define_ent_schema({"x": define_ent({})}), "sqlite://")
    try:

        @other.query(name=my_todos.name)
        def impostor(ctx: Any) -> list[str]:
            return ["not mine"]

        with pytest.raises(FunctionNotFoundError, match="registered on another App"):
            t.run_query(impostor)
    finally:
        other.close()


def test_test_app_takes_an_app() -> None:
    with pytest.raises(ConfigurationError, match="takes an ents App"):
        test_app("todoapp")  # type: ignore[arg-type]
