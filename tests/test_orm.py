"""ctx.orm (ents.orm): find_many / find_first with every where form and operator, index
choice, columns, order, offset and limit, with_ (batched), insert / update / delete through
the ents writer (validation, uniqueness, rules, cascades, job cancellation), the system
reader, on every backend."""

from __future__ import annotations

from typing import Any

import pytest

from ents import (
    ContextError,
    EntNotFoundError,
    ReadOnlyError,
    RuleError,
    Rules,
    UniqueConstraintError,
    ValidationError,
    define_ent,
    define_ent_schema,
)
from ents.orm import (
    Row,
    and_,
    asc,
    between,
    desc,
    eq,
    gt,
    gte,
    in_array,
    is_not_null,
    is_null,
    lt,
    lte,
    ne,
    not_,
    not_between,
    not_in_array,
    or_,
    plan,
)
from ents.transaction import Transaction

schema = define_ent_schema(
    {
        "users": define_ent({"name": str})
        .field("email", str, unique=True)
        .field("age", int, default=0, index=True)
        .field("nickname", str | None, default=None)
        .index("by_name_age", ["name", "age"])
        .edges("messages", ref=True)
        .edge("profile", ref=True),
        "profiles": define_ent({"bio": str}).edge("user"),
        "messages": define_ent({"text": str}).field("rank", int, default=0).edge("user").edges("tags").index("by_user_rank", ["user_id", "rank"]),
        "tags": define_ent({"name": str}).edges("messages"),
        "answers": define_ent({"question": str}).edge("action", to="_scheduled_functions", deletion="hard"),
        "teams": define_ent({"name": str}).deletion("soft"),
        "things": define_ent({"id": str}),
    }
)

PEOPLE = [("Ada", 36), ("Bob", 20), ("Cy", 52), ("Ada", 20), ("Dee", 0)]


@pytest.fixture
def app(make_app: Any) -> Any:
    app = make_app(schema)

    @app.internal_mutation
    def ping(ctx: Any) -> None: ...

    app.ping = ping
    return app


@pytest.fixture
def ids(app: Any) -> dict[str, str]:
    def seed(ctx: Any) -> dict[str, str]:
        out: dict[str, str] = {}
        for i, (name, age) in enumerate(PEOPLE):
            uid = ctx.table("users").insert({"name": name, "email": f"{name.lower()}{i}@x", "age": age})
            out[f"u{i}"] = uid
        ctx.table("users").get_x(out["u4"]).patch({"nickname": "D"})
        red, blue = ctx.table("tags").insert_many([{"name": "red"}, {"name": "blue"}])
        out["red"], out["blue"] = red, blue
        for i in range(3):
            out[f"m{i}"] = ctx.table("messages").insert({"text": f"m{i}", "rank": 3 - i, "user_id": out["u0"], "tags": [red, blue][: i + 1]})
        out["m3"] = ctx.table("messages").insert({"text": "m3", "user_id": out["u1"], "tags": [blue]})
        out["p0"] = ctx.table("profiles").insert({"bio": "ada's", "user_id": out["u0"]})
        return out

    return app.run(seed)  # type: ignore[no-any-return]


def names(rows: list[Any]) -> list[str]:
    return [r["name"] if "name" in r else r["text"] for r in rows]


def find(app: Any, table: str = "users", **kw: Any) -> list[Row]:
    return app.run(lambda ctx: getattr(ctx.orm.query, table).find_many(**kw))  # type: ignore[no-any-return]


class Statements:
    """The SQL the app runs (and, on SQLite, how SQLite plans each SELECT)."""

    def __init__(self, monkeypatch: Any, app: Any) -> None:
        self.on = False
        self.seen: list[tuple[str, Any]] = []
        original = Transaction.execute
        sqlite = app.url.startswith("sqlite")
        log = self

        def execute(tx: Any, sql: str, params: Any = ()) -> Any:
            if log.on and sql.lstrip().upper().startswith("SELECT"):
                plan = original(tx, "EXPLAIN QUERY PLAN " + sql, params).fetchall() if sqlite else None
                log.seen.append((sql, plan))
            return original(tx, sql, params)

        monkeypatch.setattr(Transaction, "execute", execute)

    def selects(self, table: str) -> list[tuple[str, Any]]:
        """The row reads of ``table`` (not the bookkeeping of a write transaction)."""
        return [(sql, p) for sql, p in self.seen if sql.startswith("SELECT t.") and f'FROM "{table}"' in sql]


