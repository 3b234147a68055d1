"""Bad input: random and hostile values thrown at every entry point (hypothesis).

The only allowed outcomes are success or an ``EntsError`` subclass with a message (never a
raw sqlite3 / psycopg / pydantic / TypeError / RecursionError), and a call that fails
changes nothing: a dump of every table is the same before and after. Hostile values
include SQL metacharacters, lone surrogates, NUL, huge and deeply nested values, NaN and
infinities, integers beyond 64 bits, odd Python objects and ids of the wrong table.

Runs on every backend of ``ENTS_TEST_BACKENDS``, with fewer examples on PostgreSQL (each
example is a few round trips). ``HYPOTHESIS_PROFILE``-style tuning is by
``ENTS_BAD_INPUT_EXAMPLES`` (default 40 per test); ``ENTS_SOAK=N`` with ``-m slow`` runs every
property again with N/10 times as many examples (``test_bad_input_soak``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from enum import IntEnum
from typing import Any, Literal, Optional

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from ents import App, EntsError, Id, ValidationError, define_ent, define_ent_schema
from ents.testing import FakeClock

EXAMPLES = int(os.environ.get("ENTS_BAD_INPUT_EXAMPLES", "40"))


_SCALE = [1]  # raised by the soak


def examples(backend: str, n: int | None = None) -> int:
    n = (n or EXAMPLES) * _SCALE[0]
    return max(5, n // 4) if backend == "postgres" else n


def run_examples(backend: str, n: int | None = None) -> Callable[[Any], Any]:
    """Settings for an inner @given test (runs once per outer test, on its app)."""
    return settings(
        max_examples=examples(backend, n),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# -- hostile values ----------------------------------------------------------------------------

SQLISH = [
    "'; DROP TABLE things; --",
    '"; DROP TABLE "things"; --',
    "' OR '1'='1",
    "?",
    "%s",
    "%(x)s",
    "$1",
    "\\",
    "\\x00",
    "*/",
    "/*",
    "--",
    "NULL",
    "$bytes",
    "json_extract",
    "_id",
    "_creation_time",
    "a.b",
    "a..b",
    "[0]",
    "$.a",
]
WEIRD_TEXT = ["", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "\u202e", "😀", "\ufeff", "\r\n", "é" * 3]


def surrogate_text() -> st.SearchStrategy[str]:
    return st.text(alphabet=st.characters(exclude_categories=()), max_size=8)


hostile_text = st.one_of(
    st.text(max_size=20),
    surrogate_text(),
    st.sampled_from(SQLISH + WEIRD_TEXT),
    st.sampled_from([70_000, 1_000_000]).map(lambda n: "x" * n),
)


#: an integer whose repr() raises ValueError (more than 4300 digits)
HUGE = 10**5000


class Color(IntEnum):
    RED = 1


class Model(BaseModel):
    x: int


def _recursive_list() -> list[Any]:
    a: list[Any] = []
    a.append(a)
    return a


def _deep(n: int, kind: str) -> Any:
    v: Any = 1
    for _ in range(n):
        v = [v] if kind == "list" else {"k": v}
    return v


ODD_OBJECTS: list[Callable[[], Any]] = [
    object,
    lambda: object,
    set,
    lambda: {1, 2},
    lambda: frozenset([1]),
    lambda: (1, 2),
    lambda: Decimal("1.5"),
    lambda: Decimal("NaN"),
    lambda: datetime.now(UTC),
    lambda: 1j,
    lambda: Color.RED,
    lambda: bytearray(b"ab"),
    lambda: memoryview(b"ab"),
    lambda: Model(x=1),
    lambda: (lambda: 1),
    lambda: iter([1]),
    lambda: {1: "int key"},
    lambda: {None: 1},
    lambda: {("t",): 1},
    lambda: {"$bytes": "not base64!"},
    lambda: {"$x": 1},
    _recursive_list,
    lambda: _deep(100, "list"),
    lambda: _deep(100, "dict"),
    lambda: _deep(60, "list"),
    lambda: _deep(3000, "list"),  # deeper than repr() can go
    lambda: _deep(3000, "dict"),
    lambda: HUGE,  # more digits than repr() or json may print
    lambda: -HUGE,
    lambda: "y" * 2_000_000,
    lambda: list(range(50_000)),
    lambda: b"\x00\xff" * 100_000,
    lambda: type,
    lambda: Ellipsis,
    lambda: NotImplemented,
]

hostile_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**30, -(10**100), 10**400, -(10**400)]),
    st.sampled_from([1, -1]).map(lambda sign: sign * HUGE),  # mapped: hypothesis reprs sampled_from's list
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324]),
    hostile_text,
    st.binary(max_size=20),
)
hostile_json = st.recursive(
    hostile_scalar,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(hostile_text, children, max_size=3),
    max_leaves=12,
)
hostile_value = st.one_of(hostile_json, st.sampled_from(ODD_OBJECTS).map(lambda make: make()))


# -- database dumps ----------------------------------------------------------------------------


def dump(app: App) -> dict[str, list[str]]:
    """Every row of every table (user, edge and system tables), in a stable order."""

    def body(tx: Any) -> dict[str, list[str]]:
        out = {}
        for name, rt in app.runtimes.items():
            out[name] = sorted(repr(tuple(r)) for r in tx.fetchall(f"SELECT * FROM {rt.q_table}"))
        return out

    return app._transact(body, write=False)  # type: ignore[no-any-return]


def attempt(app: App, fn: Callable[[], Any]) -> tuple[bool, Any]:
    """Run ``fn``; success, or an EntsError with a message and no change to the database."""
    before = dump(app)
    try:
        return True, fn()
    except EntsError as exc:
        assert str(exc).strip(), f"{type(exc).__name__} without a message"
        after = dump(app)
        assert after == before, f"a failed call ({type(exc).__name__}: {exc}) changed the database"
        return False, exc
    # Any other exception propagates and fails the test with its traceback.


# -- schemas used below ---------------------------------------------------------------------------


def things_schema() -> Any:
    return define_ent_schema(
        {
            "things": define_ent(
                {
                    "s": str,
                    "i": int,
                    "f": float,
                    "b": bool,
                    "by": bytes,
                    "l": list[Any],
                    "d": dict[str, Any],
                    "o": Optional[str],  # noqa: UP045
                    "lit": Literal["a", "b", 3],
                    "any": Any,
                    "m": Model | None,
                    "li": list[int] | None,
                }
            )
            .field("u", str, unique=True, default="")
            .field("n", int, index=True, default=0)
            .edges("parts", ref=True)
            .edge("job", to="_scheduled_functions", deletion="hard"),
            "parts": define_ent({"name": str}).edge("thing"),
            "others": define_ent({"x": int}),
        }
    )


GOOD = {"s": "s", "i": 1, "f": 1.5, "b": True, "by": b"x", "l": [], "d": {}, "o": None, "lit": "a", "any": None, "m": None, "li": None}


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, BaseModel):
        return _equal(a.model_dump(), b)
    return bool(a == b) and type(a) in (type(b), int, float) if not isinstance(a, bool) else a is b


# -- field values ---------------------------------------------------------------------------------


def test_hostile_field_values_on_insert_patch_replace(make_app: Any, backend: str):
    app = make_app(things_schema())
    keep = app.run(lambda ctx: ctx.table("things").insert({**GOOD, "u": "keep"}))

    @run_examples(backend)
    @given(
        values=st.dictionaries(st.sampled_from([*GOOD, "u", "n", "job_id", "parts", "nope", "_id", "_creation_time", "deletion_time"]), hostile_value, max_size=4),
        op=st.sampled_from(["insert", "patch", "replace", "insert_many"]),
    )
    def check(values: dict[str, Any], op: str) -> None:
        doc = {**GOOD, **values}
        table = lambda ctx: ctx.table("things")  # noqa: E731
        if op == "insert":
            ok, id = attempt(app, lambda: app.run(lambda ctx: table(ctx).insert(doc)))
        elif op == "insert_many":
            ok, ids = attempt(app, lambda: app.run(lambda ctx: table(ctx).insert_many([{**GOOD, "u": "other"}, doc])))
            id = ids[1] if ok else None
        elif op == "patch":
            ok, _ = attempt(app, lambda: app.run(lambda ctx: table(ctx).get_x(keep).patch(values)))
            id = keep
        else:
            ok, _ = attempt(app, lambda: app.run(lambda ctx: table(ctx).get_x(keep).replace({**doc, "u": doc.get("u", "keep")})))
            id = keep
        if ok:
            stored = app.run(lambda ctx: ctx.table("things").get_x(id).doc())
            for k, v in values.items():
                if k == "f" and type(v) is int:  # a float field stores an int as a float
                    assert stored[k] == v and type(stored[k]) is float, (k, v, stored[k])
                elif k in GOOD and k not in ("m",) and type(v) in (str, int, bytes, bool):
                    assert stored[k] == v and type(stored[k]) is type(v), (k, v, stored[k])
            # Undo so that unique values do not pile up between examples.
            if op in ("insert", "insert_many"):
                app.run(lambda ctx: [t.delete() for t in ctx.table("things") if t._id != keep])
            else:
                app.run(lambda ctx: ctx.table("things").get_x(keep).replace({**GOOD, "u": "keep"}))

    check()


def test_hostile_scalars_on_the_plain_write_path(make_app: Any, backend: str):
    """Documents of only scalar and id fields take ents' shortest write path: hostile values
    there are refused (or stored exactly) as on the general path, and a refused write
    changes nothing."""
    app = make_app(
        define_ent_schema(
            {
                "rows": define_ent({"s": str, "i": int, "f": float, "b": bool})
                .field("u", str, unique=True, default="")
                .field("n", int, default=7)
                .edge("other"),
                "others": define_ent({"x": int}).edges("rows", ref=True),
            }
        )
    )
    other = app.run(lambda ctx: ctx.table("others").insert({"x": 1}))
    gone = app.run(lambda ctx: ctx.table("others").insert({"x": 2}))
    app.run(lambda ctx: ctx.table("others").get_x(gone).delete())
    good = {"s": "s", "i": 1, "f": 1.5, "b": True, "other_id": other}
    keep = app.run(lambda ctx: ctx.table("rows").insert({**good, "u": "keep"}))
    keys = ["s", "i", "f", "b", "u", "n", "other_id"]

    @run_examples(backend)
    @given(
        values=st.dictionaries(st.sampled_from(keys), st.one_of(hostile_scalar, st.sampled_from([other, gone, keep, "keep"])), max_size=3),
        op=st.sampled_from(["insert", "patch", "db.patch"]),
    )
    def check(values: dict[str, Any], op: str) -> None:
        if op == "insert":
            ok, id = attempt(app, lambda: app.run(lambda ctx: ctx.table("rows").insert({**good, **values})))
            want = {"u": "", "n": 7, **good, **values}
        elif op == "patch":
            ok, _ = attempt(app, lambda: app.run(lambda ctx: ctx.table("rows").get_x(keep).patch(values)))
            id, want = keep, values
        else:
            ok, _ = attempt(app, lambda: app.run(lambda ctx: ctx.db.patch(keep, values)))
            id, want = keep, values
        if not ok:
            return
        stored = app.run(lambda ctx: ctx.table("rows").get_x(id).doc())
        for k, v in want.items():
            if v is None:
                continue
            v = float(v) if k == "f" else str(v) if isinstance(v, str) else v
            assert _equal(stored[k], v), (op, k, v, stored[k])
        if op == "insert":
            app.run(lambda ctx: ctx.table("rows").get_x(id).delete())
        else:
            app.run(lambda ctx: ctx.table("rows").get_x(keep).replace({**good, "u": "keep"}))

    check()


def test_hostile_values_through_ctx_db(make_app: Any, backend: str):
    app = make_app(things_schema())

    @run_examples(backend)
    @given(table=st.one_of(hostile_text, st.sampled_from(["things", "others", "_scheduled_functions", "_storage", "_cron_jobs", "parts_to_things"])), value=hostile_value)
    def check(table: Any, value: Any) -> None:
        attempt(app, lambda: app.run(lambda ctx: ctx.db.insert(table, value)))
        attempt(app, lambda: app.run(lambda ctx: ctx.db.insert(table, {"x": value})))
        attempt(app, lambda: app.run(lambda ctx: ctx.db.query(table).collect()))
        attempt(app, lambda: app.run(lambda ctx: ctx.table(table).first()))

    check()


# -- ids --------------------------------------------------------------------------------------------


def test_hostile_and_wrong_table_ids(make_app: Any, backend: str):
    app = make_app(things_schema())

    @app.internal_mutation(name="bad:noop")
    def noop(ctx: Any) -> None:
        pass

    ids = app.run(
        lambda ctx: {
            "thing": ctx.table("things").insert({**GOOD, "u": "t"}),
            "other": ctx.table("others").insert({"x": 1}),
            "job": ctx.scheduler.run_after(1000, noop, {}),
        }
    )
    gone = app.run(lambda ctx: ctx.table("others").insert({"x": 2}))
    app.run(lambda ctx: ctx.table("others").get_x(gone).delete())
    known = [*ids.values(), gone]
    mangled = [i[:-1] for i in known] + [i + "0" for i in known] + [i.upper() for i in known] + [i[::-1] for i in known]

    # A valid id of another table is refused where an id of this table is expected.
    thing, other, job = ids["thing"], ids["other"], ids["job"]
    for fn in (
        lambda ctx: ctx.table("things").get(other),
        lambda ctx: ctx.table("things").get_x(other),
        lambda ctx: ctx.table("things").get_many([thing, other]),
        lambda ctx: ctx.table("things").get_x(other).patch({"s": "x"}),
        lambda ctx: ctx.table("parts").insert({"name": "p", "thing_id": other}),
        lambda ctx: ctx.table("parts").insert({"name": "p", "thing_id": job}),
        lambda ctx: ctx.table("things").get_x(thing).patch({"job_id": other}),
        lambda ctx: ctx.scheduler.cancel(thing),
        lambda ctx: ctx.db.system.get(thing),
        lambda ctx: ctx.db.patch(job, {"state": "success"}),
        lambda ctx: ctx.db.delete(job),
        lambda ctx: ctx.storage.delete(thing),
    ):
        ok, result = attempt(app, lambda: app.run(fn))  # noqa: B023 - called at once, inside the loop
        assert not ok, result
    # An id of a deleted ent reads as nothing and cannot be written.
    assert app.run(lambda ctx: ctx.table("others").get(gone)) is None
    assert not attempt(app, lambda: app.run(lambda ctx: ctx.db.patch(gone, {"x": 3})))[0]

    @run_examples(backend, EXAMPLES * 2)
    @given(id=st.one_of(st.sampled_from(mangled), hostile_value), table=st.sampled_from(["things", "others", "parts"]))
    def check(id: Any, table: str) -> None:
        assume(not (isinstance(id, str) and id in known))
        for fn in (
            lambda ctx: ctx.table(table).get(id),
            lambda ctx: ctx.table(table).get_x(id),
            lambda ctx: ctx.table(table).get_many([id]),
            lambda ctx: ctx.table(table).normalize_id(id),
            lambda ctx: ctx.db.get(id),
            lambda ctx: ctx.db.system.get(id),
            lambda ctx: ctx.db.normalize_id(table, id),
            lambda ctx: ctx.table("_scheduled_functions").get(id),
            lambda ctx: ctx.storage.get_url(id),
        ):
            attempt(app, lambda: app.run(fn))  # noqa: B023 - called at once, inside the loop
        for fn in (
            lambda ctx: ctx.db.patch(id, {"x": 5}),
            lambda ctx: ctx.db.replace(id, {"x": 5}),
            lambda ctx: ctx.db.delete(id),
            lambda ctx: ctx.scheduler.cancel(id),
            lambda ctx: ctx.table("parts").insert({"name": "p", "thing_id": id}),
            lambda ctx: ctx.table(table).get_x(id).delete(),
            lambda ctx: ctx.storage.delete(id),
        ):
            ok, result = attempt(app, lambda: app.run(fn))  # noqa: B023 - called at once, inside the loop
            assert not ok, (id, result)

    check()


def _forge(app: App, table: str, rid: int) -> str:
    """An id of ``table`` with a right check character for any row key, as an attacker who
    read ents' source could write."""
    from ents.ids import _check, _table_code

    number = app.codec.numbers[table]
    return f"{_table_code(number)}{rid:x}{_check(number, rid)}"


