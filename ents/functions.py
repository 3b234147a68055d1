"""Functions: queries, mutations and actions, their names and argument validation.

A function is registered on an App with a decorator. Its name is
``"<module>:<qualname>"`` (or the ``name=`` given), which is how jobs refer to it across
processes. Arguments are validated from the handler's annotations with pydantic in
strict mode before the handler runs; the return value is checked when annotated.
"""

from __future__ import annotations

import inspect
import math
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ConfigDict, TypeAdapter, create_model
from pydantic import ValidationError as PydanticValidationError

from .errors import FunctionNotFoundError, SchemaError, ValidationError
from .fields import describe_value, format_pydantic_error
from .values import float_of, normalize, show

Kind = Literal["query", "mutation", "action"]


@dataclass
class RetryPolicy:
    """Opt-in retries for actions: up to ``max_attempts`` runs in all, waiting
    ``initial_backoff_ms * base ** (attempt - 1)`` (capped at ``max_backoff_ms``) plus up to
    ``jitter`` of that again between attempts. Raise :class:`NonRetryableError` to stop."""

    max_attempts: int = 3
    initial_backoff_ms: float = 1000
    base: float = 2.0
    max_backoff_ms: float = 5 * 60 * 1000
    jitter: float = 0.5

    def __post_init__(self) -> None:
        # bool is an int subclass: RetryPolicy(max_attempts=True) is a mistake, not 1.
        if type(self.max_attempts) is not int or self.max_attempts < 1:
            raise SchemaError(f"RetryPolicy.max_attempts must be a positive integer, got {show(self.max_attempts)}")
        for name in ("initial_backoff_ms", "base", "max_backoff_ms", "jitter"):
            value = getattr(self, name)
            # NaN passes every comparison below and would schedule a retry at time NaN.
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise SchemaError(f"RetryPolicy.{name} must be a finite number, got {show(value)}")
        if self.initial_backoff_ms < 0 or self.max_backoff_ms < 0 or self.base < 1 or not 0 <= self.jitter <= 1:
            raise SchemaError("RetryPolicy needs backoffs >= 0, base >= 1 and 0 <= jitter <= 1")

    def delay_ms(self, attempt: int, rand: float) -> float:
        """Delay before the run after ``attempt`` (1-based) failed; ``rand`` in [0, 1)."""
        try:
            raw = self.initial_backoff_ms * self.base ** (attempt - 1)
        except OverflowError:
            # base ** n overflows floats after ~1000 attempts; the cap applies long before.
            raw = math.inf
        delay = min(raw, self.max_backoff_ms)
        return delay + delay * self.jitter * rand


def a_kind(kind: str) -> str:
    """``kind`` with its article, for messages: "a query", "a mutation", "an action"."""
    return f"an {kind}" if kind == "action" else f"a {kind}"


class NonRetryableError(Exception):
    """Raise from an action with a retry policy to fail it at once, without retrying."""


