"""SIGTERM on a gateway replica drains what it relays instead of cutting it (issue 13: rolling updates).

Before: `dalston gateway` ran uvicorn's own shutdown, which closes every open WebSocket at once with
1012, so each rolling update of the gateway Deployment cut every realtime session relayed through the
old pod. Now (`dalston.draining.DrainingServer`, as engines): `/ready` 503, new requests and sessions
get 503 `shutting_down` + `Retry-After`, open sessions are told `session.draining` and may finish up
to `--shutdown-timeout`, in-flight HTTP requests finish, then what is left is closed 1001 "going
away" and the process exits 0. Also: the engine's close *reason* reaches the client, not just its code.

A real `dalston gateway` process on loopback; the engine is tests/gateway/fake_engine.py (it names the
engine behaviour it models) served by uvicorn and registered by the real `Registrar` with heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from dalston.catalog import Catalog
from dalston.registration import Registrar, spec_digest
from tests.fixtures.serving import TEST_KEY, serve_app
from tests.gateway import processes as p
from tests.gateway.fake_engine import fake_engine_app

REPO = Path(__file__).resolve().parents[2]
REALTIME = "whisper-streaming-base"
BATCH = "whisper-base"
AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


@pytest.fixture(scope="module")
def engine() -> Iterator[str]:
    with serve_app(fake_engine_app("a")) as url:
        yield url


def _start_gateway(tmp_path: Path, keys_file: Path, engine: str, shutdown_timeout: float, via_env: bool
                   ) -> tuple[p.Proc, list[Registrar]]:
    """`--shutdown-timeout`, or `DALSTON_SHUTDOWN_TIMEOUT` as the Kubernetes manifests set it."""
    env = p.base_env(REPO / "engines", tmp_path / "models")
    extra = ["--shutdown-timeout", str(shutdown_timeout)]
    if via_env:
        env["DALSTON_SHUTDOWN_TIMEOUT"], extra = str(shutdown_timeout), []
    gw = p.gateway(env, keys_file, tmp_path, interval=0.5, timeout=3.0, extra=extra).start()
    gw.wait_http("/health", 60)
    catalog = Catalog.load()
    registrars = [Registrar(gw.url, engine_id, engine, spec_digest(catalog.get(engine_id).spec), 4, p.INTERNAL_TOKEN,
                            interval=0.5).start() for engine_id in (REALTIME, BATCH)]
    for registrar in registrars:
        assert registrar.registered.wait(20), gw.log_text()[-2000:]
    return gw, registrars


@pytest.fixture()
def gateway_factory(tmp_path: Path, keys_file: Path, engine: str) -> Iterator[Any]:
    started: list[tuple[p.Proc, list[Registrar]]] = []

    def start(shutdown_timeout: float, via_env: bool = False) -> p.Proc:
        started.append(_start_gateway(tmp_path, keys_file, engine, shutdown_timeout, via_env))
        return started[-1][0]

    yield start
    for gw, registrars in started:
        for registrar in registrars:
            registrar.stop()
        gw.kill()


def _ws_url(gw: p.Proc, model: str = REALTIME) -> str:
    return gw.url.replace("http", "ws") + f"/v1/realtime?model={model}"


async def _next_json(ws: Any) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return event


async def _wait_ready_status(client: httpx.AsyncClient, gw: p.Proc, status: int) -> None:
    deadline = time.monotonic() + 10
    while (await client.get(gw.url + "/ready")).status_code != status:
        assert time.monotonic() < deadline, f"/ready never answered {status}"
        await asyncio.sleep(0.05)


def _sigterm(gw: p.Proc) -> None:
    gw.sigterm()


def test_sigterm_lets_relayed_session_and_request_finish(gateway_factory: Any) -> None:
    """A session relayed at SIGTERM is told, keeps working, and ends with the engine's 1000 when the
    client ends it; an upload in flight gets its answer; meanwhile `/ready` is 503 and a new session
    and a new request are refused with 503 `shutting_down` + `Retry-After`; then the gateway exits 0."""
    gw = gateway_factory(20.0)

    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with httpx.AsyncClient(timeout=30) as client, \
                websockets.connect(_ws_url(gw), additional_headers=AUTH) as ws:
            assert (await _next_json(ws))["type"] == "session.created"
            await ws.send(b"\0" * 640)
            assert await _next_json(ws) == {"type": "audio", "bytes": 640}
            upload = asyncio.create_task(client.post(
                gw.url + f"/v1/audio/transcriptions?model={BATCH}&behaviour=slow&seconds=3",
                headers=AUTH, content=b"x" * 1000))
            await asyncio.sleep(0.5)  # the upload is in flight on the engine
            _sigterm(gw)
            out["draining"] = await _next_json(ws)
            await _wait_ready_status(client, gw, 503)
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(_ws_url(gw), additional_headers=AUTH):
                    pass
            response = refused.value.response
            out["ws_refusal"] = (response.status_code, json.loads(response.body or b"")["error"]["code"],
                                 response.headers.get("Retry-After"))
            # a 5 MB upload: the gateway reads it before answering, or closing with unread data would
            # reset the connection and the client would get a ReadError instead of the 503
            late = await client.post(gw.url + f"/v1/audio/transcriptions?model={BATCH}", headers=AUTH,
                                     content=b"x" * (5 << 20))
            out["http_refusal"] = (late.status_code, late.json()["error"]["code"], late.headers.get("retry-after"))
            await ws.send(b"\0" * 320)  # the open session still works
            out["after"] = await _next_json(ws)
            upload_response = await upload
            out["upload"] = (upload_response.status_code, upload_response.json().get("size"))
            await ws.send("close")
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            out["close"] = (ws.close_code, ws.close_reason)
        return out

    started = time.monotonic()
    out = asyncio.run(scenario())
    assert out["draining"]["type"] == "session.draining" and 15 < out["draining"]["deadline_s"] <= 20, out
    assert out["ws_refusal"] == (503, "shutting_down", "1"), out
    assert out["http_refusal"] == (503, "shutting_down", "1"), out
    assert out["after"] == {"type": "audio", "bytes": 320}
    assert out["upload"] == (200, 1000), out
    assert out["close"] == (1000, ""), out
    assert gw.popen is not None and gw.popen.wait(15) == 0, gw.log_text()[-3000:]
    assert time.monotonic() - started < 20, "the gateway waited for its deadline although nothing was left"
    log = gw.log_text()
    assert re.search(r"gateway_draining signal=15 sessions=1 requests=1 deadline_s=20\.0", log), log[-3000:]
    assert re.search(r"gateway_drained seconds=\S+ sessions_left=0 requests_left=0", log), log[-3000:]


def test_session_outliving_the_timeout_is_flushed_then_gets_1001(gateway_factory: Any) -> None:
    """With a 2 s budget, a native session still open at the deadline: the gateway stops relaying the
    client's frames, asks the engine to finish (`session.end`), relays its `session.end` (all the audio
    the gateway had passed on), then closes 1001 "going away" (a client reconnects through another
    replica), not 1012; the gateway then exits 0. The budget comes from `DALSTON_SHUTDOWN_TIMEOUT`, as
    in the generated Kubernetes manifests."""
    gw = gateway_factory(2.0, via_env=True)

    async def scenario() -> tuple[list[dict[str, Any]], int, float, int | None, str]:
        events: list[dict[str, Any]] = []
        sent = 0
        async with websockets.connect(_ws_url(gw), additional_headers=AUTH) as ws:
            assert (await _next_json(ws))["type"] == "session.created"

            async def stream() -> None:  # 320-byte frames every 50 ms until the gateway closes
                nonlocal sent
                with contextlib.suppress(websockets.ConnectionClosed):
                    while True:
                        await ws.send(b"\0" * 320)
                        sent += 320
                        await asyncio.sleep(0.05)

            streaming = asyncio.create_task(stream())
            await asyncio.sleep(0.3)
            _sigterm(gw)
            told = time.monotonic()
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    events.append(await _next_json(ws))
            closed_after = time.monotonic() - told
            await streaming
            return events, sent, closed_after, ws.close_code, ws.close_reason

    events, sent, closed_after, code, reason = asyncio.run(scenario())
    kinds = [e["type"] for e in events if e["type"] != "audio"]
    assert kinds == ["session.draining", "session.end"], kinds
    draining, end = events[[e["type"] for e in events].index("session.draining")], events[-1]
    assert 0 < draining["deadline_s"] <= 2.0, draining
    # the engine's own goodbye, after every frame it got was answered; it got all the client sent
    # until the deadline (the few frames sent after it are not relayed)
    relayed = sum(e["bytes"] for e in events if e["type"] == "audio")
    assert end["type"] == "session.end" and end["bytes"] == relayed, (end, relayed)
    assert sent - 320 * 20 < relayed <= sent, (relayed, sent)
    assert code == 1001 and reason.startswith("going away"), (code, reason)
    assert 1.5 < closed_after < 6, closed_after
    assert gw.popen is not None and gw.popen.wait(15) == 0, gw.log_text()[-3000:]
    log = gw.log_text()
    assert "realtime_drain_deadline sessions=1" in log
    assert "protocol=native complete=True" in log, log[-2000:]


def test_engine_close_code_and_reason_reach_the_client(gateway_factory: Any) -> None:
    """The gateway relays the engine's close as it is: code and reason (before: code only)."""
    gw = gateway_factory(5.0)

    async def close_with(command: str) -> tuple[int | None, str]:
        async with websockets.connect(_ws_url(gw), additional_headers=AUTH) as ws:
            assert (await _next_json(ws))["type"] == "session.created"
            await ws.send(command)
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            return ws.close_code, ws.close_reason

    assert asyncio.run(close_with("close 1001 server shutting down")) == (1001, "server shutting down")
    assert asyncio.run(close_with("close 4400 frame_too_large: 70000 bytes")) == (4400, "frame_too_large: 70000 bytes")


