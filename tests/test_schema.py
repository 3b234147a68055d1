"""Schema definition: builders, edge resolution, and every SchemaError.

A schema is checked entirely inside ``define_ent_schema`` (or at the builder call that is
wrong); each error must name the table and edge involved and say how to fix it.
"""

from __future__ import annotations

import datetime
from typing import Any, Literal, Optional

import pytest
from pydantic import BaseModel

from ents import EntsError, Id, SchemaError, define_ent, define_ent_schema


def schema_error(fn: Any, *fragments: str) -> SchemaError:
    with pytest.raises(SchemaError) as info:
        fn()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return info.value


def user_tables(schema: Any) -> dict[str, Any]:
    return {n: t for n, t in schema.tables.items() if not n.startswith("_")}


# -- resolution --------------------------------------------------------------------------


def test_api_md_schema_resolves_every_edge_kind() -> None:
    schema = define_ent_schema(
        {
            "users": define_ent({"name": str})
            .field("email", str, unique=True)
            .field("age", int, default=0)
            .edges("messages", ref=True)
            .edge("profile", ref=True),
            "profiles": define_ent({"bio": str}).edge("user"),
            "messages": define_ent({"text": str}).edge("user").edges("tags"),
            "tags": define_ent({"name": str}).edges("messages"),
            "answers": define_ent({"question": str}).edge("action", to="_scheduled_functions", deletion="hard"),
            "photos": define_ent({}).edge("file", to="_storage", deletion="hard"),
            "teams": define_ent({"name": str}).deletion("scheduled", delay_ms=24 * 3600 * 1000),
        }
    )
    users = schema.table("users")
    assert users.edges["messages"].kind == "many_field"
    assert users.edges["messages"].to == "messages"
    assert users.edges["messages"].field == "user_id"
    assert users.edges["profile"].kind == "ref"
    assert users.edges["profile"].field == "user_id"
    assert schema.table("profiles").edges["user"].kind == "field"
    assert schema.table("profiles").edges["user"].unique  # 1:1: one profile per user
    assert not schema.table("messages").edges["user"].unique  # 1:many
    # The stored field is <edge>_id, required, indexed under its own name.
    assert schema.table("messages").fields["user_id"].required
    assert schema.table("messages").indexes["user_id"] == ("user_id",)
    # many:many: messages_to_tags with messages_id / tags_id (API.md naming rule)
    tags = schema.table("messages").edges["tags"]
    assert tags.kind == "many_many"
    assert (tags.edge_table, tags.field, tags.ref) == ("messages_to_tags", "messages_id", "tags_id")
    back = schema.table("tags").edges["messages"]
    assert (back.edge_table, back.field, back.ref) == ("messages_to_tags", "tags_id", "messages_id")
    assert set(schema.table("messages_to_tags").fields) == {"messages_id", "tags_id"}
    assert schema.table("messages_to_tags").is_edge_table
    # system edges store an optional id
    action = schema.table("answers").edges["action"]
    assert (action.kind, action.to, action.field, action.deletion) == ("field", "_scheduled_functions", "action_id", "hard")
    assert schema.table("answers").fields["action_id"].nullable
    assert schema.table("photos").edges["file"].to == "_storage"
    teams = schema.table("teams")
    assert teams.deletion == "scheduled" and teams.deletion_delay_ms == 24 * 3600 * 1000
    assert "deletion_time" in teams.fields and teams.fields["deletion_time"].nullable
    assert users.unique_indexes["email"] == ("email",)
    assert users.fields["age"].default == 0 and not users.fields["age"].required
    # system tables exist even though the schema does not declare them
    assert {"_scheduled_functions", "_storage"} <= set(schema.tables)


def test_field_options_and_indexes() -> None:
    schema = define_ent_schema(
        {
            "posts": define_ent({"title": str})
            .field("slug", str, unique=True)
            .field("rank", int, index=True)
            .field("kind", Literal["text", "video"], default="text")
            .index("by_title_rank", ["title", "rank"])
            .index("by_title_time", ["title", "_creation_time"]),
        }
    )
    posts = schema.table("posts")
    assert posts.indexes["slug"] == ("slug",)
    assert posts.indexes["rank"] == ("rank",)
    assert "rank" not in posts.unique_indexes
    assert posts.indexes["by_title_rank"] == ("title", "rank")
    # _creation_time is implicitly the last field of every index
    assert posts.indexes["by_title_time"] == ("title",)
    # a single-field index is also reachable as by_<field>
    assert posts.resolve_index("by_slug") == ("slug", ("slug",))
    assert posts.resolve_index("nope") is None


