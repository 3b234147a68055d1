"""Deletion: Convex Ents' cascade rules, soft deletion and scheduled deletion."""

from __future__ import annotations

from typing import Any

import pytest

from ents import EntNotFoundError, define_ent, define_ent_schema
from tests.schemas import SqlLog

ONE_DAY = 24 * 3600 * 1000


def cascade_schema() -> Any:
    return define_ent_schema(
        {
            "users": define_ent({"name": str})
            .edges("messages", ref=True)
            .edge("profile", ref=True)
            .edge("avatar", ref=True)
            .edges("notes", ref=True)
            .edges("friends", to="users")
            .edges("followers", to="users", inverse="followees"),
            # 1:1, required, and deleting the profile deletes the user too
            "profiles": define_ent({"bio": str}).edge("user", deletion="hard"),
            # 1:1 with an optional stored end
            "avatars": define_ent({"url": str}).edge("user", optional=True),
            # 1:many with an optional stored end
            "notes": define_ent({"text": str}).edge("user", optional=True),
            "messages": define_ent({"text": str}).edge("user").edges("tags").edges("comments", ref=True),
            "comments": define_ent({"text": str}).edge("message"),
            "tags": define_ent({"name": str}).edges("messages"),
            "answers": define_ent({"question": str})
            .edge("action", to="_scheduled_functions", deletion="hard")
            .edge("log", to="_scheduled_functions"),
            "photos": define_ent({}).edge("file", to="_storage", deletion="hard"),
            "drafts": define_ent({}).edge("file", to="_storage"),
        }
    )


def soft_schema() -> Any:
    return define_ent_schema(
        {
            "teams": define_ent({"name": str})
            .deletion("soft")
            .edges("members", ref=True, deletion="soft")
            .edges("projects", ref=True)
            .edges("labels")
            .edge("charter", ref=True, deletion="soft"),
            "members": define_ent({"name": str}).deletion("soft").edge("team").edges("badges", ref=True, deletion="soft"),
            "badges": define_ent({"name": str}).deletion("soft").edge("member"),
            "charters": define_ent({"text": str}).deletion("soft").edge("team"),
            "projects": define_ent({"name": str}).deletion("soft").edge("team"),
            "labels": define_ent({"name": str}).edges("teams"),
            "orgs": define_ent({"name": str}).deletion("scheduled", delay_ms=ONE_DAY).edges("depts", ref=True),
            "depts": define_ent({"name": str}).edge("org").edges("staff", ref=True),
            "staff": define_ent({"name": str}).edge("dept"),
        }
    )


def count(app: Any, table: str) -> int:
    return app.run(lambda ctx: ctx._tx.fetchone(f'SELECT COUNT(*) FROM "{table}"')[0])  # type: ignore[no-any-return]


@pytest.fixture
def app(make_app: Any) -> Any:
    return make_app(cascade_schema())


@pytest.fixture
def world(app: Any) -> dict[str, Any]:
    def seed(ctx: Any) -> dict[str, Any]:
        ada, bob, cy = ctx.table("users").insert_many([{"name": "ada"}, {"name": "bob"}, {"name": "cy"}])
        red, blue = ctx.table("tags").insert_many([{"name": "red"}, {"name": "blue"}])
        ada_msgs = ctx.table("messages").insert_many(
            [{"text": f"a{i}", "user_id": ada, "tags": [red, blue]} for i in range(3)]
        )
        bob_msg = ctx.table("messages").insert({"text": "b", "user_id": bob, "tags": [red]})
        comments = ctx.table("comments").insert_many(
            [{"text": "c1", "message_id": ada_msgs[0]}, {"text": "c2", "message_id": bob_msg}]
        )
        profile = ctx.table("profiles").insert({"bio": "ada's", "user_id": ada})
        bob_profile = ctx.table("profiles").insert({"bio": "bob's", "user_id": bob})
        avatar = ctx.table("avatars").insert({"url": "a.png", "user_id": ada})
        notes = ctx.table("notes").insert_many([{"text": "n1", "user_id": ada}, {"text": "n2", "user_id": bob}])
        ctx.table("users").get_x(ada).patch({"friends": {"add": [bob, cy]}, "followers": {"add": [bob]}})
        ctx.table("users").get_x(cy).patch({"followers": {"add": [ada]}})
        return {
            "ada": ada,
            "bob": bob,
            "cy": cy,
            "red": red,
            "blue": blue,
            "ada_msgs": ada_msgs,
            "bob_msg": bob_msg,
            "comments": comments,
            "profile": profile,
            "bob_profile": bob_profile,
            "avatar": avatar,
            "notes": notes,
        }

    return dict(app.run(seed))


def exists(app: Any, table: str, id: str) -> bool:
    return app.run(lambda ctx: ctx.table(table).get(id) is not None)  # type: ignore[no-any-return]


