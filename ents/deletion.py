"""Deleting ents: hard cascades, soft deletion and scheduled deletion.

Hard deletion follows Convex Ents' rules, set-based: ents whose edge field points at a
deleted ent are deleted too (recursively), whether that edge is required or optional (as
Convex Ents' writer does: it never unsets the field), many:many edge rows are removed,
and a stored edge with a ``deletion`` option deletes the other end of a 1:1 edge (hard,
whichever option, as in Convex Ents), cancels a pending or running job in
``_scheduled_functions``, or deletes a file in ``_storage``. Each step is one statement
per batch of ids, never one per row.

Soft deletion sets ``deletion_time`` and follows edges marked ``deletion="soft"``: the
ents pointing at a soft-deleted ent along such an edge, and the other end of a stored 1:1
edge marked so; an ent of a table with scheduled deletion reached that way also gets its
hard deletion scheduled (Convex Ents soft-deletes it with its table's own behavior).
Scheduled deletion soft-deletes now and hard-deletes later, through the scheduler, in
bounded batches that delete children before parents and reschedule themselves. Unlike
Convex Ents it tolerates an ent that is already gone, cancels linked jobs and deletes
linked files in its final step, and never skips rows created at the same instant (it
always takes "whatever is left", not a page after some creation time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import EntNotFoundError
from .scheduler import cancel_jobs, schedule_internal
from .schema import Edge
from .storage import delete_files
from .writer import _check_writable

if TYPE_CHECKING:
    from .runtime import TableRuntime
    from .transaction import Transaction

SCHEDULED_DELETE = "ents:scheduled_delete"


def delete_ent(tx: Transaction, rt: TableRuntime, rid: int) -> str:
    """Delete one ent following its table's deletion behavior."""
    _check_writable(tx, rt, "delete a document of")
    mode = rt.table.deletion
    if mode is None:
        # Nothing cascades from a row that was not there: no need to look it up first.
        if not hard_delete(tx, rt.name, [rid]):
            raise _not_found(rt, rid)
        return rt.encode_rid(rid)
    id = rt.encode_rid(rid)
    if tx.fetchone(rt.sql_exists, (rid,)) is None:
        raise _not_found(rt, rid)
    if mode == "scheduled":
        # Scheduling can be refused (limits); do it before writing anything.
        schedule_internal(
            tx,
            SCHEDULED_DELETE,
            {"table": rt.name, "id": id, "deletion_time": tx.now},
            tx.now + rt.table.deletion_delay_ms,
        )
    soft_delete(tx, rt, [rid])
    tx.touched()
    return id


def delete_many(tx: Transaction, rt: TableRuntime, rids: list[int]) -> int:
    """Delete existing ents of one table as :func:`delete_ent` does, set-based."""
    _check_writable(tx, rt, "delete documents of")
    if not rids:
        return 0
    mode = rt.table.deletion
    if mode is None:
        hard_delete(tx, rt.name, rids)
        return len(rids)
    if mode == "scheduled":
        _schedule_deletions(tx, rt, rids)
    soft_delete(tx, rt, rids)
    return len(rids)


def _not_found(rt: TableRuntime, rid: int) -> EntNotFoundError:
    id = rt.encode_rid(rid)
    return EntNotFoundError(f'Document not found with id `{id}` in table "{rt.name}"', table=rt.name, id=id)


# -- hard ------------------------------------------------------------------------------


class _HardPlan:
    """What deleting rows of one table involves, worked out once per table and App."""

    __slots__ = ("links", "returning", "cascades", "leaf", "sql")

    def __init__(self, tx: Transaction, rt: TableRuntime) -> None:
        q = tx.dialect.q
        edges = rt.table.edges.values()
        # stored edges whose other end goes too (1:1 with a deletion option, jobs, files):
        # Convex Ents hard-deletes the other end of a stored edge marked "soft" as well
        # when this end is hard deleted
        self.links = [e for e in edges if e.kind == "field" and e.deletion is not None]
        self.returning = ", ".join([q("_rid"), *[q(e.field) for e in self.links]])
        # edges along which deletion spreads (ents storing our id, many:many rows)
        self.cascades = [e for e in edges if e.kind in ("ref", "many_field", "many_many")]
        # A table nothing hangs off is deleted without reading back what went.
        self.leaf = not self.links and not self.cascades
        self.sql: dict[str, tuple[str, str]] = {}

    def statement(self, tx: Transaction, rt: TableRuntime, column: str) -> tuple[str, str]:
        """``(DELETE ... prefix, column SQL)`` for deleting by ``column``."""
        got = self.sql.get(column)
        if got is None:
            got = self.sql[column] = (f"DELETE FROM {rt.q_table}", tx.dialect.q(column))
        return got


