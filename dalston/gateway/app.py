"""`create_gateway_app(config)`: the gateway's Starlette app, its lifespan and its one error renderer.

The parts: `state` (config, instances, metrics, gateway-only refusals), `routes` (the HTTP and
WebSocket handlers, side by side), `transport` (moving bytes to and from engines). Handlers raise
`dalston.errors.ApiError`; it is rendered here, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from dalston.draining import shutting_down
from dalston.errors import ApiError
from dalston.gateway.routes import INTERNAL_PREFIX, routes
from dalston.gateway.state import GatewayConfig, GatewayState

__all__ = ["GatewayConfig", "GatewayState", "create_gateway_app"]

log = logging.getLogger("dalston.gateway")


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


_PROBES = frozenset({"/health", "/ready", "/metrics"})
#: A draining gateway reads (and drops) up to this much of a refused upload, for this long, first.
DISCARD_LIMIT_BYTES = 64 << 20
DISCARD_LIMIT_S = 5.0


async def _discard_body(receive: Receive) -> None:
    """Read what the client is still uploading before answering 503 and closing the connection.

    WHY: closing a socket with unread data sends a TCP reset, and a client still sending its upload
    then gets a connection error instead of the 503 and its `Retry-After` (5 MB uploads: a
    ReadError every time on loopback). Bounded: past the limits the answer goes out anyway.
    """
    loop = asyncio.get_running_loop()
    until, size = loop.time() + DISCARD_LIMIT_S, 0
    while size <= DISCARD_LIMIT_BYTES:
        try:
            message = await asyncio.wait_for(receive(), max(0.0, until - loop.time()))
        except asyncio.TimeoutError:
            return
        if message["type"] != "http.request":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class _DrainGate:
    """Counts client HTTP requests until their response is sent; while draining, refuses new ones.

    Probes and engine registration pass through uncounted and never refused: `/ready` must say 503
    for the load balancer, and engines keep heartbeating (or deregister) while the gateway drains.
    WebSocket sessions are refused and drained by the realtime route (`GatewayState.sessions`).
    """

    def __init__(self, app: ASGIApp, state: GatewayState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in _PROBES or path.startswith(INTERNAL_PREFIX):
            await self.app(scope, receive, send)
            return
        if self.state.draining:
            await _discard_body(receive)
            await shutting_down().response()(scope, receive, send)
            return
        self.state.requests += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.state.requests -= 1


def create_gateway_app(config: GatewayConfig) -> Starlette:
    state = GatewayState.create(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        timeout = httpx.Timeout(config.upstream_timeout, connect=config.connect_timeout)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False) as client:
            state.client = client
            await state.instances.start()
            log.info("gateway_started models=%d heartbeat_timeout=%.1fs auth=%s registry=%s",
                     len(config.catalog.engines), config.heartbeat_timeout,
                     "off" if config.keys is None else "dk_keys", state.instances.backend)
            try:
                yield
            finally:
                await state.instances.stop()
                state.client = None

    app = Starlette(routes=routes(), lifespan=lifespan, exception_handlers={ApiError: _api_error},
                    middleware=[Middleware(_DrainGate, state=state)])
    app.state.gateway = state
    return app
