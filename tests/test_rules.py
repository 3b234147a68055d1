"""Rules (Convex Ents' ``addEntRules``): read rules hide ents from every read through
``ctx.table``, write rules allow or refuse creates, updates and deletes (cascades included),
``ctx.skip_rules`` and ``ctx.db`` read and write without them, and scheduled functions and
crons run with them and no identity."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest

from ents import (
    App,
    ConfigurationError,
    ContextError,
    EntNotFoundError,
    EntsError,
    NotUniqueError,
    ReadOnlyError,
    RuleError,
    Rules,
    WriteChange,
    cron_jobs,
    define_ent,
    define_ent_schema,
)

ADA = {"token": "ada"}
BOB = {"token": "bob"}
MINUTE = 60_000


def rules_schema() -> Any:
    return define_ent_schema(
        {
            "users": define_ent({"name": str}).field("token", str, unique=True).edges("secrets", ref="owner_id"),
            "secrets": define_ent({"value": str})
            .field("code", str, unique=True)
            .field("hidden", bool, default=False)
            .field("locked", bool, default=False)
            .edge("owner", to="users", field="owner_id")
            .edge("note", ref=True)
            .edges("tags"),
            "notes": define_ent({"text": str}).edge("secret").deletion("soft"),
            "tags": define_ent({"name": str}).edges("secrets"),
            "logs": define_ent({"line": str}),
            "drafts": define_ent({"text": str}).deletion("scheduled", delay_ms=MINUTE),
        }
    )


def viewer_id(ctx: Any) -> str | None:
    """The caller's user, looked up without rules (the rules need it to exist)."""
    identity = ctx.auth.get_user_identity()
    if identity is None:
        return None
    user = ctx.skip_rules.table("users").get("token", identity["token"])
    return None if user is None else str(user._id)


def make_rules(calls: list[Any], changes: list[WriteChange]) -> Any:
    def rules(ctx: Any) -> dict[str, Rules]:
        calls.append(ctx)
        viewer = viewer_id(ctx)

        def write_secret(change: WriteChange) -> bool:
            changes.append(change)
            if change.operation == "create":
                assert change.value is not None
                return bool(change.value.get("owner_id") == viewer)
            if change.operation == "update":  # the owner cannot change
                assert change.value is not None
                return bool(change.value.get("owner_id", change.ent.owner_id) == change.ent.owner_id)
            return not change.ent.locked

        return {
            "secrets": Rules(read=lambda s: s.owner_id == viewer and not s.hidden, write=write_secret),
            "notes": Rules(
                read=lambda n: n.text != "hidden",
                write=lambda c: c.operation != "delete" or c.ent.text != "keep",
            ),
            "drafts": Rules(write=lambda c: c.operation != "delete" or c.ent.text != "keep"),
        }

    return rules


@pytest.fixture
def t(make_app: Any) -> Any:
    """An App with rules on secrets and notes, seeded without them: ada owns secrets a1 and
    a2, bob owns b1; a1 and b1 have a note; tag t1 links a1 and b1."""
    calls: list[Any] = []
    changes: list[WriteChange] = []
    app = make_app(rules_schema(), rules=make_rules(calls, changes))

    def seed(ctx: Any) -> dict[str, str]:
        table = ctx.skip_rules.table
        ada, bob = table("users").insert_many([{"name": "Ada", "token": "ada"}, {"name": "Bob", "token": "bob"}])
        a1, a2, b1 = table("secrets").insert_many(
            [
                {"value": "ada's first", "code": "a1", "owner_id": ada},
                {"value": "ada's second", "code": "a2", "owner_id": ada},
                {"value": "bob's", "code": "b1", "owner_id": bob},
            ]
        )
        na1 = table("notes").insert({"text": "on a1", "secret_id": a1})
        nb1 = table("notes").insert({"text": "on b1", "secret_id": b1})
        t1 = table("tags").insert({"name": "t1", "secrets": [a1, b1]})
        return {k: str(v) for k, v in dict(ada=ada, bob=bob, a1=a1, a2=a2, b1=b1, na1=na1, nb1=nb1, t1=t1).items()}

    ids = app.run(seed)
    calls.clear()
    changes.clear()
    return SimpleNamespace(app=app, ids=ids, calls=calls, changes=changes)


