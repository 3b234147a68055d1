"""Reading: ctx.table lookups, index ranges, filters, ordering, pagination, ents and edges."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from ents import (
    EntNotFoundError,
    InvalidIdError,
    NotUniqueError,
    ReadOnlyError,
    ValidationError,
)
from ents.query import Ent
from tests.schemas import SqlLog, blog, social

USERS = [
    {"name": "Ada", "email": "ada@x", "age": 36, "meta": {"team": "core", "level": 3, "tags": {"lead": True}}},
    {"name": "Bob", "email": "bob@x", "age": 17, "meta": {"team": "web", "level": 1}},
    {"name": "Cy", "email": "cy@x", "age": 52, "nickname": "cyborg", "address": {"city": "Paris"}},
    {"name": "Ada", "email": "ada2@x", "age": 20, "meta": {"team": "core", "level": 2}, "active": False},
]


@pytest.fixture
def app(make_app: Any) -> Any:
    return make_app(blog())


@pytest.fixture
def ids(app: Any) -> dict[str, str]:
    """Four users (all created at the same fake-clock instant), a profile, messages and tags."""

    def seed(ctx: Any) -> dict[str, str]:
        out: dict[str, str] = {}
        uids = ctx.table("users").insert_many(USERS)
        out.update(ada=uids[0], bob=uids[1], cy=uids[2], ada2=uids[3])
        out["profile"] = ctx.table("profiles").insert({"bio": "Analyst", "user_id": uids[0]})
        out["red"] = ctx.table("tags").insert({"name": "red"})
        out["blue"] = ctx.table("tags").insert({"name": "blue"})
        for i in range(5):
            out[f"m{i}"] = ctx.table("messages").insert(
                {"text": f"ada {i}", "user_id": uids[0], "rank": i, "tags": [out["red"]] if i % 2 == 0 else []}
            )
        out["bm"] = ctx.table("messages").insert({"text": "bob", "user_id": uids[1], "tags": [out["blue"], out["red"]]})
        return out

    return dict(app.run(seed))


def names(ents: Any) -> list[str]:
    return [e.name for e in ents]


# -- get ---------------------------------------------------------------------------------


def test_get_by_id(app: Any, ids: dict[str, str]) -> None:
    def read(ctx: Any) -> None:
        ada = ctx.table("users").get(ids["ada"])
        assert isinstance(ada, Ent)
        assert ada._id == ids["ada"] and ada.name == "Ada" and ada.email == "ada@x"
        assert ctx.table("users").get_x(ids["ada"]).doc() == ada.doc()

    app.run(read)


def test_get_missing_id(app: Any, ids: dict[str, str]) -> None:
    app.run(lambda ctx: ctx.table("users").get_x(ids["cy"]).delete())

    def read(ctx: Any) -> None:
        assert ctx.table("users").get(ids["cy"]) is None
        with pytest.raises(EntNotFoundError) as info:
            ctx.table("users").get_x(ids["cy"])
        assert str(info.value) == f'Document not found with id `{ids["cy"]}` in table "users"'
        assert info.value.table == "users" and info.value.id == ids["cy"]

    app.run(read)


def test_get_with_an_id_of_another_table(app: Any, ids: dict[str, str]) -> None:
    def read(ctx: Any) -> None:
        with pytest.raises(InvalidIdError) as info:
            ctx.table("users").get(ids["red"])
        message = str(info.value)
        assert ids["red"] in message and '"tags"' in message and '"users"' in message
        with pytest.raises(InvalidIdError):
            ctx.table("users").get_x("not-an-id")
        with pytest.raises(InvalidIdError):
            ctx.table("users").get(12)

    app.run(read)


def test_get_by_unique_field(app: Any, ids: dict[str, str]) -> None:
    def read(ctx: Any) -> None:
        assert ctx.table("users").get("email", "bob@x")._id == ids["bob"]
        assert ctx.table("users").get("by_email", "bob@x")._id == ids["bob"]
        assert ctx.table("users").get("email", "nobody@x") is None
        with pytest.raises(EntNotFoundError) as info:
            ctx.table("users").get_x("email", "nobody@x")
        assert '"users"' in str(info.value) and "email" in str(info.value) and "nobody@x" in str(info.value)

    app.run(read)


def test_get_by_edge_field_index(app: Any, ids: dict[str, str]) -> None:
    def read(ctx: Any) -> None:
        assert ctx.table("profiles").get("user_id", ids["ada"])._id == ids["profile"]
        assert ctx.table("profiles").get("user_id", ids["bob"]) is None

    app.run(read)


def test_get_by_compound_index(app: Any, ids: dict[str, str]) -> None:
    def read(ctx: Any) -> None:
        assert ctx.table("users").get("by_name_age", "Ada", 20)._id == ids["ada2"]
        assert ctx.table("users").get("by_name_age", "Ada", 99) is None
        # A prefix of the index that matches several documents is not unique.
        with pytest.raises(NotUniqueError) as info:
            ctx.table("users").get("by_name_age", "Ada")
        assert '"users"' in str(info.value)
        assert ctx.table("users").get("by_name_age", "Bob")._id == ids["bob"]

    app.run(read)


def test_get_with_unknown_index_or_too_many_values(app: Any, ids: dict[str, str]) -> None:
    def read(ctx: Any) -> None:
        with pytest.raises(ValidationError) as info:
            ctx.table("users").get("name", "Ada")
        assert '"users" has no index or unique field "name"' in str(info.value)
        assert '"email"' in str(info.value)  # lists the indexes that exist
        with pytest.raises(ValidationError, match="has 1 field"):
            ctx.table("users").get("email", "a", "b")

    app.run(read)


def test_get_many(app: Any, ids: dict[str, str]) -> None:
    app.run(lambda ctx: ctx.table("users").get_x(ids["cy"]).delete())

    def read(ctx: Any) -> None:
        got = ctx.table("users").get_many([ids["bob"], ids["cy"], ids["ada"], ids["bob"]])
        assert [e._id if e else None for e in got] == [ids["bob"], None, ids["ada"], ids["bob"]]
        assert ctx.table("users").get_many([]) == []
        assert [e.name for e in ctx.table("users").get_many_x([ids["ada"], ids["bob"]])] == ["Ada", "Bob"]
        with pytest.raises(EntNotFoundError) as info:
            ctx.table("users").get_many_x([ids["ada"], ids["cy"]])
        assert ids["cy"] in str(info.value) and '"users"' in str(info.value)
        with pytest.raises(InvalidIdError):
            ctx.table("users").get_many([ids["ada"], ids["red"]])

    app.run(read)


def test_get_many_by_field(app: Any, ids: dict[str, str]) -> None:
    def read(ctx: Any) -> None:
        got = ctx.table("users").get_many("email", ["cy@x", "none@x", "ada@x"])
        assert [e._id if e else None for e in got] == [ids["cy"], None, ids["ada"]]
        with pytest.raises(EntNotFoundError, match="none@x"):
            ctx.table("users").get_many_x("email", ["cy@x", "none@x"])
        with pytest.raises(ValidationError, match="single-field index"):
            ctx.table("users").get_many("by_name_age", ["Ada"])

    app.run(read)


# -- listing, order, take, first, unique ---------------------------------------------------


def test_default_order_is_insertion_order_even_at_the_same_time(app: Any, ids: dict[str, str]) -> None:
    def read(ctx: Any) -> None:
        users = ctx.table("users").collect()
        assert len({u._creation_time for u in users}) == 1  # the fake clock did not move
        assert [u._id for u in users] == [ids["ada"], ids["bob"], ids["cy"], ids["ada2"]]
        desc = ctx.table("users").order("desc").collect()
        assert [u._id for u in desc] == [ids["ada2"], ids["cy"], ids["bob"], ids["ada"]]

    app.run(read)


def test_creation_time_orders_before_insertion(app: Any, clock: Any) -> None:
    a = app.run(lambda ctx: ctx.table("tags").insert({"name": "a"}))
    clock.advance(10)
    b = app.run(lambda ctx: ctx.table("tags").insert({"name": "b"}))

    def read(ctx: Any) -> None:
        tags = ctx.table("tags").collect()
        assert [t._id for t in tags] == [a, b]
        assert tags[1]._creation_time - tags[0]._creation_time == 10
        assert tags[0]._creation_time == clock.now() - 10

    app.run(read)


def test_take_first_unique(app: Any, ids: dict[str, str]) -> None:
    def read(ctx: Any) -> None:
        assert names(ctx.table("users").take(2)) == ["Ada", "Bob"]
        assert names(ctx.table("users").order("desc").take(1)) == ["Ada"]
        assert ctx.table("users").take(0).collect() == []
        assert ctx.table("users").take(2).take(5).collect() == ctx.table("users").take(2).collect()
        assert ctx.table("users").first()._id == ids["ada"]
        assert ctx.table("users").order("desc").first_x()._id == ids["ada2"]
        assert ctx.table("users").filter(lambda q: q.eq(q.field("name"), "Zed")).first() is None
        with pytest.raises(EntNotFoundError, match='"users"'):
            ctx.table("users").filter(lambda q: q.eq(q.field("name"), "Zed")).first_x()
        assert ctx.table("users").filter(lambda q: q.eq(q.field("name"), "Bob")).unique()._id == ids["bob"]
        assert ctx.table("users").filter(lambda q: q.eq(q.field("name"), "Bob")).unique_x()._id == ids["bob"]
        assert ctx.table("users").filter(lambda q: q.eq(q.field("name"), "Zed")).unique() is None
        with pytest.raises(EntNotFoundError):
            ctx.table("users").filter(lambda q: q.eq(q.field("name"), "Zed")).unique_x()
        with pytest.raises(NotUniqueError) as info:
            ctx.table("users").filter(lambda q: q.eq(q.field("name"), "Ada")).unique()
        assert ids["ada"] in str(info.value) and ids["ada2"] in str(info.value)
        with pytest.raises(NotUniqueError):
            ctx.table("users").unique_x()
        with pytest.raises(ValidationError):
            ctx.table("users").take(-1)
        with pytest.raises(ValidationError):
            ctx.table("users").order("up")

    app.run(read)


def test_queries_are_lazy_and_iterable(app: Any, ids: dict[str, str]) -> None:
    def body(ctx: Any) -> None:
        query = ctx.table("tags").order("desc")
        ctx.table("tags").insert({"name": "green"})  # after the query was built
        assert [t.name for t in query] == ["green", "blue", "red"]
        assert len(query) == 3 and query[0].name == "green"
        assert all(isinstance(t, Ent) for t in query)

    app.run(body)


def test_map_and_docs(app: Any, ids: dict[str, str]) -> None:
    def read(ctx: Any) -> None:
        assert ctx.table("users").map(lambda u: u.email) == ["ada@x", "bob@x", "cy@x", "ada2@x"]
        docs = ctx.table("tags").docs()
        assert all(type(d) is dict for d in docs)
        assert [d["name"] for d in docs] == ["red", "blue"]
        assert set(docs[0]) == {"_id", "_creation_time", "name"}
        assert docs[0]["_id"] == ids["red"]

    app.run(read)


def test_iteration_does_not_see_rows_inserted_while_iterating(app: Any, ids: dict[str, str]) -> None:
    def body(ctx: Any) -> int:
        seen = 0
        for tag in ctx.table("tags"):
            seen += 1
            ctx.table("tags").insert({"name": tag.name + "!"})
        return seen

    assert app.run(body) == 2
    assert app.run(lambda ctx: len(ctx.table("tags"))) == 4


def test_iterating_more_rows_than_one_chunk(app: Any) -> None:
    from ents import query as query_module

    n = query_module.CHUNK * 2 + 7
    app.run(lambda ctx: ctx.table("tags").insert_many([{"name": f"t{i}"} for i in range(n)]))

    def read(ctx: Any) -> None:
        got = [t.name for t in ctx.table("tags")]
        assert got == [f"t{i}" for i in range(n)]
        got_desc = [t.name for t in ctx.table("tags").order("desc")]
        assert got_desc == list(reversed(got))
        assert len(ctx.table("tags").take(n - 3)) == n - 3

    app.run(read)


# -- ents ----------------------------------------------------------------------------------


def test_ent_reads_as_attributes_and_keys(app: Any, ids: dict[str, str]) -> None:
    def read(ctx: Any) -> None:
        ada = ctx.table("users").get_x(ids["ada"])
        assert ada.name == ada["name"] == "Ada"
        assert ada.meta.team == ada["meta"]["team"] == "core"
        assert ada.meta.tags.lead is True
        assert ada.age == 36 and ada.active is True and ada.nickname is None
        assert ada.get("nickname", "none") is None
        assert ada.get("nope", "none") == "none"
        assert "email" in ada and "nope" not in ada
        doc = ada.doc()
        assert type(doc) is dict
        assert doc == {
            "_id": ids["ada"],
            "_creation_time": ada._creation_time,
            "name": "Ada",
            "email": "ada@x",
            "age": 36,
            "meta": {"team": "core", "level": 3, "tags": {"lead": True}},
            "nickname": None,
            "address": None,
            "active": True,
        }
        cy = ctx.table("users").get_x(ids["cy"])
        assert cy.address.city == "Paris" and cy.address["zip"] is None
        assert cy.meta == {}  # default
        with pytest.raises(AttributeError) as info:
            _ = ada.emial
        assert 'Table "users" has no field "emial"' in str(info.value)
        with pytest.raises(KeyError):
            _ = ada["emial"]
        with pytest.raises(AttributeError, match=r'"profile" is an edge: use .edge\("profile"\)'):
            _ = ada.profile
        assert ada == ctx.table("users").get_x(ids["ada"])
        assert ada != ctx.table("users").get_x(ids["bob"])

    app.run(read)


def test_fields_named_like_ent_methods_read_as_keys(make_app: Any) -> None:
    from ents import define_ent, define_ent_schema

    app = make_app(define_ent_schema({"orders": define_ent({"items": list[str], "keys": int, "total": float})}))

    def body(ctx: Any) -> None:
        order = ctx.table("orders").get_x(ctx.table("orders").insert({"items": ["a"], "keys": 2, "total": 3}))
        assert order["items"] == ["a"] and order["keys"] == 2
        assert order.doc()["items"] == ["a"]
        assert order.total == 3.0  # other fields still read as attributes
        assert callable(order.items)  # the dict-like method wins for attribute access

    app.run(body)


def test_modifying_a_read_doc_does_not_change_the_database(app: Any, ids: dict[str, str]) -> None:
    def body(ctx: Any) -> None:
        ada = ctx.table("users").get_x(ids["ada"])
        doc = ada.doc()
        doc["meta"]["team"] = "changed"
        ada.meta["level"] = 99

    app.run(body)
    assert app.run(lambda ctx: ctx.table("users").get_x(ids["ada"]).meta) == USERS[0]["meta"]


# -- index ranges ----------------------------------------------------------------------------


def test_index_range_queries(app: Any, ids: dict[str, str]) -> None:
    def read(ctx: Any) -> None:
        by_user = ctx.table("messages", "user_id", lambda q: q.eq("user_id", ids["ada"]))
        assert [m.text for m in by_user] == [f"ada {i}" for i in range(5)]
        assert [m.text for m in ctx.table("messages", "by_user_id", lambda q: q.eq("user_id", ids["bob"]))] == ["bob"]
        ada_adults = ctx.table("users", "by_name_age", lambda q: q.eq("name", "Ada").gte("age", 21))
        assert [u._id for u in ada_adults] == [ids["ada"]]
        between = ctx.table("users", "by_name_age", lambda q: q.eq("name", "Ada").gt("age", 19).lt("age", 40))
        assert [u.age for u in between] == [20, 36]  # ordered by the index
        assert [u.age for u in between.order("desc")] == [36, 20]
        inclusive = ctx.table("users", "by_name_age", lambda q: q.eq("name", "Ada").gte("age", 20).lte("age", 36))
        assert len(inclusive) == 2
        by_name = ctx.table("users", "by_name_age", lambda q: q.gte("name", "B"))
        assert names(by_name) == ["Bob", "Cy"]
        everyone = ctx.table("users", "by_name_age")
        assert [(u.name, u.age) for u in everyone] == [("Ada", 20), ("Ada", 36), ("Bob", 17), ("Cy", 52)]
        assert [u.email for u in ctx.table("users").order("desc", "email")] == ["cy@x", "bob@x", "ada@x", "ada2@x"]
        filtered = ctx.table("users", "by_name_age", lambda q: q.eq("name", "Ada")).filter(
            lambda q: q.eq(q.field("active"), False)
        )
        assert [u._id for u in filtered] == [ids["ada2"]]

    app.run(read)


def test_by_creation_time_index(app: Any, clock: Any) -> None:
    first = app.run(lambda ctx: ctx.table("tags").insert({"name": "first"}))
    clock.advance(10)
    second = app.run(lambda ctx: ctx.table("tags").insert({"name": "second"}))
    t = clock.now()

    def read(ctx: Any) -> None:
        assert [x._id for x in ctx.table("tags", "by_creation_time", lambda q: q.gte("_creation_time", t))] == [second]
        assert [x._id for x in ctx.table("tags", "by_creation_time", lambda q: q.lt("_creation_time", t))] == [first]
        assert [x._id for x in ctx.table("tags").order("desc", "by_creation_time")] == [second, first]
        got = ctx.db.query("tags").with_index("by_creation_time", lambda q: q.gt("_creation_time", t - 10)).collect()
        assert [d["_id"] for d in got] == [second]

    app.run(read)


def test_creation_order_survives_a_clock_stepping_back(app: Any, clock: Any) -> None:
    """Default order is _creation_time order on every backend; where ents orders by row key
    (SQLite) a clock stepping back cannot make a newer ent look older."""
    a = app.run(lambda ctx: ctx.table("tags").insert({"name": "a"}))
    clock.advance(10)
    b = app.run(lambda ctx: ctx.table("tags").insert({"name": "b"}))
    clock.set(clock.now() - 5000)  # NTP steps the clock back
    c = app.run(lambda ctx: ctx.table("tags").insert({"name": "c"}))

    def read(ctx: Any) -> None:
        tags = ctx.table("tags").collect()
        times = [t._creation_time for t in tags]
        assert times == sorted(times)
        by_ct = ctx.table("tags").order("asc", "by_creation_time").collect()
        assert [t._id for t in by_ct] == [t._id for t in tags]
        for t in tags:  # every bound agrees with the order
            later = ctx.table("tags", "by_creation_time", lambda q, t=t: q.gte("_creation_time", t._creation_time))
            assert [x._id for x in later] == [x._id for x in tags if x._creation_time >= t._creation_time]
        if app.backend.dialect.rid_order:
            assert [t._id for t in tags] == [a, b, c]
            assert tags[2]._creation_time == tags[1]._creation_time

    app.run(read)


def test_two_processes_with_skewed_clocks_keep_creation_order(make_app: Any, backend: str, db_url: str) -> None:
    """Two Apps on one database whose clocks disagree by 10 s: on every backend the default
    order is _creation_time order; where ents orders by row key (SQLite) it is also the
    order of the commits, and no document looks older than one committed before it."""
    if backend == "memory":
        pytest.skip("two Apps need a database they can share")
    from ents.testing import FakeClock

    ahead, behind = FakeClock(), FakeClock()
    ahead.advance(10_000)
    first = make_app(blog(), clock=ahead)
    second = make_app(blog(), url=db_url, clock=behind)
    ids = []
    for i in range(6):
        app = first if i % 2 == 0 else second
        ids.append(app.run(lambda ctx, i=i: ctx.table("tags").insert({"name": f"t{i}"})))
        ahead.advance(1)
        behind.advance(1)
    tags = second.run(lambda ctx: [(t._id, t._creation_time) for t in ctx.table("tags")])
    times = [ct for _, ct in tags]
    assert times == sorted(times)
    if second.backend.dialect.rid_order:
        assert [i for i, _ in tags] == ids


def test_a_query_read_again_after_a_write_sees_the_new_rows(app: Any, clock: Any) -> None:
    """A query object iterated, then iterated again after an insert in the same mutation,
    sees the insert (ranges over creation time included: nothing about the rows is kept)."""
    app.run(lambda ctx: ctx.table("tags").insert({"name": "old"}))
    clock.advance(10)
    t = clock.now()

    def body(ctx: Any) -> None:
        later = ctx.table("tags", "by_creation_time", lambda q: q.gte("_creation_time", t))
        exact = ctx.table("tags", "by_creation_time", lambda q: q.eq("_creation_time", t))
        everything = ctx.table("tags")
        assert [x.name for x in later] == [] and [x.name for x in exact] == []
        assert [x.name for x in everything] == ["old"]
        ctx.table("tags").insert({"name": "new"})
        assert [x.name for x in later] == ["new"]
        assert [x.name for x in exact] == ["new"]
        assert [x.name for x in everything] == ["old", "new"]

    app.run(body)


def test_creation_time_ranges_match_a_scan(app: Any, clock: Any) -> None:
    """Ranges over by_creation_time (which SQLite answers by seeking on the row key) return
    exactly what filtering every ent would, with gaps left by deletions and equal times."""
    import random

    rng = random.Random(5)
    ids: list[str] = []
    for _ in range(12):
        n = rng.randrange(1, 5)
        ids += app.run(lambda ctx, n=n, at=len(ids): ctx.table("tags").insert_many([{"name": f"t{at}_{i}"} for i in range(n)]))
        clock.advance(rng.choice([0, 1, 7]))
    gone = rng.sample(ids, 8)

    def drop(ctx: Any) -> None:
        for i in gone:
            ctx.table("tags").get_x(i).delete()

    app.run(drop)

    def read(ctx: Any) -> None:
        everything = [(t._creation_time, t._id) for t in ctx.table("tags")]
        times = sorted({ct for ct, _ in everything})
        probes = [times[0] - 1, *times, times[-1] + 1, times[len(times) // 2] + 0.5]
        ops = {
            "gt": lambda x, v: x > v,
            "gte": lambda x, v: x >= v,
            "lt": lambda x, v: x < v,
            "lte": lambda x, v: x <= v,
            "eq": lambda x, v: x == v,
        }
        for v in probes:
            for op, keep in ops.items():
                for direction in ("asc", "desc"):
                    got = ctx.table("tags", "by_creation_time", lambda q, op=op, v=v: getattr(q, op)("_creation_time", v))
                    got = [t._id for t in got.order(direction)]
                    want = [i for ct, i in everything if keep(ct, v)]
                    assert got == (want if direction == "asc" else want[::-1]), (op, v, direction)
            between = ctx.table("tags", "by_creation_time", lambda q, v=v: q.gt("_creation_time", v - 7).lte("_creation_time", v))
            assert [t._id for t in between] == [i for ct, i in everything if v - 7 < ct <= v]

    app.run(read)


def test_index_range_errors(app: Any, ids: dict[str, str]) -> None:
    def read(ctx: Any) -> None:
        with pytest.raises(ValidationError, match='next field of the index is "name"'):
            ctx.table("users", "by_name_age", lambda q: q.eq("age", 3)).collect()
        with pytest.raises(ValidationError, match="only the other bound"):
            ctx.table("users", "by_name_age", lambda q: q.gt("name", "A").eq("age", 3)).collect()
        with pytest.raises(ValidationError, match="two lower bounds"):
            ctx.table("users", "by_name_age", lambda q: q.eq("name", "A").gt("age", 1).gte("age", 2)).collect()
        with pytest.raises(ValidationError, match='no index "nope"'):
            ctx.table("users", "nope", lambda q: q.eq("x", 1))
        with pytest.raises(ValidationError, match="holds int values"):
            ctx.table("users", "by_name_age", lambda q: q.eq("name", "Ada").eq("age", "old")).collect()
        with pytest.raises(InvalidIdError):
            ctx.table("messages", "user_id", lambda q: q.eq("user_id", ids["red"])).collect()

    app.run(read)


# -- filters ---------------------------------------------------------------------------------


FILTERS: list[tuple[str, Any, list[str]]] = [
    ("eq", lambda q: q.eq(q.field("age"), 17), ["bob@x"]),
    ("eq reversed", lambda q: q.eq(17, q.field("age")), ["bob@x"]),
    ("neq", lambda q: q.neq(q.field("name"), "Ada"), ["bob@x", "cy@x"]),
    ("lt", lambda q: q.lt(q.field("age"), 20), ["bob@x"]),
    ("lte", lambda q: q.lte(q.field("age"), 20), ["bob@x", "ada2@x"]),
    ("gt", lambda q: q.gt(q.field("age"), 36), ["cy@x"]),
    ("gte", lambda q: q.gte(q.field("age"), 36), ["ada@x", "cy@x"]),
    ("gt literal first", lambda q: q.gt(36, q.field("age")), ["bob@x", "ada2@x"]),
    ("and", lambda q: q.and_(q.eq(q.field("name"), "Ada"), q.gt(q.field("age"), 30)), ["ada@x"]),
    ("or", lambda q: q.or_(q.eq(q.field("name"), "Bob"), q.eq(q.field("name"), "Cy")), ["bob@x", "cy@x"]),
    ("not", lambda q: q.not_(q.eq(q.field("name"), "Ada")), ["bob@x", "cy@x"]),
    ("nested", lambda q: q.eq(q.field("meta.team"), "core"), ["ada@x", "ada2@x"]),
    ("nested number", lambda q: q.gte(q.field("meta.level"), 2), ["ada@x", "ada2@x"]),
    ("nested lt includes missing", lambda q: q.lt(q.field("meta.level"), 2), ["bob@x", "cy@x"]),
    ("nested lte", lambda q: q.lte(q.field("meta.level"), 2), ["bob@x", "cy@x", "ada2@x"]),
    ("nested lte None is missing", lambda q: q.lte(q.field("meta.level"), None), ["cy@x"]),
    ("nested gt None is present", lambda q: q.gt(q.field("meta.level"), None), ["ada@x", "bob@x", "ada2@x"]),
    ("not gt keeps missing values", lambda q: q.not_(q.gt(q.field("meta.level"), 1)), ["bob@x", "cy@x"]),
    ("not gte keeps None", lambda q: q.not_(q.gte(q.field("nickname"), "a")), ["ada@x", "bob@x", "ada2@x"]),
    ("lt None matches nothing", lambda q: q.lt(q.field("age"), None), []),
    ("nested deeper", lambda q: q.eq(q.field("meta.tags.lead"), True), ["ada@x"]),
    ("nested pydantic", lambda q: q.eq(q.field("address.city"), "Paris"), ["cy@x"]),
    ("optional is None", lambda q: q.eq(q.field("nickname"), None), ["ada@x", "bob@x", "ada2@x"]),
    ("optional set", lambda q: q.neq(q.field("nickname"), None), ["cy@x"]),
    ("bool", lambda q: q.eq(q.field("active"), False), ["ada2@x"]),
    ("field vs field", lambda q: q.eq(q.field("name"), q.field("name")), ["ada@x", "bob@x", "cy@x", "ada2@x"]),
    ("arith", lambda q: q.eq(q.add(q.field("age"), 1), 18), ["bob@x"]),
    ("empty and", lambda q: q.and_(), ["ada@x", "bob@x", "cy@x", "ada2@x"]),
    ("empty or", lambda q: q.or_(), []),
    ("constant true", lambda q: True, ["ada@x", "bob@x", "cy@x", "ada2@x"]),
    (
        "compound",
        lambda q: q.or_(
            q.and_(q.eq(q.field("meta.team"), "core"), q.not_(q.eq(q.field("active"), True))),
            q.lt(q.field("age"), 18),
        ),
        ["bob@x", "ada2@x"],
    ),
]


@pytest.mark.parametrize("expr,expected", [(f, e) for _, f, e in FILTERS], ids=[n for n, _, _ in FILTERS])
def test_filter_operators(app: Any, ids: dict[str, str], expr: Any, expected: list[str]) -> None:
    assert app.run(lambda ctx: [u.email for u in ctx.table("users").filter(expr)]) == expected


def test_filters_chain_and_combine_with_order_and_take(app: Any, ids: dict[str, str]) -> None:
    def read(ctx: Any) -> None:
        q = ctx.table("users").filter(lambda q: q.eq(q.field("name"), "Ada")).filter(lambda q: q.lt(q.field("age"), 30))
        assert [u._id for u in q] == [ids["ada2"]]
        older = ctx.table("users").filter(lambda q: q.gt(q.field("age"), 18)).order("desc").take(2)
        assert [u.email for u in older] == ["ada2@x", "cy@x"]

    app.run(read)


def test_filter_on_fields_stored_as_json(make_app: Any) -> None:
    """Unions, Any and Literal mixes are stored as JSON; filters compare the values, not their text."""
    from ents import define_ent, define_ent_schema

    app = make_app(
        define_ent_schema(
            {"items": define_ent({"price": int | float, "extra": Any, "flag": bool | str, "level": Literal["low", 3]})}
        )
    )
    app.run(
        lambda ctx: ctx.table("items").insert_many(
            [
                {"price": 9, "extra": 9, "flag": True, "level": "low"},
                {"price": 10.5, "extra": "x", "flag": "no", "level": 3},
                {"price": 100, "extra": True, "flag": False, "level": "low"},
            ]
        )
    )

    def prices(expr: Any) -> list[Any]:
        return app.run(lambda ctx: [i.price for i in ctx.table("items").filter(expr)])

    assert prices(lambda q: q.gt(q.field("price"), 9.5)) == [10.5, 100]
    assert prices(lambda q: q.lt(q.field("price"), 50)) == [9, 10.5]
    assert prices(lambda q: q.eq(q.field("price"), 10.5)) == [10.5]
    assert prices(lambda q: q.eq(q.field("extra"), "x")) == [10.5]
    assert prices(lambda q: q.eq(q.field("extra"), 9)) == [9]
    assert prices(lambda q: q.eq(q.field("flag"), True)) == [9]
    assert prices(lambda q: q.eq(q.field("flag"), False)) == [100]
    assert prices(lambda q: q.eq(q.field("flag"), "no")) == [10.5]
    assert prices(lambda q: q.eq(q.field("level"), 3)) == [10.5]
    assert prices(lambda q: q.neq(q.field("level"), 3)) == [9, 100]


def test_indexes_on_fields_stored_as_json_order_by_value(make_app: Any) -> None:
    from ents import define_ent, define_ent_schema

    app = make_app(
        define_ent_schema(
            {"items": define_ent({"n": int}).field("score", int | float | None, index=True).field("tag", Any, index=True)}
        )
    )
    scores = [10, 9, 100, None, 2.5, 1, 30, 7, 8, 20, None, 9]
    tags = ["b", 3, "x", "a", None, 2, 1.5, 2.5, 0, "c", "b", 3]
    app.run(
        lambda ctx: ctx.table("items").insert_many(
            [{"n": i, "score": sc, "tag": t} for i, (sc, t) in enumerate(zip(scores, tags, strict=True))]
        )
    )

    def read(ctx: Any) -> None:
        by_score = [e.score for e in ctx.table("items").order("asc", "score")]
        assert by_score == [None, None, 1, 2.5, 7, 8, 9, 9, 10, 20, 30, 100]
        assert [e.score for e in ctx.table("items").order("desc", "score")] == list(reversed(by_score))
        assert [e.score for e in ctx.table("items", "score", lambda q: q.gt("score", 8).lte("score", 30))] == [
            9,
            9,
            10,
            20,
            30,
        ]
        assert [e.n for e in ctx.table("items", "tag", lambda q: q.eq("tag", 3))] == [1, 11]
        assert ctx.table("items").get("score", 30).n == 6
        # None looks up documents without a value, as in an index range
        assert [e.n for e in ctx.table("items", "score", lambda q: q.eq("score", None))] == [3, 10]
        with pytest.raises(NotUniqueError):
            ctx.table("items").get("score", None)
        assert ctx.table("items").get("tag", None).n == 4
        assert [e and e.n for e in ctx.table("items").get_many("score", [100, 5, 2.5])] == [2, None, 4]
        for direction in ("asc", "desc"):
            for field in ("score", "tag"):
                expected = [e._id for e in ctx.table("items").order(direction, field)]
                assert paginate_all(ctx, lambda c: c.table("items").order(direction, field), 2)[0] == expected  # noqa: B023

    app.run(read)


def test_filter_on_ids(app: Any, ids: dict[str, str]) -> None:
    def read(ctx: Any) -> None:
        mine = ctx.table("messages").filter(lambda q: q.eq(q.field("user_id"), ids["bob"]))
        assert [m._id for m in mine] == [ids["bm"]]
        by_id = ctx.table("users").filter(lambda q: q.eq(q.field("_id"), ids["cy"]))
        assert [u._id for u in by_id] == [ids["cy"]]
        with pytest.raises(InvalidIdError):
            ctx.table("messages").filter(lambda q: q.eq(q.field("user_id"), ids["red"])).collect()

    app.run(read)


def test_filter_on_creation_time(app: Any, clock: Any, ids: dict[str, str]) -> None:
    clock.advance(1000)
    later = app.run(lambda ctx: ctx.table("tags").insert({"name": "later"}))

    def read(ctx: Any) -> None:
        new = ctx.table("tags").filter(lambda q: q.gt(q.field("_creation_time"), clock.now() - 1))
        assert [t._id for t in new] == [later]

    app.run(read)


def test_filter_errors(app: Any, ids: dict[str, str]) -> None:
    def read(ctx: Any) -> None:
        with pytest.raises(ValidationError, match='Unknown field "nope"'):
            ctx.table("users").filter(lambda q: q.eq(q.field("nope"), 1)).collect()
        with pytest.raises(ValidationError, match="not an object"):
            ctx.table("users").filter(lambda q: q.eq(q.field("name.first"), 1)).collect()
        with pytest.raises(ValidationError, match="q.and_"):
            ctx.table("users").filter(lambda q: q.eq(q.field("name"), "a") and q.eq(q.field("age"), 1)).collect()
        with pytest.raises(ValidationError, match="must return an expression"):
            ctx.table("users").filter(lambda q: "name").collect()
        with pytest.raises(ValidationError, match="scalar values"):
            ctx.table("users").filter(lambda q: q.eq(q.field("meta"), {"a": 1})).collect()
        with pytest.raises(ValidationError):
            ctx.table("users").filter("name")

    app.run(read)


# -- pagination ------------------------------------------------------------------------------


def paginate_all(ctx: Any, make_query: Any, n: int) -> tuple[list[str], int]:
    cursor = None
    seen: list[str] = []
    pages = 0
    while True:
        result = make_query(ctx).paginate({"num_items": n, "cursor": cursor})
        assert set(result) == {"page", "is_done", "continue_cursor"}
        assert isinstance(result["continue_cursor"], str)
        seen += [e._id for e in result["page"]]
        pages += 1
        cursor = result["continue_cursor"]
        if result["is_done"]:
            return seen, pages
        assert len(result["page"]) == n


def test_paginate_walks_every_document_once_even_at_the_same_time(app: Any) -> None:
    app.run(lambda ctx: ctx.table("tags").insert_many([{"name": f"t{i:02d}"} for i in range(23)]))

    def read(ctx: Any) -> None:
        everything = [t._id for t in ctx.table("tags")]
        assert len({t._creation_time for t in ctx.table("tags")}) == 1
        seen, pages = paginate_all(ctx, lambda c: c.table("tags"), 5)
        assert seen == everything and pages == 5
        seen_desc, _ = paginate_all(ctx, lambda c: c.table("tags").order("desc"), 4)
        assert seen_desc == list(reversed(everything))
        odd = lambda c: c.table("tags").filter(lambda q: q.neq(q.field("name"), "t00"))  # noqa: E731
        assert paginate_all(ctx, odd, 7)[0] == everything[1:]

    app.run(read)


def test_paginate_by_index_with_ties(app: Any) -> None:
    def seed(ctx: Any) -> None:
        uid = ctx.table("users").insert({"name": "U", "email": "u@x"})
        ctx.table("messages").insert_many([{"text": str(i), "user_id": uid, "rank": i % 3} for i in range(20)])

    app.run(seed)

    def read(ctx: Any) -> None:
        query = lambda c: c.table("messages").order("asc", "rank")  # noqa: E731
        expected = [m._id for m in query(ctx)]
        ranks = [m.rank for m in query(ctx)]
        assert ranks == sorted(ranks)
        assert paginate_all(ctx, query, 3)[0] == expected
        query_desc = lambda c: c.table("messages").order("desc", "rank")  # noqa: E731
        assert paginate_all(ctx, query_desc, 6)[0] == [m._id for m in query_desc(ctx)]

    app.run(read)


def test_paginate_across_transactions_is_stable_when_documents_are_added(app: Any) -> None:
    app.run(lambda ctx: ctx.table("tags").insert_many([{"name": f"t{i}"} for i in range(6)]))
    first = app.run(lambda ctx: ctx.table("tags").paginate({"num_items": 3, "cursor": None}))
    first_ids = [t._id for t in first["page"]]
    assert not first["is_done"]
    app.run(lambda ctx: ctx.table("tags").insert({"name": "new"}))
    second = app.run(lambda ctx: ctx.table("tags").paginate({"num_items": 10, "cursor": first["continue_cursor"]}))
    assert second["is_done"]
    assert [t.name for t in second["page"]] == ["t3", "t4", "t5", "new"]
    assert not set(first_ids) & {t._id for t in second["page"]}


def test_paginate_edge_cases(app: Any, ids: dict[str, str]) -> None:
    def read(ctx: Any) -> None:
        everything = ctx.table("tags").paginate({"num_items": 10, "cursor": None})
        assert [t.name for t in everything["page"]] == ["red", "blue"] and everything["is_done"]
        done = ctx.table("tags").paginate({"num_items": 10, "cursor": everything["continue_cursor"]})
        assert done == {"page": [], "is_done": True, "continue_cursor": done["continue_cursor"]}
        empty = ctx.table("tags").filter(lambda q: q.eq(q.field("name"), "none")).paginate({"num_items": 2, "cursor": None})
        assert empty["page"] == [] and empty["is_done"]
        with pytest.raises(ValidationError, match="cursor"):
            ctx.table("tags").paginate({"num_items": 2, "cursor": "garbage"})
        other = ctx.table("users").paginate({"num_items": 1, "cursor": None})["continue_cursor"]
        with pytest.raises(ValidationError, match="another query"):
            ctx.table("tags").paginate({"num_items": 1, "cursor": other})
        with pytest.raises(ValidationError, match="num_items"):
            ctx.table("tags").paginate({"num_items": -1, "cursor": None})
        with pytest.raises(ValidationError, match="num_items"):
            ctx.table("tags").paginate({"cursor": None})

    app.run(read)


def test_paginate_an_edge(app: Any, ids: dict[str, str]) -> None:
    def read(ctx: Any) -> None:
        ada = ctx.table("users").get_x(ids["ada"])
        seen, _ = paginate_all(ctx, lambda c: c.table("users").get_x(ids["ada"]).edge("messages"), 2)
        assert seen == [ids[f"m{i}"] for i in range(5)]
        red = ctx.table("tags").get_x(ids["red"])
        seen, _ = paginate_all(ctx, lambda c: c.table("tags").get_x(ids["red"]).edge("messages"), 1)
        assert seen == [m._id for m in red.edge("messages")]
        assert len(seen) == 4 and ada

    app.run(read)


# -- edges ------------------------------------------------------------------------------------


def test_singular_edges(app: Any, ids: dict[str, str]) -> None:
    def read(ctx: Any) -> None:
        message = ctx.table("messages").get_x(ids["m0"])
        assert message.edge("user")._id == ids["ada"]
        assert message.edge_x("user").name == "Ada"
        ada = ctx.table("users").get_x(ids["ada"])
        assert ada.edge("profile").bio == "Analyst"
        assert ada.edge("profile").edge("user")._id == ids["ada"]
        bob = ctx.table("users").get_x(ids["bob"])
        assert bob.edge("profile") is None
        with pytest.raises(EntNotFoundError) as info:
            bob.edge_x("profile")
        assert '"profile"' in str(info.value) and ids["bob"] in str(info.value) and '"users"' in str(info.value)
        with pytest.raises(ValidationError, match='Table "users" has no edge "posts"'):
            ada.edge("posts")

    app.run(read)


def test_one_to_many_edge_is_a_query(app: Any, ids: dict[str, str]) -> None:
    def read(ctx: Any) -> None:
        ada = ctx.table("users").get_x(ids["ada"])
        assert [m.text for m in ada.edge("messages")] == [f"ada {i}" for i in range(5)]
        assert [m.text for m in ada.edge("messages").order("desc").take(2)] == ["ada 4", "ada 3"]
        assert [m.rank for m in ada.edge("messages").filter(lambda q: q.gte(q.field("rank"), 3))] == [3, 4]
        assert ada.edge("messages").first()._id == ids["m0"]
        assert [m.text for m in ada.edge_x("messages")] == [m.text for m in ada.edge("messages")]
        cy = ctx.table("users").get_x(ids["cy"])
        assert cy.edge("messages").collect() == [] and cy.edge("messages").first() is None
        assert ada.edge("messages").map(lambda m: m.edge("user").name) == ["Ada"] * 5

    app.run(read)


def test_many_to_many_edge(app: Any, ids: dict[str, str]) -> None:
    def read(ctx: Any) -> None:
        bm = ctx.table("messages").get_x(ids["bm"])
        # in the order the edges were added
        assert [t.name for t in bm.edge("tags")] == ["blue", "red"]
        assert [t.name for t in bm.edge("tags").order("desc")] == ["red", "blue"]
        assert [t.name for t in bm.edge("tags").take(1)] == ["blue"]
        assert bm.edge("tags").has(ids["red"]) and bm.edge("tags").has(ids["blue"])
        assert bm.edge("tags").ids() == [ids["blue"], ids["red"]]
        assert bm.edge("tags").order("desc").take(1).ids() == [ids["red"]]
        assert bm.edge("tags").filter(lambda q: q.eq(q.field("name"), "red")).ids() == [ids["red"]]
        m1 = ctx.table("messages").get_x(ids["m1"])
        assert not m1.edge("tags").has(ids["red"])
        assert m1.edge("tags").collect() == []
        red = ctx.table("tags").get_x(ids["red"])
        assert [m._id for m in red.edge("messages")] == [ids["m0"], ids["m2"], ids["m4"], ids["bm"]]
        assert red.edge("messages").has(ids["bm"])
        assert [m.text for m in red.edge("messages").filter(lambda q: q.eq(q.field("user_id"), ids["bob"]))] == ["bob"]
        with pytest.raises(InvalidIdError):
            bm.edge("tags").has(ids["bm"])

    app.run(read)


def test_system_edges(app: Any, ids: dict[str, str]) -> None:
    def work(ctx: Any) -> None:
        pass

    job_fn = app.internal_mutation(work)

    def create(ctx: Any) -> str:
        job = ctx.scheduler.run_after(5000, job_fn, {})
        return ctx.table("answers").insert({"question": "why?", "action_id": job})

    answer_id = app.run(create)
    stale = app.run(lambda ctx: ctx.table("answers").insert({"question": "old"}))

    def read(ctx: Any) -> None:
        answer = ctx.table("answers").get_x(answer_id)
        job = answer.edge("action")
        assert job.state.kind == "pending" and job["state"]["kind"] == "pending"
        assert job._id == answer.action_id
        assert ctx.table("_scheduled_functions").get(job._id).doc() == job.doc()
        assert ctx.table.system("_scheduled_functions").get(job._id).doc() == job.doc()
        assert ctx.db.system.get(job._id) == job.doc()
        statuses = ctx.table("answers").map(
            lambda a: a.edge("action").state.kind if a.edge("action") else "stale"
        )
        assert statuses == ["pending", "stale"]
        assert ctx.table("answers").get_x(stale).edge("action") is None

    app.run(read)


def test_self_edges(make_app: Any) -> None:
    app = make_app(social())

    def seed(ctx: Any) -> dict[str, str]:
        a, b, c, d = ctx.table("people").insert_many([{"name": n} for n in "abcd"])
        ctx.table("people").get_x(a).patch({"friends": {"add": [b, c]}, "followers": {"add": [b]}})
        ctx.table("people").get_x(d).patch({"followees": {"add": [a, b]}, "rivals": {"add": [a]}})
        ctx.table("people").get_x(b).patch({"mentor_id": a})
        ctx.table("people").get_x(c).patch({"mentor_id": a})
        return {"a": a, "b": b, "c": c, "d": d}

    p = app.run(seed)

    def read(ctx: Any) -> None:
        def get(n: str) -> Any:
            return ctx.table("people").get_x(p[n])

        # symmetric: written once, visible from both ends
        assert [x.name for x in get("a").edge("friends")] == ["b", "c"]
        assert [x.name for x in get("b").edge("friends")] == ["a"]
        assert [x.name for x in get("c").edge("friends")] == ["a"]
        assert get("d").edge("friends").collect() == []
        assert get("b").edge("friends").has(p["a"]) and not get("b").edge("friends").has(p["c"])
        # asymmetric: b and d follow a; d follows b
        assert [x.name for x in get("a").edge("followers")] == ["b", "d"]
        assert [x.name for x in get("b").edge("followees")] == ["a"]
        assert [x.name for x in get("d").edge("followees")] == ["a", "b"]
        assert [x.name for x in get("b").edge("followers")] == ["d"]
        assert get("a").edge("followees").collect() == []
        # custom table, symmetric
        assert [x.name for x in get("a").edge("rivals")] == ["d"]
        assert [x.name for x in get("d").edge("rivals")] == ["a"]
        # self-directed 1:many
        assert [x.name for x in get("a").edge("mentees")] == ["b", "c"]
        assert get("b").edge("mentor").name == "a"
        assert get("a").edge("mentor") is None

    app.run(read)


def test_custom_table_and_field_many_to_many(make_app: Any) -> None:
    app = make_app(social())

    def body(ctx: Any) -> None:
        cat = ctx.table("categories").insert({"name": "news"})
        post = ctx.table("posts").insert({"title": "hello", "labels": [cat]})
        assert [c.name for c in ctx.table("posts").get_x(post).edge("labels")] == ["news"]
        assert [x.title for x in ctx.table("categories").get_x(cat).edge("posts")] == ["hello"]
        assert ctx.table("categories").get_x(cat).edge("posts").has(post)

    app.run(body)


def test_edges_in_map_are_batch_loaded(app: Any, monkeypatch: Any) -> None:
    """Following a singular edge inside map costs a few queries, not one per ent."""

    def seed(ctx: Any) -> None:
        uids = ctx.table("users").insert_many([{"name": f"u{i}", "email": f"u{i}@x"} for i in range(300)])
        ctx.table("profiles").insert_many([{"bio": f"bio {i}", "user_id": u} for i, u in enumerate(uids) if i % 3])
        ctx.table("messages").insert_many([{"text": f"m{i}", "user_id": u} for i, u in enumerate(uids)])

    app.run(seed)
    log = SqlLog(monkeypatch)

    def read(ctx: Any) -> Any:
        log.on = True
        return (
            ctx.table("users").map(lambda u: u.edge("profile").bio if u.edge("profile") else None),
            ctx.table("messages").map(lambda m: m.edge("user").name),
        )

    bios, authors = app.run(read)
    assert bios == [f"bio {i}" if i % 3 else None for i in range(300)]
    assert authors == [f"u{i}" for i in range(300)]
    selects = log.starting_with("SELECT")
    assert len(selects) < 20, selects


# -- ctx.db ---------------------------------------------------------------------------------


def test_ctx_db_reads(app: Any, ids: dict[str, str]) -> None:
    def read(ctx: Any) -> None:
        doc = ctx.db.get(ids["bob"])
        assert doc["name"] == "Bob" and doc.name == "Bob"
        assert ctx.db.get(ids["red"])["name"] == "red"  # no table name needed
        docs = ctx.db.query("users").collect()
        assert [d["email"] for d in docs] == ["ada@x", "bob@x", "cy@x", "ada2@x"]
        assert ctx.db.query("users").order("desc").first()["_id"] == ids["ada2"]
        by_index = ctx.db.query("users").with_index("by_name_age", lambda q: q.eq("name", "Ada")).collect()
        assert [d["age"] for d in by_index] == [20, 36]
        filtered = ctx.db.query("users").filter(lambda q: q.gt(q.field("age"), 40)).unique()
        assert filtered["_id"] == ids["cy"]
        assert [d["name"] for d in ctx.db.query("tags").take(1)] == ["red"]
        page = ctx.db.query("tags").paginate({"num_items": 1, "cursor": None})
        assert [d["name"] for d in page["page"]] == ["red"] and not page["is_done"]
        assert [d["name"] for d in ctx.db.query("tags")] == ["red", "blue"]
        with pytest.raises(InvalidIdError):
            ctx.db.get("bogus")

    app.run(read)


def test_ctx_db_get_of_deleted_document(app: Any, ids: dict[str, str]) -> None:
    app.run(lambda ctx: ctx.table("tags").get_x(ids["blue"]).delete())
    assert app.run(lambda ctx: ctx.db.get(ids["blue"])) is None


def test_ctx_db_system(app: Any) -> None:
    def work(ctx: Any) -> None:
        pass

    fn = app.internal_mutation(work)
    job = app.run(lambda ctx: ctx.scheduler.run_after(1000, fn, {}))

    def read(ctx: Any) -> None:
        doc = ctx.db.system.get(job)
        assert doc["state"] == {"kind": "pending"} and doc["_id"] == job
        assert set(doc) >= {"_id", "_creation_time", "name", "args", "scheduled_time", "state"}
        pending = ctx.db.system.query("_scheduled_functions").filter(
            lambda q: q.eq(q.field("state.kind"), "pending")
        ).collect()
        assert [d["_id"] for d in pending] == [job]
        assert ctx.table.system("_scheduled_functions").first()._id == job
        assert ctx.table("_storage").collect() == []

    app.run(read)


# -- read-only queries ---------------------------------------------------------------------


def test_queries_cannot_write(app: Any, ids: dict[str, str]) -> None:
    def sneaky(ctx: Any) -> None:
        ctx.table("tags").insert({"name": "x"})

    def sneaky_patch(ctx: Any, tag: str) -> None:
        ctx.table("tags").get_x(tag).patch({"name": "x"})

    q1 = app.query(sneaky)
    q2 = app.query(sneaky_patch)
    with pytest.raises(ReadOnlyError, match="query"):
        app.run_query(q1, {})
    with pytest.raises(ReadOnlyError):
        app.run_query(q2, {"tag": ids["red"]})

    def listing(ctx: Any) -> list[str]:
        return [t.name for t in ctx.table("tags")]

    assert app.run_query(app.query(listing), {}) == ["red", "blue"]


def test_system_tables_are_read_only(app: Any) -> None:
    def body(ctx: Any) -> None:
        with pytest.raises(ReadOnlyError, match="read-only"):
            ctx.table("_scheduled_functions").insert({"name": "x"})
        with pytest.raises(ReadOnlyError):
            ctx.db.insert("_storage", {"sha256": "x", "size": 1})

    app.run(body)


def test_edge_tables_are_not_queried_directly(app: Any) -> None:
    with pytest.raises(ValidationError, match="many:many"):
        app.run(lambda ctx: ctx.table("messages_to_tags"))
    with pytest.raises(Exception, match='"nope" is not defined'):
        app.run(lambda ctx: ctx.table("nope"))


# -- filters against a reference evaluator -------------------------------------------------

CMP_OPS = ("eq", "neq", "lt", "lte", "gt", "gte")
FILTER_DOCS = [
    {"a": a, "b": b, "s": s, "meta": meta}
    for a, b, s, meta in [
        (None, None, None, {}),
        (1, None, "x", {"x": 1}),
        (None, 2, "y", {"y": 5}),
        (2, 2, None, {"x": 3}),
        (3, 1, "x", {}),
        (0, -1, "", {"x": 0}),
    ]
]


def _convex_key(v: Any) -> tuple[int, Any]:
    return (0, 0) if v is None else (1, v)


def _evaluate(expr: Any, doc: dict[str, Any]) -> Any:
    kind = expr[0]
    if kind == "field":
        head, _, rest = expr[1].partition(".")
        value = doc.get(head)
        return value.get(rest) if rest and isinstance(value, dict) else value
    if kind == "lit":
        return expr[1]
    if kind == "and":
        return all(_evaluate(e, doc) for e in expr[1])
    if kind == "or":
        return any(_evaluate(e, doc) for e in expr[1])
    if kind == "not":
        return not _evaluate(expr[1], doc)
    left, right = _convex_key(_evaluate(expr[1], doc)), _convex_key(_evaluate(expr[2], doc))
    return {"eq": left == right, "neq": left != right, "lt": left < right, "lte": left <= right,
            "gt": left > right, "gte": left >= right}[kind]


def _build(expr: Any, q: Any) -> Any:
    kind = expr[0]
    if kind == "field":
        return q.field(expr[1])
    if kind == "lit":
        return expr[1]
    if kind in ("and", "or"):
        return getattr(q, kind + "_")(*[_build(e, q) for e in expr[1]])
    if kind == "not":
        return q.not_(_build(expr[1], q))
    return getattr(q, kind)(_build(expr[1], q), _build(expr[2], q))


def _filter_exprs() -> Any:
    from hypothesis import strategies as st

    literals = st.tuples(st.just("lit"), st.one_of(st.none(), st.integers(-2, 4)))
    columns = st.one_of(st.sampled_from([("field", "a"), ("field", "b")]), literals)
    nested = st.one_of(st.just(("field", "meta.x")), literals)
    texts = st.one_of(
        st.just(("field", "s")), st.tuples(st.just("lit"), st.one_of(st.none(), st.sampled_from(["", "x", "y", "z"])))
    )
    # A field is compared with literals or with fields stored the same way (PostgreSQL
    # has no operator between a bigint column and a jsonb value).
    comparison = st.one_of(
        st.tuples(st.sampled_from(CMP_OPS), columns, columns),
        st.tuples(st.sampled_from(CMP_OPS), nested, nested),
        st.tuples(st.sampled_from(CMP_OPS), texts, texts),
    )
    return st.recursive(
        comparison,
        lambda inner: st.one_of(
            st.tuples(st.just("not"), inner),
            st.tuples(st.sampled_from(["and", "or"]), st.lists(inner, min_size=1, max_size=3)),
        ),
        max_leaves=6,
    )


def test_filters_follow_convex_semantics(make_app: Any) -> None:
    """Random filter trees agree with a reference evaluator: None sorts first, eq is
    null-safe, and not_ of a comparison with a missing value is its plain negation."""
    from hypothesis import given, settings

    from ents import define_ent, define_ent_schema

    app = make_app(
        define_ent_schema({"docs": define_ent({"a": int | None, "b": int | None, "s": str | None, "meta": dict[str, Any]})})
    )
    ids = app.run(lambda ctx: ctx.table("docs").insert_many(FILTER_DOCS))

    @settings(max_examples=200, deadline=None, database=None)
    @given(_filter_exprs())
    def check(expr: Any) -> None:
        expected = [i for i, doc in zip(ids, FILTER_DOCS, strict=True) if _evaluate(expr, doc)]
        got = app.run(lambda ctx: [d._id for d in ctx.table("docs").filter(lambda q: _build(expr, q))])
        assert got == expected, expr

    check()


def test_a_nested_null_reads_as_missing_in_filters(make_app: Any) -> None:
    from ents import define_ent, define_ent_schema

    app = make_app(define_ent_schema({"docs": define_ent({"meta": dict[str, Any]})}))
    ids = app.run(lambda ctx: ctx.table("docs").insert_many([{"meta": {"x": None}}, {"meta": {}}, {"meta": {"x": 1}}]))
    assert app.run(lambda ctx: [d._id for d in ctx.table("docs").filter(lambda q: q.eq(q.field("meta.x"), None))]) == ids[:2]
    assert app.run(lambda ctx: [d._id for d in ctx.table("docs").filter(lambda q: q.lt(q.field("meta.x"), 1))]) == ids[:2]


def test_index_order_and_pagination_match_a_reference(make_app: Any) -> None:
    """Random data with ties and missing values: ordering by an index follows Convex's order
    (None first, creation order last) and paginating with any page size walks it exactly."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from ents import define_ent, define_ent_schema

    app = make_app(
        define_ent_schema(
            {"rows": define_ent({"k": int | None, "t": str | None}).index("by_k_t", ["k", "t"]).index("by_t", ["t"])}
        )
    )

    @settings(max_examples=40, deadline=None, database=None)
    @given(
        st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 3)), st.one_of(st.none(), st.sampled_from("ab"))), max_size=12),
        st.integers(1, 5),
        st.sampled_from(["asc", "desc"]),
        st.sampled_from(["by_k_t", "by_t"]),
    )
    def check(rows: list[tuple[Any, Any]], page: int, direction: str, index: str) -> None:
        app.run(lambda ctx: ctx.table("rows").delete())
        ids = app.run(lambda ctx: ctx.table("rows").insert_many([{"k": k, "t": t} for k, t in rows]))
        fields = ("k", "t") if index == "by_k_t" else ("t",)
        position = {id: i for i, id in enumerate(ids)}
        docs = dict(zip(ids, rows, strict=True))

        def key(id: str) -> tuple[Any, ...]:
            k, t = docs[id]
            values = {"k": k, "t": t}
            return (*(_convex_key(values[f]) for f in fields), position[id])

        expected = sorted(ids, key=key, reverse=direction == "desc")
        assert app.run(lambda ctx: [r._id for r in ctx.table("rows").order(direction, index)]) == expected
        walked = app.run(lambda ctx: paginate_all(ctx, lambda c: c.table("rows").order(direction, index), page)[0])
        assert walked == expected
        # Within a prefix fixed by eq (which the keyset leaves out, to seek), paging walks
        # the same order restricted to it.
        for k in {k for k, _ in rows}:
            fixed = [id for id in expected if docs[id][0] == k]
            query = lambda c, k=k: c.table("rows", "by_k_t", lambda q: q.eq("k", k)).order(direction)  # noqa: E731
            assert app.run(lambda ctx, query=query: paginate_all(ctx, query, page)[0]) == (
                fixed if index == "by_k_t" else sorted(fixed, key=lambda id: (_convex_key(docs[id][1]), position[id]), reverse=direction == "desc")
            )

    check()


