"""Schema definition: define_ent, define_ent_schema, and the resolution of edges.

``define_ent`` returns a builder; ``define_ent_schema`` resolves every edge against its
inverse (as Convex Ents does), creates the tables that store many:many edges, and fails
with a :class:`SchemaError` naming the table and edge whenever the definition is
inconsistent. Nothing about a schema is checked later at run time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import TypeAdapter

from .errors import SchemaError
from .fields import (
    MISSING,
    FieldSpec,
    Shapes,
    build_validator,
    field_spec,
    shape_models,
    validate_default,
)
from .ids import IdRef
from .values import float_of, show

__all__ = ["define_ent", "define_ent_schema", "EntDefinition", "EntSchema", "TableDef", "Edge"]

SYSTEM_TABLES = ("_scheduled_functions", "_storage")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
MAX_NAME = 63
RESERVED_FIELDS = {"_id", "_creation_time", "_rid"}

EdgeKind = Literal["field", "ref", "many_field", "many_many"]


def _check_name(kind: str, name: Any, where: str = "") -> None:
    if isinstance(name, str) and name.startswith("_") and kind in ("field", "table"):
        owner = "ents (_id, _creation_time)" if kind == "field" else "system tables"
        raise SchemaError(f'Invalid {kind} name "{name}"{where}: names starting with "_" are reserved for {owner}')
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > MAX_NAME:
        raise SchemaError(
            f"Invalid {kind} name {show(name)}{where}: use letters, digits and underscores, "
            f"starting with a letter, at most {MAX_NAME} characters"
        )


@dataclass
class _EdgeConfig:
    """An edge as declared, before its inverse is known."""

    name: str
    to: str
    cardinality: Literal["single", "multiple"]
    stores_field: bool  # single: this side stores the id; multiple: this side is many:many
    field: str | None = None
    ref: bool | str | None = None
    optional: bool = False
    deletion: str | None = None
    table: str | None = None
    inverse_field: str | None = None
    inverse: str | None = None  # name of the inverse edge (asymmetric self edges)
    is_inverse_of: str | None = None  # set on the edge declared through `inverse=`
    field_given: bool = False


@dataclass
class Edge:
    """A resolved edge of a table.

    kind:
      * ``field``: singular, this table stores the target's id in ``field``.
      * ``ref``: singular 1:1, the target table stores this ent's id in ``field``.
      * ``many_field``: 1:many, the target table stores this ent's id in ``field``.
      * ``many_many``: rows of ``edge_table``; ``field`` holds this end, ``ref`` the other.
    """

    name: str
    table: str
    to: str
    kind: EdgeKind
    field: str
    ref: str | None = None
    edge_table: str | None = None
    optional: bool = False
    unique: bool = False
    deletion: str | None = None
    symmetric: bool = False
    inverse: str | None = None

    @property
    def to_system(self) -> bool:
        return self.to.startswith("_")


@dataclass
class TableDef:
    """A resolved table: fields (including edge fields), edges, indexes, deletion."""

    name: str
    fields: dict[str, FieldSpec]
    edges: dict[str, Edge] = field(default_factory=dict)
    indexes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unique_indexes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    deletion: str | None = None
    deletion_delay_ms: float = 0
    is_edge_table: bool = False
    is_system: bool = False
    # index name -> canonical index name (aliases such as "by_user_id" for "user_id")
    index_aliases: dict[str, str] = field(default_factory=dict)
    # system tables: filter paths mapped to columns (e.g. "state.kind" -> "state"),
    # columns hidden from documents, and a function shaping the public document
    path_aliases: dict[str, str] = field(default_factory=dict)
    index_where: dict[str, str] = field(default_factory=dict)
    hidden: frozenset[str] = frozenset()
    shape: Any = None
    #: a table of a union of shapes (``define_ent(A | B)``): their fields are validated by
    #: the shapes, the rest (``.field``, edge fields) by the table's validator
    shapes: Shapes | None = None
    _validator: TypeAdapter[Any] | None = None
    _patch_validator: TypeAdapter[Any] | None = None

    @property
    def validator(self) -> TypeAdapter[Any]:
        if self._validator is None:
            self._validator = build_validator(self.name, self.user_fields(), partial=False)
        return self._validator

    @property
    def patch_validator(self) -> TypeAdapter[Any]:
        if self._patch_validator is None:
            self._patch_validator = build_validator(self.name, self.user_fields(), partial=True)
        return self._patch_validator

    def user_fields(self) -> dict[str, FieldSpec]:
        """The fields the table's own validator checks (those of shapes excepted)."""
        if self.shapes is None:
            return self.fields
        return {n: f for n, f in self.fields.items() if n not in self.shapes.names}

    def validate_shaped(self, fields: dict[str, Any], *, partial: bool) -> dict[str, Any]:
        """Validate a document of a table of shapes: its shape fields whole (a patch passes
        the merged document's), the other fields as usual."""
        from pydantic import ValidationError as PydanticValidationError

        from .fields import raise_validation

        assert self.shapes is not None
        names = self.shapes.names
        shaped = {k: v for k, v in fields.items() if k in names}
        rest = {k: v for k, v in fields.items() if k not in names}
        adapter = self.patch_validator if partial else self.validator
        try:
            out: dict[str, Any] = adapter.validate_python(rest)
        except PydanticValidationError as exc:
            raise_validation(exc, table=self.name)
        if shaped or not partial:
            out.update(self.shapes.validate(shaped, patch=partial))
        return out

    def resolve_index(self, name: str) -> tuple[str, tuple[str, ...]] | None:
        if not isinstance(name, str):  # e.g. a list: unhashable, and never an index name
            return None
        canonical = self.index_aliases.get(name, name)
        fields = self.indexes.get(canonical)
        if fields is None:
            return None
        return canonical, fields

    def index_names(self) -> list[str]:
        return sorted(set(self.indexes) | set(self.index_aliases))


