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
from starlette.responses import PlainTextResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from dalston.errors import ApiError
from tests.fixtures.serving import free_port
from tests.gateway.conftest import TEST_KEY, running_gateway, serve
from tests.gateway.fake_engine import fake_engine_app
from tests.gateway.test_gateway_proxy import register

AUTH = [("authorization", f"Bearer {TEST_KEY}")]


def refusing_upstream() -> Starlette:
    """Refuses every realtime handshake with a plain HTTP 503 page (`websockets.InvalidStatus` at the gateway).

    Models an upstream that is not a dalston engine answering for itself — a proxy or load balancer in
    front of an engine (nginx's 503 page: text, no OpenAI-style JSON) — so a real defect there
    (treating a refusal as a dead engine, or not trying the next one) fails here. A full or draining
    `dalston serve` asked by the gateway refuses in the handshake too, with 429/503 and a JSON error:
    that path runs against real engines in tests/gateway/test_e2e.py."""
    async def realtime(websocket: WebSocket) -> None:
        await websocket.send_denial_response(PlainTextResponse("503 Service Temporarily Unavailable", status_code=503))

    return Starlette(routes=[WebSocketRoute("/v1/realtime", realtime)])


def key_refusing_upstream() -> Starlette:
    """Answers the handshake as dalston/server/realtime.py (checked at 6ae076b) does for a gateway
    (`Dalston-Refuse-In-Handshake: 1`) when the key is wrong: 401 and the OpenAI-style error body;
    without the header it would accept and close 4001, as the real engine does. The error is the one
    dalston/admission.py's `authenticate` raises for an unknown key (same code and type)."""
    async def realtime(websocket: WebSocket) -> None:
        if websocket.headers.get("dalston-refuse-in-handshake") != "1":
            await websocket.accept()
            await websocket.close(4001)
            return
        await websocket.send_denial_response(ApiError(401, "invalid API key", "invalid_api_key",
                                                          type_="authentication_error").response())

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


def test_a_client_error_from_an_engine_is_relayed_not_retried(catalog, keys_file) -> None:
    """A 4xx with an OpenAI-style body is the client's error: every instance would give it, so the
    gateway answers it at once (same status and code) and does not walk the other instances."""
    with running_gateway(catalog, keys_file, heartbeat_timeout=60.0) as (gw, state), \
            serve(key_refusing_upstream()) as refusing, serve(fake_engine_app("live")) as live:
        register(gw, "whisper-streaming-base", refusing, catalog)
        assert state.instances.pick("whisper-streaming-base") is not None
        register(gw, "whisper-streaming-base", live, catalog)

        async def attempt() -> tuple[int, str]:
            try:
                await open_session(gw)
            except websockets.InvalidStatus as exc:
                return exc.response.status_code, json.loads(exc.response.body)["error"]["code"]
            return 101, ""

        answers = {asyncio.run(attempt()) for _ in range(4)}  # least-loaded picks each instance in turn
        assert (401, "invalid_api_key") in answers and answers <= {(401, "invalid_api_key"), (101, "")}
        assert len(state.instances.live("whisper-streaming-base")) == 2