def test_iterating_a_large_group_fixed_by_an_index_sees_every_ent_once(app: Any, monkeypatch: Any) -> None:
    """Reading more ents than one chunk with an equality on an index seeks chunk by chunk
    and yields each exactly once, in creation order."""

    def seed(ctx: Any) -> list[str]:
        uid = ctx.table("users").insert({"name": "U", "email": "u@x"})
        other = ctx.table("users").insert({"name": "V", "email": "v@x"})
        ids = []
        for i in range(2300):
            ids.append(ctx.table("messages").insert({"text": str(i), "user_id": uid, "rank": 1}))
            if i % 3 == 0:
                ctx.table("messages").insert({"text": "x", "user_id": other, "rank": 1})
        return ids

    ids = app.run(seed)

    def read(ctx: Any) -> None:
        uid = ctx.table("users").get_x("email", "u@x")._id
        got = [m._id for m in ctx.table("messages", "user_id", lambda q: q.eq("user_id", uid))]
        assert got == ids
        got = [m._id for m in ctx.table("messages", "user_id", lambda q: q.eq("user_id", uid)).order("desc")]
        assert got == ids[::-1]
        page = ctx.table("messages", "user_id", lambda q: q.eq("user_id", uid)).paginate({"num_items": 1500, "cursor": None})
        rest = ctx.table("messages", "user_id", lambda q: q.eq("user_id", uid)).paginate(
            {"num_items": 1500, "cursor": page["continue_cursor"]}
        )
        assert [m._id for m in page["page"]] + [m._id for m in rest["page"]] == ids

    app.run(read)
    # Each later chunk seeks past the last row by row key alone: the field fixed by the
    # equality is not part of its keyset condition (which would make it rescan the group).
    uid = app.run(lambda ctx: ctx.table("users").get_x("email", "u@x")._id)
    log = SqlLog(monkeypatch)
    log.on = True
    app.run(lambda ctx: ctx.table("messages", "user_id", lambda q: q.eq("user_id", uid)).collect())
    chunks = [sql for sql in log.starting_with("SELECT T.") if 'FROM "messages"' in sql]
    assert len(chunks) == 3
    assert all('"user_id", t."' not in sql.split("WHERE", 1)[1] for sql in chunks[1:]), chunks[1]


