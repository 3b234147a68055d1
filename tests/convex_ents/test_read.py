"""Convex Ents' read tests (``test/convex/read.test.ts``), ported.

Each test runs its body in one mutation (``app.run``), as the original runs it inside one
``t.run``. The original's title is in each test's first comment line.
"""

from __future__ import annotations

from typing import Any

import pytest

from ents import App, EntsError, NotUniqueError
from tests.convex_ents.conftest import ents_app, new_file_id
from tests.convex_ents.schema import build_schema

STARK = {"name": "Stark", "email": "tony@stark.com"}
MUSK = {"name": "Musk", "email": "elon@musk.com"}


def test_index_field(app: App) -> None:
    # "index field" (read.test.ts)
    def body(ctx: Any) -> None:
        ctx.table("users").insert_many([{**STARK, "height": 3}, MUSK])
        user_by_height = ctx.table("users").get_x("height", 3)
        assert user_by_height.name == "Stark"

    app.run(body)


def test_default_fields(app: App) -> None:
    # "default fields" (read.test.ts, the first of two tests with this title)
    def body(ctx: Any) -> None:
        ctx.table("posts").insert({"text": "My great post"})
        first_post = ctx.table("posts").first_x()
        assert first_post.num_likes == 0
        assert first_post.type == "text"

    app.run(body)


def test_get_using_index(app: App) -> None:
    # "get using index" (read.test.ts)
    def body(ctx: Any) -> None:
        ctx.table("users").insert_many([{**STARK, "height": 3}, MUSK])
        user_by_height = ctx.table("users").get_x("height", 3)
        assert user_by_height.name == "Stark"

    app.run(body)


def test_get_x_using_index(app: App) -> None:
    # "getX using index" (read.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(STARK)
        ctx.table("messages").insert({"text": "Hello world", "user_id": user_id})
        id = ctx.table("users").first_x()._id
        message = ctx.table("messages").get_x("user_id", id)
        assert message.text == "Hello world"

    app.run(body)


def test_get_using_compound_index(app: App) -> None:
    # "get using compound index" (read.test.ts)
    def body(ctx: Any) -> None:
        ctx.table("posts").insert_many(
            [
                {"text": "My great video", "type": "video", "num_likes": 4},
                {"text": "My awesome video", "type": "video", "num_likes": 0},
            ]
        )
        video = ctx.table("posts").get_x("num_likes_and_type", "video", 4)
        assert video.text == "My great video"
        assert video.num_likes == 4
        assert video.type == "video"

    app.run(body)


def test_default_fields_2(app: App) -> None:
    # "default fields" (read.test.ts, the second of two tests with this title)
    def body(ctx: Any) -> None:
        ctx.table("posts").insert({"text": "My great post"})
        first_post = ctx.table("posts").first_x()
        assert first_post.num_likes == 0
        assert first_post.type == "text"

    app.run(body)


def test_1_1_edge_x_from_ref_end_existing(app: App) -> None:
    # "1:1 edgeX from ref end, existing" (read.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(STARK)
        ctx.table("profiles").insert({"bio": "Hello world", "user_id": user_id})
        first_user_profile = ctx.table("users").first_x().edge_x("profile")
        assert first_user_profile.bio == "Hello world"

    app.run(body)


def test_1_1_optional_edge_missing(app: App) -> None:
    # "1:1 optional edge missing" (read.test.ts)
    def body(ctx: Any) -> None:
        photo = ctx.table("photos").insert({"url": "https://a.b"}).get()
        user = photo.edge("user")
        assert user is None

    app.run(body)


def test_1_1_optional_edge_traversal(app: App) -> None:
    # "1:1 optional edge traversal" (read.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(STARK)
        photo = ctx.table("photos").insert({"url": "https://a.b", "user": user_id}).get()
        user = photo.edge("user")
        assert user is not None
        assert user.name == "Stark"
        photo_from_user = user.edge("photo")
        assert photo_from_user is not None
        assert photo_from_user.url == "https://a.b"

    app.run(body)