def run(t: Any, fn: Any, who: Any = ADA) -> Any:
    return t.app.run(fn, identity=who)


def codes(ents: Any) -> list[str]:
    return [e.code for e in ents]


def everything(t: Any) -> dict[str, Any]:
    """Every document of every table, read without rules."""
    return t.app.run(
        lambda ctx: {name: ctx.skip_rules.table(name).docs() for name in ("users", "secrets", "notes", "tags", "logs", "drafts")}
    )


# -- reads ----------------------------------------------------------------------------------


def test_queries_yield_only_the_ents_the_read_rule_allows(t: Any) -> None:
    def read(ctx: Any) -> dict[str, Any]:
        q = ctx.table("secrets")
        return {
            "iter": codes(q),
            "collect": codes(q.collect()),
            "len": len(q),
            "map": q.map(lambda s: s.code),
            "docs": [d["code"] for d in q.docs()],
            "desc": codes(q.order("desc")),
            "filter": codes(q.filter(lambda f: f.neq(f.field("code"), "a1"))),
            "index": codes(ctx.table("secrets", "owner_id", lambda r: r.eq("owner_id", t.ids["bob"]))),
            "item": q.order("desc")[0].code,
            "bool": bool(ctx.table("secrets", "owner_id", lambda r: r.eq("owner_id", t.ids["bob"]))),
        }

    assert run(t, read) == {
        "iter": ["a1", "a2"],
        "collect": ["a1", "a2"],
        "len": 2,
        "map": ["a1", "a2"],
        "docs": ["a1", "a2"],
        "desc": ["a2", "a1"],
        "filter": ["a2"],
        "index": [],
        "item": "a2",
        "bool": False,
    }
    assert run(t, lambda ctx: codes(ctx.table("secrets")), BOB) == ["b1"]
    assert run(t, lambda ctx: codes(ctx.table("secrets")), None) == []
    # A table without rules reads as always.
    assert run(t, lambda ctx: [u.name for u in ctx.table("users")], None) == ["Ada", "Bob"]


def test_get_is_none_and_get_x_raises_for_an_ent_the_read_rule_hides(t: Any) -> None:
    ids = t.ids
    assert run(t, lambda ctx: ctx.table("secrets").get(ids["a1"]).code) == "a1"
    assert run(t, lambda ctx: ctx.table("secrets").get(ids["b1"])) is None
    assert run(t, lambda ctx: ctx.table("secrets").get("code", "b1")) is None
    assert run(t, lambda ctx: ctx.table("secrets").get("code", "a2").code) == "a2"
    with pytest.raises(EntNotFoundError, match=re.escape(f'Document cannot be read with id `{ids["b1"]}` in table "secrets"')) as exc:
        run(t, lambda ctx: ctx.table("secrets").get_x(ids["b1"]))
    assert exc.value.table == "secrets" and exc.value.id == ids["b1"]
    with pytest.raises(EntNotFoundError, match="cannot be read"):
        run(t, lambda ctx: ctx.table("secrets").get_x("code", "b1"))
    # A document that does not exist is still "not found".
    run(t, lambda ctx: ctx.skip_rules.table("secrets").get_x(ids["a2"]).delete())
    with pytest.raises(EntNotFoundError, match="Document not found"):
        run(t, lambda ctx: ctx.table("secrets").get_x(ids["a2"]))
    # The id an insert returns reads with the rules of the ctx.table it came from.
    assert run(t, lambda ctx: ctx.table("secrets").insert({"value": "v", "code": "a3", "owner_id": ids["ada"]}).get().code) == "a3"


def test_get_many_has_none_for_hidden_ents_and_get_many_x_raises(t: Any) -> None:
    ids = t.ids
    many = [ids["a1"], ids["b1"], ids["a2"]]
    assert run(t, lambda ctx: [e and e.code for e in ctx.table("secrets").get_many(many)]) == ["a1", None, "a2"]
    assert run(t, lambda ctx: [e and e.code for e in ctx.table("secrets").get_many("code", ["b1", "a2"])]) == [None, "a2"]
    assert run(t, lambda ctx: codes(ctx.table("secrets").get_many_x([ids["a2"], ids["a1"]]))) == ["a2", "a1"]
    with pytest.raises(EntNotFoundError, match=re.escape(f"Document cannot be read with id `{ids['b1']}`")):
        run(t, lambda ctx: ctx.table("secrets").get_many_x(many))