def test_custom_field_and_to_on_1_to_many_and_1_to_1() -> None:
    schema = define_ent_schema(
        {
            "users": define_ent({})
            .edges("authored", to="messages", ref="author_id")
            .edge("info", to="profiles", ref="owner_id"),
            "messages": define_ent({}).edge("author", to="users", field="author_id"),
            "profiles": define_ent({}).edge("owner", to="users", field="owner_id"),
        }
    )
    assert schema.table("users").edges["authored"].field == "author_id"
    assert schema.table("users").edges["authored"].kind == "many_field"
    assert schema.table("users").edges["info"].kind == "ref"
    assert schema.table("users").edges["info"].field == "owner_id"
    assert "owner_id" in schema.table("profiles").fields


def test_two_field_edges_between_the_same_tables_are_paired_by_field() -> None:
    schema = define_ent_schema(
        {
            "messages": define_ent({}).edge("user").edge("editor", to="users", field="editor_id", optional=True),
            "users": define_ent({}).edges("messages", ref="user_id").edges("edited", to="messages", ref="editor_id"),
        }
    )
    users = schema.table("users")
    assert (users.edges["messages"].field, users.edges["edited"].field) == ("user_id", "editor_id")
    assert users.edges["edited"].optional
    assert not users.edges["messages"].optional


def test_optional_stored_end_of_1_to_1_edge() -> None:
    schema = define_ent_schema(
        {
            "users": define_ent({}).edge("profile", ref=True),
            "profiles": define_ent({}).edge("user", optional=True),
        }
    )
    edge = schema.table("profiles").edges["user"]
    assert edge.unique and edge.optional
    assert schema.table("profiles").fields["user_id"].nullable
    assert schema.table("users").edges["profile"].optional


def test_many_to_many_custom_table_and_fields() -> None:
    schema = define_ent_schema(
        {
            "messages": define_ent({}).edges("tags", table="messages_to_assigned_tags", field="message_id"),
            "tags": define_ent({}).edges("messages", table="messages_to_assigned_tags", field="assigned_tag_id"),
        }
    )
    edge = schema.table("messages").edges["tags"]
    assert (edge.edge_table, edge.field, edge.ref) == ("messages_to_assigned_tags", "message_id", "assigned_tag_id")
    assert set(schema.table("messages_to_assigned_tags").fields) == {"message_id", "assigned_tag_id"}


def test_two_many_to_many_edges_between_the_same_tables() -> None:
    schema = define_ent_schema(
        {
            "messages": define_ent({}).edges("tags").edges("labels", to="tags", table="labelled"),
            "tags": define_ent({}).edges("messages").edges("labelled", to="messages", table="labelled"),
        }
    )
    assert schema.table("messages").edges["tags"].edge_table == "messages_to_tags"
    assert schema.table("messages").edges["labels"].edge_table == "labelled"
    assert schema.table("tags").edges["labelled"].edge_table == "labelled"


def test_many_to_many_edge_names_differ_from_tables() -> None:
    schema = define_ent_schema(
        {
            "messages": define_ent({}).edges("assigned_tags", to="tags"),
            "tags": define_ent({}).edges("tagged_messages", to="messages"),
        }
    )
    edge = schema.table("messages").edges["assigned_tags"]
    assert edge.to == "tags" and edge.edge_table == "messages_tagged_messages_to_assigned_tags"
    assert (edge.field, edge.ref) == ("messages_id", "tags_id")


def test_symmetric_and_asymmetric_self_edges() -> None:
    schema = define_ent_schema(
        {
            "users": define_ent({})
            .edges("friends", to="users")
            .edges("followers", to="users", inverse="followees"),
        }
    )
    users = schema.table("users")
    friends = users.edges["friends"]
    assert friends.symmetric and friends.kind == "many_many"
    assert (friends.edge_table, friends.field, friends.ref) == ("users_friends", "a_id", "b_id")
    followers, followees = users.edges["followers"], users.edges["followees"]
    assert not followers.symmetric and not followees.symmetric
    assert followers.edge_table == followees.edge_table == "users_followees_to_followers"
    assert (followers.field, followers.ref) == (followees.ref, followees.field)


