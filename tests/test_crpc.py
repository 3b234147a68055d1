"""kitcn procedures (ents.crpc): builders, middleware, input and output validation,
callers, caller.schedule and CRPCError, on every backend."""

from __future__ import annotations

import asyncio
import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, Field, field_validator

from ents import (
    ContextError,
    ConvexError,
    FunctionNotFoundError,
    SchedulerError,
    SchemaError,
    ValidationError,
    define_ent,
    define_ent_schema,
)
from ents.crpc import CODES, CRPCError, ProcedureCtx, create_caller, init_crpc
from ents.http import asgi_app
from ents.testing import FakeClock
from ents.testing import test_app as copy_of

schema = define_ent_schema(
    {
        "items": define_ent({"name": str}).field("n", int, default=0).field("owner", str | None, default=None),
    }
)


class Item(BaseModel):
    name: str = Field(min_length=1)
    n: int = 0


class Named(BaseModel):
    name: str


class Tags(BaseModel):
    name: str
    tags: list[str] = Field(default_factory=list)

    @field_validator("tags")
    @classmethod
    def no_blank(cls, tags: list[str]) -> list[str]:
        if any(not t.strip() for t in tags):
            raise ValueError("tags may not be blank")
        return tags


def require_user(ctx: Any, next: Any) -> Any:
    identity = ctx.auth.get_user_identity()
    if identity is None:
        raise CRPCError("UNAUTHORIZED", "Sign in first")
    return next(ctx.extend(user_id=identity["sub"]))


def count(app: Any) -> int:
    return int(app.run(lambda ctx: len(ctx.table("items"))))


def job(app: Any, job_id: str) -> Any:
    return app.run(lambda ctx: ctx.db.system.get(job_id))


@pytest.fixture
def app(make_app: Any) -> Any:
    app = make_app(schema)
    c = init_crpc(app)
    app.procs = procs = {}  # the registered procedures, by name, for the tests

    def register(fdef: Any) -> Any:
        procs[fdef.__name__] = fdef
        return fdef

    @register
    @c.mutation.input(Item).output(str).mutation
    def create_item(ctx: Any, input: Item) -> str:
        return str(ctx.table("items").insert(input.model_dump()))

    @register
    @c.mutation.mutation
    def create_default(ctx: Any) -> str:
        return str(ctx.table("items").insert({"name": "default"}))

    @register
    @c.query.input(Named).query
    def find(ctx: Any, input: Named) -> Any:
        return ctx.orm.query.items.find_first(where={"name": input.name})

    @register
    @c.query.query
    def total(ctx: Any) -> int:
        return len(ctx.table("items"))

    @register
    @c.mutation.internal().input(Item).mutation
    def add_internal(ctx: Any, input: Item) -> str:
        return str(ctx.table("items").insert(input.model_dump()))

    @register
    @c.mutation.input(Item).mutation
    def add_then_fail(ctx: Any, input: Item) -> None:
        ctx.table("items").insert(input.model_dump())
        raise CRPCError("CONFLICT", f"{input.name} conflicts")

    @register
    @c.action.input(Named).action
    def shout(ctx: Any, input: Named) -> str:
        return input.name.upper()

    @register
    @c.mutation.use(require_user).input(Named).mutation
    def add_mine(ctx: Any, input: Named) -> str:
        return str(ctx.table("items").insert({"name": input.name, "owner": ctx.user_id}))

    @register
    @c.mutation.input(Tags).mutation
    def tagged(ctx: Any, input: Tags) -> list[str]:
        return input.tags

    return app


# -- builders ------------------------------------------------------------------------------------


