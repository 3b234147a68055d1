"""Tables and indexes from the schema, and safe additive migrations.

SQLAlchemy describes each table (so column types come out right for each database);
backends run the compiled statements on their own connections. Opening an existing
database with a schema that adds tables, fields with defaults, optional fields, edges or
indexes migrates it in place; nothing is ever dropped except indexes ents created and the
schema no longer declares. A change that would need data that does not exist (a required
field added to a table that has rows) fails with a SchemaError instead.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.schema import CreateTable

from .errors import SchemaError
from .fields import FieldSpec
from .ids import FIRST_USER_TABLE, MAX_TABLES, SYSTEM_TABLE_NUMBERS
from .schema import TableDef
from .values import show

META_TABLE = "_ents_tables"


def column_type(spec: FieldSpec, json_type: Any) -> Any:
    kind = spec.kind
    if kind == "str":
        return sa.Text()
    if kind in ("int", "id"):
        return sa.BigInteger()
    if kind == "float":
        return sa.Double()
    if kind == "bool":
        return sa.Boolean(create_constraint=False)
    if kind == "bytes":
        return sa.LargeBinary()
    return json_type


def sa_table(t: TableDef, metadata: sa.MetaData, json_type: Any) -> sa.Table:
    cols: list[Any] = [
        sa.Column("_rid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("_creation_time", sa.Double(), nullable=False),
    ]
    for spec in t.fields.values():
        cols.append(sa.Column(spec.name, column_type(spec, json_type), nullable=True))
    return sa.Table(t.name, metadata, *cols, sqlite_autoincrement=True)


def index_sql_name(table: str, index: str) -> str:
    name = f"ix_{table}__{index}"
    if len(name) > 63:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[:52]}_{digest}"
    return name


def index_statements(
    t: TableDef,
    q: Callable[[str], str],
    term: Callable[[str], str],
    include_rid: bool = False,
    json_expr: Callable[[str], str] | None = None,
    rid_order: bool = False,
) -> dict[str, str]:
    """CREATE INDEX statements by SQL index name, for every index of ``t``.

    ``json_expr`` turns a JSON column into the expression queries order it by, so that
    the index on that expression serves them. With ``rid_order`` (SQLite) creation order
    is row-key order, which every SQLite index carries implicitly: no index on
    ``_creation_time``, index columns without it, and no second index over the fields of
    an unconditional unique index.
    """
    out: dict[str, str] = {}

    def key(field: str) -> str:
        spec = t.fields.get(field)
        if json_expr is not None and spec is not None and spec.kind == "json":
            return json_expr(q(field))
        return q(field)

    tq = q(t.name)
    if not t.is_edge_table and not rid_order:
        name = index_sql_name(t.name, "by_creation_time")
        rid = f", {term(q('_rid'))}" if include_rid else ""
        out[name] = f"CREATE INDEX IF NOT EXISTS {q(name)} ON {tq} ({term(q('_creation_time'))}{rid})"
    for iname, fields in t.unique_indexes.items():
        name = index_sql_name(t.name, "u_" + iname)
        cols = ", ".join(q(f) for f in fields)
        where = t.index_where.get("u_" + iname)
        suffix = f" WHERE {where}" if where else ""
        out[name] = f"CREATE UNIQUE INDEX IF NOT EXISTS {q(name)} ON {tq} ({cols}){suffix}"
    unconditional_unique = {f for n, f in t.unique_indexes.items() if not t.index_where.get("u_" + n)}
    for iname, fields in t.indexes.items():
        if rid_order and fields in unconditional_unique and not t.index_where.get(iname):
            continue  # the unique index orders these fields, then the rowid
        name = index_sql_name(t.name, iname)
        cols = ", ".join(term(key(f)) for f in fields)
        if not t.is_edge_table and not rid_order:
            cols += f", {term(q('_creation_time'))}"
            if include_rid:
                cols += f", {term(q('_rid'))}"
        where = t.index_where.get(iname)
        suffix = f" WHERE {where}" if where else ""
        out[name] = f"CREATE INDEX IF NOT EXISTS {q(name)} ON {tq} ({cols}){suffix}"
    return out


class Introspection:
    """What a backend reports about an existing database."""

    def __init__(
        self,
        tables: set[str],
        columns: Callable[[str], set[str]],
        indexes: Callable[[str], set[str]],
        has_rows: Callable[[str], bool],
        several_rows: Callable[[str], bool] | None = None,
        duplicate: Callable[[str, tuple[str, ...]], tuple[Any, ...] | None] | None = None,
        index_sql: Callable[[str], dict[str, str] | None] | None = None,
    ) -> None:
        self.tables = tables
        self.columns = columns
        self.indexes = indexes
        self.has_rows = has_rows
        #: whether a table has at least two rows
        self.several_rows = several_rows or (lambda table: False)
        #: values of ``columns`` shared by two rows of a table, or None
        self.duplicate = duplicate or (lambda table, columns: None)
        #: each index's definition as stored (None where the backend cannot tell)
        self.index_sql = index_sql or (lambda table: None)


def plan(
    tables: dict[str, TableDef],
    existing: Introspection,
    dialect: Any,
    json_type: Any,
    q: Callable[[str], str],
    term: Callable[[str], str],
    include_rid: bool = False,
    json_expr: Callable[[str], str] | None = None,
    rid_order: bool = False,
) -> tuple[list[str], list[tuple[str, tuple[Any, ...]]]]:
    """Statements that bring the database to ``tables``: DDL, then backfills (sql, params)."""
    ddl: list[str] = []
    backfill: list[tuple[str, tuple[Any, ...]]] = []
    metadata = sa.MetaData()
    for t in tables.values():
        table = sa_table(t, metadata, json_type)
        wanted_indexes = index_statements(t, q, term, include_rid, json_expr, rid_order)
        if t.name not in existing.tables:
            ddl.append(str(CreateTable(table).compile(dialect=dialect)).strip())
            ddl.extend(wanted_indexes.values())
            continue
        have = existing.columns(t.name)
        populated: bool | None = None
        for spec in t.fields.values():
            if spec.name in have:
                continue
            if spec.required or (spec.has_default and not spec.nullable):
                if populated is None:
                    populated = existing.has_rows(t.name)
                if populated and not spec.has_default:
                    raise SchemaError(
                        f'Field "{spec.name}" was added to table "{t.name}", which already has '
                        "documents; give it a default or make it Optional so existing documents "
                        "stay valid",
                        table=t.name,
                        field=spec.name,
                    )
            if spec.unique and spec.has_default and spec.default is not None and existing.several_rows(t.name):
                raise SchemaError(
                    f'Unique field "{spec.name}" was added to table "{t.name}" with the default '
                    f"{show(spec.default)}, which every existing document would share; add it without "
                    "unique=True (or as Optional), give the documents distinct values, then make it unique",
                    table=t.name,
                    field=spec.name,
                )
            coltype = column_type(spec, json_type).compile(dialect=dialect)
            ddl.append(f"ALTER TABLE {q(t.name)} ADD COLUMN {q(spec.name)} {coltype}")
            if spec.has_default and spec.default is not None:
                backfill.append((t.name, (spec.name, spec.default)))
        current = existing.indexes(t.name)
        prefix = f"ix_{t.name}__"
        for name in sorted(current):
            if name.startswith(prefix) and name not in wanted_indexes:
                ddl.append(f"DROP INDEX IF EXISTS {q(name)}")
        for iname, fields in t.unique_indexes.items():
            name = index_sql_name(t.name, "u_" + iname)
            if name in current or not all(f in have for f in fields):
                continue
            shared = existing.duplicate(t.name, fields)
            if shared is not None:
                what = ", ".join(f'"{f}"' for f in fields)
                raise SchemaError(
                    f"Cannot make {what} of table \"{t.name}\" unique: several documents already "
                    f"share the value {shared[0] if len(shared) == 1 else shared!r}; make the values "
                    "distinct first",
                    table=t.name,
                    field=fields[0],
                )
        defined = existing.index_sql(t.name) or {}
        for name, stmt in wanted_indexes.items():
            if name not in current:
                ddl.append(stmt)
            elif (
                name in defined
                and not stmt.startswith("CREATE UNIQUE")
                and defined[name] != stmt.replace(" IF NOT EXISTS", "", 1)
            ):
                # The same index with another definition (e.g. from an older ents): rebuild it.
                ddl.append(f"DROP INDEX IF EXISTS {q(name)}")
                ddl.append(stmt)
    return ddl, backfill


def assign_numbers(known: dict[str, int], tables: dict[str, TableDef]) -> dict[str, int]:
    """Stable table numbers: existing ones kept, new tables numbered after the highest."""
    numbers = dict(known)
    numbers.update(SYSTEM_TABLE_NUMBERS)
    used = set(numbers.values())
    nxt = max([FIRST_USER_TABLE - 1, *used]) + 1
    for name in tables:
        if name not in numbers:
            while nxt in used:
                nxt += 1
            if nxt >= MAX_TABLES:
                raise SchemaError(f"Too many tables: at most {MAX_TABLES - FIRST_USER_TABLE} are supported")
            numbers[name] = nxt
            used.add(nxt)
    return numbers


def sync_schema(backend: Any, tables: dict[str, TableDef]) -> dict[str, int]:
    """Create or migrate every table in one transaction; return the table numbering."""
    from .ids import IdCodec
    from .runtime import TableRuntime

    d = backend.dialect
    q = d.q

    def attempt(conn: Any) -> dict[str, int]:
        existing = backend.introspect_tables(conn)
        if META_TABLE not in existing:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {q(META_TABLE)} (name TEXT PRIMARY KEY, num INTEGER NOT NULL UNIQUE)"
            )
        known = {name: int(num) for name, num in conn.execute(f"SELECT name, num FROM {q(META_TABLE)}").fetchall()}
        numbers = assign_numbers(known, tables)
        for name, num in numbers.items():
            if name not in known:
                conn.execute(d.sql(f"INSERT INTO {q(META_TABLE)} (name, num) VALUES (?, ?)"), (name, num))

        def has_rows(table: str) -> bool:
            return conn.execute(f"SELECT 1 FROM {q(table)} LIMIT 1").fetchone() is not None

        def several_rows(table: str) -> bool:
            return conn.execute(f"SELECT 1 FROM {q(table)} LIMIT 1 OFFSET 1").fetchone() is not None

        def duplicate(table: str, columns: tuple[str, ...]) -> tuple[Any, ...] | None:
            cols = ", ".join(q(c) for c in columns)
            present = " AND ".join(f"{q(c)} IS NOT NULL" for c in columns)
            row = conn.execute(
                f"SELECT {cols} FROM {q(table)} WHERE {present} GROUP BY {cols} HAVING COUNT(*) > 1 LIMIT 1"
            ).fetchone()
            return tuple(row) if row is not None else None

        intro = Introspection(
            existing,
            lambda t: backend.introspect_columns(conn, t),
            lambda t: backend.introspect_indexes(conn, t),
            has_rows,
            several_rows,
            duplicate,
            lambda t: backend.introspect_index_sql(conn, t),
        )
        ddl, backfills = plan(
            tables,
            intro,
            backend.sa_dialect(),
            backend.json_type(),
            q,
            d.index_term,
            d.index_includes_rid,
            d.json_sort_expr,
            d.rid_order,
        )
        for stmt in ddl:
            conn.execute(stmt)
        codec = IdCodec(numbers)
        for table, (column, default) in backfills:
            rt = TableRuntime(tables[table], d, codec)
            spec = tables[table].fields[column]
            mark = d.json_param if spec.kind == "json" else d.param
            conn.execute(
                f"UPDATE {q(table)} SET {q(column)} = {mark} WHERE {q(column)} IS NULL",
                (rt.to_db(spec, default),),
            )
        return numbers

    deadline = time.monotonic() + 60
    with backend.connection() as conn:
        while True:
            # Taken before the transaction, so that its snapshot already sees what another
            # process opening the same database created (PostgreSQL: a session advisory lock).
            backend.lock_schema(conn)
            try:
                conn.begin(write=True)
                numbers = attempt(conn)
                conn.commit()
                break
            except BaseException as exc:
                try:
                    conn.rollback()
                except Exception:
                    pass
                if d.classify(exc) in ("transient", "connection") and time.monotonic() < deadline:
                    time.sleep(0.01 + random.random() * 0.05)
                    continue
                raise
            finally:
                try:
                    backend.unlock_schema(conn)
                except Exception:  # a dropped connection already released the lock
                    pass
    return numbers
