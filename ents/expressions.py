"""Convex's query expression builders, compiled to parameterised SQL.

``filter(lambda q: q.and_(q.gt(q.field("age"), 18), q.eq(q.field("team"), team_id)))``
uses :class:`FilterBuilder`; ``ctx.table(t, "by_x", lambda q: q.eq("x", 1).gt("y", 2))``
uses :class:`IndexRangeBuilder`. In filters, plain Python values are literals and
``q.field("a.b")`` reads a (possibly nested) field; in index ranges, field names are
strings and must follow the index's field order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ValidationError
from .values import check_str, show

if TYPE_CHECKING:
    from .runtime import TableRuntime


class Expr:
    """A filter expression node."""

    def compile(self, ctx: _Compiler) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def __bool__(self) -> bool:
        raise ValidationError(
            "Filter expressions cannot be used as Python booleans; combine them with "
            "q.and_(...), q.or_(...) and q.not_(...) instead of `and`, `or` and `not`"
        )


@dataclass(eq=False)
class Field(Expr):
    path: str

    def compile(self, ctx: _Compiler) -> str:
        return ctx.field_sql(self.path)


@dataclass(eq=False)
class Literal(Expr):
    value: Any

    def compile(self, ctx: _Compiler) -> str:
        return ctx.literal(self.value)


@dataclass(eq=False)
class Op(Expr):
    op: str
    args: tuple[Expr, ...]

    def compile(self, ctx: _Compiler) -> str:
        op = self.op
        if op in ("and", "or"):
            if not self.args:
                return "1=1" if op == "and" else "1=0"
            joiner = " AND " if op == "and" else " OR "
            return "(" + joiner.join(a.compile(ctx) for a in self.args) + ")"
        if op == "not":
            return f"(NOT {self.args[0].compile(ctx)})"
        if op == "neg":
            return f"(-{self.args[0].compile(ctx)})"
        left, right = self.args
        if op in _ORDER and isinstance(left, Literal) and isinstance(right, Literal):
            # Nothing to ask the database (which could not even type two bare parameters).
            return "(1=1)" if _fold(op, left.value, right.value) else "(1=0)"
        if op in ("lt", "lte", "gt", "gte"):
            return _compare(ctx, op, left, right)
        lhs = ctx.operand(left, right)
        rhs = ctx.operand(right, left)
        if op == "eq":
            # Null-safe, like Convex (a missing field equals None).
            return "(" + ctx.dialect.is_not_distinct(lhs, rhs) + ")"
        if op == "neq":
            return "(" + ctx.dialect.is_distinct(lhs, rhs) + ")"
        if op == "div":
            return f"(CAST({lhs} AS DOUBLE PRECISION) / {rhs})"
        sym = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "add": "+", "sub": "-", "mul": "*", "mod": ctx.dialect.mod_op}[op]
        return f"({lhs} {sym} {rhs})"


_ORDER = {"eq", "neq", "lt", "lte", "gt", "gte"}


def _rank(value: Any) -> tuple[int, Any]:
    """Convex's order of values: missing/None, then numbers, booleans, strings."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (2, value)
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, str):
        return (3, value)
    raise ValidationError(
        f"Filters compare scalar values (None, bool, number, string); got {type(value).__name__}"
    )


def _fold(op: str, a: Any, b: Any) -> bool:
    x, y = _rank(a), _rank(b)
    return {"eq": x == y, "neq": x != y, "lt": x < y, "lte": x <= y, "gt": x > y, "gte": x >= y}[op]


