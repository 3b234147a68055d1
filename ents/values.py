"""Values that can be stored: checks and the JSON encoding of nested values.

ents stores documents whose values are JSON-like: None, bool, int, float, str, bytes,
lists and string-keyed dicts (pydantic models are stored as their dict form). Nested
values are kept as JSON text; bytes inside them become ``{"$bytes": "<base64>"}``, which is
why object keys may not start with ``$``. The same rules hold on SQLite and PostgreSQL,
so a value accepted on one is accepted on the other:

* strings must be valid Unicode without NUL characters (PostgreSQL cannot store them),
* floats must be finite (SQLite silently turns NaN into NULL),
* integers must fit in 64 bits where they are stored in a column,
* nesting is limited to ``MAX_DEPTH`` levels.
"""

from __future__ import annotations

import base64
import json
import math
import re
import reprlib
import sys
from typing import Any

from pydantic import BaseModel

from .errors import ValidationError

MAX_DEPTH = 64
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_loads = json.loads
# The decoder's scanner, called directly: text ents wrote itself (compact, no surrounding
# whitespace) decodes without json.loads' two Python-level calls; anything else falls back.
_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


class _ShortRepr(reprlib.Repr):
    """reprlib's bounded repr, made safe for any value a caller may pass."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxstring = self.maxother = self.maxlong = 48

    def repr_int(self, x: int, level: int) -> str:
        # repr() refuses integers of more than sys.get_int_max_str_digits() digits (4300 by
        # default); say how big it is instead.
        if x.bit_length() > 160:
            digits = int(x.bit_length() * 0.30103) + 1
            return f"{'-' if x < 0 else ''}<an integer of about {digits} digits>"
        return super().repr_int(x, level)


_short = _ShortRepr().repr


def show(value: Any, limit: int = 60) -> str:
    """A short repr of ``value`` for an error message; never raises.

    ``repr()`` itself can fail on hostile input: an integer beyond 4300 digits raises
    ValueError, a list nested thousands deep raises RecursionError, and an object's own
    ``__repr__`` may raise anything. Messages built from user values go through this.
    """
    try:
        text = _short(value)
    except Exception:
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def show_name(value: Any, limit: int = 60) -> str:
    """A name or value for a message: a short string as it is, anything else via :func:`show`."""
    if type(value) is str and len(value) <= limit:
        return value
    return show(value, limit)


def show_path(path: str) -> str:
    """A field path for a message, clipped (a path may run through huge keys or many levels)."""
    return path if len(path) <= 80 else path[:77] + "..."


def _where(path: str) -> str:
    return f" at `{show_path(path)}`" if path else ""


def check_str(value: str, path: str = "") -> str:
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(
                f"String{_where(path)} is not valid Unicode (it contains a lone surrogate)"
            ) from None
    if "\x00" in value:
        raise ValidationError(f"String{_where(path)} contains a NUL character, which cannot be stored")
    return value


def float_of(value: int | float) -> float | None:
    """``float(value)``, or None for an int too large for a float (``float(10**400)``
    raises OverflowError)."""
    try:
        return float(value)
    except OverflowError:
        return None


def check_float(value: float, path: str = "") -> float:
    if not math.isfinite(value):
        raise ValidationError(f"Number{_where(path)} must be finite, got {show(value)}")
    return value


def check_int64(value: int, path: str = "") -> int:
    if value < INT64_MIN or value > INT64_MAX:
        raise ValidationError(f"Integer{_where(path)} does not fit in 64 bits: {show(value)}")
    return value


def cursor_value_ok(kind: str, value: Any) -> bool:
    """Whether ``value`` may stand in a pagination cursor for a key of ``kind``.

    A cursor is text a client hands back, so it may be forged: a value the driver cannot
    bind (an integer beyond 64 bits, a lone surrogate, NaN) or one of another type than
    the column's must be refused as an invalid cursor, not reach the database. ``kind``
    is a field kind (``int``, ``str``, ``json``...), ``rid`` (a row key) or ``time``.
    """
    if value is None:
        return kind not in ("rid", "time")
    t = type(value)
    if kind in ("rid", "int", "id"):
        return t is int and INT64_MIN <= value <= INT64_MAX
    if kind in ("float", "time"):
        return (t is int and INT64_MIN <= value <= INT64_MAX) or (t is float and math.isfinite(value))
    if kind == "str":
        return t is str and _valid_str(value)
    if kind == "bool":
        return t is bool or (t is int and value in (0, 1))  # SQLite keeps booleans as 0 / 1
    if kind == "bytes":
        return t is bytes
    if kind == "json":
        try:
            normalize(value)
        except ValidationError:
            return False
        return t is not float or math.isfinite(value)
    return False


def _valid_str(value: str) -> bool:
    try:
        check_str(value)
    except ValidationError:
        return False
    return True


def normalize(value: Any, path: str = "", depth: int = 0) -> Any:
    """Return ``value`` as plain JSON-like data, or raise ValidationError saying why not."""
    if depth > MAX_DEPTH:
        raise ValidationError(f"Value{_where(path)} is nested more than {MAX_DEPTH} levels deep")
    if value is None or value is True or value is False:
        return value
    t = type(value)
    if t is str:
        return check_str(value, path)
    if t is int:
        return value
    if t is float:
        return check_float(value, path)
    if t is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise ValidationError(
                    f"Object keys must be strings{_where(path)}, got {type(k).__name__} {show(k)}"
                )
            if k.startswith("$"):
                raise ValidationError(f"Object key `{k}`{_where(path)} may not start with `$`")
            check_str(k, path)
            out[k] = normalize(v, f"{path}.{k}" if path else k, depth + 1)
        return out
    if t is list or t is tuple:
        return [normalize(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if t is bytes or t is bytearray or t is memoryview:
        return bytes(value)
    if isinstance(value, BaseModel):
        return normalize(value.model_dump(mode="python"), path, depth)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return check_float(float(value), path)
    if isinstance(value, str):
        return check_str(str(value), path)
    if isinstance(value, dict):
        return normalize(dict(value), path, depth)
    if isinstance(value, (list, tuple)):
        return normalize(list(value), path, depth)
    raise ValidationError(
        f"Value{_where(path)} of type {type(value).__name__} cannot be stored; "
        "use None, bool, int, float, str, bytes, list, dict or a pydantic model"
    )


def _encode_bytes(value: Any) -> Any:
    if type(value) is bytes:
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if type(value) is dict:
        return {k: _encode_bytes(v) for k, v in value.items()}
    if type(value) is list:
        return [_encode_bytes(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """Encode normalized data as compact JSON text (bytes become ``{"$bytes": ...}``)."""
    try:
        try:
            text = _dumps(value)
        except TypeError:
            value = _encode_bytes(value)
            text = _dumps(value)
    except ValueError:
        # normalize() rejects NaN first; what is left is an integer of more digits than
        # Python converts to text (sys.get_int_max_str_digits()).
        raise ValidationError(
            f"A value holds an integer of more than {sys.get_int_max_str_digits()} digits, which cannot be stored"
        ) from None
    if "e+" in text:
        # A float of 1e16 or more is written in exponent form ("1e+16"); PostgreSQL's jsonb
        # keeps it as the number 10000000000000000, which reads back as an int. Written with
        # its digits and a ".0", it reads back as the float it was, on every backend.
        text = _FLOAT_MARK.sub(r"\1", _dumps(_mark_big_floats(value)))
    return text


# User strings never hold NUL (check_str refuses it), so a NUL-led string in ents' own JSON
# text can only be one of these marks.
_FLOAT_MARK = re.compile(r'"\\u0000(-?[0-9]+\.0)"')


def _mark_big_floats(value: Any) -> Any:
    t = type(value)
    if t is float:
        return f"\x00{value:.1f}" if abs(value) >= 1e16 else value
    if t is dict:
        return {k: _mark_big_floats(v) for k, v in value.items()}
    if t is list:
        return [_mark_big_floats(v) for v in value]
    return value


def _bytes_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and "$bytes" in obj:
        return base64.b64decode(obj["$bytes"])
    return obj


def loads(text: str | bytes | None) -> Any:
    """Decode JSON text written by :func:`dumps`."""
    if text is None:
        return None
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text).decode("utf-8")
    if '"$bytes"' in text:
        return json.loads(text, object_hook=_bytes_hook)
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        return _loads(text)  # raises the decoder's own error
    return value if end == len(text) else _loads(text)


class Doc(dict):  # type: ignore[type-arg]
    """A dict whose keys also read as attributes (``job.state.kind``).

    Nested objects of documents are Docs, so dotted access works at any depth; they
    compare equal to plain dicts and serialize like them.
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"{name!r} is not a key of this object (keys: {', '.join(map(str, self)) or 'none'})"
            ) from None

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *[k for k in self if isinstance(k, str)]]


def _doc_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and "$bytes" in obj:
        return base64.b64decode(obj["$bytes"])
    return Doc(obj)


def loads_doc(text: str | bytes | None) -> Any:
    """Like :func:`loads`, but objects become :class:`Doc`."""
    if text is None:
        return None
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text).decode("utf-8")
    return json.loads(text, object_hook=_doc_hook)