def test_take_first_and_unique_read_past_hidden_ents(t: Any) -> None:
    ids = t.ids
    # Many of bob's secrets come before ada's next ones: take(n) still finds n of ada's.
    run(t, lambda ctx: ctx.skip_rules.table("secrets").insert_many(
        [{"value": "x", "code": f"b{i}", "owner_id": ids["bob"]} for i in range(2, 152)]
        + [{"value": "x", "code": f"a{i}", "owner_id": ids["ada"]} for i in range(3, 6)]
    ))
    assert run(t, lambda ctx: codes(ctx.table("secrets").take(4))) == ["a1", "a2", "a3", "a4"]
    assert run(t, lambda ctx: codes(ctx.table("secrets").order("desc").take(2)), BOB) == ["b151", "b150"]
    assert run(t, lambda ctx: ctx.table("secrets").order("desc").first().code) == "a5"
    assert run(t, lambda ctx: ctx.table("secrets").order("desc").first_x().code) == "a5"
    assert run(t, lambda ctx: ctx.table("secrets").first(), None) is None
    with pytest.raises(EntNotFoundError):
        run(t, lambda ctx: ctx.table("secrets").first_x(), None)
    # unique() counts only the ents the viewer sees
    only_a1 = lambda ctx: ctx.table("secrets").filter(lambda q: q.or_(q.eq(q.field("code"), "a1"), q.eq(q.field("code"), "b1")))  # noqa: E731
    assert run(t, lambda ctx: only_a1(ctx).unique().code) == "a1"
    assert run(t, lambda ctx: only_a1(ctx).unique_x().code) == "a1"
    with pytest.raises(NotUniqueError):
        run(t, lambda ctx: ctx.table("secrets").unique())
    with pytest.raises(EntNotFoundError):
        run(t, lambda ctx: only_a1(ctx).unique_x(), None)
    assert run(t, lambda ctx: ctx.table("secrets").take(0).collect()) == []


def test_pages_hold_the_allowed_ents_of_what_was_read_and_stay_exact(t: Any) -> None:
    ids = t.ids
    run(t, lambda ctx: ctx.skip_rules.table("secrets").insert_many(
        [{"value": "x", "code": f"{'a' if i % 2 else 'b'}{i + 10}", "owner_id": ids["ada" if i % 2 else "bob"]} for i in range(12)]
    ))
    expected = run(t, lambda ctx: codes(ctx.table("secrets")))
    assert len(expected) == 8
    seen: list[str] = []
    sizes: list[int] = []
    cursor = None
    for _ in range(20):
        page = run(t, lambda ctx, c=cursor: ctx.table("secrets").paginate({"num_items": 4, "cursor": c}))
        sizes.append(len(page["page"]))
        seen += codes(page["page"])
        cursor = page["continue_cursor"]
        if page["is_done"]:
            break
        # a secret of bob's added between pages changes nothing for ada
        run(t, lambda ctx, n=len(seen): ctx.skip_rules.table("secrets").insert({"value": "x", "code": f"new{n}", "owner_id": ids["bob"]}))
    assert seen == expected
    assert all(n <= 4 for n in sizes) and min(sizes) < 4  # a page may hold fewer than asked
    # Edge queries paginate the same way.
    page = run(t, lambda ctx: ctx.table("tags").get_x(ids["t1"]).edge("secrets").paginate({"num_items": 5, "cursor": None}))
    assert codes(page["page"]) == ["a1"] and page["is_done"]


