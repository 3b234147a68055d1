"""The README and the public surface stay true: its first example is a runnable file,
and every public name is documented."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import ents

ROOT = Path(__file__).resolve().parent.parent


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_readme_first_example_is_the_quickstart_file():
    readme = (ROOT / "README.md").read_text()
    first = python_blocks(readme)[0]
    source = (ROOT / "schema_examples" / "quickstart.py").read_text()
    assert first.strip() in source, "README's first example must be copied verbatim from schema_examples/quickstart.py"


def test_quickstart_runs(capsys):
    namespace = runpy.run_module("schema_examples.quickstart", run_name="__main__")
    namespace["app"].close()  # the module's App: a script's ends with its process
    out = capsys.readouterr().out.splitlines()
    assert "'status': 'pending'" in out[0]
    assert "'status': 'success'" in out[1]
    assert out[2] == "[]"


def test_every_public_name_has_a_docstring():
    missing = [name for name in ents.__all__ if not (getattr(ents, name).__doc__ or "").strip()]
    assert missing == []


def test_readme_names_the_two_commands_and_ci_runs_the_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "./scripts/demo" in readme and "./scripts/test" in readme
    assert "./scripts/test" in (ROOT / ".ci" / "run").read_text()
