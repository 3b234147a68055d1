"""kitcn's ORM-style API, ``ctx.orm``, as a thin layer over ents' queries and writer.

    from ents.orm import and_, eq, gt

    ctx.orm.query.users.find_many(where={"age": {"gt": 18}}, order_by={"age": "desc"}, limit=20)
    ctx.orm.query.users.find_first(where={"id": user_id}, with_={"messages": True})
    ctx.orm.insert("users").values({"name": "Ada", "email": "ada@x"}).returning("id")
    ctx.orm.update("users").set({"age": 37}).where(and_(eq("name", "Ada"), gt("age", 30)))
    ctx.orm.delete("sessions").where({"last_active_at": {"lt": cutoff}})
    ctx.orm.system.get(job_id)

Reads are ``ctx.table(...)`` queries: ``where`` becomes an index range when an index of the
table matches (its leading fields fixed by equality, then at most one range; ``id`` uses
``by_id``, ``_creation_time`` uses ``by_creation_time``), and the rest of ``where`` becomes
a ``filter`` in the same SQL statement. Without a matching index the table is scanned (in
SQL, chunk by chunk). Rows come in the order of the index used (creation order when there
is none, or when every field of the index is fixed by equality); ``order_by`` must be an
order some index gives, since ``ctx.orm`` never sorts in memory.

Writes go through the ents writer (``insert`` / ``insert_many``, ``ent.patch``,
``ent.delete()`` and ``query.delete()``), so validation, uniqueness, rules, cascades and the
cancellation of linked jobs are exactly those of ``ctx.table``.

Rows are :class:`Row` dicts: the document's fields plus ``id`` (kitcn's name for ``_id``)
and ``_creation_time``, readable as keys and as attributes (``row.id``, ``row["id"]``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import EntNotFoundError, ValidationError
from .query import CHUNK, load_plural_edge
from .values import Doc, show, show_name

if TYPE_CHECKING:
    from .query import Ent, Query, TableFactory
    from .schema import TableDef

__all__ = [
    "Orm",
    "Row",
    "Where",
    "and_",
    "asc",
    "between",
    "desc",
    "eq",
    "gt",
    "gte",
    "in_array",
    "is_not_null",
    "is_null",
    "lt",
    "lte",
    "ne",
    "not_",
    "not_between",
    "not_in_array",
    "or_",
]

#: how many rows a write handles at a time (and ``with_`` loads edges for)
BATCH = CHUNK

#: kitcn's name of the document id, and ents' own
ID = "id"


class Row(Doc):
    """A row of ``ctx.orm``: the document's fields with ``id`` and ``_creation_time``;
    keys also read as attributes (``row.id == row["id"]``)."""

    __slots__ = ()


# -- where ---------------------------------------------------------------------------------


class Where:
    """A condition of ``where``: built with :func:`eq`, :func:`and_`, ... or from a dict."""

    __slots__ = ()

    def __bool__(self) -> bool:
        raise ValidationError(
            "Conditions cannot be combined with Python's `and` / `or` / `not`; use and_(...), or_(...) and not_(...)"
        )


@dataclass(frozen=True, eq=False)
class _Cmp(Where):
    field: str
    op: str  # eq ne lt lte gt gte
    value: Any


@dataclass(frozen=True, eq=False)
class _In(Where):
    field: str
    values: tuple[Any, ...]
    negate: bool


@dataclass(frozen=True, eq=False)
class _And(Where):
    parts: tuple[Where, ...]


@dataclass(frozen=True, eq=False)
class _Or(Where):
    parts: tuple[Where, ...]


@dataclass(frozen=True, eq=False)
class _Not(Where):
    part: Where


def _field(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValidationError(f"{what} takes a field name (a string) first, got {show(name)}")
    return name


def eq(field: str, value: Any) -> Where:
    """``field`` equals ``value`` (``None`` matches a missing value); ``eq("id", x)`` by id."""
    return _Cmp(_field(field, "eq()"), "eq", value)


def ne(field: str, value: Any) -> Where:
    """``field`` differs from ``value``."""
    return _Cmp(_field(field, "ne()"), "ne", value)


def lt(field: str, value: Any) -> Where:
    """``field < value``, in Convex's order of values (a missing value sorts first)."""
    return _Cmp(_field(field, "lt()"), "lt", value)


def lte(field: str, value: Any) -> Where:
    """``field <= value``."""
    return _Cmp(_field(field, "lte()"), "lte", value)


def gt(field: str, value: Any) -> Where:
    """``field > value``."""
    return _Cmp(_field(field, "gt()"), "gt", value)


def gte(field: str, value: Any) -> Where:
    """``field >= value``."""
    return _Cmp(_field(field, "gte()"), "gte", value)


def _values(values: Any, what: str) -> tuple[Any, ...]:
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise ValidationError(f"{what} takes a list of values, got {show(values)}")
    return tuple(values)


