"""Two `dalston gateway --registry` replicas on one real redis-server, with real `dalston serve
whisper-tiny-en` engines (real tiny.en weights), each a separate process started by its CLI:

- an engine registered only through replica A is routed to by replica B, and B's least-loaded
  balancing splits a burst across the engines;
- Redis stopped: both replicas keep routing on their last known registry, an engine killed meanwhile
  is dropped by each replica within the heartbeat timeout, and when Redis starts again (empty) the
  registry is rebuilt from heartbeats within two heartbeat intervals, with nothing restarted;
- replica A SIGKILLed during a burst sent to both: every request sent to B succeeds, the requests
  A had fail with a connection error, nothing else is lost.
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures import assets
from tests.fixtures.redis import RedisServer
from tests.gateway import processes as p

pytestmark = pytest.mark.slow

KEY = "dk_test"
AUTH = {"authorization": f"Bearer {KEY}"}
INTERNAL = {"authorization": f"Bearer {p.INTERNAL_TOKEN}"}
MODEL = "whisper-tiny-en"
INTERVAL = 0.5  # engines' heartbeat interval, as the gateways ask
TIMEOUT = 2.0   # gateways' heartbeat timeout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, whisper_tiny_en_dir):
    root = tmp_path_factory.mktemp("ha")
    engines = assets.engines_tree(root)
    models = root / "models"
    assets.model_dir_for(MODEL, models, engines_root=engines)
    keys = root / "keys.txt"
    keys.write_text(hashlib.sha256(KEY.encode()).hexdigest() + "\n")
    env = p.base_env(engines, models)
    redis = RedisServer(root / "redis").start()
    extra = ["--registry", redis.url, "--registry-refresh", "0.25"]
    procs: dict[str, p.Proc] = {}
    try:
        for name in ("a", "b"):
            gw = p.gateway(env, keys, root, interval=INTERVAL, timeout=TIMEOUT, extra=extra)
            gw.name, gw.log = f"gateway-{name}", root / f"gateway-{name}.log"
            procs[name] = gw.start()
        for name in ("a", "b"):
            procs[name].wait_http("/health", 30)
        a, b = procs["a"].url, procs["b"].url
        # e0 knows only replica A; e1 and e2 list both replicas, as an HA deployment configures them.
        procs["e0"] = p.engine(MODEL, env, keys, root, a, label="-e0").start()
        procs["e1"] = p.engine(MODEL, env, keys, root, f"{a},{b}", label="-e1").start()
        procs["e2"] = p.engine(MODEL, env, keys, root, f"{a},{b}", label="-e2").start()
        for name in ("e0", "e1", "e2"):
            procs[name].wait_http("/ready", 180)
        wait_until(lambda: len(instances(a)) == 3 and len(instances(b)) == 3, 15)
        yield {"procs": procs, "redis": redis, "root": root}
    finally:
        for proc in procs.values():
            proc.stop()
        redis.stop()


def wait_until(condition, timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(0.05)
    return time.monotonic() - started


def instances(gw: str) -> set[str]:
    """URLs of the live instances of the model on one gateway replica (its own view)."""
    data = httpx.get(f"{gw}/internal/v1/instances", headers=INTERNAL, timeout=5).json()["instances"]
    return {i["url"] for i in data.get(MODEL, [])}


def registry_status(gw: str) -> dict:
    return httpx.get(f"{gw}/ready", timeout=5).json()["registry"]


def served(engine: p.Proc) -> int:
    """Transcriptions the engine answered 200 to, from its own /metrics."""
    text = httpx.get(f"{engine.url}/metrics", timeout=5).text
    return int(sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
                   if s.name == "dalston_requests_total" and s.labels.get("status") == "200"
                   and "transcriptions" in s.labels.get("route", "")))


AUDIO = None


def transcribe(gw: str, timeout: float = 120) -> httpx.Response:
    global AUDIO
    AUDIO = AUDIO or assets.speech_clip("beckett.wav").read_bytes()
    return httpx.post(f"{gw}/v1/audio/transcriptions", headers=AUTH, timeout=timeout,
                      data={"model": MODEL}, files={"file": ("beckett.wav", AUDIO, "audio/wav")})


def test_replica_b_routes_to_engines_registered_through_a(cluster):
    procs = cluster["procs"]
    a, b = procs["a"].url, procs["b"].url
    e0 = procs["e0"]
    assert f"engine_registered engine_id={MODEL} gateway={a}" in e0.log_text()
    assert b not in e0.log_text()  # e0 never talked to B
    assert e0.url in instances(b)
    assert "instance_discovered" in procs["b"].log_text() and e0.url in procs["b"].log_text()
    engines = [procs[name] for name in ("e0", "e1", "e2")]
    before = [served(e) for e in engines]
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: transcribe(b), range(6)))
    assert all(r.status_code == 200 and "fail better" in r.json()["text"].lower() for r in responses), \
        [r.text for r in responses]
    split = [served(e) - n for e, n in zip(engines, before)]
    assert sum(split) == 6 and min(split) >= 1, split  # least-loaded: every engine took part of the burst
    assert max(split) <= 3, split
    e0.stop()  # deregisters through A: B drops it at its next poll (tombstone), not after the timeout
    wait_until(lambda: e0.url not in instances(b), 2)


def test_redis_down_routes_on_last_known_registry_and_recovers(cluster):
    procs, redis = cluster["procs"], cluster["redis"]
    a, b = procs["a"].url, procs["b"].url
    e1, e2 = procs["e1"], procs["e2"]
    wait_until(lambda: instances(a) == instances(b) == {e1.url, e2.url}, 5)
    redis.stop()
    for gw in (a, b):
        wait_until(lambda: registry_status(gw)["available"] is False, 5)
        assert 'dalston_gateway_registry_available{backend="redis"} 0.0' in httpx.get(f"{gw}/metrics").text
    time.sleep(TIMEOUT + 0.5)  # longer than the heartbeat timeout: nothing is dropped for Redis being down
    for gw in (a, b):
        assert instances(gw) == {e1.url, e2.url}
        assert all(r.status_code == 200 for r in [transcribe(gw), transcribe(gw)])
    e2.kill()  # a crash while Redis is down: each replica drops it on its own heartbeat clock
    started = time.monotonic()
    wait_until(lambda: instances(a) == instances(b) == {e1.url}, TIMEOUT + 3)
    assert time.monotonic() - started <= TIMEOUT + 1.5
    for gw in (a, b):
        assert transcribe(gw).status_code == 200
        log = procs["a" if gw == a else "b"].log_text()
        assert log.count("registry_unavailable") == 1, log[-2000:]  # once per state change
    # Redis back, empty: heartbeats rewrite the records; no process is restarted.
    redis.start()
    started = time.monotonic()
    client = redis.client()
    try:
        wait_until(lambda: len(client.keys("dalston:registry:instance:*")) == 1, 2 * INTERVAL + 2)
    finally:
        client.close()
    assert time.monotonic() - started <= 2 * INTERVAL + 1.0  # two heartbeat intervals, plus slack for a busy box
    for gw in (a, b):
        wait_until(lambda: registry_status(gw)["available"] is True, 3)
        assert "registry_available" in procs["a" if gw == a else "b"].log_text()
        assert transcribe(gw).status_code == 200


def test_replica_killed_mid_burst_loses_only_its_own_requests(cluster):
    procs = cluster["procs"]
    a, b = procs["a"].url, procs["b"].url
    e1 = procs["e1"]
    results: dict[str, list[object]] = {"a": [], "b": []}

    def one(target: str) -> None:
        try:
            results[target].append(transcribe(a if target == "a" else b, timeout=60).status_code)
        except httpx.TransportError as exc:  # connection refused / reset / closed mid-response
            results[target].append(exc)

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, target) for _ in range(6) for target in ("a", "b")]
        time.sleep(1.0)  # requests are in flight on both replicas
        procs["a"].kill()
        for future in futures:
            future.result(timeout=120)
    assert results["b"] == [200] * 6, results["b"]
    assert len(results["a"]) == 6
    failed = [r for r in results["a"] if r != 200]
    assert all(isinstance(r, httpx.TransportError) for r in failed), failed  # never an HTTP error
    assert failed, "A was killed with requests in flight; some must have failed"
    # The engines only lost a client; B keeps serving and still knows the engine.
    assert e1.alive() and instances(b) == {e1.url}
    assert transcribe(b).status_code == 200
