"""The schema of Convex Ents' test project (``test/convex/schema.ts``), in Python.

Names follow the ents naming rule: camelCase identifiers become snake_case
(``messageDetails`` -> ``message_details``, ``numLikes`` -> ``num_likes``,
``ownerId`` -> ``owner_id``), and a stored edge field is ``<edge>_id`` unless the
original names it. Left out: the ``migrations`` table (it belongs to convex-helpers'
migration runner, which the tests never use) and the search index on ``posts``
(ents has no search indexes).

``build_schema()`` is the original, with ``imported``, a table of a union of shapes
(``define_ent(A | B)``), and ``headshots.detail`` declared with ``deletion="soft"`` (soft
deletion on the stored end of a 1:1 edge). ``build_schema(with_imported=False)`` leaves
``imported`` out and ``build_schema(soft_detail=False)`` declares ``detail`` without a
deletion option.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from ents import EntSchema, define_ent, define_ent_schema


class ImportedNum(BaseModel):
    """One shape of ``imported``: ``{type: "num", num: number}``."""

    type: Literal["num"]
    num: float


class ImportedStr(BaseModel):
    """The other shape of ``imported``: ``{type: "str", str: string}``."""

    type: Literal["str"]
    str: str


def tables(*, soft_detail: bool = True) -> dict[str, Any]:
    """Every table of the test project but ``imported`` (see the module docstring)."""
    detail: dict[str, Any] = {"deletion": "soft"} if soft_detail else {}
    return {
        "messages": define_ent({"text": str})
        .edge("user")
        .edges("tags")
        .edges("message_details", ref=True),
        "users": define_ent({"name": str})
        .field("email", str, unique=True)
        .field("height", float | None, index=True)
        .edge("profile", ref=True)
        .edges("messages", ref=True)
        .edges("followers", to="users", inverse="followees")
        .edges("friends", to="users")
        .edge("secret", ref="owner_id")
        .edge("photo", ref="user")
        .edges("owned_photos", to="photos", ref="owner_id")
        .edges("headshots", ref=True)
        .index("legacy_email", ["email"]),
        "profiles": define_ent({"bio": str}).edge("user"),
        "photos": define_ent({"url": str})
        .edge("user", field="user", optional=True)
        .edge("owner", field="owner_id", to="users", optional=True),
        "headshots": define_ent({"taken": str})
        .edge("user")
        .edge("file", to="_storage", deletion="hard")
        .edge("job", field="job_id", to="_scheduled_functions", deletion="hard", optional=True)
        .edge("detail", field="detail_id", to="headshot_details", optional=True, **detail)
        .deletion("soft"),
        "headshot_details": define_ent({}).edge("headshot", ref=True).deletion("soft"),
        "tags": define_ent({"name": str}).edges("messages"),
        "posts": define_ent({"text": str})
        .field("num_likes", float, default=0)
        .field("type", Literal["text", "video"], default="text")
        .index("num_likes_and_type", ["type", "num_likes"])
        # .searchIndex("text", ...) is left out: ents has no search indexes
        .edge("attachment", ref="origin_id")
        .edge("secondary_attachment", ref="copy_id", to="attachments")
        .edges("all_attachments", to="attachments", ref="share_id")
        .edges("any_attachments", to="attachments", table="posts_to_anyattachments")
        .edges("any_attachments2", to="attachments", table="posts_to_anyattachments2", field="owning_post_id"),
        "attachments": define_ent({})
        .edge("origin", to="posts", field="origin_id")
        .edge("copy", to="posts", field="copy_id")
        .edge("share", to="posts", field="share_id")
        .edges("in", to="posts", table="posts_to_anyattachments")
        .edges("in2", to="posts", table="posts_to_anyattachments2", field="attach_id")
        .edges("siblings", to="attachments", table="attachment_to_siblings")
        .edges("replaced", to="attachments", inverse="replacing", table="attachment_to_replaced")
        .edges(
            "siblings2",
            to="attachments",
            table="attachment_to_siblings2",
            field="sibling1_id",
            inverse_field="sibling2_id",
        )
        .edges(
            "replaced2",
            to="attachments",
            inverse="replacing2",
            table="attachment_to_replaced2",
            field="r1_id",
            inverse_field="r2_id",
        ),
        "secrets": define_ent({"value": str}).edge("user", field="owner_id"),
        "message_details": define_ent({"value": str}).edge("message"),
        "teams": define_ent({}).edges("members", ref=True, deletion="soft").deletion("scheduled"),
        "members": define_ent({})
        .edge("team")
        .edges("datas", ref=True)
        .edge("badge", ref="member_id")
        .deletion("soft"),
        "datas": define_ent({}).edge("member"),
        "badges": define_ent({}).edge("member", field="member_id", optional=True),
    }


def imported() -> Any:
    """``imported``: a union of two shapes with a unique ``id`` and a compound index."""
    return (
        define_ent(ImportedNum | ImportedStr)  # type: ignore[arg-type]
        .field("id", str, unique=True)
        .index("type_and_id", ["type", "id"])
    )


def build_schema(*, with_imported: bool = True, soft_detail: bool = True) -> EntSchema:
    """The test project's schema; see the module docstring for the two options."""
    t = tables(soft_detail=soft_detail)
    if with_imported:
        t["imported"] = imported()
    return define_ent_schema(t)