def test_self_edge_custom_storage() -> None:
    schema = define_ent_schema(
        {
            "users": define_ent({})
            .edges("friends", to="users", table="friendships", field="user_id", inverse_field="friend_id")
            .edges("blocked", to="users", inverse="blocked_by", table="blocks", field="blocker_id", inverse_field="blocked_id"),
        }
    )
    friends = schema.table("users").edges["friends"]
    assert (friends.edge_table, friends.field, friends.ref) == ("friendships", "user_id", "friend_id")
    blocked = schema.table("users").edges["blocked"]
    assert (blocked.edge_table, blocked.field, blocked.ref) == ("blocks", "blocker_id", "blocked_id")
    assert schema.table("users").edges["blocked_by"].field == "blocked_id"


def test_self_directed_1_to_many() -> None:
    schema = define_ent_schema(
        {
            "users": define_ent({})
            .edge("manager", to="users", field="manager_id", optional=True)
            .edges("reports", to="users", ref="manager_id"),
        }
    )
    users = schema.table("users")
    assert users.edges["manager"].kind == "field"
    assert users.edges["reports"].kind == "many_field"
    assert users.edges["reports"].field == "manager_id"


def test_soft_deletion_edges() -> None:
    schema = define_ent_schema(
        {
            "users": define_ent({}).deletion("soft").edges("profiles", ref=True, deletion="soft"),
            "profiles": define_ent({}).deletion("soft").edge("user"),
        }
    )
    assert schema.table("users").edges["profiles"].deletion == "soft"


def test_field_types_resolve_to_storage_kinds() -> None:
    class Address(BaseModel):
        city: str

    schema = define_ent_schema(
        {
            "things": define_ent(
                {
                    "s": str,
                    "i": int,
                    "f": float,
                    "b": bool,
                    "raw": bytes,
                    "items": list[int],
                    "meta": dict[str, Any],
                    "maybe": Optional[str],  # noqa: UP045 - the typing spelling must work too
                    "union": int | None,
                    "lit": Literal["a", "b"],
                    "nums": Literal[1, 2],
                    "mixed": Literal["a", 1],
                    "addr": Address,
                    "owner": Id["things"],
                    "anything": Any,
                }
            ),
        }
    )
    kinds = {name: spec.kind for name, spec in schema.table("things").fields.items()}
    assert kinds == {
        "s": "str",
        "i": "int",
        "f": "float",
        "b": "bool",
        "raw": "bytes",
        "items": "json",
        "meta": "json",
        "maybe": "str",
        "union": "int",
        "lit": "str",
        "nums": "int",
        "mixed": "json",
        "addr": "json",
        "owner": "id",
        "anything": "json",
    }
    fields = schema.table("things").fields
    assert fields["maybe"].nullable and fields["union"].nullable and not fields["s"].nullable
    assert fields["owner"].id_table == "things"


def test_schema_error_is_an_ents_error_with_table_attribute() -> None:
    err = schema_error(lambda: define_ent_schema({"messages": define_ent({}).edge("user")}))
    assert isinstance(err, EntsError)
    assert err.table == "messages"


# -- SchemaError: edges ------------------------------------------------------------------


def test_edge_to_undefined_table() -> None:
    schema_error(
        lambda: define_ent_schema({"messages": define_ent({}).edge("user")}),
        'Edge "user" in table "messages"',
        'undefined table "users"',
        'to="..."',
    )
    schema_error(
        lambda: define_ent_schema({"messages": define_ent({}).edges("tags")}),
        'Edge "tags" in table "messages"',
        'undefined table "tags"',
    )


def test_missing_inverse_of_field_edge() -> None:
    schema_error(
        lambda: define_ent_schema({"messages": define_ent({}).edge("user"), "users": define_ent({})}),
        'Missing inverse edge in table "users" for edge "user" in table "messages"',
        '.edges("messages", ref=True)',
    )


def test_missing_inverse_of_ref_edge() -> None:
    schema_error(
        lambda: define_ent_schema({"users": define_ent({}).edge("profile", ref=True), "profiles": define_ent({})}),
        'Missing inverse edge in table "profiles" for edge "profile" in table "users"',
        '.edge("user")',
    )


