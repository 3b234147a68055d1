"""Ids (opaque, table-aware), stored value rules, Doc, and the error tree."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest

import ents
from ents import (
    Doc,
    EntNotFoundError,
    EntsError,
    Id,
    InvalidIdError,
    SchemaError,
    UniqueConstraintError,
    ValidationError,
    define_ent,
    define_ent_schema,
)
from ents.ids import IdCodec


def schema() -> Any:
    return define_ent_schema(
        {
            "users": define_ent({"name": str}),
            "tags": define_ent({"name": str}),
            "docs": define_ent(
                {"data": Any, "count": int | None, "ratio": float | None, "raw": bytes | None, "owner": Id["users"] | None}
            ),
        }
    )


@pytest.fixture
def app(make_app: Any) -> Any:
    return make_app(schema())


# -- ids -------------------------------------------------------------------------------------


def test_ids_are_opaque_strings_that_name_their_table(app: Any) -> None:
    def body(ctx: Any) -> None:
        users = ctx.table("users").insert_many([{"name": str(i)} for i in range(50)])
        tags = ctx.table("tags").insert_many([{"name": str(i)} for i in range(50)])
        for id in users + tags:
            assert type(str(id)) is str and not str(id).isdigit()
            assert "users" not in id and "tags" not in id
        assert len(set(users) | set(tags)) == 100
        # no table name needed to read a document back
        assert ctx.db.get(users[7])["name"] == "7"
        assert ctx.db.get(tags[7])["name"] == "7"
        assert ctx.table("users").normalize_id(users[3]) == users[3]
        assert ctx.table("users").normalize_id(tags[3]) is None
        assert ctx.table("users").normalize_id("junk") is None
        assert ctx.db.normalize_id("tags", tags[0]) == tags[0]

    app.run(body)


def test_ids_are_never_reused(app: Any) -> None:
    first = app.run(lambda ctx: ctx.table("users").insert({"name": "a"}))
    app.run(lambda ctx: ctx.table("users").get_x(first).delete())
    second = app.run(lambda ctx: ctx.table("users").insert({"name": "b"}))
    assert second != first
    assert app.run(lambda ctx: ctx.table("users").get(first)) is None


def test_an_id_of_another_table_is_rejected(app: Any) -> None:
    tag = app.run(lambda ctx: ctx.table("tags").insert({"name": "t"}))
    with pytest.raises(InvalidIdError) as info:
        app.run(lambda ctx: ctx.table("users").get(tag))
    err = info.value
    assert str(err) == f'Id `{tag}` belongs to table "tags", but an id of table "users" was expected'
    assert (err.table, err.id) == ("users", tag)
    assert isinstance(err, ValidationError) and isinstance(err, EntsError) and isinstance(err, ValueError)
    with pytest.raises(InvalidIdError) as info2:
        app.run(lambda ctx: ctx.table("docs").insert({"data": 1, "owner": tag}))
    assert 'for field "owner" of table "docs"' in str(info2.value)


@pytest.mark.parametrize("bad", ["", "x", "abcdefgh", "cs00001", "ZZ00001a", "cs0000017", "cs00001 7", "🙂🙂00001a"])
def test_malformed_ids_are_rejected(app: Any, bad: str) -> None:
    with pytest.raises(InvalidIdError) as info:
        app.run(lambda ctx: ctx.db.get(bad))
    assert "Invalid id" in str(info.value)


def test_a_tampered_id_is_rejected(app: Any) -> None:
    uid = app.run(lambda ctx: ctx.table("users").insert({"name": "a"}))
    # change the check character: the id no longer belongs to any table
    tampered = uid[:-1] + ("a" if uid[-1] != "a" else "b")
    with pytest.raises(InvalidIdError, match="does not belong to any table"):
        app.run(lambda ctx: ctx.table("users").get(tampered))


@pytest.mark.parametrize("bad", [None, 5, 5.0, b"cs000017", ["cs000017"]])
def test_non_string_ids(app: Any, bad: Any) -> None:
    with pytest.raises(InvalidIdError, match="Expected an id"):
        app.run(lambda ctx: ctx.table("users").get(bad))


def test_codec_round_trip() -> None:
    codec = IdCodec({"users": 32, "tags": 33, "_scheduled_functions": 1})
    for rid in [1, 2, 31, 32, 33, 1023, 1024, 99999, 2**20, 2**31, 2**53]:
        for table in ("users", "tags", "_scheduled_functions"):
            id = codec.encode(table, rid)
            assert codec.decode(id) == (table, rid)
            assert codec.encoder(table)(rid) == id
            assert codec.decode_for(table, id) == rid
    other = IdCodec({"users": 40})
    with pytest.raises(InvalidIdError):
        other.decode(codec.encode("users", 5))


# -- values ----------------------------------------------------------------------------------


def round_trip(app: Any, value: Any) -> Any:
    def body(ctx: Any) -> Any:
        return ctx.table("docs").get_x(ctx.table("docs").insert({"data": value})).data

    return app.run(body)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(2**63),
        2**63 - 1,
        1.5,
        "",
        "ünïcødé ✓ 🙂",
        b"\x00\x01\xff",
        [],
        {},
        [1, "a", None, [True, {"k": [2.5]}]],
        {"nested": {"deeper": {"bytes": b"xyz", "list": [b"a", 1]}}},
        {"": "empty key is fine"},
        {"big": 2**70, "small": -(2**70)},  # only columns are limited to 64 bits
    ],
)
def test_values_round_trip(app: Any, value: Any) -> None:
    assert round_trip(app, value) == value


@pytest.mark.parametrize("number", [1e16, -1e16, 1.5e300, 2.0**80, 1e15, 12345.0])
def test_large_floats_in_json_stay_floats(app: Any, number: float) -> None:
    """PostgreSQL's jsonb keeps 1e16 as the number 10000000000000000; it must still read
    back as a float, alone and nested, and ints beside it stay ints."""
    value = {"x": number, "list": [number, 2**60], "s": "e+ in a string: 1e+16"}
    back = round_trip(app, value)
    assert back == value
    assert type(back["x"]) is float and type(back["list"][0]) is float and type(back["list"][1]) is int
    top = round_trip(app, number)
    assert top == number and type(top) is float


def test_tuples_are_stored_as_lists_and_dicts_read_as_docs(app: Any) -> None:
    assert round_trip(app, (1, 2)) == [1, 2]
    data = round_trip(app, {"a": {"b": 1}})
    assert isinstance(data, Doc) and isinstance(data.a, Doc) and data.a.b == 1


@pytest.mark.parametrize(
    "value,fragment",
    [
        ("a\x00b", "NUL"),
        ({"k": ["ok", "bad\x00"]}, "NUL"),
        ("\ud800", "surrogate"),
        (float("nan"), "finite"),
        ({"x": float("inf")}, "finite"),
        ([float("-inf")], "finite"),
        ({"$type": 1}, "may not start with `$`"),
        ({"ok": {"$bytes": "AAAA"}}, "may not start with `$`"),
        ({1: "int key"}, "keys must be strings"),
        ({1, 2}, "cannot be stored"),
        ({"when": object()}, "cannot be stored"),
    ],
)
def test_values_that_cannot_be_stored(app: Any, value: Any, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        app.run(lambda ctx: ctx.table("docs").insert({"data": value}))
    assert fragment in str(info.value)
    assert info.value.table == "docs"
    assert app.run(lambda ctx: ctx.table("docs").collect()) == []


def test_nesting_limit(app: Any) -> None:
    deep: Any = "leaf"
    for _ in range(70):
        deep = [deep]
    with pytest.raises(ValidationError, match="nested more than"):
        app.run(lambda ctx: ctx.table("docs").insert({"data": deep}))
    ok: Any = "leaf"
    for _ in range(30):
        ok = {"k": ok}
    assert round_trip(app, ok) == ok


def test_scalar_columns_check_their_values(app: Any) -> None:
    with pytest.raises(ValidationError, match="64 bits"):
        app.run(lambda ctx: ctx.table("docs").insert({"data": 1, "count": 2**63}))
    with pytest.raises(ValidationError, match="finite"):
        app.run(lambda ctx: ctx.table("docs").insert({"data": 1, "ratio": float("nan")}))
    with pytest.raises(ValidationError, match="`count`"):
        app.run(lambda ctx: ctx.table("docs").insert({"data": 1, "count": "1"}))

    def body(ctx: Any) -> Any:
        d = ctx.table("docs").insert({"data": 1, "count": -5, "ratio": 3, "raw": b"\x00"})
        return ctx.table("docs").get_x(d)

    doc = app.run(body)
    assert doc.count == -5 and doc.ratio == 3.0 and isinstance(doc.ratio, float) and doc.raw == b"\x00"


# -- Doc ---------------------------------------------------------------------------------------


def test_doc() -> None:
    d = Doc({"state": Doc({"kind": "pending"}), "n": 1})
    assert d.state.kind == "pending" == d["state"]["kind"]
    assert d == {"state": {"kind": "pending"}, "n": 1}
    assert json.loads(json.dumps(d)) == {"state": {"kind": "pending"}, "n": 1}
    with pytest.raises(AttributeError, match="'missing' is not a key"):
        _ = d.missing
    assert "state" in dir(d)


# -- errors ------------------------------------------------------------------------------------


def test_error_tree() -> None:
    for name in ents.errors.__all__:
        cls = getattr(ents, name)
        # ConvexError is raised by application code, not by ents: it stands outside the tree.
        assert issubclass(cls, EntsError) != (name == "ConvexError"), name
        assert cls.__doc__, name
    assert issubclass(EntNotFoundError, LookupError)
    assert issubclass(InvalidIdError, ValidationError)
    err = UniqueConstraintError("dup", table="users", field="email", id="cs000017")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is UniqueConstraintError
    assert (str(again), again.table, again.field, again.id) == ("dup", "users", "email", "cs000017")
    assert issubclass(SchemaError, EntsError)