def test_procedures_are_ordinary_functions_named_module_function(app: Any) -> None:
    names = set(app.functions.by_name)
    for name in ("create_item", "create_default", "find", "total", "add_internal", "shout", "add_mine"):
        assert f"tests.test_crpc:app.<locals>.{name}" in names
    create_item = app.procs["create_item"]
    assert repr(create_item) == "<ents mutation tests.test_crpc:app.<locals>.create_item>"
    assert repr(app.procs["add_internal"]).startswith("<ents internal mutation")
    assert repr(app.procs["shout"]).startswith("<ents action")
    # called by object, by name, by clients; internal procedures are refused to clients
    item = app.run_mutation(create_item, {"name": "a"})
    assert app.run_mutation(create_item.name, {"name": "b", "n": 2}) != item
    client = app.client()
    assert client.query(app.procs["total"]) == 2
    assert client.action(app.procs["shout"], {"name": "hi"}) == "HI"
    with pytest.raises(FunctionNotFoundError, match="Could not find public function"):
        client.mutation(app.procs["add_internal"], {"name": "x"})
    assert app.run_mutation(app.procs["add_internal"], {"name": "x"})
    with pytest.raises(FunctionNotFoundError, match="defined as a mutation"):
        app.run_query(create_item, {"name": "x"})
    assert app.run_mutation(app.procs["create_default"]) and count(app) == 4


def test_builders_are_immutable_and_check_what_they_are_given(make_app: Any) -> None:
    app = make_app(schema)
    c = init_crpc(app)
    base = c.mutation
    authed = base.use(require_user)
    with_input = authed.input(Named)
    assert base._middlewares == () and authed._middlewares == (require_user,) and authed._input_model is None
    assert with_input._input_model is Named and base._internal is False and base.internal()._internal is True
    with pytest.raises(SchemaError, match="pydantic model class"):
        base.input(dict)
    with pytest.raises(SchemaError, match="already given Named"):
        with_input.input(Item)
    with pytest.raises(SchemaError, match="middleware function"):
        base.use(3)  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match="takes it as `input`"):
        base.input(Named).mutation(lambda ctx: None)
    with pytest.raises(SchemaError, match="mutation procedure builder makes mutations"):
        base.query(lambda ctx: None)
    with pytest.raises(SchemaError, match="only actions may be `async def`"):

        async def early(ctx: Any) -> None: ...

        base.mutation(early)
    with pytest.raises(SchemaError, match="an `async def` middleware needs an `async def` action handler"):

        async def async_mw(ctx: Any, next: Any) -> Any:
            return await next()

        base.use(async_mw).mutation(lambda ctx: None)
    with pytest.raises(SchemaError, match="takes an App"):
        init_crpc("app")  # type: ignore[arg-type]

    @c.query.query(name="reports:count")
    def named(ctx: Any) -> int:
        return 1

    assert named.name == "reports:count" and app.run_query("reports:count") == 1


# -- input and output ----------------------------------------------------------------------------


def test_bad_input_is_refused_before_the_handler_with_the_wording_of_functions(app: Any, make_app: Any) -> None:
    plain = make_app(schema)

    @plain.mutation
    def create_item(ctx: Any, name: str, n: int = 0) -> str:
        return str(ctx.table("items").insert({"name": name, "n": n}))

    proc = app.procs["create_item"]
    for args in ({}, {"name": 3}, {"name": "a", "n": "2"}, {"name": "a", "extra": 1}, {"name": "a", "n": 1.5}):
        with pytest.raises(ValidationError) as got:
            app.run_mutation(proc, args)
        with pytest.raises(ValidationError) as expected:
            plain.run_mutation(create_item, args)
        assert str(got.value).replace(proc.name, "F") == str(expected.value).replace(
            "tests.test_crpc:test_bad_input_is_refused_before_the_handler_with_the_wording_of_functions.<locals>.create_item", "F"
        )
        assert got.value.function == proc.name
    # constraints of the model's fields and its validators are the input's too
    with pytest.raises(ValidationError, match="Invalid arguments for function `.*create_item`: argument `name`: String should have at least 1 character"):
        app.run_mutation(proc, {"name": ""})
    with pytest.raises(ValidationError, match="Invalid arguments for function `.*tagged`: argument `tags`: Value error, tags may not be blank"):
        app.run_mutation(app.procs["tagged"], {"name": "a", "tags": ["x", " "]})
    assert count(app) == 0  # no handler ran
    assert app.run_mutation(app.procs["tagged"], {"name": "a"}) == []  # default_factory


