"""Writing: insert, insert_many, patch, replace, edges in writes, uniqueness, ctx.db, atomicity."""

from __future__ import annotations

from typing import Any

import pytest

from ents import (
    EntNotFoundError,
    EntsError,
    InvalidIdError,
    ReadOnlyError,
    UniqueConstraintError,
    ValidationError,
)
from tests.schemas import Address, blog, social


@pytest.fixture
def app(make_app: Any) -> Any:
    return make_app(blog())


def snapshot(app: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (user, edge and system tables), to compare before and after."""

    def read(ctx: Any) -> dict[str, list[tuple[Any, ...]]]:
        tx = ctx._tx
        q = tx.dialect.q
        return {name: tx.fetchall(f"SELECT * FROM {q(name)} ORDER BY {q('_rid')}") for name in app.schema.tables}

    return app.run(read)  # type: ignore[no-any-return]


@pytest.fixture
def seeded(app: Any) -> dict[str, str]:
    def seed(ctx: Any) -> dict[str, str]:
        ada = ctx.table("users").insert({"name": "Ada", "email": "ada@x", "nickname": "ace"})
        bob = ctx.table("users").insert({"name": "Bob", "email": "bob@x"})
        red = ctx.table("tags").insert({"name": "red"})
        blue = ctx.table("tags").insert({"name": "blue"})
        m = ctx.table("messages").insert({"text": "hi", "user_id": ada, "tags": [red]})
        profile = ctx.table("profiles").insert({"bio": "x", "user_id": ada})
        return {"ada": ada, "bob": bob, "red": red, "blue": blue, "m": m, "profile": profile}

    return dict(app.run(seed))


# -- insert --------------------------------------------------------------------------------


def test_insert_returns_an_id_and_fills_defaults(app: Any, clock: Any) -> None:
    def body(ctx: Any) -> None:
        uid = ctx.table("users").insert({"name": "Ada", "email": "ada@x"})
        assert isinstance(uid, str)
        user = uid.get_x()
        assert user.doc() == {
            "_id": uid,
            "_creation_time": clock.now(),
            "name": "Ada",
            "email": "ada@x",
            "age": 0,
            "meta": {},
            "nickname": None,
            "address": None,
            "active": True,
        }
        assert uid.get().name == "Ada"
        assert ctx.table("users").get_x(uid) == user

    app.run(body)


def test_insert_values_round_trip(app: Any) -> None:
    def body(ctx: Any) -> None:
        uid = ctx.table("users").insert(
            {
                "name": "Ünïcødé ✓",
                "email": "e@x",
                "age": -(2**62),
                "meta": {"nested": {"list": [1, 2.5, "x", None, True, {"deep": []}], "bytes": b"\x00\xff"}},
                "address": Address(city="Paris", zip="75001"),
                "active": False,
            }
        )
        user = ctx.table("users").get_x(uid)
        assert user.name == "Ünïcødé ✓" and user.age == -(2**62) and user.active is False
        assert user.meta == {"nested": {"list": [1, 2.5, "x", None, True, {"deep": []}], "bytes": b"\x00\xff"}}
        assert user.address == {"city": "Paris", "zip": "75001"}
        assert user.address.city == "Paris"

    app.run(body)


@pytest.mark.parametrize(
    "doc,error,fragments",
    [
        ({"email": "a@x"}, ValidationError, ['Invalid document for table "users"', "missing required field `name`"]),
        ({"name": 3, "email": "a@x"}, ValidationError, ['"users"', "`name`", "string", "int 3"]),
        ({"name": "A", "email": "a@x", "age": "old"}, ValidationError, ["`age`", "integer"]),
        ({"name": "A", "email": "a@x", "age": 1.5}, ValidationError, ["`age`"]),
        ({"name": "A", "email": "a@x", "active": 1}, ValidationError, ["`active`", "boolean"]),
        ({"name": "A", "email": "a@x", "address": {"zip": "1"}}, ValidationError, ["`address.city`"]),
        ({"name": "A", "email": "a@x", "nick": "x"}, ValidationError, ['Unknown field "nick" for table "users"']),
        ({"name": "A", "email": "a@x", "_id": "x"}, ValidationError, ['Unknown field "_id"', "set by ents"]),
        ({"name": "A", "email": "a@x", "meta": {"$k": 1}}, ValidationError, ["`$k`", "`users.meta`"]),
        ({"name": "A\x00", "email": "a@x"}, ValidationError, ["NUL", "users.name"]),
    ],
)
def test_insert_validation_errors(app: Any, doc: dict[str, Any], error: type, fragments: list[str]) -> None:
    with pytest.raises(error) as info:
        app.run(lambda ctx: ctx.table("users").insert(doc))
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    assert info.value.table == "users"
    assert app.run(lambda ctx: ctx.table("users").collect()) == []


def test_insert_edge_field_errors(app: Any, seeded: dict[str, str]) -> None:
    with pytest.raises(ValidationError) as info:
        app.run(lambda ctx: ctx.table("messages").insert({"text": "x", "user": seeded["ada"]}))
    assert 'Unknown field "user" for table "messages"' in str(info.value)
    assert 'stored in field "user_id"' in str(info.value)
    with pytest.raises(ValidationError, match="missing required field `user_id`"):
        app.run(lambda ctx: ctx.table("messages").insert({"text": "x"}))
    with pytest.raises(InvalidIdError) as info2:
        app.run(lambda ctx: ctx.table("messages").insert({"text": "x", "user_id": seeded["red"]}))
    assert seeded["red"] in str(info2.value) and '"users"' in str(info2.value) and '"tags"' in str(info2.value)
    assert info2.value.field is not None and "user_id" in info2.value.field
    app.run(lambda ctx: ctx.table("users").get_x(seeded["bob"]).delete())
    with pytest.raises(ValidationError) as info3:
        app.run(lambda ctx: ctx.table("messages").insert({"text": "x", "user_id": seeded["bob"]}))
    assert f'refers to `{seeded["bob"]}`, but no such document exists in table "users"' in str(info3.value)
    with pytest.raises(ValidationError, match="must be a dict"):
        app.run(lambda ctx: ctx.table("messages").insert(["text"]))


def test_insert_with_many_to_many_edges(app: Any, seeded: dict[str, str]) -> None:
    def body(ctx: Any) -> None:
        mid = ctx.table("messages").insert(
            {"text": "t", "user_id": seeded["bob"], "tags": [seeded["blue"], seeded["red"], seeded["blue"]]}
        )
        message = ctx.table("messages").get_x(mid)
        assert [t.name for t in message.edge("tags")] == ["blue", "red"]
        assert ctx.table("tags").get_x(seeded["blue"]).edge("messages").has(mid)
        # the other end may be written too
        tid = ctx.table("tags").insert({"name": "green", "messages": [mid, seeded["m"]]})
        assert [m._id for m in ctx.table("tags").get_x(tid).edge("messages")] == [mid, seeded["m"]]
        assert ctx.table("messages").get_x(seeded["m"]).edge("tags").has(tid)

    app.run(body)


def test_insert_with_bad_edge_ids(app: Any, seeded: dict[str, str]) -> None:
    before = snapshot(app)
    with pytest.raises(InvalidIdError) as info:
        app.run(lambda ctx: ctx.table("messages").insert({"text": "t", "user_id": seeded["bob"], "tags": [seeded["bob"]]}))
    assert '"tags"' in str(info.value) and '"messages"' in str(info.value)
    with pytest.raises(ValidationError, match="list of ids"):
        app.run(lambda ctx: ctx.table("messages").insert({"text": "t", "user_id": seeded["bob"], "tags": seeded["red"]}))
    app.run(lambda ctx: ctx.table("tags").get_x(seeded["blue"]).delete())
    before = snapshot(app)
    with pytest.raises(ValidationError) as info2:
        app.run(lambda ctx: ctx.table("messages").insert({"text": "t", "user_id": seeded["bob"], "tags": [seeded["blue"]]}))
    assert f'Edge "tags" of table "messages" refers to `{seeded["blue"]}`' in str(info2.value)
    assert snapshot(app) == before


def test_insert_on_the_ref_end_moves_the_other_ents(app: Any, seeded: dict[str, str]) -> None:
    def body(ctx: Any) -> None:
        carl = ctx.table("users").insert({"name": "Carl", "email": "carl@x", "messages": [seeded["m"]]})
        assert [m._id for m in ctx.table("users").get_x(carl).edge("messages")] == [seeded["m"]]
        assert ctx.table("users").get_x(seeded["ada"]).edge("messages").collect() == []
        dan = ctx.table("users").insert({"name": "Dan", "email": "dan@x", "profile": seeded["profile"]})
        assert ctx.table("users").get_x(dan).edge("profile")._id == seeded["profile"]
        assert ctx.table("users").get_x(seeded["ada"]).edge("profile") is None

    app.run(body)


def test_replace_refuses_a_1_to_many_edge_from_its_ref_end(app: Any, seeded: dict[str, str]) -> None:
    """Convex Ents: "Cannot set 1:many edge from many end." (the ents left out of the list
    would have to be deleted); the messages themselves own the edge."""
    before = snapshot(app)
    with pytest.raises(ValidationError) as info:
        app.run(lambda ctx: ctx.table("users").get_x(seeded["bob"]).replace({"name": "Bob", "email": "bob@x", "messages": [seeded["m"]]}))
    assert 'Cannot set 1:many edge "messages" of table "users" with replace()' in str(info.value)
    assert 'patch their "user_id" field instead' in str(info.value)
    assert (info.value.table, info.value.field) == ("users", "messages")
    with pytest.raises(ValidationError):
        app.run(lambda ctx: ctx.table("users").get_x(seeded["ada"]).replace({"name": "Ada", "email": "ada@x", "messages": []}))
    assert snapshot(app) == before


def test_plain_id_fields_are_checked_but_may_dangle_later(app: Any, seeded: dict[str, str]) -> None:
    note = app.run(lambda ctx: ctx.table("notes").insert({"text": "n", "owner": seeded["bob"]}))
    app.run(lambda ctx: ctx.table("users").get_x(seeded["bob"]).delete())  # an Id field is not an edge
    assert app.run(lambda ctx: ctx.table("notes").get_x(note).owner) == seeded["bob"]

    def body(ctx: Any) -> None:
        n = ctx.table("notes").get_x(note)
        n.replace(n.doc())  # written back unchanged: fine
        n.patch({"owner": seeded["bob"], "text": "again"})
        with pytest.raises(ValidationError, match="no such document"):
            ctx.table("notes").insert({"text": "x", "owner": seeded["bob"]})
        ctx.table("notes").get_x(note).patch({"owner": seeded["ada"]})
        with pytest.raises(ValidationError, match="no such document"):
            ctx.table("notes").get_x(note).patch({"owner": seeded["bob"]})

    app.run(body)


def test_references_to_system_documents_may_dangle(app: Any) -> None:
    def body(ctx: Any) -> None:
        file_id = ctx.storage.store(b"x")
        photo = ctx.table("photos").insert({"file_id": file_id})
        ctx.storage.delete(file_id)  # deleting a file does not cascade to ents
        ent = ctx.table("photos").get_x(photo)
        assert ent.file_id == file_id and ent.edge("file") is None
        ent.replace(ent.doc())
        ctx.table("photos").insert({"file_id": file_id})

    app.run(body)


# -- insert_many -------------------------------------------------------------------------


def test_insert_many(app: Any, seeded: dict[str, str]) -> None:
    def body(ctx: Any) -> None:
        ids = ctx.table("tags").insert_many([{"name": "a"}, {"name": "b", "messages": [seeded["m"]]}])
        assert [ctx.table("tags").get_x(i).name for i in ids] == ["a", "b"]
        assert ctx.table("messages").get_x(seeded["m"]).edge("tags").has(ids[1])
        assert ids[0].get_x().name == "a"
        assert ctx.table("tags").insert_many([]) == []

    app.run(body)
    with pytest.raises(ValidationError, match="list of documents"):
        app.run(lambda ctx: ctx.table("tags").insert_many({"name": "a"}))


def test_insert_many_is_all_or_nothing(app: Any, seeded: dict[str, str]) -> None:
    before = snapshot(app)
    with pytest.raises(ValidationError) as info:
        app.run(lambda ctx: ctx.table("tags").insert_many([{"name": "a"}, {"name": "b"}, {"nom": "c"}]))
    assert "document 2 of insert_many" in str(info.value)
    assert snapshot(app) == before


def test_uniqueness_within_one_insert_many(app: Any, seeded: dict[str, str]) -> None:
    before = snapshot(app)
    with pytest.raises(UniqueConstraintError) as info:
        app.run(
            lambda ctx: ctx.table("users").insert_many(
                [{"name": "C", "email": "c@x"}, {"name": "D", "email": "d@x"}, {"name": "E", "email": "c@x"}]
            )
        )
    message = str(info.value)
    assert 'In table "users" cannot create a duplicate document with field "email" of value `c@x`' in message
    assert "documents 0 and 2" in message
    assert info.value.field == "email"
    with pytest.raises(UniqueConstraintError) as info2:
        app.run(
            lambda ctx: ctx.table("users").insert_many([{"name": "C", "email": "c@x"}, {"name": "A", "email": "ada@x"}])
        )
    assert str(info2.value) == (
        'In table "users" cannot create a duplicate document with field "email" of value `ada@x`, '
        f'existing document with ID "{seeded["ada"]}" already has it.'
    )
    with pytest.raises(UniqueConstraintError, match='1:1 edge "user"'):
        app.run(
            lambda ctx: ctx.table("profiles").insert_many(
                [{"bio": "a", "user_id": seeded["bob"]}, {"bio": "b", "user_id": seeded["bob"]}]
            )
        )
    assert snapshot(app) == before


# -- uniqueness ----------------------------------------------------------------------------


def test_unique_field_messages(app: Any, seeded: dict[str, str]) -> None:
    with pytest.raises(UniqueConstraintError) as info:
        app.run(lambda ctx: ctx.table("users").insert({"name": "Imposter", "email": "ada@x"}))
    assert str(info.value) == (
        'In table "users" cannot create a duplicate document with field "email" of value `ada@x`, '
        f'existing document with ID "{seeded["ada"]}" already has it.'
    )
    assert (info.value.table, info.value.field, info.value.id) == ("users", "email", seeded["ada"])
    assert isinstance(info.value, EntsError)
    with pytest.raises(UniqueConstraintError, match=f'existing document with ID "{seeded["ada"]}"'):
        app.run(lambda ctx: ctx.table("users").get_x(seeded["bob"]).patch({"email": "ada@x"}))
    with pytest.raises(UniqueConstraintError):
        app.run(lambda ctx: ctx.table("users").get_x(seeded["bob"]).replace({"name": "Bob", "email": "ada@x"}))
    # Writing a document's own value is not a conflict.
    app.run(lambda ctx: ctx.table("users").get_x(seeded["ada"]).patch({"email": "ada@x", "name": "Ada L."}))
    app.run(lambda ctx: ctx.table("users").get_x(seeded["ada"]).replace({"name": "Ada", "email": "ada@x"}))


def test_unique_within_one_transaction(app: Any) -> None:
    def body(ctx: Any) -> None:
        first = ctx.table("users").insert({"name": "A", "email": "same@x"})
        with pytest.raises(UniqueConstraintError, match=first):
            ctx.table("users").insert({"name": "B", "email": "same@x"})
        # once the first is gone, the value is free again
        ctx.table("users").get_x(first).delete()
        ctx.table("users").insert({"name": "B", "email": "same@x"})

    app.run(body)
    assert app.run(lambda ctx: [u.name for u in ctx.table("users")]) == ["B"]


def test_one_to_one_edges_are_unique(app: Any, seeded: dict[str, str]) -> None:
    with pytest.raises(UniqueConstraintError) as info:
        app.run(lambda ctx: ctx.table("profiles").insert({"bio": "second", "user_id": seeded["ada"]}))
    assert str(info.value) == (
        f'In table "profiles" cannot create a duplicate 1:1 edge "user" to ID "{seeded["ada"]}", '
        f'existing document with ID "{seeded["profile"]}" already has it.'
    )
    bob_profile = app.run(lambda ctx: ctx.table("profiles").insert({"bio": "bob", "user_id": seeded["bob"]}))
    with pytest.raises(UniqueConstraintError, match='1:1 edge "user"'):
        app.run(lambda ctx: ctx.table("profiles").get_x(bob_profile).patch({"user_id": seeded["ada"]}))
    # 1:many edges are not unique
    app.run(lambda ctx: ctx.table("messages").insert({"text": "again", "user_id": seeded["ada"]}))


# -- patch ---------------------------------------------------------------------------------


def test_patch_fields(app: Any, seeded: dict[str, str]) -> None:
    def body(ctx: Any) -> None:
        ada = ctx.table("users").get_x(seeded["ada"])
        assert ada.patch({"name": "Ada L.", "age": 37, "meta": {"a": {"b": 1}}}) == seeded["ada"]
        fresh = ctx.table("users").get_x(seeded["ada"])
        assert (fresh.name, fresh.age, fresh.meta, fresh.email) == ("Ada L.", 37, {"a": {"b": 1}}, "ada@x")
        assert fresh._creation_time == ada._creation_time
        fresh.patch({"meta": {"c": 2}})  # nested values are replaced whole
        assert ctx.table("users").get_x(seeded["ada"]).meta == {"c": 2}
        ctx.table("users").get_x(seeded["ada"]).patch({})
        assert ctx.table("users").get_x(seeded["ada"]).meta == {"c": 2}

    app.run(body)


def test_patch_none_removes_optional_fields(app: Any, seeded: dict[str, str]) -> None:
    def body(ctx: Any) -> None:
        ada = ctx.table("users").get_x(seeded["ada"])
        assert ada.nickname == "ace"
        ada.patch({"nickname": None, "age": None})
        fresh = ctx.table("users").get_x(seeded["ada"])
        assert fresh.nickname is None
        assert fresh.age == 0  # a field with a default reads as its default
        with pytest.raises(ValidationError) as info:
            fresh.patch({"name": None})
        assert 'Cannot remove field "name" of table "users": it is required' == str(info.value)
        with pytest.raises(ValidationError, match='Unknown field "nick"'):
            fresh.patch({"nick": "x"})
        with pytest.raises(ValidationError, match="`age`"):
            fresh.patch({"age": "x"})

    app.run(body)


def test_patch_edges(app: Any, seeded: dict[str, str]) -> None:
    def body(ctx: Any) -> None:
        message = ctx.table("messages").get_x(seeded["m"])
        message.patch({"tags": {"add": [seeded["blue"]], "remove": [seeded["red"]]}})
        assert [t.name for t in message.edge("tags")] == ["blue"]
        message.patch({"tags": {"add": [seeded["blue"], seeded["red"]]}})  # adding twice is a no-op
        assert [t.name for t in message.edge("tags")] == ["blue", "red"]
        message.patch({"tags": {"remove": [seeded["red"], seeded["red"]]}})
        assert [t.name for t in message.edge("tags")] == ["blue"]
        message.patch({"text": "edited", "tags": {"remove": [seeded["blue"]]}})
        fresh = ctx.table("messages").get_x(seeded["m"])
        assert fresh.text == "edited" and fresh.edge("tags").collect() == []
        # the stored end of 1:many is an ordinary field
        fresh.patch({"user_id": seeded["bob"]})
        # an ent is a snapshot, as in Convex: read it again to see the write
        assert fresh.user_id == seeded["ada"]
        assert ctx.table("messages").get_x(seeded["m"]).edge("user")._id == seeded["bob"]
        assert [m._id for m in ctx.table("users").get_x(seeded["bob"]).edge("messages")] == [seeded["m"]]

    app.run(body)


def test_patch_edge_errors_change_nothing(app: Any, seeded: dict[str, str]) -> None:
    before = snapshot(app)
    with pytest.raises(ValidationError, match=r'use replace\(\)'):
        app.run(lambda ctx: ctx.table("messages").get_x(seeded["m"]).patch({"tags": [seeded["blue"]]}))
    with pytest.raises(ValidationError, match='patch the "user_id" field'):
        app.run(lambda ctx: ctx.table("users").get_x(seeded["bob"]).patch({"profile": seeded["profile"]}))
    with pytest.raises(InvalidIdError):
        app.run(
            lambda ctx: ctx.table("messages")
            .get_x(seeded["m"])
            .patch({"text": "changed", "tags": {"add": [seeded["blue"], seeded["ada"]]}})
        )
    app.run(lambda ctx: ctx.table("users").get_x(seeded["bob"]).delete())
    before = snapshot(app)
    with pytest.raises(ValidationError, match="no such document"):
        app.run(lambda ctx: ctx.table("messages").get_x(seeded["m"]).patch({"user_id": seeded["bob"]}))
    assert snapshot(app) == before


def test_patch_of_a_deleted_ent(app: Any, seeded: dict[str, str]) -> None:
    def body(ctx: Any) -> None:
        tag = ctx.table("tags").get_x(seeded["blue"])
        tag.delete()
        with pytest.raises(EntNotFoundError) as info:
            tag.patch({"name": "x"})
        assert str(info.value) == f'Document not found with id `{seeded["blue"]}` in table "tags"'
        with pytest.raises(EntNotFoundError):
            tag.replace({"name": "x"})
        with pytest.raises(EntNotFoundError):
            tag.delete()

    app.run(body)


# -- replace -------------------------------------------------------------------------------


def test_replace(app: Any, seeded: dict[str, str]) -> None:
    def body(ctx: Any) -> None:
        ada = ctx.table("users").get_x(seeded["ada"])
        ctx.table("users").get_x(seeded["ada"]).patch({"age": 40, "meta": {"x": 1}})
        assert ada.replace({"name": "Ada R.", "email": "ada.r@x"}) == seeded["ada"]
        fresh = ctx.table("users").get_x(seeded["ada"])
        assert fresh.doc() == {
            "_id": seeded["ada"],
            "_creation_time": ada._creation_time,
            "name": "Ada R.",
            "email": "ada.r@x",
            "age": 0,
            "meta": {},
            "nickname": None,
            "address": None,
            "active": True,
        }
        # the document read before may be passed back (system fields are ignored)
        doc = fresh.doc()
        doc["name"] = "Ada"
        fresh.replace(doc)
        assert ctx.table("users").get_x(seeded["ada"]).name == "Ada"
        with pytest.raises(ValidationError, match="another"):
            fresh.replace({**doc, "_id": seeded["bob"]})
        with pytest.raises(ValidationError, match="missing required field `email`"):
            fresh.replace({"name": "Ada"})

    app.run(body)


def test_replace_many_to_many_edges(app: Any, seeded: dict[str, str]) -> None:
    def tags(ctx: Any) -> list[str]:
        return [t.name for t in ctx.table("messages").get_x(seeded["m"]).edge("tags")]

    def body(ctx: Any) -> None:
        message = ctx.table("messages").get_x(seeded["m"])
        message.replace({"text": "kept", "user_id": seeded["ada"]})  # tags omitted: kept
        assert tags(ctx) == ["red"]
        message.replace({"text": "set", "user_id": seeded["ada"], "tags": [seeded["blue"], seeded["red"]]})
        assert tags(ctx) == ["red", "blue"]
        message.replace({"text": "set", "user_id": seeded["ada"], "tags": [seeded["blue"]]})
        assert tags(ctx) == ["blue"]
        message.replace({"text": "cleared", "user_id": seeded["ada"], "tags": []})
        assert tags(ctx) == []
        assert ctx.table("tags").get_x(seeded["blue"]).edge("messages").collect() == []

    app.run(body)


def test_replace_edge_errors_change_nothing(app: Any, seeded: dict[str, str]) -> None:
    before = snapshot(app)
    with pytest.raises(InvalidIdError):
        app.run(
            lambda ctx: ctx.table("messages")
            .get_x(seeded["m"])
            .replace({"text": "new", "user_id": seeded["ada"], "tags": [seeded["blue"], "junk"]})
        )
    assert snapshot(app) == before


def test_symmetric_edge_writes(make_app: Any) -> None:
    app = make_app(social())

    def body(ctx: Any) -> None:
        a, b, c = ctx.table("people").insert_many([{"name": n} for n in "abc"])
        d = ctx.table("people").get_x(ctx.table("people").insert({"name": "d", "friends": [a, b]}))
        assert [x.name for x in ctx.table("people").get_x(a).edge("friends")] == ["d"]
        ctx.table("people").get_x(b).patch({"friends": {"remove": [d._id]}})
        assert [x.name for x in d.edge("friends")] == ["a"]
        d.replace({"name": "d", "friends": [c]})
        assert [x.name for x in d.edge("friends")] == ["c"]
        assert [x.name for x in ctx.table("people").get_x(c).edge("friends")] == ["d"]
        assert ctx.table("people").get_x(a).edge("friends").collect() == []
        # befriending yourself stores one row and reads once
        ctx.table("people").get_x(a).patch({"friends": {"add": [a]}})
        assert [x.name for x in ctx.table("people").get_x(a).edge("friends")] == ["a"]
        ctx.table("people").get_x(a).patch({"followers": {"add": [b, c]}})
        assert [x.name for x in ctx.table("people").get_x(b).edge("followees")] == ["a"]
        ctx.table("people").get_x(c).patch({"followees": {"remove": [a]}})
        assert [x.name for x in ctx.table("people").get_x(a).edge("followers")] == ["b"]

    app.run(body)


# -- ctx.db --------------------------------------------------------------------------------


def test_ctx_db_writes(app: Any, seeded: dict[str, str]) -> None:
    def body(ctx: Any) -> None:
        tid = ctx.db.insert("tags", {"name": "green"})
        assert ctx.db.get(tid)["name"] == "green"
        ctx.db.patch(tid, {"name": "teal"})
        assert ctx.table("tags").get_x(tid).name == "teal"
        ctx.db.replace(tid, {"name": "cyan"})
        assert ctx.db.get(tid) == {"_id": tid, "_creation_time": ctx.db.get(tid)["_creation_time"], "name": "cyan"}
        ctx.db.delete(tid)
        assert ctx.db.get(tid) is None
        with pytest.raises(EntNotFoundError, match=f"`{tid}`"):
            ctx.db.delete(tid)
        with pytest.raises(EntNotFoundError):
            ctx.db.patch(tid, {"name": "x"})
        with pytest.raises(UniqueConstraintError):
            ctx.db.insert("users", {"name": "A", "email": "ada@x"})
        with pytest.raises(ValidationError):
            ctx.db.insert("tags", {"name": 1})
        with pytest.raises(InvalidIdError):
            ctx.db.patch("junk", {"name": "x"})
        # ctx.db.delete follows the cascade rules too
        ctx.db.delete(seeded["ada"])
        assert ctx.table("messages").get(seeded["m"]) is None

    app.run(body)


def test_writes_from_queries_are_refused(app: Any, seeded: dict[str, str]) -> None:
    def sneaky(ctx: Any) -> None:
        ctx.db.delete(seeded["red"])

    with pytest.raises(ReadOnlyError):
        app.run_query(app.query(sneaky), {})
    assert app.run(lambda ctx: ctx.table("tags").get(seeded["red"])) is not None


# -- atomicity -----------------------------------------------------------------------------


def test_app_run_is_all_or_nothing(app: Any, seeded: dict[str, str]) -> None:
    before = snapshot(app)

    def body(ctx: Any) -> None:
        ctx.table("tags").insert({"name": "new"})
        ctx.table("users").get_x(seeded["ada"]).patch({"name": "changed"})
        ctx.table("messages").get_x(seeded["m"]).patch({"tags": {"add": [seeded["blue"]]}})
        ctx.table("users").get_x(seeded["bob"]).delete()
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        app.run(body)
    assert snapshot(app) == before
    assert app.run(lambda ctx: 42) == 42


def test_mutation_is_all_or_nothing(app: Any, seeded: dict[str, str]) -> None:
    def rename_all(ctx: Any, name: str) -> None:
        for tag in ctx.table("tags"):
            tag.patch({"name": name})
        ctx.table("users").insert({"name": "dup", "email": "ada@x"})

    fn = app.mutation(rename_all)
    before = snapshot(app)
    with pytest.raises(UniqueConstraintError):
        app.run_mutation(fn, {"name": "same"})
    assert snapshot(app) == before


def test_a_failed_write_changes_nothing_even_when_caught(app: Any, seeded: dict[str, str]) -> None:
    """Each write is atomic on its own: catching its error inside the transaction and
    committing leaves exactly what was there before the failed write."""
    before = snapshot(app)

    def attempts(ctx: Any) -> int:
        failures = 0
        writes = [
            lambda: ctx.table("users").insert_many(
                [{"name": "C", "email": "c@x"}, {"name": "D", "email": "d@x"}, {"name": "E", "email": "bob@x"}]
            ),
            lambda: ctx.table("users").insert_many([{"name": "C", "email": "c@x"}, {"name": "C", "email": "c@x"}]),
            lambda: ctx.table("users").insert_many([{"name": "C", "email": "c@x"}, {"name": 5, "email": "d@x"}]),
            lambda: ctx.table("messages").insert(
                {"text": "t", "user_id": seeded["bob"], "tags": [seeded["red"], seeded["bob"]]}
            ),
            lambda: ctx.table("tags").insert({"name": "t", "messages": [seeded["m"], seeded["red"]]}),
            lambda: ctx.table("users").get_x(seeded["bob"]).patch(
                {"name": "changed", "email": "ada@x"}
            ),
            lambda: ctx.table("messages").get_x(seeded["m"]).patch(
                {"text": "changed", "tags": {"add": [seeded["blue"]], "remove": ["junk"]}}
            ),
            lambda: ctx.table("messages").get_x(seeded["m"]).replace(
                {"text": "changed", "user_id": seeded["bob"], "tags": [seeded["blue"], seeded["profile"]]}
            ),
            lambda: ctx.table("users").get_x(seeded["bob"]).replace({"name": "changed", "email": "ada@x"}),
            lambda: ctx.table("users").insert({"name": "C", "email": "c@x", "messages": [seeded["m"], "junk"]}),
        ]
        for write in writes:
            try:
                write()
            except EntsError:
                failures += 1
        return failures

    assert app.run(attempts) == 10
    assert snapshot(app) == before


def test_ctx_db_patch_is_one_update(app: Any, seeded: dict[str, str], monkeypatch: Any) -> None:
    """As the README says: ctx.db.patch writes without reading the document first. A
    missing document still raises."""
    from tests.schemas import SqlLog

    log = SqlLog(monkeypatch)
    log.on = True
    app.run(lambda ctx: ctx.db.patch(seeded["bob"], {"name": "Bobby"}))
    assert [s.split()[0] for s in log.statements] == ["UPDATE"]
    log.on = False
    assert app.run(lambda ctx: ctx.table("users").get_x(seeded["bob"]).name) == "Bobby"
    app.run(lambda ctx: ctx.table("users").get_x(seeded["bob"]).delete())
    with pytest.raises(EntNotFoundError):
        app.run(lambda ctx: ctx.db.patch(seeded["bob"], {"name": "ghost"}))
