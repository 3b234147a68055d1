"""Field types: from a Python annotation to a storage kind and a validator.

A field's annotation decides how it is validated (pydantic, strict mode, like Convex's
validators) and how it is stored: scalar types get their own SQL column type, ids are
stored as the integer key of the target row, and everything nested is JSON.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NotRequired, Required, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from typing_extensions import TypedDict

from .errors import SchemaError, ValidationError
from .ids import IdRef
from .values import show, show_path

MISSING: Any = type("MISSING", (), {"__repr__": lambda self: "MISSING", "__bool__": lambda self: False})()

Kind = Literal["str", "int", "float", "bool", "bytes", "id", "json"]

_SCALARS: dict[Any, Kind] = {str: "str", int: "int", float: "float", bool: "bool", bytes: "bytes"}


@dataclass
class FieldSpec:
    """A resolved field of a table."""

    name: str
    annotation: Any
    kind: Kind
    nullable: bool = False
    default: Any = MISSING
    unique: bool = False
    index: bool = False
    id_table: str | None = None
    system: bool = False  # set by ents (edge fields, deletion_time), not declared by the user
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def has_default(self) -> bool:
        return self.default is not MISSING

    @property
    def required(self) -> bool:
        return not self.nullable and not self.has_default


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        args = get_args(annotation)
        rest = [a for a in args if a is not type(None)]
        if len(rest) < len(args):
            inner = rest[0] if len(rest) == 1 else Union[tuple(rest)]  # noqa: UP007
            return inner, True
    return annotation, False


def _id_ref(annotation: Any) -> IdRef | None:
    if get_origin(annotation) is Annotated:
        for meta in annotation.__metadata__:
            if isinstance(meta, IdRef):
                return meta
    return None


def _check_storable(annotation: Any, where: str) -> None:
    """Refuse annotations whose values could not be stored as JSON-like data."""
    if annotation in (str, int, float, bool, bytes, type(None), Any, object, list, dict):
        return
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return
    origin = get_origin(annotation)
    if origin is Annotated:
        _check_storable(get_args(annotation)[0], where)
        return
    if origin is Literal:
        for value in get_args(annotation):
            if not isinstance(value, (str, int, float, bool)) and value is not None:
                raise SchemaError(f"{where}: Literal values must be str, int, float, bool or None")
        return
    if origin in (list, typing.List):  # noqa: UP006
        for arg in get_args(annotation):
            _check_storable(arg, where)
        return
    if origin in (dict, typing.Dict):  # noqa: UP006
        args = get_args(annotation)
        if args and args[0] is not str:
            raise SchemaError(f"{where}: dict keys must be str, got {show(args[0])}")
        for arg in args[1:]:
            _check_storable(arg, where)
        return
    if origin is Union or origin is types.UnionType:
        for arg in get_args(annotation):
            _check_storable(arg, where)
        return
    raise SchemaError(
        f"{where}: type {show(annotation)} is not supported. Use str, int, float, bool, bytes, "
        "list[...], dict[str, ...], Optional[...], Literal[...], Id[\"table\"] or a pydantic model"
    )


def field_spec(table: str, name: str, annotation: Any, **options: Any) -> FieldSpec:
    """Resolve ``annotation`` for field ``name`` of ``table`` into a FieldSpec."""
    where = f'Field "{name}" in table "{table}"'
    inner, nullable = _unwrap_optional(annotation)
    _check_storable(inner, where)
    ref = _id_ref(inner)
    kind: Kind
    id_table = None
    if ref is not None:
        kind, id_table = "id", ref.table
    elif inner in _SCALARS:
        kind = _SCALARS[inner]
    elif get_origin(inner) is Literal:
        values = get_args(inner)
        if all(type(v) is str for v in values):
            kind = "str"
        elif all(type(v) is int for v in values):
            kind = "int"
        else:
            kind = "json"
        if None in values:
            nullable = True
    else:
        kind = "json"
    return FieldSpec(name=name, annotation=annotation, kind=kind, nullable=nullable, id_table=id_table, **options)


def build_validator(table: str, fields: dict[str, FieldSpec], *, partial: bool) -> TypeAdapter[Any]:
    """A strict pydantic validator for whole documents (or for patches when ``partial``)."""
    entries: dict[str, Any] = {}
    for spec in fields.values():
        annotation = spec.annotation
        if partial or not spec.required:
            entries[spec.name] = NotRequired[annotation]
        else:
            entries[spec.name] = Required[annotation]
    td: Any = TypedDict(f"{table}_document", entries)  # type: ignore[operator,misc]
    # setattr: type checkers take a functional TypedDict for a class without this attribute
    setattr(td, "__pydantic_config__", ConfigDict(strict=True, extra="forbid", arbitrary_types_allowed=False))  # noqa: B010
    return TypeAdapter(td)


def describe_value(value: Any) -> str:
    """``type value`` for an error message, short, and safe for any value (see values.show)."""
    return f"{type(value).__name__} {show(value)}"


def format_pydantic_error(
    exc: PydanticValidationError, *, subject: str, noun: str = "field"
) -> str:
    """Turn a pydantic error into one readable sentence naming the offending field(s)."""
    parts = []
    for error in exc.errors()[:5]:
        loc = show_path(".".join(str(p) for p in error["loc"])) or "(value)"
        if error["type"] == "missing":
            parts.append(f"missing required {noun} `{loc}`")
        elif error["type"] == "extra_forbidden":
            parts.append(f"unknown {noun} `{loc}`")
        else:
            got = ""
            if "input" in error:
                got = f" (got {describe_value(error['input'])})"
            parts.append(f"{noun} `{loc}`: {error['msg']}{got}")
    more = len(exc.errors()) - 5
    tail = f"; and {more} more" if more > 0 else ""
    return f"{subject}: " + "; ".join(parts) + tail


def validate_default(table: str, spec: FieldSpec) -> None:
    if not spec.has_default:
        return
    try:
        TypeAdapter(spec.annotation, config=ConfigDict(strict=True)).validate_python(spec.default)
    except PydanticValidationError as exc:
        raise SchemaError(
            f'Default value {show(spec.default)} of field "{spec.name}" in table "{table}" does not '
            f"match its type: {exc.errors()[0]['msg']}",
            table=table,
            field=spec.name,
        ) from None
    except Exception as exc:  # pragma: no cover - exotic annotations
        raise SchemaError(f'Field "{spec.name}" in table "{table}": {exc}', table=table) from None


def raise_validation(exc: PydanticValidationError, *, table: str) -> typing.NoReturn:
    field_name = None
    errors = exc.errors()
    if errors and errors[0]["loc"]:
        field_name = str(errors[0]["loc"][0])
    raise ValidationError(
        format_pydantic_error(exc, subject=f'Invalid document for table "{table}"'),
        table=table,
        field=field_name,
    ) from None


# -- type descriptions (for detecting incompatible schema changes) -----------------------
#
# A field's type is remembered in the database as a small JSON value, so that reopening a
# database with a changed schema can tell a widening (every stored value still valid) from
# a change that existing documents may not satisfy. Descriptions are structural: a union
# is the set of its members, a Literal the union of its values, a model its fields.

TYPE_DESCRIPTION_VERSION = 1


def describe_type(annotation: Any, _seen: tuple[Any, ...] = ()) -> Any:
    """A JSON-able description of ``annotation`` (see :func:`type_accepts`)."""
    if annotation is None or annotation is type(None):
        return "null"
    if annotation is Any or annotation is object:
        return "any"
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    origin = get_origin(annotation)
    if origin is Annotated:
        ref = _id_ref(annotation)
        if ref is not None:
            return {"id": ref.table}
        return describe_type(get_args(annotation)[0], _seen)
    if origin is Literal:
        return _union([("null" if v is None else {"lit": v}) for v in get_args(annotation)])
    if origin is Union or origin is types.UnionType:
        return _union([describe_type(a, _seen) for a in get_args(annotation)])
    if annotation is list or origin in (list, typing.List):  # noqa: UP006
        args = get_args(annotation)
        return {"list": describe_type(args[0], _seen) if args else "any"}
    if annotation is dict or origin in (dict, typing.Dict):  # noqa: UP006
        args = get_args(annotation)
        return {"dict": describe_type(args[1], _seen) if len(args) == 2 else "any"}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        name = f"{annotation.__module__}.{annotation.__qualname__}"
        if annotation in _seen:
            return {"ref": name}
        inner = (*_seen, annotation)
        fields = {
            fname: [describe_type(info.annotation, inner), info.is_required()]
            for fname, info in annotation.model_fields.items()
        }
        out: dict[str, Any] = {"model": fields}
        if annotation.model_config.get("extra") == "forbid":
            out["forbid"] = True
        return out
    return {"type": f"{getattr(annotation, '__module__', '?')}.{getattr(annotation, '__qualname__', repr(annotation))}"}


def _union(members: list[Any]) -> Any:
    flat: dict[str, Any] = {}
    for m in members:
        for x in m["union"] if isinstance(m, dict) and "union" in m else [m]:
            flat.setdefault(_key(x), x)
    if len(flat) == 1:
        return next(iter(flat.values()))
    return {"union": [flat[k] for k in sorted(flat)]}


def _key(desc: Any) -> str:
    import json

    return json.dumps(desc, sort_keys=True)


def _members(desc: Any) -> list[Any]:
    return list(desc["union"]) if isinstance(desc, dict) and "union" in desc else [desc]


def without_null(desc: Any) -> Any:
    """``desc`` without its ``None`` member ("never" when nothing is left)."""
    rest = [m for m in _members(desc) if m != "null"]
    return _union(rest) if rest else "never"


def allows_null(desc: Any) -> bool:
    return any(m == "null" or m == "any" for m in _members(desc))


def _lit_fits(value: Any, scalar: str) -> bool:
    t = type(value)
    return (
        (scalar == "str" and t is str)
        or (scalar == "int" and t is int)
        or (scalar == "float" and t in (int, float))
        or (scalar == "bool" and t is bool)
    )


def type_accepts(new: Any, old: Any) -> bool:
    """Whether every value valid for the type described by ``old`` is valid for ``new``.

    Conservative: False when unsure. ``int`` widens to ``float`` (a float field accepts
    ints, as pydantic's strict mode does); a model accepts an older version of itself
    that lacks only fields with defaults, or has fields it no longer declares (they are
    ignored), unless it forbids extra fields.
    """
    if old == "never" or new == old or new == "any":
        return True
    if isinstance(old, dict) and "union" in old:
        return all(type_accepts(new, m) for m in old["union"])
    if isinstance(new, dict) and "union" in new:
        return any(type_accepts(m, old) for m in new["union"])
    if isinstance(old, dict) and "lit" in old:
        value = old["lit"]
        if isinstance(new, str):
            return _lit_fits(value, new)
        return isinstance(new, dict) and "lit" in new and type(new["lit"]) is type(value) and new["lit"] == value
    if old == "int" and new == "float":
        return True
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return False
    if "list" in old and "list" in new:
        return type_accepts(new["list"], old["list"])
    if "dict" in old and "dict" in new:
        return type_accepts(new["dict"], old["dict"])
    if "model" in old and "dict" in new:
        return all(type_accepts(new["dict"], t) for t, _ in old["model"].values())
    if "model" in old and "model" in new:
        olds, news = old["model"], new["model"]
        for name, (t, required) in news.items():
            if name not in olds:
                if required:
                    return False
            elif not type_accepts(t, olds[name][0]) or (required and not olds[name][1] and not type_accepts(t, "null")):
                return False
        return not (new.get("forbid") and set(olds) - set(news))
    return False


def type_text(desc: Any) -> str:
    """A description in Python's notation, for messages."""
    if isinstance(desc, str):
        return "None" if desc == "null" else ("Any" if desc == "any" else desc)
    if "union" in desc:
        lits = [m["lit"] for m in desc["union"] if isinstance(m, dict) and "lit" in m]
        rest = [type_text(m) for m in desc["union"] if not (isinstance(m, dict) and "lit" in m) and m != "null"]
        parts = ([f"Literal[{', '.join(repr(v) for v in lits)}]"] if lits else []) + rest
        parts += ["None"] if "null" in desc["union"] else []
        return " | ".join(parts)
    if "lit" in desc:
        return f"Literal[{desc['lit']!r}]"
    if "id" in desc:
        return f'Id["{desc["id"]}"]'
    if "list" in desc:
        return f"list[{type_text(desc['list'])}]"
    if "dict" in desc:
        return f"dict[str, {type_text(desc['dict'])}]"
    if "model" in desc:
        inner = ", ".join(f"{k}: {type_text(t)}" for k, (t, _) in desc["model"].items())
        return f"model {{{inner}}}"
    if "ref" in desc:
        return desc["ref"].rsplit(".", 1)[-1]
    return str(desc.get("type", desc))


def describe_field(spec: FieldSpec) -> dict[str, Any]:
    """What the database remembers of a field: its type, storage kind and whether it has
    a default (a field with a default may be missing from stored documents)."""
    return {"t": describe_type(spec.annotation), "k": spec.kind, "d": spec.has_default}


# -- tables of a union of shapes ---------------------------------------------------------------


def shape_models(value: Any) -> list[type[BaseModel]] | None:
    """The pydantic models of ``define_ent(A | B)`` (or ``define_ent(A)``), else None."""
    if isinstance(value, type) and issubclass(value, BaseModel):
        return [value]
    origin = get_origin(value)
    if origin is Union or origin is types.UnionType:
        args = get_args(value)
        if args and all(isinstance(a, type) and issubclass(a, BaseModel) for a in args):
            return list(args)
    return None


def merge_annotations(annotations: list[Any], nullable: bool) -> Any:
    """One annotation accepting what each of ``annotations`` does (Literals merged into
    one Literal, so that a tag shared by all shapes is stored as one string column)."""
    members: list[Any] = []
    for annotation in annotations:
        origin = get_origin(annotation)
        for m in get_args(annotation) if origin is Union or origin is types.UnionType else [annotation]:
            if m not in members:
                members.append(m)
    if nullable and type(None) not in members:
        members.append(type(None))
    literals = [m for m in members if get_origin(m) is Literal]
    if len(literals) > 1:
        values: list[Any] = []
        for m in literals:
            values += [v for v in get_args(m) if not any(v == x and type(v) is type(x) for x in values)]
        merged = Literal[tuple(values)]  # type: ignore[valid-type]
        members = [merged if m is literals[0] else m for m in members if m not in literals[1:]]
    if len(members) == 1:
        return members[0]
    return Union[tuple(members)]  # noqa: UP007


class Shapes:
    """The shapes of a table defined as a union of pydantic models.

    Each field of any shape is a column of the table (see the README's "Schema"); a
    document is validated against the shapes (the one its tag names when the shapes share
    a Literal field with distinct values, else the first that accepts it), and reads show
    the fields of the shape a stored document matches.
    """

    def __init__(self, table: str, models: list[type[BaseModel]]) -> None:
        self.table = table
        self.models = models
        self.labels = [m.__name__ for m in models]
        self.fields: list[tuple[str, ...]] = [tuple(m.model_fields) for m in models]
        self.required: list[frozenset[str]] = [
            frozenset(n for n, info in m.model_fields.items() if info.is_required()) for m in models
        ]
        self.names: frozenset[str] = frozenset(n for fs in self.fields for n in fs)
        self.shared: frozenset[str] = frozenset(n for n in self.names if all(n in fs for fs in self.fields))
        self.discriminator: str | None = None
        self.tags: dict[Any, int] = {}
        for name in sorted(self.shared):
            tags: dict[Any, int] = {}
            ok = True
            for i, m in enumerate(models):
                annotation = m.model_fields[name].annotation
                if get_origin(annotation) is not Literal:
                    ok = False
                    break
                for v in get_args(annotation):
                    if v in tags:
                        ok = False
                    tags[v] = i
            if ok and len(models) > 1:
                self.discriminator, self.tags = name, tags
                break

    def columns(self) -> dict[str, tuple[Any, bool]]:
        """Each shape field: the annotation of its column and whether it must be present."""
        out: dict[str, tuple[Any, bool]] = {}
        for name in sorted(self.names, key=lambda n: min(fs.index(n) if n in fs else 1 << 30 for fs in self.fields)):
            present = [m.model_fields[name] for m in self.models if name in m.model_fields]
            nullable = len(present) < len(self.models)
            out[name] = (merge_annotations([info.annotation for info in present], nullable), not nullable)
        return out

    # -- writing ------------------------------------------------------------------------

    def validate(self, data: dict[str, Any], *, patch: bool = False) -> dict[str, Any]:
        """Validate a whole document's shape fields; returns a value for every shape field
        (None for those of the other shapes). Raises ValidationError naming the table and
        the shapes it tried (``patch``: the document is a patch merged into a stored one)."""
        if self.discriminator is not None:
            tag = data.get(self.discriminator, MISSING)
            index = self.tags.get(tag) if isinstance(tag, (str, int, bool)) else None
            if index is None:
                known = ", ".join(f"{v!r} ({self.labels[i]})" for v, i in self.tags.items())
                said = "is missing" if tag is MISSING else f"is {describe_value(tag)}"
                raise ValidationError(
                    f'Invalid document for table "{self.table}": its field `{self.discriminator}` {said}; '
                    f"it tells the document's shape: one of {known}",
                    table=self.table,
                    field=self.discriminator,
                )
            return self._as(index, data, f" (shape {self.labels[index]}, {self.discriminator} = {tag!r})", patch)
        if len(self.models) == 1:
            return self._as(0, data, "", patch)
        failures: list[str] = []
        for i in range(len(self.models)):
            try:
                return self._as(i, data, "", patch)
            except ValidationError as exc:
                failures.append(f"{self.labels[i]} ({exc.message.split(': ', 1)[-1]})")
        raise ValidationError(
            f'Invalid document for table "{self.table}": it matches none of its shapes: ' + "; ".join(failures),
            table=self.table,
        )

    def _as(self, index: int, data: dict[str, Any], context: str, patch: bool) -> dict[str, Any]:
        own = self.fields[index]
        extra = [k for k in data if k not in own]
        subject = f'Invalid document for table "{self.table}"{context}'
        if extra:
            hint = "; a patch that changes the shape removes the other fields (sets them to None)" if patch else ""
            raise ValidationError(
                f"{subject}: field `{extra[0]}` is not a field of shape {self.labels[index]} "
                f"(its fields: {', '.join(own) or 'none'}){hint}",
                table=self.table,
                field=extra[0],
            )
        try:
            value = self.models[index].model_validate(data, strict=True, by_alias=False, by_name=True)
        except PydanticValidationError as exc:
            errors = exc.errors()
            raise ValidationError(
                format_pydantic_error(exc, subject=subject),
                table=self.table,
                field=str(errors[0]["loc"][0]) if errors and errors[0]["loc"] else None,
            ) from None
        dumped = value.model_dump(mode="python", by_alias=False)
        return {name: dumped.get(name) if name in own else None for name in self.names}

    # -- reading ------------------------------------------------------------------------

    def match(self, doc: dict[str, Any]) -> int | None:
        """The shape a stored document has (None if it fits none, e.g. after a change)."""
        if self.discriminator is not None:
            tag = doc.get(self.discriminator)
            return self.tags.get(tag) if isinstance(tag, (str, int, bool)) else None
        present = {n for n in self.names if doc.get(n) is not None}
        for i, own in enumerate(self.fields):
            if self.required[i] <= present and present.issubset(own):
                return i
        return None

    def trim(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``doc`` without the fields of the shapes it does not have."""
        index = self.match(doc)
        if index is None:
            for name in self.names:
                if doc.get(name, MISSING) is None:
                    del doc[name]
            return doc
        own = self.fields[index]
        for name in self.names:
            if name not in own:
                doc.pop(name, None)
        return doc