def test_1_1_edge_to_storage_traversal(app: App) -> None:
    # "1:1 edge to _storage traversal" (read.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(STARK)
        file_id = new_file_id(ctx)
        headshot = (
            ctx.table("headshots").insert({"taken": "2024-11-09", "file_id": file_id, "user_id": user_id}).get()
        )
        metadata = headshot.edge("file")
        assert metadata.size == 2

    app.run(body)


def test_1_1_edge_to_scheduled_functions_traversal(app: App) -> None:
    # "1:1 edge to _scheduled_functions traversal" (read.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(STARK)
        file_id = new_file_id(ctx)
        job_id = ctx.scheduler.run_after(1000, "migrations:users_capitalize_name", {"fn": "boo"})
        headshot = (
            ctx.table("headshots")
            .insert({"taken": "2024-11-09", "file_id": file_id, "job_id": job_id, "user_id": user_id})
            .get()
        )
        metadata = headshot.edge("job")
        assert metadata is not None
        assert metadata.state.kind == "pending"

    app.run(body)


def test_1_many_edge_from_field_end(app: App) -> None:
    # "1:many edge from field end" (read.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(STARK)
        ctx.table("messages").insert({"text": "Hello world", "user_id": user_id})
        first_message_user = ctx.table("messages").first_x().edge("user")
        assert first_message_user.name == "Stark"

    app.run(body)


def test_1_many_optional_edge_missing(app: App) -> None:
    # "1:many optional edge missing" (read.test.ts)
    def body(ctx: Any) -> None:
        photo = ctx.table("photos").insert({"url": "https://a.b"}).get()
        user = photo.edge("owner")
        assert user is None

    app.run(body)


def test_1_many_optional_edge_traversal(app: App) -> None:
    # "1:many optional edge traversal" (read.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(STARK)
        photo = ctx.table("photos").insert({"url": "https://a.b", "owner_id": user_id}).get()
        user = photo.edge("owner")
        assert user is not None
        assert user.name == "Stark"
        photos = user.edge("owned_photos")
        assert len(photos) == 1
        assert photos[0].url == "https://a.b"

    app.run(body)


def test_many_many_symmetric_edge(app: App) -> None:
    # "many:many symmetric edge" (read.test.ts)
    def body(ctx: Any) -> None:
        user1 = ctx.table("users").insert(STARK).get()
        user2 = ctx.table("users").insert(MUSK).get()
        user2.patch({"friends": {"add": [user1._id]}})
        friends = ctx.table("users").first_x().edge("friends")
        assert len(friends) == 1
        assert friends[0].name == "Musk"
        assert friends[0].edge("friends")[0].name == "Stark"

    app.run(body)


def test_get_via_indexed_field(app: App) -> None:
    # "get via indexed field" (read.test.ts)
    def body(ctx: Any) -> None:
        ctx.table("users").insert(STARK)
        user = ctx.table("users").get("email", "tony@stark.com")
        assert user is not None

    app.run(body)


def test_get_via_index_with_non_matching_field_name(app: App) -> None:
    # "get via index with non-matching field name" (read.test.ts)
    def body(ctx: Any) -> None:
        ctx.table("users").insert(STARK)
        user = ctx.table("users").get("legacy_email", "tony@stark.com")
        assert user is not None

    app.run(body)


def test_get_many(app: App) -> None:
    # "getMany" (read.test.ts)
    def body(ctx: Any) -> None:
        ctx.table("users").insert_many([STARK, MUSK])
        users = list(ctx.table("users"))
        specific_users = ctx.table("users").get_many([users[0]._id, users[1]._id])
        assert len(specific_users) == 2
        assert specific_users[0].name == users[0].name
        assert specific_users[1].name == users[1].name

        ctx.table("users").get_x(users[0]._id).delete()

        with_nulls = ctx.table("users").get_many([users[0]._id, users[1]._id])
        assert with_nulls[0] is None
        assert with_nulls[1].name == "Musk"
        assert len(with_nulls) == 2

    app.run(body)