def test_missing_inverse_of_1_to_many() -> None:
    schema_error(
        lambda: define_ent_schema({"users": define_ent({}).edges("messages", ref=True), "messages": define_ent({})}),
        'Missing inverse edge in table "messages" for edge "messages" in table "users"',
        '.edge("user")',
    )


def test_missing_inverse_of_many_to_many() -> None:
    schema_error(
        lambda: define_ent_schema({"messages": define_ent({}).edges("tags"), "tags": define_ent({})}),
        'Missing inverse edge in table "tags" for edge "tags" in table "messages"',
        '.edges("messages")',
    )


def test_missing_inverse_of_self_directed_field_edge() -> None:
    schema_error(
        lambda: define_ent_schema({"users": define_ent({}).edge("manager", to="users")}),
        'Missing inverse edge in table "users" for edge "manager" in table "users"',
        'ref="manager_id"',
    )


def test_ambiguous_inverse_from_the_field_end() -> None:
    schema_error(
        lambda: define_ent_schema(
            {
                "messages": define_ent({}).edge("user"),
                "users": define_ent({}).edges("messages", ref=True).edge("message", to="messages", ref=True),
            }
        ),
        'Edge "user" in table "messages" has too many potential inverse edges in table "users"',
        '"messages", "message"',
        'ref="user_id"',
    )


def test_ambiguous_inverse_from_the_ref_end() -> None:
    schema_error(
        lambda: define_ent_schema(
            {
                "users": define_ent({}).edges("messages", ref=True).edges("edited", to="messages", ref=True),
                "messages": define_ent({}).edge("user").edge("editor", to="users", field="editor_id"),
            }
        ),
        'Edge "messages" in table "users" has too many potential inverse edges in table "messages"',
        'ref="<field>"',
    )


def test_two_ref_edges_cannot_share_one_field_edge() -> None:
    schema_error(
        lambda: define_ent_schema(
            {
                "messages": define_ent({}).edge("user"),
                "users": define_ent({}).edges("messages", ref="user_id").edge("message", to="messages", ref=True),
            }
        ),
        '"messages" and "message" in table "users"',
        '"user_id" of edge "user" in table "messages"',
    )


def test_ambiguous_many_to_many() -> None:
    schema_error(
        lambda: define_ent_schema(
            {
                "messages": define_ent({}).edges("tags"),
                "tags": define_ent({}).edges("messages").edges("others", to="messages"),
            }
        ),
        'Edge "tags" in table "messages" has too many potential inverse edges in table "tags"',
        'table="..."',
    )


def test_many_to_many_ends_naming_different_tables() -> None:
    schema_error(
        lambda: define_ent_schema(
            {
                "messages": define_ent({}).edges("tags", table="a_to_b"),
                "tags": define_ent({}).edges("messages", table="c_to_d"),
            }
        ),
        'Edge "tags" in table "messages"',
        '"a_to_b"',
        'table="c_to_d"',
        "same table=",
    )


def test_both_ends_of_1_to_1_ref() -> None:
    schema_error(
        lambda: define_ent_schema(
            {"users": define_ent({}).edge("profile", ref=True), "profiles": define_ent({}).edge("user", ref=True)}
        ),
        'edge "profile" in table "users"',
        'edge "user" in table "profiles"',
        "remove ref",
    )


def test_1_to_many_whose_inverse_is_a_ref() -> None:
    schema_error(
        lambda: define_ent_schema(
            {"users": define_ent({}).edges("messages", ref=True), "messages": define_ent({}).edge("user", ref=True)}
        ),
        'The edge "user" in table "messages" cannot be ref=True',
        'inverse edge "messages" in table "users"',
    )


def test_ref_plural_whose_inverse_is_plural() -> None:
    schema_error(
        lambda: define_ent_schema(
            {"users": define_ent({}).edges("messages"), "messages": define_ent({}).edges("users", ref=True)}
        ),
        'The edge "users" in table "messages" specified `ref`',
        'inverse edge "messages" in table "users"',
        'drop `ref`',
    )


