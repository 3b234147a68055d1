"""kitcn's cRPC procedures over ents functions: builders, middleware, callers, CRPCError.

    from pydantic import BaseModel
    from ents.crpc import CRPCError, create_caller, init_crpc

    c = init_crpc(app)
    public_query = c.query
    private_mutation = c.mutation.internal()
    auth_mutation = c.mutation.use(require_user)   # def require_user(ctx, next): ...

    class Charge(BaseModel):
        order_id: str

    @private_mutation.input(Charge).output(str).mutation
    def charge(ctx, input: Charge) -> str: ...

    caller = create_caller(ctx)
    caller.charge({"order_id": oid})                    # a call, by procedure name
    caller.schedule.after(5000).charge({"order_id": oid})   # or .now / .at(ts); .cancel(job_id)

A procedure is an ordinary ents function named ``"<module>:<function>"``: it can be called
with ``app.run_*``, by clients and over HTTP, scheduled, and it is listed with the other
functions. Its arguments are the fields of its input model, validated by ents as any
function's arguments are (same errors, also when it is scheduled); the handler gets the
model as ``input``. Callers and schedules go through ``ctx.run_query`` / ``run_mutation`` /
``run_action`` and ``ctx.scheduler``, so Convex's rules of which function may call which,
and the atomicity of scheduling from a mutation, are those of ents.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Annotated, Any, cast
from weakref import WeakKeyDictionary

from pydantic import BaseModel, Field, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from .app import App
from .errors import ConvexError, FunctionNotFoundError, SchemaError, ValidationError
from .fields import format_pydantic_error
from .functions import FunctionDef, Kind, Registry, function_name
from .values import show

__all__ = [
    "CODES",
    "CRPC",
    "CRPCError",
    "Caller",
    "Procedure",
    "ProcedureBuilder",
    "ProcedureCtx",
    "create_caller",
    "init_crpc",
]

# -- CRPCError ---------------------------------------------------------------------------------

#: kitcn's (tRPC's) error codes and the HTTP status each maps to
CODES: dict[str, int] = {
    "PARSE_ERROR": 400,
    "BAD_REQUEST": 400,
    "UNAUTHORIZED": 401,
    "PAYMENT_REQUIRED": 402,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "METHOD_NOT_SUPPORTED": 405,
    "TIMEOUT": 408,
    "CONFLICT": 409,
    "PRECONDITION_FAILED": 412,
    "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "UNPROCESSABLE_CONTENT": 422,
    "PRECONDITION_REQUIRED": 428,
    "TOO_MANY_REQUESTS": 429,
    "CLIENT_CLOSED_REQUEST": 499,
    "INTERNAL_SERVER_ERROR": 500,
    "NOT_IMPLEMENTED": 501,
    "BAD_GATEWAY": 502,
    "SERVICE_UNAVAILABLE": 503,
    "GATEWAY_TIMEOUT": 504,
}


class CRPCError(ConvexError):
    """kitcn's ``CRPCError``: ``raise CRPCError("NOT_FOUND", "Subscription not found")``.

    A :class:`ents.ConvexError` whose ``data`` is ``{"code": code, "message": message}`` (plus
    ``data=`` extras), so callers, the HTTP API and a failed job's state get both. ``code``
    is one of :data:`CODES`; ``http_status`` is its HTTP status; ``str(err)`` is the message.
    """

    def __init__(self, code: str, message: str | None = None, *, data: Mapping[str, Any] | None = None) -> None:
        if code not in CODES:
            raise ValidationError(f"CRPCError: unknown code {show(code)} (codes: {', '.join(CODES)})")
        text = code if message is None else message
        if not isinstance(text, str):
            raise ValidationError(f"CRPCError: the message must be a string, got {show(message)}")
        super().__init__({**(data or {}), "code": code, "message": text})
        self.args = (text,)
        self.code = code
        self.message = text
        self.http_status: int = CODES[code]

    def __reduce__(self) -> tuple[Any, ...]:
        extra = {k: v for k, v in self.data.items() if k not in ("code", "message")}
        return (_rebuild_crpc, (self.code, self.message, extra))

    def __repr__(self) -> str:
        return f"CRPCError({self.code!r}, {self.message!r})"


def _rebuild_crpc(code: str, message: str, data: dict[str, Any]) -> CRPCError:
    return CRPCError(code, message, data=data or None)


# -- the context handed to procedures ------------------------------------------------------------


class ProcedureCtx:
    """A procedure's ``ctx``: the ents context (``ctx.table``, ``ctx.orm``, ``ctx.scheduler``,
    ``ctx.auth``, ...) plus what middleware added (``ctx.user_id``)."""

    __slots__ = ("_ctx", "_extra")

    def __init__(self, ctx: Any, extra: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_ctx", ctx)
        object.__setattr__(self, "_extra", dict(extra or {}))

    def __getattr__(self, name: str) -> Any:
        extra = self._extra
        if name in extra:
            return extra[name]
        return getattr(self._ctx, name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"ctx is read-only; a middleware adds to it with next(ctx.extend({name}=...))")

    def extend(self, **values: Any) -> ProcedureCtx:
        """A context with everything this one has, plus ``values`` (as attributes)."""
        return ProcedureCtx(self._ctx, {**self._extra, **values})

    def __dir__(self) -> list[str]:
        return sorted({*dir(type(self)), *dir(self._ctx), *self._extra})

    def __repr__(self) -> str:
        added = ", ".join(self._extra)
        return f"<procedure ctx over {type(self._ctx).__name__}{'; ' + added if added else ''}>"


def unwrap(ctx: Any) -> Any:
    """The ents context under a procedure's ``ctx`` (``ctx`` itself otherwise)."""
    return ctx._ctx if isinstance(ctx, ProcedureCtx) else ctx


