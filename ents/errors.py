"""The exception tree of ents.

Every error ents raises on purpose derives from :class:`EntsError`::

    EntsError
    ├── SchemaError               inconsistent schema, caught in define_ent_schema / App()
    ├── ConfigurationError        bad database URL, missing optional driver
    ├── ValidationError           bad field values, bad function arguments, bad ids
    │   └── InvalidIdError        an id that is malformed or belongs to another table
    ├── EntNotFoundError          get_x / edge_x / first_x / unique_x found nothing
    ├── UniqueConstraintError     a unique field or 1:1 edge would be duplicated
    ├── NotUniqueError            unique() / get(index, ...) matched several documents
    ├── ReadOnlyError             a write attempted from a query, or on a system table
    ├── RuleError                 a read or write rule (App(rules=...)) refused a write
    ├── ContextError              ctx.db / ctx.table used where it does not exist (actions)
    ├── FunctionNotFoundError     unknown function, internal function called by a client
    ├── SchedulerError            scheduling limits, bad times, cancel of a finished job
    ├── StorageError              file storage failures
    └── DatabaseError             the database failed in a way retries could not fix

Attributes ``table``, ``id``, ``field`` and ``function`` are set when they apply, so
callers can react without parsing messages.

:class:`ConvexError` stands apart: it is what *application code* raises to hand structured
data to its caller (as Convex's ``ConvexError``), not an error of ents itself.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "ConvexError",
    "EntsError",
    "SchemaError",
    "ConfigurationError",
    "ValidationError",
    "InvalidIdError",
    "EntNotFoundError",
    "UniqueConstraintError",
    "NotUniqueError",
    "ReadOnlyError",
    "RuleError",
    "ContextError",
    "FunctionNotFoundError",
    "SchedulerError",
    "StorageError",
    "DatabaseError",
]


class EntsError(Exception):
    """Base class of every error raised by ents."""

    def __init__(
        self,
        message: str,
        *,
        table: str | None = None,
        id: str | None = None,
        field: str | None = None,
        function: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.table = table
        self.id = id
        self.field = field
        self.function = function

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep attributes across pickling (errors cross process boundaries in tests).
        return (
            _rebuild,
            (type(self), self.message, self.table, self.id, self.field, self.function),
        )


def _rebuild(cls: type[EntsError], message: str, table: Any, id: Any, field: Any, function: Any) -> EntsError:
    err = cls.__new__(cls)
    EntsError.__init__(err, message, table=table, id=id, field=field, function=function)
    return err


class SchemaError(EntsError):
    """The schema is inconsistent; raised when it is defined, never at run time."""


class ConfigurationError(EntsError):
    """The App was configured wrongly (database URL, missing optional dependency)."""


class ValidationError(EntsError, ValueError):
    """A value does not match the schema or a function's declared arguments."""


class InvalidIdError(ValidationError):
    """An id is malformed or belongs to another table than the one expected."""


class EntNotFoundError(EntsError, LookupError):
    """A document that must exist does not."""


class UniqueConstraintError(EntsError):
    """A write would give two documents the same value of a unique field or 1:1 edge."""


class NotUniqueError(EntsError):
    """A lookup that must match at most one document matched several."""


class ReadOnlyError(EntsError):
    """A write was attempted where only reads are allowed."""


class RuleError(EntsError):
    """A rule of ``App(rules=...)`` refused an insert, update or delete (see ents.rules)."""


class ContextError(EntsError):
    """A context facility was used where it is not available (e.g. ctx.db in an action)."""


class FunctionNotFoundError(EntsError, LookupError):
    """No such function (or not callable from where it was called)."""


class SchedulerError(EntsError):
    """A scheduling request was refused (limits, times, state of the job)."""


class StorageError(EntsError):
    """File storage failed."""


class DatabaseError(EntsError):
    """The database failed and retrying did not help (or cannot help)."""


class ConvexError(Exception):
    """Raised by a function to give its caller structured data, as Convex's ``ConvexError``.

    ``raise ConvexError({"code": "NOT_FOUND", "id": order_id})``: ``data`` is any JSON-like
    value; the message is the data itself when it is a string, else its JSON text. Callers
    (``app.run_*``, clients, the HTTP API as ``errorData``, a failed job's state) get ``data``
    unchanged.
    """

    def __init__(self, data: Any) -> None:
        self.data = data
        if isinstance(data, str):
            message = data
        else:
            try:
                message = json.dumps(data, ensure_ascii=False, default=repr)
            except (TypeError, ValueError):
                message = repr(data)
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.data,))
