"""Convex Ents' rules tests (``test/convex/rules.test.ts``), ported.

The rules are those of the test project (``rules.ts``): the viewer is the first user created
(read without rules); a secret is visible only to its owner; anyone but the viewer may not
create one, nobody may delete one, and its owner cannot change. Each ``t.run`` of the original
is one ``app.run`` here, so the rules (and the viewer) are built anew for each.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from ents import App
from tests.convex_ents.conftest import ents_app

STARK = {"name": "Stark", "email": "tony@stark.com"}
MUSK = {"name": "Musk", "email": "elon@musk.com"}
JOBS = {"name": "Jobs", "email": "steve@jobs.com"}

def get_viewer_id(ctx: Any) -> str | None:
    """``getViewerId``: the first user, read without rules."""
    first = ctx.skip_rules.table("users").first()
    return first._id if first is not None else None


def secret_rules(ctx: Any) -> dict[str, Any]:
    """``getEntDefinitionsWithRules`` of ``rules.ts``."""
    from ents import Rules

    viewer_id = get_viewer_id(ctx)

    def read(secret: Any) -> bool:
        return bool(viewer_id == secret.owner_id)

    def write(change: Any) -> bool:
        if change.operation == "delete":
            return False
        if change.operation == "create":
            return bool(viewer_id == change.value["owner_id"])
        return "owner_id" not in change.value or change.value["owner_id"] == change.ent.owner_id

    return {"secrets": Rules(read=read, write=write)}


def rules_app(make_app: Callable[..., App]) -> App:
    """The test project's App with its rules."""
    from tests.convex_ents.schema import build_schema

    return ents_app(make_app, build_schema(), rules=secret_rules)


def two_users_with_a_secret_each(app: App) -> None:
    """The first ``t.run`` of the read-rule tests."""

    def body(ctx: Any) -> None:
        user1_id, user2_id = ctx.table("users").insert_many([{**STARK, "height": 3}, MUSK])
        ctx.skip_rules.table("secrets").insert_many(
            [{"value": "chicka blah", "owner_id": user1_id}, {"value": "bada boom", "owner_id": user2_id}]
        )

    app.run(body)


def add_viewer(app: App) -> None:
    """``addViewer``: the first user, who is the viewer from then on."""
    app.run(lambda ctx: ctx.table("users").insert(STARK))


def test_rules_query(make_app: Callable[..., App]) -> None:
    # "rules - query" (rules.test.ts); first created user is set as viewer
    app = rules_app(make_app)
    two_users_with_a_secret_each(app)

    def body(ctx: Any) -> None:
        secrets = list(ctx.table("secrets"))
        assert len(secrets) == 1

    app.run(body)


def test_rules_first_x(make_app: Callable[..., App]) -> None:
    # "rules - firstX" (rules.test.ts); first created user is set as viewer
    app = rules_app(make_app)
    two_users_with_a_secret_each(app)

    def body(ctx: Any) -> None:
        secret = ctx.table("secrets").order("desc").first_x()
        assert secret is not None

    app.run(body)


def test_rules_edge(make_app: Callable[..., App]) -> None:
    # "rules - edge" (rules.test.ts); first created user is set as viewer
    app = rules_app(make_app)
    two_users_with_a_secret_each(app)

    def body(ctx: Any) -> None:
        first_user, second_user = ctx.table("users").take(2)
        viewer_secret = first_user.edge("secret")
        assert viewer_secret is not None and viewer_secret.value == "chicka blah"
        other_secret = second_user.edge("secret")
        assert other_secret is None

    app.run(body)


def test_write_rule_on_insert(make_app: Callable[..., App]) -> None:
    # "write rule on insert" (rules.test.ts)
    from ents import RuleError

    app = rules_app(make_app)
    add_viewer(app)

    def body(ctx: Any) -> None:
        viewer = ctx.table("users").first_x()
        other_user_id = ctx.table("users").insert(JOBS)
        # rules.ts: This works because the viewer is writing
        ctx.table("secrets").insert({"value": "123", "owner_id": viewer._id})
        # rules.ts: We only allow the viewer to create secrets
        with pytest.raises(RuleError, match=re.escape('Cannot insert into table "secrets":')):
            ctx.table("secrets").insert({"value": "123", "owner_id": other_user_id})

    app.run(body)


