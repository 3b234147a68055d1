"""Convex's HTTP API (``ents.http.asgi_app``): the protocol, auth, and hostile input.

What a Convex deployment answers, as convex-js' ``ConvexHttpClient`` reads it: 200 with
``value`` and ``logLines``, 560 with ``errorMessage`` (and ``errorData`` for a ConvexError),
4xx ``{"code", "message"}`` for requests refused before the function runs. Hostile requests
get a 4xx and change nothing; no response ever shows a traceback or the database URL.
The official JavaScript client itself is run against it in tests/test_convex_client.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ents import App, ConfigurationError, ConvexError, DatabaseError, define_ent, define_ent_schema
from ents.http import asgi_app
from ents.http.codec import decode_args, encode
from ents.http.logs import MAX_LINES
from tests.pg import wait_for
from tests.serving import serving

WAIT = 60.0
SECRET = "pa55-w0rd_HTTP"
ROOT = Path(__file__).resolve().parent.parent
M = __name__  # the module part of this file's function names

schema = define_ent_schema({
    "notes": define_ent({"text": str}).field("owner", str | None, default=None).field("blob", bytes | None, default=None),
})


class NotFound(ConvexError):
    """Like kitcn's CRPCError: a ConvexError with an HTTP status and a code."""

    def __init__(self, message: str) -> None:
        super().__init__({"code": "NOT_FOUND", "message": message})
        self.code = "NOT_FOUND"
        self.http_status = 404


def build(app: App) -> App:
    log = logging.getLogger("notes.functions")

    @app.mutation(name=f"{M}:add")
    def add(ctx: Any, text: str) -> str:
        log.warning("adding %s", text)
        return str(ctx.table("notes").insert({"text": text, "owner": ctx.auth.get_user_identity()}))

    @app.query(name=f"{M}:texts")
    def texts(ctx: Any) -> list[str]:
        return [n.text for n in ctx.table("notes")]

    @app.query(name=f"{M}:docs")
    def docs(ctx: Any) -> list[Any]:
        return list(ctx.table("notes"))  # ents: sent as their documents

    @app.query(name=f"{M}:whoami")
    def whoami(ctx: Any) -> Any:
        return ctx.auth.get_user_identity()

    @app.internal_mutation(name=f"{M}:wipe")
    def wipe(ctx: Any) -> None:
        for n in ctx.table("notes"):
            n.delete()

    @app.query(name=f"{M}:values")
    def values(ctx: Any, n: int, x: float, b: bytes) -> dict[str, Any]:
        return {"n": n, "x": x, "b": b, "big": 2**60, "nan": float("nan"), "inf": float("-inf"), "neg0": -0.0}

    @app.action(name=f"{M}:shout")
    async def shout(ctx: Any, text: str) -> str:
        logging.getLogger("notes.shout").warning("shouting")
        await ctx.run_mutation(add, {"text": text.upper()})
        return text.upper()

    @app.action(name=f"{M}:count")
    def count(ctx: Any) -> int:
        return len(ctx.run_query(texts))

    @app.mutation(name=f"{M}:refuse")
    def refuse(ctx: Any, how: str) -> None:
        ctx.table("notes").insert({"text": "never committed"})
        if how == "convex":
            raise ConvexError({"code": "FULL", "limit": 2**60, "blob": b"\x01"})
        if how == "string":
            raise ConvexError("plain words")
        if how == "not found":
            raise NotFound("no such note")
        if how == "ents":
            ctx.table("notes").get_x("nonsense")
        if how == "database":
            raise DatabaseError(f"Cannot connect to {ctx.app.url}")
        raise RuntimeError(f"{ctx.app.url} {SECRET} went wrong")

    @app.query(name=f"{M}:unsendable")
    def unsendable(ctx: Any, what: str) -> Any:
        return {"set": {1}} if what == "set" else {"é": 1}

    return app