def test_deleting_an_ent_cascades_along_required_edges(app: Any, world: dict[str, Any]) -> None:
    app.run(lambda ctx: ctx.table("users").get_x(world["ada"]).delete())
    assert not exists(app, "users", world["ada"])
    # 1:many required: ada's messages are gone, and recursively their comments
    assert all(not exists(app, "messages", m) for m in world["ada_msgs"])
    assert not exists(app, "comments", world["comments"][0])
    # 1:1 required: the profile is gone
    assert not exists(app, "profiles", world["profile"])
    # others are untouched
    assert exists(app, "users", world["bob"]) and exists(app, "messages", world["bob_msg"])
    assert exists(app, "comments", world["comments"][1]) and exists(app, "profiles", world["bob_profile"])


def test_optional_field_edges_cascade_like_required_ones(app: Any, world: dict[str, Any]) -> None:
    """Convex Ents' writer deletes the ents whose edge points at a deleted ent whether
    that edge is required or optional; it never unsets the field."""
    app.run(lambda ctx: ctx.table("users").get_x(world["ada"]).delete())
    # 1:1 with an optional stored end: ada's avatar is gone
    assert not exists(app, "avatars", world["avatar"])
    # 1:many with an optional stored end: ada's note is gone, bob's stays
    assert not exists(app, "notes", world["notes"][0])
    assert app.run(lambda ctx: ctx.table("notes").get_x(world["notes"][1]).user_id) == world["bob"]
    # an ent whose optional edge is unset is not touched
    lone = app.run(lambda ctx: ctx.table("notes").insert({"text": "lone"}))
    app.run(lambda ctx: ctx.table("users").get_x(world["bob"]).delete())
    assert not exists(app, "notes", world["notes"][1]) and exists(app, "notes", lone)


def test_optional_1_to_1_edge_is_unique_when_set(app: Any, world: dict[str, Any]) -> None:
    from ents import UniqueConstraintError

    def body(ctx: Any) -> None:
        ctx.table("avatars").insert_many([{"url": "x.png"}, {"url": "y.png"}])  # unset twice: fine
        with pytest.raises(UniqueConstraintError, match='1:1 edge "user"'):
            ctx.table("avatars").insert({"url": "z.png", "user_id": world["ada"]})
        bob_avatar = ctx.table("avatars").insert({"url": "b.png", "user_id": world["bob"]})
        assert ctx.table("users").get_x(world["bob"]).edge("avatar")._id == bob_avatar
        assert ctx.table("users").get_x(world["cy"]).edge("avatar") is None

    app.run(body)


def test_many_to_many_rows_are_removed_but_not_the_other_ents(app: Any, world: dict[str, Any]) -> None:
    assert count(app, "messages_to_tags") == 7
    app.run(lambda ctx: ctx.table("messages").get_x(world["ada_msgs"][0]).delete())
    assert count(app, "messages_to_tags") == 5
    app.run(lambda ctx: ctx.table("tags").get_x(world["red"]).delete())
    assert count(app, "messages_to_tags") == 2

    def read(ctx: Any) -> None:
        assert [t.name for t in ctx.table("messages").get_x(world["ada_msgs"][1]).edge("tags")] == ["blue"]
        assert ctx.table("messages").get_x(world["bob_msg"]).edge("tags").collect() == []
        assert [m._id for m in ctx.table("tags").get_x(world["blue"]).edge("messages")] == world["ada_msgs"][1:]

    app.run(read)


def test_self_edges_are_removed_in_both_directions(app: Any, world: dict[str, Any]) -> None:
    app.run(lambda ctx: ctx.table("users").get_x(world["ada"]).delete())

    def read(ctx: Any) -> None:
        bob = ctx.table("users").get_x(world["bob"])
        cy = ctx.table("users").get_x(world["cy"])
        assert bob.edge("friends").collect() == [] and cy.edge("friends").collect() == []
        assert bob.edge("followees").collect() == [] and cy.edge("followers").collect() == []

    app.run(read)
    assert count(app, "users_friends") == 0
    assert count(app, "users_followees_to_followers") == 0


def test_deleting_the_storing_end_deletes_only_it(app: Any, world: dict[str, Any]) -> None:
    app.run(lambda ctx: ctx.table("messages").get_x(world["bob_msg"]).delete())
    assert exists(app, "users", world["bob"])
    assert not exists(app, "comments", world["comments"][1])
    app.run(lambda ctx: ctx.table("notes").get_x(world["notes"][1]).delete())
    app.run(lambda ctx: ctx.table("avatars").get_x(world["avatar"]).delete())
    assert exists(app, "users", world["bob"]) and exists(app, "users", world["ada"])


def test_hard_deletion_of_a_1_to_1_stored_edge_deletes_the_other_end(app: Any, world: dict[str, Any]) -> None:
    app.run(lambda ctx: ctx.table("profiles").get_x(world["profile"]).delete())
    # the user goes too, and with it everything that cascades from the user
    assert not exists(app, "users", world["ada"])
    assert all(not exists(app, "messages", m) for m in world["ada_msgs"])
    assert not exists(app, "avatars", world["avatar"])  # optional edges cascade too
    assert exists(app, "users", world["bob"]) and exists(app, "profiles", world["bob_profile"])


