"""Reading ents: ``ctx.table(...)``, queries, ents and edge traversal.

Queries are lazy: ``ctx.table("users").filter(...).order("desc")`` builds SQL and runs it
only when iterated, mapped or collected. Rows are read in bounded chunks with keyset
continuation, so iterating a large table never holds it all in memory. The ents of one
chunk form a *cohort*: the first time one of them follows a singular edge, the edge is
loaded for the whole cohort with a single ``IN (...)`` query, so
``ctx.table("users").map(lambda u: u.edge("profile").bio)`` costs a few queries, not one
per user.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from . import deletion, writer
from .errors import EntNotFoundError, InvalidIdError, NotUniqueError, ReadOnlyError, ValidationError
from .expressions import compile_filter, compile_range
from .schema import Edge
from .values import Doc, cursor_value_ok, dumps, loads, show, show_name

if TYPE_CHECKING:
    from .runtime import TableRuntime
    from .transaction import Transaction

CHUNK = 1000

#: Convex's indexes that every table has, over system fields. They need no SQL index of
#: their own: ``by_id`` orders by the row key (the primary key), ``by_creation_time`` by
#: creation time, which on SQLite is row-key order too.
BUILTIN_INDEXES: dict[str, tuple[str, ...]] = {"by_id": ("_id",), "by_creation_time": ("_creation_time",)}


# -- ents ------------------------------------------------------------------------------


class Cohort:
    """Ents read together; singular edges are loaded for all of them at once."""

    __slots__ = ("ents", "cache", "seq")

    def __init__(self, ents: list[Ent]) -> None:
        self.ents = ents
        self.cache: dict[str, dict[Any, Any]] = {}
        self.seq = -1


class Ent:
    """A document of an ent table: fields read as attributes or keys, edges via ``edge``."""

    __slots__ = ("_rt", "_row", "_tx", "_cohort", "_docc", "_json")

    def __init__(self, rt: TableRuntime, row: tuple[Any, ...], tx: Transaction, cohort: Cohort | None = None) -> None:
        self._rt = rt
        self._row = row
        self._tx = tx
        self._cohort = cohort
        self._docc: dict[str, Any] | None = None
        self._json: dict[str, Any] | None = None

    # reading fields -----------------------------------------------------------------

    @property
    def table_name(self) -> str:
        return self._rt.name

    def _lookup(self, name: str) -> Any:
        rt = self._rt
        get = rt.getters.get(name)
        if get is not None:
            return get(self._row)
        get = rt.json_getters.get(name)
        if get is not None:
            # Decoded once per ent: repeated reads (a.meta.x, a.meta.y) do not re-parse.
            cache = self._json
            if cache is None:
                cache = self._json = {}
            if name not in cache:
                cache[name] = get(self._row)
            return cache[name]
        if rt.table.shape is not None:
            doc = self._shaped()
            if name in doc:
                return doc[name]
            raise KeyError(name)
        if name == "_id":
            return rt.encode_rid(self._row[0])
        idx = rt.col_index.get(name)
        if idx is None or idx == 0 or name in rt.table.hidden:
            raise KeyError(name)
        return rt.decode(self._row, idx)

    def _shaped(self) -> dict[str, Any]:
        if self._docc is None:
            self._docc = Doc({k: _as_doc(v) for k, v in self._rt.doc(self._row).items()})
        return self._docc

    def __getattr__(self, name: str) -> Any:
        get = self._rt.getters.get(name)
        if get is not None:
            return get(self._row)
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self._lookup(name)
        except KeyError:
            raise AttributeError(self._unknown(name)) from None

    def __getitem__(self, name: str) -> Any:
        try:
            return self._lookup(name)
        except KeyError:
            raise KeyError(self._unknown(name)) from None

    def _unknown(self, name: str) -> str:
        rt = self._rt
        hint = ""
        if name in rt.table.edges:
            hint = f'; "{name}" is an edge: use .edge("{name}")'
        return f'Table "{rt.name}" has no field "{name}"{hint}'

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self._lookup(name)
        except KeyError:
            return default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.doc()

    def keys(self) -> list[str]:
        return list(self.doc())

    def items(self) -> list[tuple[str, Any]]:
        return list(self.doc().items())

    def doc(self) -> dict[str, Any]:
        """The document as a plain dict (``_id``, ``_creation_time`` and every field)."""
        if self._rt.table.shape is not None:
            return dict(self._shaped())
        return self._rt.doc(self._row)

    @property
    def rid(self) -> int:
        return int(self._row[0])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Ent):
            return self._rt.name == other._rt.name and self.doc() == other.doc()
        if isinstance(other, dict):
            return self.doc() == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self._rt.name, self._row[0]))

    def __repr__(self) -> str:
        return f"Ent({self._rt.name!r}, {self.doc()!r})"

    # edges ---------------------------------------------------------------------------

    def _open(self) -> Transaction:
        """The ent's transaction, refused once it has ended (the ent's fields, a snapshot,
        stay readable; what would reach the database does not)."""
        tx = self._tx
        if tx.closed:
            raise tx.closed_error(f'The ent `{self._rt.encode_rid(self._row[0])}` of table "{self._rt.name}"')
        return tx

    def edge(self, name: str) -> Any:
        """Follow an edge: an Ent (or None) for singular edges, a query for plural ones."""
        if self._tx.closed:
            self._open()  # raises
        edge = self._edge_def(name)
        if edge.kind in ("field", "ref"):
            found = _single_edge(self, edge)
            rules = getattr(self._tx, "rules", None)  # App(rules=...): see rules.py
            return found if rules is None or found is None else rules.visible(found)
        return _plural_edge(self, edge)

    def edge_x(self, name: str) -> Any:
        """Like :meth:`edge`, but a missing singular edge raises EntNotFoundError."""
        if self._tx.closed:
            self._open()  # raises
        edge = self._edge_def(name)
        if edge.kind in ("field", "ref"):
            result = _single_edge(self, edge)
            if result is None:
                raise EntNotFoundError(
                    f'Edge "{name}" of the document with id `{self._id}` in table "{self._rt.name}" '
                    "leads to no document",
                    table=self._rt.name,
                    id=self._id,
                )
            rules = getattr(self._tx, "rules", None)
            return result if rules is None else rules.require_readable(result)
        return _plural_edge(self, edge)

    def _edge_def(self, name: str) -> Edge:
        edge = self._rt.table.edges.get(name) if isinstance(name, str) else None
        if edge is None:
            known = ", ".join(f'"{e}"' for e in self._rt.table.edges) or "none"
            raise ValidationError(
                f'Table "{self._rt.name}" has no edge "{show_name(name)}" (edges: {known})', table=self._rt.name
            )
        return edge

    # writing -------------------------------------------------------------------------

    def patch(self, value: dict[str, Any]) -> str:
        """Update the given fields (None removes an optional field) and edges; returns the
        id (with ``.get()`` to read the updated ent)."""
        tx = self._tx
        if tx.closed:
            self._open()  # raises
        rules = getattr(tx, "rules", None)
        if rules is not None:
            return rules.patch(self, value)  # type: ignore[no-any-return]
        return writer.patch(tx, self._rt, self._row[0], value)

    def replace(self, value: dict[str, Any]) -> str:
        """Replace all fields; many:many edges given are set exactly, omitted ones kept.
        Returns the id (with ``.get()``)."""
        tx = self._open()
        rules = getattr(tx, "rules", None)
        if rules is not None:
            return rules.replace(self, value)  # type: ignore[no-any-return]
        return writer.replace(tx, self._rt, self._row[0], value)

    def delete(self) -> str:
        """Delete the ent following its table's deletion behavior and cascade rules."""
        tx = self._open()
        rules = getattr(tx, "rules", None)
        if rules is not None:
            return rules.delete(self)  # type: ignore[no-any-return]
        return deletion.delete_ent(tx, self._rt, self._row[0])


