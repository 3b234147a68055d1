"""ents: Convex's data model for Python.

Typed ents with edges, queries and writes in transactions, and a durable scheduler
(run_after / run_at / cancel, crons), embedded on SQLite or on PostgreSQL.
"""

from .app import App, Client
from .context import ActionCtx, AsyncActionCtx, MutationCtx, QueryCtx
from .crons import CronJobs, cron_jobs
from .errors import (
    ConfigurationError,
    ContextError,
    ConvexError,
    DatabaseError,
    EntNotFoundError,
    EntsError,
    FunctionNotFoundError,
    InvalidIdError,
    NotUniqueError,
    ReadOnlyError,
    RuleError,
    SchedulerError,
    SchemaError,
    StorageError,
    UniqueConstraintError,
    ValidationError,
)
from .functions import NonRetryableError, RetryPolicy
from .ids import Id
from .query import Ent
from .rules import Rules, WriteChange
from .schema import EntDefinition, EntSchema, define_ent, define_ent_schema
from .values import Doc

__version__ = "0.1.0"

__all__ = [
    "App",
    "Client",
    "define_ent",
    "define_ent_schema",
    "EntDefinition",
    "EntSchema",
    "Id",
    "Ent",
    "Doc",
    "cron_jobs",
    "CronJobs",
    "RetryPolicy",
    "NonRetryableError",
    "QueryCtx",
    "MutationCtx",
    "ActionCtx",
    "AsyncActionCtx",
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
    "Rules",
    "WriteChange",
    "ContextError",
    "ConvexError",
    "FunctionNotFoundError",
    "SchedulerError",
    "StorageError",
    "DatabaseError",
]
