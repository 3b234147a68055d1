"""Serving an ASGI app for a test: uvicorn on a free port, in a thread."""

from __future__ import annotations

import threading
from typing import Any

import uvicorn

from tests.pg import wait_for

WAIT = 60.0


class serving:
    """Run an ASGI app with uvicorn on a free port in a thread (``with serving(api) as port``);
    its lifespan runs, so a worker started there runs too."""

    def __init__(self, api: Any) -> None:
        self.server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=0, log_level="warning", lifespan="auto"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> int:
        self.thread.start()
        assert wait_for(lambda: self.server.started or not self.thread.is_alive(), WAIT), "uvicorn never started"
        assert self.server.started, "uvicorn failed to start"
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "uvicorn did not stop"