def test_deletion_options_on_edges() -> None:
    schema_error(
        lambda: define_ent_schema(
            {"users": define_ent({}).edges("messages", ref=True), "messages": define_ent({}).edge("user", deletion="hard")}
        ),
        'Edge "user" in table "messages": deletion="hard"',
        "only on 1:1 edges",
    )
    schema_error(
        lambda: define_ent_schema(
            {"users": define_ent({}).edges("messages", ref=True), "messages": define_ent({}).edge("user", deletion="soft")}
        ),
        'Edge "user" in table "messages": deletion="soft" would delete the shared "users" ent',
        "only on 1:1 edges",
    )
    schema_error(
        lambda: define_ent_schema(
            {"users": define_ent({}).edge("profile", ref=True), "profiles": define_ent({}).edge("user", deletion="gone")}
        ),
        'Edge "user" in table "profiles": deletion="gone" is not valid on the end that stores the edge',
    )
    schema_error(
        lambda: define_ent_schema(
            {"users": define_ent({}).edges("messages", ref=True, deletion="hard"), "messages": define_ent({}).edge("user")}
        ),
        'Edge "messages" in table "users": deletion="hard" is not valid here',
        'only deletion="soft"',
    )
    schema_error(
        lambda: define_ent_schema(
            {"users": define_ent({}).edge("profile", ref=True, deletion="hard"), "profiles": define_ent({}).edge("user")}
        ),
        'Edge "profile" in table "users": deletion="hard" is not valid here',
    )
    schema_error(
        lambda: define_ent_schema(
            {"messages": define_ent({}).edges("tags", deletion="soft"), "tags": define_ent({}).edges("messages")}
        ),
        'Edge "tags" in table "messages": many:many edges take no `deletion` option',
    )


def test_soft_edge_deletion_needs_soft_tables() -> None:
    schema_error(
        lambda: define_ent_schema(
            {
                "users": define_ent({}).deletion("soft").edges("messages", ref=True, deletion="soft"),
                "messages": define_ent({}).edge("user"),
            }
        ),
        'Cannot specify soft deletion behavior for edge "messages" in table "users"',
        'target table "messages"',
        '.deletion("soft")',
    )
    schema_error(
        lambda: define_ent_schema(
            {
                "users": define_ent({}).edges("messages", ref=True, deletion="soft"),
                "messages": define_ent({}).deletion("soft").edge("user"),
            }
        ),
        'edge "messages" in table "users"',
        'add .deletion("soft") to "users"',
    )


def test_soft_deletion_on_the_stored_end_of_a_1_to_1_edge() -> None:
    """Valid as in Convex Ents (its headshots' `detail` edge), with the same requirements
    as on the other end: both tables soft-delete."""
    schema = define_ent_schema(
        {
            "headshots": define_ent({}).deletion("soft").edge("detail", to="details", field="detail_id", deletion="soft", optional=True),
            "details": define_ent({}).deletion("scheduled").edge("headshot", ref=True),
        }
    )
    edge = schema.table("headshots").edges["detail"]
    assert (edge.kind, edge.deletion, edge.unique, edge.optional) == ("field", "soft", True, True)
    schema_error(
        lambda: define_ent_schema(
            {
                "headshots": define_ent({}).deletion("soft").edge("detail", to="details", field="detail_id", deletion="soft"),
                "details": define_ent({}).edge("headshot", ref=True),
            }
        ),
        'Cannot specify soft deletion behavior for edge "detail" in table "headshots"',
        'add .deletion("soft") to "details"',
    )
    schema_error(
        lambda: define_ent_schema(
            {
                "headshots": define_ent({}).edge("detail", to="details", field="detail_id", deletion="soft"),
                "details": define_ent({}).deletion("soft").edge("headshot", ref=True),
            }
        ),
        'deletion="soft" on edge "detail" in table "headshots" has no effect',
        'add .deletion("soft") to "headshots", or use deletion="hard"',
    )


def test_inverse_only_for_self_edges() -> None:
    schema_error(
        lambda: define_ent_schema(
            {"messages": define_ent({}).edges("tags", inverse="tagged"), "tags": define_ent({}).edges("messages")}
        ),
        'Edge "tags" in table "messages"',
        "`inverse` is only for self-directed edges",
    )


def test_many_to_many_fields_must_differ() -> None:
    schema_error(
        lambda: define_ent_schema(
            {"users": define_ent({}).edges("friends", to="users", table="fr", field="x", inverse_field="x")}
        ),
        'Edge "friends" in table "users"',
        'field "x"',
        "inverse_field=",
    )


