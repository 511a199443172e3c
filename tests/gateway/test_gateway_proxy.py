"""The gateway against fake upstreams on loopback: routing, streaming, registration, and the fault table.

Fault table (status the client gets; nothing left in flight afterwards):
| case                                 | status |
|--------------------------------------|--------|
| missing / wrong API key              | 401    |
| unknown model                        | 404 (lists known ids) |
| known model, no live instance        | 503 + Retry-After |
| engine dies mid-request              | 502    |
| engine slower than upstream timeout  | 504    |
| upload over the limit                | 413    |
| malformed registration               | 400 / 422 (409 on spec skew, 401 bad token) |
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import websockets

from dalston.registration import Registrar, spec_digest
from tests.gateway.conftest import INTERNAL_TOKEN, TEST_KEY, running_gateway, serve
from tests.gateway.fake_engine import dying_server, fake_engine_app

AUTH = {"authorization": f"Bearer {TEST_KEY}"}
INTERNAL = {"authorization": f"Bearer {INTERNAL_TOKEN}"}
BOUNDARY = "gatewaytestboundary"


def multipart(fields: list[tuple[str, bytes, str | None]]) -> bytes:
    """A multipart body with fields in exactly this order (name, value, filename)."""
    out = b""
    for name, value, filename in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + value + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def settled(state, timeout: float = 5.0) -> bool:
    """True once no request is in flight (the relay releases its instance just after the last byte)."""
    deadline = time.monotonic() + timeout
    while any(i.in_flight for i in state.instances.all()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


CT = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def register(gw: str, engine_id: str, url: str, catalog, **extra) -> httpx.Response:
    body = {"engine_id": engine_id, "url": url, "spec_digest": spec_digest(catalog.get(engine_id).spec),
            "max_concurrency": 4, **extra}
    return httpx.post(f"{gw}/internal/v1/instances", json=body, headers=INTERNAL)


@pytest.fixture()
def gateway(catalog, keys_file):
    # Instances are registered by hand, without heartbeats: a timeout longer than any test, even on a
    # loaded machine. test_registrar_lifecycle_and_heartbeat_timeout runs its own short-timeout gateway.
    with running_gateway(catalog, keys_file, upstream_timeout=1.0, max_upload_bytes=8 << 20,
                         max_prefix_bytes=1 << 20, heartbeat_timeout=60.0) as (url, state):
        yield url, state


@pytest.fixture()
def engine_a():
    with serve(fake_engine_app("a")) as url:
        yield url


@pytest.fixture()
def engine_b():
    with serve(fake_engine_app("b")) as url:
        yield url


def test_streams_upload_byte_for_byte_with_model_before_file(gateway, engine_a, catalog):
    gw, state = gateway
    assert register(gw, "whisper-base", engine_a, catalog).status_code == 201
    audio = os.urandom(5 << 20)  # larger than the prefix limit: only possible if the file is streamed
    body = multipart([("model", b"whisper-base", None), ("file", audio, "a.wav")])
    r = httpx.post(f"{gw}/v1/audio/transcriptions", content=body, headers={**AUTH, **CT})
    assert r.status_code == 200, r.text
    assert r.json()["sha256"] == hashlib.sha256(body).hexdigest() and r.json()["size"] == len(body)
    assert r.json()["auth"] == f"Bearer {TEST_KEY}"  # the engine re-checks the same key
    assert r.headers["x-dalston-engine"] == "whisper-base"
    assert settled(state)


def test_chunked_upload_and_alias(gateway, engine_a, catalog):
    gw, _ = gateway
    register(gw, "whisper-base", engine_a, catalog)
    body = multipart([("model", b"fast", None), ("file", os.urandom(300_000), "a.wav")])

    def chunks():
        for i in range(0, len(body), 7000):
            yield body[i:i + 7000]

    r = httpx.post(f"{gw}/v1/audio/transcriptions", content=chunks(), headers={**AUTH, **CT})
    assert r.status_code == 200 and r.json()["sha256"] == hashlib.sha256(body).hexdigest()


def test_model_after_small_file_is_buffered_and_after_large_file_is_refused(gateway, engine_a, catalog):
    gw, _ = gateway
    register(gw, "whisper-base", engine_a, catalog)
    small = multipart([("file", b"x" * 1000, "a.wav"), ("model", b"whisper-base", None)])
    r = httpx.post(f"{gw}/v1/audio/transcriptions", content=small, headers={**AUTH, **CT})
    assert r.status_code == 200 and r.json()["sha256"] == hashlib.sha256(small).hexdigest()
    large = multipart([("file", b"x" * (2 << 20), "a.wav"), ("model", b"whisper-base", None)])
    r = httpx.post(f"{gw}/v1/audio/transcriptions", content=large, headers={**AUTH, **CT})
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_field_too_late"
    assert "?model=" in r.json()["error"]["message"]
    r = httpx.post(f"{gw}/v1/audio/transcriptions?model=whisper-base", content=large, headers={**AUTH, **CT})
    assert r.status_code == 200 and r.json()["size"] == len(large)


def test_missing_model_and_not_multipart(gateway):
    gw, _ = gateway
    r = httpx.post(f"{gw}/v1/audio/transcriptions", content=multipart([("file", b"x", "a.wav")]),
                   headers={**AUTH, **CT})
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_model"
    r = httpx.post(f"{gw}/v1/audio/transcriptions", json={"model": "whisper-base"}, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_content_type"


@pytest.mark.parametrize("headers,code", [({}, "missing_api_key"),
                                          ({"authorization": "Bearer dk_wrong"}, "invalid_api_key"),
                                          ({"authorization": "Basic abc"}, "missing_api_key")])
def test_bad_key_401(gateway, headers, code):
    gw, _ = gateway
    r = httpx.post(f"{gw}/v1/audio/transcriptions", content=multipart([("model", b"whisper-base", None)]),
                   headers={**headers, **CT})
    assert r.status_code == 401 and r.json()["error"]["code"] == code
    assert httpx.get(f"{gw}/v1/models", headers=headers).status_code == 401


def test_unknown_model_404_lists_known_ids(gateway, catalog):
    gw, _ = gateway
    r = httpx.post(f"{gw}/v1/audio/transcriptions", content=multipart([("model", b"whisper-huge", None)]),
                   headers={**AUTH, **CT})
    assert r.status_code == 404
    message = r.json()["error"]["message"]
    assert "whisper-huge" in message and all(engine_id in message for engine_id in catalog.engines)


def test_no_live_instance_503_with_retry_after(gateway):
    gw, _ = gateway
    r = httpx.post(f"{gw}/v1/audio/transcriptions", content=multipart([("model", b"parakeet-0.6b", None)]),
                   headers={**AUTH, **CT})
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_unavailable"
    assert int(r.headers["retry-after"]) > 0


def test_engine_dies_mid_request_502(gateway, catalog):
    gw, state = gateway
    with dying_server() as dead:
        register(gw, "whisper-base", dead, catalog)
        body = multipart([("model", b"whisper-base", None), ("file", os.urandom(200_000), "a.wav")])
        started = time.monotonic()
        r = httpx.post(f"{gw}/v1/audio/transcriptions", content=body, headers={**AUTH, **CT}, timeout=10)
    assert r.status_code == 502 and r.json()["error"]["type"] == "server_error"
    assert time.monotonic() - started < 5
    assert settled(state)


def test_engine_slow_504(gateway, engine_a, catalog):
    gw, state = gateway
    register(gw, "whisper-base", engine_a, catalog)
    started = time.monotonic()
    r = httpx.post(f"{gw}/v1/audio/transcriptions?behaviour=slow&seconds=5",
                   content=multipart([("model", b"whisper-base", None)]), headers={**AUTH, **CT}, timeout=10)
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 3  # the gateway's 1 s upstream timeout, not the engine's 5 s
    assert settled(state)


def test_oversize_upload_413(gateway, engine_a, catalog):
    gw, state = gateway
    register(gw, "whisper-base", engine_a, catalog)
    body = multipart([("model", b"whisper-base", None), ("file", b"\0" * (9 << 20), "a.wav")])
    r = httpx.post(f"{gw}/v1/audio/transcriptions", content=body, headers={**AUTH, **CT})
    assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"

    def chunked():  # no Content-Length: the limit is enforced while streaming
        for i in range(0, len(body), 1 << 20):
            yield body[i:i + (1 << 20)]

    r = httpx.post(f"{gw}/v1/audio/transcriptions", content=chunked(), headers={**AUTH, **CT}, timeout=10)
    assert r.status_code == 413
    assert settled(state)


def test_sse_passthrough_is_streamed(gateway, engine_a, catalog):
    gw, _ = gateway
    register(gw, "whisper-base", engine_a, catalog)
    arrivals = []
    with httpx.stream("POST", f"{gw}/v1/audio/transcriptions?behaviour=sse",
                      content=multipart([("model", b"whisper-base", None), ("stream", b"true", None)]),
                      headers={**AUTH, **CT}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                arrivals.append((time.monotonic(), line))
    assert [line for _, line in arrivals][-1] == "data: [DONE]" and len(arrivals) == 4
    assert arrivals[-1][0] - arrivals[0][0] > 0.6  # events arrived as produced, not all at the end


def test_least_in_flight_spreads_concurrent_requests(gateway, engine_a, engine_b, catalog):
    gw, state = gateway
    register(gw, "whisper-base", engine_a, catalog)
    register(gw, "whisper-base", engine_b, catalog)
    body = multipart([("model", b"whisper-base", None)])

    def one(_: int) -> str:
        r = httpx.post(f"{gw}/v1/audio/transcriptions?behaviour=hold&seconds=0.5", content=body,
                       headers={**AUTH, **CT})
        return r.json()["instance"]

    with ThreadPoolExecutor(4) as pool:
        served = list(pool.map(one, range(4)))
    assert sorted(served) == ["a", "a", "b", "b"]
    models = httpx.get(f"{gw}/v1/models", headers=AUTH).json()["data"]
    base = next(m for m in models if m["id"] == "whisper-base")
    assert base["available"] and base["live_instances"] == 2 and base["aliases"] == ["fast"]
    assert not next(m for m in models if m["id"] == "parakeet-0.6b")["available"]


def test_metrics_per_model(gateway, engine_a, catalog):
    gw, _ = gateway
    register(gw, "whisper-base", engine_a, catalog)
    httpx.post(f"{gw}/v1/audio/transcriptions", content=multipart([("model", b"whisper-base", None)]),
               headers={**AUTH, **CT})
    text = httpx.get(f"{gw}/metrics").text
    assert 'dalston_gateway_requests_total{model="whisper-base",status="200"} 1.0' in text
    assert 'dalston_gateway_live_instances{model="whisper-base"} 1.0' in text
    assert 'dalston_gateway_live_instances{model="parakeet-0.6b"} 0.0' in text


@pytest.mark.parametrize("body,status,code", [
    (b"not json", 400, "invalid_json"),
    (json.dumps({"engine_id": "whisper-base"}).encode(), 422, "invalid_registration"),
    (json.dumps({"engine_id": "whisper-base", "url": "ftp://x", "spec_digest": "0" * 64,
                 "max_concurrency": 1}).encode(), 422, "invalid_registration"),
    (json.dumps({"engine_id": "nope", "url": "http://127.0.0.1:1", "spec_digest": "0" * 64,
                 "max_concurrency": 1}).encode(), 422, "unknown_engine"),
    (json.dumps({"engine_id": "whisper-base", "url": "http://127.0.0.1:1", "spec_digest": "0" * 64,
                 "max_concurrency": 1}).encode(), 409, "spec_digest_mismatch"),
])
def test_malformed_registration(gateway, body, status, code):
    gw, state = gateway
    r = httpx.post(f"{gw}/internal/v1/instances", content=body, headers={**INTERNAL, "content-type": "application/json"})
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text
    assert state.instances.all() == []


def test_registration_needs_internal_token(gateway, engine_a, catalog):
    gw, _ = gateway
    body = {"engine_id": "whisper-base", "url": engine_a,
            "spec_digest": spec_digest(catalog.get("whisper-base").spec), "max_concurrency": 2}
    for headers in ({}, {"authorization": "Bearer wrong"}, AUTH):
        r = httpx.post(f"{gw}/internal/v1/instances", json=body, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_internal_token"


@pytest.fixture()
def short_timeout_gateway(catalog, keys_file):
    with running_gateway(catalog, keys_file, heartbeat_interval=0.2, heartbeat_timeout=0.8) as (url, state):
        yield url, state


def test_registrar_lifecycle_and_heartbeat_timeout(short_timeout_gateway, engine_a, catalog, caplog):
    gw, state = short_timeout_gateway
    digest = spec_digest(catalog.get("whisper-base").spec)
    caplog.set_level("INFO")
    registrar = Registrar(gw, "whisper-base", engine_a, digest, 2, INTERNAL_TOKEN, interval=0.2).start()
    try:
        assert registrar.registered.wait(5)
        assert f"engine_registered engine_id=whisper-base gateway={gw}" in caplog.text
        assert "instance_registered engine_id=whisper-base url=" in caplog.text
        time.sleep(1.5)  # well past the 0.8 s timeout: heartbeats keep it alive
        assert len(state.instances.live("whisper-base")) == 1
        # The gateway forgets it (as after a gateway restart): the next heartbeat re-registers.
        state.instances.deregister(registrar.instance_id)
        deadline = time.monotonic() + 3
        while not state.instances.live("whisper-base") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(state.instances.live("whisper-base")) == 1
    finally:
        registrar.stop()
    assert state.instances.live("whisper-base") == []  # deregistered at once, not after the timeout
    # An instance that never heartbeats is dropped after the timeout.
    register(gw, "whisper-base", engine_a, catalog)
    assert len(state.instances.live("whisper-base")) == 1
    time.sleep(1.0)
    r = httpx.post(f"{gw}/v1/audio/transcriptions", content=multipart([("model", b"whisper-base", None)]),
                   headers={**AUTH, **CT})
    assert r.status_code == 503


def test_registrar_stops_on_spec_skew(gateway, engine_a):
    gw, state = gateway
    registrar = Registrar(gw, "whisper-base", engine_a, "f" * 64, 2, INTERNAL_TOKEN, interval=0.1).start()
    deadline = time.monotonic() + 5
    while registrar.rejected is None and time.monotonic() < deadline:
        time.sleep(0.05)
    registrar.stop()
    assert registrar.rejected and "spec digest mismatch" in registrar.rejected
    assert state.instances.all() == []


def test_realtime_websocket_proxy(gateway, engine_a, catalog):
    gw, state = gateway
    register(gw, "whisper-streaming-base", engine_a, catalog)
    ws_url = "ws" + gw.removeprefix("http") + "/v1/realtime?model=whisper-streaming-base"

    async def session() -> list[dict]:
        async with websockets.connect(ws_url, additional_headers=AUTH) as ws:
            got = [json.loads(await ws.recv())]
            await ws.send(b"\0" * 3200)
            got.append(json.loads(await ws.recv()))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            got.append(json.loads(await ws.recv()))
            await ws.send("close")
            with pytest.raises(websockets.ConnectionClosedOK):
                await ws.recv()
            return got

    got = asyncio.run(session())
    assert got[0] == {"type": "session.created", "instance": "a", "model": "whisper-streaming-base"}
    assert got[1] == {"type": "audio", "bytes": 3200}
    assert got[2] == {"type": "input_audio_buffer.commit"}
    assert settled(state)


@pytest.mark.parametrize("query,headers,status", [("model=whisper-streaming-base", {}, 401),
                                                  ("model=nope", AUTH, 404),
                                                  ("model=parakeet-streaming-0.6b", AUTH, 503)])
def test_realtime_refusals(gateway, query, headers, status):
    gw, _ = gateway
    ws_url = "ws" + gw.removeprefix("http") + f"/v1/realtime?{query}"

    async def attempt() -> int:
        try:
            async with websockets.connect(ws_url, additional_headers=headers):
                return 101
        except websockets.InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(attempt()) == status


@pytest.mark.parametrize("argv,message", [
    (["--keys-file", "k.txt"], "DALSTON_INTERNAL_TOKEN"),
    (["--internal-token", "t"], "--keys-file"),
    (["--internal-token", "t", "--insecure-no-auth", "--heartbeat-timeout", "1", "--heartbeat-interval", "2"],
     "--heartbeat-timeout"),
])
def test_gateway_cli_refuses_unsafe_or_inconsistent_config(argv, message, capsys, monkeypatch):
    import argparse

    from dalston.gateway import main as gateway_main

    monkeypatch.delenv("DALSTON_INTERNAL_TOKEN", raising=False)
    monkeypatch.delenv("DALSTON_KEYS_FILE", raising=False)
    parser = argparse.ArgumentParser()
    gateway_main.add_arguments(parser)
    assert gateway_main.run(parser.parse_args(argv)) == 2
    assert message in capsys.readouterr().err


def test_client_hanging_up_mid_upload_leaves_nothing_in_flight(gateway, engine_a, catalog):
    import socket

    gw, state = gateway
    register(gw, "whisper-base", engine_a, catalog)
    host, port = gw.removeprefix("http://").split(":")
    head = multipart([("model", b"whisper-base", None)]).rsplit(f"--{BOUNDARY}--".encode(), 1)[0]
    head += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'.encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall((f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TEST_KEY}\r\n"
                      f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 5000000\r\n\r\n"
                      ).encode() + head + b"\0" * 100_000)
        assert wait_for(lambda: any(i.in_flight for i in state.instances.all()))  # the upload is being proxied
    assert settled(state)
    assert state.metrics.registry.get_sample_value(
        "dalston_gateway_requests_total", {"model": "whisper-base", "status": "499"}) == 1.0


def test_registrar_for_reads_the_environment(catalog, monkeypatch):
    from dalston.registration import RegistrationConfigError, registrar_for

    spec = catalog.get("whisper-base").spec
    monkeypatch.delenv("DALSTON_GATEWAY_URL", raising=False)
    monkeypatch.delenv("DALSTON_INTERNAL_TOKEN", raising=False)
    monkeypatch.delenv("DALSTON_ADVERTISE_URL", raising=False)
    assert registrar_for(spec, "127.0.0.1", 8001) is None
    with pytest.raises(RegistrationConfigError, match="DALSTON_INTERNAL_TOKEN"):
        registrar_for(spec, "127.0.0.1", 8001, gateway_url="http://gw:8000")
    monkeypatch.setenv("DALSTON_GATEWAY_URL", "http://gw:8000/")
    monkeypatch.setenv("DALSTON_INTERNAL_TOKEN", "secret")
    registrar = registrar_for(spec, "127.0.0.1", 8001)
    assert registrar is not None and registrar.gateway_url == "http://gw:8000"
    assert registrar.engine_url == "http://127.0.0.1:8001" and registrar.max_concurrency == 2
    assert registrar.spec_digest == spec_digest(spec) and len(registrar.spec_digest) == 64
    monkeypatch.setenv("DALSTON_ADVERTISE_URL", "http://10.0.0.7:8000")
    assert registrar_for(spec, "0.0.0.0", 8000).engine_url == "http://10.0.0.7:8000"


def test_spec_digest_changes_with_the_spec(catalog):
    spec = catalog.get("whisper-base").spec
    changed = spec.model_copy(update={"version": "1.0.1"})
    assert spec_digest(spec) == spec_digest(catalog.get("whisper-base").spec)
    assert spec_digest(changed) != spec_digest(spec)