def _plan(tx: Transaction, rt: TableRuntime) -> _HardPlan:
    plan = rt.cache.get("hard_delete")
    if plan is None:
        plan = rt.cache["hard_delete"] = _HardPlan(tx, rt)
    return plan  # type: ignore[no-any-return]


def hard_delete(tx: Transaction, table: str, rids: list[int]) -> int:
    """Delete rows of ``table`` and everything that cascades from them; returns rows deleted.

    One statement per table (and batch of ids) reached, never one per row.
    """
    if not rids:
        return 0
    work: list[tuple[str, str, list[Any]]] = [(table, "_rid", list(rids))]
    deleted = 0
    rules = getattr(tx, "rules", None)  # App(rules=...): each ent reached is checked (rules.py)
    while work:
        name, column, keys = work.pop()
        rt = tx.rt(name)
        if rules is not None:
            rules.check_delete(rt, column, keys)
        plan = _plan(tx, rt)
        prefix, column_sql = plan.statement(tx, rt, column)
        if plan.leaf:
            deleted += tx.run_in_chunks(prefix, column_sql, keys)
            continue
        rows = list(tx.in_chunks(prefix, column_sql, keys, suffix=f" RETURNING {plan.returning}"))
        if not rows:
            continue
        deleted += len(rows)
        gone = [r[0] for r in rows]
        for i, edge in enumerate(plan.links, start=1):
            targets = list({r[i] for r in rows if r[i] is not None})
            if targets:
                _follow_hard_link(tx, edge, targets, work)
        for edge in plan.cascades:
            _cascade(tx, edge, gone, work)
    tx.touched()
    return deleted


def _follow_hard_link(tx: Transaction, edge: Edge, targets: list[int], work: list[tuple[str, str, list[Any]]]) -> None:
    if edge.to == "_scheduled_functions":
        cancel_jobs(tx, targets, quiet=True)
    elif edge.to == "_storage":
        delete_files(tx, targets)
    else:
        work.append((edge.to, "_rid", targets))


def _cascade(tx: Transaction, edge: Edge, gone: list[int], work: list[tuple[str, str, list[Any]]]) -> None:
    q = tx.dialect.q
    if edge.kind in ("ref", "many_field"):
        # Required or optional alike: the ents pointing at deleted ones go too. Rows
        # deleted earlier in the walk are simply not found again, so cycles end.
        work.append((edge.to, edge.field, gone))
    elif edge.kind == "many_many":
        assert edge.edge_table is not None and edge.ref is not None
        et = q(edge.edge_table)
        tx.run_in_chunks(f"DELETE FROM {et}", q(edge.field), gone)
        if edge.symmetric:
            tx.run_in_chunks(f"DELETE FROM {et}", q(edge.ref), gone)


# -- soft ------------------------------------------------------------------------------


def soft_delete(tx: Transaction, rt: TableRuntime, rids: list[int]) -> None:
    """Set ``deletion_time`` and follow edges marked ``deletion="soft"``.

    Along such an edge the ents pointing at these (1:1 or 1:many, required or optional)
    and the ents a stored 1:1 edge points at are soft-deleted in turn, those of a table
    with scheduled deletion with their hard deletion scheduled, as Convex Ents does. Ents
    already soft-deleted keep their time and are not followed again, so cycles end.
    """
    rules = getattr(tx, "rules", None)  # App(rules=...): each ent reached is checked (rules.py)
    if rules is not None:
        rules.check_delete(rt, "_rid", rids)
    q = tx.dialect.q
    d = tx.dialect
    tx.run_in_chunks(f"UPDATE {rt.q_table} SET {q('deletion_time')} = {d.param}", q("_rid"), rids, params=(tx.now,))
    alive = f" AND {q('deletion_time')} IS NULL"
    for edge in rt.table.edges.values():
        if edge.deletion != "soft":
            continue
        if edge.kind in ("ref", "many_field"):
            child = tx.rt(edge.to)
            kids = [r[0] for r in tx.in_chunks(f"SELECT {q('_rid')} FROM {child.q_table}", q(edge.field), rids, suffix=alive)]
        elif edge.kind == "field" and not edge.to_system:
            child = tx.rt(edge.to)
            targets = [
                r[0]
                for r in tx.in_chunks(f"SELECT {q(edge.field)} FROM {rt.q_table}", q("_rid"), rids)
                if r[0] is not None
            ]
            kids = [r[0] for r in tx.in_chunks(f"SELECT {q('_rid')} FROM {child.q_table}", q("_rid"), targets, suffix=alive)]
        else:
            continue
        if kids:
            if child.table.deletion == "scheduled":
                _schedule_deletions(tx, child, kids)
            soft_delete(tx, child, kids)
    tx.touched()