class EntDefinition:
    """Builder returned by :func:`define_ent`; every method returns the builder."""

    def __init__(self, fields: Any) -> None:
        models = shape_models(fields)
        if models is None and not isinstance(fields, dict):
            raise SchemaError(
                "define_ent() takes a dict of field name to type, a pydantic model, or a union of "
                f"pydantic models (A | B), got {show(fields)}"
            )
        self._fields: dict[str, tuple[Any, dict[str, Any]]] = {}
        self._edges: dict[str, _EdgeConfig] = {}
        self._indexes: list[tuple[str, tuple[str, ...]]] = []
        self._deletion: str | None = None
        self._deletion_delay_ms: float = 0
        self._shapes: list[Any] | None = models
        self._shape_names: set[str] = set()
        if models is not None:
            for model in models:
                for name in model.model_fields:
                    _check_name("field", name, f" of shape {model.__name__}")
                    self._shape_names.add(name)
            return
        for name, annotation in fields.items():
            self.field(name, annotation)

    def field(
        self,
        name: str,
        type: Any,
        *,
        unique: bool = False,
        index: bool = False,
        default: Any = MISSING,
    ) -> EntDefinition:
        """Declare a field; ``unique`` and ``index`` add an index named after the field."""
        _check_name("field", name)
        if name in self._fields or name in self._shape_names:
            raise SchemaError(f'Duplicate field "{name}"', field=name)
        if not isinstance(unique, bool) or not isinstance(index, bool):
            # (bool() of an odd object may raise, or warn and later raise: NotImplemented)
            raise SchemaError(f'Field "{name}": unique= and index= take True or False', field=name)
        self._fields[name] = (type, {"unique": unique, "index": index or unique, "default": default})
        return self

    def edge(
        self,
        name: str,
        *,
        to: str | None = None,
        field: str | None = None,
        ref: bool | str | None = None,
        optional: bool = False,
        deletion: str | None = None,
    ) -> EntDefinition:
        """Declare a singular edge (1:1 or the "one" end of 1:many).

        Without ``ref`` this table stores the edge in ``field`` (default ``<name>_id``).
        ``ref=True`` (or the other table's field name) declares the end of a 1:1 edge
        that does not store it. ``optional=True`` lets the stored field be empty (on 1:many
        and on 1:1 edges alike); deleting the other end still deletes this ent, as in
        Convex Ents. On the stored end of a 1:1 edge, ``deletion="hard"`` deletes the other
        end with this ent and ``deletion="soft"`` soft-deletes it with this one.
        """
        _check_name("edge", name)
        if name in self._edges:
            raise SchemaError(f'Duplicate edge "{name}"')
        target = to if to is not None else name + "s"
        if ref is not None and ref is not False:
            if field is not None:
                raise SchemaError(
                    f'Edge "{name}": `field` and `ref` cannot both be given; `field` names the '
                    "field this table stores, `ref` the field the other table stores"
                )
            if optional:
                raise SchemaError(
                    f'Edge "{name}": `optional` applies to the end that stores the field; '
                    "an edge with `ref` is always optional"
                )
            self._edges[name] = _EdgeConfig(name, target, "single", False, ref=ref, deletion=deletion)
        else:
            fname = field if field is not None else f"{name}_id"
            _check_name("field", fname, f' for edge "{name}"')
            self._edges[name] = _EdgeConfig(
                name,
                target,
                "single",
                True,
                field=fname,
                optional=bool(optional),
                deletion=deletion,
                field_given=field is not None,
            )
        return self

    def edges(
        self,
        name: str,
        *,
        to: str | None = None,
        ref: bool | str | None = None,
        table: str | None = None,
        field: str | None = None,
        inverse_field: str | None = None,
        inverse: str | None = None,
        deletion: str | None = None,
    ) -> EntDefinition:
        """Declare a plural edge: 1:many with ``ref``, many:many otherwise.

        ``to`` defaults to the edge name. For many:many edges ``table``, ``field`` and
        ``inverse_field`` name the storage; ``inverse`` declares an asymmetric self edge
        (a self edge without ``inverse`` is symmetric, like friends).
        """
        _check_name("edge", name)
        if name in self._edges:
            raise SchemaError(f'Duplicate edge "{name}"')
        target = to if to is not None else name
        has_ref = ref is not None and ref is not False
        if has_ref and table is not None:
            raise SchemaError(
                f'Edge "{name}": cannot specify both `ref` and `table`, as the former is for '
                "1:many edges and the latter for many:many edges"
            )
        if has_ref and (field is not None or inverse_field is not None or inverse is not None):
            raise SchemaError(
                f'Edge "{name}": `field`, `inverse_field` and `inverse` are for many:many edges '
                "and cannot be combined with `ref`"
            )
        if (field is not None or inverse_field is not None) and table is None:
            raise SchemaError(
                f'Edge "{name}": specify `table` if you are customizing the `field` or '
                "`inverse_field` of a many:many edge"
            )
        for opt, value in (("table", table), ("field", field), ("inverse_field", inverse_field)):
            if value is not None:
                _check_name(opt, value, f' for edge "{name}"')
        if has_ref:
            self._edges[name] = _EdgeConfig(name, target, "multiple", False, ref=ref, deletion=deletion)
        else:
            self._edges[name] = _EdgeConfig(
                name,
                target,
                "multiple",
                True,
                table=table,
                field=field,
                inverse_field=inverse_field,
                inverse=inverse,
                deletion=deletion,
            )
            if inverse is not None:
                _check_name("edge", inverse)
                if inverse in self._edges:
                    raise SchemaError(f'Duplicate edge "{inverse}" (declared as the inverse of "{name}")')
                self._edges[inverse] = _EdgeConfig(
                    inverse, target, "multiple", True, table=table, is_inverse_of=name
                )
        return self

    def index(self, name: str, fields: list[str] | tuple[str, ...]) -> EntDefinition:
        """Declare an index over ``fields`` (in order); results are then ordered by them."""
        _check_name("index", name)
        if name in ("by_id", "by_creation_time"):
            raise SchemaError(f'Index name "{name}" is reserved: every table has it, over the system field it names')
        if not isinstance(fields, (list, tuple)) or not fields or not all(isinstance(f, str) for f in fields):
            raise SchemaError(f'Index "{name}" needs a non-empty list of field names, got {show(fields)}')
        self._indexes.append((name, tuple(fields)))
        return self

    def deletion(self, kind: str, *, delay_ms: float | None = None) -> EntDefinition:
        """Use ``"soft"`` or ``"scheduled"`` deletion instead of immediate hard deletion."""
        if self._deletion is not None:
            raise SchemaError("Deletion behavior can only be specified once")
        if kind not in ("soft", "scheduled"):
            raise SchemaError(f'Deletion behavior must be "soft" or "scheduled", got {show(kind)}')
        if delay_ms is not None:
            if kind != "scheduled":
                raise SchemaError('`delay_ms` only applies to "scheduled" deletion')
            as_float = float_of(delay_ms) if isinstance(delay_ms, (int, float)) and not isinstance(delay_ms, bool) else None
            if as_float is None or not 0 <= as_float < float("inf"):
                raise SchemaError(f"`delay_ms` must be a non-negative number, got {show(delay_ms)}")
        self._deletion = kind
        self._deletion_delay_ms = float(delay_ms or 0)
        return self


