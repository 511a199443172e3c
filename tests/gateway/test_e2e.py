"""The milestone's verification on loopback, with real processes and real weights.

`dalston gateway` + `dalston serve whisper-base` (real Whisper base weights) + `dalston serve
whisper-tiny-en` (a test-only variant with real tiny.en weights, same family code), each a separate
process started by its documented CLI: transcripts through the gateway are right (WER on
beckett.wav) for the id and the `fast` alias, the engine logs `engine_registered
engine_id=whisper-base gateway=<url>`, a model with no engine is 503, a killed engine drops out
within the heartbeat timeout while the other keeps serving, a restarted engine is served again with
no gateway restart, an engine killed mid-request gives the client a 502, a realtime session is
proxied through the gateway to a whisper-streaming engine, and a full streaming engine is skipped
for one with room.
"""

from __future__ import annotations

import hashlib
import threading
import time

import httpx
import jiwer
import pytest

from tests.fixtures import assets
from tests.gateway import processes as p

pytestmark = pytest.mark.slow

KEY = "dk_test"
AUTH = {"authorization": f"Bearer {KEY}"}
HEARTBEAT_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("e2e")
    engines = assets.engines_tree(root)
    models = root / "models"
    for engine_id in ("whisper-base", "whisper-tiny-en", "whisper-streaming-tiny-en"):
        assets.model_dir_for(engine_id, models, engines_root=engines)
    keys = root / "keys.txt"
    keys.write_text(hashlib.sha256(KEY.encode()).hexdigest() + "\n")
    env = p.base_env(engines, models)
    gw = p.gateway(env, keys, root, interval=0.5, timeout=HEARTBEAT_TIMEOUT).start()
    procs = {"gateway": gw}
    try:
        gw.wait_http("/health", 30)
        procs["base"] = p.engine("whisper-base", env, keys, root, gw.url).start()
        procs["tiny"] = p.engine("whisper-tiny-en", env, keys, root, gw.url).start()
        for name in ("base", "tiny"):
            procs[name].wait_http("/ready", 180)
        wait_until(lambda: available(gw.url, "whisper-base") and available(gw.url, "whisper-tiny-en"), 30)
        yield {"procs": procs, "env": env, "keys": keys, "root": root}
    finally:
        for proc in procs.values():
            proc.stop()


def available(gw: str, model: str) -> bool:
    data = httpx.get(f"{gw}/v1/models", headers=AUTH, timeout=5).json()["data"]
    return any(m["id"] == model and m["available"] for m in data)