def test_get_many_x(app: App) -> None:
    # "getManyX" (read.test.ts)
    def body(ctx: Any) -> None:
        ctx.table("users").insert_many([STARK, MUSK])
        users = list(ctx.table("users"))
        specific_users = ctx.table("users").get_many_x([users[0]._id, users[1]._id])
        assert len(specific_users) == 2
        assert specific_users[0].name == users[0].name
        assert specific_users[1].name == users[1].name

    app.run(body)


def test_get_many_via_index_with_non_matching_field_name(app: App) -> None:
    # "getMany via index with non-matching field name" (read.test.ts)
    def body(ctx: Any) -> None:
        ctx.table("users").insert(STARK)
        users = ctx.table("users").get_many("legacy_email", ["tony@stark.com"])
        assert len(users) == 1
        assert users[0].name == "Stark"

    app.run(body)


def test_get_many_fails_on_compound_index(app: App) -> None:
    # "getMany fails on compound index" (read.test.ts)
    def body(ctx: Any) -> None:
        ctx.table("posts").insert({"text": "My great video", "type": "video", "num_likes": 4})
        with pytest.raises(EntsError):
            ctx.table("posts").get_many("num_likes_and_type", ["video"])

    app.run(body)


def test_table_using_index(app: App) -> None:
    # "table using index" (read.test.ts)
    def body(ctx: Any) -> None:
        ctx.table("posts").insert_many(
            [
                {"text": "My great video", "type": "video", "num_likes": 4},
                {"text": "My awesome video", "type": "video", "num_likes": 0},
            ]
        )
        first_video_with_more_than_3_likes = ctx.table(
            "posts", "num_likes_and_type", lambda q: q.eq("type", "video").gt("num_likes", 3)
        ).first_x()
        assert first_video_with_more_than_3_likes.text == "My great video"
        assert first_video_with_more_than_3_likes.num_likes == 4
        assert first_video_with_more_than_3_likes.type == "video"

    app.run(body)


def test_cannot_order_by_index_after_using_index(app: App) -> None:
    # "cannot order by index after using index" (read.test.ts)
    def body(ctx: Any) -> None:
        with pytest.raises(EntsError):
            list(ctx.table("users", "height").order("asc", "email"))

    app.run(body)


@pytest.mark.skip(reason="search index: ents has no search indexes")
def test_search() -> None:
    # "search" (read.test.ts): a query of a full-text search index, which ents does not have.
    pass


def test_type_of_ent(app: App) -> None:
    # "type of ent" (read.test.ts)
    def body(ctx: Any) -> None:
        user1 = ctx.table("users").insert(STARK).get()
        user2 = ctx.table("users").insert(MUSK).get()
        user1.patch({"followees": {"add": [user2._id]}})

        some_flag = False
        first_user, second_user = ctx.table("users").take(2)

        user = first_user if some_flag else second_user
        users_first_follower = user.edge("followers")[0]
        assert users_first_follower == first_user

    app.run(body)


def test_map_with_edges(app: App) -> None:
    # "map with edges" (read.test.ts)
    def body(ctx: Any) -> None:
        user1_id = ctx.table("users").insert({**STARK, "height": 3})
        ctx.table("users").insert(MUSK)
        ctx.table("messages").insert({"text": "Hello world", "user_id": user1_id})
        ctx.table("profiles").insert({"bio": "Hello world", "user_id": user1_id})

        users_with_messages_and_profile = ctx.table("users").map(
            lambda user: {
                **user,
                "messages": list(user.edge("messages")),
                "profile": user.edge("profile"),
            }
        )
        assert len(users_with_messages_and_profile) == 2
        assert users_with_messages_and_profile[0]["name"] == "Stark"
        assert len(users_with_messages_and_profile[0]["messages"]) == 1
        assert users_with_messages_and_profile[1]["name"] == "Musk"
        assert len(users_with_messages_and_profile[1]["messages"]) == 0
        # Convex lists a document's keys in sorted order; a Python dict keeps insertion order,
        # which no one relies on, so the keys are compared as a set.
        assert set(users_with_messages_and_profile[0]) == {
            "_creation_time",
            "_id",
            "email",
            "height",
            "name",
            "messages",
            "profile",
        }
        assert users_with_messages_and_profile[0]["profile"].bio == "Hello world"

    app.run(body)