def test_hard_edge_to_scheduled_functions_cancels_the_job(app: Any, clock: Any) -> None:
    def work(ctx: Any) -> None:
        ctx.table("tags").insert({"name": "ran"})

    fn = app.internal_mutation(work)

    def create(ctx: Any) -> tuple[str, str, str]:
        action = ctx.scheduler.run_after(1000, fn, {})
        log = ctx.scheduler.run_after(1000, fn, {})
        answer = ctx.table("answers").insert({"question": "q", "action_id": action, "log_id": log})
        return answer, action, log

    answer, action, log = app.run(create)
    app.run(lambda ctx: ctx.table("answers").get_x(answer).delete())

    def states(ctx: Any) -> tuple[str, str]:
        return ctx.db.system.get(action)["state"]["kind"], ctx.db.system.get(log)["state"]["kind"]

    assert app.run(states) == ("canceled", "pending")
    clock.advance(1000)
    app.finish_in_progress_scheduled_functions()
    assert app.run(lambda ctx: [t.name for t in ctx.table("tags")]) == ["ran"]  # only the log job ran
    assert app.run(states) == ("canceled", "success")


def test_hard_edge_to_a_finished_job_leaves_it_alone(app: Any, clock: Any) -> None:
    fn = app.internal_mutation(lambda ctx: None, name="noop")
    answer, action = app.run(
        lambda ctx: (lambda job: (ctx.table("answers").insert({"question": "q", "action_id": job}), job))(
            ctx.scheduler.run_after(0, fn, {})
        )
    )
    app.finish_in_progress_scheduled_functions()
    app.run(lambda ctx: ctx.table("answers").get_x(answer).delete())
    assert app.run(lambda ctx: ctx.db.system.get(action)["state"]["kind"]) == "success"


def test_hard_edge_to_storage_deletes_the_file(make_app: Any, tmp_path: Any) -> None:
    app = make_app(cascade_schema(), storage_dir=str(tmp_path / "files"))

    def create(ctx: Any) -> tuple[str, str, str, str]:
        f1 = ctx.storage.store(b"photo")
        f2 = ctx.storage.store(b"draft")
        return ctx.table("photos").insert({"file_id": f1}), f1, ctx.table("drafts").insert({"file_id": f2}), f2

    photo, f1, draft, f2 = app.run(create)
    app.run(lambda ctx: ctx.table("photos").get_x(photo).delete())
    app.run(lambda ctx: ctx.table("drafts").get_x(draft).delete())
    assert app.run(lambda ctx: ctx.db.system.get(f1)) is None
    assert app.run(lambda ctx: ctx.storage.get(f2)) == b"draft"


def test_a_failed_mutation_cancels_no_job_and_deletes_nothing(app: Any, world: dict[str, Any]) -> None:
    fn = app.internal_mutation(lambda ctx: None, name="later")
    answer, action = app.run(
        lambda ctx: (lambda job: (ctx.table("answers").insert({"question": "q", "action_id": job}), job))(
            ctx.scheduler.run_after(1000, fn, {})
        )
    )

    def body(ctx: Any) -> None:
        ctx.table("answers").get_x(answer).delete()
        ctx.table("users").get_x(world["ada"]).delete()
        raise RuntimeError("nope")

    with pytest.raises(RuntimeError):
        app.run(body)
    assert exists(app, "answers", answer) and exists(app, "users", world["ada"])
    assert count(app, "messages_to_tags") == 7
    assert app.run(lambda ctx: ctx.db.system.get(action)["state"]["kind"]) == "pending"


def test_deleting_twice_and_reading_a_deleted_ent(app: Any, world: dict[str, Any]) -> None:
    def body(ctx: Any) -> None:
        ada = ctx.table("users").get_x(world["ada"])
        ada.delete()
        with pytest.raises(EntNotFoundError) as info:
            ada.delete()
        assert str(info.value) == f'Document not found with id `{world["ada"]}` in table "users"'
        assert ctx.table("users").get(world["ada"]) is None

    app.run(body)


def test_cascades_are_set_based(app: Any, monkeypatch: Any) -> None:
    """Deleting an ent with many dependents runs a bounded number of statements."""

    def seed(ctx: Any) -> str:
        uid = ctx.table("users").insert({"name": "big"})
        tags = ctx.table("tags").insert_many([{"name": f"t{i}"} for i in range(5)])
        mids = ctx.table("messages").insert_many([{"text": str(i), "user_id": uid, "tags": tags} for i in range(400)])
        ctx.table("comments").insert_many([{"text": "c", "message_id": m} for m in mids for _ in range(2)])
        ctx.table("notes").insert_many([{"text": "n", "user_id": uid} for _ in range(300)])
        return uid

    uid = app.run(seed)
    log = SqlLog(monkeypatch)
    log.on = True
    app.run(lambda ctx: ctx.table("users").get_x(uid).delete())
    assert count(app, "messages") == 0 and count(app, "comments") == 0 and count(app, "messages_to_tags") == 0
    assert count(app, "notes") == 0
    writes = log.starting_with("DELETE", "UPDATE")
    assert len(writes) < 40, writes