# -- where -------------------------------------------------------------------------------------------


def test_where_dicts_and_every_operator(app: Any, ids: dict[str, str]) -> None:
    cases: list[tuple[Any, list[str]]] = [
        ({"name": "Ada"}, ["Ada", "Ada"]),
        ({"name": "Ada", "age": 20}, ["Ada"]),
        ({"age": {"eq": 20}}, ["Bob", "Ada"]),
        ({"age": {"ne": 20}}, ["Ada", "Cy", "Dee"]),
        ({"age": {"lt": 20}}, ["Dee"]),
        ({"age": {"lte": 20}}, ["Dee", "Bob", "Ada"]),
        ({"age": {"gt": 20}}, ["Ada", "Cy"]),
        ({"age": {"gte": 36}}, ["Ada", "Cy"]),
        ({"age": {"gt": 0, "lt": 40}}, ["Bob", "Ada", "Ada"]),
        ({"age": {"in": [0, 52]}}, ["Cy", "Dee"]),
        ({"age": {"in": []}}, []),
        ({"age": {"not_in": [0, 52]}}, ["Ada", "Bob", "Ada"]),
        ({"age": {"notIn": [20]}}, ["Ada", "Cy", "Dee"]),
        ({"nickname": {"is_null": True}}, ["Ada", "Bob", "Cy", "Ada"]),
        ({"nickname": {"isNull": False}}, ["Dee"]),
        ({"nickname": {"is_not_null": True}}, ["Dee"]),
        ({"nickname": None}, ["Ada", "Bob", "Cy", "Ada"]),
        ({"age": {"between": [20, 36]}}, ["Bob", "Ada", "Ada"]),
        ({"age": {"not_between": [20, 36]}}, ["Cy", "Dee"]),
        ({"OR": [{"name": "Cy"}, {"age": 0}]}, ["Cy", "Dee"]),
        ({"AND": [{"name": "Ada"}, {"age": {"gt": 30}}]}, ["Ada"]),
        ({"NOT": {"name": "Ada"}}, ["Bob", "Cy", "Dee"]),
        ({"id": ids["u2"]}, ["Cy"]),
        ({"id": {"in": [ids["u2"], ids["u1"]]}}, ["Bob", "Cy"]),
        ({"_creation_time": {"gt": 0}}, ["Ada", "Bob", "Cy", "Ada", "Dee"]),
    ]
    for where, expected in cases:
        rows = find(app, where=where, order_by={"id": "asc"} if "age" not in where else None)
        assert sorted(names(rows)) == sorted(expected), where
    # the same with the helpers
    helpers: list[tuple[Any, list[str]]] = [
        (eq("name", "Bob"), ["Bob"]),
        (ne("name", "Ada"), ["Bob", "Cy", "Dee"]),
        (lt("age", 20), ["Dee"]),
        (lte("age", 0), ["Dee"]),
        (gt("age", 36), ["Cy"]),
        (gte("age", 52), ["Cy"]),
        (in_array("name", ["Bob", "Dee"]), ["Bob", "Dee"]),
        (not_in_array("name", ["Ada", "Bob"]), ["Cy", "Dee"]),
        (is_null("nickname"), ["Ada", "Bob", "Cy", "Ada"]),
        (is_not_null("nickname"), ["Dee"]),
        (between("age", 1, 36), ["Bob", "Ada", "Ada"]),
        (not_between("age", 1, 36), ["Cy", "Dee"]),
        (and_(eq("name", "Ada"), gt("age", 30)), ["Ada"]),
        (or_(eq("name", "Cy"), {"age": 0}), ["Cy", "Dee"]),
        (not_(or_(eq("name", "Ada"), eq("name", "Bob"))), ["Cy", "Dee"]),
        (and_(eq("id", ids["u3"])), ["Ada"]),
        (or_(), []),
    ]
    for where, expected in helpers:
        assert sorted(names(find(app, where=where))) == sorted(expected), where


