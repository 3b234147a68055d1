"""Functions: registration, names, argument and return validation, kinds, clients, auth."""

from __future__ import annotations

import sqlite3
import threading
from typing import Literal

import pytest
from pydantic import BaseModel

from ents import (
    ContextError,
    FunctionNotFoundError,
    ReadOnlyError,
    SchemaError,
    ValidationError,
    define_ent,
    define_ent_schema,
)

schema = define_ent_schema(
    {
        "notes": define_ent({"text": str}).field("n", int, default=0),
    }
)


class Point(BaseModel):
    x: int
    y: int


@pytest.fixture
def app(make_app):
    app = make_app(schema)

    @app.query
    def count(ctx) -> int:
        return len(ctx.table("notes"))

    @app.mutation
    def add(ctx, text: str, n: int = 0) -> str:
        return ctx.table("notes").insert({"text": text, "n": n})

    @app.mutation
    def add_then_fail(ctx, text: str) -> None:
        ctx.table("notes").insert({"text": text})
        raise RuntimeError("boom")

    @app.internal_mutation
    def secret(ctx) -> str:
        return "secret"

    @app.query
    def whoami(ctx):
        return ctx.auth.get_user_identity()

    @app.query
    def bad_return(ctx) -> int:
        return "not an int"  # type: ignore[return-value]

    @app.query
    def write_in_query(ctx) -> None:
        ctx.table("notes").insert({"text": "x"})

    @app.action
    def act(ctx, text: str) -> int:
        ctx.run_mutation(add, {"text": text})
        ctx.run_mutation("tests.test_functions:app.<locals>.secret")
        return ctx.run_query(count)

    @app.action
    def act_db(ctx) -> None:
        ctx.db.get("x")

    @app.action
    def act_table(ctx) -> None:
        ctx.table("notes")

    @app.action
    async def act_async(ctx, text: str) -> int:
        await ctx.run_mutation(add, {"text": text})
        return await ctx.run_query(count)

    @app.query
    def typed(ctx, p: Point, mode: Literal["a", "b"], tags: list[str] | None = None) -> dict:
        return {"x": p.x, "mode": mode, "tags": tags}

    app.fns = {f.__name__: f for f in (count, add, add_then_fail, secret, whoami, bad_return, write_in_query, act, act_db, act_table, act_async, typed)}
    return app


def test_names_are_module_and_qualname(app):
    assert app.fns["add"].name == "tests.test_functions:app.<locals>.add"
    assert app.functions.resolve("tests.test_functions:app.<locals>.add") is app.fns["add"]


def test_explicit_name_and_duplicate_names(make_app):
    app = make_app(schema)

    @app.query(name="notes:list")
    def a(ctx):
        return 1

    assert app.run_query("notes:list") == 1
    with pytest.raises(SchemaError, match="notes:list"):

        @app.query(name="notes:list")
        def b(ctx):
            return 2


def test_arguments_are_validated_before_the_handler_runs(app):
    add = app.fns["add"]
    with pytest.raises(ValidationError, match=r"add`.*argument `text`") as e:
        app.run_mutation(add, {})
    assert e.value.function == add.name and e.value.field == "text"
    with pytest.raises(ValidationError, match="unknown argument `extra`"):
        app.run_mutation(add, {"text": "a", "extra": 1})
    with pytest.raises(ValidationError, match="argument `n`"):
        app.run_mutation(add, {"text": "a", "n": "5"})
    with pytest.raises(ValidationError, match="must be a dict"):
        app.run_mutation(add, ["a"])
    assert app.run_query(app.fns["count"]) == 0


def test_an_int_too_large_for_a_float_is_refused_as_an_argument_and_a_field(make_app):
    app = make_app(define_ent_schema({"points": define_ent({"x": float})}))

    @app.mutation
    def place(ctx, x: float) -> float:
        ctx.table("points").insert({"x": x})
        return x

    assert app.run_mutation(place, {"x": 3}) == 3.0
    with pytest.raises(ValidationError, match="argument `x`"):
        app.run_mutation(place, {"x": 10**400})
    with pytest.raises(ValidationError, match="field `x`"):
        app.run(lambda ctx: ctx.table("points").insert({"x": 10**400}))
    assert [p.x for p in app.run(lambda ctx: ctx.table("points").collect())] == [3.0]


def test_pydantic_models_and_literals_as_arguments(app):
    out = app.run_query(app.fns["typed"], {"p": {"x": 1, "y": 2}, "mode": "a"})
    assert out == {"x": 1, "mode": "a", "tags": None}
    with pytest.raises(ValidationError, match="mode"):
        app.run_query(app.fns["typed"], {"p": {"x": 1, "y": 2}, "mode": "c"})


def test_return_value_is_validated_when_annotated(app):
    with pytest.raises(ValidationError, match="bad_return"):
        app.run_query(app.fns["bad_return"])


def test_queries_cannot_write(app):
    with pytest.raises(ReadOnlyError, match="query"):
        app.run_query(app.fns["write_in_query"])