def test_map_with_nested_map(app: App) -> None:
    # "map with nested map" (read.test.ts)
    def body(ctx: Any) -> None:
        user1_id = ctx.table("users").insert({**STARK, "height": 3})
        ctx.table("users").insert(MUSK)
        ctx.table("messages").insert({"text": "Hello world", "user_id": user1_id})

        users_with_message_texts = ctx.table("users").map(
            lambda user: {
                "name": user.name,
                "email": user.email,
                "messages": user.edge("messages").map(lambda message: message.text),
            }
        )
        assert users_with_message_texts == [
            {"name": "Stark", "email": "tony@stark.com", "messages": ["Hello world"]},
            {"name": "Musk", "email": "elon@musk.com", "messages": []},
        ]

    app.run(body)


def test_types_ent(app: App) -> None:
    # "types: Ent" (read.test.ts): a copy of an ent's fields (JS's `{...ent}`, Python's
    # `dict(ent)`) is plain data: its fields are there, its edges are not.
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(STARK)
        ctx.table("messages").insert({"text": "Hello world", "user_id": user_id})

        first_message = ctx.table("messages").first_x()
        message = dict(first_message)
        with pytest.raises(AttributeError):
            message.edge("user")  # type: ignore[attr-defined]
        assert message["text"] == "Hello world"

    app.run(body)


def test_types_ent_writer(app: App) -> None:
    # "types: EntWriter" (read.test.ts): as above, for an ent read in a mutation.
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(STARK)
        ctx.table("messages").insert({"text": "Hello world", "user_id": user_id})

        first_message = ctx.table("messages").first_x()
        message = {**first_message}
        with pytest.raises(AttributeError):
            message.edge("user")  # type: ignore[attr-defined]
        assert message["text"] == "Hello world"

    app.run(body)


def test_edge(app: App) -> None:
    # "edge" (read.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(STARK)
        ctx.table("profiles").insert({"bio": "Hello world", "user_id": user_id})

        first_profile = ctx.table("profiles").first_x()
        user = first_profile.edge("user")
        assert user.name == "Stark"

    app.run(body)


def test_normalize_id(app: App) -> None:
    # "normalizeId" (read.test.ts)
    def body(ctx: Any) -> None:
        ctx.table("users").insert(STARK)

        foo = ctx.table("users").normalize_id("blabla")
        assert foo is None
        id = ctx.table("users").first_x()._id
        id_too = ctx.table("users").normalize_id(id)
        assert id == id_too

    app.run(body)


def test_paginate(app: App) -> None:
    # "paginate" (read.test.ts)
    def body(ctx: Any) -> None:
        ctx.table("users").insert_many([{**STARK, "height": 3}, MUSK])

        paginated_users_by_email = ctx.table("users").order("asc", "email").paginate({"cursor": None, "num_items": 5})
        assert paginated_users_by_email["page"][0].name == "Musk"
        assert paginated_users_by_email["page"][1].name == "Stark"

    app.run(body)


def test_edge_after_edge(app: App) -> None:
    # "edge after edge" (read.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(STARK)
        ctx.table("messages").insert({"text": "Hello world", "user_id": user_id})

        last_message_authors_messages = ctx.table("messages").order("desc").first_x().edge("user").edge("messages")
        assert len(last_message_authors_messages) == 1
        assert last_message_authors_messages[0].text == "Hello world"

    app.run(body)


def test_edge_after_get_x_using_index(app: App) -> None:
    # "edge after getX using index" (read.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(STARK)
        ctx.table("messages").insert({"text": "Hello world", "user_id": user_id})

        messages_by_user = ctx.table("users").get_x("email", "tony@stark.com").edge("messages")
        assert len(messages_by_user) == 1
        assert messages_by_user[0].text == "Hello world"

    app.run(body)


