"""Shared helpers for the benchmarks: results, timing, temp databases, environment.

Every benchmark module builds a :class:`Section` (absolute figures, ratios against
baselines measured in the same run, targets and correctness checks) and can run alone
(``python -m bench.<module>``) or from ``python -m bench``, which runs each module in
its own process and collects the sections as JSON.

Absolute numbers depend on the machine; ratios against baselines measured in the same
process, on the same data and with the same SQLite settings are what the targets are
about. Contenders are interleaved round by round so that a noisy neighbour hits all
of them alike, and the median round is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


# -- results ---------------------------------------------------------------------------


@dataclass
class Row:
    """One contender's figure. ``value`` is a time in seconds or a rate per second."""

    label: str
    value: float | None
    unit: str  # "s", "ms", "ops/s", "jobs/s", "MiB", "count"
    n: int | None = None  # items processed per measurement (rows, ops, jobs)
    detail: str = ""
    spread: str = ""  # e.g. min-max of the rounds
    is_ents: bool = False


@dataclass
class Table:
    """A group of rows measured side by side (same data, same settings)."""

    title: str
    rows: list[Row]
    higher_is_better: bool
    reference: str | None = None  # label of the row ratios are taken against
    note: str = ""
    compare: bool = True  # show the "ents vs this" column

    def row(self, label: str) -> Row:
        for r in self.rows:
            if r.label == label:
                return r
        raise KeyError(label)


@dataclass
class Target:
    description: str  # e.g. "ents time <= 3x raw two-query time"
    value: float | None  # the measured ratio
    op: str  # "<=" or ">="
    threshold: float
    detail: str = ""
    unit: str = "x"  # "x" for ratios, or a unit such as "ms" / "MiB"

    @property
    def met(self) -> bool | None:
        if self.value is None or self.op == "info":
            return None
        return self.value <= self.threshold if self.op == "<=" else self.value >= self.threshold


@dataclass
class Check:
    description: str
    ok: bool
    detail: str = ""


@dataclass
class Section:
    key: str
    title: str
    params: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None  # why the benchmark could not run here (e.g. no server); not a failure
    seconds: float = 0.0

    def check(self, description: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(description, bool(ok), detail))
        return bool(ok)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> Section:
        s = Section(data["key"], data["title"], data.get("params", {}))
        s.tables = [
            Table(t["title"], [Row(**r) for r in t["rows"]], t["higher_is_better"], t.get("reference"), t.get("note", ""),
                  t.get("compare", True))
            for t in data.get("tables", [])
        ]
        s.targets = [Target(**t) for t in data.get("targets", [])]
        s.checks = [Check(**c) for c in data.get("checks", [])]
        s.notes = list(data.get("notes", []))
        s.error = data.get("error")
        s.skipped = data.get("skipped")
        s.seconds = data.get("seconds", 0.0)
        return s


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


# -- formatting ------------------------------------------------------------------------


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "s":
        if value < 1:
            return f"{value * 1000:.1f} ms"
        return f"{value:.2f} s"
    if unit in ("ops/s", "jobs/s"):
        return f"{value:,.0f} {unit}"
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    if unit == "count":
        return f"{value:,.0f}"
    return f"{value:g} {unit}"


def fmt_ratio(r: float | None) -> str:
    if r is None:
        return "n/a"
    if r >= 100:
        return f"{r:.0f}x"
    if r >= 10:
        return f"{r:.1f}x"
    return f"{r:.2f}x"


def ents_vs(table: Table, row: Row) -> str:
    """How the ents row of ``table`` compares with ``row`` in words (``2.1x faster``)."""
    ents = next((r for r in table.rows if r.is_ents), None)
    if ents is None or row.is_ents or ents.value is None or row.value is None or not row.value or not ents.value:
        return ""
    speed = (ents.value / row.value) if table.higher_is_better else (row.value / ents.value)
    if speed >= 1:
        return f"ents {fmt_ratio(speed)} faster"
    return f"ents {fmt_ratio(1 / speed)} slower"