def _compare(ctx: _Compiler, op: str, left: Expr, right: Expr) -> str:
    """An ordering comparison with Convex's semantics, as a plain SQL boolean.

    A missing value (None) sorts before every other value, and the result is never SQL's
    unknown: ``NOT (age > 18)`` must keep the documents without an age, which
    ``NOT (NULL > 18)`` would drop.
    """
    if op in ("gt", "gte"):  # a > b is b < a
        left, right = right, left
        op = "lt" if op == "gt" else "lte"
    sym = "<" if op == "lt" else "<="
    left_lit = isinstance(left, Literal)
    right_lit = isinstance(right, Literal)
    if right_lit and right.value is None:  # type: ignore[attr-defined]
        # x < None holds for nothing; x <= None for x missing
        return "(1=0)" if op == "lt" else f"({ctx.operand(left, right)} IS NULL)"
    if left_lit and left.value is None:  # type: ignore[attr-defined]
        # None <= x holds for everything; None < x for x present
        return "(1=1)" if op == "lte" else f"({ctx.operand(right, left)} IS NOT NULL)"

    # Each occurrence is compiled on its own, in textual order, so that parameters
    # (literals, JSON paths) are bound once per occurrence.
    def side(e: Expr, other: Expr) -> str:
        return ctx.operand(e, other)

    if right_lit:
        null = side(left, right)
        return f"({null} IS NULL OR {side(left, right)} {sym} {side(right, left)})"
    if left_lit:
        null = side(right, left)
        return f"({null} IS NOT NULL AND {side(left, right)} {sym} {side(right, left)})"
    if op == "lt":
        r_null = side(right, left)
        l_null = side(left, right)
        return f"({r_null} IS NOT NULL AND ({l_null} IS NULL OR {side(left, right)} < {side(right, left)}))"
    l_null = side(left, right)
    r_null = side(right, left)
    return f"({l_null} IS NULL OR ({r_null} IS NOT NULL AND {side(left, right)} <= {side(right, left)}))"


def _expr(value: Any) -> Expr:
    return value if isinstance(value, Expr) else Literal(value)


class FilterBuilder:
    """The ``q`` given to ``filter``: Convex's filter builder in snake_case."""

    def field(self, path: str) -> Expr:
        if not isinstance(path, str) or not path:
            raise ValidationError(f"q.field() takes a field name or dotted path, got {show(path)}")
        check_str(path, "q.field()")  # a lone surrogate cannot be sent to the database
        return Field(path)

    def eq(self, a: Any, b: Any) -> Expr:
        return Op("eq", (_expr(a), _expr(b)))

    def neq(self, a: Any, b: Any) -> Expr:
        return Op("neq", (_expr(a), _expr(b)))

    def lt(self, a: Any, b: Any) -> Expr:
        return Op("lt", (_expr(a), _expr(b)))

    def lte(self, a: Any, b: Any) -> Expr:
        return Op("lte", (_expr(a), _expr(b)))

    def gt(self, a: Any, b: Any) -> Expr:
        return Op("gt", (_expr(a), _expr(b)))

    def gte(self, a: Any, b: Any) -> Expr:
        return Op("gte", (_expr(a), _expr(b)))

    def and_(self, *exprs: Any) -> Expr:
        return Op("and", tuple(_expr(e) for e in exprs))

    def or_(self, *exprs: Any) -> Expr:
        return Op("or", tuple(_expr(e) for e in exprs))

    def not_(self, expr: Any) -> Expr:
        return Op("not", (_expr(expr),))

    def add(self, a: Any, b: Any) -> Expr:
        return Op("add", (_expr(a), _expr(b)))

    def sub(self, a: Any, b: Any) -> Expr:
        return Op("sub", (_expr(a), _expr(b)))

    def mul(self, a: Any, b: Any) -> Expr:
        return Op("mul", (_expr(a), _expr(b)))

    def div(self, a: Any, b: Any) -> Expr:
        return Op("div", (_expr(a), _expr(b)))

    def mod(self, a: Any, b: Any) -> Expr:
        return Op("mod", (_expr(a), _expr(b)))

    def neg(self, a: Any) -> Expr:
        return Op("neg", (_expr(a),))