def test_has_many_many_edge(app: App) -> None:
    # "has many:many edge" (read.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(STARK)
        message_id = ctx.table("messages").insert({"text": "Hello world", "user_id": user_id})
        message_id2 = ctx.table("messages").insert({"text": "Hello to another world", "user_id": user_id})
        tag_id = ctx.table("tags").insert({"name": "cool", "messages": [message_id]})
        tag_id2 = ctx.table("tags").insert({"name": "not-cool", "messages": []})
        assert ctx.table("messages").get_x(message_id).edge("tags").has(tag_id) is True
        assert ctx.table("tags").get_x(tag_id).edge("messages").has(message_id) is True
        assert ctx.table("tags").get_x(tag_id2).edge("messages").has(message_id2) is False
        assert ctx.table("messages").get_x(message_id2).edge("tags").has(tag_id2) is False

    app.run(body)


def test_map_many_many_edge(app: App) -> None:
    # "map many:many edge" (read.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(STARK)
        message_id = ctx.table("messages").insert({"text": "Hello world", "user_id": user_id})
        tag_id = ctx.table("tags").insert({"name": "cool", "messages": [message_id]})
        users = ctx.table("tags").get_x(tag_id).edge("messages").map(lambda message: message.edge("user"))
        assert [u.name for u in users] == ["Stark"]

    app.run(body)


def test_paginate_1_many_edge(app: App) -> None:
    # "paginate 1:many edge" (read.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(STARK)
        ctx.table("messages").insert_many(
            [
                {"text": "Hello world", "user_id": user_id},
                {"text": "Wow", "user_id": user_id},
                {"text": "Incredible", "user_id": user_id},
            ]
        )

        first_messages = ctx.table("users").first_x().edge("messages").paginate({"num_items": 2, "cursor": None})
        assert [m.text for m in first_messages["page"]] == ["Hello world", "Wow"]
        assert first_messages["is_done"] is False
        next_messages = (
            ctx.table("users")
            .first_x()
            .edge("messages")
            .paginate({"num_items": 2, "cursor": first_messages["continue_cursor"]})
        )
        assert [m.text for m in next_messages["page"]] == ["Incredible"]
        assert next_messages["is_done"] is True

    app.run(body)


def test_paginate_many_many_edge(app: App) -> None:
    # "paginate many:many edge" (read.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(STARK)
        message_id = ctx.table("messages").insert({"text": "Hello world", "user_id": user_id})
        ctx.table("tags").insert_many(
            [
                {"name": name, "messages": [message_id]}
                for name in ("cool", "funny", "smart", "wonderful", "grose", "wonky")
            ]
        )
        first_tags = ctx.table("messages").first_x().edge("tags").paginate({"num_items": 2, "cursor": None})
        assert [t.name for t in first_tags["page"]] == ["cool", "funny"]
        assert first_tags["is_done"] is False
        next_tags = (
            ctx.table("messages")
            .first_x()
            .edge("tags")
            .paginate({"num_items": 2, "cursor": first_tags["continue_cursor"]})
        )
        assert [t.name for t in next_tags["page"]] == ["smart", "wonderful"]
        assert next_tags["is_done"] is False

    app.run(body)


def test_paginate_many_many_symmetric_edge(app: App) -> None:
    # "paginate many:many symmetric edge" (read.test.ts)
    def body(ctx: Any) -> None:
        user1 = ctx.table("users").insert(STARK).get()
        user2 = ctx.table("users").insert(MUSK).get()
        user2.patch({"friends": {"add": [user1._id]}})
        friends = ctx.table("users").first_x().edge("friends").paginate({"num_items": 5, "cursor": None})
        assert len(friends["page"]) == 1
        assert friends["page"][0].name == "Musk"
        assert friends["is_done"] is True

    app.run(body)


def test_take_many_many_edge(app: App) -> None:
    # "take many:many edge" (read.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(STARK)
        message_id = ctx.table("messages").insert({"text": "Hello world", "user_id": user_id})
        ctx.table("tags").insert_many(
            [{"name": name, "messages": [message_id]} for name in ("cool", "funny", "smart", "wonderful")]
        )
        tags = ctx.table("messages").first_x().edge("tags").take(3)
        assert [t.name for t in tags] == ["cool", "funny", "smart"]

    app.run(body)


