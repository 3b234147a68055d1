"""Cron jobs (work in progress)."""

from __future__ import annotations

from typing import Any


class CronJobs:
    pass


def cron_jobs() -> CronJobs:
    return CronJobs()


def reconcile(app: Any) -> None:
    return None


def fire_due(app: Any) -> int:
    return 0


def next_cron_due(app: Any) -> float | None:
    return None


def record_runs(tx: Any, runs: list[Any]) -> None:
    return None


class RuntimeCrons:
    def __init__(self, tx: Any) -> None:
        self._tx = tx
