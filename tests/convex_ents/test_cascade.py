"""Convex Ents' cascade test (``test/convex/cascade.test.ts``), ported."""

from __future__ import annotations

from typing import Any

from ents import App


def test_scheduled_delete(app: App) -> None:
    # "scheduled delete" (cascade.test.ts); the App's clock is a FakeClock (vi.useFakeTimers)
    # and `t.finishAllScheduledFunctions(vi.runAllTimers)` is app.finish_all_scheduled_functions().
    def first(ctx: Any) -> None:
        ctx.table("teams").insert({})
        team_id = ctx.table("teams").insert({})
        member_id = ctx.table("members").insert({"team_id": team_id})
        data_id = ctx.table("datas").insert({"member_id": member_id})
        badge_id = ctx.table("badges").insert({"member_id": member_id})

        ctx.table("teams").get_x(team_id).delete()

        soft_deleted_team = ctx.table("teams").get_x(team_id)
        assert soft_deleted_team.deletion_time is not None
        soft_deleted_member = ctx.table("members").get_x(member_id)
        assert soft_deleted_member.deletion_time is not None
        assert ctx.table("datas").get_x(data_id) is not None
        assert ctx.table("badges").get_x(badge_id) is not None

    app.run(first)

    app.finish_all_scheduled_functions()

    def second(ctx: Any) -> None:
        teams = list(ctx.table("teams"))
        assert len(teams) == 1
        members = list(ctx.table("members"))
        assert len(members) == 0
        datas = list(ctx.table("datas"))
        assert len(datas) == 0
        # A badge's edge to its member is optional; Convex Ents deletes it with the member.
        badges = list(ctx.table("badges"))
        assert len(badges) == 0

    app.run(second)