def test_forged_ids_beyond_64_bits_are_invalid_ids(make_app: Any, backend: str):
    """A row key of 2**63 or more cannot exist in any table, so an id carrying one is
    malformed: every entry point refuses it as it refuses any malformed id (SQLite could not
    even bind it), and normalize_id() says it is no id."""
    app = make_app(things_schema())

    @app.query
    def read(ctx: Any, id: str) -> Any:
        return ctx.table("things").get(id)

    from ents import InvalidIdError, SchedulerError, StorageError

    thing = app.run(lambda ctx: ctx.table("things").insert({**GOOD, "u": "t"}))
    for rid in (2**63, 2**63 + 1, 2**64, 2**64 + 12345, 2**100):
        t, job, file = _forge(app, "things", rid), _forge(app, "_scheduled_functions", rid), _forge(app, "_storage", rid)
        for fn, error in (
            (lambda ctx: ctx.table("things").get(t), InvalidIdError),  # noqa: B023 - called at once
            (lambda ctx: ctx.table("things").get_x(t), InvalidIdError),  # noqa: B023
            (lambda ctx: ctx.table("things").get_many([thing, t]), InvalidIdError),  # noqa: B023
            (lambda ctx: ctx.db.get(t), InvalidIdError),  # noqa: B023
            (lambda ctx: ctx.db.system.get(job), InvalidIdError),  # noqa: B023
            (lambda ctx: ctx.db.patch(t, {"s": "x"}), InvalidIdError),  # noqa: B023
            (lambda ctx: ctx.db.replace(t, {**GOOD, "u": "x"}), InvalidIdError),  # noqa: B023
            (lambda ctx: ctx.db.delete(t), InvalidIdError),  # noqa: B023
            (lambda ctx: ctx.table("things").filter(lambda q: q.eq(q.field("_id"), t)).collect(), InvalidIdError),  # noqa: B023
            (lambda ctx: ctx.table("parts").insert({"name": "p", "thing_id": t}), InvalidIdError),  # noqa: B023
            (lambda ctx: ctx.scheduler.cancel(job), SchedulerError),  # noqa: B023
            (lambda ctx: ctx.storage.get(file), StorageError),  # noqa: B023
            (lambda ctx: ctx.storage.get_url(file), StorageError),  # noqa: B023
            (lambda ctx: ctx.storage.get_metadata(file), StorageError),  # noqa: B023
            (lambda ctx: ctx.storage.delete(file), StorageError),  # noqa: B023
        ):
            ok, result = attempt(app, lambda: app.run(fn))  # noqa: B023
            assert not ok and isinstance(result, error), (rid, result)
            assert "not an ents id" in str(result)
        assert app.run(lambda ctx: ctx.db.normalize_id("things", t)) is None  # noqa: B023
        assert app.run(lambda ctx: ctx.table("things").normalize_id(t)) is None  # noqa: B023
        # Through a public function called by an untrusted client, too.
        with pytest.raises(InvalidIdError):
            app.client().query(read, {"id": t})
    # The largest row key a table can hold is a well-formed id of a missing document.
    top = _forge(app, "things", 2**63 - 1)
    assert app.run(lambda ctx: ctx.table("things").get(top)) is None
    assert app.client().query(read, {"id": top}) is None