class FunctionDef:
    """A registered function; call it directly to run the handler as a plain helper."""

    def __init__(
        self,
        app: Any,
        handler: Callable[..., Any],
        kind: Kind,
        internal: bool,
        name: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not callable(handler):
            raise SchemaError(f"@{kind} decorates a function, got {type(handler).__name__}")
        self.app = app
        self.handler = handler
        self.kind: Kind = kind
        self.internal = internal
        self.name = name or function_name(handler)
        self.is_async = inspect.iscoroutinefunction(handler)
        if self.is_async and kind != "action":
            raise SchemaError(f"Function `{self.name}`: only actions may be `async def`; {kind}s run inside a transaction")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise SchemaError(f"Function `{self.name}`: retry= takes a RetryPolicy(...), got {type(retry).__name__} {show(retry)}")
        if retry is not None and kind != "action":
            raise SchemaError(f"Function `{self.name}`: retry policies are for actions (mutations are already retried)")
        self.retry = retry
        self._args, self.arg_names, self._accepts_extra = _args_adapter(self.name, handler)
        self._returns = _returns_adapter(self.name, handler)
        self._simple = _simple_args(handler, self._accepts_extra)
        self._ctx_name = _ctx_param(handler) if self._accepts_extra else None
        self._returns_simple = _simple_return(handler)
        self.__doc__ = handler.__doc__
        self.__name__ = getattr(handler, "__name__", self.name)
        self.__wrapped__ = handler

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.handler(*args, **kwargs)

    def __repr__(self) -> str:
        vis = "internal " if self.internal else ""
        return f"<ents {vis}{self.kind} {self.name}>"

    def validate_args(self, args: Any) -> dict[str, Any]:
        """Validated keyword arguments for the handler (ValidationError names the argument)."""
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise ValidationError(
                f"Arguments of function `{self.name}` must be a dict, got {describe_value(args)}",
                function=self.name,
            )
        if self._args is None:
            return dict(args)
        simple = self._simple
        if simple is not None and type(args) is dict:
            fast = _fast_args(simple, args)
            if fast is not None:
                return fast
        try:
            model = self._args.validate_python(args)
        except PydanticValidationError as exc:
            errors = exc.errors()
            field = str(errors[0]["loc"][0]) if errors and errors[0]["loc"] else None
            raise ValidationError(
                format_pydantic_error(exc, subject=f"Invalid arguments for function `{self.name}`", noun="argument"),
                function=self.name,
                field=field,
            ) from None
        out = {name: getattr(model, name) for name in self.arg_names if name in model.model_fields_set or _has_default(model, name)}
        if self._accepts_extra and model.model_extra:
            # With **kwargs any name is accepted, except the context's: the handler would
            # get it twice (a TypeError from deep inside the call).
            ctx_name = self._ctx_name
            if ctx_name in model.model_extra:
                raise ValidationError(
                    f"Invalid arguments for function `{self.name}`: `{ctx_name}` is the context parameter, not an argument",
                    function=self.name,
                    field=ctx_name,
                )
            out.update(model.model_extra)
        return out

    def validate_result(self, value: Any) -> Any:
        if self._returns is None or type(value) is self._returns_simple:
            return value
        try:
            self._returns.validate_python(value)
        except PydanticValidationError as exc:
            raise ValidationError(
                format_pydantic_error(exc, subject=f"Function `{self.name}` returned a value that does not match its annotation", noun="value"),
                function=self.name,
            ) from None
        return value

    def json_args(self, args: Any) -> Any:
        """Arguments as stored for a scheduled run: validated now, but stored exactly as
        given (plain JSON-like data). Defaults are not filled in: the run validates again
        and takes the defaults the function has then, as in Convex."""
        self.validate_args(args)
        return normalize({} if args is None else args)


def _ctx_param(handler: Callable[..., Any]) -> str | None:
    try:
        return next(iter(inspect.signature(handler).parameters))
    except (TypeError, ValueError, StopIteration):  # pragma: no cover - checked at registration
        return None


def _has_default(model: Any, name: str) -> bool:
    return name in type(model).model_fields


def function_name(handler: Callable[..., Any]) -> str:
    module = getattr(handler, "__module__", None) or "__main__"
    if module == "__main__":
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name:
            module = spec.name
        elif main is not None and getattr(main, "__file__", None):
            import os

            module = os.path.splitext(os.path.basename(main.__file__))[0]  # type: ignore[type-var]
    qualname = getattr(handler, "__qualname__", getattr(handler, "__name__", "function"))
    return f"{module}:{qualname}"


def _args_adapter(name: str, handler: Callable[..., Any]) -> tuple[Any, list[str], bool]:
    try:
        sig = inspect.signature(handler)
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return None, [], True
    params = list(sig.parameters.values())
    if not params or params[0].kind not in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        raise SchemaError(f"Function `{name}` must take the context as its first parameter: def f(ctx, ...)")
    fields: dict[str, Any] = {}
    names: list[str] = []
    extra = False
    hints = _hints(handler)
    for p in params[1:]:
        if p.kind == inspect.Parameter.VAR_KEYWORD:
            extra = True
            continue
        if p.kind == inspect.Parameter.VAR_POSITIONAL:
            raise SchemaError(f"Function `{name}`: *{p.name} is not supported; arguments are passed by name")
        if p.kind == inspect.Parameter.POSITIONAL_ONLY:
            raise SchemaError(f"Function `{name}`: argument `{p.name}` is positional-only; arguments are passed by name")
        annotation = hints.get(p.name, Any)
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (annotation, default)
        names.append(p.name)
    model = create_model(  # type: ignore[call-overload]
        f"{name.replace(':', '_').replace('.', '_')}_args",
        __config__=ConfigDict(strict=True, extra="allow" if extra else "forbid", arbitrary_types_allowed=True),
        **fields,
    )
    return TypeAdapter(model), names, extra


_SCALARS = (str, int, float, bool)
_REQUIRED = object()


def _simple_args(handler: Callable[..., Any], accepts_extra: bool) -> tuple[tuple[str, type, bool, Any], ...] | None:
    """For handlers whose arguments are all plain scalars (or Optional ones): the checks a
    fast path can do without pydantic. None when any argument needs the full validator."""
    if accepts_extra:
        return None
    try:
        params = list(inspect.signature(handler).parameters.values())[1:]
    except (TypeError, ValueError):  # pragma: no cover
        return None
    hints = _hints(handler)
    out = []
    for p in params:
        annotation = hints.get(p.name)
        nullable = False
        origin = typing.get_origin(annotation)
        if origin is typing.Union or origin is types.UnionType:
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1 or len(typing.get_args(annotation)) != 2:
                return None
            annotation, nullable = args[0], True
        if annotation not in _SCALARS:
            return None
        default = _REQUIRED if p.default is inspect.Parameter.empty else p.default
        out.append((p.name, annotation, nullable, default))
    return tuple(out)


def _fast_args(simple: tuple[tuple[str, type, bool, Any], ...], args: dict[str, Any]) -> dict[str, Any] | None:
    """Validate plain scalar arguments as pydantic's strict mode would, or None to let
    pydantic do it (and word the error)."""
    out: dict[str, Any] = {}
    used = 0
    for name, kind, nullable, default in simple:
        if name in args:
            used += 1
            value = args[name]
            t = type(value)
            if t is kind or (kind is str and isinstance(value, str)):
                out[name] = value
            elif kind is float and t is int and (as_float := float_of(value)) is not None:
                out[name] = as_float
            elif value is None and nullable:
                out[name] = None
            else:
                return None
        elif default is not _REQUIRED:
            out[name] = default
        else:
            return None
    return out if used == len(args) else None


def _simple_return(handler: Callable[..., Any]) -> type | None:
    """The return type when it is a plain scalar or None (checked with one ``type() is``)."""
    annotation = _hints(handler).get("return", _REQUIRED)
    if annotation is None or annotation is type(None):
        return type(None)
    return annotation if annotation in _SCALARS else None


def _returns_adapter(name: str, handler: Callable[..., Any]) -> TypeAdapter[Any] | None:
    hints = _hints(handler)
    if "return" not in hints:
        return None
    try:
        return TypeAdapter(hints["return"], config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:
        return None


def _hints(handler: Callable[..., Any]) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(handler, include_extras=True)
    except Exception:
        return {k: v for k, v in getattr(handler, "__annotations__", {}).items() if not isinstance(v, str)}


class Registry:
    """The functions of one App, by name."""

    def __init__(self) -> None:
        self.by_name: dict[str, FunctionDef] = {}

    def add(self, fn: FunctionDef) -> FunctionDef:
        existing = self.by_name.get(fn.name)
        if existing is not None and existing.handler is not fn.handler:
            raise SchemaError(
                f"Two functions are named `{fn.name}`; pass name=... to one of the decorators"
            )
        self.by_name[fn.name] = fn
        return fn

    def resolve(self, ref: Any) -> FunctionDef:
        """A FunctionDef from a function object or a name (FunctionNotFoundError otherwise)."""
        if isinstance(ref, FunctionDef):
            found = self.by_name.get(ref.name)
            if found is ref:
                return ref
            raise FunctionNotFoundError(f"Function `{ref.name}` is registered on another App", function=ref.name)
        if isinstance(ref, str):
            fn = self.by_name.get(ref)
            if fn is None:
                raise FunctionNotFoundError(f"Could not find function `{ref}`", function=ref)
            return fn
        if callable(ref):
            for fn in self.by_name.values():
                if fn.handler is ref:
                    return fn
            name = function_name(ref)
            raise FunctionNotFoundError(
                f"Function `{name}` is not registered; decorate it with @app.query, @app.mutation or @app.action",
                function=name,
            )
        raise FunctionNotFoundError(f"Expected a function or a function name, got {describe_value(ref)}")