def _next_ctx(current: ProcedureCtx, given: Any, extra: dict[str, Any]) -> ProcedureCtx:
    if given is None:
        nxt = current
    elif isinstance(given, ProcedureCtx):
        nxt = given
    elif isinstance(given, Mapping):
        nxt = current.extend(**given)
    else:
        raise ValidationError(
            "A middleware calls next(), next(ctx.extend(name=value)), next({name: value}) or next(name=value); "
            f"got next({show(given)})"
        )
    return nxt.extend(**extra) if extra else nxt


# -- procedures ----------------------------------------------------------------------------------

Middleware = Callable[[Any, Callable[..., Any]], Any]

_UNSET: Any = object()


class Procedure:
    """What a procedure is made of; ``FunctionDef.handler.__crpc__`` of its ents function."""

    def __init__(
        self,
        fn: Callable[..., Any],
        kind: Kind,
        internal: bool,
        middlewares: tuple[Middleware, ...],
        input_model: type[BaseModel] | None,
        output: Any,
        name: str,
    ) -> None:
        self.fn = fn
        self.kind: Kind = kind
        self.internal = internal
        self.middlewares = middlewares
        self.input_model = input_model
        self.name = name
        self.output = output
        self._output = None if output is _UNSET else TypeAdapter(output)
        self.is_async = inspect.iscoroutinefunction(fn)

    def __repr__(self) -> str:
        return f"<procedure {self.kind} {self.name}>"

    def _input(self, kwargs: dict[str, Any]) -> BaseModel | None:
        model = self.input_model
        if model is None:
            return None
        try:
            # ents checked each argument against its field's type; this runs the model's
            # own validators too
            return model.model_validate(kwargs)
        except PydanticValidationError as exc:
            raise ValidationError(
                format_pydantic_error(exc, subject=f"Invalid arguments for function `{self.name}`", noun="argument"),
                function=self.name,
            ) from None

    def _result(self, value: Any) -> Any:
        adapter = self._output
        if adapter is None:
            return value
        try:
            checked = adapter.validate_python(value)
        except PydanticValidationError as exc:
            raise ValidationError(
                format_pydantic_error(exc, subject=f"Function `{self.name}` returned a value that does not match its output", noun="value"),
                function=self.name,
            ) from None
        # as kitcn returns what its output schema parsed: models become plain data
        return adapter.dump_python(checked)

    def _call(self, ctx: ProcedureCtx, input: BaseModel | None) -> Any:
        return self.fn(ctx, input=input) if self.input_model is not None else self.fn(ctx)

    def run(self, ctx: Any, kwargs: dict[str, Any]) -> Any:
        """Run the middlewares, then the handler, on ents' ``ctx`` and validated arguments."""
        input = self._input(kwargs)
        chain = self.middlewares

        def step(i: int, c: ProcedureCtx) -> Any:
            if i == len(chain):
                return self._call(c, input)

            def next_(given: Any = None, /, **extra: Any) -> Any:
                return step(i + 1, _next_ctx(c, given, extra))

            return chain[i](c, next_)

        return self._result(step(0, ProcedureCtx(ctx)))

    async def run_async(self, ctx: Any, kwargs: dict[str, Any]) -> Any:
        """:meth:`run` for an ``async def`` action: middlewares may be sync or async."""
        input = self._input(kwargs)
        chain = self.middlewares

        async def step(i: int, c: ProcedureCtx) -> Any:
            if i == len(chain):
                got = self._call(c, input)
                return await got if inspect.isawaitable(got) else got

            def next_(given: Any = None, /, **extra: Any) -> Any:
                return step(i + 1, _next_ctx(c, given, extra))

            got = chain[i](c, next_)
            return await got if inspect.isawaitable(got) else got

        return self._result(await step(0, ProcedureCtx(ctx)))