def _cursor_with_key(cursor: str, key: Any) -> str:
    import base64
    import json

    data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    data["k"] = key
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_forged_cursor_keys_are_invalid_cursors(make_app: Any, backend: str):
    """A cursor is text a client hands back: one whose key holds values its columns cannot
    hold (beyond 64 bits, lone surrogates, other types) is an invalid cursor, on every
    kind of order, and never reaches the database."""
    app = make_app(
        define_ent_schema(
            {
                "rows": define_ent({"n": int, "s": str, "j": Any})
                .index("by_n", ["n"])
                .index("by_s", ["s"])
                .index("by_j", ["j"])
            }
        )
    )
    app.run(lambda ctx: ctx.table("rows").insert_many([{"n": i, "s": str(i), "j": i} for i in range(3)]))
    queries: dict[str, Callable[[Any], Any]] = {
        "default": lambda ctx: ctx.table("rows"),
        "desc": lambda ctx: ctx.table("rows").order("desc"),
        "by_n": lambda ctx: ctx.table("rows", "by_n"),
        "by_s": lambda ctx: ctx.table("rows", "by_s"),
        "by_j": lambda ctx: ctx.table("rows", "by_j"),
    }
    bad_values = [2**63, -(2**63) - 1, 2**64, 10**30, "\ud800", "x", None, 1.5, [1], {"a": 1}, True]
    for name, query in queries.items():
        page = app.run(lambda ctx: query(ctx).paginate({"num_items": 1, "cursor": None}))  # noqa: B023
        good = page["continue_cursor"]
        import base64
        import json

        key = json.loads(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4)))["k"]
        for i in range(len(key)):
            for bad in bad_values:
                forged_key = [*key[:i], bad, *key[i + 1 :]]
                if forged_key == key or (name == "by_j" and i == 0 and bad != "\ud800"):
                    continue  # a JSON field may hold any JSON value (large integers too)
                if name == "by_s" and i == 0 and bad == "x":
                    continue  # a plain string is a valid key of a string field
                tail = 1 if app.backend.dialect.rid_order else 2  # (_creation_time,) _rid
                if bad is None and i < len(key) - tail:
                    continue  # an index field may be null
                if bad == 1.5 and tail == 2 and i == len(key) - 2:
                    continue  # a creation time
                cursor = _cursor_with_key(good, forged_key)
                ok, result = attempt(app, lambda: app.run(lambda ctx: query(ctx).paginate({"num_items": 1, "cursor": cursor})))  # noqa: B023
                assert not ok and isinstance(result, ValidationError) and "cursor" in str(result), (name, forged_key, result)
        # Keys of the wrong length are refused too.
        for forged_key in ([], [*key, 1], key[:-1] or [None, None, None]):
            cursor = _cursor_with_key(good, forged_key)
            ok, result = attempt(app, lambda: app.run(lambda ctx: query(ctx).paginate({"num_items": 1, "cursor": cursor})))  # noqa: B023
            assert not ok and isinstance(result, ValidationError), (name, forged_key, result)