def test_edges_leave_out_or_refuse_the_ents_the_read_rule_hides(t: Any) -> None:
    ids = t.ids
    run(t, lambda ctx: ctx.skip_rules.table("notes").get_x(ids["na1"]).patch({"text": "hidden"}))

    def read(ctx: Any) -> dict[str, Any]:
        ada, bob = ctx.table("users").get_many([ids["ada"], ids["bob"]])
        note_b1 = ctx.skip_rules.table("notes").get_x(ids["nb1"])
        return {
            "1:many": [codes(u.edge("secrets")) for u in (ada, bob)],
            "many:many": codes(ctx.table("tags").get_x(ids["t1"]).edge("secrets")),
            "field end": ctx.table("notes").get(ids["nb1"]).edge("secret"),
            "ref end (hidden note)": ctx.table("secrets").get_x(ids["a1"]).edge("note"),
            # a batch (cohort) of notes following their edge, and an ent read without rules
            "cohort": [n.edge("secret") and n.edge("secret").code for n in ctx.table("notes")],
            "skip_rules ent": note_b1.edge("secret").code,
            # the edge table alone, as in Convex Ents: not filtered by the read rule
            "ids": sorted(ctx.table("tags").get_x(ids["t1"]).edge("secrets").ids()),
            "has": ctx.table("tags").get_x(ids["t1"]).edge("secrets").has(ids["b1"]),
        }

    assert run(t, read) == {
        "1:many": [["a1", "a2"], []],
        "many:many": ["a1"],
        "field end": None,
        "ref end (hidden note)": None,
        "cohort": [None],  # the note on a1 is hidden, the one on b1 leads to a hidden secret
        "skip_rules ent": "b1",
        "ids": sorted([ids["a1"], ids["b1"]]),
        "has": True,
    }
    with pytest.raises(EntNotFoundError, match=re.escape(f'Document cannot be read with id `{ids["b1"]}` in table "secrets"')):
        run(t, lambda ctx: ctx.table("notes").get_x(ids["nb1"]).edge_x("secret"))
    with pytest.raises(EntNotFoundError, match=re.escape(f'Document cannot be read with id `{ids["na1"]}` in table "notes"')):
        run(t, lambda ctx: ctx.table("secrets").get_x(ids["a1"]).edge_x("note"))


def test_skip_rules_and_ctx_db_read_and_write_without_rules(t: Any) -> None:
    ids = t.ids
    app = t.app

    @app.query
    def all_codes(ctx: Any) -> dict[str, Any]:
        return {
            "table": codes(ctx.table("secrets")),
            "skip_rules": codes(ctx.skip_rules.table("secrets")),
            "skip_rules edge": codes(ctx.skip_rules.table("users").get_x(ids["bob"]).edge("secrets")),
            "db": [d["code"] for d in ctx.db.query("secrets").collect()],
            "db.get": ctx.db.get(ids["b1"])["code"],
        }

    assert app.client(identity=ADA).query(all_codes) == {
        "table": ["a1", "a2"],
        "skip_rules": ["a1", "a2", "b1"],
        "skip_rules edge": ["b1"],
        "db": ["a1", "a2", "b1"],
        "db.get": "b1",
    }

    def writes(ctx: Any) -> None:
        ctx.skip_rules.table("secrets").insert({"value": "v", "code": "b9", "owner_id": ids["bob"]})
        ctx.skip_rules.table("secrets").get_x(ids["b1"]).patch({"owner_id": ids["ada"]})
        ctx.db.patch(ids["a1"], {"owner_id": ids["bob"]})
        ctx.skip_rules.table("secrets").get_x(ids["a2"]).patch({"locked": True})
        ctx.skip_rules.table("secrets").get_x(ids["a2"]).delete()

    run(t, writes)
    assert run(t, lambda ctx: codes(ctx.table("secrets"))) == ["b1"]
    assert run(t, lambda ctx: codes(ctx.table("secrets")), BOB) == ["a1", "b9"]


def test_the_rules_function_runs_once_per_call_when_first_needed(t: Any) -> None:
    app = t.app

    @app.query
    def db_only(ctx: Any) -> int:
        return len(ctx.db.query("secrets").collect()) + len(ctx.skip_rules.table("secrets").collect())

    @app.query
    def several_reads(ctx: Any) -> int:
        return len(ctx.table("users").collect()) + len(ctx.table("secrets").collect()) + len(ctx.table("secrets").collect())

    assert app.run_query(db_only) == 6
    assert t.calls == []
    assert app.client(identity=ADA).query(several_reads) == 6
    assert len(t.calls) == 1
    assert t.calls[0].auth.get_user_identity() == ADA
    app.client(identity=BOB).query(several_reads)
    assert len(t.calls) == 2


# -- writes ---------------------------------------------------------------------------------