def test_where_errors_name_the_table_and_field(app: Any, ids: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match='Unknown operator \'like\' for field "name"'):
        find(app, where={"name": {"like": "A%"}})
    with pytest.raises(ValidationError, match='Unknown field "shoe_size" in a filter on table "users"'):
        find(app, where={"shoe_size": 3})
    with pytest.raises(ValidationError, match='"is_null" of field "nickname" takes True or False'):
        find(app, where={"nickname": {"is_null": "yes"}})
    with pytest.raises(ValidationError, match="takes \\[low, high\\]"):
        find(app, where={"age": {"between": [1]}})
    with pytest.raises(ValidationError, match="use and_"):
        bool(eq("a", 1)) or eq("b", 2)  # noqa: B015
    with pytest.raises(ValidationError, match="in_array\\(\\) takes a list of values"):
        in_array("name", "Ada")
    with pytest.raises(ValidationError, match="ctx.orm: no table 'nope'"):
        find(app, "nope")
    with pytest.raises(ValidationError, match="system tables are read with ctx.orm.system"):
        find(app, "_scheduled_functions")
    with pytest.raises(ValidationError, match='field "id" would clash with the document id'):
        find(app, "things")
    with pytest.raises(ValidationError, match='limit on table "users" takes a non-negative integer'):
        find(app, limit=-1)


# -- index choice -------------------------------------------------------------------------------------


def test_where_picks_the_index_that_matches(app: Any) -> None:
    users = schema.tables["users"]

    def chosen(where: Any, order: Any = None) -> tuple[Any, ...]:
        from ents.orm import _order, _where

        p = plan(users, _where(where), _order(order, "users"))
        return p.index, [f for f, _ in p.eqs], p.lower is not None or p.upper is not None, len(p.filters), p.scans

    assert chosen({"email": "a@x"}) == ("email", ["email"], False, 0, False)
    assert chosen({"name": "Ada", "age": {"gt": 3}}) == ("by_name_age", ["name"], True, 0, False)
    assert chosen({"name": "Ada", "age": 3, "nickname": None}) == ("by_name_age", ["name", "age"], False, 1, False)
    assert chosen({"age": {"lt": 3}, "nickname": "x"}) == ("age", [], True, 1, False)
    assert chosen({"id": "x"}) == ("by_id", ["_id"], False, 0, False)
    assert chosen({"_creation_time": {"gte": 5}}) == ("by_creation_time", [], True, 0, False)
    assert chosen({"nickname": "x"}) == (None, [], False, 1, True)  # no index: a scan
    assert chosen(or_(eq("email", "a"), eq("email", "b"))) == (None, [], False, 1, True)
    assert chosen(None, {"age": "desc"}) == ("age", [], False, 0, True)
    assert chosen({"name": "Ada"}, {"age": "asc"}) == ("by_name_age", ["name"], False, 0, False)
    # order by creation keeps the index whose fields are all fixed
    assert chosen({"email": "a"}, desc("id")) == ("email", ["email"], False, 0, False)
    with pytest.raises(ValidationError, match='cannot order by nickname: no index of the table gives that order'):
        chosen(None, "nickname")
    with pytest.raises(ValidationError, match='mixes "asc" and "desc"'):
        chosen(None, [asc("name"), desc("age")])


def test_an_indexed_equality_reads_through_the_index(app: Any, ids: dict[str, str], monkeypatch: Any) -> None:
    log = Statements(monkeypatch, app)
    log.on = True
    rows = find(app, where={"email": "cy2@x"})
    indexed = find(app, "messages", where={"user_id": ids["u0"], "rank": {"gte": 2}})
    log.on = False
    assert names(rows) == ["Cy"] and names(indexed) == ["m1", "m0"]
    (sql, sqlite_plan), = log.selects("users")
    where = sql.split("WHERE", 1)[1]
    assert '"email" = ' in where and " IS " not in where  # an index range, not a filter
    (msql, mplan), = log.selects("messages")
    assert '"user_id" = ' in msql and '"rank" >= ' in msql
    if sqlite_plan is not None:  # SQLite says how it reads: a search of the index, no scan
        details = " ".join(str(r[-1]) for r in sqlite_plan + mplan)
        assert "SEARCH" in details and "SCAN" not in details, details