def test_integers_beyond_64_bits_in_a_json_index(make_app: Any, backend: str):
    """Integers nested in JSON may exceed 64 bits; an index on such a field finds them by
    value, and pagination walks past them (its cursor carries the large integer)."""
    app = make_app(define_ent_schema({"rows": define_ent({"j": Any}).index("by_j", ["j"])}))
    values = [-(2**70), -5, 0, 7, 2**63, 2**70, 10**30]
    app.run(lambda ctx: ctx.table("rows").insert_many([{"j": v} for v in values]))
    found = app.run(lambda ctx: [r.j for r in ctx.table("rows", "by_j", lambda q: q.eq("j", 2**70))])
    assert found == [2**70]
    assert app.run(lambda ctx: ctx.table("rows").get("by_j", 2**70)).j == 2**70
    assert app.run(lambda ctx: [r.j for r in ctx.table("rows", "by_j", lambda q: q.gt("j", 2**64))]) == [2**70, 10**30]
    assert app.run(lambda ctx: ctx.table("rows", "by_j", lambda q: q.eq("j", 10**400)).collect()) == []
    seen: list[Any] = []
    cursor = None
    for _ in range(len(values) + 1):
        page = app.run(lambda ctx: ctx.table("rows", "by_j").paginate({"num_items": 1, "cursor": cursor}))  # noqa: B023
        seen += [r.j for r in page["page"]]
        cursor = page["continue_cursor"]
        if page["is_done"]:
            break
    assert seen == values


def test_storage_content_type_is_checked_like_any_string(make_app: Any, backend: str):
    """The same content type is refused on SQLite and PostgreSQL alike, with a
    ValidationError naming it, and nothing (row or blob) is stored."""
    app = make_app(things_schema())
    for bad in ("a\x00b", "\ud800", "x\udfffy", 5, b"image/png", HUGE, _deep(3000, "list")):
        ok, result = attempt(app, lambda: app.run(lambda ctx: ctx.storage.store(b"data", content_type=bad)))  # noqa: B023
        assert not ok and isinstance(result, ValidationError), (bad, result)
        assert result.field == "content_type" and "content_type" in str(result)
    assert not [p for p in app.blobs.directory.rglob("*") if p.is_file()]
    file = app.run(lambda ctx: ctx.storage.store(b"data", content_type="image/png; charset=\u00e9"))
    assert app.run(lambda ctx: ctx.storage.get_metadata(file))["content_type"] == "image/png; charset=\u00e9"