def test_edge_table_collisions() -> None:
    schema_error(
        lambda: define_ent_schema(
            {
                "messages_to_tags": define_ent({}),
                "messages": define_ent({}).edges("tags"),
                "tags": define_ent({}).edges("messages"),
            }
        ),
        '"messages_to_tags" collides with a table',
        "table=...",
    )
    schema_error(
        lambda: define_ent_schema(
            {
                "users": define_ent({})
                .edges("friends", to="users", table="links")
                .edges("rivals", to="users", table="links"),
            }
        ),
        'Edge "rivals" in table "users"',
        '"links"',
        "table=...",
    )


def test_system_table_edges() -> None:
    schema_error(
        lambda: define_ent_schema({"a": define_ent({}).edges("jobs", to="_scheduled_functions")}),
        'Edge "jobs" in table "a"',
        '"_scheduled_functions"',
        '.edge("jobs", to="_scheduled_functions")',
    )
    schema_error(
        lambda: define_ent_schema({"a": define_ent({}).edge("file", to="_storage", ref=True)}),
        'Edge "file" in table "a"',
        "only singular edges that store the id",
    )
    schema_error(
        lambda: define_ent_schema({"a": define_ent({}).edge("job", to="_scheduled_functions", deletion="soft")}),
        'Edge "job" in table "a"',
        'only deletion="hard"',
    )


def test_edge_field_collides_with_a_field() -> None:
    schema_error(
        lambda: define_ent_schema(
            {"messages": define_ent({"user_id": str}).edge("user"), "users": define_ent({}).edges("messages", ref=True)}
        ),
        'Edge "user" in table "messages"',
        'field "user_id"',
        "field=...",
    )


# -- SchemaError: builder arguments ------------------------------------------------------


def test_edge_builder_rejects_contradictory_options() -> None:
    schema_error(lambda: define_ent({}).edge("user", field="x", ref=True), 'Edge "user"', "`field` and `ref`")
    schema_error(lambda: define_ent({}).edge("user", optional=True, ref=True), 'Edge "user"', "`optional`")
    schema_error(lambda: define_ent({}).edges("tags", ref=True, table="t"), 'Edge "tags"', "`ref` and `table`")
    schema_error(lambda: define_ent({}).edges("tags", ref=True, field="f"), 'Edge "tags"', "many:many")
    schema_error(lambda: define_ent({}).edges("tags", ref=True, inverse="x"), 'Edge "tags"', "many:many")
    schema_error(lambda: define_ent({}).edges("tags", field="f"), 'Edge "tags"', "specify `table`")
    schema_error(lambda: define_ent({}).edges("tags", inverse_field="f"), 'Edge "tags"', "specify `table`")
    schema_error(lambda: define_ent({}).edge("user").edge("user"), 'Duplicate edge "user"')
    schema_error(lambda: define_ent({}).edges("tags").edges("tags"), 'Duplicate edge "tags"')
    schema_error(lambda: define_ent({}).edge("followees").edges("followers", to="x", inverse="followees"), '"followees"')
    schema_error(lambda: define_ent({}).edge("a-b"), "Invalid edge name")


def test_field_builder_errors() -> None:
    schema_error(lambda: define_ent({"name": str}).field("name", str), 'Duplicate field "name"')
    schema_error(lambda: define_ent({"_secret": str}), '"_secret"', "reserved")
    schema_error(lambda: define_ent({"my-field": str}), "Invalid field name", "letters, digits and underscores")
    schema_error(lambda: define_ent(["name"]), "define_ent() takes a dict")  # type: ignore[arg-type]


def test_index_builder_errors() -> None:
    schema_error(lambda: define_ent({"a": str}).index("by_a", []), 'Index "by_a"', "non-empty list")
    schema_error(lambda: define_ent({"a": str}).index("by_a", "a"), 'Index "by_a"', "list")  # type: ignore[arg-type]


def test_deletion_builder_errors() -> None:
    schema_error(lambda: define_ent({}).deletion("soft").deletion("scheduled"), "only be specified once")
    schema_error(lambda: define_ent({}).deletion("hard"), '"soft" or "scheduled"')
    schema_error(lambda: define_ent({}).deletion("soft", delay_ms=10), "`delay_ms`", '"scheduled"')
    schema_error(lambda: define_ent({}).deletion("scheduled", delay_ms=-1), "`delay_ms`", "non-negative")