def in_array(field: str, values: Iterable[Any]) -> Where:
    """``field`` is one of ``values`` (kitcn's ``inArray``; ``{"in": [...]}`` in a dict)."""
    return _In(_field(field, "in_array()"), _values(values, "in_array()"), False)


def not_in_array(field: str, values: Iterable[Any]) -> Where:
    """``field`` is none of ``values`` (kitcn's ``notInArray``)."""
    return _In(_field(field, "not_in_array()"), _values(values, "not_in_array()"), True)


def is_null(field: str) -> Where:
    """``field`` is missing or None."""
    return _Cmp(_field(field, "is_null()"), "eq", None)


def is_not_null(field: str) -> Where:
    """``field`` is set."""
    return _Cmp(_field(field, "is_not_null()"), "ne", None)


def between(field: str, low: Any, high: Any) -> Where:
    """``low <= field <= high``."""
    name = _field(field, "between()")
    return _And((_Cmp(name, "gte", low), _Cmp(name, "lte", high)))


def not_between(field: str, low: Any, high: Any) -> Where:
    """``field < low or field > high``."""
    return _Not(between(field, low, high))


def _as_where(value: Any, what: str) -> Where:
    if isinstance(value, Where):
        return value
    if isinstance(value, Mapping):
        return parse_where(value)
    raise ValidationError(f"{what} takes conditions (eq(...), a dict, ...), got {show(value)}")


def and_(*conditions: Where | Mapping[str, Any]) -> Where:
    """Every condition holds."""
    return _And(tuple(_as_where(c, "and_()") for c in conditions))


def or_(*conditions: Where | Mapping[str, Any]) -> Where:
    """At least one condition holds (``or_()`` of nothing holds for nothing)."""
    return _Or(tuple(_as_where(c, "or_()") for c in conditions))


def not_(condition: Where | Mapping[str, Any]) -> Where:
    """The condition does not hold."""
    return _Not(_as_where(condition, "not_()"))


#: operators of the dict form, in kitcn's spelling and in snake_case
_DICT_OPS: dict[str, str] = {
    "eq": "eq", "ne": "ne", "lt": "lt", "lte": "lte", "gt": "gt", "gte": "gte",
    "in": "in", "not_in": "not_in", "notIn": "not_in",
    "is_null": "is_null", "isNull": "is_null", "is_not_null": "is_not_null", "isNotNull": "is_not_null",
    "between": "between", "not_between": "not_between", "notBetween": "not_between",
}  # fmt: skip


def _field_ops(field: str, ops: Mapping[str, Any]) -> Where:
    parts: list[Where] = []
    for key, value in ops.items():
        op = _DICT_OPS.get(key) if isinstance(key, str) else None
        if op is None:
            known = ", ".join(sorted({k for k in _DICT_OPS if "_" not in k or k == k.lower()}))
            raise ValidationError(
                f'Unknown operator {show(key)} for field "{show_name(field)}" in where (operators: {known})', field=field
            )
        if op in ("eq", "ne", "lt", "lte", "gt", "gte"):
            parts.append(_Cmp(field, op, value))
        elif op in ("in", "not_in"):
            parts.append(_In(field, _values(value, f'"{op}" of field "{field}"'), op == "not_in"))
        elif op in ("is_null", "is_not_null"):
            if value is not True and value is not False:
                raise ValidationError(f'"{key}" of field "{field}" takes True or False, got {show(value)}', field=field)
            parts.append(_Cmp(field, "eq" if (op == "is_null") == value else "ne", None))
        else:
            pair = _values(value, f'"{key}" of field "{field}"')
            if len(pair) != 2:
                raise ValidationError(f'"{key}" of field "{field}" takes [low, high], got {show(value)}', field=field)
            within = between(field, *pair)
            parts.append(within if op == "between" else _Not(within))
    return parts[0] if len(parts) == 1 else _And(tuple(parts))


def parse_where(where: Mapping[str, Any]) -> Where:
    """The condition a dict stands for: ``{"field": value}`` (equality),
    ``{"field": {"gt": 1, "lt": 5}}`` (operators), ``{"OR": [...], "AND": [...], "NOT": {...}}``;
    the entries of one dict must all hold."""
    parts: list[Where] = []
    for key, value in where.items():
        if key in ("AND", "OR"):
            items = [_as_where(v, key) for v in _values(value, f'"{key}" in where')]
            parts.append(_And(tuple(items)) if key == "AND" else _Or(tuple(items)))
        elif key == "NOT":
            parts.append(_Not(_as_where(value, "NOT")))
        elif not isinstance(key, str) or not key:
            raise ValidationError(f"where keys are field names, got {show(key)}")
        elif isinstance(value, Mapping):
            parts.append(_field_ops(key, value))
        else:
            parts.append(_Cmp(key, "eq", value))
    return parts[0] if len(parts) == 1 else _And(tuple(parts))