def test_write_rule_on_delete(make_app: Callable[..., App]) -> None:
    # "write rule on delete" (rules.test.ts)
    from ents import RuleError

    app = rules_app(make_app)
    add_viewer(app)

    def body(ctx: Any) -> None:
        viewer = ctx.table("users").first_x()
        secret = ctx.table("secrets").insert({"value": "123", "owner_id": viewer._id}).get()
        # rules.ts: We don't allow anyone to delete a secret
        with pytest.raises(RuleError, match=re.escape('Cannot delete from table "secrets" with ID')):
            secret.delete()

    app.run(body)


def test_read_rule_on_patch(make_app: Callable[..., App]) -> None:
    # "read rule on patch" (rules.test.ts)
    from ents import EntsError

    app = rules_app(make_app)
    add_viewer(app)

    def body(ctx: Any) -> None:
        other_user_id = ctx.table("users").insert(JOBS)
        secret_id = ctx.skip_rules.table("secrets").insert({"value": "123", "owner_id": other_user_id})

        # rules.ts: Only owners can see and update their secrets. The original's lazy `getX`
        # reads nothing before the patch, whose rule check refuses it ("Cannot update document
        # with ID"); Python's `get_x` reads at once, and the read rule hides the secret from it.
        with pytest.raises(EntsError):
            ctx.table("secrets").get_x(secret_id).patch({"value": "456"})
        assert ctx.skip_rules.table("secrets").get_x(secret_id).value == "123"

    app.run(body)


def test_write_rule_on_patch(make_app: Callable[..., App]) -> None:
    # "write rule on patch" (rules.test.ts)
    from ents import RuleError

    app = rules_app(make_app)
    add_viewer(app)

    def body(ctx: Any) -> None:
        other_user_id = ctx.table("users").insert(JOBS)
        viewer_id = get_viewer_id(ctx)
        secret_id = ctx.skip_rules.table("secrets").insert({"value": "123", "owner_id": viewer_id})

        # rules.ts: The user edge is immutable
        with pytest.raises(RuleError, match=re.escape("Cannot update document with ID")):
            ctx.table("secrets").get_x(secret_id).patch({"owner_id": other_user_id})

        # This is ok
        ctx.table("secrets").get_x(secret_id).patch({"value": "456"})

    app.run(body)


def test_read_rule_on_replace(make_app: Callable[..., App]) -> None:
    # "read rule on replace" (rules.test.ts)
    from ents import EntsError

    app = rules_app(make_app)
    add_viewer(app)

    def body(ctx: Any) -> None:
        other_user_id = ctx.table("users").insert(JOBS)
        secret_id = ctx.skip_rules.table("secrets").insert({"value": "123", "owner_id": other_user_id})

        # rules.ts: Only owners can see and update their secrets (see "read rule on patch")
        with pytest.raises(EntsError):
            ctx.table("secrets").get_x(secret_id).replace({"owner_id": other_user_id, "value": "456"})
        assert ctx.skip_rules.table("secrets").get_x(secret_id).value == "123"

    app.run(body)


def test_write_rule_on_replace(make_app: Callable[..., App]) -> None:
    # "write rule on replace" (rules.test.ts)
    from ents import RuleError

    app = rules_app(make_app)
    add_viewer(app)

    def body(ctx: Any) -> None:
        other_user_id = ctx.table("users").insert(JOBS)
        viewer_id = get_viewer_id(ctx)
        secret_id = ctx.skip_rules.table("secrets").insert({"value": "123", "owner_id": viewer_id})

        # rules.ts: The user edge is immutable
        with pytest.raises(RuleError, match=re.escape("Cannot update document with ID")):
            ctx.table("secrets").get_x(secret_id).replace({"owner_id": other_user_id, "value": "456"})

        # This is ok
        ctx.table("secrets").get_x(secret_id).replace({"owner_id": viewer_id, "value": "456"})

    app.run(body)