def test_schema_level_table_errors() -> None:
    schema_error(lambda: define_ent_schema({"_jobs": define_ent({})}), '"_jobs"', "reserved for system tables")
    schema_error(lambda: define_ent_schema({"1users": define_ent({})}), "Invalid table name")
    schema_error(lambda: define_ent_schema({"users": {"name": str}}), 'Table "users"', "define_ent(...)")  # type: ignore[dict-item]
    schema_error(lambda: define_ent_schema([("users", define_ent({}))]), "takes a dict")  # type: ignore[arg-type]


def test_unsupported_field_types() -> None:
    schema_error(
        lambda: define_ent_schema({"events": define_ent({"at": datetime.datetime})}),
        'Field "at" in table "events"',
        "not supported",
        "pydantic model",
    )
    schema_error(lambda: define_ent_schema({"events": define_ent({"ids": set[int]})}), 'Field "ids" in table "events"')
    schema_error(
        lambda: define_ent_schema({"events": define_ent({"m": dict[int, str]})}),
        'Field "m" in table "events"',
        "dict keys must be str",
    )


def test_bad_default() -> None:
    schema_error(
        lambda: define_ent_schema({"posts": define_ent({}).field("rank", int, default="high")}),
        'Default value \'high\' of field "rank" in table "posts"',
    )
    schema_error(
        lambda: define_ent_schema({"posts": define_ent({}).field("kind", Literal["a", "b"], default="c")}),
        'field "kind" in table "posts"',
    )


def test_id_of_undefined_table() -> None:
    schema_error(
        lambda: define_ent_schema({"posts": define_ent({"author": Id["authors"]})}),
        'Field "author" in table "posts"',
        'undefined table "authors"',
    )


def test_deletion_time_field_clash() -> None:
    schema_error(
        lambda: define_ent_schema({"posts": define_ent({"deletion_time": float}).deletion("soft")}),
        'table "posts"',
        '"deletion_time"',
    )


def test_index_errors_at_schema_time() -> None:
    schema_error(
        lambda: define_ent_schema({"posts": define_ent({}).field("rank", int, index=True).index("rank", ["rank"])}),
        'Duplicate index "rank" in table "posts"',
    )
    schema_error(
        lambda: define_ent_schema({"posts": define_ent({"meta": dict}).index("by_meta_a", ["meta.a"])}),
        'Index "by_meta_a" in table "posts"',
        "nested",
    )
    schema_error(
        lambda: define_ent_schema({"posts": define_ent({"rank": int}).index("by_score", ["score"])}),
        'Index "by_score" in table "posts"',
        'undefined field "score"',
    )
    schema_error(
        lambda: define_ent_schema({"posts": define_ent({"rank": int}).index("i", ["_creation_time", "rank"])}),
        'Index "i" in table "posts"',
        "last field",
    )
    schema_error(
        lambda: define_ent_schema({"posts": define_ent({"rank": int}).index("i", ["_creation_time"])}),
        'Index "i" in table "posts"',
    )


def test_an_edge_may_not_have_the_name_of_a_field() -> None:
    """Found in review: {"b": ...} went to the field on one write path and to the edge on
    the other. A document key means one thing."""
    with pytest.raises(SchemaError, match='Edge "b" in table "a" has the name of a field'):
        define_ent_schema({"a": define_ent({"b": str}).edges("b"), "b": define_ent({"x": int}).edges("a")})
    with pytest.raises(SchemaError, match='Edge "user" in table "posts" has the name of a field'):
        define_ent_schema({"posts": define_ent({"user": str}).edge("user"), "users": define_ent({}).edges("posts", ref=True)})
    # An edge storing its id in a field of its own name is one thing, not two.
    schema = define_ent_schema({"posts": define_ent({}).edge("user", field="user"), "users": define_ent({}).edges("posts", ref="user")})
    assert schema.tables["posts"].edges["user"].field == "user"


@pytest.mark.parametrize("flags", [{"unique": NotImplemented}, {"index": "yes"}, {"unique": 1}])
def test_field_flags_must_be_true_or_false(flags: dict[str, Any]) -> None:
    with pytest.raises(SchemaError, match=r'Field "n": unique= and index= take True or False'):
        define_ent({}).field("n", int, **flags)