def test_huge_integers_and_deep_values_give_ents_errors_everywhere(make_app: Any, backend: str, clock: FakeClock):
    """repr() of an integer beyond 4300 digits raises ValueError, and of a list nested
    thousands deep RecursionError: error messages that show a bad value must not, on any
    entry point."""
    app = make_app(things_schema())

    @app.mutation
    def takes_int(ctx: Any, x: int) -> None:
        pass

    @app.mutation
    def takes_str(ctx: Any, s: str) -> None:
        pass

    keep = app.run(lambda ctx: ctx.table("things").insert({**GOOD, "u": "keep"}))
    for bad in (HUGE, -HUGE, _deep(3000, "list"), _deep(3000, "dict")):
        calls: list[Callable[[Any], Any]] = [
            lambda ctx: ctx.table("things").insert({**GOOD, "s": bad}),  # noqa: B023
            lambda ctx: ctx.table("things").insert({**GOOD, "i": bad}),  # noqa: B023
            lambda ctx: ctx.table("things").insert({**GOOD, "any": bad}),  # noqa: B023
            lambda ctx: ctx.table("things").insert({**GOOD, "li": [bad]}),  # noqa: B023
            lambda ctx: ctx.table("things").insert({**GOOD, "m": bad}),  # noqa: B023
            lambda ctx: ctx.table("things").insert({**GOOD, "lit": bad}),  # noqa: B023
            lambda ctx: ctx.table("things").get_x(keep).patch({"i": bad}),  # noqa: B023
            lambda ctx: ctx.table("things").get_x(keep).replace({**GOOD, "d": {"k": bad}}),  # noqa: B023
            lambda ctx: ctx.db.insert("others", {"x": bad}),  # noqa: B023
            lambda ctx: ctx.db.patch(keep, {"n": bad}),  # noqa: B023
            lambda ctx: ctx.db.insert(bad, {}),  # noqa: B023
            lambda ctx: ctx.db.get(bad),  # noqa: B023
            lambda ctx: ctx.table(bad),  # noqa: B023
            lambda ctx: ctx.table("things").get(bad),  # noqa: B023
            lambda ctx: ctx.table("things").get("n", bad),  # noqa: B023
            lambda ctx: ctx.table("things").get(bad, 1),  # noqa: B023
            lambda ctx: ctx.table("things", "n", lambda q: q.eq("n", bad)).collect(),  # noqa: B023
            lambda ctx: ctx.table("things").filter(lambda q: q.eq(q.field("i"), bad)).collect(),  # noqa: B023
            lambda ctx: ctx.table("things").filter(lambda q: q.eq(q.field("any"), bad)).collect(),  # noqa: B023
            lambda ctx: ctx.table("things").filter(lambda q: q.field(bad)).collect(),  # noqa: B023
            lambda ctx: ctx.table("things").order(bad).collect(),  # noqa: B023
            lambda ctx: ctx.table("things").take(bad),  # noqa: B023
            lambda ctx: ctx.table("things").paginate({"num_items": bad, "cursor": None}),  # noqa: B023
            lambda ctx: ctx.table("things").paginate({"num_items": 1, "cursor": bad}),  # noqa: B023
            lambda ctx: ctx.db.query("things").with_index(bad).collect(),  # noqa: B023
            lambda ctx: ctx.scheduler.run_after(bad, takes_int, {"x": 1}),  # noqa: B023
            lambda ctx: ctx.scheduler.run_at(bad, takes_int, {"x": 1}),  # noqa: B023
            lambda ctx: ctx.scheduler.run_after(0, takes_int, {"x": bad}),  # noqa: B023
            lambda ctx: ctx.scheduler.run_after(0, takes_str, {"s": bad}),  # noqa: B023
            lambda ctx: ctx.scheduler.run_after(0, bad, {}),  # noqa: B023
            lambda ctx: ctx.scheduler.cancel(bad),  # noqa: B023
            lambda ctx: ctx.storage.store(bad),  # noqa: B023
            lambda ctx: ctx.storage.get(bad),  # noqa: B023
        ]
        for call in calls:
            attempt(app, lambda: app.run(call))  # noqa: B023 - anything but an EntsError propagates
        for fn in (takes_int, takes_str):
            attempt(app, lambda: app.run_mutation(fn, {"x": bad, "s": bad}))  # noqa: B023
            attempt(app, lambda: app.client().mutation(fn, {"x": bad}))  # noqa: B023
            attempt(app, lambda: app.run_mutation(fn, bad))  # noqa: B023
        for move in (clock.advance, clock.set_time):
            with pytest.raises(EntsError):
                move(bad)


# -- filter expressions, index ranges, query options ----------------------------------------------

PATHS = ["s", "i", "f", "b", "by", "l", "d", "d.a", "d.a.b", "l.0", "m.x", "o", "lit", "any", "u", "n", "_id", "_creation_time", "job_id", "nope", "d.", ".d", "d..a", 'd."a', "d.a'b"]
LEAF_OPS = st.sampled_from(["eq", "neq", "lt", "lte", "gt", "gte", "add", "sub", "mul", "div", "mod"])
filter_leaf = st.one_of(
    st.tuples(st.just("field"), st.one_of(st.sampled_from(PATHS), hostile_text)),
    st.tuples(st.just("lit"), hostile_value),
)
filter_tree = st.recursive(
    filter_leaf,
    lambda kids: st.one_of(
        st.tuples(st.just("op"), LEAF_OPS, st.lists(kids, min_size=2, max_size=2)),
        st.tuples(st.just("op"), st.sampled_from(["and_", "or_"]), st.lists(kids, max_size=3)),
        st.tuples(st.just("op"), st.sampled_from(["not_", "neg"]), st.lists(kids, min_size=1, max_size=1)),
    ),
    max_leaves=6,
)


def build(q: Any, node: Any) -> Any:
    if node[0] == "field":
        return q.field(node[1])
    if node[0] == "lit":
        return node[1]
    return getattr(q, node[1])(*[build(q, k) for k in node[2]])


def _things_app(make_app: Any) -> App:
    app = make_app(things_schema())
    app.run(
        lambda ctx: ctx.table("things").insert_many(
            [
                {**GOOD, "u": "a", "n": 1, "d": {"a": 1}, "l": [1, "x"], "s": "'; --"},
                {**GOOD, "u": "b", "n": -5, "d": {"a": {"b": None}}, "i": 2**62, "f": -0.5, "any": [1]},
                {**GOOD, "u": "c", "n": 7, "d": {"a": "\u202e"}, "o": "o", "lit": 3, "b": False},
            ]
        )
    )
    return app


def test_hostile_filters_and_query_options(make_app: Any, backend: str):
    app = _things_app(make_app)

    @run_examples(backend, EXAMPLES * 2)
    @given(
        tree=filter_tree,
        order=st.one_of(st.sampled_from(["asc", "desc"]), hostile_value),
        take=st.one_of(st.integers(min_value=0, max_value=5), hostile_value),
        cursor=st.one_of(st.none(), hostile_text, st.sampled_from(["", "0", "eyJ9", "[]", "null"])),
    )
    def check(tree: Any, order: Any, take: Any, cursor: Any) -> None:
        for fn in (
            lambda ctx: ctx.table("things").filter(lambda q: build(q, tree)).collect(),
            lambda ctx: ctx.table("things").filter(lambda q: build(q, tree)).order(order).take(take).collect(),
            lambda ctx: ctx.table("things").filter(lambda q: build(q, tree)).first(),
            lambda ctx: ctx.table("things").order(order).paginate({"num_items": take, "cursor": cursor}),
            lambda ctx: ctx.table("things").filter(lambda q: build(q, tree)).paginate({"num_items": 2, "cursor": cursor}),
            lambda ctx: ctx.db.query("things").filter(lambda q: build(q, tree)).take(take),
            lambda ctx: ctx.db.system.query("_scheduled_functions").filter(lambda q: build(q, tree)).collect(),
            lambda ctx: ctx.table("things").first_x().edge("parts").filter(lambda q: build(q, tree)).collect(),
        ):
            attempt(app, lambda: app.run(fn))  # noqa: B023 - called at once, inside the loop

    check()