def _arguments(model: type[BaseModel] | None) -> list[inspect.Parameter]:
    """The model's fields as keyword parameters, typed so that ents validates them as it
    validates any function's arguments (constraints such as ``Field(min_length=1)`` kept)."""
    if model is None:
        return []
    params = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if info.metadata:
            annotation = Annotated[(annotation, *info.metadata)]  # type: ignore[assignment]
        if info.is_required():
            default: Any = inspect.Parameter.empty
        elif info.default_factory is not None:
            default = Field(default_factory=info.default_factory)
        else:
            default = info.default
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation))
    return params


def _handler(proc: Procedure, fn: Callable[..., Any]) -> Callable[..., Any]:
    """The ents handler of ``proc``: its signature is the input model's fields."""
    if proc.is_async:

        async def handler(ctx: Any, /, **kwargs: Any) -> Any:
            return await proc.run_async(ctx, kwargs)

        run: Callable[..., Any] = handler
    else:

        def sync_handler(ctx: Any, /, **kwargs: Any) -> Any:
            return proc.run(ctx, kwargs)

        run = sync_handler
    params = _arguments(proc.input_model)
    ctx_name = "ctx" if all(p.name != "ctx" for p in params) else "_ctx"
    first = inspect.Parameter(ctx_name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    run.__signature__ = inspect.Signature([first, *params])  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in params}
    for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
        if hasattr(fn, attr):
            setattr(run, attr, getattr(fn, attr))
    run.__crpc__ = proc  # type: ignore[attr-defined]
    run.__wrapped_procedure__ = fn  # type: ignore[attr-defined]
    return run


def procedure_of(fdef: FunctionDef) -> Procedure | None:
    """The procedure an ents function was built from, or None for other functions."""
    proc = getattr(fdef.handler, "__crpc__", None)
    return proc if isinstance(proc, Procedure) else None


