"""Reopening a database whose schema changed a field's type, optionality or an edge's shape.

ents remembers every field's type in the database. A change that existing documents may
not satisfy is refused with a SchemaError naming table, field and what to do, and leaves
the database exactly as it was; widenings keep working (converting stored values when
their storage changes), and a database from an ents that did not remember types opens
and records them.
"""

from __future__ import annotations

from typing import Any, Literal

import pytest

import ents.ddl as ddl
from ents import App, SchemaError, define_ent, define_ent_schema
from ents.backends import open_backend

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
def url(backend: str, db_url: str) -> str:
    """A database that outlives the App using it (every backend but memory)."""
    if backend == "memory":
        pytest.skip("an in-memory database cannot be reopened")
    return db_url


def db_state(url: str) -> dict[str, Any]:
    """Every table's columns (with their SQL types), indexes and rows, read without
    opening an App (which would migrate the database)."""
    backend = open_backend(url)
    try:
        with backend.connection() as conn:
            out: dict[str, Any] = {}
            for table in sorted(backend.introspect_tables(conn)):
                q = backend.dialect.q(table)
                if backend.dialect.name == "sqlite":
                    cols = [tuple(r[1:3]) for r in conn.execute(f"PRAGMA table_info({q})").fetchall()]
                else:
                    cols = conn.execute(
                        "SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
                        (table,),
                    ).fetchall()
                rows = sorted(conn.execute(f"SELECT * FROM {q}").fetchall(), key=repr)
                indexes = backend.introspect_index_sql(conn, table) or sorted(backend.introspect_indexes(conn, table))
                out[table] = {"columns": [tuple(c) for c in cols], "rows": [tuple(r) for r in rows], "indexes": indexes}
            return out
    finally:
        backend.close()


def refused(url: str, schema: Any, *fragments: str) -> SchemaError:
    """Opening ``url`` with ``schema`` raises a SchemaError saying ``fragments`` and
    changes nothing in the database."""
    before = db_state(url)
    with pytest.raises(SchemaError) as info:
        App(schema, url)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
    assert db_state(url) == before
    return info.value


def users(**fields: Any) -> Any:
    d = define_ent({"name": str, **fields})
    return define_ent_schema({"users": d})


# -- type changes ------------------------------------------------------------------------------


def test_a_changed_field_type_is_refused_and_changes_nothing(url: str) -> None:
    with App(users(age=str), url) as app:
        ada = app.run(lambda ctx: ctx.table("users").insert({"name": "Ada", "age": "x"}))
    err = refused(
        url,
        users(age=int),
        'Field "age" of table "users" changed type from str to int',
        "str 'x'",
        "keep a type that accepts the old values too",
        "add a new field, copy the values into it, then remove this one",
    )
    assert (err.table, err.field) == ("users", "age")
    # the old schema still opens, and the old value reads back as it was written
    with App(users(age=str), url) as app:
        assert app.run(lambda ctx: ctx.table("users").get_x(ada).age) == "x"


def test_a_type_change_is_accepted_when_no_document_holds_a_value(url: str) -> None:
    with App(users(code=str | None, score=str), url) as app:
        app.run(lambda ctx: ctx.table("users").insert({"name": "Ada", "code": None, "score": "s"}))
        app.run(lambda ctx: ctx.table("users").delete())
        ada = app.run(lambda ctx: ctx.table("users").insert({"name": "Ada", "score": "s"}))
    refused(url, users(code=int | None, score=int), 'Field "score" of table "users" changed type from str to int')
    with App(users(code=int | None, score=str), url) as app:  # no document has a code: any type will do
        app.run(lambda ctx: ctx.table("users").get_x(ada).patch({"code": 12}))
        got = app.run(lambda ctx: ctx.table("users").get_x(ada).code)
        assert got == 12 and type(got) is int  # stored as an integer, not as text
        assert app.run(lambda ctx: [u.name for u in ctx.table("users").filter(lambda q: q.gt(q.field("code"), 9))]) == ["Ada"]
    with App(users(code=int | None, score=str), url) as app:
        assert app.run(lambda ctx: ctx.table("users").get_x(ada).code) == 12


def test_a_field_dropped_and_added_back_with_another_type_is_checked(url: str) -> None:
    with App(users(age=str), url) as app:
        app.run(lambda ctx: ctx.table("users").insert({"name": "Ada", "age": "x"}))
    with App(users(), url) as app:  # the column and its values stay
        assert app.run(lambda ctx: ctx.table("users").first_x().name) == "Ada"
    refused(url, users(age=int | None), 'Field "age" of table "users" changed type from str to int | None')


