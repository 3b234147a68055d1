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


def ents_cmd(url: str, *args: str, path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ENTS_TEST_URL=url, PYTHONPATH=os.pathsep.join(str(p) for p in (ROOT, path) if p))
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


MODULE = """
import os

from ents import App, define_ent, define_ent_schema

schema = define_ent_schema({"notes": define_ent({"text": str})})
not_an_app = 42


def make():
    app = App(schema, os.environ["ENTS_TEST_URL"])

    @app.mutation(name="cli:boom")
    def boom(ctx) -> None:
        raise ValueError("the handler failed\\non two lines")

    return app


def bad_factory():
    raise RuntimeError("the factory failed")
"""


def _one_line_error(code: int, stderr: str) -> str:
    """The command failed with exit code 1 and said why in one line, without a traceback."""
    assert code == 1, (code, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ents: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def _in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, str]:
    """``ents ARGS`` run by its main() in this process (a subprocess costs seconds)."""
    from ents.cli import main

    monkeypatch.setenv("ENTS_TEST_URL", url)
    capsys.readouterr()
    code = main(["--log-level", "WARNING", *args])
    return code, capsys.readouterr().err


def test_every_command_fails_with_one_clear_line(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from ents.ids import _check, _table_code

    (tmp_path / "cli_mod.py").write_text(MODULE)
    (tmp_path / "broken_mod.py").write_text("raise RuntimeError('the module failed to import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    forged = f"{_table_code(1)}{2**64:x}{_check(1, 2**64)}"  # a job id with a row key beyond 64 bits
    app = "cli_mod:make"
    cases = [
        (("cancel", app, forged), "Invalid id"),
        (("cancel", app, "not-an-id"), "Invalid id"),
        (("run", app, "cli:nope"), "cli:nope"),
        (("run", app, "cli:boom", "--args", "{not json"), "not valid JSON"),
        (("run", app, "cli:boom", "--args", "[1, 2]"), "JSON object"),
        (("run", app, "cli:boom", "--args", '{"x": 5}'), "unknown argument `x`"),
        (("run", app, "cli:boom"), "ValueError: the handler failed on two lines"),
        (("jobs", "broken_mod:app"), "the module failed to import"),
        (("jobs", "cli_mod:not_an_app"), "not an ents App"),
        (("jobs", "cli_mod:bad_factory"), "the factory failed"),
        (("crons", "cli_mod:missing"), "no attribute"),
        (("jobs", "cli_mod"), "MODULE:APP"),
        (("worker", app, "--concurrency", "0"), "concurrency"),
    ]
    for args, words in cases:
        line = _one_line_error(*_in_process(monkeypatch, capsys, url, *args))
        assert words in line, (args, line)
    # And as a real command, for a forged id whose row key is beyond 64 bits.
    out = ents_cmd(url, "cancel", "cli_mod:make", forged, path=tmp_path)
    assert "Invalid id" in _one_line_error(out.returncode, out.stderr) and not out.stdout


def test_cli_errors_never_show_the_database_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    secret = "s3cret-pa55word"
    (tmp_path / "cli_mod.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    urls = [
        f"postgress://app:{secret}@127.0.0.1/db",
        f"postgresql://app:{secret}@127.0.0.1:1/db?pool_size=0",
        f"postgresql://app:{secret}@127.0.0.1:1/db?connect_timeout=never",
        f"sqlite://app:{secret}@somewhere/db.sqlite",
    ]
    for url in urls:
        for command in ("jobs", "crons", "cancel", "run", "worker"):
            args = [command, "cli_mod:make"] + {"cancel": ["some-id"], "run": ["cli:boom"]}.get(command, [])
            code, err = _in_process(monkeypatch, capsys, url, *args)
            line = _one_line_error(code, err)
            assert "ConfigurationError" in line and secret not in err, line
    out = ents_cmd(urls[1], "jobs", "cli_mod:make", path=tmp_path)
    assert secret not in out.stderr + out.stdout and "pool_size" in _one_line_error(out.returncode, out.stderr)
