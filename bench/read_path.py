"""Read path: N users, each with a 1:1 profile; read every user's profile bio.

ents: ``ctx.table("users").map(lambda u: u.edge("profile").bio)`` in a registered query,
against raw sqlite3 (LEFT JOIN; two queries with ``IN (...)`` batches; N+1 for
reference), SQLAlchemy ORM (``selectinload``, ``joinedload``), SQLModel (``selectinload``)
and Peewee (``prefetch``, join). The baselines share one database file with a plain
schema; ents has its own file. Same pragmas, synchronous=NORMAL. Profiles are inserted
in shuffled order so that no contender reads them in user order by luck.

    python -m bench.read_path [--quick] [--users N] [--rounds R]
"""

from __future__ import annotations

import os
import random
import sqlite3
from typing import Any

from .common import (
    Row,
    Section,
    Table,
    Target,
    apply_pragmas,
    ents_url,
    interleave,
    median,
    parser,
    progress,
    ratio,
    raw_connect,
    run_main,
    spread_s,
    temp_dir,
)

SYNC = "NORMAL"
IN_BATCH = 500


def bio_of(i: int) -> str:
    return f"bio of user {i}"


# -- ents ------------------------------------------------------------------------------


def make_ents_app(path: str) -> Any:
    from ents import App, define_ent, define_ent_schema

    schema = define_ent_schema(
        {
            "users": define_ent({"name": str}).edge("profile", ref=True),
            "profiles": define_ent({"bio": str}).edge("user"),
        }
    )
    app = App(schema, ents_url(path, SYNC))

    @app.query
    def all_bios(ctx: Any):  # noqa: ANN202 - unannotated on purpose: no result validation pass
        return ctx.table("users").map(lambda u: u.edge("profile").bio)

    app.bench_all_bios = all_bios  # type: ignore[attr-defined]
    return app


def seed_ents(app: Any, n: int, order: list[int]) -> None:
    def seed(ctx: Any) -> None:
        ids = ctx.table("users").insert_many([{"name": f"user {i}"} for i in range(n)])
        ctx.table("profiles").insert_many([{"bio": bio_of(i), "user_id": ids[i]} for i in order])

    app.run(seed)


def count_statements(app: Any) -> tuple[int, list[str]]:
    """Run the ents query once with sqlite3's trace callback on ents' own connection."""
    conn = app.backend.connect()  # this thread's connection: the one run_query will use
    try:
        raw = conn.raw
    finally:
        app.backend.release(conn)
    statements: list[str] = []
    raw.set_trace_callback(statements.append)
    try:
        app.run_query(app.bench_all_bios)
    finally:
        raw.set_trace_callback(None)
    return len(statements), statements


# -- baselines -------------------------------------------------------------------------


def seed_baseline(path: str, n: int, order: list[int]) -> None:
    conn = raw_connect(path, SYNC)
    conn.executescript(
        """
        CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
        CREATE TABLE profiles (
            id INTEGER PRIMARY KEY,
            bio TEXT NOT NULL,
            user_id INTEGER NOT NULL UNIQUE REFERENCES users (id)
        );
        """
    )
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO users (id, name) VALUES (?, ?)", [(i + 1, f"user {i}") for i in range(n)])
    conn.executemany("INSERT INTO profiles (bio, user_id) VALUES (?, ?)", [(bio_of(i), i + 1) for i in order])
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def raw_join(conn: sqlite3.Connection) -> list[str | None]:
    rows = conn.execute(
        "SELECT p.bio FROM users u LEFT JOIN profiles p ON p.user_id = u.id ORDER BY u.id"
    ).fetchall()
    return [r[0] for r in rows]


