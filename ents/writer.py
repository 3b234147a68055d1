"""Writing ents: insert, insert_many, patch and replace, with their edges.

Every write is validated against the schema (pydantic, strict) before anything touches
the database; unique fields and 1:1 edges are enforced by unique indexes inside the
transaction and reported with the table, field, value and the id that already has it.
Ids written into edge fields must name existing documents of the right table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError as PydanticValidationError

from .errors import EntNotFoundError, ReadOnlyError, UniqueConstraintError, ValidationError
from .fields import MISSING, raise_validation
from .schema import Edge
from .values import float_of, show, show_name

if TYPE_CHECKING:
    from .runtime import TableRuntime
    from .transaction import Transaction


class ConflictRace(Exception):
    """A unique conflict with a row this transaction cannot see yet; retry the transaction."""


_new_str = str.__new__


class InsertedId(str):
    """The id returned by ``insert``, ``patch`` and ``replace``: a ``str`` whose ``.get()`` /
    ``.get_x()`` read the ent as it is now, in the same transaction (refused after it)."""

    __slots__ = ("_tx", "_table")
    _tx: Transaction
    _table: str

    def __new__(cls, value: str, tx: Transaction, table: str) -> InsertedId:
        obj = _new_str(cls, value)  # not super(): every write makes one, this halves the cost
        obj._tx = tx
        obj._table = table
        return obj

    def _open(self) -> Transaction:
        tx = self._tx
        if tx.closed:
            raise tx.closed_error(f'The .get() of id `{self}` of table "{self._table}"')
        return tx

    def get(self) -> Any:
        from .query import TableFactory

        return TableFactory(self._open())(self._table).get(str(self))

    def get_x(self) -> Any:
        from .query import TableFactory

        return TableFactory(self._open())(self._table).get_x(str(self))

    def __reduce__(self) -> Any:
        return (str, (str(self),))


def _check_writable(tx: Transaction, rt: TableRuntime, verb: str) -> None:
    """Refuse writes in queries and into system tables (``verb``: "insert into", ...)."""
    if not tx.write:
        tx.require_write(f'{verb} "{rt.name}"')
    table = rt.table
    if table.is_system or table.is_edge_table:
        from .query import _system_write, edge_table_write

        message = edge_table_write(tx, rt.name) if table.is_edge_table else _system_write(rt.name)
        raise ReadOnlyError(message, table=rt.name)


def _split(rt: TableRuntime, value: Any, *, allow_system: bool = False) -> tuple[dict[str, Any], dict[str, tuple[Edge, Any]]]:
    if not isinstance(value, dict):
        raise ValidationError(
            f'A document for table "{rt.name}" must be a dict, got {type(value).__name__}', table=rt.name
        )
    if value.keys() <= rt.plain_names:
        return dict(value), {}  # the common case: fields only, all known
    fields: dict[str, Any] = {}
    edges: dict[str, tuple[Edge, Any]] = {}
    table = rt.table
    for key, v in value.items():
        if not isinstance(key, str):  # e.g. {1: "x"}: refuse before using it as a name
            raise ValidationError(
                f'Field names in a document for table "{rt.name}" are strings, got {type(key).__name__} {show(key)}',
                table=rt.name,
            )
        edge = table.edges.get(key)
        if edge is not None and edge.kind != "field":
            edges[key] = (edge, v)
            continue
        if key in ("_id", "_creation_time") and allow_system:
            continue
        if key not in table.fields:
            hint = ""
            if edge is not None:
                hint = f'; the edge "{key}" is stored in field "{edge.field}"'
            elif key.startswith("_"):
                hint = "; fields starting with _ are set by ents"
            raise ValidationError(
                f'Unknown field "{key}" for table "{rt.name}"{hint}', table=rt.name, field=str(key)
            )
        fields[key] = v
    return fields, edges


def _simple_values(rt: TableRuntime, fields: dict[str, Any]) -> dict[str, Any] | None:
    """``fields`` as strict validation would return them, when every value is a plain
    scalar of its field's exact type; None when pydantic must look (and word any error)."""
    simple = rt.simple_types
    out: dict[str, Any] = {}
    for name, value in fields.items():
        kind = simple.get(name)
        if kind is None:
            return None
        t = type(value)
        if t is kind[0] or (kind[0] is str and isinstance(value, str)):
            out[name] = value
        elif kind[0] is float and t is int and (as_float := float_of(value)) is not None:
            out[name] = as_float
        elif value is None and kind[1]:
            out[name] = None
        else:
            return None
    return out