def test_pages_stay_exact_when_the_cursor_row_and_others_are_deleted(app: Any) -> None:
    app.run(lambda ctx: ctx.table("tags").insert_many([{"name": f"t{i}"} for i in range(9)]))
    first = app.run(lambda ctx: ctx.table("tags").paginate({"num_items": 3, "cursor": None}))
    assert [t.name for t in first["page"]] == ["t0", "t1", "t2"]

    def drop(ctx: Any) -> None:
        for t in ctx.table("tags"):
            if t.name in ("t2", "t1", "t4"):  # t2 is the row the cursor points after
                t.delete()

    app.run(drop)
    second = app.run(lambda ctx: ctx.table("tags").paginate({"num_items": 3, "cursor": first["continue_cursor"]}))
    assert [t.name for t in second["page"]] == ["t3", "t5", "t6"]
    third = app.run(lambda ctx: ctx.table("tags").paginate({"num_items": 3, "cursor": second["continue_cursor"]}))
    assert [t.name for t in third["page"]] == ["t7", "t8"] and third["is_done"]


def test_query_argument_errors(app: Any) -> None:
    def read(ctx: Any) -> None:
        with pytest.raises(ValidationError, match='map\\(\\) takes a function of an ent, got int'):
            ctx.table("tags").map(3)
        with pytest.raises(ValidationError, match="get_many\\(\\) takes a list of ids, got str"):
            ctx.table("tags").get_many("x")
        with pytest.raises(ValidationError, match="get_many\\(\\) takes a list of ids, or an index name and a list of values"):
            ctx.table("tags").get_many()

    app.run(read)
