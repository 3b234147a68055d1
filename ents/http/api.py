"""Convex's HTTP API for an ents App, as a Starlette application.

``asgi_app(app)`` answers what a Convex deployment answers (see ``ConvexHttpClient`` in
convex-js' ``src/browser/http_client.ts`` and Convex's "HTTP API" docs):

* ``POST /api/query``, ``/api/mutation``, ``/api/action`` with the JSON body
  ``{"path": "module:function", "args": {...} | [{...}], "format": "json" | "convex_encoded_json"}``;
* ``POST /api/run/<module>/<function>`` with ``{"args": {...}, "format": ...}``, for a function
  of any kind (``format`` defaults to ``json``).

Answers: 200 ``{"status": "success", "value": ..., "logLines": [...]}``; an error raised by the
function, 560 ``{"status": "error", "errorMessage": ..., "errorData": ..., "logLines": [...]}``
(``errorData`` only for a ``ConvexError``, whose data it is; a ``ConvexError`` with an int
``http_status`` attribute answers with that status, plus its ``code``); a request refused
before the function runs, a 4xx with ``{"code": ..., "message": ...}``. Only public
functions are reachable: an internal one gets the very answer a missing one gets.

A function's own failure shows as ``"Server Error"`` unless it is a ConvexError (its
message and data) or an ents error about the application's data (``UniqueConstraintError:
...``): never a traceback, a database URL or the text of an unexpected exception. Those go to
the ``ents.http`` logger: the exception's type at WARNING, its traceback at DEBUG.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from ..aio import run_async_action, run_blocking
from ..app import App
from ..errors import (
    ConfigurationError,
    ConvexError,
    DatabaseError,
    EntsError,
    FunctionNotFoundError,
    ValidationError,
)
from ..functions import FunctionDef, Kind, a_kind
from ..values import show, show_name
from .codec import CLEAN, FORMATS, decode_args, dumps, encode, loads
from .logs import LogLines, capture

if TYPE_CHECKING:
    from starlette.types import ASGIApp

log = logging.getLogger("ents.http")

#: the default limit on a request body: Convex's limit on a function's arguments
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
#: bodies larger than this are parsed in a thread, so that the loop keeps serving
PARSE_IN_THREAD_BYTES = 1024 * 1024
#: Convex's status for "the function raised" (STATUS_CODE_UDF_FAILED in convex-js)
STATUS_FUNCTION_FAILED = 560
SERVER_ERROR = "Server Error"
# Errors of ents whose messages describe the database's machinery, not the application's data.
_UNSHOWN = (DatabaseError, ConfigurationError)

Authenticate = Callable[[str], Any]


class _Refused(Exception):
    """A request refused before its function runs: a 4xx with ``{"code", "message"}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class _Call:
    fdef: FunctionDef
    args: dict[str, Any]
    identity: Any
    format: str


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json", headers=headers)


