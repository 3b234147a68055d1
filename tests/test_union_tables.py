"""Tables of a union of shapes: ``define_ent(A | B)`` with pydantic models (and ``define_ent(Model)``).

Convex Ents allows a table whose documents are one of several object shapes (its test
schema's ``imported`` table: ``v.union(v.object({type: "num", num}), v.object({type: "str",
str}))`` plus a unique field and an index on the shared tag).
"""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import BaseModel, field_validator

from ents import App, SchemaError, ValidationError, define_ent, define_ent_schema


class Num(BaseModel):
    type: Literal["num"]
    num: int


class Str(BaseModel):
    type: Literal["str"]
    str_: str
    note: str | None = None


class Point(BaseModel):
    x: int
    y: int


class Label(BaseModel):
    text: str
    at: Point | None = None


def imported_schema() -> Any:
    return define_ent_schema(
        {
            "users": define_ent({"name": str}).edges("imported", ref="owner_id"),
            "imported": define_ent(Num | Str)
            .field("id", str, unique=True)
            .edge("owner", to="users", field="owner_id", optional=True)
            .index("typeAndId", ["type", "id"]),
        }
    )


@pytest.fixture
def app(make_app: Any) -> Any:
    return make_app(imported_schema())


def rows(app: Any) -> list[dict[str, Any]]:
    return app.run(lambda ctx: ctx.table("imported").docs())  # type: ignore[no-any-return]


def test_documents_read_as_their_own_shape(app: Any) -> None:
    def body(ctx: Any) -> None:
        n = ctx.table("imported").insert({"type": "num", "num": 1, "id": "a"})
        s = ctx.table("imported").insert({"type": "str", "str_": "s", "id": "b"})
        num, st = n.get_x(), s.get_x()
        assert {k: v for k, v in num.doc().items() if not k.startswith("_")} == {"type": "num", "num": 1, "id": "a", "owner_id": None}
        assert {k: v for k, v in st.doc().items() if not k.startswith("_")} == {
            "type": "str", "str_": "s", "note": None, "id": "b", "owner_id": None,
        }
        # the other shape's fields read as missing: None as attributes, absent from the document
        assert (num.num, num.str_, st.num, st.str_) == (1, None, None, "s")
        assert "str_" not in num and "num" in num and "num" not in st and st["num"] is None
        # a field all shapes share is indexed, with the fields added by .field()
        assert [d.id for d in ctx.table("imported", "typeAndId", lambda q: q.eq("type", "str"))] == ["b"]
        assert ctx.table("imported").get("id", "a")._id == n
        assert [d.id for d in ctx.table("imported").filter(lambda q: q.gt(q.field("num"), 0))] == ["a"]
        # ctx.db reads the same documents
        assert ctx.db.get(s)["str_"] == "s" and "num" not in ctx.db.get(s)

    app.run(body)


def test_writes_are_validated_against_the_shapes(app: Any) -> None:
    app.run(lambda ctx: ctx.table("imported").insert({"type": "num", "num": 1, "id": "a"}))
    cases = [
        ({"type": "num", "num": "1", "id": "c"}, 'Invalid document for table "imported" (shape Num, type = \'num\'): field `num`', "num"),
        ({"type": "text", "str_": "s", "id": "c"}, "its field `type` is str 'text'; it tells the document's shape: one of 'num' (Num), 'str' (Str)", "type"),
        ({"num": 1, "id": "c"}, "its field `type` is missing", "type"),
        ({"type": "str", "str_": "s", "num": 1, "id": "c"}, "field `num` is not a field of shape Str (its fields: type, str_, note)", "num"),
        ({"type": "str", "id": "c"}, "missing required field `str_`", "str_"),
        ({"type": "str", "str_": "s"}, "missing required field `id`", "id"),
    ]
    for doc, fragment, field in cases:
        with pytest.raises(ValidationError) as info:
            app.run(lambda ctx, doc=doc: ctx.table("imported").insert(doc))
        assert fragment in str(info.value), (fragment, str(info.value))
        assert (info.value.table, info.value.field) == ("imported", field)
    with pytest.raises(ValidationError, match="document 1 of insert_many"):
        app.run(lambda ctx: ctx.table("imported").insert_many([{"type": "num", "num": 2, "id": "b"}, {"type": "num", "id": "c"}]))
    with pytest.raises(ValidationError, match="shape Num"):
        app.run(lambda ctx: ctx.db.insert("imported", {"type": "num", "num": 1.5, "id": "c"}))
    assert [d["id"] for d in rows(app)] == ["a"]


