"""System tables: ``_scheduled_functions``, ``_storage`` and ``_cron_jobs``.

They are ordinary tables to the storage layer (same ids, same queries), but read-only to
applications, and their documents are shaped like Convex's: a job's ``state`` is an object
``{"kind": ..., "error": ...}`` even though it is stored as plain columns (so that it can be
indexed by state and due time).
"""

from __future__ import annotations

from typing import Annotated, Any

from .fields import FieldSpec, field_spec
from .ids import IdRef
from .schema import TableDef

JOB_STATES = ("pending", "inProgress", "success", "failed", "canceled")
FINISHED_STATES = ("success", "failed", "canceled")


def _f(table: str, name: str, annotation: Any, **kw: Any) -> FieldSpec:
    return field_spec(table, name, annotation, system=True, **kw)


def _shape_job(doc: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = {"kind": doc.pop("state")}
    error = doc.pop("error", None)
    if state["kind"] == "failed":
        state["error"] = error if error is not None else ""
    doc["state"] = state
    log = doc.pop("attempt_log", None)
    if log:
        doc["attempts"] = log
    if doc.get("completed_time") is None:
        doc.pop("completed_time", None)
    return doc


def _shape_storage(doc: dict[str, Any]) -> dict[str, Any]:
    return doc


def _shape_cron(doc: dict[str, Any]) -> dict[str, Any]:
    return doc


def system_tables() -> dict[str, TableDef]:
    t = "_scheduled_functions"
    jobs = TableDef(
        name=t,
        fields={
            "name": _f(t, "name", str),
            "args": _f(t, "args", Any),
            "scheduled_time": _f(t, "scheduled_time", float),
            "completed_time": _f(t, "completed_time", float | None),
            "state": _f(t, "state", str),
            "error": _f(t, "error", str | None),
            "kind": _f(t, "kind", str),
            "lease_owner": _f(t, "lease_owner", str | None),
            "lease_expires": _f(t, "lease_expires", float | None),
            "attempts": _f(t, "attempts", int, default=0),
            "attempt_log": _f(t, "attempt_log", list | None),
            # when the running attempt of an action was claimed (for the log of an attempt
            # recovered after its worker died)
            "started_time": _f(t, "started_time", float | None),
            "cron": _f(t, "cron", str | None),
        },
        is_system=True,
        path_aliases={"state.kind": "state", "state.error": "error"},
        hidden=frozenset({"kind", "lease_owner", "lease_expires", "attempts", "cron", "started_time"}),
        shape=_shape_job,
    )
    jobs.indexes["by_state"] = ("state", "scheduled_time")
    jobs.index_aliases["by_state_and_scheduled_time"] = "by_state"
    # Internal: due pending jobs by kind (claims), finished jobs (purge), cron runs.
    jobs.indexes["pending_by_kind"] = ("kind", "scheduled_time")
    jobs.index_where["pending_by_kind"] = "\"state\" = 'pending'"
    jobs.indexes["by_completed_time"] = ("completed_time",)
    jobs.index_where["by_completed_time"] = "\"completed_time\" IS NOT NULL"
    # One occurrence of a cron is one job, even with several workers; only cron jobs are
    # in this index, so ordinary jobs do not pay for it.
    jobs.unique_indexes["cron_occurrence"] = ("cron", "scheduled_time")
    jobs.index_where["u_cron_occurrence"] = "\"cron\" IS NOT NULL"

    s = "_storage"
    storage = TableDef(
        name=s,
        fields={
            "sha256": _f(s, "sha256", str),
            "size": _f(s, "size", int),
            "content_type": _f(s, "content_type", str | None),
        },
        is_system=True,
        shape=_shape_storage,
    )

    # One row per cron (see crons.py): what it runs, when it runs next, its running job
    # (at most one at a time) and the outcome of its last RECENT_RUNS runs.
    c = "_cron_jobs"
    crons = TableDef(
        name=c,
        fields={
            "name": _f(c, "name", str),
            "schedule": _f(c, "schedule", dict),
            "function": _f(c, "function", str),
            "args": _f(c, "args", Any),
            "tz": _f(c, "tz", str | None),
            "origin": _f(c, "origin", str),
            "next_run": _f(c, "next_run", float),
            "last_runs": _f(c, "last_runs", list, default=[]),
            "current_job": _f(c, "current_job", Annotated[str, IdRef("_scheduled_functions")] | None),
        },
        is_system=True,
        shape=_shape_cron,
    )
    crons.unique_indexes["name"] = ("name",)
    crons.indexes["name"] = ("name",)
    crons.index_aliases["by_name"] = "name"
    crons.indexes["by_next_run"] = ("next_run",)
    return {t: jobs, s: storage, c: crons}
