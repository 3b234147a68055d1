"""An App used by multi-process tests: worker processes import it by name.

The database URL comes from ENTS_TEST_URL; action side effects are appended to the file
named by ENTS_TEST_LOG so tests can count how many times each action really started.
"""

from __future__ import annotations

import os
import time

from ents import App, define_ent, define_ent_schema

schema = define_ent_schema(
    {
        "runs": define_ent({}).field("key", str, unique=True),
        "counters": define_ent({"name": str, "n": int}).index("by_name", ["name"]),
    }
)


def _log(line: str) -> None:
    path = os.environ.get("ENTS_TEST_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


def make_app() -> App:
    app = App(schema, os.environ["ENTS_TEST_URL"])

    @app.internal_mutation(name="jobs:record")
    def record(ctx, key: str) -> None:
        # The unique key makes a second run of the same job fail loudly.
        ctx.table("runs").insert({"key": key})

    @app.internal_action(name="jobs:slow_action")
    def slow_action(ctx, key: str, seconds: float = 0.0) -> None:
        _log(f"start {key}")
        time.sleep(seconds)
        ctx.run_mutation("jobs:record", {"key": key})
        _log(f"end {key}")

    @app.mutation(name="jobs:schedule_many")
    def schedule_many(ctx, prefix: str, n: int, kind: str = "mutation", seconds: float = 0.0) -> None:
        for i in range(n):
            if kind == "mutation":
                ctx.scheduler.run_after(0, "jobs:record", {"key": f"{prefix}{i}"})
            else:
                ctx.scheduler.run_after(0, "jobs:slow_action", {"key": f"{prefix}{i}", "seconds": seconds})

    return app


app = make_app if os.environ.get("ENTS_TEST_URL") else None