def define_ent(fields: Any = None) -> EntDefinition:
    """Start the definition of an ent table: a dict of field name to type, or a pydantic
    model, or a union of them (``define_ent(A | B)``: each document has one of the shapes)."""
    return EntDefinition({} if fields is None else fields)


@dataclass
class EntSchema:
    """A resolved schema: user tables, edge tables and system tables."""

    tables: dict[str, TableDef]

    def table(self, name: str) -> TableDef:
        return self.tables[name]

    @property
    def user_tables(self) -> list[str]:
        return [n for n, t in self.tables.items() if not t.is_edge_table and not t.is_system]


def define_ent_schema(tables: dict[str, EntDefinition]) -> EntSchema:
    """Resolve a schema; raises SchemaError naming the table and edge on any inconsistency."""
    if not isinstance(tables, dict):
        raise SchemaError("define_ent_schema() takes a dict of table name to define_ent(...)")
    for name, definition in tables.items():
        _check_name("table", name)
        if not isinstance(definition, EntDefinition):
            raise SchemaError(f'Table "{name}" must be defined with define_ent(...), got {type(definition).__name__}')
    return _Resolver(tables).resolve()


class _Resolver:
    def __init__(self, defs: dict[str, EntDefinition]) -> None:
        self.defs = defs
        self.tables: dict[str, TableDef] = {}
        self.edge_tables: dict[str, TableDef] = {}
        # (table, field edge) -> (table, ref edge) it was paired with
        self.paired: dict[tuple[str, str], tuple[str, str]] = {}

    def resolve(self) -> EntSchema:
        for name, d in self.defs.items():
            self.tables[name] = self._base_table(name, d)
        for name, d in self.defs.items():
            for cfg in d._edges.values():
                self._resolve_edge(name, cfg)
        for name, d in self.defs.items():
            self._indexes(name, d)
        from .system import system_tables

        all_tables = dict(self.tables)
        for name, t in self.edge_tables.items():
            if name in all_tables:
                raise SchemaError(
                    f'The many:many edge table "{name}" collides with a table of the same name; '
                    "pass table=... to the edge to store it elsewhere",
                    table=name,
                )
            all_tables[name] = t
        for name, t in system_tables().items():
            all_tables[name] = t
        for t in self.tables.values():
            self._check_soft_edges(t)
            for edge in t.edges.values():
                if edge.name in t.fields and edge.field != edge.name:
                    # A document key must mean one thing: ``{"b": ...}`` on insert, ``ent.b``.
                    raise self._err(
                        f'Edge "{edge.name}" in table "{t.name}" has the name of a field of the table; '
                        "rename the edge or the field",
                        t.name,
                    )
        return EntSchema(all_tables)

    def _base_table(self, name: str, d: EntDefinition) -> TableDef:
        fields: dict[str, FieldSpec] = {}
        shapes = Shapes(name, d._shapes) if d._shapes is not None else None
        if shapes is not None:
            for fname, (annotation, _) in shapes.columns().items():
                spec = field_spec(name, fname, annotation)
                if spec.kind == "id" and spec.id_table not in self.defs and spec.id_table not in SYSTEM_TABLES:
                    raise SchemaError(
                        f'Field "{fname}" in table "{name}" is an id of an undefined table "{spec.id_table}"',
                        table=name,
                        field=fname,
                    )
                fields[fname] = spec
        for fname, (annotation, opts) in d._fields.items():
            if fname.startswith("_") or fname in RESERVED_FIELDS:
                raise SchemaError(f'Field "{fname}" in table "{name}": names starting with "_" are reserved', table=name)
            spec = field_spec(name, fname, annotation, **opts)
            validate_default(name, spec)
            if spec.kind == "id" and spec.id_table not in self.defs and spec.id_table not in SYSTEM_TABLES:
                raise SchemaError(
                    f'Field "{fname}" in table "{name}" is an id of an undefined table "{spec.id_table}"',
                    table=name,
                    field=fname,
                )
            fields[fname] = spec
        if d._deletion is not None:
            if "deletion_time" in fields:
                raise SchemaError(
                    f'Cannot enable "{d._deletion}" deletion for table "{name}" because it already '
                    'defines a "deletion_time" field',
                    table=name,
                )
            fields["deletion_time"] = field_spec(name, "deletion_time", float | None, system=True)
        return TableDef(
            name=name, fields=fields, deletion=d._deletion, deletion_delay_ms=d._deletion_delay_ms, shapes=shapes
        )

    # -- edges -----------------------------------------------------------------------

    def _err(self, msg: str, table: str) -> SchemaError:
        return SchemaError(msg, table=table)

    def _resolve_edge(self, table: str, cfg: _EdgeConfig) -> None:
        t = self.tables[table]
        if cfg.name in t.edges:
            return  # resolved as the inverse of an edge processed earlier
        if cfg.to in SYSTEM_TABLES:
            self._system_edge(table, cfg)
            return
        if cfg.to not in self.defs:
            hint = (
                f' Define a table "{cfg.to}", or pass to="..." if the edge name is not the name of '
                "the target table."
            )
            raise self._err(
                f'Edge "{cfg.name}" in table "{table}" points to an undefined table "{cfg.to}".' + hint,
                table,
            )
        if cfg.cardinality == "single":
            if cfg.stores_field:
                self._single_field(table, cfg)
            else:
                self._single_ref(table, cfg)
        elif not cfg.stores_field:
            self._many_field(table, cfg)
        else:
            self._many_many(table, cfg)

    def _system_edge(self, table: str, cfg: _EdgeConfig) -> None:
        if cfg.cardinality != "single" or not cfg.stores_field:
            raise self._err(
                f'Edge "{cfg.name}" in table "{table}" points to the system table "{cfg.to}"; only '
                f'singular edges that store the id can point to system tables: use .edge("{cfg.name}", '
                f'to="{cfg.to}")',
                table,
            )
        if cfg.deletion not in (None, "hard"):
            raise self._err(
                f'Edge "{cfg.name}" in table "{table}" to "{cfg.to}" accepts only deletion="hard" '
                "(there is no soft deletion of system documents)",
                table,
            )
        self._add_field_edge(table, cfg, unique=False, optional=True, inverse=None)

    def _add_field_edge(self, table: str, cfg: _EdgeConfig, *, unique: bool, optional: bool, inverse: str | None) -> None:
        t = self.tables[table]
        assert cfg.field is not None
        if cfg.field in t.fields:
            raise self._err(
                f'Edge "{cfg.name}" in table "{table}" stores its id in field "{cfg.field}", which is '
                "already a field of the table; pass field=... to the edge or rename the field",
                table,
            )
        id_type = _id_of(cfg.to)
        spec = field_spec(table, cfg.field, id_type | None if optional else id_type, system=True)
        spec.index = True
        spec.unique = unique
        t.fields[cfg.field] = spec
        t.edges[cfg.name] = Edge(
            name=cfg.name,
            table=table,
            to=cfg.to,
            kind="field",
            field=cfg.field,
            optional=optional,
            unique=unique,
            deletion=cfg.deletion,
            inverse=inverse,
        )

    def _inverse_candidates(self, table: str, cfg: _EdgeConfig) -> list[_EdgeConfig]:
        """Edges of the target table that could be the other end of ``cfg``."""
        other = self.defs[cfg.to]
        self_directed = cfg.to == table
        pointing = [
            c
            for c in other._edges.values()
            if c.to == table and not (self_directed and c.name == cfg.name) and c.is_inverse_of is None
        ]
        if cfg.cardinality == "single" and cfg.stores_field:
            # The other end does not store anything: a 1:1 ref end or a 1:many ref end. One
            # that names this edge's field with ref="..." wins over ones with ref=True.
            refs = [c for c in pointing if not c.stores_field]
            named = [c for c in refs if isinstance(c.ref, str) and c.ref == cfg.field]
            return named or [c for c in refs if not isinstance(c.ref, str)]
        # This end does not store the edge: the other end must be a singular field edge.
        storing = [
            c
            for c in pointing
            if c.cardinality == "single"
            and c.stores_field
            and (not isinstance(cfg.ref, str) or c.field == cfg.ref)
        ]
        if storing:
            return storing
        # Nothing stores it; return the ref ends so the caller can say what is wrong.
        return [c for c in pointing if not c.stores_field and not isinstance(c.ref, str)]

    def _one_inverse(
        self, table: str, cfg: _EdgeConfig, cands: list[_EdgeConfig], hint: str, pair_hint: str | None = None
    ) -> _EdgeConfig:
        if not cands:
            raise self._err(
                f'Missing inverse edge in table "{cfg.to}" for edge "{cfg.name}" in table "{table}". {hint}',
                table,
            )
        if len(cands) > 1:
            names = ", ".join(f'"{c.name}"' for c in cands)
            raise self._err(
                f'Edge "{cfg.name}" in table "{table}" has too many potential inverse edges in table '
                f'"{cfg.to}": {names}. '
                + (pair_hint or 'Pair them explicitly: give this edge field="..." and the inverse ref="<the same field>".'),
                table,
            )
        return cands[0]

    def _ref_pair_hint(self, cfg: _EdgeConfig) -> str:
        return (
            f'Pass ref="<field>" to this edge to name the field of table "{cfg.to}" that stores it '
            "(each of those edges stores its own field)."
        )

    def _single_field(self, table: str, cfg: _EdgeConfig) -> None:
        if cfg.to == table and not self._inverse_candidates(table, cfg):
            hint = f'Add .edges("...", ref="{cfg.field}") or .edge("...", ref="{cfg.field}") to table "{table}".'
        else:
            hint = (
                f'Add .edges("{table}", ref=True) to table "{cfg.to}" for a 1:many edge, or '
                f'.edge("{_singular(table)}", ref=True) for a 1:1 edge.'
            )
        pair = (
            f'Give the edge meant to be the inverse ref="{cfg.field}" (the field this edge stores), '
            'and the others ref="<the field they read>".'
        )
        inv = self._one_inverse(table, cfg, self._inverse_candidates(table, cfg), hint, pair)
        self._pair_field(table, cfg, inv)

    def _single_ref(self, table: str, cfg: _EdgeConfig) -> None:
        hint = f'Add .edge("{_singular(table)}") to table "{cfg.to}" so that it stores the edge.'
        if cfg.deletion not in (None, "soft"):
            raise self._err(
                f'Edge "{cfg.name}" in table "{table}": deletion="{cfg.deletion}" is not valid here; '
                'the ent storing the edge is always deleted with this one, only deletion="soft" '
                "(propagating soft deletion) can be set",
                table,
            )
        inv = self._one_inverse(table, cfg, self._inverse_candidates(table, cfg), hint, self._ref_pair_hint(cfg))
        if not inv.stores_field:
            raise self._err(
                f'Both edge "{cfg.name}" in table "{table}" and edge "{inv.name}" in table "{cfg.to}" '
                "are marked ref=True, so neither stores the 1:1 edge; remove ref from the one that "
                "should store it",
                table,
            )
        self._pair_field(cfg.to, inv, cfg, ref_table=table)

    def _many_field(self, table: str, cfg: _EdgeConfig) -> None:
        hint = f'Add .edge("{_singular(table)}") to table "{cfg.to}" so that it stores the 1:many edge.'
        if cfg.deletion not in (None, "soft"):
            raise self._err(
                f'Edge "{cfg.name}" in table "{table}": deletion="{cfg.deletion}" is not valid here; '
                'the ents storing the edge are always deleted with this one, only deletion="soft" '
                "(propagating soft deletion) can be set",
                table,
            )
        inv = self._one_inverse(table, cfg, self._inverse_candidates(table, cfg), hint, self._ref_pair_hint(cfg))
        if not (inv.cardinality == "single" and inv.stores_field):
            raise self._err(
                f'The edge "{inv.name}" in table "{cfg.to}" cannot be ref=True or plural, as it must '
                f'store the 1:many edge as a field. Check its inverse edge "{cfg.name}" in table "{table}".',
                table,
            )
        self._pair_field(cfg.to, inv, cfg, ref_table=table)

    def _pair_field(self, field_table: str, field_cfg: _EdgeConfig, ref_cfg: _EdgeConfig, ref_table: str | None = None) -> None:
        """Resolve a field edge (``field_cfg`` of ``field_table``) with its ref end."""
        if ref_table is None:
            # called from the field end: ref_cfg lives in field_cfg.to
            ref_table = field_cfg.to
        one_to_one = ref_cfg.cardinality == "single"
        if field_cfg.deletion is not None:
            if field_cfg.deletion not in ("hard", "soft"):
                raise self._err(
                    f'Edge "{field_cfg.name}" in table "{field_table}": deletion="{field_cfg.deletion}" '
                    'is not valid on the end that stores the edge; deletion="hard" (delete the other ent '
                    'too) or deletion="soft" (soft-delete it too) can be set, on 1:1 edges',
                    field_table,
                )
            if not one_to_one:
                raise self._err(
                    f'Edge "{field_cfg.name}" in table "{field_table}": deletion="{field_cfg.deletion}" would '
                    f'delete the shared "{ref_table}" ent whenever one of its "{field_table}" is deleted; it is '
                    "allowed only on 1:1 edges (and deletion=\"hard\" on edges to _storage and _scheduled_functions)",
                    field_table,
                )
        other_end = self.paired.setdefault((field_table, field_cfg.name), (ref_table, ref_cfg.name))
        if other_end != (ref_table, ref_cfg.name):
            raise self._err(
                f'Edges "{other_end[1]}" and "{ref_cfg.name}" in table "{ref_table}" both read the field '
                f'"{field_cfg.field}" of edge "{field_cfg.name}" in table "{field_table}"; an edge has one '
                f'inverse. Give each its own field edge in "{field_table}" and pair them with ref="<field>".',
                ref_table,
            )
        if field_cfg.name not in self.tables[field_table].edges:
            self._add_field_edge(
                field_table, field_cfg, unique=one_to_one, optional=field_cfg.optional, inverse=ref_cfg.name
            )
        assert field_cfg.field is not None
        self.tables[ref_table].edges[ref_cfg.name] = Edge(
            name=ref_cfg.name,
            table=ref_table,
            to=field_table,
            kind="ref" if one_to_one else "many_field",
            field=field_cfg.field,
            deletion=ref_cfg.deletion,
            inverse=field_cfg.name,
            optional=field_cfg.optional,
        )

    def _many_many(self, table: str, cfg: _EdgeConfig) -> None:
        if cfg.deletion is not None:
            raise self._err(
                f'Edge "{cfg.name}" in table "{table}": many:many edges take no `deletion` option; '
                "their edge rows are always removed with either end",
                table,
            )
        other = cfg.to
        self_directed = other == table
        if cfg.is_inverse_of is not None:
            return  # resolved from the forward edge
        if self_directed:
            if cfg.inverse is not None:
                inv: _EdgeConfig | None = self.defs[table]._edges[cfg.inverse]
            else:
                inv = None
        else:
            pointing = [
                c
                for c in self.defs[other]._edges.values()
                if c.to == table and c.cardinality == "multiple" and c.is_inverse_of is None
            ]
            storing = [c for c in pointing if c.stores_field]
            # An edge table named on one end only is enough to pair two edges; one named the
            # same on both ends (or on neither) wins over that.
            exact = [c for c in storing if c.table == cfg.table]
            cands = exact or [c for c in storing if cfg.table is None or c.table is None]
            if not cands and storing:
                tables = ", ".join(f'"{c.name}" (table="{c.table}")' for c in storing)
                raise self._err(
                    f'Edge "{cfg.name}" in table "{table}" stores its rows in table "{cfg.table}", but the '
                    f'many:many edges of table "{other}" that point back name other edge tables: {tables}. '
                    "Give both ends of the edge the same table=...",
                    table,
                )
            if not cands:
                cands = [c for c in pointing if not c.stores_field]
            hint = f'Add .edges("{table}") to table "{other}" (or .edges("{table}", ref=True) for 1:many).'
            pair = (
                f'Pair them explicitly: give this edge and the one meant to be its inverse in table "{other}" '
                'the same table="..." (and the others another one).'
            )
            inv = self._one_inverse(table, cfg, cands, hint, pair)
            if not inv.stores_field:
                raise self._err(
                    f'The edge "{inv.name}" in table "{other}" specified `ref`, but its inverse edge '
                    f'"{cfg.name}" in table "{table}" is not the singular end of a 1:many edge. Use '
                    f'.edge("{_singular(other)}") in table "{table}" for 1:many, or drop `ref` for many:many.',
                    table,
                )
            if inv.inverse is not None or cfg.inverse is not None:
                raise self._err(
                    f'Edge "{cfg.name}" in table "{table}": `inverse` is only for self-directed edges '
                    "(to the same table)",
                    table,
                )
        if inv is None:
            edge_table = cfg.table or f"{table}_{cfg.name}"
            fwd = cfg.field or "a_id"
            back = cfg.inverse_field or "b_id"
        else:
            edge_table = cfg.table or inv.table or (
                f"{inv.name}_to_{cfg.name}" if inv.name == table else f"{table}_{inv.name}_to_{cfg.name}"
            )
            if self_directed:
                fwd = cfg.field or f"{inv.name}_id"
                back = cfg.inverse_field or f"{cfg.name}_id"
            else:
                fwd = cfg.field or inv.inverse_field or f"{table}_id"
                back = inv.field or cfg.inverse_field or f"{other}_id"
        if fwd == back:
            raise self._err(
                f'Edge "{cfg.name}" in table "{table}": both ends of the many:many edge table '
                f'"{edge_table}" would be stored in field "{fwd}"; pass field=... and inverse_field=...',
                table,
            )
        _check_name("table", edge_table, f' (edge table of edge "{cfg.name}" in table "{table}")')
        if edge_table in self.edge_tables:
            raise self._err(
                f'Edge "{cfg.name}" in table "{table}" would store its rows in table "{edge_table}", '
                "which another many:many edge already uses; pass table=... to one of them",
                table,
            )
        fields = {
            fwd: field_spec(edge_table, fwd, _id_of(table), system=True),
            back: field_spec(edge_table, back, _id_of(other), system=True),
        }
        et = TableDef(name=edge_table, fields=fields, is_edge_table=True)
        et.unique_indexes[f"{fwd}_{back}"] = (fwd, back)
        et.indexes[f"{back}_{fwd}"] = (back, fwd)
        self.edge_tables[edge_table] = et
        symmetric = inv is None
        self.tables[table].edges[cfg.name] = Edge(
            name=cfg.name,
            table=table,
            to=other,
            kind="many_many",
            field=fwd,
            ref=back,
            edge_table=edge_table,
            symmetric=symmetric,
            inverse=inv.name if inv else None,
        )
        if inv is not None:
            self.tables[other].edges[inv.name] = Edge(
                name=inv.name,
                table=other,
                to=table,
                kind="many_many",
                field=back,
                ref=fwd,
                edge_table=edge_table,
                symmetric=False,
                inverse=cfg.name,
            )

    def _check_soft_edges(self, t: TableDef) -> None:
        for e in t.edges.values():
            if e.deletion == "soft":
                target = self.tables[e.to]
                if target.deletion is None:
                    raise self._err(
                        f'Cannot specify soft deletion behavior for edge "{e.name}" in table "{t.name}" '
                        f'because the target table "{e.to}" does not have a "soft" or "scheduled" '
                        f'deletion behavior configured; add .deletion("soft") to "{e.to}"',
                        t.name,
                    )
                if t.deletion is None:
                    instead = (
                        ', or use deletion="hard" to delete the other end with it'
                        if e.kind == "field"
                        else ""
                    )
                    raise self._err(
                        f'deletion="soft" on edge "{e.name}" in table "{t.name}" has no effect because '
                        f'"{t.name}" itself is always hard deleted; add .deletion("soft") to "{t.name}"{instead}',
                        t.name,
                    )

    # -- indexes ---------------------------------------------------------------------

    def _indexes(self, name: str, d: EntDefinition) -> None:
        t = self.tables[name]
        for fname, spec in t.fields.items():
            if spec.unique:
                t.unique_indexes[fname] = (fname,)
                t.indexes[fname] = (fname,)
            elif spec.index:
                t.indexes[fname] = (fname,)
        for iname, ifields in d._indexes:
            if iname in t.indexes:
                raise SchemaError(
                    f'Duplicate index "{iname}" in table "{name}" (fields declared with index=True or '
                    "unique=True, and edge fields, have an index named after the field)",
                    table=name,
                )
            for f in ifields:
                if "." in f:
                    raise SchemaError(
                        f'Index "{iname}" in table "{name}": nested field paths ("{f}") cannot be indexed; '
                        "index a top-level field",
                        table=name,
                    )
                if f not in t.fields and f != "_creation_time":
                    raise SchemaError(
                        f'Index "{iname}" in table "{name}" refers to an undefined field "{f}"',
                        table=name,
                        field=f,
                    )
                if t.shapes is not None and f in t.shapes.names and f not in t.shapes.shared:
                    having = ", ".join(t.shapes.labels[i] for i, fs in enumerate(t.shapes.fields) if f in fs)
                    raise SchemaError(
                        f'Index "{iname}" in table "{name}" refers to field "{f}", which only some of the '
                        f"table's shapes have ({having}); an index may name fields all shapes share, and "
                        "fields added with .field() or edges",
                        table=name,
                        field=f,
                    )
            if ifields[-1] == "_creation_time":
                ifields = ifields[:-1]
            if "_creation_time" in ifields:
                raise SchemaError(
                    f'Index "{iname}" in table "{name}": "_creation_time" may only be the last field',
                    table=name,
                )
            if not ifields:
                raise SchemaError(f'Index "{iname}" in table "{name}" has no fields besides _creation_time', table=name)
            t.indexes[iname] = ifields
        for iname in list(t.indexes):
            alias = f"by_{iname}"
            if len(t.indexes[iname]) == 1 and t.indexes[iname][0] == iname and alias not in t.indexes:
                t.index_aliases[alias] = iname


def _id_of(table: str) -> Any:
    """The annotation ``Id[table]`` (spelled so that type checkers accept a variable name)."""
    return Annotated[str, IdRef(table)]


def _singular(table: str) -> str:
    return table[:-1] if table.endswith("s") and len(table) > 1 else table