WhereArg = Where | Mapping[str, Any] | None


def _where(where: WhereArg) -> Where | None:
    if where is None:
        return None
    return _as_where(where, "where")


# -- order ------------------------------------------------------------------------------------


def asc(field: str) -> tuple[str, str]:
    """Ascending order on ``field``, for ``order_by``."""
    return (_field(field, "asc()"), "asc")


def desc(field: str) -> tuple[str, str]:
    """Descending order on ``field``, for ``order_by``."""
    return (_field(field, "desc()"), "desc")


def _order(order_by: Any, table: str) -> list[tuple[str, bool]]:
    """``order_by`` as ``[(field, descending)]``: a field name, ``{"field": "asc" | "desc"}``,
    ``asc("f")`` / ``desc("f")``, or a list of those."""
    if order_by is None:
        return []
    items: list[Any]
    if isinstance(order_by, (str, Mapping)) or (isinstance(order_by, tuple) and len(order_by) == 2 and order_by[1] in ("asc", "desc")):
        items = [order_by]
    elif isinstance(order_by, (list, tuple)):
        items = list(order_by)
    else:
        raise ValidationError(f'order_by on table "{table}" takes a field, {{"field": "asc" | "desc"}} or a list of them, got {show(order_by)}', table=table)
    out: list[tuple[str, bool]] = []
    for item in items:
        pairs = list(item.items()) if isinstance(item, Mapping) else [item] if isinstance(item, tuple) else [(item, "asc")]
        for pair in pairs:
            name, direction = pair if len(pair) == 2 else (None, None)
            if not isinstance(name, str) or direction not in ("asc", "desc"):
                raise ValidationError(f'order_by on table "{table}": expected a field and "asc" or "desc", got {show(pair)}', table=table)
            out.append((name, direction == "desc"))
    return out


# -- compiling where to an ents query ------------------------------------------------------

#: the order every index ends with, whatever its fields: creation order (ids are handed
#: out in that order too, so ordering by "id" is ordering by creation)
_CREATION = "_creation_time"


def _storage_name(field: str) -> str:
    return "_id" if field == ID else field


def _order_name(field: str) -> str:
    name = _storage_name(field)
    return _CREATION if name == "_id" else name


def _conjuncts(where: Where | None) -> list[Where]:
    if where is None:
        return []
    if isinstance(where, _And):
        return [p for part in where.parts for p in _conjuncts(part)]
    return [where]


def _filter_expr(where: Where) -> Callable[[Any], Any]:
    """``where`` as a Convex filter expression builder (``lambda q: ...``)."""
    if isinstance(where, _Cmp):
        name = _storage_name(where.field)
        op = "neq" if where.op == "ne" else where.op
        value = where.value
        return lambda q: getattr(q, op)(q.field(name), value)
    if isinstance(where, _In):
        name = _storage_name(where.field)
        values = where.values
        if where.negate:
            return lambda q: q.and_(*[q.neq(q.field(name), v) for v in values])
        return lambda q: q.or_(*[q.eq(q.field(name), v) for v in values])
    if isinstance(where, (_And, _Or)):
        parts = [_filter_expr(p) for p in where.parts]
        join = "and_" if isinstance(where, _And) else "or_"
        return lambda q: getattr(q, join)(*[p(q) for p in parts])
    if isinstance(where, _Not):
        inner = _filter_expr(where.part)
        return lambda q: q.not_(inner(q))
    raise ValidationError(f"Not a condition: {show(where)}")  # pragma: no cover - Where is closed


@dataclass
class Plan:
    """How a ``where`` / ``order_by`` is read: an index range (or the whole table) plus a
    filter for what the range does not cover."""

    index: str | None
    eqs: list[tuple[str, Any]]
    lower: _Cmp | None
    upper: _Cmp | None
    filters: list[Where]
    desc: bool
    #: the fields that order the rows read (index fields after those fixed by equality)
    order_fields: tuple[str, ...]

    def query(self, tables: TableFactory, table: str) -> Query:
        """The ents query of this plan."""
        range_fn = None
        if self.index is not None and not self.scans:
            eqs, lower, upper = self.eqs, self.lower, self.upper

            def range_fn(q: Any) -> Any:
                for name, value in eqs:
                    q = q.eq(name, value)
                for bound in (lower, upper):
                    if bound is not None:
                        q = getattr(q, bound.op)(_storage_name(bound.field), bound.value)
                return q

        q: Query = tables(table) if self.index is None else tables(table, self.index, range_fn)
        if self.filters:
            parts = [_filter_expr(f) for f in self.filters]
            q = q.filter(parts[0] if len(parts) == 1 else (lambda b: b.and_(*[p(b) for p in parts])))
        return q.order("desc") if self.desc else q

    @property
    def scans(self) -> bool:
        """Whether the read walks the whole table (no index range narrows it)."""
        return self.index is None or not (self.eqs or self.lower is not None or self.upper is not None)