def test_query_delete_is_set_based_and_cascades(app: Any, world: dict[str, Any], monkeypatch: Any) -> None:
    log = SqlLog(monkeypatch)

    def body(ctx: Any) -> int:
        log.on = True
        n = ctx.table("messages").filter(lambda q: q.eq(q.field("user_id"), world["ada"])).delete()
        log.on = False
        return n

    assert app.run(body) == 3
    assert all(not exists(app, "messages", m) for m in world["ada_msgs"])
    assert not exists(app, "comments", world["comments"][0])
    assert exists(app, "messages", world["bob_msg"])
    assert count(app, "messages_to_tags") == 1
    assert len(log.starting_with("DELETE", "UPDATE")) <= 5
    # through an edge, and limited by take
    assert app.run(lambda ctx: ctx.table("users").get_x(world["bob"]).edge("messages").delete()) == 1
    assert app.run(lambda ctx: ctx.table("tags").take(1).delete()) == 1
    assert app.run(lambda ctx: [t._id for t in ctx.table("tags")]) == [world["blue"]]
    assert app.run(lambda ctx: ctx.table("tags").filter(lambda q: q.eq(q.field("name"), "none")).delete()) == 0


def test_query_delete_from_a_query_is_refused(app: Any, world: dict[str, Any]) -> None:
    from ents import ReadOnlyError

    def sneaky(ctx: Any) -> int:
        return ctx.table("tags").delete()  # type: ignore[no-any-return]

    with pytest.raises(ReadOnlyError):
        app.run_query(app.query(sneaky), {})
    assert count(app, "tags") == 2


# -- soft deletion ---------------------------------------------------------------------------


@pytest.fixture
def soft(make_app: Any) -> Any:
    return make_app(soft_schema())


@pytest.fixture
def teams(soft: Any) -> dict[str, Any]:
    def seed(ctx: Any) -> dict[str, Any]:
        label = ctx.table("labels").insert({"name": "l"})
        team = ctx.table("teams").insert({"name": "t", "labels": [label]})
        other = ctx.table("teams").insert({"name": "other"})
        members = ctx.table("members").insert_many([{"name": "m1", "team_id": team}, {"name": "m2", "team_id": team}])
        badge = ctx.table("badges").insert({"name": "b", "member_id": members[0]})
        charter = ctx.table("charters").insert({"text": "c", "team_id": team})
        project = ctx.table("projects").insert({"name": "p", "team_id": team})
        other_member = ctx.table("members").insert({"name": "o", "team_id": other})
        return {
            "label": label,
            "team": team,
            "other": other,
            "members": members,
            "badge": badge,
            "charter": charter,
            "project": project,
            "other_member": other_member,
        }

    return dict(soft.run(seed))


def test_soft_deletion_sets_deletion_time_and_follows_soft_edges(soft: Any, teams: dict[str, Any], clock: Any) -> None:
    clock.advance(500)
    soft.run(lambda ctx: ctx.table("teams").get_x(teams["team"]).delete())
    now = clock.now()

    def read(ctx: Any) -> None:
        team = ctx.table("teams").get_x(teams["team"])  # still there
        assert team.deletion_time == now
        # edges marked deletion="soft" are followed, recursively
        assert all(ctx.table("members").get_x(m).deletion_time == now for m in teams["members"])
        assert ctx.table("badges").get_x(teams["badge"]).deletion_time == now
        assert ctx.table("charters").get_x(teams["charter"]).deletion_time == now
        # other edges are not
        assert ctx.table("projects").get_x(teams["project"]).deletion_time is None
        assert ctx.table("members").get_x(teams["other_member"]).deletion_time is None
        assert ctx.table("teams").get_x(teams["other"]).deletion_time is None
        # many:many edges are unaffected by soft deletion
        assert [t._id for t in ctx.table("labels").get_x(teams["label"]).edge("teams")] == [teams["team"]]
        # soft-deleted ents are excluded by filtering
        alive = ctx.table("teams").filter(lambda q: q.eq(q.field("deletion_time"), None))
        assert [t._id for t in alive] == [teams["other"]]
        assert [m.name for m in team.edge("members")] == ["m1", "m2"]

    soft.run(read)


def test_soft_deletion_is_undone_by_unsetting_deletion_time(soft: Any, teams: dict[str, Any]) -> None:
    soft.run(lambda ctx: ctx.table("teams").get_x(teams["team"]).delete())
    soft.run(lambda ctx: ctx.table("teams").get_x(teams["team"]).patch({"deletion_time": None}))
    assert soft.run(lambda ctx: ctx.table("teams").get_x(teams["team"]).deletion_time) is None


