"""Document ids: opaque strings that name their table.

Internally every table row has an integer key (``_rid``, never reused). The id users see
encodes the table's number and that key, plus a check character, so ``ctx.db.get(id)``
needs no table name, an id of the wrong table is refused, and a mistyped id is caught.
Table numbers are recorded in the database (``_ents_tables``) so ids stay valid when the
schema gains or loses tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from .errors import InvalidIdError
from .values import show

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
LETTERS = "bcdfghjkmnpqrstvwxz"  # table codes: two letters, so ids never look like numbers
_LETTER = {c: i for i, c in enumerate(LETTERS)}
_HEX = set("0123456789abcdef")
MAX_TABLES = len(LETTERS) ** 2
MIN_DIGITS = 5
#: the largest row key a table can hold (a signed 64-bit integer on both databases); an id
#: with a larger key was never issued, so it is refused like any other malformed id
MAX_RID = 2**63 - 1

# Fixed numbers for system tables; user tables are numbered from FIRST_USER_TABLE.
SYSTEM_TABLE_NUMBERS = {"_scheduled_functions": 1, "_storage": 2, "_cron_jobs": 3}
FIRST_USER_TABLE = 32


@dataclass(frozen=True)
class IdRef:
    """Marks a ``str`` annotation as an id of ``table`` (see :data:`Id`)."""

    table: str


class _IdFactory:
    """``Id["users"]`` is the type of an id of the table ``users``."""

    def __getitem__(self, table: str) -> Any:
        if not isinstance(table, str):
            raise TypeError(f'Id[...] takes a table name, e.g. Id["users"], not {table!r}')
        return Annotated[str, IdRef(table)]

    def __repr__(self) -> str:
        return "Id"


if TYPE_CHECKING:  # pragma: no cover - for type checkers, Id["t"] is a str
    class Id(str):
        def __class_getitem__(cls, table: str) -> type[str]: ...
else:
    Id = _IdFactory()


def _table_code(number: int) -> str:
    n = len(LETTERS)
    return LETTERS[number // n] + LETTERS[number % n]


def _check(number: int, rid: int) -> str:
    return ALPHABET[(rid * 7 + number * 13 + (rid >> 5)) % 32]


class IdCodec:
    """Encodes and decodes ids for one database's table numbering."""

    def __init__(self, numbers: dict[str, int]) -> None:
        self.numbers = dict(numbers)
        self.tables = {n: t for t, n in numbers.items()}
        self._prefix = {t: _table_code(n) for t, n in numbers.items()}
        # Ids are immutable strings and the same ones come back again and again (a job's
        # arguments, a parent's id): remember recent decodings. Bounded, so never a leak.
        self._decoded: dict[str, tuple[str, int]] = {}

    def encode(self, table: str, rid: int) -> str:
        number = self.numbers[table]
        return f"{self._prefix[table]}{rid:05x}{_check(number, rid)}"

    def encoder(self, table: str) -> Any:
        """A fast one-argument encoder for ``table`` (used when reading many rows)."""
        number = self.numbers[table]
        prefix = self._prefix[table]

        def encode(rid: int) -> str:
            return f"{prefix}{rid:05x}{ALPHABET[(rid * 7 + number * 13 + (rid >> 5)) % 32]}"

        return encode

    def decode(self, id: Any) -> tuple[str, int]:
        """Return ``(table, rid)`` for a well-formed id of a known table."""
        if isinstance(id, str):
            hit = self._decoded.get(id)
            if hit is not None:
                return hit
        found = self._decode(id)
        cache = self._decoded
        if len(cache) >= 4096:
            cache.clear()
        cache[str(id)] = found
        return found

    def _decode(self, id: Any) -> tuple[str, int]:
        if not isinstance(id, str):
            raise InvalidIdError(f"Expected an id (a string), got {_show(id)}", id=_safe(id))
        if len(id) < 3 + MIN_DIGITS or len(id) > 40:
            raise InvalidIdError(f"Invalid id `{_clip(id)}`: not an ents id", id=_clip(id))
        hi, lo = _LETTER.get(id[0]), _LETTER.get(id[1])
        body, check = id[2:-1], id[-1]
        if hi is None or lo is None or not set(body) <= _HEX or (len(body) > MIN_DIGITS and body[0] == "0"):
            raise InvalidIdError(f"Invalid id `{_clip(id)}`: not an ents id", id=_clip(id))
        number = hi * len(LETTERS) + lo
        rid = int(body, 16)
        table = self.tables.get(number)
        if rid > MAX_RID:
            raise InvalidIdError(f"Invalid id `{_clip(id)}`: not an ents id (its row key is out of range)", id=_clip(id))
        if table is None or _check(number, rid) != check:
            raise InvalidIdError(
                f"Invalid id `{_clip(id)}`: it does not belong to any table of this database",
                id=_clip(id),
            )
        return table, rid

    def decode_for(self, table: str, id: Any, *, what: str | None = None) -> int:
        """Return the row key of ``id``, which must be an id of ``table``."""
        try:
            actual, rid = self.decode(id)
        except InvalidIdError as exc:
            where = f" for {what}" if what else ""
            raise InvalidIdError(
                f'{exc.message}; expected an id of table "{table}"{where}',
                table=table,
                id=exc.id,
                field=what,
            ) from None
        if actual != table:
            where = f" for {what}" if what else ""
            raise InvalidIdError(
                f'Id `{id}` belongs to table "{actual}", but an id of table "{table}" '
                f"was expected{where}",
                table=table,
                id=id,
                field=what,
            )
        return rid

    def table_of(self, id: Any) -> str:
        return self.decode(id)[0]


def _clip(value: str) -> str:
    return value if len(value) <= 48 else value[:45] + "..."


def _safe(value: Any) -> str:
    return show(value, 48)


def _show(value: Any) -> str:
    return f"{type(value).__name__} {_safe(value)}"
