"""Edges to ``_scheduled_functions``: the stored field, reading the job through the edge,
batch loading for the seed's status listing, and cancel-on-delete with ``deletion="hard"``."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ents import EntNotFoundError, Id, SchemaError, ValidationError, define_ent, define_ent_schema
from ents.scheduler import RETENTION_MS
from ents.transaction import Transaction


def system_edge_schema() -> Any:
    return define_ent_schema(
        {
            "users": define_ent({"name": str}).edges("answers", ref=True).edges("drafts", ref=True),
            "answers": define_ent({"question": str})
            .field("answer", str | None)
            .edge("user")
            .edge("action", to="_scheduled_functions", deletion="hard"),
            # No deletion option: the job does not depend on the draft.
            "drafts": define_ent({"text": str}).edge("user").edge("job", to="_scheduled_functions", field="job_ref"),
            # Soft-deleted ents keep their jobs.
            "notes": define_ent({"text": str}).deletion("soft").edge("job", to="_scheduled_functions", deletion="hard"),
            "events": define_ent({"what": str}),
        }
    )


@pytest.fixture
def app(make_app: Any) -> Any:
    app = make_app(system_edge_schema())
    gate: dict[str, threading.Event] = {"started": threading.Event(), "proceed": threading.Event()}

    @app.internal_mutation
    def record(ctx: Any, what: str) -> None:
        ctx.table("events").insert({"what": what})

    @app.internal_mutation
    def save_answer(ctx: Any, answer_id: str, text: str) -> None:
        ctx.table("answers").get_x(answer_id).patch({"answer": text})

    @app.internal_action
    def generate(ctx: Any, answer_id: str) -> None:
        ctx.run_mutation(save_answer, {"answer_id": answer_id, "text": "42"})

    @app.internal_action
    def fail(ctx: Any, answer_id: str) -> None:
        raise RuntimeError("the model is down")

    @app.internal_mutation
    def schedule_record(ctx: Any, what: str) -> None:
        ctx.scheduler.run_after(0, record, {"what": what})

    @app.internal_action
    def slow(ctx: Any, answer_id: str) -> None:
        # Holds the job inProgress until the test lets it go on.
        gate["started"].set()
        assert gate["proceed"].wait(120), "the test never let the action proceed"
        ctx.run_mutation(record, {"what": "action went on"})
        ctx.scheduler.run_after(0, record, {"what": "scheduled by the action"})
        ctx.run_mutation(schedule_record, {"what": "scheduled by its mutation"})

    actions = {"generate": generate, "fail": fail, "slow": slow, "record": record}

    @app.mutation
    def create_answer(ctx: Any, question: str, user_id: str, delay: float = 0, action: str = "generate") -> str:
        answer_id = ctx.table("answers").insert({"question": question, "user_id": user_id})
        job_id = ctx.scheduler.run_after(delay, actions[action], {"answer_id": answer_id})
        ctx.table("answers").get_x(answer_id).patch({"action_id": job_id})
        return str(answer_id)

    @app.query
    def list_answers(ctx: Any) -> list[dict[str, Any]]:
        return ctx.table("answers").map(  # type: ignore[no-any-return]
            lambda a: {
                "question": a.question,
                "status": a.edge("action").state.kind if a.edge("action") else "stale",
            }
        )

    app.f = {
        "record": record,
        "generate": generate,
        "create_answer": create_answer,
        "list_answers": list_answers,
        "slow": slow,
    }
    app.gate = gate
    return app


@pytest.fixture
def user(app: Any) -> str:
    return str(app.run(lambda ctx: ctx.table("users").insert({"name": "ada"})))


def job(app: Any, id: str) -> dict[str, Any] | None:
    return app.run(lambda ctx: ctx.db.system.get(id))  # type: ignore[no-any-return]


def state(app: Any, id: str) -> str:
    doc = job(app, id)
    assert doc is not None, f"job {id} is gone"
    return str(doc["state"]["kind"])


def events(app: Any) -> list[str]:
    return [e.what for e in app.run(lambda ctx: ctx.table("events").collect())]


def action_id(app: Any, answer: str) -> str:
    return str(app.run(lambda ctx: ctx.table("answers").get_x(answer).action_id))


def new_job(app: Any, delay: float = 1000) -> str:
    return str(app.run(lambda ctx: ctx.scheduler.run_after(delay, app.f["record"], {"what": "independent"})))


# -- the schema ---------------------------------------------------------------------------


def test_the_edge_stores_an_optional_id_field_named_after_it() -> None:
    schema = system_edge_schema()
    action = schema.table("answers").edges["action"]
    assert (action.kind, action.to, action.field, action.deletion) == ("field", "_scheduled_functions", "action_id", "hard")
    assert schema.table("answers").fields["action_id"].nullable
    job_edge = schema.table("drafts").edges["job"]
    assert (job_edge.field, job_edge.deletion) == ("job_ref", None)
    assert "job_ref" in schema.table("drafts").fields and "job_id" not in schema.table("drafts").fields


@pytest.mark.parametrize(
    ("make_edge", "message"),
    [
        (lambda d: d.edges("jobs", to="_scheduled_functions"), 'Edge "jobs" in table "tasks" points to the system table "_scheduled_functions"'),
        (lambda d: d.edge("job", to="_scheduled_functions", ref=True), 'Edge "job" in table "tasks" points to the system table "_scheduled_functions"'),
        (lambda d: d.edges("files", to="_storage"), 'Edge "files" in table "tasks" points to the system table "_storage"'),
        (lambda d: d.edge("file", to="_storage", ref="owner_id"), 'Edge "file" in table "tasks" points to the system table "_storage"'),
        (lambda d: d.edge("job", to="_scheduled_functions", deletion="soft"), 'only deletion="hard"'),
        (lambda d: d.edge("file", to="_storage", deletion="soft"), 'only deletion="hard"'),
    ],
)
def test_only_singular_stored_edges_with_hard_deletion_may_point_at_system_tables(make_edge: Any, message: str) -> None:
    with pytest.raises(SchemaError) as info:
        define_ent_schema({"tasks": make_edge(define_ent({"name": str}))})
    assert message in str(info.value)
    assert info.value.table == "tasks"


def test_the_field_only_takes_ids_of_existing_jobs(app: Any, user: str) -> None:
    answer = app.run(lambda ctx: ctx.table("answers").insert({"question": "q", "user_id": user}))
    with pytest.raises(ValidationError) as info:
        app.run(lambda ctx: ctx.table("answers").get_x(answer).patch({"action_id": user}))
    assert "_scheduled_functions" in str(info.value)
    jid = new_job(app)
    app.run(lambda ctx: ctx.scheduler.cancel(jid))
    app.run(lambda ctx: ctx.table("answers").get_x(answer).patch({"action_id": jid}))
    assert app.run(lambda ctx: ctx.table("answers").get_x(answer).edge("action").state.kind) == "canceled"


# -- reading the job through the edge ---------------------------------------------------


def test_the_edge_returns_the_job_document(app: Any, user: str, clock: Any) -> None:
    answer = app.run_mutation(app.f["create_answer"], {"question": "why?", "user_id": user, "delay": 5000})
    created = clock.now()

    def read(ctx: Any) -> dict[str, Any]:
        a = ctx.table("answers").get_x(answer)
        action = a.edge("action")
        assert action == a.edge_x("action")
        assert action == ctx.table("_scheduled_functions").get(a.action_id)
        assert action.doc() == ctx.db.system.get(a.action_id)
        assert action.state.kind == action["state"]["kind"] == "pending"
        return action.doc()  # type: ignore[no-any-return]

    doc = app.run(read)
    assert doc["_id"] == action_id(app, answer)
    assert doc["name"] == app.f["generate"].name
    assert doc["args"] == {"answer_id": answer}
    assert doc["scheduled_time"] == created + 5000
    assert doc["_creation_time"] == created
    assert doc["state"] == {"kind": "pending"}
    assert "completed_time" not in doc

    clock.advance(5000)
    app.finish_in_progress_scheduled_functions()
    done = app.run(lambda ctx: ctx.table("answers").get_x(answer).edge("action").doc())
    assert done["state"] == {"kind": "success"}
    assert done["completed_time"] == created + 5000
    assert app.run(lambda ctx: ctx.table("answers").get_x(answer).answer) == "42"


def test_a_failed_job_reads_as_failed_with_its_error(app: Any, user: str) -> None:
    answer = app.run_mutation(app.f["create_answer"], {"question": "q", "user_id": user, "action": "fail"})
    app.finish_in_progress_scheduled_functions()
    state_doc = app.run(lambda ctx: ctx.table("answers").get_x(answer).edge("action").state)
    assert state_doc["kind"] == "failed"
    assert "the model is down" in state_doc["error"]


def test_the_edge_is_none_when_unset_and_edge_x_raises(app: Any, user: str) -> None:
    answer = app.run(lambda ctx: ctx.table("answers").insert({"question": "q", "user_id": user}))

    def read(ctx: Any) -> None:
        a = ctx.table("answers").get_x(answer)
        assert a.action_id is None
        assert a.edge("action") is None
        with pytest.raises(EntNotFoundError) as info:
            a.edge_x("action")
        assert info.value.table == "answers" and info.value.id == answer
        assert 'Edge "action"' in str(info.value)

    app.run(read)


def test_the_edge_is_none_once_the_job_is_purged_seven_days_after_completion(app: Any, user: str, clock: Any) -> None:
    answer = app.run_mutation(app.f["create_answer"], {"question": "q", "user_id": user})
    app.finish_in_progress_scheduled_functions()
    clock.advance(RETENTION_MS - 1)
    app.finish_in_progress_scheduled_functions()
    assert app.run(lambda ctx: ctx.table("answers").get_x(answer).edge("action").state.kind) == "success"
    clock.advance(2)
    app.finish_in_progress_scheduled_functions()

    def read(ctx: Any) -> None:
        a = ctx.table("answers").get_x(answer)
        assert a.action_id is not None  # the field still holds the id
        assert a.edge("action") is None
        with pytest.raises(EntNotFoundError):
            a.edge_x("action")

    app.run(read)
    assert app.run_query(app.f["list_answers"]) == [{"question": "q", "status": "stale"}]
    # The ent itself can still be deleted.
    app.run(lambda ctx: ctx.table("answers").get_x(answer).delete())


def test_the_seed_status_listing(app: Any, user: str, clock: Any) -> None:
    app.run_mutation(app.f["create_answer"], {"question": "now", "user_id": user})
    app.run_mutation(app.f["create_answer"], {"question": "later", "user_id": user, "delay": 60_000})
    app.run_mutation(app.f["create_answer"], {"question": "broken", "user_id": user, "action": "fail"})
    app.run(lambda ctx: ctx.table("answers").insert({"question": "never scheduled", "user_id": user}))
    listing = app.f["list_answers"]
    assert app.run_query(listing) == [
        {"question": "now", "status": "pending"},
        {"question": "later", "status": "pending"},
        {"question": "broken", "status": "pending"},
        {"question": "never scheduled", "status": "stale"},
    ]
    app.finish_in_progress_scheduled_functions()
    assert [r["status"] for r in app.run_query(listing)] == ["success", "pending", "failed", "stale"]
    # The same listing through a client, as an untrusted caller would see it.
    assert [r["status"] for r in app.client().query(listing)] == ["success", "pending", "failed", "stale"]


def count_statements(monkeypatch: Any, fn: Any) -> tuple[Any, list[str]]:
    """Run ``fn()`` and return its result with every SQL statement it executed."""
    statements: list[str] = []
    original = Transaction.execute

    def counting(self: Transaction, sql: str, params: Any = ()) -> Any:
        statements.append(sql)
        return original(self, sql, params)

    with monkeypatch.context() as m:
        m.setattr(Transaction, "execute", counting)
        result = fn()
    return result, statements


@pytest.mark.parametrize("rows", [3, 120])
def test_the_listing_loads_every_job_in_a_bounded_number_of_queries(app: Any, user: str, monkeypatch: Any, rows: int) -> None:
    def seed(ctx: Any) -> None:
        for i in range(rows):
            aid = ctx.table("answers").insert({"question": f"q{i}", "user_id": user})
            if i % 3:  # a third of them have no job
                job_id = ctx.scheduler.run_after(1000 * i, app.f["generate"], {"answer_id": aid})
                ctx.table("answers").get_x(aid).patch({"action_id": job_id})

    app.run(seed)
    result, statements = count_statements(monkeypatch, lambda: app.run_query(app.f["list_answers"]))
    assert len(result) == rows
    assert [r["status"] for r in result] == ["stale" if i % 3 == 0 else "pending" for i in range(rows)]
    job_reads = [s for s in statements if "_scheduled_functions" in s]
    # One read of the answers and one IN (...) query for all their jobs, whatever the row count.
    assert len(job_reads) == 1, job_reads
    assert len(statements) <= 3, statements


def test_jobs_are_batch_loaded_through_a_one_to_many_edge_too(app: Any, user: str, monkeypatch: Any) -> None:
    for i in range(40):
        app.run_mutation(app.f["create_answer"], {"question": f"q{i}", "user_id": user, "delay": 1000})

    def listing(ctx: Any) -> list[str]:
        owner = ctx.table("users").get_x(user)
        return owner.edge("answers").map(lambda a: a.edge("action").state.kind)  # type: ignore[no-any-return]

    result, statements = count_statements(monkeypatch, lambda: app.run(listing))
    assert result == ["pending"] * 40
    assert len([s for s in statements if "_scheduled_functions" in s]) == 1, statements


def test_a_job_read_in_a_mutation_reflects_writes_made_since(app: Any, user: str) -> None:
    app.run_mutation(app.f["create_answer"], {"question": "a", "user_id": user, "delay": 1000})
    app.run_mutation(app.f["create_answer"], {"question": "b", "user_id": user, "delay": 1000})

    def body(ctx: Any) -> list[str]:
        first, second = ctx.table("answers").collect()
        assert first.edge("action").state.kind == "pending"
        ctx.scheduler.cancel(second.action_id)
        return [first.edge("action").state.kind, second.edge("action").state.kind]

    assert app.run(body) == ["pending", "canceled"]


# -- deletion ---------------------------------------------------------------------------


def test_deleting_the_ent_cancels_its_pending_job(app: Any, user: str, clock: Any) -> None:
    answer = app.run_mutation(app.f["create_answer"], {"question": "q", "user_id": user, "delay": 1000})
    jid = action_id(app, answer)
    other = app.run_mutation(app.f["create_answer"], {"question": "other", "user_id": user, "delay": 1000})
    app.run(lambda ctx: ctx.table("answers").get_x(answer).delete())
    assert state(app, jid) == "canceled"
    assert job(app, jid)["completed_time"] == clock.now()  # type: ignore[index]
    clock.advance(1000)
    assert app.finish_in_progress_scheduled_functions() == 1  # only the other answer's job ran
    assert state(app, jid) == "canceled"
    assert state(app, action_id(app, other)) == "success"


def test_ctx_db_delete_cancels_too(app: Any, user: str) -> None:
    answer = app.run_mutation(app.f["create_answer"], {"question": "q", "user_id": user, "delay": 1000})
    jid = action_id(app, answer)
    app.run(lambda ctx: ctx.db.delete(answer))
    assert state(app, jid) == "canceled"


def test_a_cascading_delete_cancels_every_pending_job(app: Any, user: str, clock: Any) -> None:
    answers = [
        app.run_mutation(app.f["create_answer"], {"question": f"q{i}", "user_id": user, "delay": 1000 * (i + 1)})
        for i in range(5)
    ]
    jobs = [action_id(app, a) for a in answers]
    bob = app.run(lambda ctx: ctx.table("users").insert({"name": "bob"}))
    bobs = app.run_mutation(app.f["create_answer"], {"question": "bob's", "user_id": bob, "delay": 1000})
    app.run(lambda ctx: ctx.table("users").get_x(user).delete())
    assert app.run(lambda ctx: ctx.table("answers").collect()) != []
    assert [state(app, j) for j in jobs] == ["canceled"] * 5
    assert state(app, action_id(app, bobs)) == "pending"
    app.finish_all_scheduled_functions()
    assert [state(app, j) for j in jobs] == ["canceled"] * 5
    assert state(app, action_id(app, bobs)) == "success"


def test_a_running_action_goes_on_but_ends_canceled(app: Any, user: str) -> None:
    answer = app.run_mutation(app.f["create_answer"], {"question": "q", "user_id": user, "action": "slow"})
    jid = action_id(app, answer)
    runner = threading.Thread(target=app.finish_in_progress_scheduled_functions)
    runner.start()
    try:
        assert app.gate["started"].wait(120), "the action never started"
        assert app.run(lambda ctx: ctx.table("answers").get_x(answer).edge("action").state.kind) == "inProgress"
        app.run(lambda ctx: ctx.table("users").get_x(user).delete())  # cascades to the answer
        assert state(app, jid) == "canceled"
    finally:
        app.gate["proceed"].set()
        runner.join(120)
    assert not runner.is_alive()
    assert state(app, jid) == "canceled"
    # The action ran to its end, but what it scheduled after the cancel never runs.
    assert events(app) == ["action went on"]
    scheduled = app.run(
        lambda ctx: ctx.table("_scheduled_functions").filter(lambda q: q.eq(q.field("name"), app.f["record"].name)).docs()
    )
    assert sorted(d["args"]["what"] for d in scheduled) == ["scheduled by its mutation", "scheduled by the action"]
    assert {d["state"]["kind"] for d in scheduled} == {"canceled"}


@pytest.mark.parametrize("action", ["generate", "fail"])
def test_a_finished_job_is_left_alone_and_the_delete_succeeds(app: Any, user: str, action: str) -> None:
    answer = app.run_mutation(app.f["create_answer"], {"question": "q", "user_id": user, "action": action})
    jid = action_id(app, answer)
    app.finish_in_progress_scheduled_functions()
    before = job(app, jid)
    app.run(lambda ctx: ctx.table("users").get_x(user).delete())
    assert app.run(lambda ctx: ctx.table("answers").get(answer)) is None
    assert job(app, jid) == before
    assert state(app, jid) == ("success" if action == "generate" else "failed")


def test_an_already_canceled_job_is_left_alone(app: Any, user: str) -> None:
    answer = app.run_mutation(app.f["create_answer"], {"question": "q", "user_id": user, "delay": 1000})
    jid = action_id(app, answer)
    app.run(lambda ctx: ctx.scheduler.cancel(jid))
    before = job(app, jid)
    app.run(lambda ctx: ctx.table("answers").get_x(answer).delete())
    assert job(app, jid) == before


def test_soft_deletion_leaves_the_job_alone(app: Any, clock: Any) -> None:
    def create(ctx: Any) -> tuple[str, str]:
        jid = ctx.scheduler.run_after(1000, app.f["record"], {"what": "note job"})
        return str(ctx.table("notes").insert({"text": "n", "job_id": jid})), str(jid)

    note, jid = app.run(create)
    app.run(lambda ctx: ctx.table("notes").get_x(note).delete())
    assert app.run(lambda ctx: ctx.table("notes").get_x(note).deletion_time) == clock.now()
    assert state(app, jid) == "pending"
    app.finish_all_scheduled_functions()
    assert state(app, jid) == "success" and events(app) == ["note job"]
    # A hard delete of the soft-deleted note (ctx.db.delete) still follows the edge; the job is finished by now.
    app.run(lambda ctx: ctx.db.delete(note))
    assert state(app, jid) == "success"


def test_hard_deleting_a_soft_deletion_table_cancels(app: Any) -> None:
    def create(ctx: Any) -> tuple[str, str]:
        jid = ctx.scheduler.run_after(1000, app.f["record"], {"what": "note job"})
        return str(ctx.table("notes").insert({"text": "n", "job_id": jid})), str(jid)

    note, jid = app.run(create)
    app.run(lambda ctx: ctx.db.delete(note))
    assert state(app, jid) == "canceled"


def test_without_hard_deletion_the_job_is_independent(app: Any, user: str) -> None:
    def create(ctx: Any) -> tuple[str, str]:
        jid = ctx.scheduler.run_after(1000, app.f["record"], {"what": "draft job"})
        return str(ctx.table("drafts").insert({"text": "d", "user_id": user, "job_ref": jid})), str(jid)

    draft, jid = app.run(create)
    assert app.run(lambda ctx: ctx.table("drafts").get_x(draft).edge("job")._id) == jid
    app.run(lambda ctx: ctx.table("users").get_x(user).delete())  # cascades to the draft
    assert app.run(lambda ctx: ctx.table("drafts").get(draft)) is None
    assert state(app, jid) == "pending"
    app.finish_all_scheduled_functions()
    assert state(app, jid) == "success" and events(app) == ["draft job"]


def test_a_rolled_back_delete_cancels_nothing(app: Any, user: str) -> None:
    answer = app.run_mutation(app.f["create_answer"], {"question": "q", "user_id": user, "delay": 1000})
    jid = action_id(app, answer)

    def body(ctx: Any) -> None:
        ctx.table("users").get_x(user).delete()
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        app.run(body)
    assert state(app, jid) == "pending"


def test_a_plain_id_field_to_jobs_does_not_cascade(make_app: Any) -> None:
    """``Id["_scheduled_functions"]`` is the vanilla-Convex way (seed 000): no edge, no cancel."""
    app = make_app(define_ent_schema({"answers": define_ent({"question": str, "action_id": Id["_scheduled_functions"]})}))
    noop = app.internal_mutation(lambda ctx: None, name="noop")

    def create(ctx: Any) -> tuple[str, str]:
        jid = ctx.scheduler.run_after(1000, noop, {})
        return str(ctx.table("answers").insert({"question": "q", "action_id": jid})), str(jid)

    answer, jid = app.run(create)

    def status(ctx: Any) -> list[str]:
        return ctx.table("answers").map(  # type: ignore[no-any-return]
            lambda a: (ctx.table("_scheduled_functions").get(a.action_id) or {"state": {"kind": "stale"}})["state"]["kind"]
        )

    assert app.run(status) == ["pending"]
    app.run(lambda ctx: ctx.table("answers").get_x(answer).delete())
    assert state(app, jid) == "pending"


def test_a_scheduled_mutation_that_deletes_its_own_ent_ends_success(make_app: Any, clock: Any) -> None:
    """A self-destructing message: the job deletes the ent whose edge points at the job."""
    app = make_app(
        define_ent_schema({"messages": define_ent({"body": str}).edge("expiry", to="_scheduled_functions", deletion="hard")})
    )

    @app.internal_mutation
    def destroy(ctx: Any, message_id: str) -> None:
        ctx.table("messages").get_x(message_id).delete()

    def send(ctx: Any) -> tuple[str, str]:
        mid = ctx.table("messages").insert({"body": "gone soon"})
        jid = ctx.scheduler.run_after(1000, destroy, {"message_id": mid})
        ctx.table("messages").get_x(mid).patch({"expiry_id": jid})
        return str(mid), str(jid)

    mid, jid = app.run(send)
    clock.advance(1000)
    assert app.finish_in_progress_scheduled_functions() == 1
    assert app.run(lambda ctx: ctx.table("messages").get(mid)) is None
    assert state(app, jid) == "success"
