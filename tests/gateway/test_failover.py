"""A dead or refusing engine costs no realtime session (issue 11.2).

Before: with two engines and one SIGKILLed, 16 of 17 new sessions got 502 for 5 s while the other
engine was live, because the WebSocket path neither dropped an engine it could not reach nor tried
another. Now a failed connect marks the instance down at once and the session goes to the next live
instance (nothing was sent upstream yet); an upstream that refuses the handshake with an HTTP status is skipped.
Real gateway app and real fake-engine servers on loopback (tests/gateway/fake_engine.py).
"""

from __future__ import annotations

import asyncio
import json

import httpx
import websockets
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from tests.fixtures.serving import free_port
from tests.gateway.conftest import TEST_KEY, running_gateway, serve
from tests.gateway.fake_engine import fake_engine_app
from tests.gateway.test_gateway_proxy import register

AUTH = [("authorization", f"Bearer {TEST_KEY}")]


def refusing_upstream() -> Starlette:
    """Refuses every realtime handshake with HTTP 503 (`websockets.InvalidStatus` at the gateway).

    NOT what a draining `dalston serve` does: dalston/server/realtime.py (checked at f3faca3) accepts the
    upgrade and then closes with 4503 `shutting_down`, which the gateway relays to the client (a
    draining engine is deregistered first, so new sessions rarely reach it). This models an upstream
    that answers the handshake with a status — a proxy or load balancer in front of an engine, or an
    engine whose accept never happens — so a real defect there (treating a refusal as a dead engine, or
    not trying the next one) fails here."""
    async def realtime(websocket: WebSocket) -> None:
        await websocket.send_denial_response(JSONResponse({"error": {"code": "shutting_down"}}, status_code=503))

    return Starlette(routes=[WebSocketRoute("/v1/realtime", realtime)])


async def open_session(gw: str) -> str:
    async with websockets.connect(gw.replace("http", "ws") + "/v1/realtime?model=whisper-streaming-base",
                                  additional_headers=AUTH) as ws:
        return str(json.loads(await ws.recv())["instance"])


def test_sessions_skip_a_dead_engine_and_it_is_dropped_at_once(catalog, keys_file) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused, like a SIGKILLed engine
    with running_gateway(catalog, keys_file, heartbeat_timeout=60.0) as (gw, state), serve(fake_engine_app("live")) as live:
        assert register(gw, "whisper-streaming-base", dead, catalog).status_code == 201
        assert register(gw, "whisper-streaming-base", live, catalog).status_code == 201
        served = [asyncio.run(open_session(gw)) for _ in range(6)]
        assert served == ["live"] * 6
        assert [i.url for i in state.instances.live("whisper-streaming-base")] == [live]
        metrics = httpx.get(f"{gw}/metrics").text
        assert 'dalston_gateway_upstream_errors_total{kind="connect",model="whisper-streaming-base"} 1.0' in metrics


def test_a_refusing_engine_is_skipped_but_kept(catalog, keys_file) -> None:
    with running_gateway(catalog, keys_file, heartbeat_timeout=60.0) as (gw, state), \
            serve(refusing_upstream()) as refusing, serve(fake_engine_app("live")) as live:
        register(gw, "whisper-streaming-base", refusing, catalog)
        register(gw, "whisper-streaming-base", live, catalog)
        assert [asyncio.run(open_session(gw)) for _ in range(4)] == ["live"] * 4
        assert len(state.instances.live("whisper-streaming-base")) == 2  # refusing is not dead


def test_only_dead_engines_give_502_naming_the_failure(catalog, keys_file) -> None:
    with running_gateway(catalog, keys_file, heartbeat_timeout=60.0) as (gw, state):
        register(gw, "whisper-streaming-base", f"http://127.0.0.1:{free_port()}", catalog)
        register(gw, "whisper-streaming-base", f"http://127.0.0.1:{free_port()}", catalog)

        async def attempt() -> int:
            try:
                await open_session(gw)
            except websockets.InvalidStatus as exc:
                return exc.response.status_code
            return 101

        assert asyncio.run(attempt()) == 502
        assert state.instances.live("whisper-streaming-base") == []
        assert asyncio.run(attempt()) == 503  # now nothing is registered at all