def test_patch_validates_the_merged_document(app: Any) -> None:
    ids = app.run(
        lambda ctx: ctx.table("imported").insert_many(
            [{"type": "num", "num": 1, "id": "a"}, {"type": "str", "str_": "s", "note": "n", "id": "b"}]
        )
    )
    a, b = ids
    before = rows(app)
    bad = [
        (a, {"num": "2"}, "field `num`"),
        (a, {"num": None}, "missing required field `num`"),
        (a, {"str_": "x"}, "field `str_` is not a field of shape Num"),
        # changing the shape: the old shape's fields must go
        (b, {"type": "num", "num": 3}, "field `str_` is not a field of shape Num (its fields: type, num); a patch that changes the shape removes the other fields"),
    ]
    for id, patch, fragment in bad:
        with pytest.raises(ValidationError) as info:
            app.run(lambda ctx, id=id, patch=patch: ctx.table("imported").get_x(id).patch(patch))
        assert fragment in str(info.value), (fragment, str(info.value))
    with pytest.raises(ValidationError):
        app.run(lambda ctx: ctx.db.patch(a, {"num": "2"}))
    assert rows(app) == before

    app.run(lambda ctx: ctx.table("imported").get_x(a).patch({"num": 2}))
    app.run(lambda ctx: ctx.db.patch(a, {"id": "a2"}))  # fields outside the shapes: a plain patch
    app.run(lambda ctx: ctx.table("imported").get_x(b).patch({"type": "num", "num": 3, "str_": None, "note": None}))

    def read(ctx: Any) -> None:
        assert (ctx.table("imported").get_x(a).num, ctx.table("imported").get_x(a).id) == (2, "a2")
        now_num = ctx.table("imported").get_x(b)
        assert {k: v for k, v in now_num.doc().items() if not k.startswith("_")} == {"type": "num", "num": 3, "id": "b", "owner_id": None}
        assert now_num.str_ is None and now_num.note is None  # the old shape's values are gone

    app.run(read)
    # replace takes a whole document of either shape
    app.run(lambda ctx: ctx.table("imported").get_x(b).replace({"type": "str", "str_": "back", "id": "b"}))
    assert app.run(lambda ctx: (ctx.table("imported").get_x(b).str_, ctx.table("imported").get_x(b).num)) == ("back", None)


def test_edges_and_cascades_on_a_table_of_shapes(app: Any) -> None:
    def body(ctx: Any) -> None:
        ada = ctx.table("users").insert({"name": "Ada"})
        ctx.table("imported").insert_many(
            [{"type": "num", "num": 1, "id": "a", "owner_id": ada}, {"type": "str", "str_": "s", "id": "b", "owner_id": ada}]
        )
        ctx.table("imported").insert({"type": "num", "num": 2, "id": "c"})
        assert sorted(d.id for d in ctx.table("users").get_x(ada).edge("imported")) == ["a", "b"]
        assert ctx.table("imported").get_x("id", "b").edge("owner").name == "Ada"
        ctx.table("users").get_x(ada).delete()
        assert [d.id for d in ctx.table("imported")] == ["c"]

    app.run(body)