def test_the_handler_gets_the_model_as_input(make_app: Any) -> None:
    app = make_app(schema)
    c = init_crpc(app)

    class Point(BaseModel):
        x: int
        y: int = 7

    class Shape(BaseModel):
        ctx: str  # a field may even be named ctx
        points: list[Point]

    seen: list[Any] = []

    @c.mutation.input(Shape).mutation
    def draw(ctx: Any, input: Shape) -> int:
        seen.append((type(ctx), input))
        return len(input.points)

    assert app.run_mutation(draw, {"ctx": "c", "points": [{"x": 1}, {"x": 2, "y": 3}]}) == 2
    ctx_type, shape = seen[0]
    assert ctx_type is ProcedureCtx and isinstance(shape, Shape)
    assert shape.points == [Point(x=1, y=7), Point(x=2, y=3)] and shape.ctx == "c"


def test_output_is_validated_and_returned_as_plain_data(make_app: Any) -> None:
    app = make_app(schema)
    c = init_crpc(app)

    class Count(BaseModel):
        deleted_count: int

    @c.query.output(Count).query
    def as_dict(ctx: Any) -> Any:
        return {"deleted_count": 3, "ignored": True}

    @c.query.output(Count).query
    def as_model(ctx: Any) -> Any:
        return Count(deleted_count=4)

    @c.query.output(int).query
    def wrong(ctx: Any) -> Any:
        return "many"

    @c.query.output(Count | None).query
    def nothing(ctx: Any) -> Any:
        return None

    assert app.run_query(as_dict) == {"deleted_count": 3}
    assert app.run_query(as_model) == {"deleted_count": 4}
    assert app.run_query(nothing) is None
    with pytest.raises(ValidationError, match="`.*wrong` returned a value that does not match its output: value `\\(value\\)`"):
        app.run_query(wrong)
    with pytest.raises(SchemaError, match="output\\(\\) takes a type pydantic can check"):
        c.query.output(object())


# -- middleware ------------------------------------------------------------------------------------


def test_middleware_adds_to_the_context_or_refuses(app: Any) -> None:
    add_mine = app.procs["add_mine"]
    with pytest.raises(CRPCError, match="Sign in first") as refused:
        app.run_mutation(add_mine, {"name": "x"})
    assert refused.value.code == "UNAUTHORIZED" and count(app) == 0
    item = app.client(identity={"sub": "user-1"}).mutation(add_mine, {"name": "x"})
    assert app.run(lambda ctx: ctx.table("items").get_x(item).owner) == "user-1"


def test_middlewares_run_in_order_and_see_what_the_ones_before_added(make_app: Any) -> None:
    app = make_app(schema)
    c = init_crpc(app)
    trace: list[str] = []

    def first(ctx: Any, next: Any) -> Any:
        trace.append("first")
        result = next(tenant="t1")
        trace.append("first after")
        return {"wrapped": result}

    def second(ctx: Any, next: Any) -> Any:
        trace.append(f"second sees {ctx.tenant}")
        return next({"role": "admin"})

    def third(ctx: Any, next: Any) -> Any:
        trace.append(f"third sees {ctx.tenant} {ctx.role}")
        return next()

    @c.mutation.use(first).use(second).use(third).mutation
    def handler(ctx: Any) -> Any:
        # everything the ents context has is still there
        ctx.table("items").insert({"name": ctx.tenant})
        assert ctx.orm.query.items.find_first(where={"name": "t1"}) is not None
        assert ctx.auth.get_user_identity() is None and ctx.now == app.clock.now()
        with pytest.raises(AttributeError, match="read-only"):
            ctx.role = "x"
        return [ctx.tenant, ctx.role]

    assert app.run_mutation(handler) == {"wrapped": ["t1", "admin"]}
    assert trace == ["first", "second sees t1", "third sees t1 admin", "first after"]

    def bad(ctx: Any, next: Any) -> Any:
        return next(42)

    @c.mutation.use(bad).mutation
    def refused(ctx: Any) -> None: ...

    with pytest.raises(ValidationError, match="A middleware calls next"):
        app.run_mutation(refused)


def test_async_action_procedures_with_middleware_and_caller(make_app: Any) -> None:
    app = make_app(schema)
    c = init_crpc(app)

    async def async_mw(ctx: Any, next: Any) -> Any:
        return await next(greeting="hello")

    def sync_mw(ctx: Any, next: Any) -> Any:
        return next(punct="!")

    @c.query.input(Named).query
    def greet(ctx: Any, input: Named) -> str:
        return f"hi {input.name}"

    @c.action.use(async_mw).use(sync_mw).input(Named).action
    async def hello(ctx: Any, input: Named) -> str:
        caller = create_caller(ctx)
        return f"{ctx.greeting} {input.name}{ctx.punct} / {await caller.greet({'name': input.name})}"

    assert app.run_action(hello, {"name": "ada"}) == "hello ada! / hi ada"