def plan(table: TableDef, where: Where | None, order: list[tuple[str, bool]]) -> Plan:
    """Choose the index for ``where`` and ``order`` (see the module's docstring)."""
    atoms = _conjuncts(where)
    eqs: dict[str, _Cmp] = {}
    lows: dict[str, _Cmp] = {}
    highs: dict[str, _Cmp] = {}
    for atom in atoms:
        if not isinstance(atom, _Cmp) or "." in atom.field:
            continue
        column = _storage_name(atom.field)
        if atom.op == "eq":
            eqs.setdefault(column, atom)
        elif atom.op in ("gt", "gte"):
            lows.setdefault(column, atom)
        elif atom.op in ("lt", "lte"):
            highs.setdefault(column, atom)
    directions = {d for _, d in order}
    if len(directions) > 1:
        raise ValidationError(
            f'order_by on table "{table.name}" mixes "asc" and "desc"; rows are read in the order of one index, '
            "in one direction",
            table=table.name,
        )
    wanted: list[str] = []
    for field, _ in order:
        key = _order_name(field)
        if key in eqs:
            continue  # a field fixed by equality orders nothing
        wanted.append(key)
        if key == _CREATION:
            break  # creation order is a total order: nothing after it counts
    candidates: list[tuple[str | None, tuple[str, ...]]] = [(None, ())]
    candidates += [(n, f) for n, f in table.indexes.items()]
    candidates += [("by_id", ("_id",)), ("by_creation_time", ("_creation_time",))]
    best: tuple[tuple[int, int, int], str | None, tuple[str, ...], int, bool] | None = None
    for name, fields in candidates:
        k = 0
        while k < len(fields) and fields[k] in eqs:
            k += 1
        ranged = k < len(fields) and (fields[k] in lows or fields[k] in highs)
        rest = tuple(_order_name(f) for f in fields[k:] if f not in eqs)
        gives = (*rest, _CREATION) if _CREATION not in rest else rest[: rest.index(_CREATION) + 1]
        if tuple(wanted) != gives[: len(wanted)]:
            continue
        if name is not None and k == 0 and not ranged and not wanted:
            continue  # the whole table in creation order does as well
        # the most fields narrowed, then a range, then the fewest fields left to order by
        # (so that without order_by rows keep creation order where they can)
        score = (k, int(ranged), -len(rest))
        if best is None or score > best[0]:
            best = (score, name, fields, k, ranged)
    if best is None:
        after = f" (after the fields fixed by where: {', '.join(sorted(eqs))})" if eqs else ""
        raise ValidationError(
            f'find_many on table "{table.name}" cannot order by {", ".join(wanted)}: no index of the table gives that '
            f"order{after}. Add an index whose fields start with them (e.g. .index(\"by_{wanted[0]}\", "
            f'["{wanted[0]}"])); ctx.orm reads rows in index order and never sorts them in memory',
            table=table.name,
        )
    _, index, fields, k, ranged = best
    used: set[int] = set()
    chosen_eqs = []
    for f in fields[:k]:
        atom = eqs[f]
        used.add(id(atom))
        chosen_eqs.append((f, atom.value))
    lower = upper = None
    if ranged:
        lower, upper = lows.get(fields[k]), highs.get(fields[k])
        used.update(id(b) for b in (lower, upper) if b is not None)
    filters = [a for a in atoms if id(a) not in used]
    order_fields = tuple(_order_name(f) for f in fields[k:])
    return Plan(index, chosen_eqs, lower, upper, filters, bool(order and order[0][1]), order_fields)


# -- reading ----------------------------------------------------------------------------------