def raw_two_queries(conn: sqlite3.Connection) -> list[str | None]:
    conn.execute("BEGIN")  # one snapshot for both queries, as ents' query has
    try:
        users = conn.execute("SELECT id, name FROM users ORDER BY id").fetchall()
        ids = [u[0] for u in users]
        bios: dict[int, str] = {}
        for start in range(0, len(ids), IN_BATCH):
            chunk = ids[start : start + IN_BATCH]
            marks = ",".join("?" * len(chunk))
            for user_id, bio in conn.execute(f"SELECT user_id, bio FROM profiles WHERE user_id IN ({marks})", chunk):
                bios[user_id] = bio
    finally:
        conn.execute("COMMIT")
    return [bios.get(i) for i in ids]


def raw_n_plus_one(conn: sqlite3.Connection) -> list[str | None]:
    conn.execute("BEGIN")
    try:
        out = []
        for (uid,) in conn.execute("SELECT id FROM users ORDER BY id").fetchall():
            row = conn.execute("SELECT bio FROM profiles WHERE user_id = ?", (uid,)).fetchone()
            out.append(row[0] if row else None)
    finally:
        conn.execute("COMMIT")
    return out


def sqlalchemy_engine(path: str) -> Any:
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{path}")

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        apply_pragmas(dbapi_conn, SYNC)

    return engine


def sqlalchemy_contenders(path: str) -> dict[str, Any]:
    import sqlalchemy as sa
    from sqlalchemy.orm import Session, declarative_base, joinedload, relationship, selectinload

    Base = declarative_base()

    class User(Base):  # type: ignore[valid-type, misc]
        __tablename__ = "users"
        id = sa.Column(sa.Integer, primary_key=True)
        name = sa.Column(sa.Text, nullable=False)

    class Profile(Base):  # type: ignore[valid-type, misc]
        __tablename__ = "profiles"
        id = sa.Column(sa.Integer, primary_key=True)
        bio = sa.Column(sa.Text, nullable=False)
        user_id = sa.Column(sa.Integer, sa.ForeignKey("users.id"), unique=True, nullable=False)

    User.profile = relationship(Profile, back_populates="user", uselist=False)
    Profile.user = relationship(User, back_populates="profile")
    engine = sqlalchemy_engine(path)

    def selectin() -> list[str | None]:
        with Session(engine) as s:
            users = s.scalars(sa.select(User).options(selectinload(User.profile)).order_by(User.id)).all()
            return [u.profile.bio if u.profile else None for u in users]

    def joined() -> list[str | None]:
        with Session(engine) as s:
            users = s.scalars(sa.select(User).options(joinedload(User.profile)).order_by(User.id)).all()
            return [u.profile.bio if u.profile else None for u in users]

    return {"SQLAlchemy ORM selectinload": selectin, "SQLAlchemy ORM joinedload": joined}


def sqlmodel_contender(path: str) -> Any:
    from sqlalchemy.orm import selectinload
    from sqlmodel import Session, select

    from .sqlmodel_models import SMUser

    engine = sqlalchemy_engine(path)

    def run() -> list[str | None]:
        with Session(engine) as s:
            users = s.exec(select(SMUser).options(selectinload(SMUser.profile)).order_by(SMUser.id)).all()
            return [u.profile.bio if u.profile else None for u in users]

    return run


def peewee_contenders(path: str) -> dict[str, Any]:
    import peewee as pw

    db = pw.SqliteDatabase(path, pragmas=[*_pragma_pairs()])

    class PUser(pw.Model):
        name = pw.TextField()

        class Meta:
            database = db
            table_name = "users"

    class PProfile(pw.Model):
        bio = pw.TextField()
        user = pw.ForeignKeyField(PUser, backref="profiles", unique=True, column_name="user_id")

        class Meta:
            database = db
            table_name = "profiles"

    def prefetch() -> list[str | None]:
        with db.atomic():
            users = pw.prefetch(PUser.select().order_by(PUser.id), PProfile.select())
            return [u.profiles[0].bio if u.profiles else None for u in users]

    def join() -> list[str | None]:
        with db.atomic():
            q = (
                PUser.select(PUser, PProfile)
                .join(PProfile, pw.JOIN.LEFT_OUTER, on=(PProfile.user == PUser.id), attr="profile")
                .order_by(PUser.id)
            )
            return [u.profile.bio if getattr(u, "profile", None) is not None and u.profile.id is not None else None for u in q]

    return {"Peewee prefetch": prefetch, "Peewee join": join}