@pytest.fixture
def app(make_app: Callable[..., App]) -> App:
    return build(make_app(schema))


def request(api: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://test") as http:
            return await http.request(method, path, **kwargs)

    return asyncio.run(asyncio.wait_for(go(), WAIT))


def post(api: Any, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    return request(api, "POST", path, json=body, **kwargs)


def texts(app: App) -> list[str]:
    return app.run_query(f"{M}:texts")  # type: ignore[no-any-return]


# -- the protocol ------------------------------------------------------------------------


def test_query_mutation_and_action_answer_as_convex_does(app: App) -> None:
    api = asgi_app(app)
    r = post(api, "/api/mutation", {"path": f"{M}:add", "args": {"text": "hi"}, "format": "json"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    note = r.json()["value"]
    assert r.json() == {"status": "success", "value": note, "logLines": []}
    # the client's form: args as a one-element list, convex_encoded_json
    r = post(api, "/api/action", {"path": f"{M}:shout", "args": [{"text": "yo"}], "format": "convex_encoded_json"})
    assert r.json() == {"status": "success", "value": "YO", "logLines": []}
    r = post(api, "/api/query", {"path": f"{M}:docs", "args": {}})
    assert [d["text"] for d in r.json()["value"]] == ["hi", "YO"]
    assert r.json()["value"][0]["_id"] == note and "_creation_time" in r.json()["value"][0]
    # no args and no format: {} and json
    assert post(api, "/api/action", {"path": f"{M}:count"}).json()["value"] == 2
    # /api/run/<module>/<function>, any kind; a dotted module may also be written with slashes
    assert post(api, f"/api/run/{M}/texts", {"args": {}}).json()["value"] == ["hi", "YO"]
    assert post(api, f"/api/run/{M.replace('.', '/')}/add", {"args": {"text": "3"}}).status_code == 200
    assert texts(app) == ["hi", "YO", "3"]


def test_values_in_both_formats(app: App) -> None:
    api = asgi_app(app)
    args = {"n": {"$integer": base64.b64encode((2**62).to_bytes(8, "little", signed=True)).decode()},
            "x": 1.5, "b": {"$bytes": base64.b64encode(b"\x00\xff").decode()}}
    encoded = post(api, "/api/query", {"path": f"{M}:values", "args": args, "format": "convex_encoded_json"}).json()
    value = encoded["value"]
    assert decode_args(value["n"]) == 2**62 and value["n"] == {"$integer": "AAAAAAAAAEA="}
    assert value["x"] == 1.5 and value["b"] == {"$bytes": "AP8="}
    assert decode_args(value["big"]) == 2**60
    assert math.isnan(struct.unpack("<d", base64.b64decode(value["nan"]["$float"]))[0])
    assert decode_args(value["inf"]) == float("-inf") and "$float" in value["neg0"]
    clean = post(api, "/api/query", {"path": f"{M}:values", "args": args, "format": "json"}).json()["value"]
    assert clean == {"n": 2**62, "x": 1.5, "b": "AP8=", "big": 2**60, "nan": "NaN", "inf": "-Infinity", "neg0": -0.0}
    # small ints are plain numbers in both (a JavaScript number holds them exactly)
    assert encode(7, "convex_encoded_json") == 7 and encode(2**53, "convex_encoded_json") == {"$integer": "AAAAAAAAIAA="}


def test_a_convex_error_carries_its_data(app: App) -> None:
    api = asgi_app(app)
    r = post(api, "/api/mutation", {"path": f"{M}:refuse", "args": {"how": "convex"}, "format": "convex_encoded_json"})
    assert r.status_code == 560
    body = r.json()
    assert body["status"] == "error" and body["logLines"] == []
    assert body["errorData"] == {"code": "FULL", "limit": {"$integer": "AAAAAAAAABA="}, "blob": {"$bytes": "AQ=="}}
    assert "FULL" in body["errorMessage"]
    r = post(api, "/api/mutation", {"path": f"{M}:refuse", "args": {"how": "string"}})
    assert (r.status_code, r.json()["errorMessage"], r.json()["errorData"]) == (560, "plain words", "plain words")
    # with an HTTP status (kitcn's CRPCError): that status, the same body, plus the code
    r = post(api, "/api/mutation", {"path": f"{M}:refuse", "args": {"how": "not found"}})
    assert r.status_code == 404
    assert r.json() == {
        "status": "error",
        "errorMessage": '{"code": "NOT_FOUND", "message": "no such note"}',
        "errorData": {"code": "NOT_FOUND", "message": "no such note"},
        "logLines": [],
        "code": "NOT_FOUND",
    }
    assert texts(app) == []  # every failed mutation rolled back


def test_other_failures_say_little(app: App) -> None:
    api = asgi_app(app)
    r = post(api, "/api/mutation", {"path": f"{M}:refuse", "args": {"how": "ents"}})
    assert r.status_code == 560 and r.json()["errorMessage"].startswith("InvalidIdError: ")
    assert "errorData" not in r.json()
    for how in ("database", "python"):
        r = post(api, "/api/mutation", {"path": f"{M}:refuse", "args": {"how": how}})
        assert r.json() == {"status": "error", "errorMessage": "Server Error", "logLines": []}, how
    # a result that cannot be sent is the function's error, saying where it is
    r = post(api, "/api/query", {"path": f"{M}:unsendable", "args": {"what": "set"}})
    assert r.status_code == 560 and "`set`" in r.json()["errorMessage"] and "set cannot be sent" in r.json()["errorMessage"]
    r = post(api, "/api/query", {"path": f"{M}:unsendable", "args": {"what": "key"}, "format": "convex_encoded_json"})
    assert r.status_code == 560 and "Convex clients" in r.json()["errorMessage"]
    assert post(api, "/api/query", {"path": f"{M}:unsendable", "args": {"what": "key"}}).json()["value"] == {"é": 1}
    assert texts(app) == []


def test_log_lines_are_the_calls_own(app: App) -> None:
    quiet = asgi_app(app)
    assert post(quiet, "/api/mutation", {"path": f"{M}:add", "args": {"text": "a"}}).json()["logLines"] == []
    api = asgi_app(app, log_lines=True)
    r = post(api, "/api/action", {"path": f"{M}:shout", "args": {"text": "b"}})
    # the action's line and that of the mutation it ran (in another thread); none of ents' own
    assert r.json()["logLines"] == ["[WARN] shouting", "[WARN] adding B"]
    r = post(api, "/api/mutation", {"path": f"{M}:refuse", "args": {"how": "python"}})
    assert r.json()["logLines"] == []  # the failure is logged by ents, not sent


def test_concurrent_calls_never_see_each_others_log_lines(make_app: Callable[..., App], backend: str) -> None:
    if backend == "memory":
        pytest.skip("in-memory SQLite runs one query at a time: the two calls cannot overlap")
    app = make_app(schema)
    barrier = threading.Barrier(2, timeout=WAIT)

    @app.query(name=f"{M}:talk")
    def talk(ctx: Any, who: str) -> None:
        logging.getLogger("talk").warning("%s before", who)
        barrier.wait()  # both calls are running at this point
        logging.getLogger("talk").warning("%s after", who)

    @app.query(name=f"{M}:chatty")
    def chatty(ctx: Any) -> None:
        for i in range(MAX_LINES + 10):
            logging.getLogger("talk").error("line %d", i)

    api = asgi_app(app, log_lines=True)

    async def both() -> list[Any]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://t") as http:
            return await asyncio.gather(*(
                http.post("/api/query", json={"path": f"{M}:talk", "args": {"who": w}}) for w in ("ann", "bob")
            ))

    ann, bob = asyncio.run(asyncio.wait_for(both(), WAIT))
    assert ann.json()["logLines"] == ["[WARN] ann before", "[WARN] ann after"]
    assert bob.json()["logLines"] == ["[WARN] bob before", "[WARN] bob after"]
    lines = post(api, "/api/query", {"path": f"{M}:chatty", "args": {}}).json()["logLines"]
    assert len(lines) == MAX_LINES + 1 and lines[0] == "[ERROR] line 0" and "10 more log lines" in lines[-1]


# -- auth --------------------------------------------------------------------------------


def test_a_bearer_token_becomes_the_identity(app: App) -> None:
    users = {"t-ada": {"subject": "ada"}}

    def authenticate(token: str) -> Any:
        return users[token]

    async def authenticate_async(token: str) -> Any:
        await asyncio.sleep(0)
        return users[token]

    for auth in (authenticate, authenticate_async):
        api = asgi_app(app, authenticate=auth)
        ok = post(api, "/api/query", {"path": f"{M}:whoami", "args": {}}, headers={"Authorization": "Bearer t-ada"})
        assert ok.json()["value"] == {"subject": "ada"}
        assert post(api, "/api/query", {"path": f"{M}:whoami", "args": {}}).json()["value"] is None
        for header in ("Bearer t-eve", "Bearer ", "Basic dXNlcjpwdw==", "Convex admin-key", "t-ada"):
            r = post(api, "/api/mutation", {"path": f"{M}:add", "args": {"text": "x"}}, headers={"Authorization": header})
            assert r.status_code == 401 and set(r.json()) == {"code", "message"}, header
            assert "KeyError" not in r.text and "t-eve" not in r.text
    no_auth = asgi_app(app)
    r = post(no_auth, "/api/mutation", {"path": f"{M}:add", "args": {"text": "x"}}, headers={"Authorization": "Bearer t"})
    assert (r.status_code, r.json()["code"]) == (401, "NoAuthProvider")
    assert texts(app) == []


# -- hostile input -----------------------------------------------------------------------


def hostile_requests() -> Iterator[tuple[str, str, str, dict[str, Any], int, str]]:
    """(what, method, path, httpx kwargs, status, code) of requests that must be refused."""
    js = {"content-type": "application/json"}
    add = {"path": f"{M}:add", "args": {"text": "x"}}
    yield "malformed JSON", "POST", "/api/mutation", {"content": b'{"path": ', "headers": js}, 400, "BadJsonBody"
    yield "invalid UTF-8", "POST", "/api/mutation", {"content": b'{"path": "\xff"}', "headers": js}, 400, "BadJsonBody"
    yield "NaN literal", "POST", "/api/mutation", {"content": b'{"path": "x", "args": {"text": NaN}}', "headers": js}, 400, "BadJsonBody"
    yield "deep nesting", "POST", "/api/mutation", {"content": b"[" * 2000 + b"]" * 2000, "headers": js}, 400, "BadJsonBody"
    yield "huge integer", "POST", "/api/mutation", {"content": b'{"args": {"text": ' + b"9" * 5000 + b"}}", "headers": js}, 400, "BadJsonBody"
    yield "a list body", "POST", "/api/mutation", {"json": [add]}, 400, "BadJsonBody"
    yield "a string body", "POST", "/api/mutation", {"json": "add"}, 400, "BadJsonBody"
    yield "no path", "POST", "/api/mutation", {"json": {"args": {}}}, 400, "BadJsonBody"
    yield "path not a string", "POST", "/api/mutation", {"json": {"path": ["x"], "args": {}}}, 400, "BadJsonBody"
    yield "args a string", "POST", "/api/mutation", {"json": {"path": f"{M}:add", "args": "x"}}, 400, "BadJsonBody"
    yield "args two objects", "POST", "/api/mutation", {"json": {"path": f"{M}:add", "args": [{}, {}]}}, 400, "BadJsonBody"
    yield "unknown format", "POST", "/api/mutation", {"json": {**add, "format": "xml"}}, 400, "BadFormat"
    yield "format not a string", "POST", "/api/mutation", {"json": {**add, "format": 1}}, 400, "BadFormat"
    yield "missing function", "POST", "/api/mutation", {"json": {"path": f"{M}:nothing", "args": {}}}, 400, "FunctionNotFound"
    yield "internal function", "POST", "/api/mutation", {"json": {"path": f"{M}:wipe", "args": {}}}, 400, "FunctionNotFound"
    yield "internal via run", "POST", f"/api/run/{M}/wipe", {"json": {"args": {}}}, 400, "FunctionNotFound"
    yield "built-in function", "POST", "/api/mutation", {"json": {"path": "ents:scheduled_delete", "args": {}}}, 400, "FunctionNotFound"
    yield "wrong kind", "POST", "/api/query", {"json": add}, 400, "WrongFunctionKind"
    yield "invalid arguments", "POST", "/api/mutation", {"json": {"path": f"{M}:add", "args": {"text": 5}}}, 400, "InvalidArguments"
    yield "extra arguments", "POST", "/api/mutation", {"json": {"path": f"{M}:add", "args": {"text": "x", "y": 1}}}, 400, "InvalidArguments"
    yield "a $ key", "POST", "/api/mutation", {"json": {"path": f"{M}:add", "args": {"$text": "x"}}}, 400, "InvalidArguments"
    yield "bad $integer", "POST", "/api/mutation", {"json": {"path": f"{M}:add", "args": {"text": {"$integer": "!!"}}}}, 400, "InvalidArguments"
    yield "short $float", "POST", "/api/mutation", {"json": {"path": f"{M}:add", "args": {"text": {"$float": "AA=="}}}}, 400, "InvalidArguments"
    yield "no function in run", "POST", "/api/run/add", {"json": {"args": {"text": "x"}}}, 400, "MissingIdentifier"
    yield "unknown endpoint", "POST", "/api/nothing", {"json": add}, 404, "NotFound"
    yield "root", "GET", "/", {}, 404, "NotFound"
    yield "GET", "GET", "/api/mutation", {"params": {"path": f"{M}:add"}}, 405, "MethodNotAllowed"
    yield "PUT", "PUT", "/api/mutation", {"json": add}, 405, "MethodNotAllowed"
    yield "form body", "POST", "/api/mutation", {"data": {"path": f"{M}:add"}}, 415, "BadContentType"
    yield "no content type", "POST", "/api/mutation", {"content": json.dumps(add).encode()}, 415, "BadContentType"
    yield "too large", "POST", "/api/mutation", {"json": {**add, "pad": "x" * 10_000}}, 413, "PayloadTooLarge"
    yield "bad token", "POST", "/api/mutation", {"json": add, "headers": {"Authorization": "Bearer nope"}}, 401, "Unauthenticated"
    yield "bad scheme", "POST", "/api/mutation", {"json": add, "headers": {"Authorization": "Basic eA=="}}, 401, "BadAuthHeader"


HOSTILE = list(hostile_requests())


@pytest.mark.parametrize("case", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_requests_get_a_4xx_and_change_nothing(app: App, case: Any) -> None:
    what, method, path, kwargs, status, code = case

    def authenticate(token: str) -> Any:
        if token != "good":
            raise PermissionError(f"bad token {token}")
        return "someone"

    api = asgi_app(app, authenticate=authenticate, max_body_bytes=8192)
    app.run_mutation(f"{M}:add", {"text": "before"})
    r = request(api, method, path, **kwargs)
    assert (r.status_code, r.json()) == (status, {"code": code, "message": r.json()["message"]}), r.text
    assert r.json()["message"] and "Traceback" not in r.text and "PermissionError" not in r.text
    assert texts(app) == ["before"]


def test_an_internal_function_looks_exactly_like_a_missing_one(app: App) -> None:
    api = asgi_app(app)
    for endpoint in ("/api/query", "/api/mutation", "/api/action"):
        internal = post(api, endpoint, {"path": f"{M}:wipe", "args": {"any": "thing"}})
        missing = post(api, endpoint, {"path": f"{M}:wipf", "args": {"any": "thing"}})
        assert internal.status_code == missing.status_code == 400
        assert internal.headers == missing.headers
        assert internal.text == missing.text.replace("wipf", "wipe")


def test_a_body_is_refused_while_it_arrives_past_the_limit(app: App) -> None:
    """A body without a length, sent in chunks: reading stops at the first chunk past the
    limit (the rest is never read), and a declared length past it is refused unread."""
    api = asgi_app(app, max_body_bytes=1000)
    chunks = [b'{"path": "' + f"{M}:add".encode() + b'", "args": {"text": "', *([b"x" * 400] * 50), b'"}}']
    read = {"n": 0}

    async def call(headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            i = read["n"]
            read["n"] += 1
            return {"type": "http.request", "body": chunks[i], "more_body": i + 1 < len(chunks)}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/api/mutation", "raw_path": b"/api/mutation",
                 "query_string": b"", "headers": [(b"content-type", b"application/json"), *headers],
                 "http_version": "1.1", "scheme": "http", "server": ("t", 80), "client": ("c", 1), "root_path": ""}
        await api(scope, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    status, body = asyncio.run(call([]))
    assert status == 413 and json.loads(body)["code"] == "PayloadTooLarge"
    assert read["n"] == 4  # 60 + 400 + 400 + 400 bytes: the fourth chunk passed 1000
    read["n"] = 0
    status, _ = asyncio.run(call([(b"content-length", b"20000")]))
    assert (status, read["n"]) == (413, 0)
    assert texts(app) == []


def secret_url(db_url: str, backend: str) -> str:
    # PostgreSQL here trusts local connections, so a password in the URL is accepted and unused.
    return f"{db_url}&password={SECRET}" if backend == "postgres" else db_url


def test_no_response_shows_a_traceback_or_the_database_url(db_url: str, backend: str, tmp_path: Any) -> None:
    app = build(App(schema, secret_url(db_url, backend), storage_dir=str(tmp_path / "blobs")))
    try:
        api = asgi_app(app, authenticate=lambda token: {"token": token}, log_lines=True, max_body_bytes=8192)
        bodies = [request(api, method, path, **kwargs).text for _, method, path, kwargs, _, _ in HOSTILE]
        for how in ("convex", "string", "not found", "ents", "database", "python"):
            bodies.append(post(api, "/api/mutation", {"path": f"{M}:refuse", "args": {"how": how}}).text)
        app.close()
        bodies.append(post(api, "/api/query", {"path": f"{M}:texts", "args": {}}).text)  # a closed App
    finally:
        app.close()
    for body in bodies:
        assert "Traceback" not in body and SECRET not in body and 'File "' not in body, body
        assert db_url not in body and "postgresql://" not in body and str(tmp_path) not in body, body


# -- a client that goes away -------------------------------------------------------------


def test_a_mutation_commits_when_its_client_disconnects(make_app: Callable[..., App]) -> None:
    """A real client sends a mutation and hangs up while it runs: the mutation goes on to
    its end and commits (only the answer is lost)."""
    app = make_app(schema)
    started, release = threading.Event(), threading.Event()

    @app.mutation(name=f"{M}:slow_add")
    def slow_add(ctx: Any, text: str) -> None:
        ctx.table("notes").insert({"text": text})
        started.set()
        assert release.wait(WAIT)
        ctx.table("notes").insert({"text": text + " again"})

    @app.query(name=f"{M}:texts")
    def all_texts(ctx: Any) -> list[str]:
        return sorted(n.text for n in ctx.table("notes"))

    with serving(asgi_app(app)) as port:
        body = json.dumps({"path": f"{M}:slow_add", "args": {"text": "kept"}}).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
            sock.sendall(
                b"POST /api/mutation HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
            )
            assert started.wait(WAIT)
        # the client is gone; the mutation is still inside its transaction
        release.set()
        assert wait_for(lambda: app.run_query(all_texts) == ["kept", "kept again"], WAIT), app.run_query(all_texts)


# -- building the app --------------------------------------------------------------------


def test_asgi_app_checks_its_arguments(app: App) -> None:
    with pytest.raises(ConfigurationError, match="takes an ents App"):
        asgi_app("app")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="authenticate"):
        asgi_app(app, authenticate="verify")  # type: ignore[arg-type]
    for bad in (0, -1, 1.5, "10"):
        with pytest.raises(ConfigurationError, match="max_body_bytes"):
            asgi_app(app, max_body_bytes=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="dashboard is not installed"):
        asgi_app(app, dashboard=True, admin_token="t")


def test_ents_imports_without_starlette_and_ents_http_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['starlette'] = None\n"
        "import ents, ents.aio, ents.testing\n"
        "assert 'uvicorn' not in sys.modules\n"
        "try:\n"
        "    import ents.http\n"
        "except ents.ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT)
    assert out.returncode == 0, out.stderr
    assert "pip install 'ents[server]'" in out.stdout
    plain = subprocess.run(
        [sys.executable, "-c", "import sys, ents; print(sorted(m for m in ('starlette', 'uvicorn', 'httpx') if m in sys.modules))"],
        capture_output=True, text=True, timeout=WAIT,
    )
    assert plain.stdout.strip() == "[]", plain.stderr


# -- ents serve --------------------------------------------------------------------------


def test_ents_serve_runs_the_api_with_a_worker(tmp_path: Any) -> None:
    env = dict(os.environ, ENTS_TEST_URL=f"sqlite:///{tmp_path / 'serve.db'}", PYTHONPATH=str(ROOT))
    app = "tests.apps.serve_app"
    command = [sys.executable, "-m", "ents", "--log-level", "INFO", "serve", f"{app}:app", "--port", "0", "--worker",
               "--authenticate", f"{app}:authenticate"]
    seen: list[str] = []
    with subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or []], daemon=True)
        reader.start()
        try:
            port = None
            while port is None:
                seen.append(lines.get(timeout=WAIT))
                if "Uvicorn running on" in seen[-1]:
                    port = int(seen[-1].split("http://127.0.0.1:")[1].split()[0])
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=WAIT) as http:
                ada = {"Authorization": "Bearer token-ada"}
                assert http.post("/api/mutation", json={"path": "greetings:greet", "args": {}}, headers=ada).status_code == 200
                listed = lambda: http.post("/api/query", json={"path": "greetings:list", "args": {}}).json()["value"]  # noqa: E731
                assert wait_for(lambda: listed() == [{"text": "hello ada", "sent": True}], WAIT), listed()
                bad = http.post("/api/query", json={"path": "greetings:list"}, headers={"Authorization": "Bearer x"})
                assert bad.status_code == 401
                internal = http.post("/api/mutation", json={"path": "greetings:send", "args": {}})
                assert internal.json()["code"] == "FunctionNotFound"
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(WAIT)
            reader.join(WAIT)
    while not lines.empty():
        seen.append(lines.get())
    output = "".join(seen)
    # uvicorn shuts down gracefully (the lifespan stops the worker), then exits by the signal
    assert code in (0, -signal.SIGTERM), output
    assert "stopped after 1 job(s)" in output and "Application shutdown complete" in output, output
    assert "Traceback" not in output


def test_ents_serve_dashboard_says_it_is_not_installed(tmp_path: Any) -> None:
    env = dict(os.environ, ENTS_TEST_URL=f"sqlite:///{tmp_path / 'serve.db'}", PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-m", "ents", "serve", "tests.apps.serve_app:app", "--dashboard"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=WAIT,
    )
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "dashboard is not installed" in out.stderr, out.stderr
