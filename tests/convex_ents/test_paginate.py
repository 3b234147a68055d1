"""Convex Ents' pagination test (``test/convex/paginate.test.ts``), ported."""

from __future__ import annotations

from typing import Any

from ents import App


def test_paginate_with_map(app: App) -> None:
    # "paginate with map" (paginate.test.ts)
    def body(ctx: Any) -> None:
        user1 = ctx.table("users").insert({"name": "Stark", "email": "tony@stark.com", "height": 3}).get()
        ctx.table("messages").insert({"text": "Hello world", "user_id": user1._id}).get()
        ctx.table("profiles").insert({"bio": "Hello world", "user_id": user1._id})

        messages = (
            ctx.table("messages")
            .paginate({"cursor": None, "num_items": 1})
            .map(lambda message: {"text": message.text, "author": message.edge("user").name})
        )
        assert len(messages["page"]) == 1
        assert messages["page"][0]["text"] == "Hello world"
        assert messages["page"][0]["author"] == "Stark"

    app.run(body)