def _as_doc(value: Any) -> Any:
    if type(value) is dict:
        return Doc({k: _as_doc(v) for k, v in value.items()})
    return value


def ent_class(rt: TableRuntime) -> type[Ent]:
    """The Ent subclass of one table, whose fields are properties.

    Reading ``user.name`` through a property skips the failed normal lookup that
    ``__getattr__`` comes after, which makes field access several times faster. Fields
    named like an Ent method (``doc``, ``edge``, ``patch``, ``get``, ...) stay readable as
    ``ent["name"]``.
    """
    cls = rt.cache.get("ent_class")
    if cls is None:
        props: dict[str, Any] = {"__slots__": ()}
        reserved = set(dir(Ent))
        for name, get in rt.getters.items():
            if name not in reserved:
                props[name] = _row_property(name, get)
        for name in rt.json_getters:
            if name not in reserved:
                props[name] = _json_property(name)
        cls = rt.cache["ent_class"] = type(f"Ent_{rt.name}", (Ent,), props)
    return cls  # type: ignore[no-any-return]


def _row_property(name: str, get: Callable[[tuple[Any, ...]], Any]) -> property:
    def read(self: Ent) -> Any:
        return get(self._row)

    return property(read, doc=f"Field {name!r}")


def _json_property(name: str) -> property:
    def read(self: Ent) -> Any:
        return self._lookup(name)

    return property(read, doc=f"Field {name!r}")


def make_ents(rt: TableRuntime, rows: Sequence[tuple[Any, ...]], tx: Transaction) -> list[Ent]:
    ents: list[Ent] = []
    cohort = Cohort(ents) if len(rows) > 1 else None
    append = ents.append
    cls = ent_class(rt)
    for row in rows:
        append(cls(rt, row, tx, cohort))
    return ents


def fetch_rows(tx: Transaction, rt: TableRuntime, column: str, keys: list[Any]) -> list[tuple[Any, ...]]:
    """Rows of ``rt`` whose ``column`` is in ``keys`` (in batches)."""
    if not keys:
        return []
    q = tx.dialect.q
    return list(tx.in_chunks(f"SELECT {rt.select_list} FROM {rt.q_table}", q(column), keys))


def _cohort_map(ent: Ent, edge: Edge, build: Callable[[list[Ent]], dict[Any, Any]]) -> dict[Any, Any]:
    cohort = ent._cohort
    assert cohort is not None
    tx = ent._tx
    if cohort.seq != tx.write_seq:
        cohort.cache.clear()
        cohort.seq = tx.write_seq
    m = cohort.cache.get(edge.name)
    if m is None:
        m = build(cohort.ents)
        cohort.cache[edge.name] = m
    return m


def _single_edge(ent: Ent, edge: Edge) -> Ent | None:
    tx = ent._tx
    rt = ent._rt
    target = tx.rt(edge.to)
    if edge.kind == "field":
        idx = rt.col_index[edge.field]
        key = ent._row[idx]
        if key is None:
            return None
        if ent._cohort is not None:
            def build(ents: list[Ent]) -> dict[Any, Any]:
                keys = list({e._row[idx] for e in ents if e._row[idx] is not None})
                return {e._row[0]: e for e in make_ents(target, fetch_rows(tx, target, "_rid", keys), tx)}

            return _cohort_map(ent, edge, build).get(key)  # type: ignore[no-any-return]
        row = tx.fetchone(target.sql_get, (key,))
        return ent_class(target)(target, row, tx) if row is not None else None
    # 1:1 ref end: the other table stores our id in edge.field
    col = target.col_index[edge.field]
    if ent._cohort is not None:
        def build_ref(ents: list[Ent]) -> dict[Any, Any]:
            keys = [e._row[0] for e in ents]
            return {e._row[col]: e for e in make_ents(target, fetch_rows(tx, target, edge.field, keys), tx)}

        return _cohort_map(ent, edge, build_ref).get(ent._row[0])  # type: ignore[no-any-return]
    q = tx.dialect.q
    row = tx.fetchone(
        f"SELECT {target.select_list} FROM {target.q_table} WHERE {q(edge.field)} = {tx.dialect.param} LIMIT 1",
        (ent._row[0],),
    )
    return ent_class(target)(target, row, tx) if row is not None else None


def load_plural_edge(ents: Sequence[Ent], name: str) -> list[list[Ent]]:
    """For each of ``ents`` (of one table, read in one transaction), the ents at the other
    end of its plural edge ``name``, in the order ``ent.edge(name)`` yields them and with
    the read rules applied as there, read together: a few ``IN (...)`` queries per batch
    of owners instead of one query per owner (what ``with_`` in ents.orm stands on)."""
    if not ents:
        return []
    first = ents[0]
    tx = first._open()
    edge = first._edge_def(name)
    if edge.kind in ("field", "ref"):
        raise ValidationError(f'Edge "{name}" of table "{first._rt.name}" is singular; read it with .edge("{name}")', table=first._rt.name)
    target = tx.rt(edge.to)
    owners = list({e._row[0] for e in ents})
    found: dict[Any, list[tuple[Any, ...]]] = {}
    if edge.kind == "many_field":
        col = target.col_index[edge.field]
        rows = fetch_rows(tx, target, edge.field, owners)
        # the order of the edge's own query: creation order within one owner
        rows.sort(key=(lambda r: r[0]) if tx.dialect.rid_order else (lambda r: (r[1], r[0])))
        for row in rows:
            found.setdefault(row[col], []).append(row)
    else:
        assert edge.edge_table is not None and edge.ref is not None
        links = tx.rt(edge.edge_table)
        own, other = links.col_index[edge.field], links.col_index[edge.ref]
        pairs = sorted(fetch_rows(tx, links, edge.field, owners), key=lambda r: r[0])  # when each edge was added
        by_rid = {r[0]: r for r in fetch_rows(tx, target, "_rid", list({p[other] for p in pairs}))}
        for pair in pairs:
            other_row = by_rid.get(pair[other])
            if other_row is not None:
                found.setdefault(pair[own], []).append(other_row)
    # one cohort for all of them, so that their own singular edges load together too
    loaded = iter(make_ents(target, [r for e in ents for r in found.get(e._row[0], ())], tx))
    out = [[next(loaded) for _ in found.get(e._row[0], ())] for e in ents]
    rules = getattr(tx, "rules", None)
    if rules is not None:
        out = [[x for x in group if rules.readable(x)] for group in out]
    return out


