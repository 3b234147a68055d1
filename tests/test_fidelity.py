"""Convex Ents fidelity: objects that escape their transaction, return shapes of writes and
pages, ids() queries, the by_id index, reading many:many edge tables, ctx.run_query /
ctx.run_mutation inside mutations, job arguments as passed, and per-call scheduling limits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ents import (
    ContextError,
    EntNotFoundError,
    EntsError,
    FunctionNotFoundError,
    InvalidIdError,
    NotUniqueError,
    ReadOnlyError,
    SchedulerError,
    ValidationError,
    cron_jobs,
)
from tests.schemas import blog

CLOSED = "used after its transaction ended; read it again inside a function"
TABLES = ["users", "profiles", "messages", "tags", "messages_to_tags", "answers", "photos", "notes"]
SYSTEM = ["_scheduled_functions", "_storage"]


@pytest.fixture
def app(make_app: Any) -> Any:
    app = make_app(blog())

    @app.internal_mutation
    def touch(ctx: Any, id: str) -> None:
        ctx.table("users").get_x(id).patch({"age": 99})

    app.fns = {"touch": touch}
    return app


@pytest.fixture
def ids(app: Any) -> dict[str, str]:
    def seed(ctx: Any) -> dict[str, str]:
        ada = ctx.table("users").insert({"name": "Ada", "email": "ada@x", "age": 36})
        bob = ctx.table("users").insert({"name": "Bob", "email": "bob@x", "age": 17})
        red = ctx.table("tags").insert({"name": "red"})
        blue = ctx.table("tags").insert({"name": "blue"})
        green = ctx.table("tags").insert({"name": "green"})
        m0 = ctx.table("messages").insert({"text": "m0", "user_id": ada, "tags": [red, blue, green]})
        m1 = ctx.table("messages").insert({"text": "m1", "user_id": ada, "tags": [red]})
        m2 = ctx.table("messages").insert({"text": "m2", "user_id": bob})
        profile = ctx.table("profiles").insert({"bio": "Analyst", "user_id": ada})
        file = ctx.storage.store(b"hello", "text/plain")
        return {"ada": ada, "bob": bob, "red": red, "blue": blue, "green": green, "m0": m0, "m1": m1, "m2": m2,
                "profile": profile, "file": file, "touch": app.fns["touch"].name}

    return dict(app.run(seed))


def snapshot(app: Any) -> dict[str, Any]:
    """Every document of every table (edge and system tables included)."""

    def read(ctx: Any) -> dict[str, Any]:
        out = {t: ctx.db.query(t).collect() for t in TABLES}
        out.update({t: ctx.db.system.query(t).collect() for t in SYSTEM})
        return out

    return app.run(read)  # type: ignore[no-any-return]


# -- 1. objects that escape their transaction ----------------------------------------------

# (what escapes, how it is used afterwards): every use reads or writes the database
ESCAPES: dict[str, tuple[Callable[[Any, dict[str, str]], Any], Callable[[Any, dict[str, str]], Any]]] = {
    "ent.patch": (lambda ctx, i: ctx.table("users").get_x(i["ada"]), lambda e, i: e.patch({"name": "Eve"})),
    "ent.replace": (lambda ctx, i: ctx.table("users").get_x(i["ada"]), lambda e, i: e.replace({"name": "Eve", "email": "e@x"})),
    "ent.delete": (lambda ctx, i: ctx.table("users").get_x(i["bob"]), lambda e, i: e.delete()),
    "ent.edge 1:1": (lambda ctx, i: ctx.table("users").get_x(i["ada"]), lambda e, i: e.edge("profile")),
    "ent.edge_x": (lambda ctx, i: ctx.table("messages").get_x(i["m0"]), lambda e, i: e.edge_x("user")),
    "ent.edge 1:many": (lambda ctx, i: ctx.table("users").get_x(i["ada"]), lambda e, i: e.edge("messages")),
    "ent of a cohort, edge": (lambda ctx, i: ctx.table("messages").collect()[0], lambda e, i: e.edge("user")),
    "query iterate": (lambda ctx, i: ctx.table("users"), lambda q, i: list(q)),
    "query collected, iterate": (lambda ctx, i: _collected(ctx.table("users")), lambda q, i: list(q)),
    "query first": (lambda ctx, i: ctx.table("users").filter(lambda q: q.eq(q.field("name"), "Ada")), lambda q, i: q.first()),
    "query get": (lambda ctx, i: ctx.table("users"), lambda q, i: q.get(i["ada"])),
    "query get_many": (lambda ctx, i: ctx.table("users"), lambda q, i: q.get_many([i["ada"]])),
    "query insert": (lambda ctx, i: ctx.table("users"), lambda q, i: q.insert({"name": "Eve", "email": "eve@x"})),
    "query delete": (lambda ctx, i: ctx.table("users"), lambda q, i: q.delete()),
    "query paginate": (lambda ctx, i: ctx.table("users"), lambda q, i: q.paginate({"num_items": 1, "cursor": None})),
    "query map": (lambda ctx, i: ctx.table("users"), lambda q, i: q.map(lambda u: u.name)),
    "edge query": (lambda ctx, i: ctx.table("messages").get_x(i["m0"]).edge("tags"), lambda q, i: q.first()),
    "edge query has": (lambda ctx, i: ctx.table("messages").get_x(i["m0"]).edge("tags"), lambda q, i: q.has(i["red"])),
    "edge ids": (lambda ctx, i: ctx.table("messages").get_x(i["m0"]).edge("tags").ids(), lambda q, i: list(q)),
    "inserted id .get": (lambda ctx, i: ctx.table("tags").insert({"name": "new"}), lambda t, i: t.get()),
    "patched id .get_x": (lambda ctx, i: ctx.table("tags").get_x(i["red"]).patch({"name": "r"}), lambda t, i: t.get_x()),
    "ctx.table": (lambda ctx, i: ctx.table, lambda t, i: t("users").get(i["ada"])),
    "ctx.table insert": (lambda ctx, i: ctx.table, lambda t, i: t("tags").insert({"name": "late"})),
    "ctx.db.get": (lambda ctx, i: ctx.db, lambda db, i: db.get(i["ada"])),
    "ctx.db.query": (lambda ctx, i: ctx.db, lambda db, i: db.query("users").collect()),
    "ctx.db.insert": (lambda ctx, i: ctx.db, lambda db, i: db.insert("tags", {"name": "late"})),
    "ctx.db.patch": (lambda ctx, i: ctx.db, lambda db, i: db.patch(i["ada"], {"name": "Eve"})),
    "ctx.db.delete": (lambda ctx, i: ctx.db, lambda db, i: db.delete(i["bob"])),
    "ctx.db.system": (lambda ctx, i: ctx.db, lambda db, i: db.system.get(i["file"])),
    "ctx.scheduler.run_after": (lambda ctx, i: ctx.scheduler, lambda s, i: s.run_after(0, i["touch"], {"id": i["ada"]})),
    "ctx.storage.store": (lambda ctx, i: ctx.storage, lambda s, i: s.store(b"late")),
    "ctx.storage.get": (lambda ctx, i: ctx.storage, lambda s, i: s.get(i["file"])),
    "ctx.storage.delete": (lambda ctx, i: ctx.storage, lambda s, i: s.delete(i["file"])),
    "ctx itself": (lambda ctx, i: ctx, lambda c, i: c.table("users").get_x(i["ada"]).patch({"name": "Eve"})),
    "ctx itself, db": (lambda ctx, i: ctx, lambda c, i: c.db.insert("tags", {"name": "late"})),
    "ctx itself, scheduler": (lambda ctx, i: ctx, lambda c, i: c.scheduler.cancel(i["file"])),
    "ctx itself, run_mutation": (lambda ctx, i: ctx, lambda c, i: c.run_mutation(i["touch"], {"id": i["ada"]})),
    # no entry point of its own asks: the ended transaction's connection refuses
    "ctx.crons.list": (lambda ctx, i: ctx.crons, lambda c, i: c.list()),
    "ctx.crons.delete": (lambda ctx, i: ctx.crons, lambda c, i: c.delete("nightly")),
}


def _collected(q: Any) -> Any:
    q.collect()
    return q


@pytest.mark.parametrize("case", list(ESCAPES))
def test_an_object_that_escapes_its_transaction_is_refused_and_changes_nothing(app: Any, ids: dict[str, str], case: str) -> None:
    make, use = ESCAPES[case]
    escaped = app.run(lambda ctx: make(ctx, ids))
    before = snapshot(app)
    with pytest.raises(ContextError, match=CLOSED):
        use(escaped, ids)
    assert snapshot(app) == before


@pytest.mark.parametrize("case", ["ent.patch", "query insert", "ctx itself", "ctx.db.insert", "ctx.storage.store"])
def test_an_object_kept_from_a_rolled_back_transaction_is_refused(app: Any, ids: dict[str, str], case: str) -> None:
    make, use = ESCAPES[case]
    kept: list[Any] = []

    def fail(ctx: Any) -> None:
        kept.append(make(ctx, ids))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        app.run(fail)
    before = snapshot(app)
    with pytest.raises(ContextError, match=CLOSED):
        use(kept[0], ids)
    assert snapshot(app) == before


def test_the_refusal_names_what_was_used(app: Any, ids: dict[str, str]) -> None:
    ada = app.run(lambda ctx: ctx.table("users").get_x(ids["ada"]))
    with pytest.raises(ContextError, match=f'The ent `{ids["ada"]}` of table "users" was {CLOSED}'):
        ada.patch({"name": "Eve"})
    query = app.run(lambda ctx: ctx.table("tags"))
    with pytest.raises(ContextError, match=f'A query of table "tags" was {CLOSED}'):
        query.first()
    with pytest.raises(ContextError, match=f"ctx.scheduler was {CLOSED}"):
        app.run(lambda ctx: ctx.scheduler).cancel(ids["file"])
    with pytest.raises(ContextError, match=f"ctx.storage was {CLOSED}"):
        app.run(lambda ctx: ctx.storage).get(ids["file"])
    with pytest.raises(ContextError, match=rf"ctx.db.patch\(\) was {CLOSED}"):
        app.run(lambda ctx: ctx.db).patch(ids["ada"], {"name": "Eve"})
    new_id = app.run(lambda ctx: ctx.table("tags").insert({"name": "new"}))
    with pytest.raises(ContextError, match=f'id `{new_id}` of table "tags" was {CLOSED}'):
        new_id.get()
    assert isinstance(ContextError("x"), EntsError)


def test_an_escaped_ent_keeps_its_snapshot(app: Any, ids: dict[str, str]) -> None:
    ada = app.run(lambda ctx: ctx.table("users").get_x(ids["ada"]))
    app.run(lambda ctx: ctx.table("users").get_x(ids["ada"]).patch({"name": "Ada L."}))
    assert (ada.name, ada["age"], ada._id) == ("Ada", 36, ids["ada"])
    assert ada.doc()["email"] == "ada@x"
    assert "Ada" in repr(ada)
    page = app.run(lambda ctx: ctx.table("users").paginate({"num_items": 5, "cursor": None}))
    assert [u.name for u in page["page"]] == ["Ada L.", "Bob"]
    assert page.map(lambda u: u.email)["page"] == ["ada@x", "bob@x"]
    new_id = app.run(lambda ctx: ctx.table("tags").insert({"name": "new"}))
    assert app.run(lambda ctx: ctx.table("tags").get_x(new_id).name) == "new"  # the id itself is a plain id


def test_a_function_stashing_ents_cannot_write_through_them_later(app: Any, ids: dict[str, str]) -> None:
    stash: list[Any] = []

    @app.mutation
    def remember(ctx: Any) -> str:
        stash.append(ctx.table("users").get_x(ids["ada"]))
        stash.append(ctx)
        return "ok"

    app.run_mutation(remember, {})
    before = snapshot(app)
    with pytest.raises(ContextError, match=CLOSED):
        stash[0].delete()
    with pytest.raises(ContextError, match=CLOSED):
        stash[1].scheduler.run_after(0, app.fns["touch"], {"id": ids["ada"]})
    assert snapshot(app) == before


def test_a_scheduled_mutation_stashing_its_ctx_cannot_use_it_later(app: Any, ids: dict[str, str]) -> None:
    stash: list[Any] = []

    @app.internal_mutation
    def job(ctx: Any) -> None:
        stash.append(ctx.table("users"))

    app.run(lambda ctx: ctx.scheduler.run_after(0, job, {}))
    app.finish_in_progress_scheduled_functions()
    before = snapshot(app)
    with pytest.raises(ContextError, match=CLOSED):
        stash[0].insert({"name": "Eve", "email": "eve@x"})
    assert snapshot(app) == before


def test_an_action_ctx_used_after_the_action_returned_is_refused(app: Any, ids: dict[str, str]) -> None:
    stash: list[Any] = []

    @app.action
    def act(ctx: Any) -> None:
        stash.append(ctx)

    app.run_action(act, {})
    before = snapshot(app)
    ctx = stash[0]
    for use in (
        lambda: ctx.run_mutation(app.fns["touch"], {"id": ids["ada"]}),
        lambda: ctx.run_query("tests.test_fidelity:nothing", {}),
        lambda: ctx.scheduler.run_after(0, app.fns["touch"], {"id": ids["ada"]}),
        lambda: ctx.storage.store(b"late"),
        lambda: ctx.storage.get(ids["file"]),
    ):
        with pytest.raises(ContextError, match="used after the action returned"):
            use()
    assert snapshot(app) == before


# -- 2. return shapes: patch / replace ids, pages with map, ids() queries ---------------------


def test_patch_and_replace_return_the_id_with_get(app: Any, ids: dict[str, str]) -> None:
    def body(ctx: Any) -> tuple[Any, ...]:
        patched = ctx.table("users").get_x(ids["ada"]).patch({"name": "Ada L."})
        after_patch = patched.get().name
        replaced = ctx.table("users").get_x(ids["bob"]).replace({"name": "Robert", "email": "rob@x"})
        after_replace = replaced.get_x().doc()
        return patched, after_patch, replaced, after_replace

    patched, after_patch, replaced, after_replace = app.run(body)
    assert isinstance(patched, str) and patched == ids["ada"] and after_patch == "Ada L."
    assert isinstance(replaced, str) and replaced == ids["bob"]
    assert (after_replace["name"], after_replace["email"], after_replace["age"]) == ("Robert", "rob@x", 0)


def test_paginate_returns_a_page_with_map(app: Any, ids: dict[str, str]) -> None:
    def body(ctx: Any) -> Any:
        first = ctx.table("users").paginate({"num_items": 1, "cursor": None})
        mapped = first.map(lambda u: u.name)
        rest = ctx.table("users").paginate({"num_items": 5, "cursor": first["continue_cursor"]}).map(lambda u: u.name)
        edge = ctx.table("messages").get_x(ids["m0"]).edge("tags").paginate({"num_items": 2, "cursor": None})
        many = ctx.table("users").get_x(ids["ada"]).edge("messages").paginate({"num_items": 5, "cursor": None})
        db = ctx.db.query("tags").paginate({"num_items": 2, "cursor": None}).map(lambda d: d["name"])
        return first, mapped, rest, edge.map(lambda t: t.name), many.docs(), db

    first, mapped, rest, edge, many, db = app.run(body)
    assert set(first) == {"page", "is_done", "continue_cursor"} and first["is_done"] is False
    assert mapped == {"page": ["Ada"], "is_done": False, "continue_cursor": first["continue_cursor"]}
    assert isinstance(mapped, dict) and mapped.page == ["Ada"]
    assert rest["page"] == ["Bob"] and rest["is_done"] is True
    assert edge["page"] == ["red", "blue"] and edge["is_done"] is False
    assert [m["text"] for m in many["page"]] == ["m0", "m1"] and isinstance(many["page"][0], dict)
    assert db["page"] == ["red", "blue"]
    with pytest.raises(ValidationError):
        first.map("name")


def test_edge_ids_is_a_query_of_ids(app: Any, ids: dict[str, str]) -> None:
    def body(ctx: Any) -> dict[str, Any]:
        m0 = ctx.table("messages").get_x(ids["m0"])
        tags = m0.edge("tags").ids()
        m2 = ctx.table("messages").get_x(ids["m2"])
        out: dict[str, Any] = {
            "list": list(tags),
            "len": len(tags),
            "take": list(tags.take(2)),
            "first": tags.first(),
            "first_x": tags.first_x(),
            "map": tags.map(lambda i: ctx.table("tags").get_x(i).name),
            "desc": list(m0.edge("tags").order("desc").ids()),
            "unique": ctx.table("messages").get_x(ids["m1"]).edge("tags").ids().unique_x(),
            "none": m2.edge("tags").ids().first(),
            "none_unique": m2.edge("tags").ids().unique(),
            "eq": tags == [ids["red"], ids["blue"], ids["green"]],
            "index": tags[1],
        }
        page1 = tags.paginate({"num_items": 2, "cursor": None})
        page2 = tags.paginate({"num_items": 2, "cursor": page1["continue_cursor"]})
        out["pages"] = (page1["page"], page1["is_done"], page2["page"], page2["is_done"])
        with pytest.raises(NotUniqueError):
            tags.unique()
        with pytest.raises(EntNotFoundError):
            m2.edge("tags").ids().first_x()
        with pytest.raises(EntNotFoundError):
            m2.edge("tags").ids().unique_x()
        # 1:many edges too
        ada = ctx.table("users").get_x(ids["ada"])
        out["messages"] = list(ada.edge("messages").ids())
        out["messages_first"] = ada.edge("messages").order("desc").ids().first()
        out["messages_len"] = len(ada.edge("messages").ids())
        out["messages_page"] = ada.edge("messages").ids().paginate({"num_items": 1, "cursor": None})["page"]
        return out

    got = app.run(body)
    tags = [ids["red"], ids["blue"], ids["green"]]
    assert got["list"] == tags and got["len"] == 3 and got["take"] == tags[:2]
    assert got["first"] == got["first_x"] == ids["red"]
    assert got["map"] == ["red", "blue", "green"]
    assert got["desc"] == tags[::-1]
    assert got["unique"] == ids["red"]
    assert got["none"] is None and got["none_unique"] is None
    assert got["eq"] is True and got["index"] == ids["blue"]
    assert got["pages"] == (tags[:2], False, tags[2:], True)
    assert got["messages"] == [ids["m0"], ids["m1"]]
    assert got["messages_first"] == ids["m1"] and got["messages_len"] == 2
    assert got["messages_page"] == [ids["m0"]]


# -- 3. the by_id index ------------------------------------------------------------------------


def test_every_table_has_the_by_id_index(app: Any, ids: dict[str, str]) -> None:
    @app.internal_mutation
    def job(ctx: Any) -> None:
        pass

    def body(ctx: Any) -> dict[str, Any]:
        job_id = ctx.scheduler.run_after(1000, job, {})
        other = ctx.scheduler.run_after(2000, job, {})
        return {
            "table": [u.name for u in ctx.table("users", "by_id", lambda q: q.eq("_id", ids["bob"]))],
            "get": ctx.table("users").get("by_id", ids["ada"]).name,
            "many": [u.name for u in ctx.table("users").get_many("by_id", [ids["bob"], ids["ada"]])],
            "db": [d["name"] for d in ctx.db.query("users").with_index("by_id", lambda q: q.eq("_id", ids["ada"])).collect()],
            "jobs": [j._id for j in ctx.table("_scheduled_functions", "by_id", lambda q: q.eq("_id", job_id))],
            "system": ctx.db.system.query("_scheduled_functions").with_index("by_id", lambda q: q.eq("_id", other)).unique()["_id"],
            "storage": ctx.table("_storage", "by_id", lambda q: q.eq("_id", ids["file"])).unique_x().size,
            "ids": (job_id, other),
        }

    got = app.run(body)
    assert got["table"] == ["Bob"] and got["get"] == "Ada" and got["db"] == ["Ada"]
    assert got["many"] == ["Bob", "Ada"]
    assert got["jobs"] == [got["ids"][0]] and got["system"] == got["ids"][1]
    assert got["storage"] == 5


def test_by_id_ranges_order_and_pages(app: Any, ids: dict[str, str]) -> None:
    def body(ctx: Any) -> dict[str, Any]:
        t = ctx.table("tags")
        return {
            "gt": [x.name for x in ctx.table("tags", "by_id", lambda q: q.gt("_id", ids["red"]))],
            "gte_lt": [x.name for x in ctx.table("tags", "by_id", lambda q: q.gte("_id", ids["red"]).lt("_id", ids["green"]))],
            "lte": [x.name for x in ctx.table("tags", "by_id", lambda q: q.lte("_id", ids["blue"]))],
            "desc": [x.name for x in t.order("desc", "by_id")],
            "page1": ctx.table("tags", "by_id").paginate({"num_items": 2, "cursor": None}),
        }

    got = app.run(body)
    assert got["gt"] == ["blue", "green"]
    assert got["gte_lt"] == ["red", "blue"]
    assert got["lte"] == ["red", "blue"]
    assert got["desc"] == ["green", "blue", "red"]
    page1 = got["page1"]
    assert [x.name for x in page1["page"]] == ["red", "blue"]
    page2 = app.run(lambda ctx: ctx.table("tags", "by_id").paginate({"num_items": 2, "cursor": page1["continue_cursor"]}))
    assert [x.name for x in page2["page"]] == ["green"] and page2["is_done"] is True
    with pytest.raises(InvalidIdError):
        app.run(lambda ctx: ctx.table("tags", "by_id", lambda q: q.eq("_id", ids["ada"])).first())
    with pytest.raises(ValidationError, match="by_id"):
        app.run(lambda ctx: ctx.table("tags", "by_id", lambda q: q.eq("name", "red")).first())


def test_by_id_and_by_creation_time_are_reserved_index_names() -> None:
    from ents import SchemaError, define_ent

    for name in ("by_id", "by_creation_time"):
        with pytest.raises(SchemaError, match=f'Index name "{name}" is reserved'):
            define_ent({"x": str}).index(name, ["x"])


# -- 4. many:many edge tables through ctx.db ------------------------------------------------


def test_ctx_db_reads_the_rows_of_a_many_many_edge_table(app: Any, ids: dict[str, str]) -> None:
    def body(ctx: Any) -> Any:
        rows = ctx.db.query("messages_to_tags").collect()
        of_m1 = ctx.db.query("messages_to_tags").filter(lambda q: q.eq(q.field("messages_id"), ids["m1"])).collect()
        by_tag = ctx.db.query("messages_to_tags").with_index("tags_id_messages_id", lambda q: q.eq("tags_id", ids["red"])).collect()
        return rows, of_m1, by_tag, ctx.db.get(rows[0]["_id"])

    rows, of_m1, by_tag, got = app.run(body)
    assert all(set(r) == {"_id", "_creation_time", "messages_id", "tags_id"} for r in rows)
    assert [(r["messages_id"], r["tags_id"]) for r in rows] == [
        (ids["m0"], ids["red"]), (ids["m0"], ids["blue"]), (ids["m0"], ids["green"]), (ids["m1"], ids["red"])
    ]
    assert [r["tags_id"] for r in of_m1] == [ids["red"]]
    assert [r["messages_id"] for r in by_tag] == [ids["m0"], ids["m1"]]
    assert got == rows[0]


def test_writing_a_many_many_edge_table_directly_is_refused(app: Any, ids: dict[str, str]) -> None:
    row_id = app.run(lambda ctx: ctx.db.query("messages_to_tags").first()["_id"])
    before = snapshot(app)
    writes = [
        lambda ctx: ctx.db.insert("messages_to_tags", {"messages_id": ids["m2"], "tags_id": ids["red"]}),
        lambda ctx: ctx.db.patch(row_id, {"tags_id": ids["green"]}),
        lambda ctx: ctx.db.replace(row_id, {"messages_id": ids["m2"], "tags_id": ids["red"]}),
        lambda ctx: ctx.db.delete(row_id),
    ]
    for write in writes:
        with pytest.raises(ReadOnlyError, match='"messages_to_tags".*write the edge through the ents') as err:
            app.run(write)
        assert err.value.table == "messages_to_tags"
    assert snapshot(app) == before


# -- 5. ctx.run_query / ctx.run_mutation inside mutations -----------------------------------


@pytest.fixture
def nested(app: Any) -> dict[str, Any]:
    @app.internal_mutation
    def add_tag(ctx: Any, name: str, fail: bool = False) -> str:
        tag = ctx.table("tags").insert({"name": name})
        ctx.scheduler.run_after(0, noop, {})
        if fail:
            raise RuntimeError(f"no {name}")
        return tag

    @app.internal_mutation
    def noop(ctx: Any) -> None:
        pass

    @app.query
    def tag_names(ctx: Any) -> list[str]:
        return [t.name for t in ctx.table("tags")]

    @app.internal_query
    def first_tag(ctx: Any) -> Any:
        return ctx.table("tags").first_x()

    @app.query
    def who(ctx: Any) -> Any:
        return ctx.auth.get_user_identity()

    @app.internal_query
    def writes(ctx: Any) -> None:
        ctx.table("tags").insert({"name": "from a query"})

    @app.mutation
    def bad_result(ctx: Any) -> int:
        ctx.table("tags").insert({"name": "bad result"})
        return "not an int"  # type: ignore[return-value]

    @app.action
    def act(ctx: Any) -> None:
        pass

    return {"add_tag": add_tag, "noop": noop, "tag_names": tag_names, "first_tag": first_tag, "who": who,
            "writes": writes, "bad_result": bad_result, "act": act}


def jobs(app: Any) -> list[dict[str, Any]]:
    return app.run(lambda ctx: ctx.db.system.query("_scheduled_functions").collect())  # type: ignore[no-any-return]


def test_a_mutation_runs_a_mutation_as_a_sub_transaction(app: Any, ids: dict[str, str], nested: dict[str, Any]) -> None:
    before_jobs = len(jobs(app))

    @app.mutation
    def outer(ctx: Any) -> list[str]:
        ok = ctx.run_mutation(nested["add_tag"], {"name": "kept"})
        assert ctx.table("tags").get_x(ok).name == "kept"  # the caller sees the callee's writes
        with pytest.raises(RuntimeError, match="no dropped"):
            ctx.run_mutation(nested["add_tag"], {"name": "dropped", "fail": True})
        ctx.table("tags").insert({"name": "after"})
        return ctx.run_query(nested["tag_names"], {})

    seen = app.run_mutation(outer, {})
    assert seen == ["red", "blue", "green", "kept", "after"]
    assert app.run_query(nested["tag_names"], {}) == seen
    # the kept call's job committed with the caller; the failed call's job rolled back with it
    assert len(jobs(app)) == before_jobs + 1


def test_a_failing_caller_rolls_back_what_its_callees_did(app: Any, ids: dict[str, str], nested: dict[str, Any]) -> None:
    before = snapshot(app)

    @app.mutation
    def outer(ctx: Any) -> None:
        ctx.run_mutation(nested["add_tag"], {"name": "kept"})
        raise RuntimeError("caller fails")

    with pytest.raises(RuntimeError, match="caller fails"):
        app.run_mutation(outer, {})
    assert snapshot(app) == before


def test_nested_calls_validate_arguments_and_results(app: Any, ids: dict[str, str], nested: dict[str, Any]) -> None:
    before = snapshot(app)
    with pytest.raises(ValidationError, match="name"):
        app.run(lambda ctx: ctx.run_mutation(nested["add_tag"], {"name": 3}))
    with pytest.raises(ValidationError, match="bad_result"):
        app.run(lambda ctx: ctx.run_mutation(nested["bad_result"], {}))

    def catch_bad_result(ctx: Any) -> list[str]:
        with pytest.raises(ValidationError):
            ctx.run_mutation(nested["bad_result"], {})
        return [t.name for t in ctx.table("tags")]

    assert app.run(catch_bad_result) == ["red", "blue", "green"]  # its insert rolled back alone
    assert snapshot(app) == before


def test_nested_calls_kinds_identity_and_returned_ents(app: Any, ids: dict[str, str], nested: dict[str, Any]) -> None:
    before = snapshot(app)
    with pytest.raises(ContextError, match="run_action"):
        app.run(lambda ctx: ctx.run_action(nested["act"], {}))
    with pytest.raises(FunctionNotFoundError, match="defined as an action; an action cannot run inside a transaction"):
        app.run(lambda ctx: ctx.run_mutation(nested["act"], {}))
    with pytest.raises(FunctionNotFoundError):
        app.run(lambda ctx: ctx.run_query(nested["add_tag"], {"name": "x"}))
    assert snapshot(app) == before

    # a query called from a mutation only reads; the caller can catch that and go on
    def catch_query_write(ctx: Any) -> str:
        with pytest.raises(ReadOnlyError):
            ctx.run_query(nested["writes"], {})
        return ctx.table("tags").insert({"name": "caller writes"})

    assert app.run(catch_query_write)
    # identity passes through; an ent returned by the callee belongs to the caller's transaction
    assert app.run(lambda ctx: ctx.run_query(nested["who"], {}), identity={"sub": "u1"}) == {"sub": "u1"}

    def rename_returned(ctx: Any) -> str:
        tag = ctx.run_query(nested["first_tag"], {})
        tag.patch({"name": "crimson"})
        return ctx.table("tags").get_x(tag._id).name

    assert app.run(rename_returned) == "crimson"


def test_a_query_may_run_a_query_but_not_a_mutation(app: Any, ids: dict[str, str], nested: dict[str, Any]) -> None:
    @app.query
    def outer(ctx: Any) -> list[str]:
        with pytest.raises(ContextError, match="run_mutation"):
            ctx.run_mutation(nested["add_tag"], {"name": "x"})
        return ctx.run_query(nested["tag_names"], {})

    assert app.run_query(outer, {}) == ["red", "blue", "green"]


def test_nested_scheduling_counts_toward_the_callers_limit(
    app: Any, ids: dict[str, str], nested: dict[str, Any], monkeypatch: Any
) -> None:
    monkeypatch.setattr("ents.scheduler.MAX_JOBS_PER_CALL", 3)
    before = snapshot(app)

    @app.mutation
    def outer(ctx: Any) -> None:
        ctx.scheduler.run_after(0, nested["noop"], {})
        ctx.scheduler.run_after(0, nested["noop"], {})
        ctx.run_mutation(nested["add_tag"], {"name": "one"})  # its job is the third
        ctx.run_mutation(nested["add_tag"], {"name": "two"})  # the fourth is refused

    with pytest.raises(SchedulerError, match="Too many functions"):
        app.run_mutation(outer, {})
    assert snapshot(app) == before


# -- 6. a job's args are what the caller passed ---------------------------------------------


def test_job_args_are_exactly_what_the_caller_passed(app: Any, ids: dict[str, str]) -> None:
    seen: list[tuple[int, int]] = []

    @app.internal_mutation
    def add(ctx: Any, a: int, b: int = 5, c: float = 1.5) -> None:
        seen.append((a, b))

    job_id = app.run(lambda ctx: ctx.scheduler.run_after(0, add, {"a": 1}))
    assert app.run(lambda ctx: ctx.db.system.get(job_id)["args"]) == {"a": 1}
    before = snapshot(app)
    with pytest.raises(ValidationError, match="a"):  # validated when scheduling all the same
        app.run(lambda ctx: ctx.scheduler.run_after(0, add, {"a": "one"}))
    assert snapshot(app) == before
    app.finish_in_progress_scheduled_functions()
    assert seen == [(1, 5)]
    assert app.run(lambda ctx: ctx.db.system.get(job_id)["state"]["kind"]) == "success"


def test_cron_args_are_stored_as_given(make_app: Any, clock: Any) -> None:
    crons = cron_jobs()
    app = make_app(blog(), crons=crons)
    seen: list[tuple[int, int]] = []

    @app.internal_mutation
    def tick(ctx: Any, a: int, b: int = 5) -> None:
        seen.append((a, b))

    crons.interval("tick", {"minutes": 1}, tick, {"a": 1})
    app.finish_in_progress_scheduled_functions()
    stored = app.run(lambda ctx: [c["args"] for c in ctx.table("_cron_jobs")])
    assert stored == [{"a": 1}]
    assert [j["args"] for j in jobs(app)] == [{"a": 1}]
    assert seen == [(1, 5)]


# -- 7. an action's scheduling limit counts per call -----------------------------------------


def test_an_actions_scheduling_limit_counts_over_the_whole_call(
    app: Any, ids: dict[str, str], monkeypatch: Any
) -> None:
    monkeypatch.setattr("ents.scheduler.MAX_JOBS_PER_CALL", 3)

    @app.internal_mutation
    def noop(ctx: Any) -> None:
        pass

    @app.internal_mutation
    def schedule_three(ctx: Any) -> None:
        for _ in range(3):
            ctx.scheduler.run_after(0, noop, {})

    @app.action
    def fan_out(ctx: Any, n: int) -> int:
        done = 0
        for _ in range(n):
            ctx.scheduler.run_after(0, noop, {})
            done += 1
        return done

    @app.action
    def with_mutation(ctx: Any) -> None:
        for _ in range(3):
            ctx.scheduler.run_after(0, noop, {})
        ctx.run_mutation(schedule_three, {})  # a function call of its own, with its own budget

    assert app.run_action(fan_out, {"n": 3}) == 3
    assert len(jobs(app)) == 3
    with pytest.raises(SchedulerError, match="Too many functions scheduled by one call of `.*fan_out`"):
        app.run_action(fan_out, {"n": 4})
    assert len(jobs(app)) == 6  # the first three of that call stay (each call committed at once)
    app.run_action(with_mutation, {})
    assert len(jobs(app)) == 12


def test_an_async_actions_concurrent_scheduling_stays_within_the_limit(
    app: Any, ids: dict[str, str], monkeypatch: Any
) -> None:
    import asyncio

    monkeypatch.setattr("ents.scheduler.MAX_JOBS_PER_CALL", 3)

    @app.internal_mutation
    def noop(ctx: Any) -> None:
        pass

    @app.action
    async def burst(ctx: Any) -> list[str]:
        results = await asyncio.gather(*[ctx.scheduler.run_after(0, noop, {}) for _ in range(6)], return_exceptions=True)
        return ["ok" if isinstance(r, str) else type(r).__name__ for r in results]

    outcome = app.run_action(burst, {})
    assert sorted(outcome) == ["SchedulerError"] * 3 + ["ok"] * 3
    assert len(jobs(app)) == 3
