"""SIGTERM for the uvicorn-served processes (`dalston serve`, `dalston gateway`): drain first, then exit.

WHY a takeover of uvicorn's shutdown: uvicorn 0.54's `Server.shutdown` stops listening and calls
`connection.shutdown()` on every connection at once, which closes each open WebSocket with 1012
("service restart"): a realtime session open at SIGTERM — on an engine, or relayed by a gateway
replica in a rolling update — is cut with no warning. `DrainingServer` runs the process's own drain
*before* handing over to uvicorn, while the port still listens (so `/ready` answers 503 and new work
gets 503 `shutting_down` + `Retry-After` instead of a refused connection), and gives uvicorn's
graceful shutdown only the time that is left of `--shutdown-timeout`.

What a drain does is the process's business (`on_signal`, `drain`): the engine tells and finishes
its sessions (`dalston.server.realtime_drain`); the gateway does the same for the sessions it relays
and waits for its in-flight HTTP requests (`dalston.gateway.main`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

from dalston.errors import ApiError

SHUTDOWN_TIMEOUT_ENV = "DALSTON_SHUTDOWN_TIMEOUT"
DEFAULT_SHUTDOWN_TIMEOUT_S = 30.0
_POLL_S = 0.05

#: A drain: `(timeout_s, abort)` -> done; `abort()` is true once a second signal forces the exit.
Drain = Callable[[float, Callable[[], bool]], Awaitable[None]]


def add_shutdown_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """`--shutdown-timeout`, the same flag, environment variable and default for every server."""
    parser.add_argument("--shutdown-timeout", type=float,
                        default=float(os.environ.get(SHUTDOWN_TIMEOUT_ENV, str(DEFAULT_SHUTDOWN_TIMEOUT_S))),
                        help=f"seconds to drain {what} on SIGTERM before closing what is left "
                             f"(default ${SHUTDOWN_TIMEOUT_ENV} or {DEFAULT_SHUTDOWN_TIMEOUT_S:g})")


def shutting_down() -> ApiError:
    """The refusal of new work while draining: 503, retry soon (elsewhere: this connection is closed)."""
    return ApiError(503, "server is shutting down; send the request to another instance", "shutting_down",
                    headers={"Retry-After": "1", "Connection": "close"})


async def wait_until(done: Callable[[], bool], until: float, abort: Callable[[], bool] = lambda: False) -> None:
    """Poll `done()` until it is true, event-loop time `until` passes, or `abort()`."""
    loop = asyncio.get_running_loop()
    while not done() and loop.time() < until and not abort():
        await asyncio.sleep(_POLL_S)


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first SIGTERM/SIGINT calls `on_signal` (stop advertising) and whose
    shutdown runs `drain` before uvicorn's own; a second signal forces the exit as in uvicorn."""

    def __init__(self, config: uvicorn.Config, *, shutdown_timeout: float, on_signal: Callable[[int], None],
                 drain: Drain) -> None:
        super().__init__(config)
        self.shutdown_timeout = shutdown_timeout
        self._on_signal, self._drain = on_signal, drain
        self.signalled = False

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self._drain(self.shutdown_timeout, lambda: self.force_exit)
        # uvicorn's graceful wait gets what is left (at least 1 s: HTTP responses being written)
        self.config.timeout_graceful_shutdown = max(1, round(self.shutdown_timeout - (loop.time() - started)))
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self.signalled:
            self.signalled = True
            self._on_signal(sig)
        super().handle_exit(sig, frame)
        # uvicorn re-raises captured signals after shutdown; a completed drain is a clean exit (status 0)
        if sig == signal.SIGTERM and getattr(self, "_captured_signals", None):
            self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]
