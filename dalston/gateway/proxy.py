"""Forward one request (or one realtime session) to an engine instance, streaming both ways.

Nothing is buffered beyond a chunk: the upload goes to the engine as it arrives, the engine's
response (JSON, text, or an SSE stream) comes back as it is produced. Failures map to OpenAI-style
errors: engine unreachable or gone mid-request -> 502, no answer within the upstream timeout -> 504,
upload over the limit -> 413. Only a connection that could not be made at all, before any byte of
the body was sent, is retried on another instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from urllib.parse import urlencode
from typing import TYPE_CHECKING

import httpx
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from dalston.errors import ApiError, openai_error
from dalston.server.realtime_openai import render_error

if TYPE_CHECKING:
    from dalston.gateway.app import GatewayState
    from dalston.gateway.instances import Instance

log = logging.getLogger("dalston.gateway")

# Hop-by-hop headers (RFC 9110 7.6.1) and ones httpx sets itself.
_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "host"}


class UploadTooLarge(Exception):
    pass


class _Body:
    """The request body as one async stream; counts bytes and notes whether any were sent."""

    def __init__(self, prefix: list[bytes], rest: AsyncIterator[bytes], limit: int) -> None:
        self.prefix, self.rest, self.limit = prefix, rest, limit
        self.started = False
        self.size = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        for chunk in self.prefix:
            self.size += len(chunk)
            yield chunk
        async for chunk in self.rest:
            self.size += len(chunk)
            if self.size > self.limit:
                raise UploadTooLarge()
            if chunk:
                yield chunk


def _forward_headers(request: Request) -> list[tuple[str, str]]:
    return [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP]


async def forward_http(request: Request, state: GatewayState, engine_id: str,
                       prefix: list[bytes], rest: AsyncIterator[bytes]) -> Response:
    """Send the request to the least-busy live instance of `engine_id` and relay its response."""
    assert state.client is not None, "gateway client not started (lifespan)"
    body = _Body(prefix, rest, state.config.max_upload_bytes)
    started = time.perf_counter()
    metrics = state.metrics
    tried: set[str] = set()
    while True:
        inst = state.instances.pick(engine_id)
        if inst is None or inst.instance_id in tried:
            metrics.requests.labels(engine_id, "503").inc()
            from dalston.gateway.app import no_instance
            return no_instance(state, engine_id)
        tried.add(inst.instance_id)
        query = request.url.query
        url = f"{inst.url}{request.url.path}" + (f"?{query}" if query else "")
        upstream = state.client.build_request(request.method, url, headers=_forward_headers(request),
                                              content=body.__aiter__())
        inst.in_flight += 1
        metrics.in_flight.labels(engine_id).inc()
        try:
            response = await state.client.send(upstream, stream=True)
        except UploadTooLarge:
            _done(state, inst, engine_id, "413", started)
            from dalston.gateway.app import _too_large
            return _too_large(state)
        except ClientDisconnect:
            _done(state, inst, engine_id, "499", started)
            log.info("client_disconnected engine_id=%s url=%s bytes=%d", engine_id, inst.url, body.size)
            return Response(status_code=499)
        except httpx.ConnectError as exc:
            _done(state, inst, engine_id, None, started)
            metrics.upstream_errors.labels(engine_id, "connect").inc()
            state.instances.mark_dead(inst, f"connect_error={type(exc).__name__}")
            if not body.started:
                continue  # nothing sent yet: another instance can take it
            return _fail(state, inst, engine_id, 502, "engine_unreachable",
                         f"engine instance {inst.url} for '{engine_id}' could not be reached", started)
        except httpx.TimeoutException:
            _done(state, inst, engine_id, None, started)
            metrics.upstream_errors.labels(engine_id, "timeout").inc()
            return _fail(state, inst, engine_id, 504, "upstream_timeout",
                         f"engine for '{engine_id}' did not answer within {state.config.upstream_timeout:g}s",
                         started)
        except httpx.TransportError as exc:
            _done(state, inst, engine_id, None, started)
            metrics.upstream_errors.labels(engine_id, "disconnect").inc()
            return _fail(state, inst, engine_id, 502, "upstream_disconnected",
                         f"engine for '{engine_id}' closed the connection before answering ({exc})", started)
        headers = {k: v for k, v in response.headers.items() if k.lower() not in _HOP | {"content-length"}}
        headers["x-dalston-engine"] = engine_id
        if "content-length" in response.headers:
            headers["content-length"] = response.headers["content-length"]
        return StreamingResponse(_relay(state, inst, engine_id, response, started),
                                 status_code=response.status_code, headers=headers)


async def _relay(state: GatewayState, inst: Instance, engine_id: str, response: httpx.Response,
                 started: float) -> AsyncIterator[bytes]:
    """Yield the engine's response as it arrives; always release the instance and the connection."""
    status = str(response.status_code)
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    except httpx.TransportError as exc:
        status = "502"
        state.metrics.upstream_errors.labels(engine_id, "disconnect").inc()
        log.warning("upstream_broken engine_id=%s url=%s error=%s", engine_id, inst.url, exc)
    finally:
        await response.aclose()
        _done(state, inst, engine_id, status, started)


