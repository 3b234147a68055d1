"""Database backends. SQLite is built in; PostgreSQL needs ``pip install 'ents[postgres]'``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import ConfigurationError
from .base import redact_url

if TYPE_CHECKING:
    from .base import Backend

__all__ = ["DEFAULT_URL", "default_url", "open_backend", "redact_url"]

DEFAULT_URL = "sqlite:///ents.db"


def default_url() -> str:
    """``$ENTS_DATABASE_URL`` if set, else ``sqlite:///ents.db`` (a file in the working directory)."""
    return os.environ.get("ENTS_DATABASE_URL") or DEFAULT_URL


def open_backend(url: str | None) -> Backend:
    url = url or default_url()
    if not isinstance(url, str):
        raise ConfigurationError(f"The database URL must be a string, got {type(url).__name__}")
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        from .sqlite import SQLiteBackend

        return SQLiteBackend(url)
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ConfigurationError(
                "PostgreSQL support needs psycopg 3: pip install 'ents[postgres]'"
            ) from None
        from .postgres import PostgresBackend

        return PostgresBackend(url)
    raise ConfigurationError(
        f"Unsupported database URL '{redact_url(url)}': use sqlite:///path.db, sqlite:// (memory) or postgresql://..."
    )