def _refusal(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json(status, {"code": code, "message": message}, headers)


class HttpApi:
    """The endpoints of one App (built by :func:`asgi_app`)."""

    def __init__(self, app: App, authenticate: Authenticate | None, max_body_bytes: int, log_lines: bool) -> None:
        self.app = app
        self.authenticate = authenticate
        self.max_body_bytes = max_body_bytes
        self.log_lines = log_lines

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/query", self.query, methods=["POST"]),
            Route("/api/mutation", self.mutation, methods=["POST"]),
            Route("/api/action", self.action, methods=["POST"]),
            Route("/api/run/{path:path}", self.run, methods=["POST"]),
        ]

    async def query(self, request: Request) -> Response:
        return await self._handle(request, "query")

    async def mutation(self, request: Request) -> Response:
        return await self._handle(request, "mutation")

    async def action(self, request: Request) -> Response:
        return await self._handle(request, "action")

    async def run(self, request: Request) -> Response:
        return await self._handle(request, None, request.path_params["path"])

    # -- one request ---------------------------------------------------------------------

    async def _handle(self, request: Request, kind: Kind | None, url_path: str | None = None) -> Response:
        try:
            call = await self._prepare(request, kind, url_path)
        except _Refused as refused:
            return _refusal(refused.status, refused.code, refused.message)
        except ClientDisconnect:
            # Nobody to answer; nothing ran.
            return Response(status_code=400)
        return await self._call(call)

    async def _prepare(self, request: Request, kind: Kind | None, url_path: str | None) -> _Call:
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            raise _Refused(415, "BadContentType", "Expected a request with `Content-Type: application/json`")
        body = await self._body(request)
        if type(body) is not dict:
            raise _Refused(400, "BadJsonBody", "The request body must be a JSON object")
        fmt = body.get("format", CLEAN)
        if type(fmt) is not str or fmt not in FORMATS:
            raise _Refused(400, "BadFormat", f"format param must be one of [`json`, `convex_encoded_json`]. Got {show(fmt)}")
        names = self._names(body, url_path)
        args = _args(body.get("args", {}))
        identity = await self._identity(request)
        fdef = self._resolve(names, kind)
        try:
            fdef.validate_args(args)
        except ValidationError as exc:
            raise _Refused(400, "InvalidArguments", str(exc)) from None
        return _Call(fdef, args, identity, FORMATS[fmt])

    async def _body(self, request: Request) -> Any:
        limit = self.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isascii() and length.isdigit() and int(length) > limit:
            raise _Refused(413, "PayloadTooLarge", f"The request body is larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        # Counted while it arrives: a body without (or lying about) its length stops here.
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _Refused(413, "PayloadTooLarge", f"The request body is larger than {limit} bytes")
            chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            if size > PARSE_IN_THREAD_BYTES:
                return await asyncio.to_thread(loads, raw)
            return loads(raw)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise _Refused(400, "BadJsonBody", "The request body is not valid JSON") from None

    @staticmethod
    def _names(body: dict[str, Any], url_path: str | None) -> list[str]:
        if url_path is None:
            path = body.get("path")
            if type(path) is not str or not path:
                raise _Refused(400, "BadJsonBody", 'The request body needs a "path" naming a function, e.g. "messages:list"')
            return [path]
        # /api/run/messages/list -> messages:list (as Convex); a Python module path may
        # also be written with slashes: /api/run/myapp/api/list -> myapp.api:list.
        module, _, function = url_path.rpartition("/")
        if not module or not function:
            raise _Refused(400, "MissingIdentifier", "Path or function name not provided in path, e.g. /api/run/messages/list")
        names = [f"{module}:{function}"]
        if "/" in module:
            names.append(f"{module.replace('/', '.')}:{function}")
        return names

    async def _identity(self, request: Request) -> Any:
        header = request.headers.get("authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _Refused(401, "BadAuthHeader", "The Authorization header must be `Bearer <token>`")
        authenticate = self.authenticate
        if authenticate is None:
            raise _Refused(401, "NoAuthProvider", "This server accepts no tokens: call it without an Authorization header")
        try:
            if inspect.iscoroutinefunction(authenticate):
                identity = await authenticate(token)
            else:
                # It may look keys up over the network: not on the loop.
                identity = await asyncio.to_thread(authenticate, token)
                if inspect.isawaitable(identity):
                    identity = await identity
        except ConvexError as exc:
            raise _Refused(401, "Unauthenticated", str(exc)) from None
        except Exception as exc:
            log.info("a bearer token was refused: %s", type(exc).__name__)
            raise _Refused(401, "Unauthenticated", "Could not verify the bearer token") from None
        return identity

    def _resolve(self, names: list[str], kind: Kind | None) -> FunctionDef:
        fdef = None
        for name in names:
            try:
                found = self.app.functions.resolve(name)
            except FunctionNotFoundError:
                continue
            if not found.internal:
                fdef = found
                break
        if fdef is None:
            # Missing or internal: the same answer, so that a client cannot tell them apart.
            raise _Refused(400, "FunctionNotFound", f"Could not find public function `{show_name(names[0], 200)}`")
        if kind is not None and fdef.kind != kind:
            raise _Refused(
                400,
                "WrongFunctionKind",
                f"Trying to execute `{fdef.name}` as {a_kind(kind)}, but it is defined as {a_kind(fdef.kind)}",
            )
        return fdef

    async def _call(self, call: _Call) -> Response:
        fdef, fmt = call.fdef, call.format
        client = self.app.client(call.identity)
        method = getattr(client, fdef.kind)
        with capture() if self.log_lines else nullcontext() as lines:
            try:
                if fdef.kind == "action" and fdef.is_async:
                    value = encode(await run_async_action(self.app, fdef, call.args, identity=call.identity), fmt)
                else:
                    # The result is encoded in the call's thread: a large one does not hold the loop.
                    value = await run_blocking(
                        self.app, lambda: encode(method(fdef, call.args), fmt), action=fdef.kind == "action"
                    )
                body = dumps({"status": "success", "value": value, "logLines": _lines(lines)})
            except Exception as exc:
                return self._failure(exc, call, lines)
        return Response(body, status_code=200, media_type="application/json")

    def _failure(self, exc: Exception, call: _Call, lines: LogLines | None) -> Response:
        fdef = call.fdef
        status = STATUS_FUNCTION_FAILED
        body: dict[str, Any] = {"status": "error"}
        if isinstance(exc, ConvexError):
            body["errorMessage"] = str(exc)
            body["errorData"] = _error_data(exc.data, call.format)
            http_status = getattr(exc, "http_status", None)
            if type(http_status) is int and 400 <= http_status <= 599:
                status = http_status
                code = getattr(exc, "code", None)
                if isinstance(code, str):
                    body["code"] = code
        elif isinstance(exc, EntsError) and not isinstance(exc, _UNSHOWN):
            body["errorMessage"] = f"{type(exc).__name__}: {exc.message}"
        else:
            body["errorMessage"] = SERVER_ERROR
            log.warning("%s `%s` failed over HTTP: %s", fdef.kind, fdef.name, type(exc).__name__)
            log.debug("%s `%s` failed over HTTP", fdef.kind, fdef.name, exc_info=exc)
        body["logLines"] = _lines(lines)
        try:
            return _json(status, body)
        except EntsError:  # a message with a lone surrogate, say
            return _json(status, {"status": "error", "errorMessage": SERVER_ERROR, "logLines": []})


def _args(args: Any) -> dict[str, Any]:
    # Convex takes the arguments object, or (as its clients send it) a list holding it.
    if type(args) is list and len(args) == 1:
        args = args[0]
    if type(args) is not dict:
        raise _Refused(400, "BadJsonBody", '"args" must be an object of arguments (or a list holding one)')
    try:
        return decode_args(args)  # type: ignore[no-any-return]
    except ValidationError as exc:
        raise _Refused(400, "InvalidArguments", str(exc)) from None


def _lines(lines: LogLines | None) -> list[str]:
    return lines.result() if lines is not None else []


def _error_data(data: Any, fmt: str) -> Any:
    try:
        return encode(data, fmt)
    except EntsError:
        # Not a Convex value: the caller still learns what it said.
        return show(data, 1000)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "NotFound", 405: "MethodNotAllowed"}
    code = codes.get(exc.status_code, "BadRequest")
    message = "No such endpoint" if exc.status_code == 404 else str(exc.detail)
    if exc.status_code == 405:
        message = "This endpoint takes POST requests"
    return _refusal(exc.status_code, code, message, dict(exc.headers or {}))


def dashboard_routes(app: App, admin_token: str | None) -> list[BaseRoute]:
    """The dashboard's routes, mounted under ``/dashboard`` when ``dashboard=True``.

    This is the one place where the dashboard plugs in: its module provides
    ``dashboard_routes(app, admin_token=...)``.
    """
    if importlib.util.find_spec("ents.http.dashboard") is None:
        raise ConfigurationError(
            "asgi_app(dashboard=True): the dashboard is not installed in this version of ents; "
            "serve the HTTP API without it (dashboard=False)"
        )
    module = importlib.import_module("ents.http.dashboard")
    return module.dashboard_routes(app, admin_token=admin_token)  # type: ignore[no-any-return]


def asgi_app(
    app: App,
    authenticate: Authenticate | None = None,
    dashboard: bool = False,
    admin_token: str | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    log_lines: bool = False,
) -> Starlette:
    """An ASGI application serving Convex's HTTP API for ``app`` (mount it anywhere).

    ``authenticate(token)`` (plain or ``async``) gets the token of an
    ``Authorization: Bearer <token>`` header and returns the identity that functions see as
    ``ctx.auth.get_user_identity()``; raising refuses the request (401). Without it, a
    request with a token is refused. ``max_body_bytes`` bounds a request body (413 beyond).
    ``log_lines=True`` sends each call's log records back as ``logLines`` (as a Convex dev
    deployment does; a production one leaves them out, and so does this by default: a log
    line may say more than a client should know). ``dashboard=True`` also serves the
    dashboard under ``/dashboard``, guarded by ``admin_token``.
    """
    if not isinstance(app, App):
        raise ConfigurationError(f"asgi_app() takes an ents App, got {type(app).__name__}")
    if authenticate is not None and not callable(authenticate):
        raise ConfigurationError("asgi_app(authenticate=...) takes a function of the bearer token returning the identity")
    if type(max_body_bytes) is not int or max_body_bytes < 1:
        raise ConfigurationError(f"asgi_app(max_body_bytes=...) takes a positive number of bytes, got {show(max_body_bytes)}")
    api = HttpApi(app, authenticate, max_body_bytes, bool(log_lines))
    routes = api.routes()
    if dashboard:
        routes.extend(dashboard_routes(app, admin_token))
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})


def worker_lifespan(app: App, **options: Any) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A lifespan (for FastAPI / Starlette ``lifespan=``) that runs ``app.worker(**options)``
    beside the server: started when the server starts, stopped (running jobs finished) when
    it stops."""

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        worker = app.worker(**options).start()
        try:
            yield
        finally:
            await asyncio.to_thread(worker.stop)

    return lifespan


def with_worker(api: ASGIApp, app: App, **options: Any) -> Starlette:
    """``api`` served with a worker of ``app`` in the same process (``ents serve --worker``)."""
    return Starlette(routes=[Mount("/", app=api)], lifespan=worker_lifespan(app, **options))


__all__ = ["DEFAULT_MAX_BODY_BYTES", "HttpApi", "asgi_app", "dashboard_routes", "with_worker", "worker_lifespan"]