def test_a_filter_literal_that_is_no_scalar_is_refused_on_every_kind_of_field(make_app: Any):
    """Found by the hostile-filter run: an object compared with a JSON field reached the
    JSON encoder and escaped as a TypeError. Refused even when the table is empty."""
    app = make_app(things_schema())
    for field in ("l", "d", "any", "s", "i", "m"):
        for value in (object(), Decimal("1.5"), {1, 2}, datetime.now(UTC)):
            ok, exc = attempt(app, lambda: app.run(lambda ctx: ctx.table("things").filter(lambda q: q.eq(q.field(field), value)).collect()))  # noqa: B023 - run at once
            assert not ok and isinstance(exc, ValidationError) and type(value).__name__ in str(exc), (field, value, exc)


def test_filters_agree_with_python(make_app: Any, backend: str):
    """On plain scalar fields, a filter selects exactly what Python's comparison selects."""
    app = _things_app(make_app)
    rows = app.run(lambda ctx: ctx.table("things").docs())

    @run_examples(backend)
    @given(
        field=st.sampled_from(["s", "i", "n", "u", "f"]),
        op=st.sampled_from(["eq", "neq", "lt", "lte", "gt", "gte"]),
        value=st.one_of(st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=3), st.sampled_from(["a", "b", "'; --", 1, 7, -5, 2**62])),
    )
    def check(field: str, op: str, value: Any) -> None:
        ok, got = attempt(app, lambda: app.run(lambda ctx: [t._id for t in ctx.table("things").filter(lambda q: getattr(q, op)(q.field(field), value))]))
        if not ok:
            return  # e.g. a str compared with an int field: refused with a clear error
        import operator

        cmp = {"eq": operator.eq, "neq": operator.ne, "lt": operator.lt, "lte": operator.le, "gt": operator.gt, "gte": operator.ge}[op]
        expected = [r["_id"] for r in rows if cmp(r[field], value)]
        assert got == expected, (field, op, value)

    check()


def test_hostile_index_ranges_and_lookups(make_app: Any, backend: str):
    app = _things_app(make_app)
    steps = st.lists(st.tuples(st.sampled_from(["eq", "gt", "gte", "lt", "lte"]), st.one_of(st.sampled_from(["n", "u", "i", "by_n", "nope"]), hostile_text), hostile_value), max_size=3)

    @run_examples(backend, EXAMPLES * 2)
    @given(index=st.one_of(st.sampled_from(["n", "by_n", "u", "by_u", "by_id", "by_creation_time", "nope"]), hostile_value), steps=steps, value=hostile_value)
    def check(index: Any, steps: list[Any], value: Any) -> None:
        def rng(q: Any) -> Any:
            for op, field, v in steps:
                q = getattr(q, op)(field, v)
            return q

        for fn in (
            lambda ctx: ctx.table("things", index, rng).collect(),
            lambda ctx: ctx.table("things", index).collect(),
            lambda ctx: ctx.table("things").get(index, value),
            lambda ctx: ctx.table("things").get_many(index, [value]),
            lambda ctx: ctx.db.query("things").with_index(index, rng).collect(),
            lambda ctx: ctx.table("_scheduled_functions", "by_state", rng).collect(),
            lambda ctx: ctx.table(index),
            lambda ctx: ctx.table("things").first_x().edge(index),
        ):
            attempt(app, lambda: app.run(fn))  # noqa: B023 - called at once, inside the loop

    check()


# -- times --------------------------------------------------------------------------------------------

hostile_time = st.one_of(
    st.integers(),
    st.floats(),
    st.sampled_from([10**400, -(10**400), 2**63, 1.7976931348623157e308, 0, -1, -0.0, 5 * 365 * 24 * 3600 * 1000, 5 * 366 * 24 * 3600 * 1000]),
    st.datetimes(timezones=st.one_of(st.none(), st.just(UTC), st.builds(timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))))),
    st.timedeltas(),
    st.sampled_from([timedelta.max, timedelta.min, datetime.max, datetime.min]),
    hostile_value,
)


def test_hostile_run_after_and_run_at(make_app: Any, backend: str, clock: FakeClock):
    app = make_app(things_schema())
    ran: list[int] = []

    @app.internal_mutation(name="bad:tick")
    def tick(ctx: Any) -> None:
        ran.append(1)

    @run_examples(backend, EXAMPLES * 2)
    @given(when=hostile_time, how=st.sampled_from(["run_after", "run_at"]))
    def check(when: Any, how: str) -> None:
        ok, id = attempt(app, lambda: app.run(lambda ctx: getattr(ctx.scheduler, how)(when, tick, {})))
        if ok:
            job = app.run(lambda ctx: ctx.db.system.get(id))
            assert math.isfinite(job["scheduled_time"])
            assert abs(job["scheduled_time"] - clock.now()) <= 5 * 365 * 24 * 3600 * 1000
            app.run(lambda ctx: ctx.scheduler.cancel(id))
        app.finish_in_progress_scheduled_functions()

    check()
    assert ran == []  # every job accepted was canceled at once, so none ran


def test_hostile_fake_clock_moves() -> None:
    @settings(max_examples=examples("memory"), deadline=None, database=None)
    @given(step=hostile_time)
    def check(step: Any) -> None:
        clock = FakeClock()
        for move in (clock.advance, clock.set_time):
            try:
                move(step)
            except EntsError:
                pass
            assert math.isfinite(clock.now())
        try:
            FakeClock(step)
        except EntsError:
            pass

    check()


# -- function arguments -----------------------------------------------------------------------------


def test_hostile_function_arguments(make_app: Any, backend: str, clock: FakeClock):
    app = make_app(things_schema())
    outcomes: list[str] = []

    @app.internal_mutation(name="bad:typed")
    def typed(
        ctx: Any,
        s: str = "",
        i: int = 0,
        f: float = 0.0,
        b: bool = False,
        by: bytes = b"",
        li: list[int] | None = None,
        d: dict[str, Any] | None = None,
        lit: Literal["a", 1] = "a",
        any: Any = None,
        m: Model | None = None,
        when: datetime | None = None,
        thing: Id[things] | None = None,  # type: ignore[type-arg]  # noqa: F821
    ) -> None:
        outcomes.append("ran")

    @app.internal_mutation(name="bad:kwargs")
    def kwargs(ctx: Any, **rest: Any) -> None:
        outcomes.append("ran")

    @app.internal_mutation(name="bad:scalars")  # plain scalars only: validated without pydantic
    def scalars(ctx: Any, s: str = "", i: int = 0, f: float = 0.0, b: bool = False, o: str | None = None) -> None:
        outcomes.append("ran")

    @app.internal_action(name="bad:action")
    async def action(ctx: Any, x: int = 0, y: Any = None) -> None:
        outcomes.append("ran")

    names = ["s", "i", "f", "b", "o", "by", "li", "d", "lit", "any", "m", "when", "thing", "x", "y", "nope", "", "ctx", "__class__", "\ud800"]

    @run_examples(backend, EXAMPLES * 2)
    @given(args=st.one_of(st.dictionaries(st.one_of(st.sampled_from(names), hostile_text), hostile_value, max_size=3), hostile_value), fn=st.sampled_from(["bad:typed", "bad:kwargs", "bad:scalars", "bad:action"]))
    def check(args: Any, fn: str) -> None:
        kind = "action" if fn == "bad:action" else "mutation"
        attempt(app, lambda: getattr(app, f"run_{kind}")(fn, args))
        ok, id = attempt(app, lambda: app.run(lambda ctx: ctx.scheduler.run_after(0, fn, args)))
        if ok:
            # Arguments accepted when scheduling are the ones the job runs with: it succeeds.
            app.finish_in_progress_scheduled_functions()
            job = app.run(lambda ctx: ctx.db.system.get(id))
            assert job["state"] == {"kind": "success"}, (args, job)

    check()


