"""Serving an ents App over HTTP: Convex's HTTP API as an ASGI application.

    from ents.http import asgi_app
    api = asgi_app(app, authenticate=verify_token)   # mount it in FastAPI / Starlette
    # uvicorn myapp:api, or: ents serve myapp:app --worker

Needs the ``server`` extra (``pip install 'ents[server]'``: Starlette and uvicorn); the
rest of ents works without it.
"""

from __future__ import annotations

from ..errors import ConfigurationError

try:
    import starlette  # noqa: F401
except ImportError:
    raise ConfigurationError("ents.http needs Starlette: pip install 'ents[server]'") from None

from .api import DEFAULT_MAX_BODY_BYTES, asgi_app, worker_lifespan

__all__ = ["DEFAULT_MAX_BODY_BYTES", "asgi_app", "worker_lifespan"]