def test_widenings_keep_working_and_convert_stored_values(url: str) -> None:
    v1 = define_ent_schema(
        {
            "items": define_ent(
                {"label": str, "n": int, "ok": bool, "ratio": float, "kind": Literal["a", "b"], "note": str}
            ).index("by_label", ["label"]).index("by_n", ["n"])
        }
    )
    v2 = define_ent_schema(
        {
            "items": define_ent(
                {
                    "label": str | int,  # a union member: stored as JSON from now on
                    "n": float,  # int to float
                    "ok": bool | str,
                    "ratio": float | list[float],
                    "kind": Literal["a", "b", "c"],  # a Literal value
                    "note": str | None,  # None
                }
            ).index("by_label", ["label"]).index("by_n", ["n"])
        }
    )
    docs = [
        {"label": "x", "n": 5, "ok": True, "ratio": 2.0, "kind": "a", "note": "é\n\"q\""},
        {"label": "y", "n": -(2**53), "ok": False, "ratio": 1e300, "kind": "b", "note": "n"},
    ]
    with App(v1, url) as app:
        ids = app.run(lambda ctx: ctx.table("items").insert_many(docs))
    with App(v2, url) as app:

        def read(ctx: Any) -> None:
            x, y = (ctx.table("items").get_x(i) for i in ids)
            assert (x.label, x.n, x.ok, x.ratio, x.kind, x.note) == ("x", 5.0, True, 2.0, "a", 'é\n"q"')
            assert (type(x.label), type(x.n), type(x.ok), type(x.ratio)) == (str, float, bool, float)
            assert (y.label, y.n, y.ok, y.ratio) == ("y", -(2.0**53), False, 1e300)
            assert [i.label for i in ctx.table("items", "by_label", lambda q: q.eq("label", "y"))] == ["y"]
            assert [i.label for i in ctx.table("items", "by_n", lambda q: q.gt("n", 2))] == ["x"]
            assert [i.label for i in ctx.table("items").filter(lambda q: q.eq(q.field("ok"), True))] == ["x"]

        app.run(read)
        app.run(lambda ctx: ctx.table("items").insert({"label": 7, "n": 1.5, "ok": "maybe", "ratio": [1.0], "kind": "c", "note": None}))
        assert app.run(lambda ctx: [i.label for i in ctx.table("items", "by_label", lambda q: q.eq("label", 7))]) == [7]
    with App(v2, url) as app:  # converted once: reopening changes nothing more
        before = db_state(url)
        app.run(read)
    assert db_state(url) == before


def test_int_to_float_is_refused_when_a_value_would_lose_precision(url: str) -> None:
    with App(users(n=int), url) as app:
        app.run(lambda ctx: ctx.table("users").insert({"name": "Ada", "n": 2**53 + 1}))
    refused(url, users(n=float), 'Field "n" of table "users" changed type from int to float', str(2**53 + 1), "int | float")
    with App(users(n=int | float), url) as app:  # stored as JSON: exact
        assert app.run(lambda ctx: ctx.table("users").first_x().n) == 2**53 + 1


def test_a_narrower_literal_is_accepted_only_when_the_values_fit(url: str) -> None:
    with App(users(kind=Literal["a", "b", "c"]), url) as app:
        app.run(lambda ctx: ctx.table("users").insert_many([{"name": "A", "kind": "a"}, {"name": "B", "kind": "b"}]))
    refused(url, users(kind=Literal["a", "c"]), "changed type from Literal['a', 'b', 'c'] to Literal['a', 'c']", "str 'b'")
    with App(users(kind=Literal["a", "b"]), url) as app:
        assert app.run(lambda ctx: sorted(u.kind for u in ctx.table("users"))) == ["a", "b"]


# -- optional to required --------------------------------------------------------------------


def test_optional_to_required_is_refused_while_documents_lack_the_field(url: str) -> None:
    with App(users(bio=str | None), url) as app:
        ada = app.run(lambda ctx: ctx.table("users").insert({"name": "Ada", "bio": "hi"}))
        bob = app.run(lambda ctx: ctx.table("users").insert({"name": "Bob"}))
    refused(
        url,
        users(bio=str),
        'Field "bio" of table "users" was optional (str | None) and is now required (str)',
        "keep it Optional, give it a default, or set it on every document first",
    )
    with App(users(bio=str | None), url) as app:
        app.run(lambda ctx: ctx.table("users").get_x(bob).patch({"bio": "yo"}))
    with App(users(bio=str), url) as app:
        assert app.run(lambda ctx: [u.bio for u in ctx.table("users")]) == ["hi", "yo"]
        assert app.run(lambda ctx: ctx.table("users").get_x(ada).bio) == "hi"


def test_optional_to_a_field_with_a_default_fills_the_default(url: str) -> None:
    with App(users(level=int | None), url) as app:
        app.run(lambda ctx: ctx.table("users").insert_many([{"name": "Ada", "level": 3}, {"name": "Bob"}]))
    with_default = define_ent_schema({"users": define_ent({"name": str}).field("level", int, default=1)})
    with App(with_default, url) as app:
        assert app.run(lambda ctx: [u.level for u in ctx.table("users")]) == [3, 1]
        # stored, so queries see it too
        assert app.run(lambda ctx: [u.name for u in ctx.table("users").filter(lambda q: q.eq(q.field("level"), 1))]) == ["Bob"]