# -- callers -----------------------------------------------------------------------------------------


def test_caller_calls_procedures_by_name_following_convex_rules(app: Any) -> None:
    def in_mutation(ctx: Any) -> Any:
        caller = create_caller(ctx)
        made = caller.create_item({"name": "a", "n": 1})
        also = caller.create_item(Item(name="b"))  # a model instance is its fields
        found = caller.find({"name": "a"})
        with pytest.raises(ContextError, match="run_action is not available in queries and mutations"):
            caller.shout({"name": "x"})
        return made, also, found

    made, also, found = app.run(in_mutation)
    assert found["id"] == made and found.n == 1 and also != made

    c = init_crpc(app)

    @c.query.query
    def in_query(ctx: Any) -> Any:
        caller = create_caller(ctx)
        with pytest.raises(ContextError, match="run_mutation is not available in queries"):
            caller.create_item({"name": "x"})
        return caller.total()

    assert app.run_query(in_query) == 2

    @c.action.action
    def orchestrate(ctx: Any) -> Any:
        caller = create_caller(ctx)
        made = caller.create_item({"name": "from action"})
        return made, caller.total(), caller.actions.shout({"name": "a"}), caller.shout({"name": "b"})

    made, total, a, b = app.run_action(orchestrate)
    assert total == 3 and (a, b) == ("A", "B")


def test_unknown_and_ambiguous_procedure_names(app: Any) -> None:
    c = init_crpc(app)

    @c.query.query(name="mod_a:dup")
    def dup_a(ctx: Any) -> str:
        return "a"

    @c.query.query(name="mod_b:dup")
    def dup_b(ctx: Any) -> str:
        return "b"

    @app.query
    def plain(ctx: Any) -> str:
        return "plain"

    def read(ctx: Any) -> Any:
        caller = create_caller(ctx)
        with pytest.raises(FunctionNotFoundError, match="Could not find a procedure named `nope`") as missing:
            caller.nope()
        assert missing.value.function == "nope"
        with pytest.raises(FunctionNotFoundError, match="`.*plain` is an ents function, not a procedure"):
            caller.plain()
        with pytest.raises(FunctionNotFoundError, match="Several procedures are named `dup` \\(`mod_a:dup`, `mod_b:dup`\\)"):
            caller.dup()
        with pytest.raises(FunctionNotFoundError, match="Could not find a procedure named `total` in module `mod_a`"):
            create_caller(ctx, module="mod_a").total()
        with pytest.raises(FunctionNotFoundError, match="is an ents function, not a procedure"):
            caller[plain.name]()
        return create_caller(ctx, module="mod_a").dup(), create_caller(ctx, "mod_b").dup(), caller["mod_b:dup"]()

    assert app.run(read) == ("a", "b", "b")


def test_a_called_mutation_is_a_sub_transaction(app: Any) -> None:
    def body(ctx: Any) -> Any:
        caller = create_caller(ctx)
        caller.create_item({"name": "kept"})
        with pytest.raises(CRPCError, match="doomed conflicts"):
            caller.add_then_fail({"name": "doomed"})
        return sorted(i.name for i in ctx.table("items"))

    assert app.run(body) == ["kept"]
    assert [i["name"] for i in app.run(lambda ctx: ctx.orm.query.items.find_many())] == ["kept"]


# -- caller.schedule -------------------------------------------------------------------------------