# -- cron specs -----------------------------------------------------------------------------------------

cron_spec_value = st.one_of(st.integers(-5, 70), hostile_value, st.sampled_from(["sunday", "Monday", "funday", 0, 7, 31, 32, 1.5]))
cron_spec = st.one_of(
    st.dictionaries(st.sampled_from(["seconds", "minutes", "hours", "minute_utc", "hour_utc", "day", "day_of_week", "minute", "hour", "type", "nope"]), cron_spec_value, max_size=3),
    st.sampled_from(["* * * * *", "0 9 * * 1-5", "*/0 * * * *", "61 * * * *", "0 0 31 2 *", "0 0 30 2 *", "@hourly", "* * * *", "* * * * * * *", "x", "", "0 9 * * MON-FRI", "0 9 L * *"]),
    hostile_value,
)


def test_hostile_cron_definitions(make_app: Any, backend: str, clock: FakeClock):
    from ents import cron_jobs

    @run_examples(backend, EXAMPLES)
    @given(
        defs=st.lists(
            st.tuples(
                st.sampled_from(["interval", "hourly", "daily", "weekly", "monthly", "cron"]),
                st.one_of(st.sampled_from(["a", "b", "a"]), hostile_text, hostile_value),
                cron_spec,
                st.one_of(st.sampled_from(["bad:job", "bad:query", "nope", "bad:job_args"]), hostile_value),
                st.one_of(st.none(), st.just({}), hostile_value),
                st.one_of(st.none(), st.sampled_from(["UTC", "Europe/Paris", "Mars/Olympus", "", "../../etc/passwd"]), hostile_value),
            ),
            max_size=3,
        )
    )
    def check(defs: list[Any]) -> None:
        crons = cron_jobs()
        for method, name, spec, fn, args, tz in defs:
            try:
                if method in ("interval", "cron"):
                    getattr(crons, method)(name, spec, fn, args)
                else:
                    getattr(crons, method)(name, spec, fn, args, tz=tz)
            except EntsError as exc:
                assert str(exc)
        app = make_app(things_schema(), crons=crons)

        @app.internal_mutation(name="bad:job")
        def job(ctx: Any) -> None:
            pass

        @app.internal_mutation(name="bad:job_args")
        def job_args(ctx: Any, x: int) -> None:
            pass

        @app.internal_query(name="bad:query")
        def query(ctx: Any) -> None:
            pass

        ok, _ = attempt(app, lambda: app.finish_in_progress_scheduled_functions())
        if ok:
            clock.advance(3600 * 1000)
            app.finish_in_progress_scheduled_functions()
        # At run time too, through ctx.crons, with the database left unchanged on refusal.
        for method, name, spec, fn, args, tz in defs:
            attempt(app, lambda: app.run(lambda ctx: ctx.crons.register(name, spec, fn, args, tz=tz)))  # noqa: B023 - called at once, inside the loop
            attempt(app, lambda: app.run(lambda ctx: getattr(ctx.crons, method)(name, spec, fn, args)))  # noqa: B023 - called at once, inside the loop
            attempt(app, lambda: app.run(lambda ctx: ctx.crons.delete(name)))  # noqa: B023 - called at once, inside the loop
        app.close()

    check()


# -- schemas ------------------------------------------------------------------------------------------------

ident = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
hostile_name = st.one_of(ident, ident, hostile_text, st.sampled_from(["_id", "id", "_creation_time", "deletion_time", "users", "_scheduled_functions", "sqlite_master", "a" * 80, "a.b", "A", "select", "order", "Table", "x-y", "1a"]), hostile_value)
TYPES: list[Any] = [str, int, float, bool, bytes, list[int], dict[str, Any], Optional[str], Literal["a", 1], Any, Model, Id["t0"], Id["nope"], list, dict,  # noqa: UP045
                    set[int], tuple[int, str], complex, datetime, dict[int, str], "str", None, 5, Literal[object], list[set[int]], Optional[list[dict[str, bytes]]]]  # noqa: UP045
field_type = st.sampled_from(TYPES)
key_name = st.one_of(ident, hostile_text, st.integers(), st.none(), st.just(b"bytes"), st.just(("t",)))  # hashable
edge_call = st.tuples(
    st.sampled_from(["edge", "edges"]),
    hostile_name,
    st.fixed_dictionaries({}, optional={
        "to": st.one_of(st.sampled_from(["t0", "t1", "t2", "_scheduled_functions", "_storage", "_cron_jobs"]), hostile_name),
        "ref": st.one_of(st.booleans(), hostile_name),
        "field": hostile_name,
        "optional": st.one_of(st.booleans(), hostile_value),
        "deletion": st.one_of(st.sampled_from(["hard", "soft", "scheduled"]), hostile_value),
        "table": hostile_name,
        "inverse": hostile_name,
        "inverse_field": hostile_name,
    }),
)
field_call = st.tuples(
    st.just("field"),
    hostile_name,
    st.fixed_dictionaries({"type": field_type}, optional={"unique": st.one_of(st.booleans(), hostile_value), "index": st.one_of(st.booleans(), hostile_value), "default": hostile_value}),
)
index_call = st.tuples(st.just("index"), hostile_name, st.fixed_dictionaries({"fields": st.one_of(st.lists(hostile_name, max_size=3), hostile_value)}))
deletion_call = st.tuples(st.just("deletion"), st.one_of(st.sampled_from(["soft", "scheduled", "hard"]), hostile_value), st.fixed_dictionaries({}, optional={"delay_ms": hostile_time}))
table_def = st.tuples(
    st.one_of(st.dictionaries(key_name, field_type, max_size=3), hostile_value),
    st.lists(st.one_of(edge_call, field_call, index_call, deletion_call), max_size=4),
)