def section_markdown(s: Section) -> str:
    out = [f"## {s.title}", ""]
    if s.params:
        out.append("Parameters: " + ", ".join(f"{k}={v}" for k, v in s.params.items()))
        out.append("")
    if s.error:
        out += ["**This benchmark failed:**", "", "```", s.error.rstrip(), "```", ""]
    if s.skipped:
        out += [f"**Skipped:** {s.skipped}", ""]
    for t in s.tables:
        out.append(f"### {t.title}")
        out.append("")
        if t.note:
            out += [t.note, ""]
        ref = t.row(t.reference) if t.reference else None
        head = ["contender", "value", "n"]
        align = ["---", "---:", "---:"]
        if ref:
            head.append(f"÷ {t.reference}")
            align.append("---:")
        if t.compare:
            head.append("ents vs this")
            align.append("---")
        head += ["rounds (min–max)", "notes"]
        align += ["---", "---"]
        out.append("| " + " | ".join(head) + " |")
        out.append("| " + " | ".join(align) + " |")
        for r in t.rows:
            label = f"**{r.label}**" if r.is_ents else r.label
            cells = [label, fmt_value(r.value, r.unit), f"{r.n:,}" if r.n is not None else ""]
            if ref:
                cells.append(fmt_ratio(ratio(r.value, ref.value)))
            if t.compare:
                cells.append(ents_vs(t, r))
            cells += [r.spread, r.detail]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    if s.targets:
        out += ["| target | measured | met |", "| --- | ---: | :---: |"]
        for tg in s.targets:
            met = "(reported)" if tg.op == "info" else {True: "yes", False: "**NO**", None: "n/a"}[tg.met]
            if tg.value is None:
                v = "n/a"
            elif tg.unit == "x":
                v = fmt_ratio(tg.value)
            else:
                v = fmt_value(tg.value, tg.unit)
            d = f" ({tg.detail})" if tg.detail else ""
            out.append(f"| {tg.description}{d} | {v} | {met} |")
        out.append("")
    if s.checks:
        out.append("Correctness checks:")
        out.append("")
        for c in s.checks:
            d = f" — {c.detail}" if c.detail else ""
            out.append(f"- [{'x' if c.ok else ' '}] {c.description}{'' if c.ok else ' **FAILED**'}{d}")
        out.append("")
    if s.notes:
        out += [*[f"- {n}" for n in s.notes], ""]
    out.append(f"_Section took {s.seconds:.0f} s._")
    out.append("")
    return "\n".join(out)


# -- environment -----------------------------------------------------------------------


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "not installed"


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "ents"], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + (" (ents/ has uncommitted changes)" if dirty else "")
    except Exception:
        return "unknown"


def environment() -> dict[str, str]:
    return {
        "date (UTC)": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "Python": platform.python_version(),
        "SQLite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "CPUs": str(os.cpu_count()),
        "ents commit": git_revision(),
        "SQLAlchemy": _version("SQLAlchemy"),
        "SQLModel": _version("sqlmodel"),
        "Peewee": _version("peewee"),
        "Huey": _version("huey"),
        "Procrastinate": _version("procrastinate"),
        "psycopg": _version("psycopg"),
        "pydantic": _version("pydantic"),
    }


# -- SQLite ----------------------------------------------------------------------------

#: pragmas applied to every baseline connection; the same as ents' SQLite backend sets
#: (see ents/backends/sqlite.py), except synchronous which is the benchmark's setting.
COMMON_PRAGMAS = (
    ("journal_mode", "WAL"),
    ("busy_timeout", "5000"),
    ("temp_store", "MEMORY"),
    ("cache_size", "-32000"),
    ("foreign_keys", "OFF"),
)


def apply_pragmas(conn: Any, synchronous: str) -> None:
    """Apply the shared pragmas to a DB-API connection (sqlite3 or a driver connection)."""
    cur = conn.cursor()
    for name, value in COMMON_PRAGMAS:
        cur.execute(f"PRAGMA {name}={value}")
    cur.execute(f"PRAGMA synchronous={synchronous.upper()}")
    cur.close()