class _Compiler:
    """Compiles expressions against one table, collecting parameters in order."""

    def __init__(self, rt: TableRuntime, alias: str = "") -> None:
        self.rt = rt
        self.dialect = rt.dialect
        self.alias = alias
        self.params: list[Any] = []

    def column(self, name: str) -> str:
        q = self.dialect.q(name)
        return f"{self.alias}.{q}" if self.alias else q

    def field_sql(self, path: str) -> str:
        rt = self.rt
        path = rt.table.path_aliases.get(path, path)
        if path == "_id":
            return self.column("_rid")
        if path in rt.columns:
            if self._is_json(path):
                # The column holds JSON text; compare the value it encodes, so that numbers
                # order as numbers and `true` equals True.
                return self.dialect.json_extract(self.column(path), [], self.params)
            return self.column(path)
        head, _, rest = path.partition(".")
        spec = rt.table.fields.get(head)
        if spec is None or not rest:
            raise ValidationError(
                f'Unknown field "{path}" in a filter on table "{rt.name}"', table=rt.name, field=path
            )
        if spec.kind != "json":
            raise ValidationError(
                f'Field "{head}" of table "{rt.name}" is not an object, so "{path}" cannot be read',
                table=rt.name,
                field=path,
            )
        return self.dialect.json_extract(self.column(head), rest.split("."), self.params)

    def _is_json(self, column: str) -> bool:
        spec = self.rt.table.fields.get(column)
        return spec is not None and spec.kind == "json"

    def literal(self, value: Any) -> str:
        if value is None:
            return "NULL"
        if not isinstance(value, (bool, int, float, str)):
            raise ValidationError(
                f"Filters compare scalar values (None, bool, number, string); got {type(value).__name__}",
                table=self.rt.name,
            )
        if isinstance(value, float) and value != value:
            raise ValidationError("Filters cannot compare with NaN", table=self.rt.name)
        if isinstance(value, str) and "\x00" in value:
            raise ValidationError("Filter strings may not contain NUL characters", table=self.rt.name)
        if isinstance(value, str):
            check_str(value, "a filter")  # lone surrogates: the driver could not encode them
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            raise ValidationError(f"Filter integer {show(value)} does not fit in 64 bits", table=self.rt.name)
        self.params.append(value)
        return self.dialect.param

    def operand(self, expr: Expr, other: Expr) -> str:
        """Compile ``expr``; a literal compared with a field is converted to its storage form."""
        if isinstance(expr, Literal) and isinstance(other, Field):
            value = expr.value
            if value is None:
                return "NULL"
            path = self.rt.table.path_aliases.get(other.path, other.path)
            if path == "_id" or (path in self.rt.columns and not self._is_json(path)):
                self.params.append(self.rt.filter_value(path, value))
                return self.dialect.param
            if "." in path or path in self.rt.columns:
                self.literal(value)  # validates the value
                self.params.pop()
                sql, param = self.dialect.json_value_param(value)
                self.params.append(param)
                return sql
        return expr.compile(self)


def compile_filter(rt: TableRuntime, fn: Callable[[FilterBuilder], Any], alias: str = "") -> tuple[str, list[Any]]:
    expr = fn(FilterBuilder())
    if isinstance(expr, bool):
        return ("1=1" if expr else "1=0"), []
    if not isinstance(expr, Expr):
        raise ValidationError(
            f'filter() on table "{rt.name}" must return an expression built with q '
            f"(e.g. q.eq(q.field(\"name\"), \"Ada\")), got {type(expr).__name__}; to filter with "
            "arbitrary Python, iterate or map the query instead",
            table=rt.name,
        )
    c = _Compiler(rt, alias)
    return expr.compile(c), c.params


@dataclass
class RangeBound:
    field: str
    op: str
    value: Any


