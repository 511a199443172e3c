"""Slow and stalled clients cannot hold connections (dalston/connection_limits.py), engine and gateway.

Before: a request declaring 1 GB and sending 1 KB got no answer, a header line at 1 byte/s stayed
open indefinitely, and through the gateway each such client also held an engine connection counted
as in flight. Each case here failed that way before the protocol limits existed. Real uvicorn, real
sockets: the `dalston gateway` and `dalston serve` processes as their CLIs start them, and the fake
engine of the gateway tests (tests/gateway/fake_engine.py) where only the protocol matters.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import time
from pathlib import Path

import httpx
import pytest

from dalston.connection_limits import ConnectionLimits, protocol_class
from dalston.registration import spec_digest
from tests.fixtures import assets
from tests.fixtures.serving import serve_app
from tests.gateway import processes as p
from tests.gateway.fake_engine import fake_engine_app

KEY = "dk_test"
LIMIT_FLAGS = ["--header-timeout", "1", "--body-timeout", "1", "--max-connections", "6"]
STALLED = (b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
           b"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000000\r\n\r\n"
           b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-base\r\n--b\r\n' + b"x" * 1024)


def read_answer(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    sock.settimeout(timeout)
    started, data = time.monotonic(), b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data, time.monotonic() - started


def status_and_error(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)["error"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("limits")
    keys = root / "keys.txt"
    keys.write_text(hashlib.sha256(KEY.encode()).hexdigest() + "\n")
    env = p.base_env(assets.engines_tree(root), root / "models")
    gw = p.gateway(env, keys, root, extra=LIMIT_FLAGS).start()
    try:
        gw.wait_http("/health", 30)
        yield gw
    finally:
        gw.stop()


def test_partial_headers_get_408_json_and_close(gateway: p.Proc) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthor")
        answer, waited = read_answer(sock, 10)
    status, error = status_and_error(answer)
    assert status == 408 and error["code"] == "request_timeout" and "headers" in error["message"]
    assert b"connection: close" in answer.lower()
    assert waited < 5


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(gateway: p.Proc) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        answer, waited = read_answer(sock, 10)
    assert answer == b"" and waited < 5


def test_stalled_body_through_the_gateway_gets_408_and_releases_the_engine(gateway: p.Proc, tmp_path: Path) -> None:
    """The upload stalls after 1 KB: the gateway answers 408 and its upstream request is cancelled."""
    with serve_app(fake_engine_app("a")) as engine:
        from dalston.catalog import Catalog

        spec = Catalog.load(Path(gateway.env["DALSTON_ENGINES_DIR"])).get("whisper-base").spec
        r = httpx.post(f"{gateway.url}/internal/v1/instances", headers={"authorization": f"Bearer {p.INTERNAL_TOKEN}"},
                       json={"engine_id": "whisper-base", "url": engine, "spec_digest": spec_digest(spec),
                             "max_concurrency": 2})
        assert r.status_code == 201, r.text
        with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
            sock.sendall(STALLED)
            answer, waited = read_answer(sock, 15)
        status, error = status_and_error(answer)
        assert status == 408 and error["code"] == "request_timeout", answer[:300]
        assert waited < 6

        def in_flight() -> float:
            metrics = httpx.get(f"{gateway.url}/metrics").text
            return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                       if line.startswith("dalston_gateway_in_flight{"))

        deadline = time.monotonic() + 5
        while in_flight() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert in_flight() == 0


def test_connections_over_the_cap_get_503_with_retry_after(gateway: p.Proc) -> None:
    held = [socket.create_connection(("127.0.0.1", gateway.port)) for _ in range(6)]
    try:
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", gateway.port)) as extra:
            answer, _ = read_answer(extra, 5)
        status, error = status_and_error(answer)
        assert status == 503 and error["code"] == "too_many_connections"
        assert b"retry-after: 1" in answer.lower()
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    assert httpx.get(f"{gateway.url}/health").status_code == 200  # the cap frees as connections close


def test_a_body_below_the_minimum_rate_gets_408_and_a_fast_one_passes() -> None:
    limits = ConnectionLimits(min_body_rate=2000, body_rate_grace_s=1.0, body_idle_timeout_s=5)
    with serve_app(fake_engine_app("a"), http=protocol_class(limits)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
            started = time.monotonic()
            answer = b""
            sock.settimeout(0.3)
            while time.monotonic() - started < 10:
                try:
                    sock.sendall(b"x" * 100)  # ~300 B/s, well under 2000 B/s
                    answer += sock.recv(65536)
                    if answer:
                        break
                except socket.timeout:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
        status, error = status_and_error(answer)
        assert status == 408 and "bytes/s" in error["message"]
        body = b"y" * (5 << 20)
        r = httpx.post(f"{url}/v1/audio/transcriptions", content=body)
        assert r.status_code == 200 and r.json()["size"] == len(body)


def test_engine_server_enforces_the_same_limits(tmp_path: Path) -> None:
    """`dalston serve` (real tiny.en weights) with the same flags: a stalled upload gets 408, not a hang."""
    keys = tmp_path / "keys.txt"
    keys.write_text(hashlib.sha256(KEY.encode()).hexdigest() + "\n")
    engines = assets.engines_tree(tmp_path)
    assets.model_dir_for("whisper-tiny-en", tmp_path / "models", engines_root=engines)
    engine = p.engine("whisper-tiny-en", p.base_env(engines, tmp_path / "models"), keys, tmp_path, None)
    engine.args += LIMIT_FLAGS
    engine.start()
    try:
        engine.wait_http("/ready", 120)
        with socket.create_connection(("127.0.0.1", engine.port)) as sock:
            sock.sendall(STALLED.replace(b"whisper-base", b"whisper-tiny-en"))
            answer, waited = read_answer(sock, 15)
        status, error = status_and_error(answer)
        assert status == 408 and error["code"] == "request_timeout"
        assert waited < 6
        gauges = [float(line.rsplit(" ", 1)[1]) for line in httpx.get(f"{engine.url}/metrics").text.splitlines()
                  if line.startswith("dalston_requests_in_flight ")]
        assert gauges == [0.0]
        ok = httpx.post(f"{engine.url}/v1/audio/transcriptions", headers={"authorization": f"Bearer {KEY}"},
                        data={"model": "whisper-tiny-en"}, timeout=120,
                        files={"file": ("b.wav", assets.speech_clip("beckett.wav").read_bytes(), "audio/wav")})
        assert ok.status_code == 200 and "fail better" in ok.json()["text"].lower()
    finally:
        engine.stop()