def wait_until(condition, timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(0.1)
    return time.monotonic() - started


def transcribe(gw: str, model: str, clip: str = "beckett.wav", timeout: float = 120) -> httpx.Response:
    audio = assets.speech_clip(clip).read_bytes()
    return httpx.post(f"{gw}/v1/audio/transcriptions", headers=AUTH, timeout=timeout,
                      data={"model": model}, files={"file": (clip, audio, "audio/wav")})


def wer(text: str, clip: str = "beckett") -> float:
    return jiwer.wer(" ".join(assets.reference_words(clip)), " ".join(assets.normalize_words(text)))


def test_transcripts_through_the_gateway(cluster):
    procs = cluster["procs"]
    gw = procs["gateway"].url
    assert f"engine_registered engine_id=whisper-base gateway={gw}" in procs["base"].log_text()
    assert "instance_registered engine_id=whisper-base" in procs["gateway"].log_text()
    for model in ("whisper-base", "fast", "whisper-tiny-en"):
        r = transcribe(gw, model)
        assert r.status_code == 200, r.text
        assert wer(r.json()["text"]) <= 0.15, (model, r.json()["text"])
    r = transcribe(gw, "parakeet-0.6b")
    assert r.status_code == 503 and int(r.headers["retry-after"]) > 0
    r = httpx.post(f"{gw}/v1/audio/transcriptions", headers={"authorization": "Bearer dk_nope"},
                   data={"model": "whisper-base"}, files={"file": ("a.wav", b"x")})
    assert r.status_code == 401
    metrics = httpx.get(f"{gw}/metrics").text
    assert 'dalston_gateway_requests_total{model="whisper-base",status="200"}' in metrics


def test_engine_killed_mid_request_gives_502(cluster):
    procs = cluster["procs"]
    gw = procs["gateway"].url
    result: dict[str, httpx.Response] = {}
    thread = threading.Thread(target=lambda: result.setdefault("r", transcribe(gw, "whisper-base", "two_cities.wav")))
    thread.start()
    time.sleep(1.5)  # the upload is in and the engine is decoding 44 s of speech
    procs["base"].kill()
    thread.join(30)
    assert not thread.is_alive()
    assert result["r"].status_code == 502 and result["r"].json()["error"]["type"] == "server_error"
    _restart_base(cluster)


def test_killed_engine_goes_503_other_keeps_serving_restart_restores(cluster):
    """SIGKILL (no deregistration): the gateway drops the instance on missed heartbeats alone, with
    no request needed to notice; the model is then 503 with Retry-After, the other model serves."""
    procs = cluster["procs"]
    gw = procs["gateway"].url
    gateway_pid = procs["gateway"].popen.pid
    log_before = len(procs["gateway"].log_text())
    procs["base"].kill()
    waited = wait_until(lambda: not available(gw, "whisper-base"), HEARTBEAT_TIMEOUT + 2)
    assert waited <= HEARTBEAT_TIMEOUT + 1, f"instance dropped after {waited:.1f}s, heartbeat timeout {HEARTBEAT_TIMEOUT}s"
    r = transcribe(gw, "whisper-base")
    assert r.status_code == 503 and int(r.headers["retry-after"]) > 0, r.text
    assert r.json()["error"]["code"] == "model_unavailable"
    assert "instance_dropped engine_id=whisper-base" in procs["gateway"].log_text()[log_before:]
    r = transcribe(gw, "whisper-tiny-en")
    assert r.status_code == 200 and wer(r.json()["text"]) <= 0.15
    _restart_base(cluster)
    r = transcribe(gw, "fast")
    assert r.status_code == 200 and wer(r.json()["text"]) <= 0.15
    assert procs["gateway"].popen.pid == gateway_pid and procs["gateway"].alive()


def _restart_base(cluster) -> None:
    procs = cluster["procs"]
    old = procs["base"]
    procs["base"] = p.engine("whisper-base", cluster["env"], cluster["keys"], cluster["root"],
                             procs["gateway"].url, port=old.port).start()
    procs["base"].wait_http("/ready", 180)
    wait_until(lambda: available(procs["gateway"].url, "whisper-base"), 10)


def test_realtime_session_through_the_gateway(cluster):
    """A real streaming engine behind the gateway: the WebSocket is proxied frame by frame both ways."""
    import asyncio
    import wave

    import numpy as np

    from dalston.commands.stream import stream_audio

    procs = cluster["procs"]
    gw = procs["gateway"].url
    rt = p.engine("whisper-streaming-tiny-en", cluster["env"], cluster["keys"], cluster["root"], gw).start()
    try:
        rt.wait_http("/ready", 180)
        wait_until(lambda: available(gw, "whisper-streaming-tiny-en"), 10)
        with wave.open(str(assets.speech_clip("beckett.wav"))) as w:
            assert w.getframerate() == 16000 and w.getnchannels() == 1
            samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768
        url = "ws" + gw.removeprefix("http") + "/v1/realtime?model=whisper-streaming-tiny-en"
        result = asyncio.run(stream_audio(url, samples, api_key=KEY, timeout=120))
        assert not result.errors, result.errors
        assert result.finals and wer(result.text) <= 0.25, result.text
    finally:
        rt.stop()
    wait_until(lambda: not available(gw, "whisper-streaming-tiny-en"), 5)  # deregistered on shutdown


def test_full_realtime_engine_is_skipped_for_the_next_instance(cluster):
    """Issue 11: an engine that is full (every `max_concurrency` slot held) refuses the gateway in the
    handshake (429, `Dalston-Refuse-In-Handshake`), the gateway takes the session to the other live
    instance, and a client sees a refusal only when every instance is full: HTTP 429
    `too_many_sessions` with `Retry-After`. Before, the full engine accepted and closed 4029, and the
    gateway relayed that close to the client although the other instance had room."""
    import asyncio
    import json
    import wave

    import numpy as np
    import websockets

    from dalston.commands.stream import stream_audio

    procs = cluster["procs"]
    gw = procs["gateway"].url
    model = "whisper-streaming-tiny-en"
    full = p.engine(model, cluster["env"], cluster["keys"], cluster["root"], gw, label="-full").start()
    free = p.engine(model, cluster["env"], cluster["keys"], cluster["root"], gw, label="-free").start()
    config = json.dumps({"type": "session.config", "language": "en"})

    async def hold(url: str, n: int, stack: list) -> None:
        """Open `n` sessions on `url` and keep them (configured, no audio) until the caller closes them."""
        for _ in range(n):
            ws = await websockets.connect(url, additional_headers=AUTH)
            stack.append(ws)
            await ws.send(config)
            assert json.loads(await ws.recv())["type"] == "session.begin"

    async def scenario() -> tuple[object, int, dict[str, str], dict]:
        held: list = []
        try:
            await hold(f"ws://127.0.0.1:{full.port}/v1/realtime?model={model}", 2, held)  # `full` is full
            with wave.open(str(assets.speech_clip("beckett.wav"))) as w:
                samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768
            url = "ws" + gw.removeprefix("http") + f"/v1/realtime?model={model}"
            results = [await stream_audio(url, samples, api_key=KEY, timeout=120) for _ in range(2)]
            await hold(url, 2, held)  # through the gateway: these land on `free`, which is then full too
            try:
                await websockets.connect(url, additional_headers=AUTH)
            except websockets.InvalidStatus as exc:
                return results, exc.response.status_code, dict(exc.response.headers), json.loads(exc.response.body)
            raise AssertionError("a session was accepted with every instance full")
        finally:
            for ws in held:
                await ws.close()

    try:
        full.wait_http("/ready", 180)
        free.wait_http("/ready", 180)
        wait_until(lambda: httpx.get(f"{gw}/v1/models/{model}", headers=AUTH).json().get("live_instances") == 2, 10)
        results, status, headers, body = asyncio.run(scenario())
        for result in results:  # both sessions were served in full, by `free`
            assert not result.errors and result.close_code == 1000, (result.errors, result.close_code)
            assert wer(result.text) <= 0.25, result.text
        assert "realtime_refused_in_handshake" in full.log_text()  # the gateway did try the full one
        assert status == 429 and body["error"]["code"] == "too_many_sessions", (status, body)
        assert int({k.lower(): v for k, v in headers.items()}["retry-after"]) >= 1
        metrics = httpx.get(f"{gw}/metrics").text
        assert f'dalston_gateway_upstream_errors_total{{kind="refused",model="{model}"}}' in metrics
        # neither full instance was dropped: a refusal is not a failure
        assert httpx.get(f"{gw}/v1/models/{model}", headers=AUTH).json()["live_instances"] == 2
    finally:
        full.stop()
        free.stop()