def test_order_by_offset_limit_and_columns(app: Any, ids: dict[str, str]) -> None:
    assert [(r.name, r.age) for r in find(app, order_by={"age": "desc"})] == [("Cy", 52), ("Ada", 36), ("Ada", 20), ("Bob", 20), ("Dee", 0)]
    assert [r.age for r in find(app, order_by=asc("age"), limit=2, offset=1)] == [20, 20]
    assert [r.age for r in find(app, where={"name": "Ada"}, order_by=desc("age"))] == [36, 20]
    assert names(find(app, order_by=desc("id"), limit=2)) == ["Dee", "Ada"]
    assert names(find(app, offset=3)) == ["Ada", "Dee"]
    assert find(app, limit=0) == []
    row = find(app, where={"id": ids["u2"]}, columns=["id", "name"])[0]
    assert row == {"id": ids["u2"], "name": "Cy"} and row.id == row["id"] == ids["u2"] and isinstance(row, Row)
    assert set(find(app, limit=1, columns={"email": False, "nickname": False})[0]) == {"id", "_creation_time", "name", "age"}
    full = find(app, limit=1)[0]
    assert set(full) == {"id", "_creation_time", "name", "email", "age", "nickname"} and "_id" not in full
    with pytest.raises(ValidationError, match='Table "users" has no column \'shoe\''):
        find(app, columns=["shoe"])
    with pytest.raises(ValidationError, match="not a mix"):
        find(app, columns={"name": True, "age": False})


def test_find_first_and_find_first_or_throw(app: Any, ids: dict[str, str]) -> None:
    def read(ctx: Any) -> Any:
        users = ctx.orm.query.users
        first = users.find_first(where={"name": "Ada"}, order_by=desc("age"))
        assert users.find_first(where={"name": "Zed"}) is None
        with pytest.raises(EntNotFoundError, match='No document of table "users" matches'):
            users.find_first_or_throw(where={"name": "Zed"})
        return first, users.find_first_or_throw(where={"id": ids["u1"]}), ctx.orm.query["users"].find_first(offset=4)

    first, bob, last = app.run(read)
    assert (first.age, bob.name, last.name) == (36, "Bob", "Dee")


def test_find_many_without_limit_reads_every_row_in_chunks(app: Any, monkeypatch: Any) -> None:
    app.run(lambda ctx: ctx.orm.insert("tags").values([{"name": f"t{i:04}"} for i in range(2500)]))
    log = Statements(monkeypatch, app)
    log.on = True
    rows = find(app, "tags")
    log.on = False
    assert [r.name for r in rows] == [f"t{i:04}" for i in range(2500)]
    assert len(log.selects("tags")) == 3  # keyset chunks of 1000 rows


# -- with_ ------------------------------------------------------------------------------------------


