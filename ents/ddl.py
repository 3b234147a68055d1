"""Tables and indexes from the schema, and safe additive migrations.

SQLAlchemy describes each table (so column types come out right for each database);
backends run the compiled statements on their own connections. Opening an existing
database with a schema that adds tables, fields with defaults, optional fields, edges or
indexes migrates it in place; nothing is ever dropped except indexes ents created and the
schema no longer declares. A change that would need data that does not exist (a required
field added to a table that has rows) fails with a SchemaError instead.

Each field's type is remembered in ``_ents_tables`` (see :func:`ents.fields.describe_field`).
On open, a field whose type changed is checked against the documents: a widening (adding
``None``, a union member or a Literal value, ``int`` to ``float``) is accepted, converting
the stored values when their storage changes (e.g. ``str`` to ``str | int``, stored as
JSON); anything else is refused with a SchemaError unless no document holds a value it
would reject. Every check is a bounded query (``LIMIT 1``), run only for a changed field.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.schema import CreateTable

from .errors import SchemaError
from .fields import (
    TYPE_DESCRIPTION_VERSION,
    FieldSpec,
    allows_null,
    describe_field,
    describe_value,
    type_accepts,
    type_text,
    without_null,
)
from .ids import FIRST_USER_TABLE, MAX_TABLES, SYSTEM_TABLE_NUMBERS
from .schema import TableDef
from .values import show

META_TABLE = "_ents_tables"


def column_type(spec: FieldSpec, json_type: Any) -> Any:
    return kind_type(spec.kind, json_type)


def kind_type(kind: str, json_type: Any) -> Any:
    """The SQLAlchemy column type that stores values of a storage kind."""
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
        value: Callable[[str, str], tuple[Any] | None] | None = None,
        nulls: Callable[[str, str], bool] | None = None,
        outside: Callable[[str, str, list[Any]], tuple[Any] | None] | None = None,
        beyond: Callable[[str, str, int], tuple[Any] | None] | None = None,
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
        #: ``(value,)`` for one non-null value stored in a column, or None
        self.value = value or (lambda table, column: None)
        #: whether some document has no value in a column
        self.nulls = nulls or (lambda table, column: False)
        #: ``(value,)`` for one non-null value of a column not among the given ones, or None
        self.outside = outside or (lambda table, column, values: None)
        #: ``(value,)`` for one number of a column beyond +-bound, or None
        self.beyond = beyond or (lambda table, column, bound: None)


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
    stored: dict[str, dict[str, Any]] | None = None,
    encode: Callable[[str, Any], str] | None = None,
) -> tuple[list[str], list[tuple[str, tuple[Any, ...]]]]:
    """Statements that bring the database to ``tables``: DDL, then backfills (sql, params).

    ``stored`` holds the field descriptions remembered for each table (tables without
    any are not checked); ``encode`` turns a row key into an id for messages.
    """
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
        conversions: list[str] = []
        known = None if stored is None or t.is_system else stored.get(t.name)
        if known is not None:
            for spec in t.fields.values():
                old = known.get(spec.name)
                if spec.name not in have or old is None:
                    continue
                new = _json_roundtrip(describe_field(spec))
                if old == new:
                    continue
                change = _FieldChange(t, spec, old, new, existing, encode)
                conversions += change.statements(dialect.name, q, json_type, dialect)
                if change.fill_default:
                    backfill.append((t.name, (spec.name, spec.default)))
        current = existing.indexes(t.name)
        prefix = f"ix_{t.name}__"
        defined = existing.index_sql(t.name) or {}
        if conversions:
            # Indexes over a converted column change (a JSON column is indexed by the value
            # it encodes), and SQLite cannot drop an indexed column: rebuild them all.
            for name in sorted(current):
                if name.startswith(prefix):
                    ddl.append(f"DROP INDEX IF EXISTS {q(name)}")
            current = {n for n in current if not n.startswith(prefix)}
            defined = {}
            ddl.extend(conversions)
        for name in sorted(current):
            if name.startswith(prefix) and name not in wanted_indexes:
                ddl.append(f"DROP INDEX IF EXISTS {q(name)}")
        for iname, fields in t.unique_indexes.items():
            name = index_sql_name(t.name, "u_" + iname)
            if name in current or not all(f in have for f in fields):
                continue
            shared = existing.duplicate(t.name, fields)
            if shared is not None:
                edge = _edge_of(t, fields[0]) if len(fields) == 1 else None
                if edge is not None:
                    value = shared[0]
                    if encode is not None and edge.to and not edge.to.startswith("_"):
                        value = encode(edge.to, value)
                    raise SchemaError(
                        f'Cannot make edge "{edge.name}" of table "{t.name}" 1:1: several documents '
                        f'already point at the same document `{value}` of table "{edge.to}" through '
                        f'field "{edge.field}"; keep the edge 1:many (.edges(..., ref=True) on the other '
                        "end), or leave one document per target first",
                        table=t.name,
                        field=fields[0],
                    )
                what = ", ".join(f'"{f}"' for f in fields)
                raise SchemaError(
                    f"Cannot make {what} of table \"{t.name}\" unique: several documents already "
                    f"share the value {shared[0] if len(shared) == 1 else shared!r}; make the values "
                    "distinct first",
                    table=t.name,
                    field=fields[0],
                )
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


def _json_roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _edge_of(t: TableDef, field: str) -> Any:
    """The edge that stores its id in ``field`` of ``t``, if any."""
    return next((e for e in t.edges.values() if e.kind == "field" and e.field == field), None)


#: storage changes whose values ents converts in place: (old kind, new kind)
_CONVERTIBLE = {("int", "float"), ("str", "json"), ("int", "json"), ("float", "json"), ("bool", "json")}
#: integers beyond this cannot all be held exactly by a float
_FLOAT_EXACT = 2**53


class _FieldChange:
    """A field whose remembered type differs from the schema's: checked against the
    documents (bounded queries only), then the statements that convert its column."""

    def __init__(
        self, t: TableDef, spec: FieldSpec, old: dict[str, Any], new: dict[str, Any], existing: Introspection, encode: Callable[[str, Any], str] | None
    ) -> None:
        self.t = t
        self.spec = spec
        self.old = old
        self.new = new
        self.existing = existing
        self.encode = encode
        self.fill_default = False
        self._sample: tuple[Any] | None | bool = False  # False: not looked up yet
        self.edge = _edge_of(t, spec.name)
        self._check_required()
        self._check_values()
        self._check_storage()

    # -- what the documents hold ------------------------------------------------------

    def sample(self) -> tuple[Any] | None:
        if self._sample is False:
            self._sample = self.existing.value(self.t.name, self.spec.name)
        return self._sample  # type: ignore[return-value]

    def shown(self, raw: Any) -> str:
        old = without_null(self.old["t"])
        if self.encode is not None and isinstance(old, dict) and "id" in old and isinstance(raw, int):
            try:
                return f"`{self.encode(old['id'], raw)}`"
            except Exception:
                pass
        return describe_value(raw)

    def what(self) -> str:
        if self.edge is not None:
            return f'Edge "{self.edge.name}" of table "{self.t.name}" (field "{self.spec.name}")'
        return f'Field "{self.spec.name}" of table "{self.t.name}"'

    def error(self, message: str) -> SchemaError:
        return SchemaError(message, table=self.t.name, field=self.spec.name)

    # -- checks -------------------------------------------------------------------------

    def _check_required(self) -> None:
        old_t, new_t = self.old["t"], self.new["t"]
        if not allows_null(old_t) or allows_null(new_t):
            return
        if self.spec.has_default:
            # Documents without it read as the default; store it, so queries see it too.
            self.fill_default = self.spec.default is not None
            return
        if not self.existing.nulls(self.t.name, self.spec.name):
            return
        if self.edge is not None:
            raise self.error(
                f'{self.what()} was optional and is now required, but some documents have none; keep '
                "optional=True, or set the edge on every document first (with the old schema)"
            )
        raise self.error(
            f"{self.what()} was optional ({type_text(old_t)}) and is now required ({type_text(new_t)}), but "
            "some documents lack it; keep it Optional, give it a default, or set it on every document "
            "first (with the old schema)"
        )

    def _check_values(self) -> None:
        old_v, new_v = without_null(self.old["t"]), without_null(self.new["t"])
        if type_accepts(new_v, old_v):
            return
        found = self.sample()
        if found is None:
            return  # no document holds a value: any type will do
        allowed = _literal_values(new_v)
        if allowed is not None and self.old["k"] == self.new["k"] and self.new["k"] in ("str", "int"):
            found = self.existing.outside(self.t.name, self.spec.name, allowed)
            if found is None:
                return  # every stored value is one the new Literal allows
        if self.edge is not None and isinstance(old_v, dict) and "id" in old_v and isinstance(new_v, dict) and "id" in new_v:
            raise self.error(
                f'Edge "{self.edge.name}" of table "{self.t.name}" now points to table "{new_v["id"]}", but '
                f'documents hold ids of table "{old_v["id"]}" in its field "{self.spec.name}" (e.g. '
                f'{self.shown(found[0])}); point it back at "{old_v["id"]}", or store the new edge in another '
                "field (field=...) and delete or clear the documents of the old one first"
            )
        raise self.error(
            f"{self.what()} changed type from {type_text(self.old['t'])} to {type_text(self.new['t'])}, but "
            f"documents hold values the new type does not accept (e.g. {self.shown(found[0])}); keep a type "
            "that accepts the old values too (a union of both), or migrate in steps: add a new field, "
            "copy the values into it, then remove this one"
        )

    def _check_storage(self) -> None:
        pair = (self.old["k"], self.new["k"])
        if pair[0] == pair[1] or self.sample() is None:
            return
        if pair not in _CONVERTIBLE:
            raise self.error(
                f"{self.what()} changed type from {type_text(self.old['t'])} to {type_text(self.new['t'])}, "
                f"which ents stores differently ({pair[0]} vs {pair[1]}), and documents hold values (e.g. "
                f"{self.shown(self.sample()[0])}) it cannot convert; migrate in steps: add a new field, "  # type: ignore[index]
                "copy the values into it, then remove this one"
            )
        if pair == ("int", "float"):
            big = self.existing.beyond(self.t.name, self.spec.name, _FLOAT_EXACT)
            if big is not None:
                raise self.error(
                    f"{self.what()} changed type from int to float, but documents hold integers a float "
                    f"cannot represent exactly (e.g. {big[0]}); keep it an int, or use int | float"
                )

    # -- conversion ---------------------------------------------------------------------

    def statements(self, dialect_name: str, q: Callable[[str], str], json_type: Any, sa_dialect: Any) -> list[str]:
        old_kind, new_kind = self.old["k"], self.new["k"]
        if old_kind == new_kind:
            return []
        values = self.sample() is not None
        tq, c = q(self.t.name), q(self.spec.name)
        new_type = kind_type(new_kind, json_type).compile(dialect=sa_dialect)
        old_type = kind_type(old_kind, json_type).compile(dialect=sa_dialect)
        if dialect_name == "postgresql":
            if not values:
                using = f"NULL::{new_type}"
            elif new_kind == "float":
                using = f"{c}::double precision"
            elif old_kind == "float":
                # As ents writes floats: a whole number keeps its ".0", so it reads back a float.
                using = f"CASE WHEN {c} = trunc({c}) THEN to_jsonb(round({c}::numeric, 1)) ELSE to_jsonb({c}) END"
            else:
                using = f"to_jsonb({c})"
            return [f"ALTER TABLE {tq} ALTER COLUMN {c} TYPE {new_type} USING {using}"]
        if not values:
            if old_type == new_type:
                return []
            return [f"ALTER TABLE {tq} DROP COLUMN {c}", f"ALTER TABLE {tq} ADD COLUMN {c} {new_type}"]
        expr = {
            ("int", "float"): f"CAST({c} AS REAL)",
            ("str", "json"): f"json_quote({c})",
            ("int", "json"): f"CAST({c} AS TEXT)",
            ("float", "json"): f"json_quote({c})",
            ("bool", "json"): f"CASE WHEN {c} THEN 'true' ELSE 'false' END",
        }[(old_kind, new_kind)]
        if old_type == new_type:
            return [f"UPDATE {tq} SET {c} = {expr} WHERE {c} IS NOT NULL"]
        # SQLite cannot change a column's type: build the new column, then swap it in.
        tmp = q(self.spec.name + "__ents_new")
        return [
            f"ALTER TABLE {tq} ADD COLUMN {tmp} {new_type}",
            f"UPDATE {tq} SET {tmp} = {expr} WHERE {c} IS NOT NULL",
            f"ALTER TABLE {tq} DROP COLUMN {c}",
            f"ALTER TABLE {tq} RENAME COLUMN {tmp} TO {c}",
        ]


def _literal_values(desc: Any) -> list[Any] | None:
    """The values of a type made only of Literal values, else None."""
    members = desc["union"] if isinstance(desc, dict) and "union" in desc else [desc]
    if not all(isinstance(m, dict) and "lit" in m for m in members):
        return None
    return [m["lit"] for m in members]


def read_stored_types(text: Any) -> dict[str, Any] | None:
    """The field descriptions remembered for a table (None: none, or of another format)."""
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("v") != TYPE_DESCRIPTION_VERSION or not isinstance(data.get("fields"), dict):
        return None
    return data["fields"]  # type: ignore[no-any-return]


def stored_types_text(fields: dict[str, Any]) -> str:
    return json.dumps({"v": TYPE_DESCRIPTION_VERSION, "fields": fields}, sort_keys=True, separators=(",", ":"))


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
                f"CREATE TABLE IF NOT EXISTS {q(META_TABLE)} "
                "(name TEXT PRIMARY KEY, num INTEGER NOT NULL UNIQUE, fields TEXT)"
            )
        elif "fields" not in backend.introspect_columns(conn, META_TABLE):
            # A database from an ents that did not remember field types: they are recorded now.
            conn.execute(f"ALTER TABLE {q(META_TABLE)} ADD COLUMN {q('fields')} TEXT")
        rows = conn.execute(f"SELECT name, num, {q('fields')} FROM {q(META_TABLE)}").fetchall()
        known = {name: int(num) for name, num, _ in rows}
        stored_text = {name: text for name, _, text in rows}
        stored = {name: f for name, text in stored_text.items() if (f := read_stored_types(text)) is not None}
        numbers = assign_numbers(known, tables)
        for name, num in numbers.items():
            if name not in known:
                conn.execute(d.sql(f"INSERT INTO {q(META_TABLE)} (name, num) VALUES (?, ?)"), (name, num))
        codec = IdCodec(numbers)

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

        def value(table: str, column: str) -> tuple[Any] | None:
            c = q(column)
            row = conn.execute(f"SELECT {c} FROM {q(table)} WHERE {c} IS NOT NULL LIMIT 1").fetchone()
            return (row[0],) if row is not None else None

        def nulls(table: str, column: str) -> bool:
            c = q(column)
            return conn.execute(f"SELECT 1 FROM {q(table)} WHERE {c} IS NULL LIMIT 1").fetchone() is not None

        def outside(table: str, column: str, values: list[Any]) -> tuple[Any] | None:
            c = q(column)
            marks = ", ".join([d.param] * len(values))
            row = conn.execute(
                f"SELECT {c} FROM {q(table)} WHERE {c} IS NOT NULL AND {c} NOT IN ({marks}) LIMIT 1", tuple(values)
            ).fetchone()
            return (row[0],) if row is not None else None

        def beyond(table: str, column: str, bound: int) -> tuple[Any] | None:
            c = q(column)
            row = conn.execute(
                f"SELECT {c} FROM {q(table)} WHERE {c} > {d.param} OR {c} < {d.param} LIMIT 1", (bound, -bound)
            ).fetchone()
            return (row[0],) if row is not None else None

        intro = Introspection(
            existing,
            lambda t: backend.introspect_columns(conn, t),
            lambda t: backend.introspect_indexes(conn, t),
            has_rows,
            several_rows,
            duplicate,
            lambda t: backend.introspect_index_sql(conn, t),
            value,
            nulls,
            outside,
            beyond,
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
            stored,
            lambda table, rid: codec.encoder(table)(rid),
        )
        for stmt in ddl:
            conn.execute(stmt)
        for table, (column, default) in backfills:
            rt = TableRuntime(tables[table], d, codec)
            spec = tables[table].fields[column]
            mark = d.json_param if spec.kind == "json" else d.param
            conn.execute(
                f"UPDATE {q(table)} SET {q(column)} = {mark} WHERE {q(column)} IS NULL",
                (rt.to_db(spec, default),),
            )
        # Remember every field's type (and keep those of fields the schema dropped: their
        # columns and values stay, and a field added back under that name is checked).
        for name, t in tables.items():
            if t.is_system:
                continue
            fields = dict(stored.get(name, {}))
            fields.update({f: _json_roundtrip(describe_field(spec)) for f, spec in t.fields.items()})
            text = stored_types_text(fields)
            if text != stored_text.get(name):
                conn.execute(d.sql(f"UPDATE {q(META_TABLE)} SET {q('fields')} = ? WHERE name = ?"), (text, name))
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