def _plural_edge(ent: Ent, edge: Edge) -> Query:
    tx = ent._tx
    target = tx.rt(edge.to)
    if edge.kind == "many_field":
        return Query(tx, target, index=edge.field, eq=((edge.field, ent._row[0]),), edge_owner=ent, edge=edge)
    return EdgeQuery(tx, target, edge, ent)


# -- queries -----------------------------------------------------------------------------


class Query:
    """A lazy query over one table (or over the targets of a many:many edge)."""

    # Defaults, so that ``ctx.table("users")`` (built on every call of most functions) only
    # sets what differs; __init__ and _clone set instance attributes over them.
    _index: str | None = None
    _range_fn: Callable[[Any], Any] | None = None
    _eq: tuple[tuple[str, Any], ...] = ()
    _filters: tuple[Callable[[Any], Any], ...] = ()
    _desc = False
    _limit: int | None = None
    _edge_owner: Ent | None = None
    _edge: Edge | None = None
    _cache: list[Ent] | None = None

    @classmethod
    def _whole(cls, tx: Transaction, rt: TableRuntime) -> Query:
        """The query over all of ``rt``'s table, in creation order (no arguments to check)."""
        q = object.__new__(cls)
        q._tx = tx
        q._rt = rt
        return q

    def __init__(
        self,
        tx: Transaction,
        rt: TableRuntime,
        *,
        index: str | None = None,
        range_fn: Callable[[Any], Any] | None = None,
        eq: tuple[tuple[str, Any], ...] = (),
        filters: tuple[Callable[[Any], Any], ...] = (),
        desc: bool = False,
        limit: int | None = None,
        edge_owner: Ent | None = None,
        edge: Edge | None = None,
    ) -> None:
        self._tx = tx
        self._rt = rt
        self._index = index
        self._range_fn = range_fn
        self._eq = eq  # raw (already converted) equality constraints on index fields
        self._filters = filters
        self._desc = desc
        self._limit = limit
        self._edge_owner = edge_owner
        self._edge = edge
        if index is not None and rt.table.resolve_index(index) is None and not (isinstance(index, str) and index in BUILTIN_INDEXES):
            known = ", ".join(f'"{n}"' for n in [*rt.table.index_names(), *BUILTIN_INDEXES])
            raise ValidationError(f'Table "{rt.name}" has no index "{show_name(index)}" (indexes: {known})', table=rt.name)

    def _open(self) -> Transaction:
        """The query's transaction, refused once it has ended."""
        tx = self._tx
        if tx.closed:
            raise tx.closed_error(f'A query of table "{self._rt.name}"')
        return tx

    def _clone(self, **changes: Any) -> Query:
        q = object.__new__(type(self))
        q.__dict__.update(self.__dict__)
        q._cache = None
        for k, v in changes.items():
            setattr(q, "_" + k, v)
        return q

    # building ---------------------------------------------------------------------------

    def filter(self, fn: Callable[[Any], Any]) -> Query:
        """Keep documents matching a Convex filter expression: ``lambda q: q.eq(q.field("x"), 1)``."""
        if not callable(fn):
            raise ValidationError("filter() takes a function of q returning a filter expression", table=self._rt.name)
        return self._clone(filters=(*self._filters, fn))

    def order(self, direction: str, index: str | None = None) -> Query:
        """Order ``"asc"`` or ``"desc"`` (by the index, or by creation time)."""
        if direction not in ("asc", "desc"):
            raise ValidationError(f'order() takes "asc" or "desc", got {show(direction)}', table=self._rt.name)
        changes: dict[str, Any] = {"desc": direction == "desc"}
        if index is not None:
            if self._index is not None and self._index != index:
                raise ValidationError(
                    f'Query on "{self._rt.name}" already uses index "{self._index}"', table=self._rt.name
                )
            Query(self._tx, self._rt, index=index)  # validates the name
            changes["index"] = index
        return self._clone(**changes)

    def take(self, n: int) -> Query:
        """At most ``n`` results (still lazy; iterate, index or ``len()`` it)."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValidationError(f"take() needs a non-negative integer, got {show(n)}", table=self._rt.name)
        limit = n if self._limit is None else min(n, self._limit)
        return self._clone(limit=limit)

    # SQL --------------------------------------------------------------------------------

    def _order_columns(self) -> tuple[list[str], list[bool]]:
        """Order columns (SQL) and whether each can be NULL."""
        q = self._tx.dialect.q
        cols: list[str] = []
        nullable: list[bool] = []
        if self._index == "by_id":
            return [f"t.{q('_rid')}"], [False]  # ids are ordered as they were handed out
        if self._index is not None and self._index != "by_creation_time":
            resolved = self._rt.table.resolve_index(self._index)
            assert resolved is not None
            for f in resolved[1]:
                cols.append(self._rt.index_expr(f, f"t.{q(f)}"))
                spec = self._rt.table.fields[f]
                # JSON fields may hold null (Any, unions with None) without being Optional.
                nullable.append(spec.nullable or spec.has_default or spec.kind == "json")
        if self._tx.dialect.rid_order:
            cols.append(f"t.{q('_rid')}")  # creation order is row-key order
            nullable.append(False)
        else:
            cols += [f"t.{q('_creation_time')}", f"t.{q('_rid')}"]
            nullable += [False, False]
        return cols, nullable

    def _base(self) -> tuple[str, list[str], list[Any], list[Any]]:
        """FROM clause, WHERE conditions, parameters, and the parameter of each leading
        index field fixed by equality (None for one that is not a plain parameter)."""
        rt = self._rt
        q = self._tx.dialect.q
        conds: list[str] = []
        params: list[Any] = []
        fixed: list[Any] = []
        for name, value in self._eq:
            conds.append(f"t.{q(name)} = {self._tx.dialect.param}")
            params.append(value)
            fixed.append(value)
        if self._range_fn is not None:
            assert self._index is not None
            resolved = rt.table.resolve_index(self._index)
            # by_creation_time and by_id are Convex's built-in indexes over a system field
            fields = resolved[1] if resolved else BUILTIN_INDEXES[self._index]
            seek = self._creation_bound if resolved is None and self._index == "by_creation_time" and self._tx.dialect.rid_order else None
            c, p = compile_range(
                rt, self._index, tuple(fields), self._range_fn, alias="t", creation_bound=seek, eq_params=fixed
            )
            conds += c
            params += p
        for fn in self._filters:
            c_sql, p = compile_filter(rt, fn, alias="t")
            conds.append(c_sql)
            params += p
        return f"{rt.q_table} t", conds, params, fixed

    def _creation_bound(self, op: str, value: Any) -> tuple[str, list[Any]]:
        """The ``_rid`` range equal to a ``_creation_time`` comparison, where creation
        order is row-key order: lets SQLite seek by rowid instead of scanning the table."""
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return "1=1", []
        tx = self._tx
        rid = f"t.{tx.dialect.q('_rid')}"
        p = tx.dialect.param
        top = tx.fetchone(f"SELECT MAX({tx.dialect.q('_rid')}) FROM {self._rt.q_table}")
        if top is None or top[0] is None:  # no rows: nothing to seek
            return "1=1", []
        end = int(top[0]) + 1
        if op == "=":
            lo = self._first_rid(value, False, 0, end)
            hi = self._first_rid(value, True, lo, end)
            return f"{rid} >= {p} AND {rid} < {p}", [lo, hi]
        first = self._first_rid(value, op in (">", "<="), 0, end)
        return (f"{rid} >= {p}", [first]) if op in (">", ">=") else (f"{rid} < {p}", [first])

    def _first_rid(self, value: float, strict: bool, lo: int, end: int) -> int:
        """The smallest row key from ``lo`` on whose ``_creation_time`` is above (``strict``)
        or at least ``value``; ``end`` (one past the largest key) if there is none. A binary
        search over the row keys: creation time never decreases as they grow."""
        tx = self._tx
        q = tx.dialect.q
        probe = (
            f"SELECT {q('_rid')}, {q('_creation_time')} FROM {self._rt.q_table} "
            f"WHERE {q('_rid')} >= {tx.dialect.param} ORDER BY {q('_rid')} LIMIT 1"
        )
        hi = end
        while lo < hi:
            mid = (lo + hi) // 2
            row = tx.fetchone(probe, (mid,))
            if row is None or (row[1] > value if strict else row[1] >= value):
                hi = mid
            else:
                lo = int(row[0]) + 1  # every key up to this row's is too early
        row = tx.fetchone(probe, (lo,))
        return end if row is None else int(row[0])

    def _signature(self) -> str:
        key = f"{self._rt.name}|{self._index}|{self._desc}|{type(self).__name__}"
        return hashlib.sha1(key.encode()).hexdigest()[:8]

    def _select(
        self,
        base: tuple[str, list[str], list[Any], list[Any]],
        after: list[Any] | None,
        limit: int | None,
        upper_rid: int | None = None,
    ) -> tuple[str, list[Any]]:
        """The SELECT of one chunk: ``base`` (from :meth:`_base`) after the key ``after``."""
        d = self._tx.dialect
        rt = self._rt
        source, conds, params, fixed = base
        conds = list(conds)
        params = list(params)
        cols, nullable = self._order_columns()
        if after is not None:
            values, marks = self._cursor_params(after)
            # Leading index fields fixed by equality need no place in the keyset: the cursor
            # row shares their values, and without them the database seeks straight to it.
            skip = 0
            for v in fixed:
                if v is None or skip >= len(values) - 1 or values[skip] != v or (marks and marks[skip] != d.param):
                    break
                skip += 1
            c, p = keyset(d, cols[skip:], nullable[skip:], values[skip:], self._desc, marks[skip:] if marks else None)
            conds.append(c)
            params += p
        if upper_rid is not None:
            conds.append(f"t.{d.q('_rid')} <= {d.param}")
            params.append(upper_rid)
        select = ", ".join(f"t.{d.q(c)}" for c in rt.columns)
        extra = self._extra_columns()
        if extra:
            select += ", " + ", ".join(extra)
        sql = f"SELECT {select} FROM {source}"
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        sql += " ORDER BY " + ", ".join(d.order_term(c, self._desc) for c in cols)
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return sql, params

    def _extra_columns(self) -> list[str]:
        return []

    def _index_fields(self) -> tuple[str, ...]:
        if self._index is None or self._index in BUILTIN_INDEXES:
            return ()
        resolved = self._rt.table.resolve_index(self._index)
        assert resolved is not None
        return resolved[1]

    def _key_of(self, row: tuple[Any, ...]) -> list[Any]:
        rt = self._rt
        fields = self._index_fields()
        tail = [row[0]] if self._tx.dialect.rid_order or self._index == "by_id" else [row[1], row[0]]
        if fields:
            return [rt.key_value(f, row[rt.col_index[f]]) for f in fields] + tail
        return tail

    def _cursor_params(self, after: list[Any]) -> tuple[list[Any], list[str] | None]:
        """Cursor values as parameters, with the placeholder each needs (None: all plain)."""
        fields = self._index_fields()
        tail = 1 if self._tx.dialect.rid_order else 2
        if not fields or not any(self._rt.is_json(f) for f in fields) or len(after) != len(fields) + tail:
            return after, None
        values: list[Any] = []
        marks: list[str] = []
        for f, v in zip(fields, after, strict=False):
            if v is not None and self._rt.is_json(f):
                mark, v = self._rt.dialect.json_value_param(v)
            else:
                mark = self._rt.dialect.param
            values.append(v)
            marks.append(mark)
        rest = after[len(fields) :]
        return values + rest, marks + [self._rt.dialect.param] * len(rest)

    def _row_of(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        return row

    def _rows(self, limit: int | None, after: list[Any] | None = None) -> Iterator[list[tuple[Any, ...]]]:
        """Raw rows in chunks, following the keyset from ``after``."""
        tx = self._open()
        rules = getattr(tx, "rules", None)
        if rules is not None:  # App(rules=...): only the rows the read rule allows
            yield from rules.rows(self, limit, after)
            return
        # Compiled once per read (not per chunk), and first: a bad filter or range is refused
        # even when there is no row. Not kept across reads: row-key bounds derived from
        # creation times hold only for the rows there are now.
        base = self._base()
        upper = None
        if tx.write and limit is None and not isinstance(self, EdgeQuery):
            # Do not chase rows this very transaction inserts while iterating.
            got = tx.fetchone(f"SELECT MAX({tx.dialect.q('_rid')}) FROM {self._rt.q_table}")
            upper = got[0] if got else None
            if upper is None:
                return
        remaining = limit
        while remaining is None or remaining > 0:
            n = CHUNK if remaining is None else min(CHUNK, remaining)
            sql, params = self._select(base, after, n, upper)
            rows = tx.fetchall(sql, params)
            if not rows:
                return
            yield rows
            if len(rows) < n:
                return
            if remaining is not None:
                remaining -= len(rows)
            after = self._key_of(rows[-1])

    # running ----------------------------------------------------------------------------

    def _chunks(self) -> Iterator[list[Ent]]:
        rt = self._rt
        tx = self._tx
        for rows in self._rows(self._limit):
            yield make_ents(rt, [self._row_of(r) for r in rows], tx)

    def __iter__(self) -> Iterator[Ent]:
        if self._cache is not None:
            self._open()
            yield from self._cache
            return
        for ents in self._chunks():
            yield from ents

    def collect(self) -> list[Ent]:
        """All results as a list of ents."""
        self._open()
        if self._cache is None:
            out: list[Ent] = []
            for ents in self._chunks():
                out.extend(ents)
            self._cache = out
        return list(self._cache)

    def __len__(self) -> int:
        return len(self.collect())

    def __getitem__(self, i: Any) -> Any:
        return self.collect()[i]

    def __bool__(self) -> bool:
        return self.first() is not None

    def map(self, fn: Callable[[Ent], Any]) -> list[Any]:
        """``[fn(ent) for ent in query]``; edges read inside ``fn`` are batch-loaded."""
        if not callable(fn):
            raise ValidationError(f"map() takes a function of an ent, got {type(fn).__name__}", table=self._rt.name)
        self._open()
        out: list[Any] = []
        for ents in self._chunks() if self._cache is None else iter([self._cache]):
            for e in ents:
                out.append(fn(e))
        return out

    def docs(self) -> list[dict[str, Any]]:
        """All results as plain dicts."""
        return [e.doc() for e in self]

    def ids(self) -> IdsQuery:
        """The ids of this query's ents, as a query of ids (``take``, ``first``, ``unique``,
        ``map``, ``paginate``, iteration, ``len``). On a many:many edge without filters
        they are read from the edge table alone, as in Convex Ents."""
        return IdsQuery(self)

    def delete(self) -> int:
        """Delete every ent this query yields, as ``ent.delete()`` would, in a few set-based
        statements per table instead of several per ent; returns how many were deleted.

        ``ctx.table("parents", "by_grp", lambda q: q.eq("grp", "a")).delete()``. Tables with
        soft or scheduled deletion are soft-deleted (and their hard deletion scheduled).
        """
        rules = getattr(self._tx, "rules", None)
        if rules is not None:
            return rules.delete_query(self)  # type: ignore[no-any-return]
        rids = [self._row_of(r)[0] for rows in self._rows(self._limit) for r in rows]
        return deletion.delete_many(self._tx, self._rt, rids)

    def first(self) -> Ent | None:
        for rows in self._rows(1):
            return make_ents(self._rt, [self._row_of(rows[0])], self._tx)[0]
        return None

    def first_x(self) -> Ent:
        ent = self.first()
        if ent is None:
            raise EntNotFoundError(f'Expected at least one document in table "{self._rt.name}", found none', table=self._rt.name)
        return ent

    def unique(self) -> Ent | None:
        """The only result, None if there is none; NotUniqueError if there are several."""
        rows: list[tuple[Any, ...]] = []
        for chunk in self._rows(2):
            rows.extend(chunk)
        if len(rows) > 1:
            ids = [self._rt.encode_rid(self._row_of(r)[0]) for r in rows]
            raise NotUniqueError(
                f'Expected at most one document in table "{self._rt.name}", found more (ids `{ids[0]}`, `{ids[1]}`, ...)',
                table=self._rt.name,
            )
        return make_ents(self._rt, [self._row_of(rows[0])], self._tx)[0] if rows else None

    def unique_x(self) -> Ent:
        ent = self.unique()
        if ent is None:
            raise EntNotFoundError(f'Expected exactly one document in table "{self._rt.name}", found none', table=self._rt.name)
        return ent

    def paginate(self, opts: dict[str, Any]) -> Page:
        """A page: ``{"page": [ents], "is_done": bool, "continue_cursor": str}``, a
        :class:`Page` whose ``.map(fn)`` maps the ents of the page."""
        tx = self._open()
        rules = getattr(tx, "rules", None)
        if rules is not None:  # the page is read as without rules, then filtered
            return rules.paginate(self, opts)  # type: ignore[no-any-return]
        if not isinstance(opts, dict):
            raise ValidationError('paginate() takes {"num_items": n, "cursor": None or a cursor}', table=self._rt.name)
        n = opts.get("num_items", opts.get("numItems"))
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValidationError(f'paginate() needs "num_items" as a non-negative integer, got {show(n)}', table=self._rt.name)
        cursor = opts.get("cursor")
        after = self._decode_cursor(cursor) if cursor else None
        if after == "end":
            return Page(page=[], is_done=True, continue_cursor=self._encode_cursor("end"))
        want = n if self._limit is None else min(n, self._limit)
        rows: list[tuple[Any, ...]] = []
        for chunk in self._rows(want + 1, after if isinstance(after, list) else None):
            rows.extend(chunk)
        page_rows = rows[:want]
        done = len(rows) <= want
        if page_rows:
            cont = self._encode_cursor(self._key_of(page_rows[-1]))
        else:
            cont = self._encode_cursor(after if isinstance(after, list) else "end")
        if done:
            cont = self._encode_cursor("end")
        page = make_ents(self._rt, [self._row_of(r) for r in page_rows], self._tx)
        return Page(page=page, is_done=done, continue_cursor=cont)

    def _encode_cursor(self, key: Any) -> str:
        raw = dumps({"s": self._signature(), "k": key})
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def _decode_cursor(self, cursor: Any) -> Any:
        try:
            if not isinstance(cursor, str):
                raise ValueError
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            data = loads(raw)
            sig, key = data["s"], data["k"]
        except Exception:
            raise ValidationError(f"Invalid pagination cursor {show(cursor)}", table=self._rt.name) from None
        if sig != self._signature():
            raise ValidationError(
                f'This pagination cursor belongs to another query (not this one on table "{self._rt.name}"); '
                "pass the cursor back to the query that produced it",
                table=self._rt.name,
            )
        if key != "end" and not (isinstance(key, list) and self._cursor_key_ok(key)):
            raise ValidationError(f"Invalid pagination cursor {show(cursor)}", table=self._rt.name)
        return key

    def _cursor_key_ok(self, key: list[Any]) -> bool:
        """Whether each value of a (possibly forged) cursor key fits its column."""
        fields = self._rt.table.fields
        kinds: list[str] = [fields[f].kind for f in self._index_fields()]
        tail = len(key) - len(kinds)
        if tail not in (1, 2):
            return False
        kinds += ["time", "rid"][-tail:]
        return all(cursor_value_ok(k, v) for k, v in zip(kinds, key, strict=True))


class Page(Doc):
    """A page of results: the dict ``{"page": [...], "is_done": bool, "continue_cursor":
    str}`` (keys also read as attributes). ``.map(fn)`` returns the same page with ``fn``
    applied to each item, as Convex Ents' ``paginate(...).map(fn)``."""

    __slots__ = ()

    def map(self, fn: Callable[[Any], Any]) -> Page:
        """The page with ``fn(item)`` in place of each item; the other keys kept."""
        if not callable(fn):
            raise ValidationError(f"map() takes a function of an item of the page, got {type(fn).__name__}")
        out = Page(self)
        out["page"] = [fn(item) for item in self["page"]]
        return out

    def docs(self) -> Page:
        """The page with each ent as a plain dict."""
        return self.map(lambda item: item.doc() if isinstance(item, Ent) else item)