def test_schedule_now_after_at_and_the_job_runs_the_procedure(app: Any, clock: Any) -> None:
    start = clock.now()
    when = datetime.fromtimestamp((start + 9000) / 1000, tz=UTC)

    def body(ctx: Any) -> list[str]:
        schedule = create_caller(ctx).schedule
        return [
            schedule.now.create_item({"name": "now"}),
            schedule.after(5000).create_item({"name": "after"}),
            schedule.after(timedelta(seconds=6)).create_item(Item(name="delta")),
            schedule.at(start + 7000).create_item({"name": "at"}),
            schedule.at(when).create_item({"name": "dt"}),
            schedule.now.shout({"name": "act"}),
        ]

    jobs = app.run(body)
    docs = [job(app, j) for j in jobs]
    assert [d["scheduled_time"] for d in docs] == [start, start + 5000, start + 6000, start + 7000, start + 9000, start]
    assert docs[0]["name"] == app.procs["create_item"].name and docs[0]["args"] == {"name": "now"}
    assert docs[2]["args"] == {"name": "delta", "n": 0}
    app.finish_all_scheduled_functions()
    assert [job(app, j)["state"]["kind"] for j in jobs] == ["success"] * 6
    assert sorted(i["name"] for i in app.run(lambda ctx: ctx.orm.query.items.find_many())) == ["after", "at", "delta", "dt", "now"]


def test_schedule_checks_input_and_kind_when_scheduling(app: Any) -> None:
    def bad_input(ctx: Any) -> None:
        create_caller(ctx).schedule.now.create_item({"name": ""})

    with pytest.raises(ValidationError, match="Invalid arguments for function `.*create_item`: argument `name`"):
        app.run(bad_input)
    with pytest.raises(SchedulerError, match="it is a query; only mutations and actions can be scheduled"):
        app.run(lambda ctx: create_caller(ctx).schedule.after(10).total())
    with pytest.raises(SchedulerError, match="delay must be non-negative"):
        app.run(lambda ctx: create_caller(ctx).schedule.after(-1).create_item({"name": "x"}))

    @init_crpc(app).query.query
    def sneaky(ctx: Any) -> Any:
        return create_caller(ctx).schedule.now.create_item({"name": "x"})

    with pytest.raises(ContextError, match="ctx.scheduler is not available in queries"):
        app.run_query(sneaky)
    assert app.run(lambda ctx: ctx.db.system.query("_scheduled_functions").collect()) == []


def test_scheduling_from_a_failing_mutation_schedules_nothing(make_app: Any) -> None:
    app = make_app(schema)
    c = init_crpc(app)

    @c.mutation.internal().input(Named).mutation
    def send(ctx: Any, input: Named) -> None:
        ctx.table("items").insert({"name": input.name})

    @c.mutation.input(Named).mutation
    def schedule_then_fail(ctx: Any, input: Named) -> None:
        create_caller(ctx).schedule.now.send({"name": input.name})
        raise CRPCError("BAD_REQUEST", "no")

    @c.action.input(Named).action
    def schedule_then_fail_in_action(ctx: Any, input: Named) -> None:
        create_caller(ctx).schedule.now.send({"name": input.name})
        raise CRPCError("BAD_REQUEST", "no")

    with pytest.raises(CRPCError):
        app.run_mutation(schedule_then_fail, {"name": "m"})
    assert app.run(lambda ctx: ctx.db.system.query("_scheduled_functions").collect()) == []
    with pytest.raises(CRPCError):
        app.run_action(schedule_then_fail_in_action, {"name": "a"})
    # from an action, scheduling is immediate and survives the action's failure
    app.finish_all_scheduled_functions()
    assert [i.name for i in app.run(lambda ctx: ctx.table("items").collect())] == ["a"]


def test_schedule_cancel(app: Any, clock: Any) -> None:
    def schedule(ctx: Any) -> str:
        return str(create_caller(ctx).schedule.after(1000).create_item({"name": "later"}))

    job_id = app.run(schedule)
    app.run(lambda ctx: create_caller(ctx).schedule.cancel(job_id))
    clock.advance(2000)
    app.finish_in_progress_scheduled_functions()
    assert job(app, job_id)["state"]["kind"] == "canceled" and count(app) == 0


# -- CRPCError --------------------------------------------------------------------------------------


