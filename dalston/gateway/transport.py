"""Forward one request (or one realtime session) to an engine instance, streaming both ways.

Nothing is buffered beyond a chunk: the upload goes to the engine as it arrives, the engine's
response (JSON, text, or an SSE stream) comes back as it is produced. Failures are raised as
`ApiError`s: no live instance -> 503, engine unreachable or gone mid-request -> 502, no answer within
the upstream timeout -> 504, upload over the limit -> 413. Only a connection that could not be made
at all, before any byte of the body was sent, is retried on another instance. This module knows
nothing of routes or auth: `dalston.gateway.routes` decides, this moves bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import httpx
import websockets
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response as HandshakeResponse
from websockets.typing import Subprotocol

from dalston.admission import HANDSHAKE_REFUSAL_HEADER
from dalston.errors import ApiError
from dalston.gateway.client_session import CLOSE_GOING_AWAY, FLUSH_TIMEOUT_S, GOING_AWAY_REASON, ClientSession
from dalston.gateway.instances import Instance
from dalston.gateway.state import GatewayState
from dalston.server.realtime_openai import DRAIN_DEADLINE, is_openai_event

log = logging.getLogger("dalston.gateway")

# Hop-by-hop headers (RFC 9110 7.6.1) and ones httpx sets itself.
_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "host"}


class _UploadTooLarge(Exception):
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
                raise _UploadTooLarge()
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
            raise state.no_instance(engine_id)
        tried.add(inst.instance_id)
        query = request.url.query
        url = f"{inst.url}{request.url.path}" + (f"?{query}" if query else "")
        upstream = state.client.build_request(request.method, url, headers=_forward_headers(request),
                                              content=body.__aiter__())
        inst.in_flight += 1
        metrics.in_flight.labels(engine_id).inc()
        try:
            response = await state.client.send(upstream, stream=True)
        except _UploadTooLarge:
            _done(state, inst, engine_id, "413", started)
            raise state.too_large() from None
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
            raise _failed(state, inst, engine_id, 502, "engine_unreachable",
                          f"engine instance {inst.url} for '{engine_id}' could not be reached", started) from None
        except httpx.TimeoutException:
            _done(state, inst, engine_id, None, started)
            metrics.upstream_errors.labels(engine_id, "timeout").inc()
            raise _failed(state, inst, engine_id, 504, "upstream_timeout",
                          f"engine for '{engine_id}' did not answer within {state.config.upstream_timeout:g}s",
                          started) from None
        except httpx.TransportError as exc:
            _done(state, inst, engine_id, None, started)
            metrics.upstream_errors.labels(engine_id, "disconnect").inc()
            raise _failed(state, inst, engine_id, 502, "upstream_disconnected",
                          f"engine for '{engine_id}' closed the connection before answering ({exc})",
                          started) from None
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


def _failed(state: GatewayState, inst: Instance, engine_id: str, status: int, code: str, message: str,
            started: float) -> ApiError:
    state.metrics.requests.labels(engine_id, str(status)).inc()
    state.metrics.latency.labels(engine_id).observe(time.perf_counter() - started)
    log.warning("upstream_failed engine_id=%s url=%s status=%d code=%s", engine_id, inst.url, status, code)
    return ApiError(status, message, code)


# --- realtime WebSocket -------------------------------------------------------------------------

_CREATED = ("session.created", "transcription_session.created")  # an engine's first OpenAI event


async def connect_realtime(state: GatewayState, inst: Instance, engine_id: str, path: str, query: dict[str, str],
                           headers: list[tuple[str, str]], subprotocol: str | None
                           ) -> tuple[Instance, ClientConnection]:
    """Open the engine side of a realtime session on `inst`, else on the next live instance that takes it.

    An instance that cannot be reached (refused, reset, timed out) is marked down at once and the
    session tries the next one: nothing has been sent upstream yet, so nothing is lost. The gateway
    asks engines to refuse in the handshake (`HANDSHAKE_REFUSAL_HEADER`), so one that is full (429)
    or draining (503) answers with that status and the session tries the next instance; when every
    instance refuses, the last refusal (its status, code and `Retry-After`) is the client's answer.
    Any other 4xx with an OpenAI-style error body (a bad key, a bad parameter) is the client's and
    is raised at once: every instance would give it. Other statuses (e.g. a proxy in front of an
    engine) skip the instance and leave it registered.
    With no instance left and no refusal: 502 `engine_unreachable` naming the last failure.
    """
    tried: list[str] = []
    last_error = ""
    refusal: ApiError | None = None
    headers = [*headers, (HANDSHAKE_REFUSAL_HEADER, "1")]
    current: Instance | None = inst
    while current is not None:
        tried.append(current.instance_id)
        url = f"{'ws' + current.url.removeprefix('http')}{path}?{urlencode(query)}"
        try:
            upstream = await websockets.connect(url, additional_headers=headers,
                                                open_timeout=state.config.connect_timeout, max_size=None,
                                                subprotocols=[Subprotocol(subprotocol)] if subprotocol else None)
            return current, upstream
        except websockets.InvalidStatus as exc:  # alive, but answered the handshake with an HTTP status
            status = exc.response.status_code
            state.metrics.upstream_errors.labels(engine_id, "refused").inc()
            last_error = f"{current.url} answered HTTP {status}"
            log.warning("realtime_refused engine_id=%s url=%s status=%d", engine_id, current.url, status)
            error = _engine_error(exc.response)
            if error is not None and status in (429, 503):
                refusal = error  # full or draining: another instance may take it
            elif error is not None and 400 <= status < 500:
                raise error from None
        except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake) as exc:
            state.metrics.upstream_errors.labels(engine_id, "connect").inc()
            last_error = f"{current.url}: {type(exc).__name__}"
            state.instances.mark_dead(current, f"connect_error={type(exc).__name__}")
        current = state.instances.pick(engine_id, exclude=tried)
    if refusal is not None:
        raise refusal
    raise ApiError(502, f"no instance of '{engine_id}' took the realtime session ({len(tried)} tried; last: "
                        f"{last_error})", "engine_unreachable")


def _engine_error(response: HandshakeResponse) -> ApiError | None:
    """The `ApiError` an engine's handshake refusal carries (OpenAI-style JSON body), or None if it is not one."""
    try:
        error = json.loads(response.body or b"")["error"]
        message, code = str(error["message"]), str(error["code"])
    except (ValueError, KeyError, TypeError):
        return None
    retry_after = response.headers.get("Retry-After")
    return ApiError(response.status_code, message, code, param=error.get("param"), type_=error.get("type"),
                    headers={"Retry-After": retry_after} if retry_after else None)