def _schedule_deletions(tx: Transaction, rt: TableRuntime, rids: list[int]) -> None:
    """Schedule the hard deletion of ents of a table with scheduled deletion (one job
    each: a job deletes one ent and what hangs off it)."""
    for rid in rids:
        schedule_internal(
            tx,
            SCHEDULED_DELETE,
            {"table": rt.name, "id": rt.encode_rid(rid), "deletion_time": tx.now},
            tx.now + rt.table.deletion_delay_ms,
        )


# -- scheduled -------------------------------------------------------------------------


class _Budget:
    """How many more rows one step may delete (or unset)."""

    __slots__ = ("left",)

    def __init__(self, n: int) -> None:
        self.left = n


def scheduled_delete_step(tx: Transaction, table: str, id: str, deletion_time: float, batch: int) -> bool:
    """One bounded step of a scheduled deletion; True when nothing is left to do.

    Does nothing when the ent is already gone or its ``deletion_time`` changed (the
    deletion was undone, or redone later and will be finished by that later job). A step
    deletes at most ``batch`` rows below the ent, deepest first; the step that finds
    nothing left below it hard-deletes the ent itself, which (like any hard delete)
    cancels its linked jobs and deletes its linked files.
    """
    rt = tx.rt(table)
    rid = tx.app.codec.decode_for(table, id)
    d = tx.dialect
    row = tx.fetchone(f"SELECT {d.q('deletion_time')} FROM {rt.q_table} WHERE {d.q('_rid')} = {d.param}", (rid,))
    if row is None or row[0] is None or float(row[0]) != float(deletion_time):
        return True
    budget = _Budget(max(1, int(batch)))
    if not _delete_descendants(tx, rt, [rid], budget, {table: {rid}}):
        return False
    hard_delete(tx, table, [rid])
    return True


def _delete_descendants(
    tx: Transaction, rt: TableRuntime, rids: list[int], budget: _Budget, path: dict[str, set[int]]
) -> bool:
    """Delete what hangs off ``rids`` (deepest first) within the budget; True when done.

    Children are found by "whatever still points at these ents", never by paging on
    creation time, so rows created at the same instant cannot be skipped, and a step
    that stops half-way simply finds the rest next time. ``path`` holds the ents being
    deleted further up: optional edges can close a cycle (an ent pointing at one of its
    own descendants), and such an ent is left to the hard delete of its descendant.
    """
    q = tx.dialect.q
    d = tx.dialect
    for edge in rt.table.edges.values():
        if edge.kind == "many_many":
            assert edge.edge_table is not None and edge.ref is not None
            cols = [edge.field] + ([edge.ref] if edge.symmetric else [])
            for col in cols:
                while True:
                    if budget.left <= 0:
                        return False
                    cond, params = d.in_clause(q(col), rids)
                    n = min(budget.left, d.batch_size)
                    sql = f"SELECT {q('_rid')} FROM {q(edge.edge_table)} WHERE {cond} LIMIT {n}"
                    ids = [r[0] for r in tx.fetchall(sql, params)]
                    if not ids:
                        break
                    tx.run_in_chunks(f"DELETE FROM {q(edge.edge_table)}", q("_rid"), ids)
                    budget.left -= len(ids)
            continue
        if edge.kind not in ("ref", "many_field"):
            continue
        # Required and optional edges alike: Convex Ents deletes the ents pointing here.
        child = tx.rt(edge.to)
        above = path.setdefault(child.name, set())
        after: int | None = None
        while True:
            if budget.left <= 0:
                return False
            cond, params = d.in_clause(q(edge.field), rids)
            if after is not None:
                cond += f" AND {q('_rid')} > {d.param}"
                params = [*params, after]
            n = min(budget.left, d.batch_size)
            sql = f"SELECT {q('_rid')} FROM {child.q_table} WHERE {cond} ORDER BY {q('_rid')} LIMIT {n}"
            found = [r[0] for r in tx.fetchall(sql, params)]
            if not found:
                break
            # Every row up to the last one found is deleted below, or is an ent further
            # up the path, or the budget runs out first (and the next step starts over).
            after = found[-1]
            kids = [k for k in found if k not in above]
            if not kids:
                continue
            above.update(kids)
            try:
                if not _delete_descendants(tx, child, kids, budget, path) or budget.left <= 0:
                    return False  # these children are deleted by a later step
            finally:
                above.difference_update(kids)
            budget.left -= hard_delete(tx, child.name, kids[: budget.left])
    return True