def test_crpc_error_codes_messages_and_statuses() -> None:
    statuses = {
        "BAD_REQUEST": 400, "UNAUTHORIZED": 401, "FORBIDDEN": 403, "NOT_FOUND": 404, "CONFLICT": 409,
        "TOO_MANY_REQUESTS": 429, "INTERNAL_SERVER_ERROR": 500, "PARSE_ERROR": 400, "PAYMENT_REQUIRED": 402,
        "METHOD_NOT_SUPPORTED": 405, "TIMEOUT": 408, "PRECONDITION_FAILED": 412, "PAYLOAD_TOO_LARGE": 413,
        "UNSUPPORTED_MEDIA_TYPE": 415, "UNPROCESSABLE_CONTENT": 422, "PRECONDITION_REQUIRED": 428,
        "CLIENT_CLOSED_REQUEST": 499, "NOT_IMPLEMENTED": 501, "BAD_GATEWAY": 502, "SERVICE_UNAVAILABLE": 503,
        "GATEWAY_TIMEOUT": 504,
    }  # fmt: skip
    assert CODES == statuses
    for code, status in statuses.items():
        err = CRPCError(code, f"about {code}")
        assert isinstance(err, ConvexError) and err.http_status == status and isinstance(err.http_status, int)
        assert err.code == code and err.message == f"about {code}" and str(err) == f"about {code}"
        assert err.data == {"code": code, "message": f"about {code}"}
    err = CRPCError(code="NOT_FOUND", message="Subscription not found", data={"id": "s1"})
    assert err.data == {"id": "s1", "code": "NOT_FOUND", "message": "Subscription not found"}
    again = pickle.loads(pickle.dumps(err))
    assert (again.code, again.message, again.data, again.http_status) == ("NOT_FOUND", "Subscription not found", err.data, 404)
    assert CRPCError("FORBIDDEN").message == "FORBIDDEN"
    assert repr(CRPCError("CONFLICT", "x")) == "CRPCError('CONFLICT', 'x')"
    with pytest.raises(ValidationError, match="unknown code 'TEAPOT'"):
        CRPCError("TEAPOT", "short and stout")


def test_a_failed_scheduled_procedure_records_the_crpc_message(app: Any) -> None:
    job_id = app.run(lambda ctx: create_caller(ctx).schedule.now.add_then_fail({"name": "x"}))
    app.finish_in_progress_scheduled_functions()
    doc = job(app, job_id)
    assert doc["state"]["kind"] == "failed"
    assert "x conflicts" in doc["state"]["error"] and count(app) == 0


# -- over HTTP and in test_app ------------------------------------------------------------------------


def test_procedures_over_convex_http_api(app: Any) -> None:
    api = asgi_app(app)

    def post(path: str, body: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://test") as http:
                return await http.post(path, json=body)

        return asyncio.run(asyncio.wait_for(go(), 60))

    name = app.procs["create_item"].name
    ok = post("/api/mutation", {"path": name, "args": {"name": "web"}, "format": "json"})
    assert ok.status_code == 200 and ok.json()["value"] == app.run(lambda ctx: ctx.table("items").first_x()._id)
    bad = post("/api/mutation", {"path": name, "args": {"name": ""}, "format": "json"})
    assert bad.status_code == 400 and "argument `name`" in bad.json()["message"]
    hidden = post("/api/mutation", {"path": app.procs["add_internal"].name, "args": {"name": "x"}})
    assert hidden.status_code == 400 and hidden.json()["code"] == "FunctionNotFound"  # an internal procedure
    # a CRPCError answers with its code's HTTP status and its data
    failed = post("/api/mutation", {"path": app.procs["add_then_fail"].name, "args": {"name": "dup"}, "format": "json"})
    assert failed.status_code == 409
    body = failed.json()
    assert body["errorData"] == {"code": "CONFLICT", "message": "dup conflicts"} and "dup conflicts" in body["errorMessage"]
    refused = post("/api/mutation", {"path": app.procs["add_mine"].name, "args": {"name": "x"}, "format": "json"})
    assert refused.status_code == 401 and refused.json()["errorData"]["code"] == "UNAUTHORIZED"
    assert count(app) == 1


def test_procedures_and_callers_work_on_a_test_app_copy(app: Any) -> None:
    with copy_of(app, clock=FakeClock()) as twin:
        job_id = twin.run(lambda ctx: create_caller(ctx).schedule.now.create_item({"name": "twin"}))
        twin.finish_in_progress_scheduled_functions()
        assert twin.run(lambda ctx: ctx.db.system.get(job_id))["state"]["kind"] == "success"
        assert twin.run_query(app.procs["find"], {"name": "twin"})["name"] == "twin"
    assert count(app) == 0
