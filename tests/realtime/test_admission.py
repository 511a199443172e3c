"""One admission layer for every entry point (issue 10), on the real server app, real tiny.en weights, real sockets.

* A streaming variant serves batch requests and realtime sessions from ONE `max_concurrency` budget:
  the real engine, wrapped to count how many of its calls run at once, never runs more than that.
* Realtime sessions are in `/metrics` (`dalston_realtime_sessions_active`).
* A full engine answers 429 after reading less than 64 KiB of an upload (the body is not spooled).
* The same bad key gets the same status and error code from the engine's HTTP routes, the engine's
  realtime WebSocket (close code from `dalston.errors.CLOSE_CODES`), and the gateway (HTTP and WS).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets

from dalston.admission import Limits
from dalston.auth import KeyStore
from dalston.catalog import Catalog
from dalston.commands.stream import realtime_url, stream_audio
from dalston.engine_sdk import Segment, StreamEvent, StreamingEngine, StreamingSession, Transcript, TranscribeOptions
from dalston.errors import close_code
from dalston.server.state import ServerState
from tests.fixtures import assets
from tests.fixtures.serving import AUTH, TEST_KEY
from tests.gateway.conftest import running_gateway
from tests.realtime.conftest import Loaded, serve_state

CONFIG = {"type": "session.config", "sample_rate": 16000, "encoding": "pcm16", "language": "en"}


class CountingEngine(StreamingEngine):
    """The real loaded streaming engine, unchanged, counting how many of its calls run at once.

    Every call the server can make (`transcribe`, `stream_segments`, `open_session`, a session's
    `accept` / `finish`) goes to the real engine inside `_counted`, so `peak` is the true number of
    concurrent inferences the server ran.
    """

    def __init__(self, real: StreamingEngine) -> None:
        super().__init__(real.spec)
        self.real = real
        self.device, self.compute_type = real.device, real.compute_type
        self._lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.calls = 0

    @contextlib.contextmanager
    def _counted(self) -> Iterator[None]:
        with self._lock:
            self.running += 1
            self.calls += 1
            self.peak = max(self.peak, self.running)
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1

    def load(self, weights_dir: Path) -> None:
        self.real.load(weights_dir)

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        with self._counted():
            return self.real.transcribe(audio, options)

    def stream_segments(self, audio: np.ndarray, options: TranscribeOptions) -> Iterator[Segment]:
        with self._counted():
            yield from self.real.stream_segments(audio, options)

    def languages(self) -> frozenset[str] | None:
        return self.real.languages()

    def open_session(self, language: str | None = None) -> StreamingSession:
        with self._counted():
            return _CountingSession(self, self.real.open_session(language))


class _CountingSession(StreamingSession):
    def __init__(self, engine: CountingEngine, real: StreamingSession) -> None:
        self.engine, self.real = engine, real

    def accept(self, audio: np.ndarray) -> list[StreamEvent]:
        with self.engine._counted():
            return self.real.accept(audio)

    def finish(self) -> list[StreamEvent]:
        with self.engine._counted():
            return self.real.finish()


@contextlib.contextmanager
def counting_server(loaded: Loaded, *, max_queue: int, keys: KeyStore | None = None
                    ) -> Iterator[tuple[str, ServerState, CountingEngine]]:
    """The real app for `loaded`'s variant (max_concurrency 2) around a `CountingEngine`."""
    engine = CountingEngine(loaded.engine)
    limits = Limits(max_concurrency=loaded.spec.capabilities.max_concurrency, max_queue=max_queue,
                    max_upload_bytes=1 << 30)
    state = ServerState(loaded.entry, engine, loaded.registry, keys, limits, loaded.weights_dir)
    state.ready.set()
    with serve_state(state) as url:
        yield url, state, engine