def test_shapes_without_a_tag_are_tried_in_order() -> None:
    schema = define_ent_schema({"marks": define_ent(Point | Label)})
    with App(schema, "sqlite://") as app:
        p = app.run(lambda ctx: ctx.table("marks").insert({"x": 1, "y": 2}))
        label = app.run(lambda ctx: ctx.table("marks").insert({"text": "hi", "at": {"x": 0, "y": 0}}))
        assert app.run(lambda ctx: ctx.table("marks").get_x(p).doc())["y"] == 2
        got = app.run(lambda ctx: ctx.table("marks").get_x(label).doc())
        assert {k: v for k, v in got.items() if not k.startswith("_")} == {"text": "hi", "at": {"x": 0, "y": 0}}
        assert app.run(lambda ctx: ctx.table("marks").get_x(label).at.x) == 0
        with pytest.raises(ValidationError) as info:
            app.run(lambda ctx: ctx.table("marks").insert({"x": 1, "text": "both"}))
        assert str(info.value) == (
            'Invalid document for table "marks": it matches none of its shapes: '
            "Point (field `text` is not a field of shape Point (its fields: x, y)); "
            "Label (field `x` is not a field of shape Label (its fields: text, at))"
        )
        assert app.run(lambda ctx: len(ctx.table("marks"))) == 2


def test_one_model_defines_a_table(make_app: Any) -> None:
    class Profile(BaseModel):
        handle: str
        level: int = 1
        tags: list[str] = []

        @field_validator("handle")
        @classmethod
        def lower(cls, v: str) -> str:
            if v != v.lower():
                raise ValueError("handles are lowercase")
            return v

    app = make_app(define_ent_schema({"profiles": define_ent(Profile).index("by_level", ["level"])}))
    pid = app.run(lambda ctx: ctx.table("profiles").insert({"handle": "ada"}))
    doc = app.run(lambda ctx: ctx.table("profiles").get_x(pid).doc())
    assert {k: v for k, v in doc.items() if not k.startswith("_")} == {"handle": "ada", "level": 1, "tags": []}
    with pytest.raises(ValidationError) as info:
        app.run(lambda ctx: ctx.table("profiles").insert({"handle": "Ada"}))
    assert str(info.value).startswith('Invalid document for table "profiles": field `handle`: Value error, handles are lowercase')
    app.run(lambda ctx: ctx.table("profiles").get_x(pid).patch({"level": 3}))
    assert app.run(lambda ctx: [p.handle for p in ctx.table("profiles", "by_level", lambda q: q.eq("level", 3))]) == ["ada"]


def test_inconsistent_tables_of_shapes_fail_in_the_schema() -> None:
    with pytest.raises(SchemaError) as info:
        define_ent_schema({"t": define_ent(Num | Str).index("by_num", ["num"])})
    assert str(info.value) == (
        'Index "by_num" in table "t" refers to field "num", which only some of the table\'s shapes have (Num); '
        "an index may name fields all shapes share, and fields added with .field() or edges"
    )
    assert (info.value.table, info.value.field) == ("t", "num")
    with pytest.raises(SchemaError, match='Duplicate field "num"'):
        define_ent(Num | Str).field("num", int)
    with pytest.raises(SchemaError, match='already defines a "deletion_time" field'):
        define_ent_schema({"t": define_ent(type("Deleted", (BaseModel,), {"__annotations__": {"deletion_time": float}})).deletion("soft")})
    with pytest.raises(SchemaError, match="a union of pydantic models"):
        define_ent(int | str)


def test_a_table_of_shapes_persists(backend: str, db_url: str) -> None:
    if backend == "memory":
        pytest.skip("an in-memory database cannot be reopened")
    with App(imported_schema(), db_url) as app:
        app.run(lambda ctx: ctx.table("imported").insert_many([{"type": "num", "num": 1, "id": "a"}, {"type": "str", "str_": "s", "id": "b"}]))
    with App(imported_schema(), db_url) as app:
        assert app.run(lambda ctx: [(d.type, d.num, d.str_) for d in ctx.table("imported")]) == [("num", 1, None), ("str", None, "s")]