def test_an_insert_the_write_rule_refuses_raises_and_inserts_nothing(t: Any) -> None:
    ids = t.ids
    before = everything(t)

    def insert_for_bob(ctx: Any) -> int:
        with pytest.raises(RuleError) as exc:
            ctx.table("secrets").insert({"value": "v", "code": "x1", "owner_id": ids["bob"]})
        assert exc.value.table == "secrets" and exc.value.id is None
        assert str(exc.value).startswith('Cannot insert into table "secrets": ')
        with pytest.raises(RuleError, match=re.escape('Cannot insert into table "secrets": ') + ".*document 1 of insert_many"):
            ctx.table("secrets").insert_many(
                [{"value": "v", "code": "x2", "owner_id": ids["ada"]}, {"value": "v", "code": "x3", "owner_id": ids["bob"]}]
            )
        return len(ctx.skip_rules.table("secrets"))

    assert run(t, insert_for_bob) == 3  # neither write left anything behind in the transaction
    assert everything(t) == before
    assert isinstance(RuleError("x"), EntsError)
    # what the rule allows goes in
    assert run(t, lambda ctx: codes(ctx.table("secrets").get_many(ctx.table("secrets").insert_many(
        [{"value": "v", "code": "x4", "owner_id": ids["ada"]}, {"value": "v", "code": "x5", "owner_id": ids["ada"]}]
    )))) == ["x4", "x5"]


def test_the_write_rule_sees_operation_ent_and_value(t: Any) -> None:
    ids = t.ids

    def writes(ctx: Any) -> None:
        new = ctx.table("secrets").insert({"value": "v", "code": "x1", "owner_id": ids["ada"]})
        stale = ctx.table("secrets").get_x(ids["a1"])
        ctx.skip_rules.table("secrets").get_x(ids["a1"]).patch({"value": "changed meanwhile"})
        stale.patch({"value": "patched"})
        ctx.table("secrets").get_x(new).replace({"_id": new, "value": "w", "code": "x1", "owner_id": ids["ada"]})
        ctx.table("secrets").get_x(ids["a2"]).delete()

    run(t, writes)
    create, update, replace, delete = t.changes
    assert (create.operation, create.ent, create.value) == ("create", None, {"value": "v", "code": "x1", "owner_id": ids["ada"]})
    assert update.operation == "update" and update.value == {"value": "patched"}
    assert update.ent.value == "changed meanwhile"  # the ent as it is now, not as it was read
    assert replace.operation == "update" and replace.value == {"value": "w", "code": "x1", "owner_id": ids["ada"]}
    assert (delete.operation, delete.ent.code, delete.value) == ("delete", "a2", None)


def test_patch_and_replace_the_write_rule_refuses_change_nothing(t: Any) -> None:
    ids = t.ids
    before = everything(t)
    message = re.escape(f'Cannot update document with ID "{ids["a1"]}" in table "secrets": ')

    def writes(ctx: Any) -> None:
        secret = ctx.table("secrets").get_x(ids["a1"])
        with pytest.raises(RuleError, match=message) as exc:
            secret.patch({"owner_id": ids["bob"]})
        assert exc.value.table == "secrets" and exc.value.id == ids["a1"]
        with pytest.raises(RuleError, match=message):
            secret.replace({"value": "v", "code": "a1", "owner_id": ids["bob"]})
        secret.patch({"value": "allowed"})  # the owner stays: allowed

    run(t, writes)
    after = everything(t)
    assert [s["value"] for s in after["secrets"]] == ["allowed", "ada's second", "bob's"]
    assert [s["owner_id"] for s in after["secrets"]] == [s["owner_id"] for s in before["secrets"]]


def test_writes_to_an_ent_the_read_rule_now_hides_are_refused(t: Any) -> None:
    ids = t.ids

    def writes(ctx: Any) -> None:
        secret = ctx.table("secrets").get_x(ids["a1"])  # visible when read ...
        ctx.skip_rules.table("secrets").get_x(ids["a1"]).patch({"hidden": True})  # ... hidden now
        with pytest.raises(RuleError, match=re.escape(f'Cannot update document with ID "{ids["a1"]}" in table "secrets": the read rule')):
            secret.patch({"value": "v"})
        with pytest.raises(RuleError, match=re.escape(f'Cannot update document with ID "{ids["a1"]}" in table "secrets": ')):
            secret.replace({"value": "v", "code": "a1", "owner_id": ids["ada"], "hidden": False})
        with pytest.raises(RuleError, match=re.escape(f'Cannot delete from table "secrets" with ID "{ids["a1"]}": the read rule')):
            secret.delete()

    before = everything(t)
    run(t, writes)
    after = everything(t)
    assert after["secrets"][0] == {**before["secrets"][0], "hidden": True}
    assert after["notes"] == before["notes"] and after["tags"] == before["tags"]


