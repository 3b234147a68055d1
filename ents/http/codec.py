"""Values over Convex's HTTP API: the ``json`` and ``convex_encoded_json`` formats.

Arguments are decoded the same way in both formats (as Convex does): plain JSON, where an
object with the single key ``$integer``, ``$float`` or ``$bytes`` stands for a 64-bit integer,
a special float (NaN, ±Infinity, -0) or bytes, each as the base64 of its little-endian bytes.

Results are encoded per format:

* ``convex_encoded_json`` (what ``ConvexHttpClient`` asks for): as its ``jsonToConvex``
  reads it. An ``int`` is a JSON number when a JavaScript number holds it exactly
  (|n| < 2**53) and ``{"$integer": ...}`` (a ``bigint`` there) beyond; NaN, ±Infinity and -0
  are ``{"$float": ...}``; bytes are ``{"$bytes": ...}``. Object keys must be what Convex
  allows (printable ASCII, not starting with ``$``), or the client could not read them.
* ``json`` (the default): readable JSON. Integers stay numbers (Python's ``int`` is the
  everyday number here, unlike Convex's int64, which this format writes as a string); NaN
  and ±Infinity are the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``; bytes are a
  base64 string.

Ents become their documents and pydantic models their dicts; anything else that is not a
JSON-like value cannot be sent and fails the call with a message that says where it is.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from typing import Any

from pydantic import BaseModel

from ..errors import ValidationError
from ..query import Ent
from ..values import MAX_DEPTH, show, show_name, show_path

#: the format names Convex accepts (the last two are its legacy aliases)
ENCODED = "convex_encoded_json"
CLEAN = "json"
FORMATS = {ENCODED: ENCODED, "convex_json": ENCODED, CLEAN: CLEAN, "convex_clean_json": CLEAN}

MAX_SAFE_INTEGER = 2**53 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_KEY_LENGTH = 1024


class EncodeError(ValidationError):
    """A value cannot be carried in the requested format."""


def _at(path: str) -> str:
    return f" at `{show_path(path)}`" if path else ""


# -- arguments in -----------------------------------------------------------------------


def decode_args(value: Any, path: str = "", depth: int = 0) -> Any:
    """Parsed JSON with Convex's ``$integer`` / ``$float`` / ``$bytes`` objects decoded;
    ValidationError for a malformed one or another key starting with ``$``."""
    if depth > MAX_DEPTH:
        raise ValidationError(f"Value{_at(path)} is nested more than {MAX_DEPTH} levels deep")
    if type(value) is list:
        return [decode_args(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if type(value) is not dict:
        return value
    if len(value) == 1:
        ((key, inner),) = value.items()
        if key.startswith("$"):
            return _special(key, inner, path)
    out = {}
    for key, inner in value.items():
        if key.startswith("$"):
            raise ValidationError(f"Field name `{show_name(key)}`{_at(path)} starts with a '$', which is reserved")
        out[key] = decode_args(inner, f"{path}.{key}" if path else key, depth + 1)
    return out


def _special(key: str, inner: Any, path: str) -> Any:
    if key not in ("$integer", "$float", "$bytes"):
        raise ValidationError(f"Field name `{show_name(key)}`{_at(path)} starts with a '$', which is reserved")
    if type(inner) is not str:
        raise ValidationError(f"Malformed {key}{_at(path)}: expected a base64 string, got {show(inner)}")
    try:
        raw = base64.b64decode(inner, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(f"Malformed {key}{_at(path)}: not valid base64") from None
    if key == "$bytes":
        return raw
    if len(raw) != 8:
        raise ValidationError(f"Malformed {key}{_at(path)}: expected 8 bytes, got {len(raw)}")
    if key == "$integer":
        return int.from_bytes(raw, "little", signed=True)
    return struct.unpack("<d", raw)[0]


# -- results out ------------------------------------------------------------------------


def encode(value: Any, fmt: str, path: str = "") -> Any:
    """``value`` as JSON-ready data in format ``fmt`` (``json`` or ``convex_encoded_json``)."""
    return _encode(value, fmt == ENCODED, path, 0)


def _encode(value: Any, encoded: bool, path: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise EncodeError(f"Value{_at(path)} is nested more than {MAX_DEPTH} levels deep")
    if value is None or value is True or value is False or type(value) is str:
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return _int(int(value), encoded, path)
    if isinstance(value, float):
        return _float(float(value), encoded)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = base64.b64encode(bytes(value)).decode("ascii")
        return {"$bytes": text} if encoded else text
    if isinstance(value, Ent):
        value = value.doc()
    elif isinstance(value, BaseModel):
        value = value.model_dump(mode="python")
    if isinstance(value, dict):
        out = {}
        for key, inner in value.items():
            if type(key) is not str:
                raise EncodeError(f"Object keys must be strings{_at(path)}, got {type(key).__name__} {show(key)}")
            if encoded:
                _check_key(key, path)
            out[key] = _encode(inner, encoded, f"{path}.{key}" if path else key, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [_encode(v, encoded, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    raise EncodeError(
        f"Value{_at(path)} of type {type(value).__name__} cannot be sent; "
        "return None, bool, int, float, str, bytes, lists, dicts, ents or pydantic models"
    )


def _int(n: int, encoded: bool, path: str) -> Any:
    if not encoded or -MAX_SAFE_INTEGER <= n <= MAX_SAFE_INTEGER:
        return n
    if INT64_MIN <= n <= INT64_MAX:
        return {"$integer": base64.b64encode(n.to_bytes(8, "little", signed=True)).decode("ascii")}
    raise EncodeError(f"Integer{_at(path)} does not fit in 64 bits: {show(n)}")


def _float(x: float, encoded: bool) -> Any:
    special = math.isnan(x) or math.isinf(x) or (x == 0 and math.copysign(1.0, x) < 0)
    if not special:
        return x
    if encoded:
        return {"$float": base64.b64encode(struct.pack("<d", x)).decode("ascii")}
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x  # -0.0: JSON has it


def _check_key(key: str, path: str) -> None:
    # What convex-js' jsonToConvex accepts: a key it would refuse makes the whole response
    # unreadable to the client, so refuse it here, with the key's place.
    if key.startswith("$"):
        raise EncodeError(f"Object key `{show_name(key)}`{_at(path)} starts with a '$', which Convex clients refuse")
    if len(key) > MAX_KEY_LENGTH or not all(32 <= ord(c) < 127 for c in key):
        raise EncodeError(
            f"Object key `{show_name(key)}`{_at(path)} is not one Convex clients accept "
            f"(printable ASCII, at most {MAX_KEY_LENGTH} characters); use the json format for other keys"
        )


_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def dumps(data: Any) -> bytes:
    """Compact JSON bytes of encoded data."""
    try:
        return _dumps(data).encode("utf-8")
    except (ValueError, UnicodeEncodeError) as exc:
        # A lone surrogate in a string, or an int beyond Python's digit limit for text.
        raise EncodeError(f"A value cannot be written as JSON ({type(exc).__name__})") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(raw: bytes) -> Any:
    """Parse a request body: strict UTF-8 JSON, without NaN / Infinity literals.

    ValueError (or RecursionError, for very deep nesting) says it is not valid.
    """
    text = raw.decode("utf-8")
    return json.loads(text, parse_constant=_no_constant)


__all__ = ["CLEAN", "ENCODED", "FORMATS", "EncodeError", "decode_args", "dumps", "encode", "loads"]
