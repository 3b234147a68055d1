"""The trust boundary: what an untrusted ``app.client(identity=...)`` can and cannot do.

A client reaches public functions only. An internal function is refused exactly as a
function that does not exist (same exception type, same message shape, same attributes, no
chained cause that would tell them apart), whatever the arguments and whichever client
method is used. A client cannot schedule, cancel or read ``_scheduled_functions``: it
has no API for it, and can only call public functions the app wrote for that.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ents import (
    App,
    Client,
    EntsError,
    FunctionNotFoundError,
    ValidationError,
    define_ent,
    define_ent_schema,
)

schema = define_ent_schema({"notes": define_ent({"text": str, "by": str})})


@pytest.fixture
def app(make_app: Any) -> App:
    app = make_app(schema)

    @app.internal_query(name="secret:read")
    def secret_read(ctx: Any) -> list[str]:
        return [n.text for n in ctx.table("notes")]

    @app.internal_mutation(name="secret:write")
    def secret_write(ctx: Any, text: str) -> None:
        ctx.table("notes").insert({"text": text, "by": "internal"})

    @app.internal_action(name="secret:act")
    def secret_act(ctx: Any, n: int) -> int:
        return n

    @app.query(name="pub:who")
    def who(ctx: Any) -> Any:
        return ctx.auth.get_user_identity()

    @app.query(name="pub:read")
    def pub_read(ctx: Any) -> list[str]:
        return [n.text for n in ctx.table("notes")]

    @app.mutation(name="pub:note")
    def note(ctx: Any, text: str) -> str:
        return ctx.table("notes").insert({"text": text, "by": str(ctx.auth.get_user_identity())})

    @app.mutation(name="pub:note_later")
    def note_later(ctx: Any, text: str) -> str:
        # The app chooses to let clients schedule this internal mutation (and see its job).
        return ctx.scheduler.run_after(0, "secret:write_as", {"text": text})

    @app.internal_mutation(name="secret:write_as")
    def write_as(ctx: Any, text: str) -> None:
        ctx.table("notes").insert({"text": text, "by": str(ctx.auth.get_user_identity())})

    @app.query(name="pub:job_state")
    def job_state(ctx: Any, id: str) -> str:
        return ctx.db.system.get(id)["state"]["kind"]

    @app.action(name="pub:act")
    def pub_act(ctx: Any, n: int) -> list[Any]:
        # Server code may call internal functions; the caller's identity carries over.
        return [ctx.run_action("secret:act", {"n": n}), ctx.run_query("pub:who", {})]

    return app


INTERNAL = ["secret:read", "secret:write", "secret:act", "secret:write_as", "ents:scheduled_delete"]
METHODS = ["query", "mutation", "action"]
ARGS: list[Any] = [None, {}, {"text": "x"}, {"n": 1}, {"n": "not an int", "extra": 1}, {"text": 1}, [], "args", 42]


def _refusal(client: Client, method: str, fn: Any, args: Any) -> FunctionNotFoundError:
    with pytest.raises(EntsError) as info:
        getattr(client, method)(fn, args)
    exc = info.value
    assert type(exc) is FunctionNotFoundError, (method, fn, args, repr(exc))
    return exc


def _shape(exc: FunctionNotFoundError, name: str) -> tuple[Any, ...]:
    return (
        type(exc),
        str(exc).replace(name, "<name>"),
        exc.message.replace(name, "<name>"),
        exc.function == name,
        exc.table,
        exc.id,
        exc.field,
        exc.__cause__,
        exc.__context__,
    )


@pytest.mark.parametrize("method", METHODS)
def test_internal_functions_look_exactly_like_missing_ones(app: App, method: str):
    client = app.client(identity={"subject": "mallory"})
    missing = _refusal(client, method, "secret:nope", {})
    expected = _shape(missing, "secret:nope")
    assert expected[1] == "Could not find public function `<name>`"
    for name in INTERNAL:
        for args in ARGS:
            exc = _refusal(client, method, name, args)
            assert _shape(exc, name) == expected, (name, args)
            # By object too (a client holding a reference gains nothing).
            exc = _refusal(client, method, app.functions.resolve(name), args)
            assert _shape(exc, name) == expected, (name, args)
        # Missing functions with arguments of any kind refuse the same way.
        for args in ARGS:
            assert _shape(_refusal(client, method, "secret:nope", args), "secret:nope") == expected


def test_raw_handlers_and_foreign_functions_are_refused(app: App, make_app: Any):
    client = app.client()
    handler = app.functions.resolve("secret:read").handler
    exc = _refusal(client, "query", handler, {})
    assert str(exc).startswith("Could not find public function `")
    other = make_app(schema)

    @other.query(name="pub:read")
    def foreign(ctx: Any) -> list[str]:
        return []

    exc = _refusal(client, "query", foreign, {})
    assert str(exc) == "Could not find public function `pub:read`"
    for weird in [None, 42, ["secret:read"], b"secret:read", "", " secret:read", "SECRET:READ", "secret:read\x00", "\ud800"]:
        _refusal(client, "query", weird, {})


def test_no_side_effect_when_refused(app: App):
    client = app.client()
    before = app.run(lambda ctx: ctx.table("notes").docs())
    _refusal(client, "mutation", "secret:write", {"text": "sneaky"})
    _refusal(client, "action", "secret:act", {"n": 1})
    assert app.run(lambda ctx: ctx.table("notes").docs()) == before


def test_public_functions_work_with_identity_and_only_documented_errors(app: App):
    client = app.client(identity={"subject": "ada"})
    assert client.query("pub:who") == {"subject": "ada"}
    assert app.client().query("pub:who") is None
    client.mutation("pub:note", {"text": "hi"})
    assert client.query("pub:read") == ["hi"]
    assert client.action("pub:act", {"n": 3}) == [3, {"subject": "ada"}]
    with pytest.raises(ValidationError, match="pub:note"):
        client.mutation("pub:note", {"text": 1})
    with pytest.raises(ValidationError):
        client.mutation("pub:note", {"text": "x", "extra": True})
    # Calling a public function as another kind is refused (and says which kind it is).
    with pytest.raises(FunctionNotFoundError, match="defined as a query"):
        client.mutation("pub:read", {})


def test_client_has_no_scheduler_and_no_database(app: App):
    client = app.client()
    public = {name for name in dir(client) if not name.startswith("_")}
    assert public == {"query", "mutation", "action", "query_async", "mutation_async", "action_async"}
    for name in ["_scheduled_functions", "scheduler.run_after", "ctx.scheduler.cancel", "ents:scheduled_delete", "_storage", "_cron_jobs"]:
        for method in METHODS:
            _refusal(client, method, name, {})


def test_clients_schedule_and_read_jobs_only_through_app_functions(app: App):
    client = app.client(identity={"subject": "ada"})
    job = client.mutation("pub:note_later", {"text": "later"})
    assert client.query("pub:job_state", {"id": job}) == "pending"
    app.finish_in_progress_scheduled_functions()
    assert client.query("pub:job_state", {"id": job}) == "success"
    # The scheduled run had no identity (scheduled functions never run as the caller).
    notes = app.run(lambda ctx: [(n.text, n.by) for n in ctx.table("notes")])
    assert notes == [("later", "None")]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(name=st.text(max_size=40), method=st.sampled_from(METHODS), args=st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3)))
def test_any_name_is_public_or_not_found(app: App, name: str, method: str, args: Any):
    client = app.client()
    fdef = app.functions.by_name.get(name)
    try:
        getattr(client, method)(name, args)
    except FunctionNotFoundError as exc:
        if fdef is None or fdef.internal:
            assert str(exc) == f"Could not find public function `{name}`"
    except ValidationError:
        assert fdef is not None and not fdef.internal and fdef.kind == method
    else:
        assert fdef is not None and not fdef.internal and fdef.kind == method