def test_a_delete_the_write_rule_refuses_changes_nothing(t: Any) -> None:
    ids = t.ids
    run(t, lambda ctx: ctx.skip_rules.table("secrets").get_x(ids["a1"]).patch({"locked": True}))
    before = everything(t)

    def delete(ctx: Any) -> None:
        with pytest.raises(RuleError, match=re.escape(f'Cannot delete from table "secrets" with ID "{ids["a1"]}": ')) as exc:
            ctx.table("secrets").get_x(ids["a1"]).delete()
        assert exc.value.table == "secrets" and exc.value.id == ids["a1"]
        assert ctx.skip_rules.table("notes").get(ids["na1"]) is not None  # its cascade undone too

    run(t, delete)
    assert everything(t) == before
    run(t, lambda ctx: ctx.table("secrets").get_x(ids["a2"]).delete())  # allowed
    assert [s["code"] for s in everything(t)["secrets"]] == ["a1", "b1"]


def test_a_query_delete_deletes_what_the_viewer_sees_after_checking_each(t: Any) -> None:
    ids = t.ids
    run(t, lambda ctx: ctx.skip_rules.table("secrets").get_x(ids["a2"]).patch({"locked": True}))
    before = everything(t)
    with pytest.raises(RuleError, match=re.escape(f'Cannot delete from table "secrets" with ID "{ids["a2"]}"')):
        run(t, lambda ctx: ctx.table("secrets").delete())
    assert everything(t) == before
    run(t, lambda ctx: ctx.skip_rules.table("secrets").get_x(ids["a2"]).patch({"locked": False}))
    assert run(t, lambda ctx: ctx.table("secrets").delete()) == 2
    assert [s["code"] for s in everything(t)["secrets"]] == ["b1"]  # bob's, hidden from ada, stays


def test_a_cascading_delete_checks_the_rules_of_every_ent_it_reaches(t: Any) -> None:
    ids = t.ids
    before = everything(t)

    # Deleting ada's user (users have no rules) reaches her secrets, which bob cannot read.
    def bob_deletes_ada(ctx: Any) -> None:
        with pytest.raises(RuleError, match=re.escape(f'Cannot delete from table "secrets" with ID "{ids["a1"]}": the read rule')):
            ctx.table("users").get_x(ids["ada"]).delete()
        assert len(ctx.skip_rules.table("users")) == 2  # the user's own deletion was undone

    run(t, bob_deletes_ada, BOB)
    assert everything(t) == before

    # A cascade two levels down: a1's note refuses its deletion.
    run(t, lambda ctx: ctx.skip_rules.table("notes").get_x(ids["na1"]).patch({"text": "keep"}))
    before = everything(t)
    with pytest.raises(RuleError, match=re.escape(f'Cannot delete from table "notes" with ID "{ids["na1"]}": the write rule')):
        run(t, lambda ctx: ctx.table("users").get_x(ids["ada"]).delete())
    assert everything(t) == before

    run(t, lambda ctx: ctx.skip_rules.table("notes").get_x(ids["na1"]).patch({"text": "fine"}))
    run(t, lambda ctx: ctx.table("users").get_x(ids["ada"]).delete())
    after = everything(t)
    assert [u["name"] for u in after["users"]] == ["Bob"]
    assert [s["code"] for s in after["secrets"]] == ["b1"] and [n["text"] for n in after["notes"]] == ["on b1"]


def test_a_soft_delete_checks_the_rules(t: Any) -> None:
    ids = t.ids
    run(t, lambda ctx: ctx.skip_rules.table("notes").get_x(ids["nb1"]).patch({"text": "keep"}))
    with pytest.raises(RuleError, match=re.escape(f'Cannot delete from table "notes" with ID "{ids["nb1"]}"')):
        run(t, lambda ctx: ctx.table("notes").get_x(ids["nb1"]).delete())
    assert run(t, lambda ctx: ctx.skip_rules.table("notes").get_x(ids["nb1"]).deletion_time) is None
    run(t, lambda ctx: ctx.table("notes").get_x(ids["na1"]).delete())
    assert run(t, lambda ctx: ctx.skip_rules.table("notes").get_x(ids["na1"]).deletion_time) is not None