def test_take_many_many_symmetric_edge(app: App) -> None:
    # "take many:many symmetric edge" (read.test.ts)
    def body(ctx: Any) -> None:
        user1 = ctx.table("users").insert(STARK).get()
        user2 = ctx.table("users").insert(MUSK).get()
        user2.patch({"friends": {"add": [user1._id]}})
        friends = ctx.table("users").first_x().edge("friends").take(2)
        assert len(friends) == 1
        assert friends[0].name == "Musk"

    app.run(body)


def test_order_many_many_edge(app: App) -> None:
    # "order many:many edge" (read.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(STARK)
        message_id = ctx.table("messages").insert({"text": "Hello world", "user_id": user_id})
        ctx.table("tags").insert_many([{"name": name, "messages": [message_id]} for name in ("cool", "funny")])

        first_tag = ctx.table("messages").first_x().edge("tags").order("desc").first()
        assert first_tag is not None and first_tag.name == "funny"
        first_x_tag = ctx.table("messages").first_x().edge("tags").order("desc").first_x()
        assert first_x_tag.name == "funny"
        with pytest.raises(NotUniqueError):
            ctx.table("messages").first_x().edge("tags").order("desc").unique()
        with pytest.raises(NotUniqueError):
            ctx.table("messages").first_x().edge("tags").order("desc").unique_x()

    app.run(body)


def test_many_many_edge_ids_only(app: App) -> None:
    # "many:many edge ids only" (read.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(STARK)
        message_id = ctx.table("messages").insert({"text": "Hello world", "user_id": user_id})
        message_id2 = ctx.table("messages").insert({"text": "Nada tags", "user_id": user_id})
        message_id3 = ctx.table("messages").insert({"text": "Nada tags", "user_id": user_id})
        tag_ids = ctx.table("tags").insert_many(
            [
                {"name": "cool", "messages": [message_id, message_id3]},
                {"name": "funny", "messages": [message_id]},
                {"name": "smart", "messages": [message_id]},
                {"name": "wonderful", "messages": [message_id]},
            ]
        )
        message1 = ctx.table("messages").get_x(message_id)
        message2 = ctx.table("messages").get_x(message_id2)
        message3 = ctx.table("messages").get_x(message_id3)

        def tag_name(id: str) -> str:
            name: str = ctx.table("tags").get_x(id).name
            return name

        assert list(message1.edge("tags").ids().take(3)) == tag_ids[:3]
        assert message1.edge("tags").ids().take(3).map(tag_name) == ["cool", "funny", "smart"]
        assert message1.edge("tags").ids().first() == tag_ids[0]
        assert message1.edge("tags").ids().first_x() == tag_ids[0]
        assert message1.edge("tags").order("desc").ids().first() == tag_ids[-1]
        assert message2.edge("tags").ids().first() is None
        with pytest.raises(EntsError, match="Expected at least one ID, but got none"):
            message2.edge("tags").ids().first_x()
        assert message3.edge("tags").ids().unique() == tag_ids[0]
        assert message3.edge("tags").ids().unique_x() == tag_ids[0]
        assert message2.edge("tags").ids().unique() is None
        with pytest.raises(EntsError, match="Expected one unique ID, but got none"):
            message2.edge("tags").ids().unique_x()
        assert message1.edge("tags").ids().map(tag_name) == ["cool", "funny", "smart", "wonderful"]
        page = message1.edge("tags").ids().paginate({"num_items": 2, "cursor": None}).map(tag_name)
        assert page["page"] == ["cool", "funny"]

    app.run(body)


def test_table_collect(app: App) -> None:
    # "table collect" (read.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(STARK)
        ctx.table("messages").insert({"text": "Hello world", "user_id": user_id})

        messages = list(ctx.table("messages"))
        assert len(messages) == 1
        assert messages[0].text == "Hello world"

    app.run(body)