def test_soft_deleting_a_child_already_soft_deleted_keeps_its_time(soft: Any, teams: dict[str, Any], clock: Any) -> None:
    soft.run(lambda ctx: ctx.table("members").get_x(teams["members"][0]).delete())
    first = clock.now()
    clock.advance(1000)
    soft.run(lambda ctx: ctx.table("teams").get_x(teams["team"]).delete())

    def read(ctx: Any) -> None:
        assert ctx.table("members").get_x(teams["members"][0]).deletion_time == first
        assert ctx.table("members").get_x(teams["members"][1]).deletion_time == clock.now()

    soft.run(read)


def test_query_delete_on_soft_and_scheduled_tables(soft: Any, teams: dict[str, Any], clock: Any) -> None:
    assert soft.run(lambda ctx: ctx.table("teams").delete()) == 2

    def read(ctx: Any) -> None:
        assert all(t.deletion_time == clock.now() for t in ctx.table("teams"))
        assert all(m.deletion_time == clock.now() for m in ctx.table("members"))
        assert ctx.table("projects").get_x(teams["project"]).deletion_time is None

    soft.run(read)

    def seed(ctx: Any) -> None:
        for name in ("o1", "o2"):
            org = ctx.table("orgs").insert({"name": name})
            ctx.table("depts").insert({"name": "d", "org_id": org})

    soft.run(seed)
    assert soft.run(lambda ctx: ctx.table("orgs").delete()) == 2
    assert count(soft, "orgs") == 2
    clock.advance(ONE_DAY)
    soft.finish_in_progress_scheduled_functions()
    assert count(soft, "orgs") == 0 and count(soft, "depts") == 0


def test_hard_cascade_into_a_soft_table_hard_deletes(soft: Any, teams: dict[str, Any]) -> None:
    """An ent deleted because of a cascading hard delete is hard deleted, whatever its own mode."""

    def body(ctx: Any) -> None:
        # A hard cascade starts from ctx.db.delete, which always deletes for good.
        ctx.db.delete(teams["team"])

    soft.run(body)
    assert soft.run(lambda ctx: ctx.table("members").get(teams["members"][0])) is None
    assert soft.run(lambda ctx: ctx.table("projects").get(teams["project"])) is None
    assert soft.run(lambda ctx: ctx.table("badges").get(teams["badge"])) is None
    assert soft.run(lambda ctx: ctx.table("members").get(teams["other_member"])) is not None
    assert soft.run(lambda ctx: ctx.table("charters").get(teams["charter"])) is None
    assert count(soft, "teams_to_labels") == 0
    assert soft.run(lambda ctx: ctx.table("labels").get(teams["label"])) is not None


# -- scheduled deletion -----------------------------------------------------------------------


@pytest.fixture
def org(soft: Any) -> dict[str, Any]:
    def seed(ctx: Any) -> dict[str, Any]:
        org = ctx.table("orgs").insert({"name": "o"})
        depts = ctx.table("depts").insert_many([{"name": f"d{i}", "org_id": org} for i in range(3)])
        staff = ctx.table("staff").insert_many([{"name": f"s{i}", "dept_id": d} for i, d in enumerate(depts)])
        return {"org": org, "depts": depts, "staff": staff}

    return dict(soft.run(seed))


def test_scheduled_deletion_soft_deletes_now_and_hard_deletes_later(soft: Any, org: dict[str, Any], clock: Any) -> None:
    soft.run(lambda ctx: ctx.table("orgs").get_x(org["org"]).delete())
    deleted_at = clock.now()
    assert soft.run(lambda ctx: ctx.table("orgs").get_x(org["org"]).deletion_time) == deleted_at
    assert count(soft, "depts") == 3
    clock.advance(ONE_DAY - 1)
    soft.finish_in_progress_scheduled_functions()
    assert soft.run(lambda ctx: ctx.table("orgs").get(org["org"])) is not None
    clock.advance(1)
    soft.finish_in_progress_scheduled_functions()
    assert soft.run(lambda ctx: ctx.table("orgs").get(org["org"])) is None
    assert count(soft, "depts") == 0 and count(soft, "staff") == 0


def test_scheduled_deletion_is_canceled_by_unsetting_deletion_time(soft: Any, org: dict[str, Any], clock: Any) -> None:
    soft.run(lambda ctx: ctx.table("orgs").get_x(org["org"]).delete())
    clock.advance(1000)
    soft.run(lambda ctx: ctx.table("orgs").get_x(org["org"]).patch({"deletion_time": None}))
    soft.finish_all_scheduled_functions()
    assert soft.run(lambda ctx: ctx.table("orgs").get_x(org["org"]).deletion_time) is None
    assert count(soft, "depts") == 3 and count(soft, "staff") == 3


