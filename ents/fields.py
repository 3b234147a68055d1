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