class IdsQuery:
    """The ids of a query's ents, lazy like the query: ``message.edge("tags").ids()``.

    Iterate it, ``len()`` it, index it, or use ``take``, ``first``, ``first_x``,
    ``unique``, ``unique_x``, ``map`` and ``paginate`` as on queries of ents. It compares
    equal to the list of its ids.
    """

    __slots__ = ("_q",)

    def __init__(self, source: Query) -> None:
        self._q = source

    def _read(self, q: Query) -> list[str]:
        if isinstance(q, EdgeQuery) and not q._filters:
            return q._edge_ids()
        return [e._id for e in q]

    def collect(self) -> list[str]:
        """All the ids, as a list."""
        return self._read(self._q)

    def take(self, n: int) -> IdsQuery:
        """At most ``n`` ids (still lazy)."""
        return IdsQuery(self._q.take(n))

    def first(self) -> str | None:
        """The first id, or None."""
        ids = self._read(self._q.take(1))
        return ids[0] if ids else None

    def first_x(self) -> str:
        """The first id; EntNotFoundError when there is none."""
        first = self.first()
        if first is None:
            raise EntNotFoundError(
                f'Expected at least one ID, but got none (of table "{self._q._rt.name}")', table=self._q._rt.name
            )
        return first

    def unique(self) -> str | None:
        """The only id, None if there is none; NotUniqueError if there are several."""
        ids = self._read(self._q.take(2))
        if len(ids) > 1:
            raise NotUniqueError(
                f'Expected at most one ID of table "{self._q._rt.name}", got more (`{ids[0]}`, `{ids[1]}`, ...)',
                table=self._q._rt.name,
            )
        return ids[0] if ids else None

    def unique_x(self) -> str:
        """The only id; EntNotFoundError when there is none, NotUniqueError when several."""
        only = self.unique()
        if only is None:
            raise EntNotFoundError(
                f'Expected one unique ID, but got none (of table "{self._q._rt.name}")', table=self._q._rt.name
            )
        return only

    def map(self, fn: Callable[[str], Any]) -> list[Any]:
        """``[fn(id) for id in ids]``."""
        if not callable(fn):
            raise ValidationError(f"map() takes a function of an id, got {type(fn).__name__}", table=self._q._rt.name)
        return [fn(i) for i in self.collect()]

    def paginate(self, opts: dict[str, Any]) -> Page:
        """A page of ids: ``{"page": [ids], "is_done", "continue_cursor"}``."""
        return self._q.paginate(opts).map(lambda e: e._id)

    def __iter__(self) -> Iterator[str]:
        return iter(self.collect())

    def __len__(self) -> int:
        return len(self.collect())

    def __getitem__(self, i: Any) -> Any:
        return self.collect()[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, IdsQuery):
            return self.collect() == other.collect()
        if isinstance(other, (list, tuple)):
            return self.collect() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"IdsQuery({self._q._rt.name!r})"