def gauges(base: str) -> dict[str, float]:
    """Unlabelled samples of `/metrics` (name -> value)."""
    out = {}
    for line in httpx.get(base + "/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split()
            out[name] = float(value)
    return out


def test_batch_and_realtime_share_one_budget(tiny_engine: Loaded, clip_audio: Any) -> None:
    limit = tiny_engine.spec.capabilities.max_concurrency
    assert limit == 2
    upload = assets.speech_clip("beckett").read_bytes()
    audio = clip_audio("beckett.wav")[: 16000 * 6]
    with counting_server(tiny_engine, max_queue=8) as (base, state, engine):
        samples: list[dict[str, float]] = []
        stop = threading.Event()

        def probe() -> None:
            while not stop.is_set():
                samples.append(gauges(base))
                time.sleep(0.05)

        def post(_: int) -> httpx.Response:
            return httpx.post(base + "/v1/audio/transcriptions", files={"file": ("b.wav", upload, "audio/wav")},
                              timeout=300)

        async def scenario() -> tuple[list[Any], list[httpx.Response]]:
            url = realtime_url(base, tiny_engine.spec.id)
            sessions = [asyncio.ensure_future(stream_audio(url, audio, language="en", realtime=True))
                        for _ in range(limit)]
            await asyncio.sleep(1.0)  # both sessions hold their slots and stream in real time
            loop = asyncio.get_running_loop()
            posts = [loop.run_in_executor(None, post, i) for i in range(3)]
            return list(await asyncio.gather(*sessions)), list(await asyncio.gather(*posts))

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            results, responses = asyncio.run(scenario())
        finally:
            stop.set()
            prober.join()

    for result in results:
        assert result.close_code == 1000 and "ever tried" in result.text.lower(), result.text
    for response in responses:  # they waited for the sessions' slots, then ran
        assert response.status_code == 200, response.text
        assert assets.normalize_words(response.json()["text"])[:4] == ["ever", "tried", "ever", "failed"]
    assert engine.calls > 10
    assert engine.peak <= limit, f"{engine.peak} engine calls ran at once with max_concurrency={limit}"
    assert state.admission.peak_used == limit
    assert max(s["dalston_realtime_sessions_active"] for s in samples) == limit
    assert max(s["dalston_requests_queued"] for s in samples) >= 1, "no request waited behind the sessions"
    assert all(s["dalston_requests_in_flight"] + s["dalston_realtime_sessions_active"] <= limit for s in samples)
    assert samples[-1]["dalston_max_concurrency"] == limit


def _raw_upload_head(port: int, sent: int, declared: int) -> tuple[int, dict[str, str], bytes, float]:
    """POST a multipart upload declaring `declared` bytes but send only the first `sent`; return the answer.

    The server can have read at most `sent` bytes of the body when it answers.
    """
    boundary = "admissionboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.wav\"\r\n"
            f"Content-Type: audio/wav\r\n\r\n").encode()
    request = (f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Authorization: Bearer {TEST_KEY}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
               f"Content-Length: {declared}\r\n\r\n").encode()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(request + head + b"\0" * (sent - len(head)))
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < int(
                _header(answer, "content-length") or 0):
            chunk = sock.recv(65536)  # a socket timeout here means the server waited for the rest of the body
            if not chunk:
                break
            answer += chunk
    elapsed = time.monotonic() - started
    status_line, _, rest = answer.partition(b"\r\n")
    headers_blob, _, body = rest.partition(b"\r\n\r\n")
    headers = {}
    for line in headers_blob.decode().split("\r\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body, elapsed


def _header(answer: bytes, name: str) -> str | None:
    for line in answer.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def test_full_engine_answers_429_before_reading_the_upload(tiny_engine: Loaded, keys_file: Path) -> None:
    """Two open realtime sessions hold both slots and max_queue is 0: a 64 MiB upload gets 429 while
    only 16 KiB of it has been sent (so the server read < 64 KiB), and `/metrics` counts the refusal."""
    keys = KeyStore.from_file(keys_file)
    with counting_server(tiny_engine, max_queue=0, keys=keys) as (base, state, engine):
        url = realtime_url(base, tiny_engine.spec.id)

        async def hold_and_upload() -> tuple[int, dict[str, str], bytes, float]:
            holders = [await websockets.connect(url, additional_headers=AUTH) for _ in range(2)]
            try:
                for ws in holders:
                    await ws.send(json.dumps(CONFIG))
                    assert json.loads(await ws.recv())["type"] == "session.begin"
                port = int(base.rsplit(":", 1)[1])
                return await asyncio.to_thread(_raw_upload_head, port, 16 * 1024, 64 << 20)
            finally:
                for ws in holders:
                    await ws.close()

        status, headers, body, elapsed = asyncio.run(hold_and_upload())
        assert status == 429, body
        assert json.loads(body)["error"]["code"] == "rate_limit_exceeded"
        assert headers["retry-after"].isdigit() and headers["connection"] == "close"
        assert elapsed < 10
        metrics = httpx.get(base + "/metrics").text
        assert 'dalston_admission_rejections_total{reason="queue_full"} 1.0' in metrics
        deadline = time.monotonic() + 10
        while state.admission.sessions_active and time.monotonic() < deadline:
            time.sleep(0.05)
        ok = httpx.post(base + "/v1/audio/transcriptions", headers=AUTH, timeout=120,
                        files={"file": ("b.wav", assets.speech_clip("beckett").read_bytes(), "audio/wav")})
        assert ok.status_code == 200, ok.text


BAD_KEYS = [  # (Authorization header, status, code)
    (None, 401, "missing_api_key"),
    ("Basic abc", 401, "missing_api_key"),
    ("Bearer dk_wrong", 401, "invalid_api_key"),
    ("Bearer sk-proj-openai-key", 403, "forbidden_credential"),
]


@pytest.fixture(scope="module")
def keyed_servers(tiny_engine: Loaded, keys_file: Path) -> Iterator[tuple[str, str]]:
    """(engine url, gateway url), both with the keys file accepting TEST_KEY."""
    with counting_server(tiny_engine, max_queue=4, keys=KeyStore.from_file(keys_file)) as (engine_url, _, _):
        with running_gateway(Catalog.load(), keys_file) as (gateway_url, _):
            yield engine_url, gateway_url


@pytest.mark.parametrize("authorization,status,code", BAD_KEYS)
def test_same_bad_key_same_answer_everywhere(keyed_servers: tuple[str, str], tiny_engine: Loaded,
                                             authorization: str | None, status: int, code: str) -> None:
    engine_url, gateway_url = keyed_servers
    headers = {"Authorization": authorization} if authorization else {}
    files = {"file": ("b.wav", b"RIFF", "audio/wav")}
    answers = {}
    for name, base in (("engine http", engine_url), ("gateway http", gateway_url)):
        r = httpx.post(base + "/v1/audio/transcriptions", headers=headers, files=files, data={"model": "whisper-base"})
        answers[name] = (r.status_code, r.json()["error"]["code"])

    async def engine_ws() -> tuple[int, str]:
        async with websockets.connect(realtime_url(engine_url, tiny_engine.spec.id), additional_headers=headers) as ws:
            with contextlib.suppress(websockets.ConnectionClosed):  # the refusal may close before we send
                await ws.send(json.dumps(CONFIG))
            event = json.loads(await ws.recv())
            await ws.wait_closed()
            assert event["type"] == "error" and ws.close_code == close_code(status), (event, ws.close_code)
            return status, event["code"]

    async def gateway_ws() -> tuple[int, str]:
        try:
            async with websockets.connect(realtime_url(gateway_url, "whisper-streaming-base"),
                                          additional_headers=headers):
                return 101, ""
        except websockets.InvalidStatus as exc:
            return exc.response.status_code, json.loads(exc.response.body)["error"]["code"]

    answers["engine realtime"] = asyncio.run(engine_ws())
    answers["gateway realtime"] = asyncio.run(gateway_ws())
    assert set(answers.values()) == {(status, code)}, answers


def test_realtime_key_by_subprotocol(keyed_servers: tuple[str, str], tiny_engine: Loaded) -> None:
    """The `openai-insecure-api-key.<key>` subprotocol (browsers cannot set headers) is the same key check."""
    engine_url, _ = keyed_servers
    url = realtime_url(engine_url, tiny_engine.spec.id)

    async def attempt(key: str) -> dict[str, Any]:
        event: dict[str, Any] = {}
        with contextlib.suppress(websockets.ConnectionClosedError):  # a refusal closes with 4001
            async with websockets.connect(url, subprotocols=[f"openai-insecure-api-key.{key}"]) as ws:  # type: ignore[list-item]
                with contextlib.suppress(websockets.ConnectionClosed):
                    await ws.send(json.dumps(CONFIG))
                event = json.loads(await ws.recv())
        return event

    assert asyncio.run(attempt(TEST_KEY))["type"] == "session.begin"
    refused = asyncio.run(attempt("dk_wrong"))
    assert refused["type"] == "error" and refused["code"] == "invalid_api_key"