def test_engine_lost_without_close_frame_reaches_client_as_1014(gateway_factory: Any, catalog: Catalog) -> None:
    """An engine whose connection breaks mid-session (a SIGKILL: no close frame, 1006 at the gateway,
    a code no endpoint may send) is reported to the client as 1014 "bad gateway", with a reason."""
    from websockets.asyncio.server import ServerConnection, serve

    gw = gateway_factory(5.0)

    async def scenario() -> tuple[int | None, str]:
        async def dying_engine(ws: ServerConnection) -> None:  # accepts, then its process "dies" on "die"
            await ws.send(json.dumps({"type": "session.created"}))
            async for message in ws:
                if message == "die":
                    ws.transport.abort()  # RST, no close frame: as the kernel does for a SIGKILLed process
                    return

        async with serve(dying_engine, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            url = f"http://127.0.0.1:{port}"
            registrar = Registrar(gw.url, "parakeet-streaming-0.6b", url,
                                  spec_digest(catalog.get("parakeet-streaming-0.6b").spec), 4, p.INTERNAL_TOKEN,
                                  interval=0.5).start()
            try:
                assert await asyncio.to_thread(registrar.registered.wait, 20)
                async with websockets.connect(_ws_url(gw, "parakeet-streaming-0.6b"), additional_headers=AUTH) as ws:
                    assert (await _next_json(ws))["type"] == "session.created"
                    await ws.send("die")
                    with pytest.raises(websockets.ConnectionClosed):
                        await asyncio.wait_for(ws.recv(), 10)
                    return ws.close_code, ws.close_reason
            finally:
                await asyncio.to_thread(registrar.stop)

    assert asyncio.run(scenario()) == (1014, "engine connection lost")