def keyset(
    d: Any, cols: list[str], nullable: list[bool], values: list[Any], desc: bool, marks: list[str] | None = None
) -> tuple[str, list[Any]]:
    """Condition selecting rows strictly after ``values`` in the order of ``cols``.

    NULL sorts first ascending (and last descending). When no NULL can be involved a
    row-value comparison is used, which both databases answer from the index.
    ``marks`` gives each value's placeholder when some need a cast (JSON).
    """
    if len(values) != len(cols):
        raise ValidationError("Invalid pagination cursor (it does not match this query)")
    mark = marks or [d.param] * len(cols)
    if not any(v is None for v in values) and not (desc and any(nullable)):
        lhs = "(" + ", ".join(cols) + ")"
        rhs = "(" + ", ".join(mark) + ")"
        return f"{lhs} {'<' if desc else '>'} {rhs}", list(values)
    terms: list[str] = []
    params: list[Any] = []
    for i in range(len(cols)):
        parts: list[str] = []
        part_params: list[Any] = []
        for j in range(i):
            if values[j] is None:
                parts.append(f"{cols[j]} IS NULL")
            else:
                parts.append(f"{cols[j]} = {mark[j]}")
                part_params.append(values[j])
        v = values[i]
        if not desc:
            if v is None:
                parts.append(f"{cols[i]} IS NOT NULL")
            else:
                parts.append(f"{cols[i]} > {mark[i]}")
                part_params.append(v)
        else:
            if v is None:
                continue  # nothing sorts after NULL in descending order
            if nullable[i]:
                parts.append(f"({cols[i]} < {mark[i]} OR {cols[i]} IS NULL)")
            else:
                parts.append(f"{cols[i]} < {mark[i]}")
            part_params.append(v)
        terms.append("(" + " AND ".join(parts) + ")")
        params += part_params
    if not terms:
        return "1=0", []
    return "(" + " OR ".join(terms) + ")", params