def test_get(app: App) -> None:
    # "get" (read.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(STARK)
        ctx.table("messages").insert({"text": "Hello world", "user_id": user_id})

        id = ctx.table("messages").first_x()._id
        message = ctx.table("messages").get(id)
        assert message is not None
        assert message.text == "Hello world"

    app.run(body)


def test_first_x(app: App) -> None:
    # "firstX" (read.test.ts, the first of two tests with this title)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(STARK)
        ctx.table("messages").insert({"text": "Hello world", "user_id": user_id})

        message = ctx.table("messages").first_x()
        assert message.text == "Hello world"

    app.run(body)


def test_first_x_doc(app: App) -> None:
    # "firstX" (read.test.ts, the second of two tests with this title: `doc()`)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(STARK)
        ctx.table("messages").insert({"text": "Hello world", "user_id": user_id})

        message = ctx.table("messages").first_x()
        message_doc = message.doc()
        assert message_doc["text"] == "Hello world"
        # The original calls `messageDoc.edge("user")` only to check that TypeScript refuses
        # it (documents have no methods). In JS the object still has the method at run time;
        # in Python `doc()` is a plain dict, so it has none.
        assert isinstance(message_doc, dict)
        assert not hasattr(message_doc, "edge")

    app.run(body)


def test_storage(app: App) -> None:
    # "_storage" (read.test.ts)
    def body(ctx: Any) -> None:
        files = list(ctx.table.system("_storage"))
        assert len(files) == 0

    app.run(body)


def test_scheduled_functions_get(app: App) -> None:
    # "_scheduled_functions get" (read.test.ts); the App's clock is a FakeClock (vi.useFakeTimers)
    def body(ctx: Any) -> None:
        id = ctx.scheduler.run_after(10000, "migrations:users_capitalize_name", {"fn": "Foo"})

        scheduled = ctx.table.system("_scheduled_functions").get(id)
        assert scheduled is not None

        ctx.scheduler.cancel(id)

    app.run(body)


def test_get_via_index_on_system_tables(app: App) -> None:
    # "get via index on system tables" (read.test.ts)
    def body(ctx: Any) -> None:
        id = ctx.scheduler.run_after(10000, "migrations:users_capitalize_name", {"fn": "Foo"})
        job = ctx.table.system("_scheduled_functions").get_x(id)

        scheduled = ctx.table.system("_scheduled_functions").get("by_id", job._id)
        assert scheduled is not None

        ctx.scheduler.cancel(id)

    app.run(body)


def test_get_many_via_index_on_system_tables(app: App) -> None:
    # "getMany via index on system tables" (read.test.ts)
    def body(ctx: Any) -> None:
        id = ctx.scheduler.run_after(10000, "migrations:users_capitalize_name", {"fn": "Foo"})
        job = ctx.table.system("_scheduled_functions").get_x(id)

        scheduled = ctx.table.system("_scheduled_functions").get_many("by_id", [job._id])
        assert len(scheduled) == 1
        assert scheduled[0] is not None

        ctx.scheduler.cancel(id)

    app.run(body)


def test_union_shape(make_app: Any) -> None:
    # "union shape" (read.test.ts)
    app = ents_app(make_app, build_schema(with_imported=True))

    def body(ctx: Any) -> None:
        ent = ctx.table("imported").insert({"id": "hey", "type": "num", "num": 1}).get()
        assert ent.id == "hey"
        assert ent.type == "num"
        if ent.type == "num":
            assert ent.num == 1
        else:
            assert ent.str == "hello"

    app.run(body)


def test_union_shape_index(make_app: Any) -> None:
    # "union shape index" (read.test.ts)
    app = ents_app(make_app, build_schema(with_imported=True))

    def body(ctx: Any) -> None:
        ctx.table("imported").insert({"id": "hey", "type": "num", "num": 1}).get()
        ctx.table("imported", "type_and_id", lambda q: q.eq("type", "num").eq("id", "hey")).first_x()

    app.run(body)