# -- edges -------------------------------------------------------------------------------------


def blog(message_edge: Any = None, user_end: str = "many", extra: dict[str, Any] | None = None) -> Any:
    users = define_ent({"name": str})
    if user_end == "many":
        users = users.edges("messages", ref=True)
    elif user_end == "one":
        users = users.edge("message", ref=True)
    messages = define_ent({"text": str})
    messages = message_edge(messages) if message_edge else messages.edge("user")
    return define_ent_schema({"users": users, "messages": messages, **(extra or {})})


def seed_blog(url: str, schema: Any = None, per_user: int = 2) -> dict[str, Any]:
    def seed(ctx: Any) -> dict[str, Any]:
        ada = ctx.table("users").insert({"name": "Ada"})
        msgs = ctx.table("messages").insert_many([{"text": f"m{i}", "user_id": ada} for i in range(per_user)])
        return {"ada": ada, "msgs": msgs}

    with App(schema or blog(), url) as app:
        return dict(app.run(seed))


def test_an_edge_pointing_to_another_table_is_refused(url: str) -> None:
    ids = seed_blog(url)
    moved = blog(
        lambda m: m.edge("user", to="admins"),
        user_end="none",
        extra={"admins": define_ent({"name": str}).edges("messages", ref=True)},
    )
    err = refused(
        url,
        moved,
        'Edge "user" of table "messages" now points to table "admins", but documents hold ids of table "users" '
        f'in its field "user_id" (e.g. `{ids["ada"]}`)',
        'store the new edge in another field (field=...)',
    )
    assert (err.table, err.field) == ("messages", "user_id")


def test_1_to_many_to_1_to_1_is_refused_while_several_ents_share_a_target(url: str) -> None:
    ids = seed_blog(url)
    one_to_one = blog(user_end="one")
    refused(
        url,
        one_to_one,
        'Cannot make edge "user" of table "messages" 1:1: several documents already point at the same document '
        f'`{ids["ada"]}` of table "users" through field "user_id"',
        "keep the edge 1:many",
    )
    with App(blog(), url) as app:
        app.run(lambda ctx: ctx.table("messages").get_x(ids["msgs"][1]).delete())
    with App(one_to_one, url) as app:
        assert app.run(lambda ctx: ctx.table("users").get_x(ids["ada"]).edge("message").text) == "m0"


def test_an_optional_edge_made_required_is_refused_while_some_ents_have_none(url: str) -> None:
    optional = blog(lambda m: m.edge("user", optional=True))
    with App(optional, url) as app:
        app.run(lambda ctx: ctx.table("messages").insert({"text": "orphan"}))
    refused(url, blog(), 'Edge "user" of table "messages" (field "user_id") was optional and is now required', "optional=True")


# -- older databases and the cost of the check ----------------------------------------------------


def test_a_database_without_remembered_types_opens_and_records_them(url: str) -> None:
    with App(users(age=str), url) as app:
        app.run(lambda ctx: ctx.table("users").insert({"name": "Ada", "age": "x"}))
    # as an ents that did not remember types left it
    backend = open_backend(url)
    try:
        with backend.connection() as conn:
            conn.begin(write=True)
            conn.execute('ALTER TABLE "_ents_tables" DROP COLUMN "fields"')
            conn.commit()
    finally:
        backend.close()
    # refused for another reason: the column that remembers types is not added either
    refused(url, users(age=str, country=str), 'Field "country" was added to table "users"')
    assert [c[0] for c in db_state(url)["_ents_tables"]["columns"]] == ["name", "num"]
    with App(users(age=str), url) as app:
        assert app.run(lambda ctx: ctx.table("users").first_x().age) == "x"
    refused(url, users(age=int), 'Field "age" of table "users" changed type from str to int')


def test_reopening_runs_data_queries_only_for_changed_fields(url: str, monkeypatch: Any) -> None:
    calls: list[tuple[str, ...]] = []
    real = ddl.Introspection.__init__

    def recording(self: Any, *args: Any, **kwargs: Any) -> None:
        real(self, *args, **kwargs)
        for name in ("has_rows", "several_rows", "duplicate", "value", "nulls", "outside", "beyond"):
            fn = getattr(self, name)
            setattr(self, name, lambda *a, fn=fn, name=name: (calls.append((name, *map(str, a[:2]))), fn(*a))[1])

    monkeypatch.setattr(ddl.Introspection, "__init__", recording)
    schema = users(age=str, bio=str | None, n=int)
    with App(schema, url) as app:
        app.run(lambda ctx: ctx.table("users").insert_many([{"name": f"u{i}", "age": "x", "n": i} for i in range(50)]))
    calls.clear()
    App(schema, url).close()
    assert calls == []
    App(users(age=str, bio=str | None, n=int | None), url).close()  # a widening needs no look at the data
    assert calls == []
    with pytest.raises(SchemaError):
        App(users(age=str, bio=str, n=int | None), url)
    assert calls == [("nulls", "users", "bio")]