def _validate(rt: TableRuntime, fields: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    if rt.shapes is not None:
        return rt.table.validate_shaped(fields, partial=partial)
    if partial or rt.required_names <= fields.keys():
        fast = _simple_values(rt, fields)
        if fast is not None:
            return fast
    adapter = rt.table.patch_validator if partial else rt.table.validator
    try:
        return adapter.validate_python(fields)  # type: ignore[no-any-return]
    except PydanticValidationError as exc:
        raise_validation(exc, table=rt.name)


def _row_values(rt: TableRuntime, doc: dict[str, Any]) -> tuple[tuple[str, ...], list[Any]]:
    writers = rt.writers
    try:
        vals = [None if v is None else writers[n](v) for n, v in doc.items()]
    except ValidationError:
        # Redo it the slow way, which names the table and field in the error.
        fields = rt.table.fields
        vals = [rt.to_db(fields[n], v) for n, v in doc.items()]
    return tuple(doc), vals


def _complete(rt: TableRuntime, doc: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults of fields the document leaves out."""
    for name, default in rt.defaults:
        if name not in doc:
            doc[name] = default
    return doc


def _check_references(
    tx: Transaction, rt: TableRuntime, cols: tuple[str, ...], rows: list[list[Any]], self_rid: int | None = None
) -> None:
    """Every id written into an id column must name an existing document.

    Not checked: ids of system tables (jobs are purged after a week and files deleted
    without cascading, so references to them may dangle, as in Convex), and, when
    ``self_rid`` names the document being updated, an id it already holds (so that a
    document whose target went away can still be written back unchanged).
    """
    if not rt.id_fields:
        return
    fields = rt.table.fields
    q = tx.dialect.q
    for i, name in enumerate(cols):
        if name not in rt.id_fields:
            continue
        spec = fields[name]
        assert spec.id_table is not None
        if spec.id_table.startswith("_"):
            continue
        keys = {row[i] for row in rows if row[i] is not None}
        if not keys:
            continue
        target = tx.rt(spec.id_table)
        found = {r[0] for r in tx.in_chunks(f"SELECT {q('_rid')} FROM {target.q_table}", q("_rid"), list(keys))}
        missing = keys - found
        if missing and self_rid is not None:
            held = tx.fetchone(f"SELECT {q(name)} FROM {rt.q_table} WHERE {q('_rid')} = {tx.dialect.param}", (self_rid,))
            if held is not None:
                missing.discard(held[0])
        if missing:
            bad = target.encode_rid(next(iter(missing)))
            raise ValidationError(
                f'Field "{name}" of table "{rt.name}" refers to `{bad}`, but no such document exists in '
                f'table "{spec.id_table}"',
                table=rt.name,
                field=name,
                id=bad,
            )


def _unique_columns(rt: TableRuntime) -> list[tuple[str, Edge | None]]:
    got = rt.cache.get("unique_columns")
    if got is None:
        got = rt.cache["unique_columns"] = _find_unique_columns(rt)
    return got  # type: ignore[no-any-return]


def _find_unique_columns(rt: TableRuntime) -> list[tuple[str, Edge | None]]:
    out: list[tuple[str, Edge | None]] = []
    for fields in rt.table.unique_indexes.values():
        if len(fields) != 1:
            continue
        edge = next((e for e in rt.table.edges.values() if e.kind == "field" and e.field == fields[0]), None)
        out.append((fields[0], edge))
    return out


def _raise_duplicate(tx: Transaction, rt: TableRuntime, doc: dict[str, Any], cols: tuple[str, ...], vals: list[Any], self_rid: int | None) -> None:
    d = tx.dialect
    for col, edge in _unique_columns(rt):
        if col not in cols:
            continue
        value = vals[cols.index(col)]
        if value is None:
            continue
        row = tx.fetchone(
            f"SELECT {d.q('_rid')} FROM {rt.q_table} WHERE {d.q(col)} = {d.param} LIMIT 1", (value,)
        )
        if row is None or row[0] == self_rid:
            continue
        _raise_duplicate_of(rt, col, edge, doc.get(col), rt.encode_rid(row[0]))


def _raise_duplicate_of(rt: TableRuntime, col: str, edge: Edge | None, value: Any, existing: str) -> None:
    if edge is not None:
        raise UniqueConstraintError(
            f'In table "{rt.name}" cannot create a duplicate 1:1 edge "{edge.name}" to ID '
            f'"{value}", existing document with ID "{existing}" already has it.',
            table=rt.name,
            field=col,
            id=existing,
        )
    raise UniqueConstraintError(
        f'In table "{rt.name}" cannot create a duplicate document with field "{col}" of value '
        f'`{value}`, existing document with ID "{existing}" already has it.',
        table=rt.name,
        field=col,
        id=existing,
    )


def _unique_precheck(tx: Transaction, rt: TableRuntime, doc: dict[str, Any], cols: tuple[str, ...], vals: list[Any], self_rid: int | None) -> None:
    if any(col in cols for col, _ in _unique_columns(rt)):
        _raise_duplicate(tx, rt, doc, cols, vals, self_rid)


# -- insert ----------------------------------------------------------------------------


# Every write checks everything it can (values, referenced ids, edges, uniqueness) before
# its first statement, and its statements cannot fail on bad input after that: so a write
# that raises has changed nothing, even when the caller catches the error and the
# transaction goes on (no savepoint needed on the hot path).


class _FastRow:
    """How to write a document with one particular set of keys (in order) straight into
    its row, when every key is a scalar or id field: worked out once per table and key set
    (for an insert, which fills defaults, or a patch). Values are checked by type, then
    converted by the same writers as on the general path; anything that does not plainly
    fit (a None, an int where a float goes, a value a writer refuses, ...) sends the write
    down the general path, which words the error, or handles the case, as it always does."""

    __slots__ = ("fields", "cols", "defaults", "default_doc", "has_ids", "unique")

    def __init__(self, rt: TableRuntime, keys: tuple[str, ...], insert: bool) -> None:
        specs = rt.table.fields
        self.fields = [(name, str if specs[name].kind == "id" else rt.simple_types[name][0], rt.writers[name]) for name in keys]
        missing = [(n, d) for n, d in rt.defaults if n not in keys] if insert else []
        self.cols = (*keys, *(n for n, _ in missing))
        self.defaults = [rt.to_db(specs[n], d) for n, d in missing]
        self.default_doc = dict(missing)
        self.has_ids = any(name in rt.id_fields for name in keys)
        #: whether the row holds a unique column (a patch checks it first)
        self.unique = any(col in self.cols for col, _ in _unique_columns(rt))

    def values(self, value: dict[str, Any]) -> list[Any] | None:
        out: list[Any] = []
        try:
            for name, base, write in self.fields:
                v = value[name]
                # str subclasses (the InsertedId an insert returns) are strings, as pydantic has it
                if type(v) is not base and not (base is str and isinstance(v, str)):
                    return None
                out.append(write(v))
        except ValidationError:
            return None
        out += self.defaults
        return out


def _fast_row(rt: TableRuntime, keys: tuple[str, ...], insert: bool) -> _FastRow | None:
    plans = rt.cache.get("fast_insert" if insert else "fast_patch")
    if plans is None:
        plans = rt.cache["fast_insert" if insert else "fast_patch"] = {}
    plan = plans.get(keys, False)
    if plan is False:
        ok = all(k in rt.simple_types or k in rt.id_fields for k in keys)
        if rt.shapes is not None and rt.shapes.names.intersection(keys):
            ok = False  # validated against the shapes
        if insert:
            ok = ok and rt.required_names <= set(keys)
        plan = _FastRow(rt, keys, insert) if ok and keys else None
        if len(plans) < 64:  # a bounded cache: documents with ever-new key sets stay correct
            plans[keys] = plan
    return plan  # type: ignore[no-any-return]


def _plain_row(
    tx: Transaction, rt: TableRuntime, value: Any, *, insert: bool, self_rid: int | None = None
) -> tuple[_FastRow, list[Any]] | None:
    """The plan and column values of a document of scalar and id fields only, whose values
    plainly fit, with the ids it references checked; None sends it down the general path."""
    if type(value) is not dict:
        return None
    plan = _fast_row(rt, tuple(value), insert)
    if plan is None:
        return None
    vals = plan.values(value)
    if vals is None:
        return None
    if plan.has_ids:
        _check_references(tx, rt, plan.cols, [vals], self_rid)
    return plan, vals


def insert(tx: Transaction, rt: TableRuntime, value: dict[str, Any]) -> str:
    _check_writable(tx, rt, "insert into")
    plain = _plain_row(tx, rt, value, insert=True)
    if plain is not None:
        plan, vals = plain
        rid = _insert_row(tx, rt, value, plan.cols, vals, plan.default_doc)
        tx.touched()
        return InsertedId(rt.encode_rid(rid), tx, rt.name)
    fields, edges = _split(rt, value)
    doc = _complete(rt, _validate(rt, fields, partial=False))
    cols, vals = _row_values(rt, doc)
    _check_references(tx, rt, cols, [vals])
    plans = _plan_edges(tx, rt, edges, "insert") if edges else None
    rid = _insert_row(tx, rt, doc, cols, vals)
    if plans:
        _apply_edges(tx, rt, rid, plans)
    tx.touched()
    return InsertedId(rt.encode_rid(rid), tx, rt.name)


def _insert_row(
    tx: Transaction, rt: TableRuntime, doc: dict[str, Any], cols: tuple[str, ...], vals: list[Any], defaults: dict[str, Any] | None = None
) -> int:
    """Insert one validated row; a unique conflict raises UniqueConstraintError naming the
    holder (``defaults``: values ``doc`` leaves out, for that message)."""
    rid = tx.insert_row(rt, cols, vals)
    if rid is None:
        _raise_duplicate(tx, rt, {**defaults, **doc} if defaults else doc, cols, vals, None)
        raise ConflictRace(rt.name)
    return rid


def insert_many(tx: Transaction, rt: TableRuntime, values: Sequence[dict[str, Any]]) -> list[str]:
    _check_writable(tx, rt, "insert into")
    if isinstance(values, dict) or not isinstance(values, Sequence):
        raise ValidationError(f'insert_many() on "{rt.name}" takes a list of documents', table=rt.name)
    prepared = []
    by_cols: dict[tuple[str, ...], list[list[Any]]] = {}
    for i, value in enumerate(values):
        try:
            fields, edges = _split(rt, value)
            doc = _complete(rt, _validate(rt, fields, partial=False))
            cols, vals = _row_values(rt, doc)
        except ValidationError as exc:
            raise _at_index(exc, i) from None
        prepared.append((doc, cols, vals, edges))
        by_cols.setdefault(cols, []).append(vals)
    for cols, rows in by_cols.items():
        _check_references(tx, rt, cols, rows)
    _check_batch_unique(tx, rt, prepared)
    plans = [_plan_edges(tx, rt, edges, "insert") if edges else None for _, _, _, edges in prepared]
    ids: list[str] = []
    for (doc, cols, vals, _), plan in zip(prepared, plans, strict=True):
        rid = _insert_row(tx, rt, doc, cols, vals)
        if plan:
            _apply_edges(tx, rt, rid, plan)
        ids.append(rt.encode_rid(rid))
    tx.touched()
    return [InsertedId(i, tx, rt.name) for i in ids]


def _at_index(exc: ValidationError, index: int) -> ValidationError:
    """The same error, saying which document of an insert_many it is about."""
    out = type(exc)(
        f"{exc.message} (document {index} of insert_many)", table=exc.table, id=exc.id, field=exc.field
    )
    return out


def _check_batch_unique(tx: Transaction, rt: TableRuntime, prepared: list[Any]) -> None:
    """Unique fields and 1:1 edges: no two new documents and no existing one share a value.

    Checked before the first insert, with one lookup per unique column and batch, so that a
    conflict leaves nothing half-inserted.
    """
    d = tx.dialect
    for col, edge in _unique_columns(rt):
        first: dict[Any, int] = {}
        for i, (doc, cols, vals, _) in enumerate(prepared):
            if col not in cols:
                continue
            value = vals[cols.index(col)]
            if value is None:
                continue
            if value in first:
                what = f'1:1 edge "{edge.name}" to ID "{doc[col]}"' if edge else f'field "{col}" of value `{doc[col]}`'
                raise UniqueConstraintError(
                    f'In table "{rt.name}" cannot create a duplicate document with {what}: documents '
                    f"{first[value]} and {i} of the same insert_many both have it.",
                    table=rt.name,
                    field=col,
                )
            first[value] = i
        if not first:
            continue
        rows = tx.in_chunks(f"SELECT {d.q(col)}, {d.q('_rid')} FROM {rt.q_table}", d.q(col), list(first))
        for value, existing_rid in rows:
            doc = prepared[first[value]][0] if value in first else {col: value}
            _raise_duplicate_of(rt, col, edge, doc[col], rt.encode_rid(existing_rid))


# -- patch and replace -----------------------------------------------------------------


def _load(tx: Transaction, rt: TableRuntime, rid: int) -> tuple[Any, ...]:
    row = tx.fetchone(rt.sql_get, (rid,))
    if row is None:
        raise EntNotFoundError(
            f'Document not found with id `{rt.encode_rid(rid)}` in table "{rt.name}"',
            table=rt.name,
            id=rt.encode_rid(rid),
        )
    return row  # type: ignore[no-any-return]


def patch(tx: Transaction, rt: TableRuntime, rid: int, value: dict[str, Any]) -> str:
    _check_writable(tx, rt, "patch a document of")
    plain = _plain_row(tx, rt, value, insert=False, self_rid=rid)
    if plain is not None:
        plan, vals = plain
        if plan.unique:
            _raise_duplicate(tx, rt, value, plan.cols, vals, rid)
        _update_row(tx, rt, rid, value, plan.cols, vals)
        tx.touched()
        return InsertedId(rt.encode_rid(rid), tx, rt.name)
    fields, edges = _split(rt, value)
    specs = rt.table.fields
    shaped: frozenset[str] = frozenset()
    if rt.shapes is not None and rt.shapes.names.intersection(fields):
        shaped = rt.shapes.names
        fields = _merge_shaped(tx, rt, rid, fields)
    cleared: dict[str, Any] = {}
    for name, v in list(fields.items()):
        if v is None and name not in shaped:
            spec = specs[name]
            if spec.nullable:
                cleared[name] = None
            elif spec.has_default:
                cleared[name] = spec.default
            else:
                raise ValidationError(
                    f'Cannot remove field "{name}" of table "{rt.name}": it is required',
                    table=rt.name,
                    field=name,
                )
            del fields[name]
    doc = _validate(rt, fields, partial=True) if fields else {}
    doc.update(cleared)
    plans = _plan_edges(tx, rt, edges, "patch") if edges else None
    if doc:
        cols, vals = _row_values(rt, doc)
        _check_references(tx, rt, cols, [vals], rid)
        _unique_precheck(tx, rt, doc, cols, vals, rid)
        # The UPDATE tells whether the document exists; nothing was written if not.
        _update_row(tx, rt, rid, doc, cols, vals)
    else:
        _load(tx, rt, rid)
    if plans:
        _apply_edges(tx, rt, rid, plans)
    tx.touched()
    return InsertedId(rt.encode_rid(rid), tx, rt.name)


def _merge_shaped(tx: Transaction, rt: TableRuntime, rid: int, fields: dict[str, Any]) -> dict[str, Any]:
    """A patch of a table of shapes: the document's shape fields merged with the patch's
    (None removes one, and an unset field reads as None), so that the whole is validated
    against the shapes."""
    assert rt.shapes is not None
    names = rt.shapes.names
    current = rt.doc(_load(tx, rt, rid))
    merged = {k: v for k, v in current.items() if k in names and v is not None}
    for k, v in fields.items():
        if k in names:
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
    return {**{k: v for k, v in fields.items() if k not in names}, **merged}


def _update_row(tx: Transaction, rt: TableRuntime, rid: int, doc: dict[str, Any], cols: tuple[str, ...], vals: list[Any]) -> None:
    try:
        cur = tx.execute(rt.update_sql(cols), (*vals, rid))
    except Exception as exc:
        if tx.dialect.classify(exc) == "unique":
            # Another transaction took the value after our check; retrying sees it.
            raise ConflictRace(rt.name) from exc
        raise
    if cur.rowcount == 0:
        _load(tx, rt, rid)  # raises EntNotFoundError


def replace(tx: Transaction, rt: TableRuntime, rid: int, value: dict[str, Any]) -> str:
    _check_writable(tx, rt, "replace a document of")
    if isinstance(value, dict):
        current_id = rt.encode_rid(rid)
        if "_id" in value and value["_id"] != current_id:
            raise ValidationError(
                f'replace() of `{current_id}` in table "{rt.name}" was given another "_id": `{show_name(value["_id"])}`',
                table=rt.name,
            )
    fields, edges = _split(rt, value, allow_system=True)
    doc = _complete(rt, _validate(rt, fields, partial=False))
    for spec in rt.fields:
        if spec.name not in doc:
            doc[spec.name] = None
    cols, vals = _row_values(rt, doc)
    _check_references(tx, rt, cols, [vals], rid)
    _unique_precheck(tx, rt, doc, cols, vals, rid)
    plans = _plan_edges(tx, rt, edges, "replace") if edges else None
    _update_row(tx, rt, rid, doc, cols, vals)
    if plans:
        _apply_edges(tx, rt, rid, plans)
    tx.touched()
    return InsertedId(rt.encode_rid(rid), tx, rt.name)


# -- edges -----------------------------------------------------------------------------


def _ids_for(tx: Transaction, rt: TableRuntime, edge: Edge, value: Any, what: str) -> list[int]:
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise ValidationError(
            f'Edge "{edge.name}" of table "{rt.name}" {what} takes a list of ids of table "{edge.to}", '
            f"got {type(value).__name__}",
            table=rt.name,
            field=edge.name,
        )
    codec = tx.app.codec
    rids: list[int] = []
    seen: set[int] = set()
    for v in value:
        r = codec.decode_for(edge.to, v, what=f'edge "{edge.name}" of table "{rt.name}"')
        if r not in seen:
            seen.add(r)
            rids.append(r)
    return rids


def _require_exist(tx: Transaction, edge: Edge, rids: list[int], owner: TableRuntime) -> None:
    if not rids:
        return
    target = tx.rt(edge.to)
    q = tx.dialect.q
    found = {r[0] for r in tx.in_chunks(f"SELECT {q('_rid')} FROM {target.q_table}", q("_rid"), rids)}
    missing = [r for r in rids if r not in found]
    if missing:
        bad = target.encode_rid(missing[0])
        raise ValidationError(
            f'Edge "{edge.name}" of table "{owner.name}" refers to `{bad}`, but no such document exists '
            f'in table "{edge.to}"',
            table=owner.name,
            field=edge.name,
            id=bad,
        )


class _EdgePlan:
    """A checked edge change, applied once the owner's row is written."""

    __slots__ = ("edge", "mode", "exact", "add", "remove")

    def __init__(self, edge: Edge, mode: str, exact: list[int] | None, add: list[int], remove: list[int]) -> None:
        self.edge = edge
        self.mode = mode
        self.exact = exact
        self.add = add
        self.remove = remove


def _plan_edges(tx: Transaction, rt: TableRuntime, edges: dict[str, tuple[Edge, Any]], mode: str) -> list[_EdgePlan]:
    """Decode and check every edge change (ids, existence) without writing anything."""
    plans: list[_EdgePlan] = []
    for edge, value in edges.values():
        if edge.kind == "ref":
            if mode == "patch":
                raise ValidationError(
                    f'Edge "{edge.name}" of table "{rt.name}" is stored by table "{edge.to}"; patch the '
                    f'"{edge.field}" field of that document instead',
                    table=rt.name,
                    field=edge.name,
                )
            if value is None:
                continue
            target = _ids_for(tx, rt, edge, [value], "on " + mode)
            _require_exist(tx, edge, target, rt)
            plans.append(_EdgePlan(edge, mode, target, [], []))
            continue
        if edge.kind == "many_field" and mode == "replace":
            # As Convex Ents: the ents on the other side own the edge (their field), and
            # setting the list from here would have to delete the ones left out.
            raise ValidationError(
                f'Cannot set 1:many edge "{edge.name}" of table "{rt.name}" with replace(): the ents in '
                f'table "{edge.to}" store it; patch their "{edge.field}" field instead (or leave '
                f'"{edge.name}" out of the document)',
                table=rt.name,
                field=edge.name,
            )
        exact, add, remove = _add_remove(rt, edge, value, mode)
        if exact is not None:
            wanted = _ids_for(tx, rt, edge, exact, "on " + mode)
            _require_exist(tx, edge, wanted, rt)
            plans.append(_EdgePlan(edge, mode, wanted, [], []))
            continue
        add_ids = _ids_for(tx, rt, edge, add, "add")
        remove_ids = _ids_for(tx, rt, edge, remove, "remove")
        _require_exist(tx, edge, add_ids, rt)
        plans.append(_EdgePlan(edge, mode, None, add_ids, remove_ids))
    return plans


def _apply_edges(tx: Transaction, rt: TableRuntime, rid: int, plans: list[_EdgePlan]) -> None:
    for plan in plans:
        if plan.edge.kind == "many_many":
            _apply_many_many(tx, rid, plan)
        else:  # many_field, or a 1:1 ref end given on insert / replace
            _apply_many_field(tx, rid, plan)


def _add_remove(rt: TableRuntime, edge: Edge, value: Any, mode: str) -> tuple[Any, Any, Any]:
    """Split an edge value into (set_exactly, add, remove) according to the write mode."""
    if mode == "patch":
        if not isinstance(value, dict) or not set(value) <= {"add", "remove"}:
            raise ValidationError(
                f'Patching edge "{edge.name}" of table "{rt.name}" takes {{"add": [ids], "remove": [ids]}}; '
                "use replace() to set the edge to an exact list",
                table=rt.name,
                field=edge.name,
            )
        return None, value.get("add", []), value.get("remove", [])
    return value, None, None


def _apply_many_many(tx: Transaction, rid: int, plan: _EdgePlan) -> None:
    edge = plan.edge
    assert edge.edge_table is not None and edge.ref is not None
    if plan.exact is not None:
        wanted = plan.exact
        if plan.mode == "replace":
            d = tx.dialect
            q = d.q
            current = [
                r[0]
                for r in tx.fetchall(
                    f"SELECT {q(edge.ref)} FROM {q(edge.edge_table)} WHERE {q(edge.field)} = {d.param}", (rid,)
                )
            ]
            keep = set(wanted)
            _remove_edges(tx, edge, rid, [c for c in current if c not in keep])
            have = set(current)
            wanted = [w for w in wanted if w not in have]
        _add_edges(tx, edge, rid, wanted)
        return
    _remove_edges(tx, edge, rid, plan.remove)
    _add_edges(tx, edge, rid, plan.add)


def _add_edges(tx: Transaction, edge: Edge, rid: int, targets: list[int]) -> None:
    if not targets:
        return
    assert edge.edge_table is not None and edge.ref is not None
    sql = tx.rt(edge.edge_table).insert_sql((edge.field, edge.ref))
    for t in targets:
        tx.insert_rid(sql, (tx.now, rid, t))
        if edge.symmetric and t != rid:
            tx.insert_rid(sql, (tx.now, t, rid))


def _remove_edges(tx: Transaction, edge: Edge, rid: int, targets: list[int]) -> None:
    if not targets:
        return
    d = tx.dialect
    q = d.q
    assert edge.edge_table is not None and edge.ref is not None
    tx.run_in_chunks(
        f"DELETE FROM {q(edge.edge_table)}", q(edge.ref), targets, where=f"{q(edge.field)} = {d.param}", params=(rid,)
    )
    if edge.symmetric:
        tx.run_in_chunks(
            f"DELETE FROM {q(edge.edge_table)}", q(edge.field), targets, where=f"{q(edge.ref)} = {d.param}", params=(rid,)
        )


def _apply_many_field(tx: Transaction, rid: int, plan: _EdgePlan) -> None:
    edge = plan.edge
    child = tx.rt(edge.to)
    if plan.exact is not None:
        if plan.mode == "replace" or edge.kind == "ref":
            # A 1:1 ref end holds one ent: the one given replaces the current one.
            d = tx.dialect
            q = d.q
            current = [
                r[0]
                for r in tx.fetchall(
                    f"SELECT {q('_rid')} FROM {child.q_table} WHERE {q(edge.field)} = {d.param}", (rid,)
                )
            ]
            keep = set(plan.exact)
            _detach_children(tx, edge, [c for c in current if c not in keep])
        _attach_children(tx, edge, rid, plan.exact)
        return
    if plan.remove:
        owned = _owned(tx, child, edge, rid, plan.remove)
        _detach_children(tx, edge, [r for r in plan.remove if r in owned])
    _attach_children(tx, edge, rid, plan.add)


def _owned(tx: Transaction, child: TableRuntime, edge: Edge, rid: int, rids: list[int]) -> set[int]:
    q = tx.dialect.q
    rows = tx.in_chunks(f"SELECT {q('_rid')}, {q(edge.field)} FROM {child.q_table}", q("_rid"), rids)
    return {r[0] for r in rows if r[1] == rid}


def _attach_children(tx: Transaction, edge: Edge, rid: int, children: list[int]) -> None:
    if not children:
        return
    child = tx.rt(edge.to)
    d = tx.dialect
    q = d.q
    size = d.batch_size
    for start in range(0, len(children), size):
        chunk = children[start : start + size]
        cond, params = d.in_clause(q("_rid"), chunk)
        tx.execute(f"UPDATE {child.q_table} SET {q(edge.field)} = {d.param} WHERE {cond}", [rid, *params])


def _detach_children(tx: Transaction, edge: Edge, children: list[int]) -> None:
    """Children removed from a 1:many edge: unset an optional field, else delete them."""
    if not children:
        return
    child = tx.rt(edge.to)
    if edge.optional:
        d = tx.dialect
        q = d.q
        tx.run_in_chunks(f"UPDATE {child.q_table} SET {q(edge.field)} = NULL", q("_rid"), children)
        return
    from .deletion import hard_delete

    hard_delete(tx, child.name, children)


__all__ = ["insert", "insert_many", "patch", "replace", "InsertedId", "ConflictRace", "MISSING"]