def test_scheduled_deletion_finishes_in_batches(make_app: Any, clock: Any) -> None:
    app = make_app(soft_schema(), scheduled_delete_batch=7)

    def seed(ctx: Any) -> str:
        org = ctx.table("orgs").insert({"name": "big"})
        depts = ctx.table("depts").insert_many([{"name": f"d{i}", "org_id": org} for i in range(10)])
        ctx.table("staff").insert_many([{"name": "s", "dept_id": d} for d in depts for _ in range(5)])
        return org

    org_id = app.run(seed)
    app.run(lambda ctx: ctx.table("orgs").get_x(org_id).delete())
    app.finish_all_scheduled_functions()
    assert app.run(lambda ctx: ctx.table("orgs").get(org_id)) is None
    assert count(app, "depts") == 0 and count(app, "staff") == 0


def test_random_deletions_leave_no_dangling_edges(make_app: Any) -> None:
    """Whatever is deleted, in whatever order, no stored edge or edge row is left pointing
    at a deleted ent, and ents whose optional edge is unset survive."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    app = make_app(cascade_schema())

    op = st.one_of(
        st.tuples(st.just("user"), st.integers(0, 9)),
        st.tuples(st.just("message"), st.integers(0, 9), st.lists(st.integers(0, 9), max_size=3)),
        st.tuples(st.just("comment"), st.integers(0, 9)),
        st.tuples(st.just("profile"), st.integers(0, 9)),
        st.tuples(st.just("note"), st.integers(0, 9)),
        st.tuples(st.just("friend"), st.integers(0, 9), st.integers(0, 9)),
        st.tuples(st.just("delete"), st.sampled_from(["users", "messages", "tags", "profiles", "comments"]), st.integers(0, 9)),
    )

    @settings(max_examples=30, deadline=None, database=None)
    @given(st.lists(op, max_size=25))
    def check(ops: list[Any]) -> None:
        def reset(ctx: Any) -> None:
            for table in ("users", "tags", "notes", "avatars"):
                ctx.table(table).delete()
            ctx.table("tags").insert_many([{"name": f"t{i}"} for i in range(3)])
            ctx.table("users").insert_many([{"name": f"u{i}"} for i in range(3)])

        app.run(reset)

        def pick(ctx: Any, table: str, i: int) -> Any:
            ents = ctx.table(table).collect()
            return ents[i % len(ents)] if ents else None

        def apply(ctx: Any, o: Any) -> None:
            kind = o[0]
            if kind == "user":
                ctx.table("users").insert({"name": f"u{o[1]}"})
            elif kind == "message" and (u := pick(ctx, "users", o[1])):
                tags = [t._id for i in o[2] if (t := pick(ctx, "tags", i))]
                ctx.table("messages").insert({"text": "m", "user_id": u._id, "tags": tags})
            elif kind == "comment" and (m := pick(ctx, "messages", o[1])):
                ctx.table("comments").insert({"text": "c", "message_id": m._id})
            elif kind == "profile" and (u := pick(ctx, "users", o[1])) and u.edge("profile") is None:
                ctx.table("profiles").insert({"bio": "b", "user_id": u._id})
            elif kind == "note":
                u = pick(ctx, "users", o[1])
                ctx.table("notes").insert({"text": "lone" if u is None else "n", "user_id": u._id if u else None})
                lone[0] += u is None
            elif kind == "friend" and (a := pick(ctx, "users", o[1])) and (b := pick(ctx, "users", o[2])):
                a.patch({"friends": {"add": [b._id]}})
            elif kind == "delete" and (e := pick(ctx, o[1], o[2])):
                e.delete()

        lone = [0]
        for o in ops:
            app.run(lambda ctx, o=o: apply(ctx, o))

        def dangling(ctx: Any) -> list[str]:
            tx = ctx._tx
            checks = {
                "messages.user_id": 'SELECT COUNT(*) FROM "messages" m WHERE NOT EXISTS (SELECT 1 FROM "users" u WHERE u."_rid" = m."user_id")',
                "comments.message_id": 'SELECT COUNT(*) FROM "comments" c WHERE NOT EXISTS (SELECT 1 FROM "messages" m WHERE m."_rid" = c."message_id")',
                "profiles.user_id": 'SELECT COUNT(*) FROM "profiles" p WHERE NOT EXISTS (SELECT 1 FROM "users" u WHERE u."_rid" = p."user_id")',
                "notes.user_id": 'SELECT COUNT(*) FROM "notes" n WHERE n."user_id" IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "users" u WHERE u."_rid" = n."user_id")',
                "messages_to_tags": 'SELECT COUNT(*) FROM "messages_to_tags" e WHERE NOT EXISTS (SELECT 1 FROM "messages" m WHERE m."_rid" = e."messages_id") OR NOT EXISTS (SELECT 1 FROM "tags" t WHERE t."_rid" = e."tags_id")',
                "users_friends": 'SELECT COUNT(*) FROM "users_friends" e WHERE NOT EXISTS (SELECT 1 FROM "users" u WHERE u."_rid" = e."a_id") OR NOT EXISTS (SELECT 1 FROM "users" u WHERE u."_rid" = e."b_id")',
            }
            return [name for name, sql in checks.items() if tx.fetchone(sql)[0]]

        assert app.run(dangling) == []
        # notes without a user are never deleted by a cascade, and none loses its user
        notes = app.run(lambda ctx: ctx.table("notes").docs())
        assert [n["text"] for n in notes if n["user_id"] is None] == ["lone"] * lone[0]

    check()


# -- optional edges cascade everything that follows (Convex Ents' writer) ----------------------


def optional_schema() -> Any:
    return define_ent_schema(
        {
            "owners": define_ent({"name": str}).edges("reports", ref=True),
            "reports": define_ent({"title": str})
            .edge("owner", optional=True)
            .edge("job", to="_scheduled_functions", deletion="hard")
            .edge("file", to="_storage", deletion="hard")
            .edges("pages", ref=True),
            "pages": define_ent({"n": int}).edge("report"),
            # optional edges can close a cycle: a mentors b, b mentors a
            "people": define_ent({"name": str})
            .edge("mentor", to="people", field="mentor_id", optional=True)
            .edges("mentees", to="people", ref="mentor_id"),
            "clubs": define_ent({"name": str}).deletion("scheduled", delay_ms=1000).edges("fans", ref=True),
            "fans": define_ent({"name": str}).edge("club", optional=True).edge("buddy", to="fans", field="buddy_id", optional=True)
            .edges("buddies", to="fans", ref="buddy_id"),
        }
    )


def test_ents_on_an_optional_edge_go_with_their_jobs_files_and_children(make_app: Any, tmp_path: Any, monkeypatch: Any) -> None:
    app = make_app(optional_schema(), storage_dir=str(tmp_path / "files"))
    noop = app.internal_mutation(lambda ctx: None, name="noop")

    def seed(ctx: Any) -> dict[str, Any]:
        owner, other = ctx.table("owners").insert_many([{"name": "o"}, {"name": "other"}])
        jobs = [ctx.scheduler.run_after(1000, noop, {}) for _ in range(60)]
        files = [ctx.storage.store(b"report %d" % i) for i in range(60)]
        reports = ctx.table("reports").insert_many(
            [{"title": f"r{i}", "owner_id": owner, "job_id": jobs[i], "file_id": files[i]} for i in range(50)]
            + [{"title": f"kept{i}", "owner_id": other if i % 2 else None, "job_id": jobs[i], "file_id": files[i]} for i in range(50, 60)]
        )
        ctx.table("pages").insert_many([{"n": n, "report_id": r} for r in reports for n in range(3)])
        return {"owner": owner, "jobs": jobs, "files": files, "reports": reports}

    w = app.run(seed)
    log = SqlLog(monkeypatch)
    log.on = True
    app.run(lambda ctx: ctx.table("owners").get_x(w["owner"]).delete())
    log.on = False
    writes = log.starting_with("DELETE", "UPDATE")
    assert len(writes) < 15, writes  # set-based: a statement per table and batch, not per report

    def read(ctx: Any) -> None:
        assert [r.title for r in ctx.table("reports")] == [f"kept{i}" for i in range(50, 60)]
        assert len(ctx.table("pages")) == 30
        states = [ctx.db.system.get(j)["state"]["kind"] for j in w["jobs"]]
        assert states == ["canceled"] * 50 + ["pending"] * 10
        assert [ctx.db.system.get(f) is None for f in w["files"]] == [True] * 50 + [False] * 10

    app.run(read)


def test_a_cycle_of_optional_edges_is_deleted_and_ends(make_app: Any) -> None:
    app = make_app(optional_schema())

    def seed(ctx: Any) -> list[str]:
        a, b, c, lone = ctx.table("people").insert_many([{"name": n} for n in "abcl"])
        ctx.table("people").get_x(a).patch({"mentor_id": b})
        ctx.table("people").get_x(b).patch({"mentor_id": a})
        ctx.table("people").get_x(c).patch({"mentor_id": c})  # its own mentor
        return [a, b, c, lone]

    a, b, c, lone = app.run(seed)
    app.run(lambda ctx: ctx.table("people").get_x(a).delete())
    app.run(lambda ctx: ctx.table("people").get_x(c).delete())
    assert app.run(lambda ctx: [p._id for p in ctx.table("people")]) == [lone]


def test_scheduled_deletion_deletes_ents_on_optional_edges_in_bounded_steps(make_app: Any, clock: Any) -> None:
    app = make_app(optional_schema(), scheduled_delete_batch=4)

    def seed(ctx: Any) -> dict[str, Any]:
        club, other = ctx.table("clubs").insert_many([{"name": "c"}, {"name": "other"}])
        fans = ctx.table("fans").insert_many([{"name": f"f{i}", "club_id": club} for i in range(10)])
        # buddies point at each other in a ring, and a clubless fan at one of them
        for i, f in enumerate(fans):
            ctx.table("fans").get_x(f).patch({"buddy_id": fans[(i + 1) % len(fans)]})
        clubless = ctx.table("fans").insert({"name": "free", "buddy_id": fans[0]})
        kept = ctx.table("fans").insert({"name": "kept", "club_id": other})
        lone = ctx.table("fans").insert({"name": "lone"})
        return {"club": club, "fans": fans, "clubless": clubless, "kept": kept, "lone": lone}

    w = app.run(seed)
    app.run(lambda ctx: ctx.table("clubs").get_x(w["club"]).delete())
    assert app.run(lambda ctx: len(ctx.table("fans"))) == 13  # nothing hard-deleted yet
    clock.advance(1000)
    app.finish_all_scheduled_functions()
    assert app.run(lambda ctx: ctx.table("clubs").get(w["club"])) is None
    # the club's fans went, and the fan whose optional buddy edge pointed at one of them
    assert app.run(lambda ctx: sorted(f.name for f in ctx.table("fans"))) == ["kept", "lone"]


# -- soft deletion on the stored end of a 1:1 edge (Convex Ents' headshots / details) -----------


def headshot_schema() -> Any:
    return define_ent_schema(
        {
            "users": define_ent({"name": str}).edges("headshots", ref=True),
            "headshots": define_ent({"taken": str})
            .deletion("soft")
            .edge("user")
            .edge("detail", to="details", field="detail_id", deletion="soft", optional=True)
            .edge("card", to="cards", deletion="soft")
            .edge("file", to="_storage", deletion="hard"),
            "details": define_ent({"text": str}).deletion("soft").edge("headshot", ref=True).edges("notes", ref=True, deletion="soft"),
            "notes": define_ent({"text": str}).deletion("soft").edge("detail"),
            "cards": define_ent({"text": str}).deletion("scheduled", delay_ms=5000).edge("headshot", ref=True),
        }
    )


@pytest.fixture
def shots(make_app: Any, tmp_path: Any) -> Any:
    app = make_app(headshot_schema(), storage_dir=str(tmp_path / "files"))

    def seed(ctx: Any) -> dict[str, Any]:
        user = ctx.table("users").insert({"name": "Stark"})
        detail, other_detail = ctx.table("details").insert_many([{"text": "d"}, {"text": "other"}])
        note = ctx.table("notes").insert({"text": "n", "detail_id": detail})
        card, other_card = ctx.table("cards").insert_many([{"text": "c"}, {"text": "other"}])
        file = ctx.storage.store(b"png")
        shot = ctx.table("headshots").insert(
            {"taken": "2024-11-09", "user_id": user, "detail_id": detail, "card_id": card, "file_id": file}
        )
        other = ctx.table("headshots").insert({"taken": "x", "user_id": user, "detail_id": other_detail, "card_id": other_card})
        return {"user": user, "detail": detail, "note": note, "card": card, "file": file, "shot": shot,
                "other": other, "other_detail": other_detail, "other_card": other_card}

    app.w = app.run(seed)
    return app


def test_soft_deletion_follows_a_soft_stored_1_to_1_edge(shots: Any, clock: Any) -> None:
    w = shots.w
    clock.advance(10)
    shots.run(lambda ctx: ctx.table("headshots").get_x(w["shot"]).delete())
    now = clock.now()

    def read(ctx: Any) -> None:
        assert ctx.table("headshots").get_x(w["shot"]).deletion_time == now
        # the detail the headshot points at is soft-deleted, and on from it its soft edges
        assert ctx.table("details").get_x(w["detail"]).deletion_time == now
        assert ctx.table("notes").get_x(w["note"]).deletion_time == now
        # a card's table has scheduled deletion: soft-deleted now, its hard deletion scheduled
        assert ctx.table("cards").get_x(w["card"]).deletion_time == now
        # a hard edge is not followed by a soft deletion, and other ents are untouched
        assert ctx.storage.get(w["file"]) == b"png"
        assert ctx.table("details").get_x(w["other_detail"]).deletion_time is None
        assert ctx.table("cards").get_x(w["other_card"]).deletion_time is None

    shots.run(read)
    clock.advance(5000)
    shots.finish_in_progress_scheduled_functions()
    assert shots.run(lambda ctx: ctx.table("cards").get(w["card"])) is None
    assert shots.run(lambda ctx: ctx.table("cards").get(w["other_card"])) is not None


def test_hard_deletion_through_a_soft_stored_edge_hard_deletes_the_other_end(shots: Any) -> None:
    """Convex Ents' "hard deletion through field edge": a user's hard delete reaches the
    headshot (a required edge), which takes its detail, card and file with it."""
    w = shots.w
    shots.run(lambda ctx: ctx.table("users").get_x(w["user"]).delete())

    def read(ctx: Any) -> None:
        assert ctx.table("headshots").get(w["shot"]) is None and ctx.table("headshots").get(w["other"]) is None
        assert ctx.table("details").get(w["detail"]) is None and ctx.table("details").get(w["other_detail"]) is None
        assert ctx.table("notes").get(w["note"]) is None
        assert ctx.table("cards").get(w["card"]) is None
        assert ctx.db.system.get(w["file"]) is None

    shots.run(read)
