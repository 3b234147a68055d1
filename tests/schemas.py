"""Schemas shared by the data-layer tests (blog, social graph, cascades)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from ents import EntSchema, Id, define_ent, define_ent_schema


class Address(BaseModel):
    city: str
    zip: str | None = None


def blog() -> EntSchema:
    """The API.md schema plus a few fields to query on."""
    return define_ent_schema(
        {
            "users": define_ent({"name": str})
            .field("email", str, unique=True)
            .field("age", int, default=0)
            .field("meta", dict[str, Any], default={})
            .field("nickname", str | None)
            .field("address", Address | None)
            .field("active", bool, default=True)
            .index("by_name_age", ["name", "age"])
            .edges("messages", ref=True)
            .edge("profile", ref=True),
            "profiles": define_ent({"bio": str}).edge("user"),
            "messages": define_ent({"text": str})
            .field("rank", int, default=0, index=True)
            .field("kind", Literal["text", "video"], default="text")
            .edge("user")
            .edges("tags"),
            "tags": define_ent({"name": str}).edges("messages"),
            "answers": define_ent({"question": str}).edge("action", to="_scheduled_functions", deletion="hard"),
            "photos": define_ent({}).edge("file", to="_storage", deletion="hard"),
            "notes": define_ent({"text": str, "owner": Id["users"] | None}),
        }
    )


def social() -> EntSchema:
    """Self edges: symmetric friends, asymmetric followers, custom storage."""
    return define_ent_schema(
        {
            "people": define_ent({"name": str})
            .edges("friends", to="people")
            .edges("followers", to="people", inverse="followees")
            .edges("rivals", to="people", table="rivalries", field="challenger_id", inverse_field="rival_id")
            .edge("mentor", to="people", field="mentor_id", optional=True)
            .edges("mentees", to="people", ref="mentor_id")
            .edges("posts", ref="author_id"),
            "posts": define_ent({"title": str})
            .edges("labels", to="categories", table="post_labels", field="post_id")
            .edge("author", to="people", field="author_id", optional=True),
            "categories": define_ent({"name": str}).edges("posts", table="post_labels", field="category_id"),
        }
    )


class SqlLog:
    """Records the SQL every transaction runs (any backend), to count statements."""

    def __init__(self, monkeypatch: Any) -> None:
        from ents.transaction import Transaction

        self.statements: list[str] = []
        self.on = False
        original = Transaction.execute
        log = self

        def execute(tx: Any, sql: str, params: Any = ()) -> Any:
            if log.on:
                log.statements.append(sql)
            return original(tx, sql, params)

        monkeypatch.setattr(Transaction, "execute", execute)

    def starting_with(self, *verbs: str) -> list[str]:
        return [s for s in self.statements if s.lstrip().upper().startswith(verbs)]