def test_a_scheduled_deletion_checks_the_rules_now_and_finishes_without_them(t: Any, clock: Any) -> None:
    app = t.app
    keep, other = run(t, lambda ctx: ctx.table("drafts").insert_many([{"text": "keep"}, {"text": "draft"}]))
    jobs = lambda: app.run(lambda ctx: len(ctx.db.system.query("_scheduled_functions").collect()))  # noqa: E731

    def refused(ctx: Any) -> None:
        with pytest.raises(RuleError, match=re.escape(f'Cannot delete from table "drafts" with ID "{keep}"')):
            ctx.table("drafts").get_x(keep).delete()

    run(t, refused)
    assert jobs() == 0  # the job the deletion scheduled went with it
    assert run(t, lambda ctx: ctx.table("drafts").get_x(keep).deletion_time) is None
    run(t, lambda ctx: ctx.table("drafts").get_x(other).delete())
    assert jobs() == 1
    # The rules would refuse it now; the deletion decided earlier finishes all the same.
    run(t, lambda ctx: ctx.table("drafts").get_x(other).patch({"text": "keep"}))
    clock.advance(MINUTE)
    app.finish_in_progress_scheduled_functions()
    assert [d["text"] for d in everything(t)["drafts"]] == ["keep"]


def test_a_patch_that_deletes_children_is_undone_when_a_child_refuses(t: Any) -> None:
    ids = t.ids
    run(t, lambda ctx: ctx.skip_rules.table("secrets").get_x(ids["a2"]).patch({"locked": True}))
    before = everything(t)

    def replace(ctx: Any) -> None:
        with pytest.raises(RuleError, match=re.escape(f'Cannot delete from table "secrets" with ID "{ids["a2"]}"')):
            ctx.table("users").get_x(ids["ada"]).patch({"name": "Ada L.", "secrets": {"remove": [ids["a1"], ids["a2"]]}})

    run(t, replace)
    assert everything(t) == before


def test_an_uncaught_rule_error_rolls_back_the_whole_mutation(t: Any) -> None:
    ids = t.ids
    app = t.app
    before = everything(t)

    @app.mutation
    def two_inserts(ctx: Any) -> None:
        ctx.table("logs").insert({"line": "first"})
        ctx.table("secrets").insert({"value": "v", "code": "x1", "owner_id": ids["ada"]})
        ctx.table("secrets").insert({"value": "v", "code": "x2", "owner_id": ids["bob"]})

    with pytest.raises(RuleError, match=re.escape('Cannot insert into table "secrets": ')):
        app.client(identity=ADA).mutation(two_inserts)
    assert everything(t) == before


def test_a_query_cannot_write_whatever_the_rules_say(t: Any) -> None:
    app = t.app
    ids = t.ids

    @app.query
    def sneaky(ctx: Any) -> None:
        ctx.table("secrets").insert({"value": "v", "code": "x1", "owner_id": ids["ada"]})

    with pytest.raises(ReadOnlyError):
        app.client(identity=ADA).query(sneaky)


# -- scheduled functions and crons ----------------------------------------------------------


def test_scheduled_functions_and_crons_run_with_rules_and_no_identity(t: Any, clock: Any) -> None:
    app = t.app
    ids = t.ids
    crons = cron_jobs()
    app.crons = crons

    @app.internal_mutation
    def audit(ctx: Any, who: str) -> None:
        seen = len(ctx.table("secrets"))
        try:
            ctx.table("secrets").insert({"value": "v", "code": f"by {who}", "owner_id": ids["ada"]})
            outcome = "inserted"
        except RuleError:
            outcome = "refused"
        ctx.table("logs").insert({"line": f"{who}: saw {seen}, {outcome}"})

    @app.mutation
    def audit_later(ctx: Any) -> None:
        audit(ctx, "caller")
        ctx.scheduler.run_after(0, audit, {"who": "job"})

    crons.interval("audit", {"minutes": 1}, audit, {"who": "cron"})
    app.client(identity=ADA).mutation(audit_later)
    app.finish_in_progress_scheduled_functions()
    clock.advance(MINUTE)
    app.finish_in_progress_scheduled_functions()
    lines = [row["line"] for row in everything(t)["logs"]]
    assert lines[:2] == ["caller: saw 2, inserted", "job: saw 0, refused"]
    assert "cron: saw 0, refused" in lines[2:]


