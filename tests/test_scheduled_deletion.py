"""Soft and scheduled deletion, and the three Convex Ents scheduled-deletion bugs we avoid.

Convex Ents' scheduled delete (a) fails when the ent is already gone, (b) neither cancels
linked jobs nor deletes linked files in its final hard delete, and (c) can skip rows
created at the same instant because it pages by creation time. One test each below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import ents.deletion as deletion
from ents import define_ent, define_ent_schema
from ents.deletion import SCHEDULED_DELETE

DAY = 24 * 3600 * 1000
HOUR = 3600 * 1000


def deletion_schema() -> Any:
    return define_ent_schema(
        {
            "teams": define_ent({"name": str})
            .deletion("scheduled", delay_ms=DAY)
            .edges("members", ref=True, deletion="soft")
            .edges("projects", ref=True)
            .edges("notes", ref=True)
            .edges("tags")
            .edge("action", to="_scheduled_functions", deletion="hard")
            .edge("logo", to="_storage", deletion="hard"),
            "members": define_ent({"name": str}).deletion("soft").edge("team").edges("tasks", ref=True),
            "tasks": define_ent({"title": str})
            .edge("member")
            .edge("job", to="_scheduled_functions", deletion="hard")
            .edge("file", to="_storage", deletion="hard"),
            "projects": define_ent({"name": str}).edge("team"),
            "notes": define_ent({"text": str}).edge("team", optional=True),
            "tags": define_ent({"name": str}).edges("teams"),
            "events": define_ent({"what": str}),
        }
    )


# Tables holding ents and edges below a team, with the field that points up (None for
# the many:many edge table, whose rows are removed rather than orphaned).
BELOW = {"members": ("team_id", "teams"), "tasks": ("member_id", "members"), "projects": ("team_id", "teams")}
COUNTED = ["teams", "members", "tasks", "projects", "teams_to_tags"]


def rows(tx: Any, table: str) -> int:
    return int(tx.fetchone(f"SELECT COUNT(*) FROM {tx.dialect.q(table)}")[0])


def orphans(tx: Any) -> int:
    """Ents whose required parent is gone: a step that deleted a parent before its children."""
    q = tx.dialect.q
    total = 0
    for table, (field, parent) in BELOW.items():
        total += int(
            tx.fetchone(
                f"SELECT COUNT(*) FROM {q(table)} c WHERE NOT EXISTS "
                f"(SELECT 1 FROM {q(parent)} p WHERE p.{q('_rid')} = c.{q(field)})"
            )[0]
        )
    return total


@pytest.fixture
def steps(monkeypatch: Any) -> list[dict[str, Any]]:
    """Every step of every scheduled deletion: rows it deleted, whether it finished, and
    how many orphans it left. Must be set up before the App (which binds the step)."""
    record: list[dict[str, Any]] = []
    real = deletion.scheduled_delete_step

    def observed(tx: Any, table: str, id: str, deletion_time: float, batch: int) -> bool:
        before = sum(rows(tx, t) for t in COUNTED)
        done = real(tx, table, id, deletion_time, batch)
        after = sum(rows(tx, t) for t in COUNTED)
        record.append({"deleted": before - after, "done": done, "orphans": orphans(tx)})
        return done

    monkeypatch.setattr(deletion, "scheduled_delete_step", observed)
    return record


@pytest.fixture
def make(make_app: Any, backend: str, tmp_path: Path, steps: list[dict[str, Any]]) -> Any:
    def build(**kwargs: Any) -> Any:
        kwargs.setdefault("storage_dir", str(tmp_path / f"blobs{len(steps)}"))
        app = make_app(deletion_schema(), **kwargs)

        @app.internal_mutation
        def record(ctx: Any, what: str) -> None:
            ctx.table("events").insert({"what": what})

        app.f = {"record": record}
        return app

    return build


@pytest.fixture
def app(make: Any) -> Any:
    return make()


def seed_team(app: Any, members: int = 2, tasks: int = 2, name: str = "core") -> dict[str, Any]:
    """A team with members and their tasks, projects, notes and tags, each task and the
    team linked to a pending job and a file."""
    record = app.f["record"]

    def seed(ctx: Any) -> dict[str, Any]:
        tags = ctx.table("tags").insert_many([{"name": f"{name}-t{i}"} for i in range(3)])
        team_job = ctx.scheduler.run_after(30 * DAY, record, {"what": f"{name} team job"})
        logo = ctx.storage.store(f"{name} logo".encode(), content_type="image/svg+xml")
        team = ctx.table("teams").insert({"name": name, "tags": tags, "action_id": team_job, "logo_id": logo})
        member_ids = ctx.table("members").insert_many([{"name": f"m{i}", "team_id": team} for i in range(members)])
        task_jobs, files, task_ids = [], [], []
        for m in member_ids:
            for i in range(tasks):
                jid = ctx.scheduler.run_after(30 * DAY, record, {"what": f"{name} task job"})
                fid = ctx.storage.store(f"{name} file {i}".encode())
                task_ids.append(ctx.table("tasks").insert({"title": f"t{i}", "member_id": m, "job_id": jid, "file_id": fid}))
                task_jobs.append(jid)
                files.append(fid)
        projects = ctx.table("projects").insert_many([{"name": f"p{i}", "team_id": team} for i in range(2)])
        notes = ctx.table("notes").insert_many([{"text": f"n{i}", "team_id": team} for i in range(2)])
        return {
            "team": team,
            "tags": tags,
            "members": member_ids,
            "tasks": task_ids,
            "projects": projects,
            "notes": notes,
            "jobs": [team_job, *task_jobs],
            "files": [logo, *files],
        }

    return dict(app.run(seed))


def count(app: Any, table: str) -> int:
    return app.run(lambda ctx: rows(ctx._tx, table))  # type: ignore[no-any-return]


def job_states(app: Any, ids: list[str]) -> list[str]:
    return app.run(lambda ctx: [ctx.db.system.get(j)["state"]["kind"] for j in ids])  # type: ignore[no-any-return]


def deletion_jobs(app: Any) -> list[dict[str, Any]]:
    return app.run(  # type: ignore[no-any-return]
        lambda ctx: ctx.table("_scheduled_functions").filter(lambda q: q.eq(q.field("name"), SCHEDULED_DELETE)).docs()
    )


def delete_team(app: Any, team: str) -> None:
    app.run(lambda ctx: ctx.table("teams").get_x(team).delete())


# -- soft deletion now, hard deletion later ---------------------------------------------


def test_delete_soft_deletes_now_and_schedules_the_hard_delete(app: Any, clock: Any) -> None:
    team = seed_team(app)
    other = seed_team(app, name="other")
    delete_team(app, team["team"])
    now = clock.now()

    def read(ctx: Any) -> None:
        t = ctx.table("teams").get_x(team["team"])  # still readable
        assert t.deletion_time == now
        # deletion="soft" edges are soft-deleted with it; other edges are left as they are
        assert [ctx.table("members").get_x(m).deletion_time for m in team["members"]] == [now, now]
        assert len(t.edge("projects")) == 2 and len(t.edge("tags")) == 3
        assert t.edge("action").state.kind == "pending"
        assert ctx.storage.get(team["files"][0]) == b"core logo"
        alive = ctx.table("teams").filter(lambda q: q.eq(q.field("deletion_time"), None))
        assert [x._id for x in alive] == [other["team"]]

    app.run(read)
    (job,) = deletion_jobs(app)
    assert job["state"]["kind"] == "pending"
    assert job["scheduled_time"] == now + DAY
    assert job["args"] == {"table": "teams", "id": team["team"], "deletion_time": now}


def test_the_hard_delete_happens_after_the_delay(app: Any, clock: Any, steps: list[dict[str, Any]]) -> None:
    team = seed_team(app)
    other = seed_team(app, name="other")
    delete_team(app, team["team"])
    clock.advance(DAY - 1)
    app.finish_in_progress_scheduled_functions()
    assert steps == [] and app.run(lambda ctx: ctx.table("teams").get(team["team"])) is not None
    clock.advance(1)
    app.finish_in_progress_scheduled_functions()

    def read(ctx: Any) -> None:
        assert ctx.table("teams").get(team["team"]) is None
        for table in ("members", "tasks", "projects"):
            assert all(ctx.table(table).get(i) is None for i in team[table]), table
        # ents on optional edges are deleted too, many:many rows removed, the tags themselves kept
        assert [ctx.table("notes").get(n) for n in team["notes"]] == [None, None]
        assert [ctx.table("tags").get_x(t).edge("teams").collect() for t in team["tags"]] == [[], [], []]
        # the other team is untouched
        o = ctx.table("teams").get_x(other["team"])
        assert o.deletion_time is None and len(o.edge("members")) == 2 and len(o.edge("tags")) == 3

    app.run(read)
    assert [j["state"]["kind"] for j in deletion_jobs(app)] == ["success"] * len(deletion_jobs(app))
    assert job_states(app, other["jobs"]) == ["pending"] * len(other["jobs"])


@pytest.mark.parametrize("batch", [3, 5, 7])
def test_a_large_cascade_is_deleted_in_bounded_steps_children_first(
    make: Any, steps: list[dict[str, Any]], batch: int
) -> None:
    app = make(scheduled_delete_batch=batch)
    team = seed_team(app, members=6, tasks=4)
    below = 6 + 6 * 4 + 2 + 3  # members, tasks, projects, tag edges
    delete_team(app, team["team"])
    app.finish_all_scheduled_functions()
    assert app.run(lambda ctx: ctx.table("teams").get(team["team"])) is None
    assert sum(s["deleted"] for s in steps) == below + 1
    # Each step deletes at most the batch (the last one also deletes the team itself)...
    assert all(s["deleted"] <= batch for s in steps[:-1]), steps
    assert steps[-1]["deleted"] <= batch + 1
    assert len(steps) >= (below + 2 + batch - 1) // batch  # (+2 notes, on an optional edge)
    # ...reschedules itself until done...
    assert [s["done"] for s in steps] == [False] * (len(steps) - 1) + [True]
    assert len(deletion_jobs(app)) == len(steps)
    assert {j["state"]["kind"] for j in deletion_jobs(app)} == {"success"}
    # ...and never deletes a parent before its children.
    assert [s["orphans"] for s in steps] == [0] * len(steps)


def test_the_batch_size_defaults_to_a_thousand_rows(app: Any, steps: list[dict[str, Any]]) -> None:
    team = seed_team(app, members=3, tasks=3)
    delete_team(app, team["team"])
    app.finish_all_scheduled_functions()
    assert [s["done"] for s in steps] == [True]
    assert app.scheduled_delete_batch == 1000


def test_undo_by_patching_deletion_time_to_none(app: Any, clock: Any, steps: list[dict[str, Any]]) -> None:
    team = seed_team(app)
    delete_team(app, team["team"])
    clock.advance(HOUR)
    app.run(lambda ctx: ctx.table("teams").get_x(team["team"]).patch({"deletion_time": None}))
    clock.advance(DAY)
    app.finish_in_progress_scheduled_functions()

    def read(ctx: Any) -> None:
        t = ctx.table("teams").get_x(team["team"])
        assert t.deletion_time is None
        assert len(t.edge("members")) == 2 and len(t.edge("projects")) == 2 and len(t.edge("tags")) == 3
        assert all(ctx.table("tasks").get(i) is not None for i in team["tasks"])

    app.run(read)
    # The deletion job ran and did nothing; the team's own jobs and files are intact.
    assert [j["state"]["kind"] for j in deletion_jobs(app)] == ["success"]
    assert steps == [{"deleted": 0, "done": True, "orphans": 0}]
    assert job_states(app, team["jobs"]) == ["pending"] * len(team["jobs"])
    assert app.run(lambda ctx: ctx.storage.get(team["files"][0])) == b"core logo"


def test_deleting_again_after_an_undo_starts_a_new_delay(app: Any, clock: Any) -> None:
    team = seed_team(app)
    delete_team(app, team["team"])
    first = clock.now()
    clock.advance(HOUR)
    app.run(lambda ctx: ctx.table("teams").get_x(team["team"]).patch({"deletion_time": None}))
    clock.advance(HOUR)
    delete_team(app, team["team"])
    second = clock.now()
    clock.set_time(first + DAY)
    app.finish_in_progress_scheduled_functions()  # the first job finds another deletion_time
    assert app.run(lambda ctx: ctx.table("teams").get_x(team["team"]).deletion_time) == second
    clock.set_time(second + DAY)
    app.finish_in_progress_scheduled_functions()
    assert app.run(lambda ctx: ctx.table("teams").get(team["team"])) is None


def test_a_soft_deletion_table_only_soft_deletes(app: Any, clock: Any) -> None:
    team = seed_team(app)
    member = team["members"][0]
    app.run(lambda ctx: ctx.table("members").get_x(member).delete())
    deleted_at = clock.now()
    app.finish_all_scheduled_functions()
    assert deletion_jobs(app) == []

    def read(ctx: Any) -> None:
        m = ctx.table("members").get_x(member)
        assert m.deletion_time == deleted_at
        assert len(m.edge("tasks")) == 2  # no soft edge from members to tasks: untouched

    app.run(read)


# -- the three Convex Ents bugs ---------------------------------------------------------


def test_a_scheduled_delete_of_an_ent_already_gone_succeeds(app: Any, clock: Any) -> None:
    """(a) The ent was hard-deleted before its scheduled deletion ran."""
    team = seed_team(app)
    delete_team(app, team["team"])
    app.run(lambda ctx: ctx.db.delete(team["team"]))  # for good, right now
    assert app.run(lambda ctx: ctx.table("teams").get(team["team"])) is None
    clock.advance(DAY)
    app.finish_in_progress_scheduled_functions()
    (job,) = deletion_jobs(app)
    assert job["state"] == {"kind": "success"}


def test_the_final_hard_delete_cancels_linked_jobs_and_deletes_linked_files(make: Any, clock: Any) -> None:
    """(b) Jobs and files linked with deletion="hard", on the ent and below it."""
    app = make(scheduled_delete_batch=3)
    team = seed_team(app, members=2, tasks=3)
    keep = seed_team(app, name="keep")
    paths = app.run(lambda ctx: [Path(ctx.storage.get_url(f).removeprefix("file://")) for f in team["files"]])
    assert all(p.exists() for p in paths)
    delete_team(app, team["team"])
    assert job_states(app, team["jobs"]) == ["pending"] * 7  # soft deletion leaves them
    clock.advance(DAY)
    app.finish_in_progress_scheduled_functions()
    assert app.run(lambda ctx: ctx.table("teams").get(team["team"])) is None
    assert job_states(app, team["jobs"]) == ["canceled"] * 7
    assert app.run(lambda ctx: [ctx.storage.get_metadata(f) for f in team["files"]]) == [None] * 7
    assert not any(p.exists() for p in paths)
    assert job_states(app, keep["jobs"]) == ["pending"] * len(keep["jobs"])
    assert app.run(lambda ctx: [ctx.storage.get(f) is not None for f in keep["files"]]) == [True] * 5


def test_rows_created_at_the_same_instant_are_never_skipped(make: Any, clock: Any, steps: list[dict[str, Any]]) -> None:
    """(c) The fake clock gives every row the same _creation_time; batches are small."""
    app = make(scheduled_delete_batch=4)
    team = seed_team(app, members=25, tasks=2)
    times = app.run(lambda ctx: {m._creation_time for m in ctx.table("members")} | {t._creation_time for t in ctx.table("tasks")})
    assert times == {clock.now()}
    delete_team(app, team["team"])
    app.finish_all_scheduled_functions()
    assert (count(app, "teams"), count(app, "members"), count(app, "tasks"), count(app, "projects")) == (0, 0, 0, 0)
    assert count(app, "teams_to_tags") == 0
    assert len(steps) > 10 and [s["orphans"] for s in steps] == [0] * len(steps)