class IndexRangeBuilder:
    """The ``q`` given to index range expressions: ``q.eq("a", 1).gte("b", 2).lt("b", 5)``."""

    def __init__(self, table: str, index: str, fields: tuple[str, ...]) -> None:
        self._table = table
        self._index = index
        self._fields = fields
        self.eqs: list[tuple[str, Any]] = []
        self.lower: RangeBound | None = None
        self.upper: RangeBound | None = None

    def _next_field(self, name: str, op: str) -> None:
        pos = len(self.eqs)
        if self.lower is not None or self.upper is not None:
            current = (self.lower or self.upper)
            assert current is not None
            if op == "eq" or name != current.field:
                raise ValidationError(
                    f'Index range on "{self._table}"."{self._index}": after a range on '
                    f'"{current.field}" only the other bound of "{current.field}" may follow',
                    table=self._table,
                    field=name,
                )
            return
        if pos >= len(self._fields) or self._fields[pos] != name:
            expected = self._fields[pos] if pos < len(self._fields) else None
            what = f'the next field of the index is "{expected}"' if expected else "all its fields are already constrained"
            raise ValidationError(
                f'Index range on "{self._table}"."{self._index}" ({", ".join(self._fields)}) cannot '
                f'constrain "{name}" here: {what}',
                table=self._table,
                field=name,
            )

    def eq(self, field: str, value: Any) -> IndexRangeBuilder:
        self._next_field(field, "eq")
        self.eqs.append((field, value))
        return self

    def _bound(self, field: str, op: str, value: Any, lower: bool) -> IndexRangeBuilder:
        self._next_field(field, op)
        if lower:
            if self.lower is not None:
                raise ValidationError(f'Index range on "{self._table}"."{self._index}" has two lower bounds', table=self._table)
            self.lower = RangeBound(field, op, value)
        else:
            if self.upper is not None:
                raise ValidationError(f'Index range on "{self._table}"."{self._index}" has two upper bounds', table=self._table)
            self.upper = RangeBound(field, op, value)
        return self

    def gt(self, field: str, value: Any) -> IndexRangeBuilder:
        return self._bound(field, ">", value, True)

    def gte(self, field: str, value: Any) -> IndexRangeBuilder:
        return self._bound(field, ">=", value, True)

    def lt(self, field: str, value: Any) -> IndexRangeBuilder:
        return self._bound(field, "<", value, False)

    def lte(self, field: str, value: Any) -> IndexRangeBuilder:
        return self._bound(field, "<=", value, False)


#: index fields stored in another column: the by_id index ranges over the row key
_KEY_COLUMN = {"_id": "_rid"}


def compile_range(
    rt: TableRuntime,
    index: str,
    fields: tuple[str, ...],
    fn: Callable[[Any], Any] | None,
    alias: str = "",
    creation_bound: Callable[[str, Any], tuple[str, list[Any]]] | None = None,
    eq_params: list[Any] | None = None,
) -> tuple[list[str], list[Any]]:
    """SQL conditions (ANDed) and parameters for an index range expression.

    ``eq_params`` receives the parameter of each leading field fixed by ``eq`` (None for
    one that is not a plain parameter), in index order.

    ``creation_bound(op, value)`` adds a condition of its own next to each comparison of
    ``_creation_time`` with a value (``op`` is ``=``, ``>``, ``>=``, ``<`` or ``<=``).
    """
    if fn is None:
        return [], []
    builder = IndexRangeBuilder(rt.name, index, fields)
    out = fn(builder)
    if out is not builder and out is not None:
        raise ValidationError(
            f'The index range for "{rt.name}"."{index}" must return q (e.g. lambda q: q.eq("x", 1))',
            table=rt.name,
        )
    conds: list[str] = []
    params: list[Any] = []
    c = _Compiler(rt, alias)
    for name, value in builder.eqs:
        col = rt.index_expr(name, c.column(_KEY_COLUMN.get(name, name)))
        if value is None:
            conds.append(f"{col} IS NULL")
            param = None
        else:
            mark, param = rt.index_param(name, value)
            conds.append(f"{col} = {mark}")
            params.append(param)
            if creation_bound is not None and name == "_creation_time":
                extra, extra_params = creation_bound("=", value)
                conds.append(extra)
                params += extra_params
            if mark != rt.dialect.param:
                param = None
        if eq_params is not None:
            eq_params.append(param)
    for bound in (builder.lower, builder.upper):
        if bound is None:
            continue
        col = rt.index_expr(bound.field, c.column(_KEY_COLUMN.get(bound.field, bound.field)))
        if bound.value is None:
            # NULL sorts first: x > NULL means "x is set"; x < NULL matches nothing.
            if bound.op in (">", ">="):
                conds.append(f"{col} IS NOT NULL" if bound.op == ">" else "1=1")
            else:
                conds.append("1=0" if bound.op == "<" else f"{col} IS NULL")
            continue
        mark, param = rt.index_param(bound.field, bound.value)
        cond = f"{col} {bound.op} {mark}"
        if bound.op in ("<", "<="):
            cond = f"({col} IS NULL OR {cond})"
        conds.append(cond)
        params.append(param)
        if creation_bound is not None and bound.field == "_creation_time":
            extra, extra_params = creation_bound(bound.op, bound.value)
            conds.append(extra)
            params += extra_params
    return conds, params