# -- mistakes -------------------------------------------------------------------------------


def test_rules_that_are_not_set_up_right_are_refused_clearly(make_app: Any) -> None:
    with pytest.raises(ConfigurationError, match="rules"):
        make_app(rules_schema(), rules={"secrets": Rules()})
    with pytest.raises(ConfigurationError, match="takes a function"):
        Rules(read=True)  # type: ignore[arg-type]

    cases: list[tuple[Any, str]] = [
        (lambda ctx: [Rules()], "must return a dict"),
        (lambda ctx: {"secret": Rules()}, "not a table of the schema"),
        (lambda ctx: {"_storage": Rules()}, "not a table of the schema"),
        (lambda ctx: {"secrets": lambda s: True}, 'The rules of table "secrets" must be Rules'),
        (lambda ctx: {"secrets": Rules(read=lambda s: None)}, 'The read rule of table "secrets" returned NoneType'),
        (lambda ctx: {"secrets": Rules(read=_async_rule)}, "coroutine"),
        (lambda ctx: {"secrets": Rules(read=lambda s: len(ctx.table("users")) > 0)}, None),
        (lambda ctx: {"users": Rules(read=lambda u: True)} if len(ctx.table("users")) else {}, "ctx.skip_rules.table"),
    ]
    for i, (fn, message) in enumerate(cases):
        app = make_app(rules_schema(), rules=fn)  # (on a file or server, the apps share one database)
        app.run(lambda ctx, i=i: ctx.skip_rules.table("secrets").insert({
            "value": "v",
            "code": f"a{i}",
            "owner_id": ctx.skip_rules.table("users").insert({"name": "Ada", "token": f"ada{i}"}),
        }))
        if message is None:  # a rule may read through ctx.table once the rules are built
            assert f"a{i}" in codes(app.run(lambda ctx: ctx.table("secrets").collect()))
            continue
        with pytest.raises(ConfigurationError, match=re.escape(message)):
            app.run(lambda ctx: ctx.table("secrets").collect())


async def _async_rule(ent: Any) -> bool:
    return True


def test_actions_have_no_skip_rules(t: Any) -> None:
    app = t.app

    @app.action
    def act(ctx: Any) -> None:
        ctx.skip_rules.table("secrets")

    with pytest.raises(ContextError, match="ctx.skip_rules"):
        app.run_action(act)


def test_an_app_without_rules_has_skip_rules_too(make_app: Any) -> None:
    app: App = make_app(rules_schema())
    uid = app.run(lambda ctx: ctx.skip_rules.table("users").insert({"name": "Ada", "token": "ada"}))
    assert app.run(lambda ctx: ctx.table("users").get_x(uid).name) == "Ada"


def test_a_soft_deletion_that_reaches_a_refusing_ent_is_undone(make_app: Any) -> None:
    """A soft delete follows a stored 1:1 edge marked deletion="soft" to the other end, whose
    write rule refuses: the first soft deletion, already written, is undone with it."""
    schema = define_ent_schema(
        {
            "docs": define_ent({"title": str}).deletion("soft").edge("cover", deletion="soft"),
            "covers": define_ent({"kind": str}).deletion("soft").edge("doc", ref=True),
        }
    )
    app = make_app(schema, rules=lambda ctx: {"covers": Rules(write=lambda c: c.operation != "delete" or c.ent.kind != "keep")})
    kept, plain = app.run(lambda ctx: [
        ctx.table("docs").insert({"title": kind, "cover_id": ctx.table("covers").insert({"kind": kind})})
        for kind in ("keep", "plain")
    ])

    def delete(ctx: Any) -> Any:
        with pytest.raises(RuleError, match='Cannot delete from table "covers"'):
            ctx.table("docs").get_x(kept).delete()
        ctx.table("docs").get_x(plain).delete()
        return [(d.title, d.deletion_time is None) for d in ctx.skip_rules.table("docs")]

    assert app.run(delete) == [("keep", True), ("plain", False)]