def test_mutation_is_all_or_nothing(app):
    with pytest.raises(RuntimeError, match="boom"):
        app.run_mutation(app.fns["add_then_fail"], {"text": "x"})
    assert app.run_query(app.fns["count"]) == 0


def test_actions_call_functions_and_have_no_db(app):
    assert app.run_action(app.fns["act"], {"text": "hello"}) == 1
    with pytest.raises(ContextError, match="ctx.db is not available in actions"):
        app.run_action(app.fns["act_db"])
    with pytest.raises(ContextError, match="ctx.table is not available in actions"):
        app.run_action(app.fns["act_table"])


def test_async_actions_await_their_context(app):
    assert app.run_action(app.fns["act_async"], {"text": "a"}) == 1
    assert app.run_action(app.fns["act_async"], {"text": "b"}) == 2


def test_client_refuses_internal_functions_as_if_missing(app):
    client = app.client()
    with pytest.raises(FunctionNotFoundError) as hidden:
        client.mutation(app.fns["secret"])
    with pytest.raises(FunctionNotFoundError) as missing:
        client.mutation("tests.test_functions:nope")
    assert type(hidden.value) is type(missing.value)
    assert "Could not find public function" in str(hidden.value)
    assert "Could not find public function" in str(missing.value)
    # Trusted code may call it.
    assert app.run_mutation(app.fns["secret"]) == "secret"


def test_client_refuses_the_wrong_kind(app):
    client = app.client()
    with pytest.raises(FunctionNotFoundError, match="as a query, but it is defined as a mutation"):
        client.query(app.fns["add"], {"text": "x"})
    assert app.run_query(app.fns["count"]) == 0


def test_identity_reaches_ctx_auth(app):
    assert app.client(identity={"subject": "u1"}).query(app.fns["whoami"]) == {"subject": "u1"}
    assert app.client().query(app.fns["whoami"]) is None
    assert app.run_query(app.fns["whoami"], identity="admin") == "admin"


def test_unknown_function_reference(app):
    with pytest.raises(FunctionNotFoundError, match="not registered"):
        app.run_query(lambda ctx: 1)


def test_handler_must_take_ctx(make_app):
    app = make_app(schema)
    with pytest.raises(SchemaError, match="context"):

        @app.query
        def f():
            return 1


def test_only_actions_may_be_async(make_app):
    app = make_app(schema)
    with pytest.raises(SchemaError, match="only actions may be `async def`"):

        @app.mutation
        async def f(ctx):
            return 1


def test_busy_database_is_retried_transparently(tmp_path, clock):
    # A second connection holds the write lock until the mutation has found the database
    # busy twice; the mutation waits it out.
    from ents import App

    path = tmp_path / "busy.db"
    app = App(schema, f"sqlite:///{path}?busy_timeout=5", clock=clock)
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    dialect = app.backend.dialect
    classify = dialect.classify
    busy: list[str] = []
    found_busy = threading.Event()

    def classify_and_count(exc: BaseException) -> str | None:
        kind = classify(exc)
        if kind == "transient":
            busy.append(str(exc))
            if len(busy) >= 2:
                found_busy.set()
        return kind

    dialect.classify = classify_and_count  # type: ignore[method-assign]
    released = threading.Event()

    def release() -> None:
        if found_busy.wait(60):
            blocker.execute("COMMIT")
            released.set()

    releaser = threading.Thread(target=release)
    releaser.start()
    try:
        note = app.run(lambda ctx: ctx.table("notes").insert({"text": "after the lock"}))
    finally:
        found_busy.set()
        releaser.join(60)
    assert released.is_set() and len(busy) >= 2, busy
    assert app.run(lambda ctx: ctx.table("notes").get_x(note).text) == "after the lock"
    blocker.close()
    app.close()


def test_queries_have_no_scheduler_or_crons(make_app):
    app = make_app(schema)

    @app.query
    def sneaky(ctx) -> None:
        ctx.scheduler.run_after(0, "x", {})

    @app.query
    def sneaky_crons(ctx) -> None:
        ctx.crons.delete("x")

    with pytest.raises(ContextError, match="ctx.scheduler is not available in queries"):
        app.run_query(sneaky)
    with pytest.raises(ContextError, match="ctx.crons is not available in queries"):
        app.run_query(sneaky_crons)


def test_convex_error_carries_its_data_to_the_caller_and_rolls_back(make_app):
    from ents import ConvexError

    schema = define_ent_schema({"notes": define_ent({"text": str})})
    app = make_app(schema)

    @app.mutation
    def refuse(ctx, text: str) -> None:
        ctx.table("notes").insert({"text": text})
        raise ConvexError({"code": "NOT_ALLOWED", "text": text})

    with pytest.raises(ConvexError) as err:
        app.run_mutation(refuse, {"text": "hi"})
    assert err.value.data == {"code": "NOT_ALLOWED", "text": "hi"}
    assert "NOT_ALLOWED" in str(err.value)
    assert app.run(lambda ctx: len(ctx.table("notes"))) == 0
    with pytest.raises(ConvexError) as err:
        app.client().mutation(refuse, {"text": "again"})
    assert err.value.data["text"] == "again"