class EdgeQuery(Query):
    """The ents at the other end of a many:many edge, in the order the edges were added."""

    def __init__(self, tx: Transaction, rt: TableRuntime, edge: Edge, owner: Ent, **kw: Any) -> None:
        super().__init__(tx, rt, **kw)
        self._edge = edge
        self._edge_owner = owner

    def _base(self) -> tuple[str, list[str], list[Any], list[Any]]:
        d = self._tx.dialect
        q = d.q
        edge = self._edge
        assert edge is not None and edge.edge_table is not None and edge.ref is not None
        owner = self._edge_owner
        assert owner is not None
        source = f"{q(edge.edge_table)} e JOIN {self._rt.q_table} t ON t.{q('_rid')} = e.{q(edge.ref)}"
        conds = [f"e.{q(edge.field)} = {d.param}"]
        params: list[Any] = [owner._row[0]]
        for fn in self._filters:
            c_sql, p = compile_filter(self._rt, fn, alias="t")
            conds.append(c_sql)
            params += p
        return source, conds, params, []

    def _order_columns(self) -> tuple[list[str], list[bool]]:
        return [f"e.{self._tx.dialect.q('_rid')}"], [False]

    def _extra_columns(self) -> list[str]:
        return [f"e.{self._tx.dialect.q('_rid')}"]

    def _key_of(self, row: tuple[Any, ...]) -> list[Any]:
        return [row[-1]]

    def _row_of(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        return row[:-1]

    def order(self, direction: str, index: str | None = None) -> Query:
        if index is not None:
            raise ValidationError("many:many edges are ordered by when the edge was added; no index can be given")
        return super().order(direction)

    def has(self, id: str) -> bool:
        """Whether the edge connects the owner to the ent with ``id``."""
        self._open()
        edge = self._edge
        assert edge is not None and edge.edge_table is not None and edge.ref is not None
        owner = self._edge_owner
        assert owner is not None
        rid = self._tx.app.codec.decode_for(edge.to, id, what=f'edge "{edge.name}" of table "{edge.table}"')
        d = self._tx.dialect
        q = d.q
        row = self._tx.fetchone(
            f"SELECT 1 FROM {q(edge.edge_table)} WHERE {q(edge.field)} = {d.param} AND {q(edge.ref)} = {d.param}",
            (owner._row[0], rid),
        )
        return row is not None

    def _edge_ids(self) -> list[str]:
        """Ids of the ents at the other end, read from the edge table alone (in this
        query's order and limit)."""
        edge = self._edge
        owner = self._edge_owner
        assert edge is not None and edge.edge_table is not None and edge.ref is not None and owner is not None
        tx = self._open()
        d = tx.dialect
        q = d.q
        sql = (
            f"SELECT {q(edge.ref)} FROM {q(edge.edge_table)} WHERE {q(edge.field)} = {d.param} "
            f"ORDER BY {d.order_term(q('_rid'), self._desc)}"
        )
        if self._limit is not None:
            sql += f" LIMIT {int(self._limit)}"
        encode = self._rt.encode_rid
        return [encode(r[0]) for r in tx.fetchall(sql, (owner._row[0],))]


class TableQuery(Query):
    """``ctx.table("users")``: a query over the whole table plus lookups and inserts."""

    def get(self, *args: Any) -> Ent | None:
        """``get(id)``, or ``get(index_or_unique_field, *values)``; None if not found."""
        rules = getattr(self._tx, "rules", None)
        if rules is not None:
            return rules.get(self, args)  # type: ignore[no-any-return]
        if len(args) == 1:
            return self._get_id(args[0])
        if len(args) < 2:
            raise ValidationError(f'get() on table "{self._rt.name}" takes an id, or an index name and values', table=self._rt.name)
        return self._by_index(args[0], args[1:]).unique()

    def get_x(self, *args: Any) -> Ent:
        """Like :meth:`get` but raises EntNotFoundError when nothing matches."""
        rules = getattr(self._tx, "rules", None)
        if rules is not None:
            return rules.get_x(self, args)  # type: ignore[no-any-return]
        ent = self._get_id(args[0]) if len(args) == 1 else self.get(*args)
        if ent is None:
            if len(args) == 1:
                raise EntNotFoundError(
                    f'Document not found with id `{args[0]}` in table "{self._rt.name}"',
                    table=self._rt.name,
                    id=str(args[0]),
                )
            values = ", ".join(f"`{show_name(v)}`" for v in args[1:])
            raise EntNotFoundError(
                f'Document not found in table "{self._rt.name}" with "{args[0]}" equal to {values}',
                table=self._rt.name,
                field=str(args[0]),
            )
        return ent

    def _get_id(self, id: Any) -> Ent | None:
        tx = self._tx
        rt = self._rt
        if tx.closed:
            self._open()
        rid = tx.app.codec.decode_for(rt.name, id)
        row = tx.conn.execute(rt.sql_get, (rid,)).fetchone()  # the hottest read: straight to the driver
        return ent_class(rt)(rt, row, tx) if row is not None else None

    def _by_index(self, name: Any, values: Sequence[Any]) -> Query:
        rt = self._rt
        if not isinstance(name, str):
            raise ValidationError(f'get() on table "{rt.name}": index name must be a string, got {show(name)}', table=rt.name)
        resolved = rt.table.resolve_index(name)
        if resolved is None and name in BUILTIN_INDEXES:
            resolved = name, BUILTIN_INDEXES[name]
        if resolved is None:
            known = ", ".join(f'"{n}"' for n in [*rt.table.index_names(), *BUILTIN_INDEXES])
            raise ValidationError(
                f'Table "{rt.name}" has no index or unique field "{name}" (indexes: {known})', table=rt.name
            )
        canonical, fields = resolved
        if len(values) > len(fields):
            raise ValidationError(
                f'Index "{name}" of table "{rt.name}" has {len(fields)} field(s) ({", ".join(fields)}); '
                f"got {len(values)} values",
                table=rt.name,
            )
        pairs = list(zip(fields, values, strict=False))
        for f, v in pairs:
            rt.filter_value(f, v)  # type errors are reported now, not when the query runs

        def range_fn(q: Any) -> Any:
            for f, v in pairs:
                q = q.eq(f, v)
            return q

        return Query(self._tx, rt, index=canonical, range_fn=range_fn)

    def get_many(self, *args: Any) -> list[Ent | None]:
        """``get_many(ids)`` or ``get_many(index, values)``: results in order, None where missing."""
        rules = getattr(self._tx, "rules", None)
        if rules is not None:
            return rules.get_many(self, args)  # type: ignore[no-any-return]
        rt = self._rt
        tx = self._open()
        if len(args) == 1:
            if isinstance(args[0], (str, bytes)) or not hasattr(args[0], "__iter__"):
                raise ValidationError(f"get_many() takes a list of ids, got {type(args[0]).__name__}", table=rt.name)
            ids = list(args[0])
            rids = [tx.app.codec.decode_for(rt.name, i) for i in ids]
            found = {r[0]: r for r in fetch_rows(tx, rt, "_rid", list(set(rids)))}
            ents = make_ents(rt, list(found.values()), tx)
            by_rid = {e._row[0]: e for e in ents}
            return [by_rid.get(r) for r in rids]
        if len(args) != 2:
            raise ValidationError("get_many() takes a list of ids, or an index name and a list of values", table=rt.name)
        name, values = args[0], list(args[1])
        resolved = rt.table.resolve_index(name) if isinstance(name, str) else None
        if resolved is None and name == "by_id":
            return self.get_many(values)
        if resolved is None or len(resolved[1]) != 1:
            raise ValidationError(
                f'get_many() on table "{rt.name}" needs a single-field index or unique field, got {show(name)}',
                table=rt.name,
            )
        field = resolved[1][0]
        if rt.is_json(field):
            # Values stored as JSON compare through an expression; look them up one by one.
            return [self._by_index(name, [v]).unique() for v in values]
        keys = [rt.filter_value(field, v) for v in values]
        rows = fetch_rows(tx, rt, field, list({k for k in keys if k is not None}))
        col = rt.col_index[field]
        by_key: dict[Any, Ent] = {}
        for e in make_ents(rt, rows, tx):
            k = e._row[col]
            if k in by_key:
                raise NotUniqueError(
                    f'get_many() on table "{rt.name}": several documents have "{field}" equal to `{show_name(values[keys.index(k)])}`',
                    table=rt.name,
                    field=field,
                )
            by_key[k] = e
        return [by_key.get(k) for k in keys]

    def get_many_x(self, *args: Any) -> list[Ent]:
        """Like :meth:`get_many` but raises EntNotFoundError if any is missing."""
        rules = getattr(self._tx, "rules", None)
        if rules is not None:
            return rules.get_many_x(self, args)  # type: ignore[no-any-return]
        out = self.get_many(*args)
        for i, ent in enumerate(out):
            if ent is None:
                what = list(args[0])[i] if len(args) == 1 else list(args[1])[i]
                raise EntNotFoundError(
                    f'Document not found with {"id" if len(args) == 1 else repr(args[0])} `{what}` in table "{self._rt.name}"',
                    table=self._rt.name,
                    id=str(what) if len(args) == 1 else None,
                )
        return out  # type: ignore[return-value]

    def normalize_id(self, id: Any) -> str | None:
        """``id`` if it is a valid id of this table, else None."""
        try:
            self._tx.app.codec.decode_for(self._rt.name, id)
        except InvalidIdError:
            return None
        return str(id)

    def insert(self, value: dict[str, Any]) -> str:
        """Insert an ent; returns its id. Many:many edges may be given as lists of ids."""
        tx = self._tx
        if tx.closed:
            self._open()  # raises
        rules = getattr(tx, "rules", None)
        if rules is not None:
            return rules.insert(self, value)  # type: ignore[no-any-return]
        return writer.insert(tx, self._rt, value)

    def insert_many(self, values: Sequence[dict[str, Any]]) -> list[str]:
        """Insert several ents in one go; all or none."""
        tx = self._open()
        rules = getattr(tx, "rules", None)
        if rules is not None:
            return rules.insert_many(self, values)  # type: ignore[no-any-return]
        return writer.insert_many(tx, self._rt, values)


class SystemTableQuery(TableQuery):
    """A read-only system table (``_scheduled_functions``, ``_storage``, ``_cron_jobs``)."""

    def insert(self, value: dict[str, Any]) -> str:
        raise ReadOnlyError(_system_write(self._rt.name), table=self._rt.name)

    def insert_many(self, values: Sequence[dict[str, Any]]) -> list[str]:
        raise ReadOnlyError(_system_write(self._rt.name), table=self._rt.name)


class EdgeTableQuery(TableQuery):
    """The rows of a many:many edge table (``ctx.db.query("messages_to_tags")``): read-only,
    since an edge is written through the ents at its ends."""

    def insert(self, value: dict[str, Any]) -> str:
        raise ReadOnlyError(edge_table_write(self._tx, self._rt.name), table=self._rt.name)

    def insert_many(self, values: Sequence[dict[str, Any]]) -> list[str]:
        raise ReadOnlyError(edge_table_write(self._tx, self._rt.name), table=self._rt.name)


def edge_table_write(tx: Transaction, table: str) -> str:
    """Why the rows of the edge table ``table`` cannot be written directly, and how to."""
    for t in tx.app.schema.tables.values():
        for edge in t.edges.values():
            if edge.edge_table == table:
                return (
                    f'Table "{table}" holds the many:many edge "{edge.name}" of table "{t.name}" and is read-only; '
                    f'write the edge through the ents: ctx.table("{t.name}").get_x(id).patch('
                    f'{{"{edge.name}": {{"add": [...], "remove": [...]}}}})'
                )
    return f'Table "{table}" holds a many:many edge and is read-only; write the edge through the ents'  # pragma: no cover


def _system_write(table: str) -> str:
    how = {
        "_scheduled_functions": "use ctx.scheduler.run_after / run_at / cancel",
        "_storage": "use ctx.storage.store / delete",
        "_cron_jobs": "use cron_jobs() or ctx.crons",
    }.get(table, "")
    return f'System table "{table}" is read-only; {how}'


class TableFactory:
    """``ctx.table``: ``ctx.table("users")``, ``ctx.table("users", "by_x", lambda q: ...)``,
    and ``ctx.table.system("_scheduled_functions")``."""

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    def __call__(self, table: str, index: str | None = None, range_fn: Callable[[Any], Any] | None = None) -> TableQuery:
        rt = self._tx.rt(table)
        if rt.table.is_edge_table:
            raise ValidationError(
                f'Table "{table}" stores many:many edges and is read through the edge, not ctx.table', table=table
            )
        cls = SystemTableQuery if rt.table.is_system else TableQuery
        if index is None:
            if range_fn is not None:
                raise ValidationError("An index range needs an index name: ctx.table(table, index, lambda q: ...)", table=table)
            return cls._whole(self._tx, rt)  # type: ignore[return-value]
        return cls(self._tx, rt, index=index, range_fn=range_fn)

    def for_db(self, table: str) -> TableQuery:
        """The query ``ctx.db.query(table)`` stands on: also over many:many edge tables."""
        rt = self._tx.rt(table)
        if rt.table.is_edge_table:
            return EdgeTableQuery._whole(self._tx, rt)  # type: ignore[return-value]
        return self(table)

    def system(self, table: str, index: str | None = None, range_fn: Callable[[Any], Any] | None = None) -> TableQuery:
        if not isinstance(table, str) or not table.startswith("_"):
            raise ValidationError(f'ctx.table.system() reads system tables; "{show_name(table)}" is not one', table=show_name(table))
        return self(table, index, range_fn)