def _done(state: GatewayState, inst: Instance, engine_id: str, status: str | None, started: float) -> None:
    inst.in_flight -= 1
    inst.served += 1
    state.metrics.in_flight.labels(engine_id).dec()
    if status is not None:
        state.metrics.requests.labels(engine_id, status).inc()
        state.metrics.latency.labels(engine_id).observe(time.perf_counter() - started)


def _fail(state: GatewayState, inst: Instance, engine_id: str, status: int, code: str, message: str,
          started: float) -> Response:
    state.metrics.requests.labels(engine_id, str(status)).inc()
    state.metrics.latency.labels(engine_id).observe(time.perf_counter() - started)
    log.warning("upstream_failed engine_id=%s url=%s status=%d code=%s", engine_id, inst.url, status, code)
    return openai_error(status, message, "server_error", code)


# --- realtime WebSocket -------------------------------------------------------------------------

_CREATED = ("session.created", "transcription_session.created")  # an engine's first OpenAI event

async def _deny(websocket: WebSocket, response: Response) -> None:
    """Refuse the handshake with an HTTP error body where the server supports it, else close 1008."""
    try:
        await websocket.send_denial_response(response)
    except RuntimeError:
        await websocket.close(code=1008)


async def realtime(websocket: WebSocket) -> None:
    """`/v1/realtime?model=<id>`: authenticate, pick an instance, then pump frames both ways.

    An OpenAI transcription session without `?model=` is routed by the model its first
    `session.update` names (`dalston.gateway.openai_routing`).
    """
    import websockets
    from websockets.exceptions import ConnectionClosed

    from dalston.admission import authenticate, bearer_token, resolve_model
    from dalston.gateway.app import no_instance
    from dalston.gateway.openai_routing import await_model
    from dalston.server.realtime_openai import wants_beta, wants_openai

    state: GatewayState = websocket.app.state.gateway
    subprotocols = websocket.scope.get("subprotocols") or ()
    try:
        authenticate(state.config.keys, websocket.headers, websocket.query_params, subprotocols)
    except ApiError as exc:
        return await _deny(websocket, exc.response())
    token = bearer_token(websocket.headers, websocket.query_params, subprotocols)
    # OpenAI's browser SDK offers `realtime, openai-insecure-api-key.<key>`: answer `realtime`
    subprotocol = "realtime" if "realtime" in (websocket.scope.get("subprotocols") or ()) else None
    beta = wants_beta(websocket.headers)
    query = dict(websocket.query_params)
    first_text: str | None = None  # the OpenAI event that chose the model, forwarded first
    if not query.get("model") and wants_openai(websocket.query_params, websocket.headers, subprotocol):
        await websocket.accept(subprotocol=subprotocol)
        routed = await await_model(websocket, state, beta)
        if routed is None:
            return
        engine_id, inst, first_text = routed
        query["model"] = engine_id
    else:
        try:
            engine_id = resolve_model(state.models, query.get("model"))
        except ApiError as exc:
            return await _deny(websocket, exc.response())
        picked = state.instances.pick(engine_id)
        if picked is None:
            return await _deny(websocket, no_instance(state, engine_id))
        inst = picked
    ws_base = "ws" + inst.url.removeprefix("http")
    url = f"{ws_base}{websocket.url.path}?{urlencode(query)}"
    headers = [("Authorization", f"Bearer {token}")] if token else []
    headers += [(k, v) for k, v in websocket.headers.items() if k.lower() == "openai-beta"]
    try:
        upstream = await websockets.connect(url, additional_headers=headers, open_timeout=state.config.connect_timeout,
                                            max_size=None, subprotocols=[subprotocol] if subprotocol else None)
    except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake) as exc:
        state.metrics.upstream_errors.labels(engine_id, "connect").inc()
        message = f"engine for '{engine_id}' refused the realtime session: {exc}"
        if first_text is None:
            return await _deny(websocket, openai_error(502, message, "server_error", "engine_unreachable"))
        await websocket.send_json(render_error("engine_unreachable", message))
        return await websocket.close(code=1011)
    if first_text is None:
        await websocket.accept(subprotocol=subprotocol)
    else:
        await upstream.send(first_text)
    inst.in_flight += 1
    state.metrics.in_flight.labels(engine_id).inc()
    started = time.perf_counter()
    close_code = 1000
    drop_created = first_text is not None  # the client got session.created from the gateway already

    async def client_to_engine() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await upstream.send(message["bytes"])
            elif message.get("text") is not None:
                await upstream.send(message["text"])

    async def engine_to_client() -> None:
        nonlocal close_code, drop_created
        try:
            async for message in upstream:
                if isinstance(message, bytes):
                    await websocket.send_bytes(message)
                else:
                    if drop_created:
                        drop_created = False
                        if json.loads(message).get("type") in _CREATED:
                            continue
                    await websocket.send_text(message)
        except ConnectionClosed:
            pass
        close_code = upstream.close_code or 1000

    tasks = [asyncio.create_task(client_to_engine()), asyncio.create_task(engine_to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, ConnectionClosed, RuntimeError):
                await task
        await upstream.close()
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.close(code=close_code if close_code != 1005 else 1000)
        _done(state, inst, engine_id, "101", started)
