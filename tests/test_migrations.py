"""Opening databases: URLs, the default file, SQLite settings, and additive migrations."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from ents import App, ConfigurationError, SchemaError, define_ent, define_ent_schema

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def v1() -> Any:
    return define_ent_schema(
        {
            "users": define_ent({"name": str}).field("email", str, unique=True).edges("messages", ref=True),
            "messages": define_ent({"text": str}).edge("user"),
        }
    )


def seed_v1(app: App) -> dict[str, Any]:
    def seed(ctx: Any) -> dict[str, Any]:
        ada = ctx.table("users").insert({"name": "Ada", "email": "ada@x"})
        bob = ctx.table("users").insert({"name": "Bob", "email": "bob@x"})
        m = ctx.table("messages").insert({"text": "hi", "user_id": ada})
        return {"ada": ada, "bob": bob, "m": m}

    return dict(app.run(seed))


@pytest.fixture
def file_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'app.db'}"


@pytest.fixture
def url(backend: str, db_url: str) -> str:
    """A database that outlives the App using it (every backend but memory)."""
    if backend == "memory":
        pytest.skip("an in-memory database cannot be reopened")
    return db_url


# -- URLs and the default file ------------------------------------------------------------


def test_memory_databases_are_private(clock: Any) -> None:
    with App(v1(), "sqlite://", clock=clock) as a, App(v1(), "sqlite://", clock=clock) as b:
        seed_v1(a)
        assert b.run(lambda ctx: ctx.table("users").collect()) == []
        assert len(a.run(lambda ctx: ctx.table("users").collect())) == 2


def test_database_persists_across_apps(url: str) -> None:
    with App(v1(), url) as app:
        ids = seed_v1(app)
    with App(v1(), url) as app:
        assert app.run(lambda ctx: ctx.table("users").get_x(ids["ada"]).name) == "Ada"
        assert app.run(lambda ctx: ctx.table("messages").get_x(ids["m"]).edge("user")._id) == ids["ada"]


def test_file_database_uses_wal(file_url: str) -> None:
    with App(v1(), file_url) as app:
        conn = app.backend.connect()
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
            assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 0
            assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
        finally:
            app.backend.release(conn)


def test_relative_url_and_default_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ENTS_DATABASE_URL", raising=False)
    with App(v1()) as app:
        seed_v1(app)
    assert (tmp_path / "ents.db").exists()
    with App(v1(), "sqlite:///ents.db") as app:
        assert app.run(lambda ctx: len(ctx.table("users"))) == 2
    with App(v1(), "sqlite:///other.db") as app:
        assert app.run(lambda ctx: len(ctx.table("users"))) == 0
    assert (tmp_path / "other.db").exists()


def test_database_url_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "from_env.db"
    monkeypatch.setenv("ENTS_DATABASE_URL", f"sqlite:///{target}")
    monkeypatch.chdir(tmp_path)
    with App(v1()) as app:
        seed_v1(app)
    assert target.exists() and not (tmp_path / "ents.db").exists()


@pytest.mark.parametrize(
    "bad_url,fragment",
    [
        ("mysql://localhost/db", "Unsupported database URL"),
        ("sqlite://somehost/x.db", "has a host"),
        ("sqlite:////nonexistent-dir-for-ents/x.db", "does not exist"),
        ("sqlite:///x.db?synchronous=sometimes", "synchronous"),
    ],
)
def test_bad_urls(bad_url: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        App(v1(), bad_url)


def test_app_needs_a_schema() -> None:
    with pytest.raises(SchemaError, match="define_ent_schema"):
        App({"users": define_ent({})}, "sqlite://")  # type: ignore[arg-type]


# -- additive migrations -------------------------------------------------------------------


def v2() -> Any:
    """v1 plus: a table, fields with defaults, optional fields, an index, edges of every kind."""
    return define_ent_schema(
        {
            "users": define_ent({"name": str})
            .field("email", str, unique=True)
            .field("age", int, default=18)
            .field("prefs", dict[str, Any], default={"theme": "dark"})
            .field("bio", str | None)
            .field("handle", str | None, unique=True)
            .index("by_name", ["name"])
            .edges("messages", ref="user_id")
            .edges("edited", to="messages", ref="editor_id")
            .edge("profile", ref=True)
            .edges("friends", to="users"),
            "messages": define_ent({"text": str})
            .field("pinned", bool, default=False, index=True)
            .edge("user")
            .edge("editor", to="users", field="editor_id", optional=True)
            .edges("tags"),
            "tags": define_ent({"name": str}).edges("messages"),
            "profiles": define_ent({"bio": str}).edge("user"),
        }
    )


def test_additive_changes_open_an_existing_database_without_loss(url: str) -> None:
    with App(v1(), url) as app:
        ids = seed_v1(app)
    with App(v2(), url) as app:

        def read(ctx: Any) -> None:
            ada = ctx.table("users").get_x(ids["ada"])
            assert (ada.name, ada.email) == ("Ada", "ada@x")
            assert ada.age == 18 and ada.prefs == {"theme": "dark"}
            assert ada.bio is None and ada.handle is None
            # defaults are really stored, so queries see them
            assert [u._id for u in ctx.table("users").filter(lambda q: q.eq(q.field("age"), 18))] == [ids["ada"], ids["bob"]]
            assert [u.name for u in ctx.table("users", "by_name", lambda q: q.eq("name", "Bob"))] == ["Bob"]
            assert ctx.table("messages").get_x(ids["m"]).pinned is False
            assert [m._id for m in ctx.table("messages", "pinned", lambda q: q.eq("pinned", False))] == [ids["m"]]
            assert ctx.table("messages").get_x(ids["m"]).edge("editor") is None
            assert ctx.table("users").get_x(ids["ada"]).edge("profile") is None
            assert [m._id for m in ada.edge("messages")] == [ids["m"]]

        app.run(read)

        def write(ctx: Any) -> None:
            tag = ctx.table("tags").insert({"name": "t", "messages": [ids["m"]]})
            ctx.table("profiles").insert({"bio": "b", "user_id": ids["ada"]})
            ctx.table("users").get_x(ids["ada"]).patch({"friends": {"add": [ids["bob"]]}, "handle": "ada"})
            ctx.table("messages").get_x(ids["m"]).patch({"editor_id": ids["bob"]})
            assert ctx.table("messages").get_x(ids["m"]).edge("tags").has(tag)

        app.run(write)
        from ents import UniqueConstraintError

        with pytest.raises(UniqueConstraintError):
            app.run(lambda ctx: ctx.table("users").get_x(ids["bob"]).patch({"handle": "ada"}))
    # and the migrated database opens again, with both the new and the old schema
    with App(v2(), url) as app:
        assert app.run(lambda ctx: ctx.table("users").get_x(ids["ada"]).edge("friends").first().name) == "Bob"
    with App(v1(), url) as app:
        assert app.run(lambda ctx: [u.name for u in ctx.table("users")]) == ["Ada", "Bob"]


def test_ids_stay_valid_when_tables_are_added_or_removed(url: str) -> None:
    with App(v1(), url) as app:
        ids = seed_v1(app)
    reordered = define_ent_schema(
        {
            "aardvarks": define_ent({}),
            "messages": define_ent({"text": str}).edge("user"),
            "users": define_ent({"name": str}).field("email", str, unique=True).edges("messages", ref=True),
        }
    )
    with App(reordered, url) as app:
        aardvark = app.run(lambda ctx: ctx.table("aardvarks").insert({}))
        assert app.run(lambda ctx: ctx.table("users").get_x(ids["ada"]).name) == "Ada"
        assert app.run(lambda ctx: ctx.db.get(ids["m"])["text"]) == "hi"
    only_users = define_ent_schema({"users": define_ent({"name": str}).field("email", str, unique=True)})
    with App(only_users, url) as app:
        assert app.run(lambda ctx: ctx.table("users").get_x(ids["bob"]).name) == "Bob"
    with App(reordered, url) as app:
        assert app.run(lambda ctx: ctx.db.get(aardvark)) is not None
        assert app.run(lambda ctx: ctx.table("messages").get_x(ids["m"]).text) == "hi"


def test_required_field_added_to_a_non_empty_table(url: str) -> None:
    with App(v1(), url) as app:
        ids = seed_v1(app)
    required = define_ent_schema(
        {
            "users": define_ent({"name": str, "country": str}).field("email", str, unique=True).edges("messages", ref=True),
            "messages": define_ent({"text": str}).edge("user"),
        }
    )
    with pytest.raises(SchemaError) as info:
        App(required, url)
    message = str(info.value)
    assert 'Field "country" was added to table "users"' in message
    assert "default" in message and "Optional" in message
    assert (info.value.table, info.value.field) == ("users", "country")
    # nothing was changed: the old schema still opens with every document
    with App(v1(), url) as app:
        assert app.run(lambda ctx: ctx.table("users").get_x(ids["ada"]).name) == "Ada"
        conn = app.backend.connect()
        try:
            assert "country" not in app.backend.introspect_columns(conn, "users")
        finally:
            app.backend.release(conn)


def test_required_edge_added_to_a_non_empty_table(url: str) -> None:
    with App(v1(), url) as app:
        seed_v1(app)
    with_team = define_ent_schema(
        {
            "users": define_ent({"name": str}).field("email", str, unique=True).edges("messages", ref=True).edge("team"),
            "teams": define_ent({}).edges("users", ref=True),
            "messages": define_ent({"text": str}).edge("user"),
        }
    )
    with pytest.raises(SchemaError, match='Field "team_id" was added to table "users"'):
        App(with_team, url)


def test_required_field_added_to_an_empty_table(url: str) -> None:
    App(v1(), url).close()
    required = define_ent_schema(
        {
            "users": define_ent({"name": str, "country": str}).field("email", str, unique=True).edges("messages", ref=True),
            "messages": define_ent({"text": str}).edge("user"),
        }
    )
    with App(required, url) as app:
        uid = app.run(lambda ctx: ctx.table("users").insert({"name": "A", "email": "a@x", "country": "FR"}))
        assert app.run(lambda ctx: ctx.table("users").get_x(uid).country) == "FR"


def test_unique_changes_that_existing_data_breaks(url: str) -> None:
    with App(v1(), url) as app:
        seed_v1(app)
        app.run(lambda ctx: ctx.table("messages").insert({"text": "hi", "user_id": ctx.table("users").first_x()._id}))
    unique_default = define_ent_schema(
        {
            "users": define_ent({"name": str})
            .field("email", str, unique=True)
            .field("code", str, unique=True, default="x")
            .edges("messages", ref=True),
            "messages": define_ent({"text": str}).edge("user"),
        }
    )
    with pytest.raises(SchemaError, match='Unique field "code" was added to table "users"'):
        App(unique_default, url)
    unique_text = define_ent_schema(
        {
            "users": define_ent({"name": str}).field("email", str, unique=True).edges("messages", ref=True),
            "messages": define_ent({}).field("text", str, unique=True).edge("user"),
        }
    )
    with pytest.raises(SchemaError) as info:
        App(unique_text, url)
    assert '"text" of table "messages" unique' in str(info.value) and "hi" in str(info.value)
    with App(v1(), url) as app:
        assert app.run(lambda ctx: len(ctx.table("messages"))) == 2


def test_indexes_removed_from_the_schema_are_dropped(url: str) -> None:
    indexed = define_ent_schema({"notes": define_ent({"text": str}).index("by_text", ["text"])})
    plain = define_ent_schema({"notes": define_ent({"text": str})})

    def index_names(app: App) -> set[str]:
        conn = app.backend.connect()
        try:
            return set(app.backend.introspect_indexes(conn, "notes"))
        finally:
            app.backend.release(conn)

    with App(indexed, url) as app:
        app.run(lambda ctx: ctx.table("notes").insert({"text": "x"}))
        assert any("by_text" in n for n in index_names(app))
    with App(plain, url) as app:
        assert not any("by_text" in n for n in index_names(app))
        assert app.run(lambda ctx: ctx.table("notes").first_x().text) == "x"


def test_two_apps_on_one_database_see_each_others_writes(url: str) -> None:
    with App(v1(), url) as a, App(v1(), url) as b:
        ids = seed_v1(a)
        assert b.run(lambda ctx: ctx.table("users").get_x(ids["bob"]).name) == "Bob"
        b.run(lambda ctx: ctx.table("users").get_x(ids["bob"]).patch({"name": "Robert"}))
        assert a.run(lambda ctx: ctx.table("users").get_x(ids["bob"]).name) == "Robert"


def test_closed_app_refuses_work(file_url: str) -> None:
    app = App(v1(), file_url)
    app.close()
    with pytest.raises(Exception, match="closed"):
        app.run(lambda ctx: None)
    assert os.path.exists(file_url.removeprefix("sqlite:///"))


def test_an_index_with_an_older_definition_is_rebuilt_and_a_current_one_left_alone(file_url: str, tmp_path: Path) -> None:
    """An SQLite file from an older ents (indexes carrying _creation_time, and an index on
    _creation_time itself) converges to the current layout when opened; reopening a current
    file changes nothing."""
    import sqlite3

    with App(v1(), file_url) as app:
        ids = seed_v1(app)
    path = tmp_path / "app.db"
    raw = sqlite3.connect(path)
    raw.execute('DROP INDEX "ix_messages__user_id"')
    raw.execute('CREATE INDEX "ix_messages__user_id" ON "messages" ("user_id", "_creation_time")')
    raw.execute('CREATE INDEX "ix_messages__by_creation_time" ON "messages" ("_creation_time")')
    raw.commit()
    raw.close()

    def indexes() -> dict[str, str]:
        conn = sqlite3.connect(path)
        try:
            rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages' AND sql IS NOT NULL")
            return dict(rows.fetchall())
        finally:
            conn.close()

    def schema_version() -> int:
        conn = sqlite3.connect(path)
        try:
            return int(conn.execute("PRAGMA schema_version").fetchone()[0])
        finally:
            conn.close()

    with App(v1(), file_url) as app:
        assert app.run(lambda ctx: [m._id for m in ctx.table("messages", "user_id", lambda q: q.eq("user_id", ids["ada"]))]) == [ids["m"]]
    assert indexes() == {"ix_messages__user_id": 'CREATE INDEX "ix_messages__user_id" ON "messages" ("user_id")'}
    before = schema_version()
    with App(v1(), file_url) as app:
        assert app.run(lambda ctx: ctx.table("messages").get_x(ids["m"]).text) == "hi"
    assert schema_version() == before