#: Close codes a peer may not send (RFC 6455 7.4.1): what the client gets instead, when the engine's
#: side ended that way. 1006/1015: the engine's connection broke (no close frame) -> 1014 "bad gateway".
_UNSENDABLE = {1005: (1000, ""), 1006: (1014, "engine connection lost"), 1015: (1014, "engine TLS failure")}


def relayed_close(code: int | None, reason: str | None) -> tuple[int, str]:
    """The close code and reason the client gets for the engine's close: the same, unless unsendable."""
    if code is None:
        return 1014, "engine connection lost"
    return _UNSENDABLE.get(code, (code, reason or ""))


async def relay_realtime(client: ClientSession, upstream: ClientConnection, state: GatewayState, inst: Instance,
                         engine_id: str, *, drop_created: bool = False) -> None:
    """Pump frames both ways until either side closes; pass the engine's close code and reason on.

    `drop_created`: the client already got `session.created` from the gateway (an OpenAI session
    routed by its first `session.update`), so the engine's own is not relayed. At the gateway's
    drain deadline (`client.expired`) the engine is asked to finish what it received, its last
    events are relayed, and both sides are closed with 1001 (`dalston.gateway.client_session`).
    """
    inst.in_flight += 1
    state.metrics.in_flight.labels(engine_id).inc()
    started = time.perf_counter()
    flushed = asyncio.Event()

    async def client_to_engine() -> bool:
        """Until the client leaves (False) or the drain deadline passes (True)."""
        while True:
            message = await client.receive()
            if message["type"] == DRAIN_DEADLINE:
                return True
            if message["type"] == "websocket.disconnect":
                return False
            if message.get("bytes") is not None:
                await upstream.send(message["bytes"])
            elif (text := message.get("text")) is not None:
                if not client.began and client.protocol == "native" and is_openai_event(text):
                    client.protocol = "openai"  # an OpenAI client that connected with only ?model=
                await upstream.send(text)

    async def engine_to_client() -> None:
        nonlocal drop_created
        with contextlib.suppress(ConnectionClosed):
            async for message in upstream:
                if isinstance(message, str):
                    if drop_created:
                        drop_created = False
                        if json.loads(message).get("type") in _CREATED:
                            continue
                    drop, done = client.flush_answer(message)
                    if done:
                        flushed.set()
                    if drop:
                        continue
                await client.send(message)
                await client.begin()

    to_engine, to_client = asyncio.create_task(client_to_engine()), asyncio.create_task(engine_to_client())
    engine_closed = cut_by_deadline = False
    try:
        done, _ = await asyncio.wait({to_engine, to_client}, return_when=asyncio.FIRST_COMPLETED)
        engine_closed = to_client in done and to_client.exception() is None
        cut_by_deadline = not engine_closed and to_engine in done and to_engine.exception() is None \
            and to_engine.result()
        if cut_by_deadline:
            await _flush(client, upstream, to_client, flushed)
    finally:
        for task in (to_engine, to_client):
            task.cancel()
        for task in (to_engine, to_client):
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, ConnectionClosed, RuntimeError,
                                     OSError):
                await task
        if cut_by_deadline:
            code, reason = CLOSE_GOING_AWAY, GOING_AWAY_REASON
            await upstream.close(CLOSE_GOING_AWAY, "gateway shutting down")
        else:  # the engine closed (relay its close), or the client left (the engine's session ends with it)
            if not engine_closed:
                await upstream.close()
            code, reason = relayed_close(upstream.close_code, upstream.close_reason)
        await client.close(code, reason)
        _done(state, inst, engine_id, "101", started)


async def _flush(client: ClientSession, upstream: ClientConnection, to_client: asyncio.Task[None],
                 flushed: asyncio.Event) -> None:
    """Drain deadline: ask the engine to finish what it received; relay until it has (bounded)."""
    requests = client.flush_requests()
    if not requests:
        return
    flush_started = time.perf_counter()
    waiter = asyncio.create_task(flushed.wait())
    try:
        for text in requests:
            await upstream.send(text)
        await asyncio.wait({to_client, waiter}, timeout=FLUSH_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
    except ConnectionClosed:
        pass
    finally:
        waiter.cancel()
    log.info("realtime_relay_flushed session_id=%s protocol=%s complete=%s seconds=%.2f", client.session_id,
             client.protocol, to_client.done() or flushed.is_set(), time.perf_counter() - flush_started)