def test_with_loads_edges_of_every_kind(app: Any, ids: dict[str, str]) -> None:
    rows = find(app, where={"id": {"in": [ids["u0"], ids["u1"], ids["u4"]]}}, with_={"messages": True, "profile": True}, order_by="id")
    ada, bob, dee = rows
    assert [m.text for m in ada.messages] == ["m0", "m1", "m2"] and ada.profile.bio == "ada's" and ada.profile.id == ids["p0"]
    assert [m.text for m in bob.messages] == ["m3"] and bob.profile is None and dee.messages == []
    msgs = find(app, "messages", with_=["user", "tags"], order_by="id")
    assert [(m.user.name, [t.name for t in m.tags]) for m in msgs] == [
        ("Ada", ["red"]), ("Ada", ["red", "blue"]), ("Ada", ["red", "blue"]), ("Bob", ["blue"])
    ]
    tags = find(app, "tags", with_={"messages": {"columns": ["text"], "with_": {"user": {"columns": ["name"]}}}}, order_by="id")
    assert tags[0].messages == [{"text": "m0", "user": {"name": "Ada"}}, {"text": "m1", "user": {"name": "Ada"}}, {"text": "m2", "user": {"name": "Ada"}}]
    assert [m.text for m in tags[1].messages] == ["m1", "m2", "m3"]
    # options per owner: limit, where, order
    opts = find(app, where={"name": "Ada", "age": 36}, with_={"messages": {"limit": 2, "order_by": desc("id"), "where": {"rank": {"lt": 3}}}})
    assert [m.text for m in opts[0].messages] == ["m2", "m1"]
    answers = app.run(lambda ctx: ctx.table("answers").insert({"question": "q", "action_id": ctx.scheduler.run_after(10, app.ping)}))
    (answer,) = find(app, "answers", with_="action")
    assert answer.id == answers and answer.action.state.kind == "pending" and answer.action.id == answer.action_id
    with pytest.raises(ValidationError, match='Table "users" has no edge \'tags\''):
        find(app, with_=["tags"])
    with pytest.raises(ValidationError, match='Edge "user" of table "messages" is singular'):
        find(app, "messages", with_={"user": {"limit": 1}})
    with pytest.raises(ValidationError, match="order_by may only"):
        find(app, with_={"messages": {"order_by": "rank"}})


def test_with_loads_edges_in_batches_not_per_row(app: Any, monkeypatch: Any) -> None:
    def seed(ctx: Any) -> None:
        tags = ctx.table("tags").insert_many([{"name": f"t{i}"} for i in range(5)])
        uids = ctx.table("users").insert_many([{"name": f"u{i}", "email": f"u{i}@x"} for i in range(300)])
        ctx.table("profiles").insert_many([{"bio": f"b{i}", "user_id": u} for i, u in enumerate(uids) if i % 2])
        ctx.table("messages").insert_many(
            [{"text": f"m{i}.{j}", "user_id": u, "tags": tags[: j + 1]} for i, u in enumerate(uids) for j in range(2)]
        )

    app.run(seed)
    log = Statements(monkeypatch, app)
    log.on = True
    rows = find(app, with_={"profile": True, "messages": {"with_": ["tags", "user"]}})
    log.on = False
    assert len(rows) == 300 and sum(r.profile is not None for r in rows) == 150
    assert [m.text for m in rows[7].messages] == ["m7.0", "m7.1"] and [len(m.tags) for m in rows[7].messages] == [1, 2]
    assert all(m.user.name == r.name for r in rows for m in r.messages)
    assert len(log.seen) < 15, [s for s, _ in log.seen]


def test_reads_apply_the_apps_rules(make_app: Any) -> None:
    def rules(ctx: Any) -> dict[str, Rules]:
        return {"messages": Rules(read=lambda m: not m.text.startswith("secret"))}

    app = make_app(schema, rules=rules)

    def seed(ctx: Any) -> str:
        uid = ctx.table("users").insert({"name": "Ada", "email": "a@x"})
        ctx.table("messages").insert_many([{"text": t, "user_id": uid} for t in ("hi", "secret plan", "bye")])
        return str(uid)

    uid = app.run(seed)

    def read(ctx: Any) -> Any:
        return (
            [m.text for m in ctx.orm.query.messages.find_many()],
            [m.text for m in ctx.orm.query.users.find_first(with_="messages").messages],
            [m.text for m in ctx.orm.skip_rules.query.messages.find_many()],
            ctx.orm.delete("messages").where({"user_id": uid}),
        )

    visible, through_edge, everything, deleted = app.run(read)
    assert visible == through_edge == ["hi", "bye"] and everything == ["hi", "secret plan", "bye"] and deleted == 2
    assert [m.text for m in app.run(lambda ctx: ctx.skip_rules.table("messages").collect())] == ["secret plan"]


# -- writes -----------------------------------------------------------------------------------------


