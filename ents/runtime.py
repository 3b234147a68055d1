"""Per-table runtime: column order, value conversion and the table's prepared SQL.

One :class:`TableRuntime` exists per table and App. It knows how each field is stored on
the App's database (ids as integer keys, JSON as text or jsonb, booleans as 0/1 on SQLite)
and holds the SQL text of the table's common statements, built once and reused so the
driver's statement cache can keep them prepared.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from typing import Any

from .backends.base import Dialect
from .errors import ValidationError
from .fields import FieldSpec, _unwrap_optional
from .ids import IdCodec
from .schema import TableDef
from .values import (
    Doc,
    check_float,
    check_int64,
    check_str,
    dumps,
    loads,
    loads_doc,
    normalize,
    show,
)


class TableRuntime:
    def __init__(self, table: TableDef, dialect: Dialect, codec: IdCodec) -> None:
        self.table = table
        self.name = table.name
        self.dialect = dialect
        self.codec = codec
        self.fields: list[FieldSpec] = list(table.fields.values())
        self.columns: list[str] = ["_rid", "_creation_time", *[f.name for f in self.fields]]
        self.col_index: dict[str, int] = {c: i for i, c in enumerate(self.columns)}
        q = dialect.q
        self.q_table = q(self.name)
        self.select_list = ", ".join(q(c) for c in self.columns)
        self.encode_rid: Callable[[int], str] = codec.encoder(self.name) if self.name in codec.numbers else str
        self.decoders: list[Callable[[Any], Any] | None] = [None, None]
        for spec in self.fields:
            self.decoders.append(self._decoder(spec))
        self.public = [
            (i, c)
            for i, c in enumerate(self.columns)
            if i >= 2 and c not in table.hidden
        ]
        p = dialect.param
        self.sql_get = f"SELECT {self.select_list} FROM {self.q_table} WHERE {q('_rid')} = {p}"
        self.sql_exists = f"SELECT {q('_rid')} FROM {self.q_table} WHERE {q('_rid')} = {p}"
        self._insert_sql: dict[tuple[str, ...], str] = {}
        self._update_sql: dict[tuple[str, ...], str] = {}
        #: per-table plans other modules work out once (e.g. what a hard delete involves)
        self.cache: dict[str, Any] = {}
        self.writers: dict[str, Callable[[Any], Any]] = {spec.name: self._writer(spec) for spec in self.fields}
        #: fields holding ids, which writes check for existing targets
        self.id_fields = frozenset(spec.name for spec in self.fields if spec.kind == "id")
        # Write-path shortcuts: plain field names (a document with only these needs no edge
        # handling), and the fields that have defaults.
        self.plain_names = frozenset(table.fields) - frozenset(e for e in table.edges if table.edges[e].kind != "field")
        self.defaults = [(spec.name, spec.default) for spec in self.fields if spec.has_default]
        # Fields typed exactly str / int / float / bool (optionally Optional): a write whose
        # values all have these types needs no pydantic pass (see writer._validate).
        self.simple_types: dict[str, tuple[type, bool]] = {}
        #: a table of a union of shapes (its documents show their own shape's fields)
        self.shapes = table.shapes
        shaped = table.shapes.names if table.shapes is not None else frozenset()
        for spec in self.fields:
            base, _ = _unwrap_optional(spec.annotation)
            if base in (str, int, float, bool) and spec.name not in shaped:
                self.simple_types[spec.name] = (base, spec.nullable)
        self.required_names = frozenset(spec.name for spec in self.fields if spec.required)
        self.getters, self.json_getters = self._getters()

    # -- reading ---------------------------------------------------------------------

    def _decoder(self, spec: FieldSpec) -> Callable[[Any], Any] | None:
        kind = spec.kind
        if kind == "id":
            assert spec.id_table is not None
            enc = self.codec.encoder(spec.id_table)
            return lambda v: None if v is None else enc(v)
        if kind == "bool" and not self.dialect.native_bool:
            return lambda v: None if v is None else bool(v)
        if kind == "json":
            # Native JSON arrives decoded (the driver is configured to build Docs).
            return None if self.dialect.native_json else loads_doc
        if kind == "bytes":
            return lambda v: None if v is None else bytes(v)
        if kind == "float":
            return lambda v: None if v is None else float(v)
        return None

    def _getters(self) -> tuple[dict[str, Callable[[tuple[Any, ...]], Any]], dict[str, Callable[[tuple[Any, ...]], Any]]]:
        """Per-field readers of a row, for attribute access on ents (a hot path).

        Scalars are read straight from the row; JSON fields are returned separately because
        an ent decodes each of them once and keeps the result. Shaped (system) tables
        have none: their documents are built whole.
        """
        if self.table.shape is not None:
            return {}, {}
        scalars: dict[str, Callable[[tuple[Any, ...]], Any]] = {
            "_id": lambda row, enc=self.encode_rid: enc(row[0]),  # type: ignore[misc]
            "_creation_time": itemgetter(1),
        }
        json: dict[str, Callable[[tuple[Any, ...]], Any]] = {}
        for i, spec in enumerate(self.fields, start=2):
            if spec.name in self.table.hidden:
                continue
            plain = self.decoders[i] is None and not (spec.has_default and not spec.nullable)
            if plain and spec.kind != "json":
                scalars[spec.name] = itemgetter(i)
            else:
                target = json if spec.kind == "json" else scalars
                target[spec.name] = lambda row, i=i: self.decode(row, i)  # type: ignore[misc]
        return scalars, json

    def decode(self, row: tuple[Any, ...], index: int) -> Any:
        value = row[index]
        dec = self.decoders[index]
        if dec is not None:
            value = dec(value)
        if value is None and index >= 2:
            spec = self.fields[index - 2]
            if spec.has_default and not spec.nullable:
                return _copy_default(spec.default)
        return value

    def doc(self, row: tuple[Any, ...]) -> dict[str, Any]:
        """The public document of a row (a plain dict with nested values as :class:`Doc`)."""
        out: dict[str, Any] = {"_id": self.encode_rid(row[0]), "_creation_time": row[1]}
        decode = self.decode
        for i, name in self.public:
            out[name] = decode(row, i)
        if self.shapes is not None:
            self.shapes.trim(out)
        if self.table.shape is not None:
            # Hidden columns never reach the shape, so a shape may publish a key named like
            # one of them (a job's "attempts" list, built from attempt_log, vs its hidden
            # "attempts" counter) without that key being dropped afterwards.
            out = self.table.shape(out)
        return out

    # -- writing ---------------------------------------------------------------------

    def _writer(self, spec: FieldSpec) -> Callable[[Any], Any]:
        """The conversion of one field's validated values to what its column stores."""
        path = f"{self.name}.{spec.name}"
        kind = spec.kind
        if kind == "str":
            return lambda v: check_str(v, path)
        if kind == "int":
            return lambda v: check_int64(v, path)
        if kind == "float":
            return lambda v: check_float(float(v), path)
        if kind == "bool":
            to_bool = self.dialect.bool_to_db
            return lambda v: to_bool(bool(v))
        if kind == "bytes":
            return bytes
        if kind == "id":
            assert spec.id_table is not None
            decode, table = self.codec.decode_for, spec.id_table
            what = f'field "{spec.name}" of table "{self.name}"'
            return lambda v: decode(table, v, what=what)
        return lambda v: dumps(normalize(v, path))

    def to_db(self, spec: FieldSpec, value: Any) -> Any:
        """Convert a validated value to what the column stores (raises ValidationError)."""
        if value is None:
            return None
        try:
            return self.writers[spec.name](value)
        except ValidationError as exc:
            if exc.table is None:
                exc.table = self.name
            if exc.field is None:
                exc.field = spec.name
            raise

    def filter_value(self, name: str, value: Any) -> Any:
        """Convert a value compared with column ``name`` in a filter or index range."""
        if name == "_id" or name == "_rid":
            if not isinstance(value, str):
                raise ValidationError(
                    f'Cannot compare "_id" of table "{self.name}" with {type(value).__name__} {show(value)}',
                    table=self.name,
                    field="_id",
                )
            return self.codec.decode_for(self.name, value, what=f'"_id" in a query on "{self.name}"')
        if name == "_creation_time":
            spec_kind = "float"
            spec = None
        else:
            spec = self.table.fields.get(name)
            if spec is None:
                raise ValidationError(f'Unknown field "{name}" in table "{self.name}"', table=self.name, field=name)
            spec_kind = spec.kind
        if value is None:
            return None
        ok = {
            "str": isinstance(value, str),
            "int": isinstance(value, (int, float)) and not isinstance(value, bool),
            "float": isinstance(value, (int, float)) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "bytes": isinstance(value, (bytes, bytearray)),
            "id": isinstance(value, str),
            "json": isinstance(value, (str, int, float, bool)),
        }[spec_kind]
        if not ok:
            raise ValidationError(
                f'Field "{name}" of table "{self.name}" holds {spec_kind} values; it cannot be '
                f"compared with {type(value).__name__} {show(value)}",
                table=self.name,
                field=name,
            )
        if spec is None:
            return check_float(float(value), name)
        if spec_kind == "int" and isinstance(value, float):
            return check_float(value, name)
        if spec_kind == "json":
            if self.dialect.native_json:
                return dumps(value)
            return dumps(value) if isinstance(value, str) else value
        return self.to_db(spec, value)

    def is_json(self, name: str) -> bool:
        spec = self.table.fields.get(name)
        return spec is not None and spec.kind == "json"

    def index_expr(self, name: str, column_sql: str) -> str:
        """What an index orders ``name`` by: the column, or for JSON the value it encodes."""
        if self.is_json(name):
            return self.dialect.json_sort_expr(column_sql)
        return column_sql

    def index_param(self, name: str, value: Any) -> tuple[str, Any]:
        """Placeholder and parameter comparing ``value`` with :meth:`index_expr` of ``name``."""
        if self.is_json(name) and value is not None:
            try:
                value = normalize(value, f"{self.name}.{name}")
            except ValidationError as exc:
                exc.table = exc.table or self.name
                raise
            return self.dialect.json_value_param(value)
        return self.dialect.param, self.filter_value(name, value)

    def key_value(self, name: str, raw: Any) -> Any:
        """A row's stored value of ``name`` as a pagination cursor keeps it (JSON-safe)."""
        if raw is not None and self.is_json(name) and not self.dialect.native_json:
            return loads(raw)
        return raw

    def insert_sql(self, columns: tuple[str, ...]) -> str:
        """The INSERT of a row with ``_creation_time`` and then ``columns``."""
        sql = self._insert_sql.get(columns)
        if sql is None:
            every = ("_creation_time", *columns)
            sql = self._insert_sql[columns] = self.dialect.insert_ignore(self.name, every, self.json_columns(every))
        return sql

    def update_sql(self, columns: tuple[str, ...]) -> str:
        sql = self._update_sql.get(columns)
        if sql is None:
            q = self.dialect.q
            p = self.dialect.param
            json_cols = self.json_columns(columns)
            sets = ", ".join(f"{q(c)} = {self.dialect.json_param if c in json_cols else p}" for c in columns)
            sql = f"UPDATE {self.q_table} SET {sets} WHERE {q('_rid')} = {p}"
            self._update_sql[columns] = sql
        return sql

    def json_columns(self, columns: tuple[str, ...]) -> frozenset[str]:
        return frozenset(c for c in columns if c in self.table.fields and self.table.fields[c].kind == "json")



def _copy_default(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return loads_doc(dumps(normalize(value)))
    return value


__all__ = ["TableRuntime", "Doc", "loads"]
