"""Admission control on a real server: never more inferences than max_concurrency, the rest wait or get 429.

The server runs the test-only whisper-tiny-en variant (real tiny.en weights, max_concurrency 2) with a
wait queue of 1, so 8 simultaneous uploads must split into at most 3 admitted-or-waiting and the rest
429 with Retry-After, while `/health` keeps answering quickly from the event loop.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.fixtures import assets
from tests.fixtures.serving import running_server
from tests.server.conftest import AUTH


@pytest.fixture(scope="module")
def tiny_server(engines_with_test_variants: Path, session_model_root: Path, keys_file: Path):
    from tests.fixtures.assets import model_dir_for as build

    build("whisper-tiny-en", session_model_root, engines_root=engines_with_test_variants)
    with running_server("whisper-tiny-en", engines_root=engines_with_test_variants, model_dir=session_model_root,
                        keys_file=keys_file, max_queue=1) as running:
        yield running


def test_parallel_requests_never_exceed_max_concurrency(tiny_server):
    clip = assets.speech_clip("two_cities").read_bytes()
    limit = tiny_server.state.limits.max_concurrency
    assert limit == 2
    tiny_server.state.admission.peak_used = 0
    health_latencies: list[float] = []
    in_flight_samples: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=tiny_server.url, timeout=10) as c:
            while not stop.is_set():
                started = time.perf_counter()
                assert c.get("/health").status_code == 200
                health_latencies.append(time.perf_counter() - started)
                for line in c.get("/metrics").text.splitlines():
                    if line.startswith("dalston_requests_in_flight "):
                        in_flight_samples.append(float(line.split()[1]))
                time.sleep(0.05)

    def upload(_: int) -> httpx.Response:
        with httpx.Client(base_url=tiny_server.url, headers=AUTH, timeout=300) as c:
            return c.post("/v1/audio/transcriptions", files={"file": ("c.wav", clip, "audio/wav")})

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(upload, range(8)))
    finally:
        stop.set()
        prober.join()

    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) >= limit and statuses.count(429) >= 1, statuses
    for r in responses:
        if r.status_code == 429:
            assert r.headers["retry-after"].isdigit()
            assert r.json()["error"]["code"] == "rate_limit_exceeded"
        else:
            assert assets.normalize_words(r.json()["text"])[:5] == assets.reference_words("two_cities")[:5]
    assert tiny_server.state.admission.peak_used == limit
    assert in_flight_samples and max(in_flight_samples) <= limit
    assert max(in_flight_samples) >= 1, "the probe never saw an inference running"
    assert len(health_latencies) >= 3 and max(health_latencies) < 1.0, health_latencies


def test_not_ready_until_loaded(engines_with_test_variants: Path, session_model_root: Path, keys_file: Path):
    from tests.fixtures.assets import model_dir_for as build

    build("whisper-tiny-en", session_model_root, engines_root=engines_with_test_variants)
    with running_server("whisper-tiny-en", engines_root=engines_with_test_variants, model_dir=session_model_root,
                        keys_file=keys_file, load=False) as running:
        assert httpx.get(running.url + "/health").status_code == 200
        ready = httpx.get(running.url + "/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "loading"
        clip = assets.speech_clip("beckett").read_bytes()
        early = httpx.post(running.url + "/v1/audio/transcriptions", headers=AUTH, files={"file": ("b.wav", clip)})
        assert early.status_code == 503 and early.json()["error"]["code"] == "model_not_ready"
        assert "retry-after" in early.headers
        running.state.load()
        assert httpx.get(running.url + "/ready").status_code == 200
        late = httpx.post(running.url + "/v1/audio/transcriptions", headers=AUTH, files={"file": ("b.wav", clip)},
                          timeout=120)
        assert late.status_code == 200 and late.json()["text"]
