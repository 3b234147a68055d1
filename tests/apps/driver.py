"""A client process for concurrency tests: ``python -m tests.apps.driver SEED OPS``.

It opens the App of ``tests/apps/crash_app.py`` on ``ENTS_TEST_URL`` and performs OPS random
operations while workers and other drivers run: schedule mutations and actions (due now or
soon), cancel its jobs, create ents with a linked job (``deletion="hard"``) and delete them,
insert users with emails drawn from a small pool (so unique violations happen), rename
them. The cancel and delete mutations record the job's state just before they acted (in
the ``observations`` table, atomically with the cancel), which is what the test checks
the outcome against.
"""

from __future__ import annotations

import random
import sys

from ents import EntsError, UniqueConstraintError
from tests.apps.crash_app import make_app

EMAILS = 12


def main(seed: int, ops: int) -> int:
    app = make_app(with_cron=False)
    rng = random.Random(seed)
    jobs: list[str] = []
    owners: list[str] = []
    for i in range(ops):
        op = rng.choices(["schedule", "cancel", "link", "delete", "user", "rename"], weights=[4, 3, 2, 2, 2, 1])[0]
        try:
            if op == "schedule":
                jobs.append(
                    app.run_mutation(
                        "crash:schedule_one",
                        {"key": f"d{seed}-{i}", "delay_ms": rng.choice([0, 0, 20, 100, 400]), "action": rng.random() < 0.3},
                    )
                )
            elif op == "cancel" and jobs:
                app.run_mutation("crash:cancel", {"job": jobs.pop(rng.randrange(len(jobs)))})
            elif op == "link":
                owners.append(
                    app.run_mutation(
                        "crash:make_linked",
                        {"name": f"d{seed}-o{i}", "delay_ms": rng.choice([0, 20, 100, 400]), "action": rng.random() < 0.5},
                    )
                )
            elif op == "delete" and owners:
                app.run_mutation("crash:delete_linked", {"owner": owners.pop(rng.randrange(len(owners)))})
            elif op == "user":
                app.run_mutation("crash:add_user", {"email": f"u{rng.randrange(EMAILS)}@x"})
            elif op == "rename":
                app.run_mutation(
                    "crash:rename_user", {"email": f"u{rng.randrange(EMAILS)}@x", "new_email": f"u{rng.randrange(EMAILS)}@x"}
                )
        except UniqueConstraintError:
            pass  # expected: the pool of emails is small
        except EntsError as exc:
            print(f"driver {seed}: {op} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2])))