def _check_count(value: Any, what: str, table: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValidationError(f'{what} on table "{table}" takes a non-negative integer, got {show(value)}', table=table)
    return value


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while batch := list(itertools.islice(items, size)):
        yield batch


class _Shape:
    """What each row of a read holds: its columns and the edges ``with_`` loads."""

    def __init__(self, tables: Mapping[str, TableDef], table: TableDef, columns: Any, with_: Any) -> None:
        self.tables = tables
        self.table = table
        self.columns = _columns(table, columns)
        self.edges: list[tuple[str, dict[str, Any]]] = []
        for name, options in _with_items(table, with_):
            self.edges.append((name, options))

    def rows(self, ents: list[Ent]) -> list[Row]:
        """``ents`` (one batch) as rows, with their edges loaded together."""
        rows = [_row(e, self.columns) for e in ents]
        for name, options in self.edges:
            edge = self.table.edges[name]
            target = self.tables[edge.to]
            nested = _Shape(self.tables, target, options.get("columns"), options.get("with_", options.get("with")))
            if edge.kind in ("field", "ref"):
                # ents of one read share a cohort: the first edge() loads it for all of them
                found = [e.edge(name) for e in ents]
                present = [f for f in found if f is not None]
                loaded = iter(nested.rows(present))
                for row, f in zip(rows, found, strict=True):
                    row[name] = next(loaded) if f is not None else None
                continue
            reading = {k: v for k, v in options.items() if k not in ("columns", "with_", "with")}
            if reading:
                # limit / where / order_by apply per owner: one (indexed) read each, as kitcn
                groups = [list(_edge_query(e.edge(name), target, reading)) for e in ents]
            else:
                groups = load_plural_edge(ents, name)
            flat = nested.rows([x for g in groups for x in g])
            at = 0
            for row, group in zip(rows, groups, strict=True):
                row[name] = flat[at : at + len(group)]
                at += len(group)
        return rows


def _edge_query(q: Query, table: TableDef, options: Mapping[str, Any]) -> Query:
    unknown = set(options) - {"where", "order_by", "limit"}
    if unknown:
        raise ValidationError(
            f'with_ options on table "{table.name}": unknown {", ".join(sorted(map(str, unknown)))} '
            "(options: columns, with_, where, order_by, limit)",
            table=table.name,
        )
    where = _where(options.get("where"))
    if where is not None:
        q = q.filter(_filter_expr(where))
    order = _order(options.get("order_by"), table.name)
    if any(_order_name(f) != _CREATION for f, _ in order):
        raise ValidationError(
            f'with_ on table "{table.name}": an edge is read in the order it was made; order_by may only '
            'name "id" or "_creation_time"',
            table=table.name,
        )
    if order and order[0][1]:
        q = q.order("desc")
    if options.get("limit") is not None:
        q = q.take(_check_count(options["limit"], "with_ limit", table.name))
    return q


def _with_items(table: TableDef, with_: Any) -> list[tuple[str, dict[str, Any]]]:
    if with_ is None:
        return []
    if isinstance(with_, str):
        items: list[tuple[Any, Any]] = [(with_, True)]
    elif isinstance(with_, Mapping):
        items = list(with_.items())
    elif isinstance(with_, (list, tuple, set, frozenset)):
        items = [(name, True) for name in with_]
    else:
        raise ValidationError(f'with_ on table "{table.name}" takes edge names or {{"edge": True | {{options}}}}, got {show(with_)}', table=table.name)
    out = []
    for name, options in items:
        edge = table.edges.get(name) if isinstance(name, str) else None
        if edge is None:
            known = ", ".join(f'"{e}"' for e in table.edges) or "none"
            raise ValidationError(f'Table "{table.name}" has no edge {show(name)} to load with with_ (edges: {known})', table=table.name)
        if options is False:
            continue
        if options is True:
            options = {}
        if not isinstance(options, Mapping):
            raise ValidationError(f'with_ of edge "{name}" takes True or a dict of options, got {show(options)}', table=table.name)
        if edge.kind in ("field", "ref") and set(options) - {"columns", "with_", "with"}:
            raise ValidationError(f'Edge "{name}" of table "{table.name}" is singular: its with_ options are columns and with_', table=table.name)
        out.append((name, dict(options)))
    return out


def _columns(table: TableDef, columns: Any) -> tuple[frozenset[str], bool] | None:
    """``(names, keep)``: keep only ``names``, or (``keep`` False) all but them."""
    if columns is None:
        return None
    if isinstance(columns, Mapping):
        flags = set(columns.values())
        if not flags <= {True, False} or len(flags) > 1:
            raise ValidationError(
                f'columns on table "{table.name}" takes {{"field": True, ...}} or {{"field": False, ...}}, not a mix, got {show(columns)}',
                table=table.name,
            )
        names, keep = list(columns), flags != {False}
    elif isinstance(columns, (list, tuple, set, frozenset)):
        names, keep = list(columns), True
    else:
        raise ValidationError(f'columns on table "{table.name}" takes a list of field names, got {show(columns)}', table=table.name)
    known = {ID, _CREATION, *table.fields} - set(table.hidden)
    for name in names:
        if name not in known:
            raise ValidationError(
                f'Table "{table.name}" has no column {show(name)} (columns: {", ".join(sorted(known))})', table=table.name, field=str(name)
            )
    return frozenset(names), keep


def _row(ent: Ent, columns: tuple[frozenset[str], bool] | None) -> Row:
    doc = ent.doc()
    row = Row(id=doc.pop("_id"))
    row.update(doc)
    if columns is not None:
        names, keep = columns
        for key in list(row):
            if (key in names) != keep:
                del row[key]
    return row


def _system_row(doc: Mapping[str, Any] | None) -> Row | None:
    if doc is None:
        return None
    row = Row(id=doc["_id"])
    row.update(doc)
    return row


class TableReader:
    """``ctx.orm.query.<table>``: ``find_many``, ``find_first``, ``find_first_or_throw``."""

    def __init__(self, orm: Orm, table: TableDef) -> None:
        self._orm = orm
        self._table = table

    def __repr__(self) -> str:
        return f"<ctx.orm.query.{self._table.name}>"

    def _read(self, where: WhereArg, order_by: Any, limit: int | None, offset: int | None) -> Iterator[Ent]:
        name = self._table.name
        cond = _where(where)
        order = _order(order_by, name)
        skip = 0 if offset is None else _check_count(offset, "offset", name)
        q = plan(self._table, cond, order).query(self._orm._tables, name)
        if limit is not None:
            q = q.take(skip + _check_count(limit, "limit", name))
        # Iterating the query reads it chunk by chunk (keyset pages of 1000 rows)
        return itertools.islice(iter(q), skip, None)

    def find_many(
        self,
        *,
        where: WhereArg = None,
        order_by: Any = None,
        limit: int | None = None,
        offset: int | None = None,
        columns: Any = None,
        with_: Any = None,
    ) -> list[Row]:
        """The rows matching ``where``, in ``order_by`` (or index) order, from ``offset``,
        at most ``limit``; each with ``columns`` only and the edges in ``with_``.

        Without ``limit`` every matching row is returned: the table is read in chunks, but
        the result is one list."""
        shape = _Shape(self._orm._schema.tables, self._table, columns, with_)
        out: list[Row] = []
        for batch in _batches(self._read(where, order_by, limit, offset), BATCH):
            out.extend(shape.rows(batch))
        return out

    def find_first(
        self, *, where: WhereArg = None, order_by: Any = None, offset: int | None = None, columns: Any = None, with_: Any = None
    ) -> Row | None:
        """The first row ``find_many`` would return, or None."""
        rows = self.find_many(where=where, order_by=order_by, limit=1, offset=offset, columns=columns, with_=with_)
        return rows[0] if rows else None

    def find_first_or_throw(
        self, *, where: WhereArg = None, order_by: Any = None, offset: int | None = None, columns: Any = None, with_: Any = None
    ) -> Row:
        """Like :meth:`find_first`; EntNotFoundError when no row matches."""
        row = self.find_first(where=where, order_by=order_by, offset=offset, columns=columns, with_=with_)
        if row is None:
            raise EntNotFoundError(f'No document of table "{self._table.name}" matches the where of find_first_or_throw', table=self._table.name)
        return row


class Queries:
    """``ctx.orm.query``: ``ctx.orm.query.users`` (or ``ctx.orm.query["users"]``)."""

    def __init__(self, orm: Orm) -> None:
        self._orm = orm

    def __getattr__(self, name: str) -> TableReader:
        if name.startswith("__"):
            raise AttributeError(name)
        return TableReader(self._orm, self._orm._table_def(name))

    def __getitem__(self, name: str) -> TableReader:
        return TableReader(self._orm, self._orm._table_def(name))


# -- system tables ------------------------------------------------------------------------------


class SystemQuery:
    """``ctx.orm.system.query("_scheduled_functions")``: ``ctx.db.system.query`` whose
    documents also carry ``id``."""

    def __init__(self, inner: Any) -> None:
        self._q = inner

    def with_index(self, index: str, range_fn: Callable[[Any], Any] | None = None) -> SystemQuery:
        return SystemQuery(self._q.with_index(index, range_fn))

    def filter(self, fn: Callable[[Any], Any]) -> SystemQuery:
        return SystemQuery(self._q.filter(fn))

    def order(self, direction: str) -> SystemQuery:
        return SystemQuery(self._q.order(direction))

    def collect(self) -> list[Row]:
        return [r for r in map(_system_row, self._q.collect()) if r is not None]

    def take(self, n: int) -> list[Row]:
        return [r for r in map(_system_row, self._q.take(n)) if r is not None]

    def first(self) -> Row | None:
        return _system_row(self._q.first())

    def unique(self) -> Row | None:
        return _system_row(self._q.unique())

    def paginate(self, opts: dict[str, Any]) -> Any:
        return self._q.paginate(opts).map(_system_row)

    def __iter__(self) -> Iterator[Row]:
        for doc in self._q:
            row = _system_row(doc)
            assert row is not None
            yield row


class SystemReader:
    """``ctx.orm.system``: Convex's system reader (``_scheduled_functions``, ``_storage``)."""

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx

    def get(self, id: str) -> Row | None:
        """The system document with ``id`` (e.g. a job), or None."""
        return _system_row(self._ctx.db.system.get(id))

    def query(self, table: str) -> SystemQuery:
        """A query over a system table, as ``ctx.db.system.query``."""
        return SystemQuery(self._ctx.db.system.query(table))


# -- writing ------------------------------------------------------------------------------------


def _check_values(value: Any, what: str, table: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError(f'{what} on table "{table}" takes a dict of field values, got {show(value)}', table=table)
    if ID in value or "_id" in value:
        raise ValidationError(f'{what} on table "{table}": "id" is the document id, which ents assigns and never changes', table=table, field=ID)
    return dict(value)


def _returning(orm: Orm, table: TableDef, ids: Sequence[str], cols: tuple[str, ...]) -> list[Row]:
    """The rows with ``ids`` as they are now, with ``cols`` only (all when none)."""
    columns = _columns(table, list(cols)) if cols else None
    out: list[Row] = []
    for batch in _batches(iter(ids), BATCH):
        got = orm._tables(table.name).get_many(batch)
        out.extend(_row(e, columns) for e in got if e is not None)
    return out


class InsertResult(list[str]):
    """The ids of the inserted rows (in order); ``.returning("id", ...)`` reads them back."""

    def __init__(self, orm: Orm, table: TableDef, ids: list[str]) -> None:
        super().__init__(ids)
        self._orm = orm
        self._table = table

    def returning(self, *columns: str) -> list[Row]:
        """The inserted rows (with ``columns`` only, when given), in insert order."""
        return _returning(self._orm, self._table, list(self), columns)


class InsertBuilder:
    """``ctx.orm.insert(table)``: ``.values({...})`` or ``.values([{...}, ...])`` inserts."""

    def __init__(self, orm: Orm, table: TableDef) -> None:
        self._orm = orm
        self._table = table

    def values(self, values: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> InsertResult:
        """Insert one row or several (all or none); returns their ids."""
        name = self._table.name
        q = self._orm._tables(name)
        if isinstance(values, Mapping):
            ids = [q.insert(_check_values(values, "insert().values()", name))]
        elif isinstance(values, (list, tuple)):
            ids = q.insert_many([_check_values(v, "insert().values()", name) for v in values]) if values else []
        else:
            raise ValidationError(f'insert().values() on table "{name}" takes a dict or a list of dicts, got {show(values)}', table=name)
        return InsertResult(self._orm, self._table, [str(i) for i in ids])


class UpdateResult(int):
    """How many rows were updated; ``.returning(...)`` reads them back as updated."""

    _orm: Orm
    _table: TableDef
    _ids: list[str]

    def __new__(cls, orm: Orm, table: TableDef, ids: list[str]) -> UpdateResult:
        out = super().__new__(cls, len(ids))
        out._orm, out._table, out._ids = orm, table, ids
        return out

    def returning(self, *columns: str) -> list[Row]:
        """The updated rows (with ``columns`` only, when given)."""
        return _returning(self._orm, self._table, self._ids, columns)


class _Targeted:
    """What update and delete share: ``.where(...)`` or ``.allow_full_scan()`` runs them."""

    _verb = ""

    def __init__(self, orm: Orm, table: TableDef, returning: tuple[str, ...] | None = None) -> None:
        self._orm = orm
        self._table = table
        self._returning = returning

    def _matching(self, where: Where | None) -> tuple[Query, Plan]:
        p = plan(self._table, where, [])
        return p.query(self._orm._tables, self._table.name), p

    def where(self, where: Where | Mapping[str, Any]) -> Any:
        """Run on the rows matching ``where``."""
        cond = _where(where)
        if cond is None:
            raise ValidationError(
                f'{self._verb}().where() on table "{self._table.name}" needs a condition; call '
                f".allow_full_scan() to {self._verb} every row",
                table=self._table.name,
            )
        return self._run(cond)

    def allow_full_scan(self) -> Any:
        """Run on every row of the table."""
        return self._run(None)

    def _run(self, where: Where | None) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError


class UpdateSet(_Targeted):
    """``ctx.orm.update(table).set({...})``: run it with ``.where(...)``."""

    _verb = "update"

    def __init__(self, orm: Orm, table: TableDef, values: dict[str, Any], returning: tuple[str, ...] | None = None) -> None:
        super().__init__(orm, table, returning)
        self._values = values

    def returning(self, *columns: str) -> UpdateSet:
        """Make ``.where(...)`` return the updated rows (``columns`` only, when given)."""
        return UpdateSet(self._orm, self._table, self._values, columns)

    def _run(self, where: Where | None) -> Any:
        q, p = self._matching(where)
        ids: list[str] = []
        if set(self._values) & {*p.order_fields, *(f for f, _ in p.eqs)}:
            # The update moves rows within the order being read: take the ids first, so
            # that no row is met (and updated) twice.
            for batch in _batches((e._id for e in q), BATCH):
                ids.extend(batch)
            for batch in _batches(iter(ids), BATCH):
                for ent in self._orm._tables(self._table.name).get_many(batch):
                    if ent is not None:
                        ent.patch(self._values)
        else:
            for ent in q:  # read chunk by chunk; each ent patched through the ents writer
                ent.patch(self._values)
                ids.append(ent._id)
        result = UpdateResult(self._orm, self._table, ids)
        return result if self._returning is None else result.returning(*self._returning)


class UpdateBuilder:
    """``ctx.orm.update(table)``: ``.set({...}).where(...)``."""

    def __init__(self, orm: Orm, table: TableDef) -> None:
        self._orm = orm
        self._table = table

    def set(self, values: Mapping[str, Any]) -> UpdateSet:
        """The fields to patch (None removes an optional field)."""
        checked = _check_values(values, "update().set()", self._table.name)
        if not checked:
            raise ValidationError(f'update().set() on table "{self._table.name}" needs at least one field', table=self._table.name)
        return UpdateSet(self._orm, self._table, checked)


class DeleteBuilder(_Targeted):
    """``ctx.orm.delete(table)``: ``.where(...)`` deletes (with the table's deletion
    behavior and cascades) and returns how many rows; ``.returning(...)`` first to get them."""

    _verb = "delete"

    def returning(self, *columns: str) -> DeleteBuilder:
        """Make ``.where(...)`` return the deleted rows as they were (``columns`` only, when given)."""
        return DeleteBuilder(self._orm, self._table, columns)

    def _run(self, where: Where | None) -> Any:
        q, p = self._matching(where)
        columns = _columns(self._table, list(self._returning)) if self._returning else None
        rows: list[Row] = []
        count = 0
        if self._table.deletion is None:
            # Hard deletion: what is deleted leaves the range, so each batch is the first
            # rows of what is left, deleted set-based by ents' query.delete().
            while True:
                batch = q.take(BATCH)
                if self._returning is not None:
                    rows.extend(_row(e, columns) for e in batch.collect())
                n = batch.delete()
                count += n
                if n < BATCH:
                    break
        else:
            # Soft or scheduled deletion keeps the rows: go through them once.
            moves = "deletion_time" in p.order_fields or any(f == "deletion_time" for f, _ in p.eqs)
            ents: Iterable[Ent] = q
            if moves:
                ids = [e._id for e in q]
                ents = (e for b in _batches(iter(ids), BATCH) for e in self._orm._tables(self._table.name).get_many(b) if e is not None)
            for ent in ents:
                if self._returning is not None:
                    rows.append(_row(ent, columns))
                ent.delete()
                count += 1
        return count if self._returning is None else rows


# -- ctx.orm ---------------------------------------------------------------------------------


class Orm:
    """``ctx.orm``: ``query.<table>``, ``insert``, ``update``, ``delete``, ``system``,
    ``skip_rules``. Built on ``ctx.table`` (rules apply) and ``ctx.db.system``."""

    def __init__(self, ctx: Any, tables: TableFactory | None = None) -> None:
        self._ctx = ctx
        self._tables: TableFactory = tables if tables is not None else ctx.table
        self._schema = ctx.app.schema

    def __repr__(self) -> str:
        return "<ctx.orm>"

    def _table_def(self, name: Any) -> TableDef:
        tables = self._schema.tables
        table: TableDef | None = tables.get(name) if isinstance(name, str) else None
        if table is None or table.is_system or table.is_edge_table:
            known = ", ".join(f'"{n}"' for n in self._schema.user_tables) or "none"
            hint = "; system tables are read with ctx.orm.system" if isinstance(name, str) and name.startswith("_") else ""
            raise ValidationError(f"ctx.orm: no table {show(name)} (tables: {known}){hint}", table=show_name(name))
        if ID in table.fields:
            raise ValidationError(
                f'ctx.orm cannot serve table "{table.name}": its field "id" would clash with the document id, '
                'which ctx.orm calls "id"; use ctx.table for it',
                table=table.name,
                field=ID,
            )
        return table

    @property
    def query(self) -> Queries:
        """``ctx.orm.query.<table>.find_many(...)`` / ``find_first(...)``."""
        return Queries(self)

    @property
    def system(self) -> SystemReader:
        """``ctx.orm.system.get(id)`` / ``ctx.orm.system.query(table)``."""
        return SystemReader(self._ctx)

    @property
    def skip_rules(self) -> Orm:
        """``ctx.orm`` without the App's rules (as ``ctx.skip_rules.table``)."""
        return Orm(self._ctx, self._ctx.skip_rules.table)

    def insert(self, table: str) -> InsertBuilder:
        """``ctx.orm.insert("items").values({...})`` (``.returning(...)`` after it)."""
        return InsertBuilder(self, self._table_def(table))

    def update(self, table: str) -> UpdateBuilder:
        """``ctx.orm.update("items").set({...}).where(...)``: each matching row is patched."""
        return UpdateBuilder(self, self._table_def(table))

    def delete(self, table: str) -> DeleteBuilder:
        """``ctx.orm.delete("items").where(...)``: each matching row is deleted."""
        return DeleteBuilder(self, self._table_def(table))
