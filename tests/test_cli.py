"""The ents command: list and cancel jobs, list crons, call functions (the worker command is
exercised by the multi-process tests in tests/test_worker.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def ents_cmd(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ENTS_TEST_URL=url, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "ents", "--log-level", "WARNING", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def test_run_jobs_and_cancel(url: str) -> None:
    app = "tests.apps.jobs_app:app"
    out = ents_cmd(url, "run", app, "jobs:schedule_many", "--args", json.dumps({"prefix": "k", "n": 2}))
    assert out.returncode == 0, out.stderr
    listed = ents_cmd(url, "jobs", app, "--state", "pending", "--json")
    assert listed.returncode == 0, listed.stderr
    jobs = json.loads(listed.stdout)
    assert [j["args"]["key"] for j in jobs] == ["k1", "k0"]  # newest first
    assert all(j["state"] == {"kind": "pending"} and j["name"] == "jobs:record" for j in jobs)

    canceled = ents_cmd(url, "cancel", app, jobs[0]["_id"])
    assert canceled.returncode == 0 and f"canceled {jobs[0]['_id']}" in canceled.stdout
    table = ents_cmd(url, "jobs", app)
    assert "canceled" in table.stdout and "pending" in table.stdout

    bad = ents_cmd(url, "cancel", app, "not-an-id")
    assert bad.returncode == 1 and "Invalid id" in bad.stderr


def test_crons_command_lists_crons(url: str) -> None:
    out = ents_cmd(url, "crons", "tests.apps.jobs_app:app", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_bad_app_reference_is_a_clear_error(url: str) -> None:
    out = ents_cmd(url, "jobs", "tests.apps.jobs_app")
    assert out.returncode != 0 and "MODULE:APP" in out.stderr
    out = ents_cmd(url, "jobs", "tests.apps.nope:app")
    assert out.returncode != 0 and "cannot import" in out.stderr