def _pragma_pairs() -> list[tuple[str, str]]:
    from .common import COMMON_PRAGMAS

    return [*COMMON_PRAGMAS, ("synchronous", SYNC)]


# -- the benchmark ---------------------------------------------------------------------


def build(section: Section, args: Any) -> None:
    n = args.users or (1000 if args.quick else 10_000)
    rounds = args.rounds or (1 if args.quick else 7)
    section.params = {"users": n, "rounds": rounds, "synchronous": SYNC, "IN batch (raw)": IN_BATCH}
    order = list(range(n))
    random.Random(7).shuffle(order)
    with temp_dir("read") as d:
        progress(f"read_path: seeding {n} users + profiles")
        base_path = os.path.join(d, "baseline.db")
        seed_baseline(base_path, n, order)
        app = make_ents_app(os.path.join(d, "ents.db"))
        seed_ents(app, n, order)
        raw = raw_connect(base_path, SYNC)

        contenders: dict[str, Any] = {
            "ents map + edge (run_query)": lambda: app.run_query(app.bench_all_bios),
            "raw sqlite3 LEFT JOIN": lambda: raw_join(raw),
            "raw sqlite3 two queries (IN batches)": lambda: raw_two_queries(raw),
        }
        contenders.update(sqlalchemy_contenders(base_path))
        contenders["SQLModel selectinload"] = sqlmodel_contender(base_path)
        contenders.update(peewee_contenders(base_path))
        n1_rounds = 1  # the N+1 form is for reference only
        progress(f"read_path: {rounds} interleaved rounds of {len(contenders)} contenders")
        times, results = interleave(contenders, rounds)
        n1_times, n1_results = interleave({"raw sqlite3 N+1 (reference)": lambda: raw_n_plus_one(raw)}, n1_rounds, warmup=0)
        times.update(n1_times)
        results.update(n1_results)

        expected = [bio_of(i) for i in range(n)]
        for label, result in results.items():
            section.check(f"{label}: same {n} bios, in user order, as expected", result == expected,
                          "" if result == expected else f"got {len(result)} items, first {result[:3]}")

        count, statements = count_statements(app)
        per_row = count >= n / 10
        section.check(
            f"ents issues a bounded number of statements, not one per row ({count} for {n} users)",
            not per_row,
            "statements: " + "; ".join(s[:60] + ("…" if len(s) > 60 else "") for s in statements[:5]),
        )
        app.close()
        raw.close()

    rows = []
    for label, ts in times.items():
        rows.append(Row(label, median(ts), "s", n=n, spread=spread_s(ts), is_ents=label.startswith("ents")))
    rows[0].detail = f"{count} SQL statements (sqlite3 trace)"
    table = Table(
        f"Read {n:,} users with their 1:1 profile (median of {rounds} rounds; time, lower is better)",
        rows,
        higher_is_better=False,
        reference="raw sqlite3 two queries (IN batches)",
    )
    section.tables.append(table)
    e = table.row("ents map + edge (run_query)").value
    two = table.row("raw sqlite3 two queries (IN batches)").value
    sel = table.row("SQLAlchemy ORM selectinload").value
    section.targets.append(Target("ents time ÷ raw two-query time", ratio(e, two), "<=", 3.0, "issues 2 and 7: within 3x"))
    section.targets.append(Target("SQLAlchemy selectinload time ÷ ents time", ratio(sel, e), ">=", 3.0,
                                  "issue 7: >= 3x faster than SQLAlchemy (issue 2: faster)"))
    joined = table.row("SQLAlchemy ORM joinedload").value
    section.targets.append(Target("SQLAlchemy joinedload time ÷ ents time", ratio(joined, e), ">=", 3.0,
                                  "issue 7 says 'SQLAlchemy': also against its faster loader"))


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=None)
    run_main("read_path", "Read path: 1:1 edge resolved in map", build, p)


if __name__ == "__main__":
    main()
