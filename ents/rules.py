"""Row-level security: Convex Ents' ``addEntRules``.

``App(schema, rules=fn)`` gives tables a *read* rule and a *write* rule. ``fn(ctx)`` runs
once per function call, the first time ``ctx.table`` needs a rule, and returns
``{"table": Rules(read=..., write=...)}``; it may read ``ctx.auth`` and read through
``ctx.skip_rules.table(...)`` (or ``ctx.db``) to find out who the viewer is.

* ``read(ent) -> bool`` hides ents from every read through ``ctx.table``: ``get`` returns
  None, ``get_x`` / ``edge_x`` raise :class:`EntNotFoundError`, queries and edges leave them
  out (``take(n)`` / ``first`` / ``unique`` look further for allowed ents), ``get_many``
  has None in their place. A page of ``paginate`` holds the allowed ents among those read
  for it, so it may hold fewer than asked (as in Convex Ents: a page costs a bounded read).
* ``write(change) -> bool`` allows or refuses each insert (``"create"``), patch or replace
  (``"update"``) and delete (``"delete"``), including the ents a delete cascades to. A patch,
  replace or delete of an ent the read rule hides is refused as well. A refusal raises
  :class:`RuleError` and changes nothing.

How it is wired: ``ctx.table`` of an App with rules reads and writes through a
:class:`RulesView` of the transaction, which ents and queries carry along (so their edges
and writes apply the rules too). The few places in ``query.py`` and ``deletion.py`` that
must consult the rules look for the view's ``rules`` attribute and call the :class:`RuleSet`
below; a plain transaction has none, so without rules (and through ``ctx.skip_rules``,
``ctx.db`` and ents' own machinery) nothing changes but one failed attribute lookup.
Writes go through the writer unchanged, with the view as their transaction: the checks come
first, and a write that can cascade (a delete, edges given to a patch or replace) runs in a
savepoint, since the ents it reaches are checked only as deletion reaches them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from . import deletion, writer
from .errors import ConfigurationError, EntNotFoundError, RuleError
from .query import CHUNK, Ent, Query, TableFactory, TableQuery, fetch_rows, make_ents

if TYPE_CHECKING:
    from .runtime import TableRuntime
    from .transaction import Transaction

Operation = Literal["create", "update", "delete"]
Q = TypeVar("Q", bound=Query)


@dataclass(frozen=True, slots=True)
class WriteChange:
    """What a write rule decides on.

    * ``operation``: ``"create"`` (insert), ``"update"`` (patch or replace), ``"delete"``;
    * ``ent``: the ent as it is now (update and delete), None for create;
    * ``value``: the document given to insert / replace, or the fields given to patch
      (``_id`` and ``_creation_time`` left out); None for delete.
    """

    operation: Operation
    ent: Any
    value: dict[str, Any] | None


class Rules:
    """The rules of one table: ``Rules(read=lambda ent: ..., write=lambda change: ...)``.

    Each is optional and must return ``True`` (allow) or ``False`` (refuse).
    """

    __slots__ = ("read", "write")

    def __init__(
        self,
        *,
        read: Callable[[Any], bool] | None = None,
        write: Callable[[WriteChange], bool] | None = None,
    ) -> None:
        for name, fn in (("read", read), ("write", write)):
            if fn is not None and not callable(fn):
                raise ConfigurationError(f"Rules({name}=...) takes a function, got {type(fn).__name__}")
        self.read = read
        self.write = write

    def __repr__(self) -> str:
        return f"Rules(read={self.read!r}, write={self.write!r})"


RulesFunction = Callable[[Any], Mapping[str, Rules]]


class SkipRules:
    """``ctx.skip_rules``: ``ctx.skip_rules.table(...)`` is ``ctx.table`` without rules."""

    __slots__ = ("table",)

    def __init__(self, tx: Transaction) -> None:
        self.table = TableFactory(tx)


class RulesView:
    """The transaction as ``ctx.table`` sees it when the App has rules.

    Every attribute (read or set) is the transaction's, except ``rules``; ents and queries
    read through the view keep it as their transaction, so that what they lead to (edges,
    writes, the ids an insert returns) applies the rules as well.
    """

    __slots__ = ("_tx", "rules")

    def __init__(self, tx: Transaction, rules: RuleSet) -> None:
        object.__setattr__(self, "_tx", tx)
        object.__setattr__(self, "rules", rules)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in RulesView.__slots__:
            # Setting ``rules`` on the transaction itself would apply them to every read.
            raise AttributeError(f"{name} of a RulesView cannot be changed")
        setattr(self._tx, name, value)


def rules_view(ctx: Any, tx: Transaction, fn: RulesFunction) -> Transaction:
    """The transaction ``ctx.table`` of one function call reads and writes through."""
    rules = RuleSet(fn, ctx, tx)
    return rules.view


def _public(value: dict[str, Any]) -> dict[str, Any]:
    """A copy of a written document for a rule: fields and edges, no system fields."""
    if "_id" in value or "_creation_time" in value:
        return {k: v for k, v in value.items() if k not in ("_id", "_creation_time")}
    return dict(value)


def _names(value: dict[str, Any]) -> str:
    """The field names of a refused document, for the message (never its values: they may be
    large, or not meant for logs)."""
    names = [f"`{k}`" for k in value if isinstance(k, str)][:10]
    more = ", ..." if len(value) > len(names) else ""
    return ", ".join(names) + more


class RuleSet:
    """The rules of one function call, built on first use, and the checks that apply them."""

    def __init__(self, fn: RulesFunction, ctx: Any, tx: Transaction) -> None:
        self._fn = fn
        self._ctx = ctx
        self.tx = tx
        self.view = cast("Transaction", RulesView(tx, self))
        self._tables: dict[str, Rules] | None = None
        self._building = False
        self._reach: dict[str, bool] = {}

    # -- the rules ---------------------------------------------------------------------

    def of(self, table: str) -> Rules | None:
        """The rules of ``table`` (None when it has none)."""
        tables = self._tables
        if tables is None:
            tables = self._build()
        return tables.get(table)

    def _build(self) -> dict[str, Rules]:
        if self._building:
            raise ConfigurationError(
                "The rules function read through ctx.table while the rules were being built; "
                "read through ctx.skip_rules.table(...) (or ctx.db) inside it"
            )
        self._building = True
        try:
            got = self._fn(self._ctx)
        finally:
            self._building = False
        if not isinstance(got, Mapping):
            raise ConfigurationError(
                f'The rules function must return a dict of table name to Rules(...), got {type(got).__name__}'
            )
        schema = self.tx.app.schema
        tables: dict[str, Rules] = {}
        for name, rules in got.items():
            table = schema.tables.get(name) if isinstance(name, str) else None
            if table is None or table.is_system or table.is_edge_table:
                known = ", ".join(f'"{n}"' for n in schema.user_tables) or "none"
                raise ConfigurationError(
                    f"The rules function returned rules for {name!r}, which is not a table of the schema "
                    f"(tables: {known})",
                    table=str(name),
                )
            if not isinstance(rules, Rules):
                raise ConfigurationError(
                    f'The rules of table "{name}" must be Rules(read=..., write=...), got {type(rules).__name__}',
                    table=name,
                )
            if rules.read is not None or rules.write is not None:
                tables[name] = rules
        self._tables = tables
        return tables

    def _decide(self, fn: Callable[[Any], Any], arg: Any, which: str, table: str) -> bool:
        result = fn(arg)
        if result is True or result is False:
            return result
        if inspect.iscoroutine(result):
            result.close()  # never awaited: say why instead of warning about it
            raise ConfigurationError(
                f'The {which} rule of table "{table}" is a coroutine function; rules are plain '
                "functions returning True or False",
                table=table,
            )
        # Anything else (None from a missing return, a truthy object) is a mistake that
        # must neither let an ent through nor hide it silently.
        raise ConfigurationError(
            f'The {which} rule of table "{table}" returned {type(result).__name__}, not True or False',
            table=table,
        )

    def readable(self, ent: Ent) -> bool:
        """Whether the read rule lets this call see ``ent`` (an ent read through the view)."""
        rules = self.of(ent._rt.name)
        if rules is None or rules.read is None:
            return True
        return self._decide(rules.read, ent, "read", ent._rt.name)

    def _raw(self, q: Q) -> Q:
        """The same query without rules (on the transaction itself)."""
        return cast(Q, q._clone(tx=self.tx))

    def _bind(self, ent: Ent | None) -> Ent | None:
        """``ent`` (read without rules) as an ent of the view, so its edges apply them."""
        if ent is not None:
            ent._tx = self.view
        return ent

    # -- reads -------------------------------------------------------------------------

    def visible(self, ent: Ent) -> Ent | None:
        """``ent`` if the read rule allows it, else None."""
        return ent if self.readable(ent) else None

    def require_readable(self, ent: Ent) -> Ent:
        """``ent``, or EntNotFoundError (worded as Convex Ents) if the read rule hides it."""
        if not self.readable(ent):
            raise EntNotFoundError(
                f'Document cannot be read with id `{ent._id}` in table "{ent._rt.name}"',
                table=ent._rt.name,
                id=ent._id,
            )
        return ent

    def rows(self, q: Query, limit: int | None, after: list[Any] | None) -> Iterator[list[tuple[Any, ...]]]:
        """``q._rows(limit, after)`` with the rows the read rule hides left out: ``limit``
        counts allowed rows, reading on past hidden ones as Convex Ents' ``take`` does."""
        raw = self._raw(q)
        rules = self.of(q._rt.name)
        if rules is None or rules.read is None:
            yield from raw._rows(limit, after)
            return
        if limit is None:
            for rows in raw._rows(None, after):
                allowed = self._allowed(q, rows)
                if allowed:
                    yield allowed
            return
        remaining = limit
        ask = max(limit, 1)
        while remaining > 0:
            seen = 0
            last: tuple[Any, ...] | None = None
            for rows in raw._rows(ask, after):
                seen += len(rows)
                last = rows[-1]
                allowed = self._allowed(q, rows)[:remaining]
                if allowed:
                    remaining -= len(allowed)
                    yield allowed
                    if remaining <= 0:
                        return
            if seen < ask or last is None:
                return  # the query is exhausted
            after = raw._key_of(last)
            ask = min(ask * 2, CHUNK)  # hidden ents were met: read on in growing chunks

    def _allowed(self, q: Query, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        ents = make_ents(q._rt, [q._row_of(r) for r in rows], self.view)
        return [row for row, ent in zip(rows, ents, strict=True) if self.readable(ent)]

    def paginate(self, q: Query, opts: dict[str, Any]) -> dict[str, Any]:
        """A page read as without rules, then the ents the read rule hides left out: the
        cursor and ``is_done`` are those of the rows read, so pages stay exact and stable."""
        page = self._raw(q).paginate(opts)
        ents = [self._bind(e) for e in page["page"]]
        page["page"] = [e for e in ents if e is not None and self.readable(e)]
        return page

    def get(self, q: TableQuery, args: tuple[Any, ...]) -> Ent | None:
        ent = self._bind(self._raw(q).get(*args))
        return ent if ent is not None and self.readable(ent) else None

    def get_x(self, q: TableQuery, args: tuple[Any, ...]) -> Ent:
        ent = self._bind(self._raw(q).get_x(*args))
        assert ent is not None
        return self.require_readable(ent)

    def get_many(self, q: TableQuery, args: tuple[Any, ...]) -> list[Ent | None]:
        ents = [self._bind(e) for e in self._raw(q).get_many(*args)]
        return [e if e is not None and self.readable(e) else None for e in ents]

    def get_many_x(self, q: TableQuery, args: tuple[Any, ...]) -> list[Ent]:
        ents = [self._bind(e) for e in self._raw(q).get_many_x(*args)]
        return [self.require_readable(e) for e in ents if e is not None]

    # -- writes ------------------------------------------------------------------------

    def _allow_create(self, rt: TableRuntime, value: Any, index: int | None = None) -> None:
        rules = self.of(rt.name)
        if rules is None or rules.write is None or not isinstance(value, dict):
            return  # a value that is not a document is refused by the writer, with its error
        if not self._decide(rules.write, WriteChange("create", None, _public(value)), "write", rt.name):
            where = "" if index is None else f" (document {index} of insert_many)"
            raise RuleError(
                f'Cannot insert into table "{rt.name}": the write rule refused the document with '
                f"fields {_names(value)}{where}",
                table=rt.name,
            )

    def insert(self, q: TableQuery, value: dict[str, Any]) -> str:
        writer._check_writable(self.tx, q._rt, "insert into")
        self._allow_create(q._rt, value)
        return writer.insert(self.view, q._rt, value)

    def insert_many(self, q: TableQuery, values: Sequence[dict[str, Any]]) -> list[str]:
        writer._check_writable(self.tx, q._rt, "insert into")
        if isinstance(values, Sequence) and not isinstance(values, (str, bytes, dict)):
            for i, value in enumerate(values):  # all of them before the first insert
                self._allow_create(q._rt, value, i)
        return writer.insert_many(self.view, q._rt, values)

    def _allow_update(self, ent: Ent, value: Any, what: str) -> bool:
        """Check the read and write rules for a patch or replace of ``ent``; whether the
        write may reach other ents' rules (a cascade), and so needs a savepoint."""
        rt = ent._rt
        rules = self.of(rt.name)
        if rules is None:
            return False
        rid = ent._row[0]
        row = self.tx.fetchone(rt.sql_get, (rid,))
        if row is None:
            return False  # the writer raises EntNotFoundError
        current = make_ents(rt, [row], self.view)[0]  # as it is now, not as ``ent`` was read
        id = rt.encode_rid(rid)
        if rules.read is not None and not self._decide(rules.read, current, "read", rt.name):
            raise RuleError(
                f'Cannot update document with ID "{id}" in table "{rt.name}": the read rule does not allow '
                "reading it",
                table=rt.name,
                id=id,
            )
        if rules.write is not None and isinstance(value, dict):
            if not self._decide(rules.write, WriteChange("update", current, _public(value)), "write", rt.name):
                raise RuleError(
                    f'Cannot update document with ID "{id}" in table "{rt.name}": the write rule refused '
                    f"{what} {_names(value)}",
                    table=rt.name,
                    id=id,
                )
        return True

    def _reaches_rules(self, table: str) -> bool:
        """Whether deleting an ent of ``table`` can reach an ent of a table with rules (its
        own table again included) along the edges deletion follows; an over-estimate."""
        got = self._reach.get(table)
        if got is None:
            ruled = self._tables if self._tables is not None else self._build()
            schema = self.tx.app.schema.tables
            seen: set[str] = set()
            stack = [table]
            got = False
            while stack and not got:
                for edge in schema[stack.pop()].edges.values():
                    # ents pointing here go (hard or soft), and so does the other end of a
                    # stored edge marked deletion="hard" or "soft"
                    if edge.kind in ("ref", "many_field") or (edge.kind == "field" and edge.deletion is not None):
                        if edge.to in ruled:
                            got = True
                            break
                        if edge.to not in seen and edge.to in schema:
                            seen.add(edge.to)
                            stack.append(edge.to)
            self._reach[table] = got
        return got

    def _needs_savepoint(self, rt: TableRuntime) -> bool:
        """Whether a delete from ``rt`` may meet a rule after its first statement: the ents it
        reaches are checked as deletion reaches them, and a scheduled deletion schedules its
        job before its ent is checked. Otherwise every check comes before any write."""
        return rt.table.deletion == "scheduled" or self._reaches_rules(rt.name)

    def _may_cascade(self, rt: TableRuntime, value: Any) -> bool:
        # Plain fields never reach another ent; edges given with the write may delete
        # children, whose own rules are checked as they go.
        return (
            isinstance(value, dict)
            and not value.keys() <= rt.plain_names
            and self._reaches_rules(rt.name)
        )

    def patch(self, ent: Ent, value: dict[str, Any]) -> str:
        rt = ent._rt
        writer._check_writable(self.tx, rt, "patch a document of")
        self._allow_update(ent, value, "the change of")
        if self._may_cascade(rt, value):
            with self.tx.savepoint():
                return writer.patch(self.view, rt, ent._row[0], value)
        return writer.patch(self.view, rt, ent._row[0], value)

    def replace(self, ent: Ent, value: dict[str, Any]) -> str:
        rt = ent._rt
        writer._check_writable(self.tx, rt, "replace a document of")
        self._allow_update(ent, value, "the replacement with fields")
        if self._may_cascade(rt, value):
            with self.tx.savepoint():
                return writer.replace(self.view, rt, ent._row[0], value)
        return writer.replace(self.view, rt, ent._row[0], value)

    def delete(self, ent: Ent) -> str:
        """``ent.delete()``: every ent it deletes (itself and its cascade) is checked by
        :meth:`check_delete` as deletion reaches it; a refusal undoes the whole delete."""
        if not self._needs_savepoint(ent._rt):
            return deletion.delete_ent(self.view, ent._rt, ent._row[0])
        with self.tx.savepoint():
            return deletion.delete_ent(self.view, ent._rt, ent._row[0])

    def delete_query(self, q: Query) -> int:
        """``query.delete()``: the ents the query yields (those the read rule allows), each
        checked as :meth:`delete` does."""
        writer._check_writable(self.tx, q._rt, "delete documents of")
        rids = [q._row_of(r)[0] for rows in q._rows(q._limit) for r in rows]
        if not self._needs_savepoint(q._rt):
            return deletion.delete_many(self.view, q._rt, rids)
        with self.tx.savepoint():
            return deletion.delete_many(self.view, q._rt, rids)

    def check_delete(self, rt: TableRuntime, column: str, keys: list[Any]) -> None:
        """Called by deletion before it deletes (or soft-deletes) the rows of ``rt`` whose
        ``column`` is in ``keys``: each must be readable and its deletion allowed, as Convex
        Ents checks every ent a delete cascades to."""
        rules = self.of(rt.name)
        if rules is None or not keys:
            return
        ents = make_ents(rt, fetch_rows(self.tx, rt, column, keys), self.view)
        for ent in ents:
            id = ent._id
            if rules.read is not None and not self._decide(rules.read, ent, "read", rt.name):
                raise RuleError(
                    f'Cannot delete from table "{rt.name}" with ID "{id}": the read rule does not allow '
                    "reading it",
                    table=rt.name,
                    id=id,
                )
            if rules.write is not None and not self._decide(
                rules.write, WriteChange("delete", ent, None), "write", rt.name
            ):
                raise RuleError(
                    f'Cannot delete from table "{rt.name}" with ID "{id}": the write rule refused it',
                    table=rt.name,
                    id=id,
                )


__all__ = ["Rules", "WriteChange", "RuleSet", "RulesView", "SkipRules", "rules_view", "RulesFunction"]