def test_hostile_schemas(backend: str):
    if backend != "memory":
        pytest.skip("schema definitions do not depend on the backend; one App per example stays in memory")

    @settings(max_examples=examples("memory", EXAMPLES * 3), deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(tables=st.dictionaries(st.one_of(st.sampled_from(["t0", "t1", "t2"]), key_name), table_def, max_size=3))
    def check(tables: dict[Any, Any]) -> None:
        defs: dict[Any, Any] = {}
        for name, (fields, calls) in tables.items():
            try:
                d = define_ent(fields)
            except EntsError:
                continue
            for method, arg, kwargs in calls:
                try:
                    if method == "field":
                        d = d.field(arg, kwargs.pop("type"), **kwargs)
                    elif method == "index":
                        d = d.index(arg, kwargs["fields"])
                    elif method == "deletion":
                        d = d.deletion(arg, **kwargs)
                    else:
                        if method == "edge":
                            kwargs = {k: v for k, v in kwargs.items() if k in ("to", "field", "ref", "optional", "deletion")}
                        else:
                            kwargs = {k: v for k, v in kwargs.items() if k != "optional"}
                        d = getattr(d, method)(arg, **kwargs)
                except EntsError as exc:
                    assert str(exc)
            defs[name] = d
        try:
            schema = define_ent_schema(defs)
        except EntsError as exc:
            assert str(exc)
            return
        with App(schema, "sqlite://", clock=FakeClock()) as app:
            for table in schema.tables:
                if table.startswith("_"):
                    continue
                attempt(app, lambda: app.run(lambda ctx: ctx.table(table).insert({})))  # noqa: B023 - called at once, inside the loop
                attempt(app, lambda: app.run(lambda ctx: ctx.table(table).filter(lambda q: q.eq(q.field("_id"), None)).collect()))  # noqa: B023 - called at once, inside the loop

    check()


def test_hostile_table_and_field_names_on_every_backend(make_app: Any):
    """Names full of SQL metacharacters and odd Unicode are quoted, never spliced."""
    names = ['"; DROP TABLE x; --', "a'b", "sp ace", "ünï", "select", "a" * 50, "x%sy", "q?"]
    defs: dict[str, Any] = {}
    for n in names:
        try:
            defs[n] = define_ent({"v": int}).field(n if n != "select" else "from", str, default="")
        except EntsError:
            continue
    try:
        schema = define_ent_schema(defs)
    except EntsError as exc:
        assert str(exc)
        return
    app = make_app(schema)
    for table in defs:
        ok, id = attempt(app, lambda: app.run(lambda ctx: ctx.table(table).insert({"v": 1})))  # noqa: B023 - called at once, inside the loop
        if ok:
            assert app.run(lambda ctx: ctx.table(table).get_x(id).v) == 1  # noqa: B023 - called at once, inside the loop
            attempt(app, lambda: app.run(lambda ctx: ctx.table(table).filter(lambda q: q.eq(q.field("v"), 1)).collect()))  # noqa: B023 - called at once, inside the loop


# -- failures caught inside a mutation ------------------------------------------------------------------


def test_failed_calls_caught_inside_a_mutation_leave_no_trace(make_app: Any, backend: str, clock: FakeClock):
    """A mutation that catches an ents error and goes on commits nothing of the failed call."""
    app = _things_app(make_app)

    @app.internal_mutation(name="bad:target")
    def target(ctx: Any, x: int = 0) -> None:
        pass

    keep = app.run(lambda ctx: ctx.table("things").first_x()._id)

    @run_examples(backend, EXAMPLES * 2)
    @given(
        op=st.sampled_from(["insert", "insert_many", "patch", "replace", "run_after", "run_at", "cancel", "delete", "cron", "edge"]),
        value=hostile_value,
        when=hostile_time,
    )
    def check(op: str, value: Any, when: Any) -> None:
        def body(ctx: Any) -> bool:
            try:
                if op == "insert":
                    ctx.table("things").insert({**GOOD, "u": "new", "d": value})
                elif op == "insert_many":
                    ctx.table("things").insert_many([{**GOOD, "u": "new1"}, {**GOOD, "u": "new2", "l": value}])
                elif op == "patch":
                    ctx.table("things").get_x(keep).patch({"s": "changed", "i": value})
                elif op == "replace":
                    ctx.table("things").get_x(keep).replace({**GOOD, "u": "a", "any": value, "m": value})
                elif op == "run_after":
                    ctx.scheduler.run_after(when, target, {"x": value})
                elif op == "run_at":
                    ctx.scheduler.run_at(when, target, value)
                elif op == "cancel":
                    ctx.scheduler.cancel(value)
                elif op == "delete":
                    ctx.table("things").get_x(value).delete()
                elif op == "cron":
                    ctx.crons.register("c", value, target, {"x": 1})
                else:
                    ctx.table("parts").insert({"name": "p", "thing_id": value})
            except EntsError:
                return False
            return True

        before = dump(app)
        succeeded = app.run(body)
        if not succeeded:
            assert dump(app) == before, op
        else:
            # Undo whatever the call did so that examples stay independent.
            app.run(lambda ctx: [t.delete() for t in ctx.table("things") if t.u in ("new", "new1", "new2")])
            app.run(lambda ctx: ctx.table("things").get_x(keep).replace({**GOOD, "u": "a"}))
            app.run(lambda ctx: [ctx.scheduler.cancel(j._id) for j in ctx.table("_scheduled_functions", "by_state", lambda q: q.eq("state", "pending"))])
            app.run(lambda ctx: ctx.crons.delete("c"))
            app.run(lambda ctx: [p.delete() for p in ctx.table("parts")])

    check()


# -- the soak ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_bad_input_soak(make_app: Any, backend: str, clock: FakeClock, tmp_path: Any, request: Any):
    """Every property above again, with ``ENTS_SOAK / 10`` times as many examples."""
    import inspect

    from tests.conftest import _url_for
    from tests.reliability import soak_count

    if not soak_count():
        pytest.skip("set ENTS_SOAK=<n> to run the bad-input soak")
    tests = [f for name, f in sorted(globals().items()) if name.startswith("test_") and name != "test_bad_input_soak" and callable(f)]
    _SCALE[0] = max(1, soak_count() // 10)
    try:
        for i, test in enumerate(tests):
            # Each property gets its own database, as it would as a test of its own.
            sub = tmp_path / str(i)
            sub.mkdir()
            url = _url_for(backend, sub, request)
            fresh = FakeClock()
            fixtures = {
                "make_app": lambda schema, _url=url, _clock=fresh, **kw: make_app(schema, url=_url, **{"clock": _clock, **kw}),
                "backend": backend,
                "clock": fresh,
            }
            params = inspect.signature(test).parameters
            try:
                test(**{k: v for k, v in fixtures.items() if k in params})
            except pytest.skip.Exception:
                pass
    finally:
        _SCALE[0] = 1