def test_insert_values_returning(app: Any) -> None:
    def write(ctx: Any) -> Any:
        one = ctx.orm.insert("users").values({"name": "Ada", "email": "a@x"})
        rows = ctx.orm.insert("users").values([{"name": "Bob", "email": "b@x", "age": 3}, {"name": "Cy", "email": "c@x"}]).returning()
        ids_only = ctx.orm.insert("tags").values({"name": "red"}).returning("id")
        return one, rows, ids_only, ctx.orm.insert("tags").values([])

    one, rows, ids_only, none = app.run(write)
    assert len(one) == 1 and isinstance(one[0], str) and none == []
    assert [(r.name, r.age, r.nickname) for r in rows] == [("Bob", 3, None), ("Cy", 0, None)]
    assert set(rows[0]) == {"id", "_creation_time", "name", "email", "age", "nickname"}
    assert list(ids_only[0]) == ["id"]
    with pytest.raises(ValidationError, match='table "users"'):
        app.run(lambda ctx: ctx.orm.insert("users").values({"name": 3, "email": "z@x"}))
    with pytest.raises(UniqueConstraintError, match='"email"'):
        app.run(lambda ctx: ctx.orm.insert("users").values([{"name": "Z", "email": "z@x"}, {"name": "A", "email": "a@x"}]))
    with pytest.raises(ValidationError, match='"id" is the document id'):
        app.run(lambda ctx: ctx.orm.insert("users").values({"id": "x", "name": "Q", "email": "q@x"}))
    assert len(find(app)) == 3  # the refused writes left nothing behind
    with pytest.raises(ReadOnlyError):
        app.run_query(app.query(lambda ctx: ctx.orm.insert("tags").values({"name": "x"}), name="write_in_query"))


def test_update_set_where(app: Any, ids: dict[str, str]) -> None:
    n = app.run(lambda ctx: ctx.orm.update("users").set({"nickname": "A"}).where({"name": "Ada"}))
    assert n == 2 and sorted(r.nickname or "-" for r in find(app)) == ["-", "-", "A", "A", "D"]
    rows = app.run(lambda ctx: ctx.orm.update("users").set({"age": 21}).where(eq("id", ids["u1"])).returning("name", "age"))
    assert rows == [{"name": "Bob", "age": 21}]
    before = app.run(lambda ctx: ctx.orm.update("users").set({"nickname": None}).returning("nickname").where(eq("name", "Ada")))
    assert before == [{"nickname": None}, {"nickname": None}]
    # an update of the field the index range reads updates each row once
    assert app.run(lambda ctx: ctx.orm.update("users").set({"age": 60}).where({"age": {"gte": 20}})) == 4
    assert sorted(r.age for r in find(app)) == [0, 60, 60, 60, 60]
    assert app.run(lambda ctx: ctx.orm.update("users").set({"age": 1}).allow_full_scan()) == 5
    assert app.run(lambda ctx: ctx.orm.update("users").set({"age": 2}).where({"name": "Zed"})) == 0
    with pytest.raises(ValidationError, match="needs a condition; call .allow_full_scan"):
        app.run(lambda ctx: ctx.orm.update("users").set({"age": 1}).where(None))
    with pytest.raises(ValidationError, match="at least one field"):
        app.run(lambda ctx: ctx.orm.update("users").set({}))
    # through the writer: uniqueness and validation, all or nothing
    with pytest.raises(UniqueConstraintError, match="email"):
        app.run(lambda ctx: ctx.orm.update("users").set({"email": "same@x"}).where({"name": "Ada"}))
    with pytest.raises(ValidationError, match='table "users"'):
        app.run(lambda ctx: ctx.orm.update("users").set({"age": "old"}).where({"name": "Ada"}))
    assert sorted(r.email for r in find(app)) == sorted(f"{n.lower()}{i}@x" for i, (n, _) in enumerate(PEOPLE))