def raw_connect(path: str, synchronous: str) -> sqlite3.Connection:
    """A raw sqlite3 connection in autocommit mode (transactions are explicit)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=512)
    apply_pragmas(conn, synchronous)
    return conn


def ents_url(path: str, synchronous: str) -> str:
    return f"sqlite:///{path}?synchronous={synchronous.lower()}"


def checkpoint_and_close(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def copy_db(src: str, dst: str) -> None:
    """Copy a closed (checkpointed) SQLite file, with its WAL if one is left."""
    shutil.copyfile(src, dst)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(src + suffix):
            shutil.copyfile(src + suffix, dst + suffix)


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[str]:
    """A temporary directory on a real disk (``BENCH_TMPDIR`` overrides the location)."""
    base = os.environ.get("BENCH_TMPDIR") or None
    d = tempfile.mkdtemp(prefix=f"ents-bench-{prefix}-", dir=base)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# -- timing ----------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def interleave(contenders: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Run each contender ``rounds`` times, round-robin; returns per-contender times and last results."""
    times: dict[str, list[float]] = {k: [] for k in contenders}
    results: dict[str, Any] = {}
    for _ in range(warmup):
        for k, fn in contenders.items():
            results[k] = fn()
    for i in range(rounds):
        order = list(contenders)
        if i % 2:
            order.reverse()  # so that no contender always runs right after the same one
        for k in order:
            dt, results[k] = timed(contenders[k])
            times[k].append(dt)
    return times, results


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def spread_s(xs: list[float]) -> str:
    if len(xs) < 2:
        return ""
    return f"{fmt_value(min(xs), 's')}–{fmt_value(max(xs), 's')}"


def spread_rate(xs: list[float], unit: str) -> str:
    if len(xs) < 2:
        return ""
    return f"{min(xs):,.0f}–{max(xs):,.0f}"


def percentile(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# -- memory ----------------------------------------------------------------------------


def rss_mib(pid: int | str = "self") -> tuple[float, float]:
    """(current RSS, peak RSS) in MiB from /proc (Linux)."""
    cur = peak = float("nan")
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return cur, peak


# -- command line ----------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes, one round: a smoke run (numbers are not meaningful)")
    p.add_argument("--json", metavar="PATH", help="write the section as JSON here (used by python -m bench)")
    p.add_argument("--rounds", type=int, default=None, help="measured rounds per contender")
    return p


def finish(section: Section, args: argparse.Namespace, started: float) -> None:
    section.seconds = time.monotonic() - started
    if args.json:
        with open(args.json, "w") as f:
            json.dump(section.to_json(), f, indent=1)
    else:
        print(section_markdown(section))
        bad = [c for c in section.checks if not c.ok]
        if bad or section.error:
            sys.exit(1)


def run_main(key: str, title: str, build: Callable[[Section, argparse.Namespace], None], p: argparse.ArgumentParser) -> None:
    """Parse arguments, run ``build`` into a Section, print it (or write JSON)."""
    import traceback

    args = p.parse_args()
    started = time.monotonic()
    section = Section(key, title)
    try:
        build(section, args)
    except Exception:
        section.error = traceback.format_exc()
    finish(section, args, started)


def progress(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- draining --------------------------------------------------------------------------

#: a drain that makes no progress for this long is reported as stalled
STALL_S = 60.0


class DrainError(Exception):
    """The contender did not drain its jobs correctly (reported, not worked around)."""


def wait_drained(
    has_pending: Callable[[], bool],
    pending_count: Callable[[], int],
    what: str,
    dead: Callable[[], str | None],
    poll_s: float = 0.002,
) -> float:
    """Poll until nothing is pending; returns the (perf_counter) time it became so.

    Once a second it checks for progress (DrainError after STALL_S without any) and asks
    ``dead()`` whether the consumer is gone: a reason (str) ends the wait, with a
    DrainError unless the jobs were all done by then.
    """
    last_count = pending_count()
    last_change = time.monotonic()
    next_check = last_change + 1.0
    while True:
        if not has_pending():
            return time.perf_counter()
        time.sleep(poll_s)
        t = time.monotonic()
        if t < next_check:
            continue
        next_check = t + 1.0
        c = pending_count()
        if c != last_count:
            last_count, last_change = c, t
        elif t - last_change > STALL_S:
            raise DrainError(f"{what}: no progress for {STALL_S:.0f} s with {c} job(s) still pending")
        why = dead()
        if why is not None:
            if not has_pending():
                return time.perf_counter()
            raise DrainError(f"{what}: {why}, with {pending_count()} job(s) still pending")
