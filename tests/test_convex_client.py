"""The test of done for the HTTP API: Convex's own JavaScript client, unchanged.

``ConvexHttpClient`` from the npm package ``convex`` calls an ents app served by uvicorn
(mounted under a path, as in a FastAPI app): mutations, queries and actions, values of every
kind, ``ConvexError`` data, a bearer token, the log lines, and internal functions refused.

Needs node and npm (the package is installed into a temporary folder once per test
session). Without them, or without network for the install, the tests are skipped saying
why; with ``ENTS_REQUIRE_NODE=1`` (as in CI) they fail instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from ents import App
from ents.http import asgi_app
from tests.serving import serving
from tests.test_http import M, build, schema

REQUIRED = bool(os.environ.get("ENTS_REQUIRE_NODE"))
INSTALL_TIMEOUT = 600

SCRIPT = r"""
import { ConvexHttpClient } from "convex/browser";
import { makeFunctionReference } from "convex/server";
import { ConvexError } from "convex/values";

const [url, module] = process.argv.slice(2);
const logged = [];
const keep = (...args) => logged.push(args.filter((a) => !String(a).startsWith("color:")).join(" "));
const client = new ConvexHttpClient(url, { logger: { log: keep, warn: keep, error: keep, logVerbose() {} } });
const fn = (name) => makeFunctionReference(`${module}:${name}`);

async function failure(call) {
  try {
    await call();
    return { failed: false };
  } catch (e) {
    return { failed: true, isConvexError: e instanceof ConvexError, message: e.message, data: e.data };
  }
}

const out = {};
out.added = await client.mutation(fn("add"), { text: "from js" });
out.shout = await client.action(fn("shout"), { text: "hey" });
out.count = await client.action(fn("count"), {});
out.texts = await client.query(fn("texts"), {});
out.docs = await client.query(fn("docs"));
out.values = await client.query(fn("values"), { n: 2n ** 62n, x: 1.5, b: new Uint8Array([0, 255]).buffer });
out.convexError = await failure(() => client.mutation(fn("refuse"), { how: "convex" }));
out.serverError = await failure(() => client.mutation(fn("refuse"), { how: "python" }));
out.internal = await failure(() => client.mutation(fn("wipe"), {}));
out.missing = await failure(() => client.mutation(fn("wipf"), {}));
out.wrongKind = await failure(() => client.query(fn("add"), { text: "x" }));
out.badArgs = await failure(() => client.mutation(fn("add"), { text: 5 }));
out.anonymous = await client.query(fn("whoami"), {});
client.setAuth("t-ada");
out.identity = await client.query(fn("whoami"), {});
client.setAuth("t-eve");
out.badToken = await failure(() => client.query(fn("whoami"), {}));
out.logged = logged;

const show = (key, v) => {
  if (typeof v === "bigint") return { bigint: v.toString() };
  if (v instanceof ArrayBuffer) return { bytes: Buffer.from(v).toString("base64") };
  if (typeof v === "number" && (!Number.isFinite(v) || Object.is(v, -0))) return { number: String(Object.is(v, -0) ? "-0" : v) };
  return v;
};
console.log(JSON.stringify(out, show));
"""


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"ENTS_REQUIRE_NODE is set but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def convex_js(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the npm package ``convex`` installed (once per session) and the script."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("node and npm are needed to run Convex's JavaScript client (not found on PATH)")
    folder = tmp_path_factory.mktemp("convex-js")
    (folder / "package.json").write_text(json.dumps({"name": "ents-convex-client-test", "private": True, "type": "module"}))
    try:
        # --ignore-scripts: the client needs none of its dependencies' install scripts.
        out = subprocess.run(
            [str(npm), "install", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error", "convex@1"],
            cwd=folder, capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        _unavailable(f"`npm install convex` did not finish in {INSTALL_TIMEOUT} s (no network?)")
    if out.returncode != 0:
        tail = " ".join(out.stderr.split())[-300:]
        _unavailable(f"`npm install convex` failed (no network?): {tail}")
    (folder / "client.mjs").write_text(SCRIPT)
    return folder


def run_client(folder: Path, url: str) -> dict[str, Any]:
    out = subprocess.run(
        ["node", "client.mjs", url, M], cwd=folder, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_convex_http_client_calls_an_ents_app(convex_js: Path, make_app: Callable[..., App]) -> None:
    app = build(make_app(schema))
    users = {"t-ada": {"subject": "ada", "name": "Ada"}}
    api = asgi_app(app, authenticate=lambda token: users[token], log_lines=True)
    web = Starlette(routes=[Mount("/convex", app=api)])  # mounted under a path, like in FastAPI
    with serving(web) as port:
        out = run_client(convex_js, f"http://127.0.0.1:{port}/convex")

    assert out["added"] == app.run_query(f"{M}:docs")[0]["_id"]
    assert out["shout"] == "HEY" and out["count"] == 2
    assert out["texts"] == ["from js", "HEY"]
    assert [d["text"] for d in out["docs"]] == ["from js", "HEY"] and out["docs"][0]["_creation_time"] == app.run_query(f"{M}:docs")[0]["_creation_time"]
    # int64 beyond 2**53 as a bigint, bytes as an ArrayBuffer, special floats as numbers
    assert out["values"] == {
        "n": {"bigint": str(2**62)}, "x": 1.5, "b": {"bytes": "AP8="}, "big": {"bigint": str(2**60)},
        "nan": {"number": "NaN"}, "inf": {"number": "-Infinity"}, "neg0": {"number": "-0"},
    }
    # a ConvexError arrives as one, with its data decoded
    assert out["convexError"]["isConvexError"] is True
    assert out["convexError"]["data"] == {"code": "FULL", "limit": {"bigint": str(2**60)}, "blob": {"bytes": "AQ=="}}
    # another failure: an Error saying only "Server Error"
    assert out["serverError"] == {"failed": True, "isConvexError": False, "message": "Server Error"}
    # internal and missing functions are refused alike; a wrong kind or bad arguments too
    assert out["internal"]["failed"] and not out["internal"]["isConvexError"]
    assert "Could not find public function" in out["internal"]["message"]
    assert out["internal"]["message"] == out["missing"]["message"].replace("wipf", "wipe")
    assert "WrongFunctionKind" in out["wrongKind"]["message"] and "InvalidArguments" in out["badArgs"]["message"]
    # the token: the identity, or a refusal
    assert out["anonymous"] is None and out["identity"] == {"subject": "ada", "name": "Ada"}
    assert out["badToken"]["failed"] and "Unauthenticated" in out["badToken"]["message"]
    # the client printed the functions' log lines its own way
    assert any(line.endswith("[WARN] adding from js") and f"M({M}:add)" in line for line in out["logged"]), out["logged"]
    assert any("[WARN] shouting" in line for line in out["logged"]), out["logged"]
    assert app.run_query(f"{M}:texts") == ["from js", "HEY"]  # the refused calls changed nothing