def test_delete_cascades_and_cancels_linked_jobs(app: Any, ids: dict[str, str]) -> None:
    job = app.run(lambda ctx: ctx.scheduler.run_after(1000, app.ping))
    app.run(lambda ctx: ctx.table("answers").insert({"question": "q", "action_id": job}))
    assert app.run(lambda ctx: ctx.orm.delete("answers").where({"question": "q"})) == 1
    assert app.run(lambda ctx: ctx.orm.system.get(job)).state.kind == "canceled"
    # deleting users deletes their messages and profile, and the messages' tag edges
    deleted = app.run(lambda ctx: ctx.orm.delete("users").returning("name").where({"name": "Ada"}))
    assert deleted == [{"name": "Ada"}, {"name": "Ada"}]
    assert names(find(app, "messages")) == ["m3"] and find(app, "profiles") == []
    edges = app.run(lambda ctx: ctx.db.query("messages_to_tags").collect())
    assert [e["messages_id"] for e in edges] == [ids["m3"]]
    assert app.run(lambda ctx: ctx.orm.delete("users").where(eq("id", ids["u2"]))) == 1
    with pytest.raises(ValidationError, match="needs a condition"):
        app.run(lambda ctx: ctx.orm.delete("users").where(None))
    assert app.run(lambda ctx: ctx.orm.delete("users").allow_full_scan()) == 2 and find(app) == []


def test_delete_of_many_rows_and_soft_deletion(app: Any) -> None:
    app.run(lambda ctx: ctx.orm.insert("tags").values([{"name": "x" if i % 2 else "y"} for i in range(2500)]))
    assert app.run(lambda ctx: ctx.orm.delete("tags").where({"name": "x"})) == 1250
    assert app.run(lambda ctx: ctx.orm.delete("tags").allow_full_scan()) == 1250
    app.run(lambda ctx: ctx.orm.insert("teams").values([{"name": "a"}, {"name": "b"}, {"name": "c"}]))
    assert app.run(lambda ctx: ctx.orm.delete("teams").where({"name": {"in": ["a", "b"]}})) == 2
    rows = find(app, "teams")
    assert [(r.name, r.deletion_time is not None) for r in rows] == [("a", True), ("b", True), ("c", False)]
    assert names(find(app, "teams", where={"deletion_time": None})) == ["c"]


def test_update_and_delete_apply_the_apps_write_rules(make_app: Any) -> None:
    def rules(ctx: Any) -> dict[str, Rules]:
        return {"tags": Rules(write=lambda change: change.operation != "delete" and (change.value or {}).get("name") != "bad")}

    app = make_app(schema, rules=rules)
    app.run(lambda ctx: ctx.orm.insert("tags").values({"name": "t"}))
    with pytest.raises(RuleError):
        app.run(lambda ctx: ctx.orm.update("tags").set({"name": "bad"}).where({"name": "t"}))
    with pytest.raises(RuleError):
        app.run(lambda ctx: ctx.orm.delete("tags").where({"name": "t"}))
    assert names(find(app, "tags")) == ["t"]


# -- system tables and contexts -----------------------------------------------------------------------


def test_system_reader(app: Any, clock: Any) -> None:
    first = app.run(lambda ctx: ctx.scheduler.run_after(1000, app.ping))
    second = app.run(lambda ctx: ctx.scheduler.run_after(2000, app.ping))
    clock.advance(1000)
    app.finish_in_progress_scheduled_functions()

    def read(ctx: Any) -> Any:
        job = ctx.orm.system.get(first)
        pending = ctx.orm.system.query("_scheduled_functions").filter(lambda q: q.eq(q.field("state.kind"), "pending")).collect()
        return job, pending, ctx.orm.system.query("_scheduled_functions").order("desc").first()

    job, pending, newest = app.run(read)
    assert job.id == job["_id"] == first and job.state.kind == "success" and job.name == app.ping.name
    assert [(j.id, j.scheduled_time) for j in pending] == [(second, clock.now() + 1000)]
    assert newest.id == second


def test_ctx_orm_in_every_kind_of_function(app: Any, ids: dict[str, str]) -> None:
    @app.query
    def count_users(ctx: Any) -> int:
        return len(ctx.orm.query.users.find_many())

    @app.action
    def in_action(ctx: Any) -> None:
        ctx.orm.query.users.find_many()

    assert app.run_query(count_users) == 5
    with pytest.raises(ContextError, match="ctx.orm is not available in actions"):
        app.run_action(in_action)
