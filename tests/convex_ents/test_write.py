"""Convex Ents' write tests (``test/convex/write.test.ts``), ported.

Each test runs its body in one mutation (``app.run``), as the original runs it inside one
``t.run``. The original's title is in each test's first comment line.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from ents import App, EntsError, UniqueConstraintError
from tests.convex_ents.conftest import ents_app, new_file_id
from tests.convex_ents.schema import build_schema
from tests.schemas import SqlLog

GATES = {"name": "Gates", "email": "bill@gates.com"}
JOBS = {"name": "Jobs", "email": "steve@jobs.com"}
STARK = {"name": "Stark", "email": "tony@stark.com"}


def test_unique_field_check(app: App) -> None:
    # "unique field check" (write.test.ts)
    def body(ctx: Any) -> None:
        new_user_id = ctx.table("users").insert(GATES)
        with pytest.raises(
            UniqueConstraintError,
            match=re.escape('In table "users" cannot create a duplicate document with field "email" of value `bill@gates.com`'),
        ):
            ctx.table("users").insert({"name": "Mellinda", "email": "bill@gates.com"})
        ctx.table("users").get_x(new_user_id).delete()

    app.run(body)


def test_uniqueness_check(app: App) -> None:
    # "uniqueness check" (write.test.ts)
    def body(ctx: Any) -> None:
        new_user_id = ctx.table("users").insert(GATES)
        new_profile_id = ctx.table("profiles").insert({"bio": "Hello world", "user_id": new_user_id})
        with pytest.raises(
            UniqueConstraintError,
            match=re.escape('In table "profiles" cannot create a duplicate 1:1 edge "user"'),
        ):
            ctx.table("profiles").insert({"bio": "Better world", "user_id": new_user_id})
        ctx.table("profiles").get_x(new_profile_id).delete()
        ctx.table("users").get_x(new_user_id).delete()

    app.run(body)


def test_insert_1_many_from_ref_side(app: App) -> None:
    # "insert 1:many from ref side" (write.test.ts)
    def body(ctx: Any) -> None:
        some_user_id = ctx.table("users").insert(JOBS)
        new_message_id = ctx.table("messages").insert({"text": "Hello world", "user_id": some_user_id})
        new_user_id = ctx.table("users").insert({**GATES, "messages": [new_message_id]})
        updated_message = ctx.table("messages").get_x(new_message_id)
        assert updated_message.user_id == new_user_id
        ctx.table("users").get_x(new_user_id).delete()
        # Messages get deleted automatically via cascading delete:
        deleted_message = ctx.table("messages").get(new_message_id)
        assert deleted_message is None

    app.run(body)


def test_insert_and_delete_many_many(app: App) -> None:
    # "insert and delete many:many" (write.test.ts)
    def body(ctx: Any) -> None:
        some_user_id = ctx.table("users").insert(GATES)
        new_message_id = ctx.table("messages").insert({"text": "Hello world", "user_id": some_user_id})
        new_tag = ctx.table("tags").insert({"name": "Blue", "messages": [new_message_id]}).get()
        assert len(new_tag.edge("messages")) == 1

        message_tags = ctx.table("messages").get_x(new_message_id).edge("tags")
        assert len(message_tags) == 1
        assert message_tags[0].name == "Blue"

        # Test the edge deletion behavior
        assert len(ctx.db.query("messages_to_tags").collect()) == 1
        ctx.table("messages").get_x(new_message_id).delete()
        assert len(ctx.db.query("messages_to_tags").collect()) == 0

    app.run(body)


def test_insert_and_delete_many_many_duplicates(app: App) -> None:
    # "insert and delete many:many duplicates" (write.test.ts)
    def body(ctx: Any) -> None:
        some_user_id = ctx.table("users").insert(GATES)
        new_message_id = ctx.table("messages").insert({"text": "Hello world", "user_id": some_user_id})
        ctx.table("tags").insert({"name": "Blue", "messages": [new_message_id, new_message_id]}).get()

        assert len(ctx.db.query("messages_to_tags").collect()) == 1

    app.run(body)


def test_patch_to_remove_field(app: App) -> None:
    # "patch to remove field" (write.test.ts); Convex removes a field patched to `undefined`,
    # Python has no undefined: ents removes an optional field patched to None.
    def body(ctx: Any) -> None:
        some_user_id = ctx.table("users").insert({**GATES, "height": 1.8})
        assert ctx.table("users").get_x(some_user_id).height == 1.8

        ctx.table("users").get_x(some_user_id).patch({"height": None})
        assert ctx.table("users").get_x(some_user_id).height is None

    app.run(body)


def test_patch_to_remove_many_many(app: App) -> None:
    # "patch to remove many:many" (write.test.ts)
    def body(ctx: Any) -> None:
        some_user_id = ctx.table("users").insert(GATES)
        new_message_id = ctx.table("messages").insert({"text": "Hello world", "user_id": some_user_id})
        new_tag = ctx.table("tags").insert({"name": "Blue", "messages": [new_message_id]}).get()

        assert len(ctx.db.query("messages_to_tags").collect()) == 1
        assert len(ctx.table("tags").get_x(new_tag._id).edge("messages")) == 1
        assert len(ctx.table("messages").get_x(new_message_id).edge("tags")) == 1

        new_tag.patch({"messages": {"remove": [new_message_id]}})

        # Test the edge deletion behavior
        assert len(ctx.db.query("messages_to_tags").collect()) == 0
        assert len(ctx.table("tags").get_x(new_tag._id).edge("messages")) == 0
        assert len(ctx.table("messages").get_x(new_message_id).edge("tags")) == 0

    app.run(body)


def test_patch_to_remove_many_many_symmetric(app: App) -> None:
    # "patch to remove many:many symmetric" (write.test.ts)
    def body(ctx: Any) -> None:
        friend_id = ctx.table("users").insert(JOBS)
        new_user_id = ctx.table("users").insert({**GATES, "friends": [friend_id]})

        assert len(ctx.db.query("users_friends").collect()) == 2
        assert len(ctx.table("users").get_x(friend_id).edge("friends")) == 1
        assert len(ctx.table("users").get_x(new_user_id).edge("friends")) == 1

        ctx.table("users").get_x(new_user_id).patch({"friends": {"remove": [friend_id]}})

        # Test the edge deletion behavior
        assert len(ctx.db.query("users_friends").collect()) == 0
        assert len(ctx.table("users").get_x(friend_id).edge("friends")) == 0
        assert len(ctx.table("users").get_x(new_user_id).edge("friends")) == 0

    app.run(body)


def test_replace_to_remove_many_many(app: App) -> None:
    # "replace to remove many:many" (write.test.ts)
    def body(ctx: Any) -> None:
        some_user_id = ctx.table("users").insert(GATES)
        new_message_id = ctx.table("messages").insert({"text": "Hello world", "user_id": some_user_id})
        new_tag = ctx.table("tags").insert({"name": "Blue", "messages": [new_message_id]}).get()

        new_tag.replace({"name": "Green", "messages": []})

        # Test the edge deletion behavior
        assert len(ctx.db.query("messages_to_tags").collect()) == 0

    app.run(body)


def test_replace_only_patches_edges(app: App) -> None:
    # "replace only patches edges" (write.test.ts)
    def body(ctx: Any) -> None:
        some_user_id = ctx.table("users").insert(GATES)
        new_message_id = ctx.table("messages").insert({"text": "Hello world", "user_id": some_user_id})
        new_tag = ctx.table("tags").insert({"name": "Blue", "messages": [new_message_id]}).get()

        new_tag.replace({"name": "Green"})

        # Test the edge is not deleted
        assert len(ctx.db.query("messages_to_tags").collect()) == 1

    app.run(body)


def test_patch_doesnt_readd_many_many_edge(app: App) -> None:
    # "patch doesn't readd many:many edge" (write.test.ts)
    def body(ctx: Any) -> None:
        some_user_id = ctx.table("users").insert(GATES)
        new_message_id = ctx.table("messages").insert({"text": "Hello world", "user_id": some_user_id})
        new_tag = ctx.table("tags").insert({"name": "Blue", "messages": [new_message_id]}).get()

        new_tag.patch({"messages": {"add": [new_message_id]}})

        assert len(ctx.db.query("messages_to_tags").collect()) == 1

    app.run(body)


def test_patch_can_readd_the_same_1_1_edge(app: App) -> None:
    # "patch can readd the same 1:1 edge" (write.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(GATES)
        profile = ctx.table("profiles").insert({"bio": "Hello world", "user_id": user_id}).get()

        profile.patch({"user_id": user_id})

    app.run(body)


def test_symmetric_many_many(app: App) -> None:
    # "symmetric many:many" (write.test.ts)
    def body(ctx: Any) -> None:
        friend_id = ctx.table("users").insert(JOBS)
        friend = ctx.table("users").get_x(friend_id)
        new_user_id = ctx.table("users").insert({**GATES, "friends": [friend_id]})
        new_user = ctx.table("users").get_x(new_user_id)
        new_user_friends = new_user.edge("friends")
        assert len(new_user_friends) == 1
        some_user_friends = friend.edge("friends")
        assert len(some_user_friends) == 1
        assert new_user_friends[0].name == "Jobs"

        # Test correct deletion
        updated_friends = new_user.replace({**GATES, "friends": []}).get().edge("friends")
        assert len(updated_friends) == 0
        updated_some_user_friends = friend.edge("friends")
        assert len(updated_some_user_friends) == 0

        friend.delete()
        new_user.delete()

    app.run(body)


def test_patch_1_1_from_ref_side(app: App) -> None:
    # "patch 1:1 from ref side" (write.test.ts): not possible, because the required side of
    # the edge cannot be removed.
    def body(ctx: Any) -> None:
        some_user_id = ctx.table("users").insert(JOBS)
        some_profile = ctx.table("profiles").insert({"bio": "Hello world", "user_id": some_user_id})

        with pytest.raises(EntsError):
            ctx.table("users").get_x(some_user_id).patch({"profile": some_profile})

    app.run(body)


def test_patch_1_many_from_ref_side(app: App) -> None:
    # "patch 1:many from ref side" (write.test.ts): not possible, because the required side
    # of the edge cannot be removed. ("message" is neither a field nor an edge of users.)
    def body(ctx: Any) -> None:
        some_user_id = ctx.table("users").insert(JOBS)
        message = ctx.table("messages").insert({"text": "Hello world", "user_id": some_user_id})

        with pytest.raises(EntsError):
            ctx.table("users").get_x(some_user_id).patch({"message": message})

    app.run(body)


def test_replace_1_1_from_ref_side(app: App) -> None:
    # "replace 1:1 from ref side" (write.test.ts). The original passes `someProfile._id` where
    # `someProfile` is already an id, i.e. `undefined`, which Convex drops: the replace is of
    # the user's fields alone, and the profile stays the user's.
    def body(ctx: Any) -> None:
        some_user_id = ctx.table("users").insert(JOBS)
        some_profile = ctx.table("profiles").insert({"bio": "Hello world", "user_id": some_user_id})

        ctx.table("users").get_x(some_user_id).replace({"name": "foo", "email": "bar"})

        assert ctx.table("users").get_x(some_user_id).name == "foo"
        assert ctx.table("profiles").get_x(some_profile).user_id == some_user_id

    app.run(body)


def test_replace_1_many_from_ref_side(app: App) -> None:
    # "replace 1:many from ref side" (write.test.ts). As above, the original's `message._id`
    # is `undefined`, which Convex drops: the replace is of the fields alone, and the message
    # stays the user's.
    def body(ctx: Any) -> None:
        some_user_id = ctx.table("users").insert(JOBS)
        message = ctx.table("messages").insert({"text": "Hello world", "user_id": some_user_id})

        ctx.table("users").get_x(some_user_id).replace({"name": "foo", "email": "bar"})

        assert ctx.table("users").get_x(some_user_id).email == "bar"
        assert ctx.table("messages").get_x(message).user_id == some_user_id

    app.run(body)


def test_simple_patch(app: App) -> None:
    # "simple patch" (write.test.ts)
    def body(ctx: Any) -> None:
        new_user = ctx.table("users").insert(GATES).get()
        updated_user = new_user.patch({"name": "Bill"}).get()
        assert updated_user.name == "Bill"
        assert updated_user.email == "bill@gates.com"

    app.run(body)


def test_many_many_edges_configuration(app: App) -> None:
    # "many:many edges configuration" (write.test.ts)
    def body(ctx: Any) -> None:
        ctx.table("posts").insert({"text": "My great post"})
        post_id1, post_id2 = ctx.table("posts").insert_many(
            [
                {"text": "My great video", "type": "video", "num_likes": 4},
                {"text": "My awesome video", "type": "video", "num_likes": 0},
            ]
        )
        attachment_id1, attachment_id2 = ctx.table("attachments").insert_many(
            [
                {"origin_id": post_id1, "copy_id": post_id2, "share_id": post_id1, "in": [post_id1, post_id2]},
                {"origin_id": post_id2, "copy_id": post_id1, "share_id": post_id1},
            ]
        )
        ctx.table("attachments").get_x(attachment_id1).patch(
            {"siblings": {"add": [attachment_id2]}, "replacing": {"add": [attachment_id2]}}
        )
        attachment1 = ctx.table("attachments").get_x(attachment_id1)
        assert attachment1.edge("origin")._id == post_id1
        assert attachment1.edge("copy")._id == post_id2
        assert attachment1.edge("share")._id == post_id1
        assert [ent._id for ent in attachment1.edge("in")] == [post_id1, post_id2]
        assert [ent._id for ent in attachment1.edge("siblings")] == [attachment_id2]
        assert [ent._id for ent in attachment1.edge("replacing")] == [attachment_id2]

    app.run(body)


def test_write_after_write(app: App) -> None:
    # "write after write" (write.test.ts)
    def body(ctx: Any) -> None:
        user = ctx.table("users").insert(GATES).get()
        updated_user = user.patch({"name": "Bill"}).get()
        assert updated_user.name == "Bill"

    app.run(body)


def test_1_1_edge_write_from_required_end(app: App) -> None:
    # "1:1 edge write from required end" (write.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(GATES)
        profile_id = ctx.table("profiles").insert({"bio": "Hello world", "user_id": user_id})
        ctx.table("profiles").get_x(profile_id).edge("user").patch({"name": "Bill"})
        assert ctx.table("users").get_x(user_id).name == "Bill"

    app.run(body)


def test_1_1_edge_write_from_optional_end(app: App) -> None:
    # "1:1 edge write from optional end" (write.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(GATES)
        profile_id = ctx.table("profiles").insert({"bio": "Hello world", "user_id": user_id})
        ctx.table("users").get_x(user_id).edge_x("profile").patch({"bio": "Big boss"})
        assert ctx.table("profiles").get_x(profile_id).bio == "Big boss"

    app.run(body)


def test_1_1_edge_write_loaded(app: App) -> None:
    # "1:1 edge write loaded" (write.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(GATES)
        profile = ctx.table("profiles").insert({"bio": "Hello world", "user_id": user_id}).get()
        profile.edge("user").patch({"name": "Bill"})
        assert ctx.table("users").get_x(user_id).name == "Bill"

    app.run(body)


def test_1_1_optional_edge_not_needed(app: App) -> None:
    # "1:1 optional edge not needed" (write.test.ts)
    def body(ctx: Any) -> None:
        photo_id = ctx.table("photos").insert({"url": "https://a.b"})
        assert ctx.table("photos").get_x(photo_id).url == "https://a.b"

    app.run(body)


def test_1_1_optional_edge_provided(app: App) -> None:
    # "1:1 optional edge provided" (write.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(GATES)
        photo_id = ctx.table("photos").insert({"url": "https://a.b", "user": user_id})
        assert ctx.table("photos").get_x(photo_id).user == user_id

    app.run(body)


def test_1_1_edge_to_storage(app: App) -> None:
    # "1:1 edge to _storage" (write.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(GATES)
        file_id = new_file_id(ctx)
        headshot_id = ctx.table("headshots").insert({"taken": "2024-11-09", "file_id": file_id, "user_id": user_id})
        assert ctx.table("headshots").get_x(headshot_id).file_id == file_id

    app.run(body)


def test_1_many_edge_write(app: App) -> None:
    # "1:many edge write" (write.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(GATES)
        message_id = ctx.table("messages").insert({"text": "Hello world", "user_id": user_id})

        ctx.table("messages").get_x(message_id).edge("user").patch({"name": "Bill"})
        assert ctx.table("users").get_x(user_id).name == "Bill"

    app.run(body)


def test_1_many_edge_write_loaded(app: App) -> None:
    # "1:many edge write loaded" (write.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(GATES)
        message = ctx.table("messages").insert({"text": "Hello world", "user_id": user_id}).get()

        message.edge("user").patch({"name": "Bill"})
        assert ctx.table("users").get_x(user_id).name == "Bill"

    app.run(body)


def test_edge_write_in_pagination(app: App) -> None:
    # "edge write in pagination" (write.test.ts)
    def body(ctx: Any) -> None:
        user = ctx.table("users").insert(GATES).get()
        ctx.table("messages").insert({"text": "Hello world", "user_id": user._id})

        user.edge("messages").paginate({"cursor": None, "num_items": 5}).map(
            lambda message: message.edge("user").patch({"name": "Bill"})
        )
        assert ctx.table("users").get_x(user._id).name == "Bill"

    app.run(body)


def test_1_many_optional_edge_not_needed(app: App) -> None:
    # "1:many optional edge not needed" (write.test.ts)
    def body(ctx: Any) -> None:
        photo_id = ctx.table("photos").insert({"url": "https://a.b"})
        assert ctx.table("photos").get_x(photo_id).url == "https://a.b"

    app.run(body)


def test_1_many_optional_edge_provided(app: App) -> None:
    # "1:many optional edge provided" (write.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(GATES)
        photo_id = ctx.table("photos").insert({"url": "https://a.b", "owner_id": user_id})
        assert ctx.table("photos").get_x(photo_id).owner_id == user_id

    app.run(body)


def test_write_from_indexed_get(app: App) -> None:
    # "write from indexed get" (write.test.ts)
    def body(ctx: Any) -> None:
        ctx.table("users").insert({**GATES, "height": 3})
        user = ctx.table("users").get("height", 3)
        updated_user = user.patch({"height": 4}).get()

        assert updated_user.height == 4

    app.run(body)


def test_write_after_many_many_edge_traversal(app: App) -> None:
    # "write after many:many edge traversal" (write.test.ts)
    def body(ctx: Any) -> None:
        user = ctx.table("users").insert(GATES).get()
        new_message_id = ctx.table("messages").insert({"text": "Hello world", "user_id": user._id})
        ctx.table("tags").insert({"name": "Blue", "messages": [new_message_id]})

        tags = user.edge("messages").first().edge("tags")
        updated_tag = tags[0].patch({"name": "Green"}).get()

        assert updated_tag.name == "Green"

    app.run(body)


def test_edge_write_doesnt_trigger_document_patch(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    # "edge write doesn't trigger document patch" (write.test.ts). The original spies on
    # `ctx.db.patch`; here the SQL is recorded: adding an edge must not UPDATE the message.
    log = SqlLog(monkeypatch)

    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(GATES)
        message_id = ctx.table("messages").insert({"text": "Hello world", "user_id": user_id})
        tag_id = ctx.table("tags").insert({"name": "Blue"})

        log.on = True
        ctx.table("messages").get_x(message_id).patch({"tags": {"add": [tag_id]}})
        log.on = False

        updates = [s for s in log.starting_with("UPDATE") if re.match(r'\s*UPDATE\s+"?messages"?\s', s)]
        assert updates == []
        assert ctx.table("messages").get_x(message_id).edge("tags").first_x().name == "Blue"

    app.run(body)


def test_cascading_deletes(app: App) -> None:
    # "cascading deletes" (write.test.ts)
    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(JOBS)
        message_id = ctx.table("messages").insert({"text": "Hello world", "user_id": user_id})
        message_detail_id = ctx.table("message_details").insert({"value": "Some detail", "message_id": message_id})

        ctx.table("users").get_x(user_id).delete()

        deleted_message = ctx.table("messages").get(message_id)
        assert deleted_message is None
        deleted_message_detail = ctx.table("message_details").get(message_detail_id)
        assert deleted_message_detail is None

    app.run(body)


def test_hard_deletion_through_field_edge(make_app: Any) -> None:
    # "hard deletion through field edge" (write.test.ts); the App's clock is a FakeClock
    app = ents_app(make_app, build_schema(soft_detail=True))

    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(STARK)
        file_id = new_file_id(ctx)
        job_id = ctx.scheduler.run_after(1000, "migrations:users_capitalize_name", {"fn": "boo"})
        headshot_detail_id = ctx.table("headshot_details").insert({})
        headshot_id = ctx.table("headshots").insert(
            {
                "taken": "2024-11-09",
                "file_id": file_id,
                "job_id": job_id,
                "detail_id": headshot_detail_id,
                "user_id": user_id,
            }
        )
        assert ctx.table.system("_storage").get(file_id) is not None
        assert ctx.table("headshot_details").get(headshot_detail_id) is not None
        job = ctx.table.system("_scheduled_functions").get(job_id)
        assert job is not None
        assert job.state.kind == "pending"

        ctx.table("users").get_x(user_id).delete()

        assert ctx.table("headshots").get(headshot_id) is None
        assert ctx.table.system("_storage").get(file_id) is None
        assert ctx.table("headshot_details").get(headshot_detail_id) is None
        job = ctx.table.system("_scheduled_functions").get(job_id)
        assert job is not None
        assert job.state.kind == "canceled"

    app.run(body)


def test_soft_deletion_through_field_edge(make_app: Any) -> None:
    # "soft deletion through field edge" (write.test.ts)
    app = ents_app(make_app, build_schema(soft_detail=True))

    def body(ctx: Any) -> None:
        user_id = ctx.table("users").insert(STARK)
        file_id = new_file_id(ctx)
        headshot_detail_id = ctx.table("headshot_details").insert({})
        headshot_id = ctx.table("headshots").insert(
            {"taken": "2024-11-09", "file_id": file_id, "detail_id": headshot_detail_id, "user_id": user_id}
        )

        ctx.table("headshots").get_x(headshot_id).delete()

        headshot = ctx.table("headshots").get_x(headshot_id)
        assert headshot.deletion_time is not None
        assert ctx.table.system("_storage").get(file_id) is not None
        headshot_detail = ctx.table("headshot_details").get(headshot_detail_id)
        assert headshot_detail is not None
        assert headshot_detail.deletion_time is not None

    app.run(body)