class ProcedureBuilder:
    """A procedure being built: ``.internal()``, ``.use(mw)``, ``.input(M)``, ``.output(T)``,
    then ``.query(fn)`` / ``.mutation(fn)`` / ``.action(fn)`` registers it. Each step returns
    a new builder, so a builder can be shared (``auth_mutation = c.mutation.use(...)``)."""

    def __init__(
        self,
        app: App,
        kind: Kind,
        *,
        internal: bool = False,
        middlewares: tuple[Middleware, ...] = (),
        input_model: type[BaseModel] | None = None,
        output: Any = _UNSET,
    ) -> None:
        self._app = app
        self._kind: Kind = kind
        self._internal = internal
        self._middlewares = middlewares
        self._input_model = input_model
        self._output = output

    def _with(self, **changes: Any) -> Any:
        state = {
            "internal": self._internal,
            "middlewares": self._middlewares,
            "input_model": self._input_model,
            "output": self._output,
        }
        state.update(changes)
        return ProcedureBuilder(self._app, self._kind, **state)

    def __repr__(self) -> str:
        vis = "internal " if self._internal else ""
        return f"<{vis}{self._kind} procedure builder>"

    def internal(self) -> ProcedureBuilder:
        """Procedures that clients cannot call (ents' ``internal_*`` functions)."""
        return cast("ProcedureBuilder", self._with(internal=True))

    def use(self, middleware: Middleware) -> ProcedureBuilder:
        """Add a middleware ``fn(ctx, next)``: it returns ``next(...)`` with the context the
        rest of the chain gets (``next()``, ``next(ctx.extend(user_id=...))``,
        ``next(user_id=...)``), or raises (e.g. ``CRPCError("UNAUTHORIZED")``) to refuse."""
        if not callable(middleware):
            raise SchemaError(f"use() takes a middleware function (ctx, next), got {show(middleware)}")
        return cast("ProcedureBuilder", self._with(middlewares=(*self._middlewares, middleware)))

    def input(self, model: type[BaseModel]) -> ProcedureBuilder:
        """Validate the input with the pydantic ``model``; the handler gets it as ``input``."""
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise SchemaError(f"input() takes a pydantic model class, got {show(model)}")
        if self._input_model is not None:
            raise SchemaError(
                f"input() was already given {self._input_model.__name__}; a procedure has one input model "
                f"(merge them: class Input({self._input_model.__name__}, {model.__name__}): ...)"
            )
        return cast("ProcedureBuilder", self._with(input_model=model))

    def output(self, type_: Any) -> ProcedureBuilder:
        """Validate the handler's result with ``type_`` (any pydantic-checkable type)."""
        try:
            TypeAdapter(type_)
        except Exception as exc:
            raise SchemaError(f"output() takes a type pydantic can check, got {show(type_)}: {exc}") from None
        return cast("ProcedureBuilder", self._with(output=type_))

    def _register(self, kind: Kind, fn: Any, name: str | None) -> Any:
        def register(handler_fn: Callable[..., Any]) -> FunctionDef:
            if not callable(handler_fn):
                raise SchemaError(f".{kind}() decorates a function, got {show(handler_fn)}")
            if kind != self._kind:
                raise SchemaError(f"A {self._kind} procedure builder makes {self._kind}s; .{kind}() is for {kind} builders")
            full = name or function_name(handler_fn)
            _check_handler(handler_fn, full, self._input_model is not None)
            proc = Procedure(handler_fn, kind, self._internal, self._middlewares, self._input_model, self._output, full)
            if proc.is_async and kind != "action":
                raise SchemaError(f"Function `{full}`: only actions may be `async def`; {kind}s run inside a transaction")
            if not proc.is_async and any(inspect.iscoroutinefunction(m) for m in self._middlewares):
                raise SchemaError(
                    f"Procedure `{full}`: an `async def` middleware needs an `async def` action handler; "
                    "queries and mutations run synchronously"
                )
            decorate = getattr(self._app, ("internal_" if self._internal else "") + kind)
            fdef: FunctionDef = decorate(_handler(proc, handler_fn), name=full)
            return fdef

        return register if fn is None else register(fn)

    def query(self, fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
        """Register the procedure as a query: ``@builder.query`` over ``def f(ctx, input)``."""
        return self._register("query", fn, name)

    def mutation(self, fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
        """Register the procedure as a mutation."""
        return self._register("mutation", fn, name)

    def action(self, fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
        """Register the procedure as an action (``async def`` allowed)."""
        return self._register("action", fn, name)


def _check_handler(fn: Callable[..., Any], name: str, takes_input: bool) -> None:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return
    accepts_input = "input" in params or any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())
    if takes_input and not accepts_input:
        raise SchemaError(f"Procedure `{name}` has an input model: its handler takes it as `input` (def {fn.__name__}(ctx, input): ...)")
    positional = [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not positional:
        raise SchemaError(f"Procedure `{name}` must take the context as its first parameter: def {fn.__name__}(ctx, ...)")


class CRPC:
    """``init_crpc(app)``: the procedure builders of an App."""

    def __init__(self, app: App) -> None:
        self.app = app

    def __repr__(self) -> str:
        return f"<crpc of {self.app!r}>"

    @property
    def query(self) -> ProcedureBuilder:
        """Builder of public queries (``.internal()`` for internal ones)."""
        return ProcedureBuilder(self.app, "query")

    @property
    def mutation(self) -> ProcedureBuilder:
        """Builder of public mutations."""
        return ProcedureBuilder(self.app, "mutation")

    @property
    def action(self) -> ProcedureBuilder:
        """Builder of public actions."""
        return ProcedureBuilder(self.app, "action")


def init_crpc(app: App) -> CRPC:
    """kitcn's ``initCRPC``: procedure builders registering on ``app``."""
    if not isinstance(app, App):
        raise SchemaError(f"init_crpc() takes an App, got {show(app)}")
    return CRPC(app)


# -- callers -------------------------------------------------------------------------------------

#: short name -> procedures, per function registry (rebuilt when functions are added)
_INDEXES: WeakKeyDictionary[Registry, tuple[int, dict[str, list[FunctionDef]]]] = WeakKeyDictionary()


def _index(registry: Registry) -> dict[str, list[FunctionDef]]:
    cached = _INDEXES.get(registry)
    if cached is not None and cached[0] == len(registry.by_name):
        return cached[1]
    index: dict[str, list[FunctionDef]] = {}
    for fdef in registry.by_name.values():
        if procedure_of(fdef) is not None:
            index.setdefault(_short(fdef.name), []).append(fdef)
    _INDEXES[registry] = (len(registry.by_name), index)
    return index


def _short(name: str) -> str:
    """The name a caller knows a function by: ``charge`` for ``orders:charge``."""
    return name.rpartition(":")[2].rpartition(".")[2]


def _module_name(module: Any) -> str | None:
    if module is None:
        return None
    if isinstance(module, str):
        return module
    name = getattr(module, "__name__", None)
    if not isinstance(name, str):
        raise ValidationError(f"create_caller(module=...) takes a module or its name, got {show(module)}")
    return name


class Caller:
    """``create_caller(ctx)``: ``caller.<procedure>(input)`` calls a procedure by name,
    ``caller.schedule.now / after(ms) / at(ts)`` schedules one, ``caller.schedule.cancel(id)``."""

    def __init__(self, ctx: Any, module: str | None = None) -> None:
        self._ctx = unwrap(ctx)
        self._module = module

    def __repr__(self) -> str:
        return f"<caller{' of ' + self._module if self._module else ''}>"

    def _resolve(self, name: str) -> FunctionDef:
        app: App = self._ctx.app
        if ":" in name:
            fdef = app.functions.resolve(name)
            if procedure_of(fdef) is None:
                raise FunctionNotFoundError(f"`{name}` is an ents function, not a procedure: call it with ctx.run_*", function=name)
            return fdef
        found = _index(app.functions).get(name, [])
        if self._module is not None:
            found = [f for f in found if f.name.partition(":")[0] == self._module]
        if len(found) == 1:
            return found[0]
        where = f" in module `{self._module}`" if self._module else ""
        if not found:
            others = [f.name for f in app.functions.by_name.values() if _short(f.name) == name]
            hint = f"; `{others[0]}` is an ents function, not a procedure: call it with ctx.run_* or ctx.scheduler" if others else ""
            raise FunctionNotFoundError(f"Could not find a procedure named `{name}`{where}{hint}", function=name)
        names = ", ".join(f"`{f.name}`" for f in found)
        raise FunctionNotFoundError(
            f"Several procedures are named `{name}` ({names}); use create_caller(ctx, module=...) or caller[\"module:{name}\"]",
            function=name,
        )

    def _call(self, fdef: FunctionDef, input: Any) -> Any:
        # ctx.run_query / run_mutation / run_action: the context says what it may call
        return getattr(self._ctx, f"run_{fdef.kind}")(fdef, _args(input))

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("__"):
            raise AttributeError(name)
        fdef = self._resolve(name)
        return lambda input=None: self._call(fdef, input)

    def __getitem__(self, name: str) -> Callable[..., Any]:
        fdef = self._resolve(name)
        return lambda input=None: self._call(fdef, input)

    @property
    def actions(self) -> Caller:
        """kitcn's ``caller.actions.<name>``: the same calls (actions run from actions)."""
        return self

    @property
    def schedule(self) -> Schedule:
        """``.now.<p>(input)``, ``.after(ms).<p>(input)``, ``.at(ts).<p>(input)``, ``.cancel(id)``."""
        return Schedule(self)


def _args(input: Any) -> dict[str, Any]:
    if input is None:
        return {}
    if isinstance(input, BaseModel):
        return input.model_dump()
    return cast(dict[str, Any], input)


class Schedule:
    """``caller.schedule``: ``ctx.scheduler`` by procedure name (from a mutation, part of
    its transaction; from an action, at once)."""

    def __init__(self, caller: Caller) -> None:
        self._caller = caller

    @property
    def now(self) -> Scheduled:
        """Run right after this mutation commits (or at once, from an action)."""
        return Scheduled(self._caller, "after", 0)

    def after(self, delay: Any) -> Scheduled:
        """Run after ``delay`` (milliseconds or a timedelta)."""
        return Scheduled(self._caller, "after", delay)

    def at(self, when: Any) -> Scheduled:
        """Run at ``when`` (milliseconds since the epoch or an aware datetime)."""
        return Scheduled(self._caller, "at", when)

    def cancel(self, job_id: str) -> Any:
        """Cancel a scheduled procedure (``ctx.scheduler.cancel``)."""
        return self._caller._ctx.scheduler.cancel(job_id)


class Scheduled:
    """``caller.schedule.after(ms)``: ``.<procedure>(input)`` schedules it; returns the job id."""

    def __init__(self, caller: Caller, how: str, when: Any) -> None:
        self._caller = caller
        self._how = how
        self._when = when

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("__"):
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, name: str) -> Callable[..., Any]:
        fdef = self._caller._resolve(name)
        scheduler = self._caller._ctx.scheduler
        run = scheduler.run_after if self._how == "after" else scheduler.run_at
        return lambda input=None: run(self._when, fdef, _args(input))


def create_caller(ctx: Any, module: Any = None) -> Caller:
    """A caller of the App's procedures from ``ctx`` (a procedure's or any function's).

    ``module`` (a module or its name) limits the names to one module's procedures, as
    kitcn's per-module callers (``createOrdersCaller``) do."""
    return Caller(ctx, _module_name(module))
