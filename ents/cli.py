"""The ``ents`` command: run a worker, list and cancel jobs, list crons, call functions.

    ents worker myapp.main:app --concurrency 16
    ents jobs myapp.main:app --state failed
    ents cancel myapp.main:app <job id>
    ents crons myapp.main:app
    ents run myapp.main:app myapp.main:send_digest --args '{"day": "mon"}'
    ents serve myapp.main:app --port 8000 --worker

``MODULE:APP`` names an App object (or a function returning one) importable from the
current directory.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
from datetime import UTC, datetime
from typing import Any

from .app import App
from .errors import EntsError
from .worker import DEFAULT_BATCH


class CommandError(Exception):
    """A failure the command reports as one line on stderr (exit code 1)."""


def load_app(spec: str) -> App:
    """Import ``module:attribute``; call it if it is a factory."""
    if ":" not in spec:
        raise CommandError(f"expected MODULE:APP (e.g. myapp.main:app), got {spec!r}")
    module_name, attr = spec.split(":", 1)
    obj: Any = _import(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise CommandError(f"{module_name!r} has no attribute {attr!r}")
    if not isinstance(obj, App) and callable(obj):
        try:
            obj = obj()
        except EntsError as exc:
            raise CommandError(f"{spec} failed to create the App: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            raise CommandError(f"{spec} failed to create the App: {_one_line(exc)}") from exc
    if not isinstance(obj, App):
        raise CommandError(f"{spec} is not an ents App (got {type(obj).__name__})")
    return obj


def _import(module_name: str) -> Any:
    """Import a module of the current directory; any failure is a one-line CommandError."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    except EntsError as exc:  # e.g. an App(...) at import time on a bad database URL
        raise CommandError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # a module that raises while it is imported, not only ImportError
        raise CommandError(f"cannot import {module_name!r}: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, bounded, for any exception (even one whose str() fails)."""
    try:
        text = str(exc)
    except Exception:
        text = ""
    text = " ".join(text.split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _when(ms: Any) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(float(ms) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def cmd_worker(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    worker = app.worker(concurrency=args.concurrency, batch_size=args.batch_size, lease_ms=args.lease_ms)
    stops = {"n": 0}

    def on_signal(signum: int, frame: Any) -> None:
        stops["n"] += 1
        if stops["n"] > 1:
            logging.getLogger("ents").warning("second signal: exiting now")
            os._exit(1)
        logging.getLogger("ents").info("signal %d: finishing running jobs, then stopping (again to force)", signum)
        worker.stop(timeout=0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.run()
    app.close()
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    app = load_app(args.app)

    def read(ctx: Any) -> list[dict[str, Any]]:
        if args.state:
            q = ctx.table("_scheduled_functions", "by_state", lambda q: q.eq("state", args.state))
        else:
            q = ctx.table("_scheduled_functions")
        return [e.doc() for e in q.order("desc").take(args.limit)]

    try:
        rows = app._transact(lambda tx: read(_ctx(tx)), write=False)
    finally:
        app.close()
    if args.json:
        print(json.dumps(rows, default=str, indent=2))
        return 0
    print(f"{'id':<14} {'state':<11} {'scheduled':<25} {'completed':<25} name")
    for r in rows:
        state = r["state"]["kind"]
        print(f"{r['_id']:<14} {state:<11} {_when(r['scheduled_time']):<25} {_when(r.get('completed_time')):<25} {r['name']}")
        if state == "failed" and r["state"].get("error"):
            print(f"{'':<14} error: {r['state']['error']}")
    return 0


def _ctx(tx: Any) -> Any:
    from .context import QueryCtx

    return QueryCtx(tx)


def cmd_cancel(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    try:
        app.run(lambda ctx: ctx.scheduler.cancel(args.job_id))
    finally:
        app.close()
    print(f"canceled {args.job_id}")
    return 0


def cmd_crons(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    from .crons import reconcile

    try:
        reconcile(app)
        rows = app._transact(lambda tx: [e.doc() for e in _ctx(tx).table("_cron_jobs")], write=False)
    finally:
        app.close()
    if args.json:
        print(json.dumps(rows, default=str, indent=2))
        return 0
    for r in rows:
        last = r.get("last_runs") or []
        outcome = last[-1].get("state", "?") if last else "never run"
        print(f"{r['name']:<30} next {_when(r.get('next_run')):<25} last {outcome:<10} -> {r.get('function')}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.args) if args.args else {}
    except ValueError as exc:
        raise CommandError(f"--args is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise CommandError(f"--args must be a JSON object of arguments, got {type(payload).__name__}")
    app = load_app(args.app)
    try:
        fdef = app.functions.resolve(args.function)
        runner = {"query": app.run_query, "mutation": app.run_mutation, "action": app.run_action}[fdef.kind]
        try:
            result = runner(fdef, payload)
        except EntsError:
            raise
        except Exception as exc:  # the function's own failure
            raise CommandError(f"`{fdef.name}` failed: {_one_line(exc)}") from exc
        text = json.dumps(result, default=str, indent=2)
    finally:
        app.close()
    print(text)
    return 0


def _load_function(spec: str) -> Any:
    if ":" not in spec:
        raise CommandError(f"expected MODULE:FUNCTION, got {spec!r}")
    module_name, attr = spec.split(":", 1)
    fn = getattr(_import(module_name), attr, None)
    if not callable(fn):
        raise CommandError(f"{spec} is not a function")
    return fn


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .http import asgi_app
        from .http.api import with_worker
    except ImportError:
        raise CommandError("ents serve needs uvicorn: pip install 'ents[server]'") from None
    authenticate = _load_function(args.authenticate) if args.authenticate else None
    app = load_app(args.app)
    try:
        # The dashboard's token comes from the environment: a command line is visible to
        # every user of the machine.
        api: Any = asgi_app(
            app,
            authenticate=authenticate,
            dashboard=args.dashboard,
            admin_token=os.environ.get("ENTS_ADMIN_TOKEN") or None,
            max_body_bytes=args.max_body_bytes,
            log_lines=args.log_lines,
        )
        if args.worker:
            api = with_worker(api, app, concurrency=args.concurrency)
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
        uvicorn.run(api, host=args.host, port=args.port, log_level=level if level in _UVICORN_LEVELS else "info")
    finally:
        app.close()
    return 0


_UVICORN_LEVELS = ("critical", "error", "warning", "info", "debug")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ents", description="ents: run workers and inspect scheduled functions")
    parser.add_argument("--log-level", default=os.environ.get("ENTS_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("worker", help="run due jobs and crons until stopped (SIGTERM/SIGINT stop gracefully)")
    p.add_argument("app", help="MODULE:APP")
    p.add_argument("--concurrency", type=int, default=8, help="actions running at once (default 8)")
    p.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH, help=f"mutation jobs per transaction (default {DEFAULT_BATCH})"
    )
    p.add_argument("--lease-ms", type=float, default=30_000, help="action lease length in ms (default 30000)")
    p.set_defaults(fn=cmd_worker)

    p = sub.add_parser("jobs", help="list scheduled functions, newest first")
    p.add_argument("app")
    p.add_argument("--state", choices=["pending", "inProgress", "success", "failed", "canceled"])
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_jobs)

    p = sub.add_parser("cancel", help="cancel a scheduled function")
    p.add_argument("app")
    p.add_argument("job_id")
    p.set_defaults(fn=cmd_cancel)

    p = sub.add_parser("crons", help="list cron jobs with their next run and last outcome")
    p.add_argument("app")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_crons)

    p = sub.add_parser("run", help="call a function (trusted) with JSON arguments and print its result")
    p.add_argument("app")
    p.add_argument("function", help="the function's name, e.g. myapp.main:send_digest")
    p.add_argument("--args", help="JSON object of arguments")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser(
        "serve",
        help="serve Convex's HTTP API (/api/query, /api/mutation, /api/action, /api/run/...) with uvicorn",
    )
    p.add_argument("app", help="MODULE:APP")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--worker", action="store_true", help="also run a worker in this process")
    p.add_argument("--concurrency", type=int, default=8, help="the worker's actions running at once (default 8)")
    p.add_argument("--dashboard", action="store_true", help="also serve the dashboard (token in $ENTS_ADMIN_TOKEN)")
    p.add_argument("--authenticate", metavar="MODULE:FUNCTION", help="function of a bearer token returning the identity")
    p.add_argument(
        "--max-body-bytes", type=int, default=16 * 1024 * 1024, help="largest request body accepted (default 16 MiB)"
    )
    p.add_argument("--log-lines", action="store_true", help="send functions' log lines to callers (for development)")
    p.set_defaults(fn=cmd_serve)

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Every failure is one line on stderr and exit code 1, never a traceback (which could
    # show a database URL or an argument); --log-level DEBUG logs the traceback as well.
    try:
        return int(args.fn(args))
    except (CommandError, EntsError, KeyboardInterrupt, Exception) as exc:
        if isinstance(exc, CommandError):
            text = str(exc)
        elif isinstance(exc, EntsError):
            text = f"{type(exc).__name__}: {exc}"
        elif isinstance(exc, KeyboardInterrupt):
            text = "interrupted"
        else:
            text = f"unexpected error: {_one_line(exc)}"
        logging.getLogger("ents").debug("ents %s failed", args.command, exc_info=True)
    print(f"ents: {' '.join(text.split())}", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
