"""Two gateway replicas on one real redis-server (`--registry`), with the fake upstreams of
fake_engine.py standing in for engines: the shared table, shared in-flight counts, and what happens
while Redis is down. The same behaviour with real `dalston gateway` / `dalston serve` processes and
real weights is in test_ha_e2e.py; this file covers the registry's rules quickly.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from dalston.registration import Registrar, spec_digest
from tests.gateway.conftest import INTERNAL_TOKEN, running_gateway, serve
from tests.gateway.fake_engine import fake_engine_app
from tests.gateway.test_gateway_proxy import AUTH, CT, INTERNAL, multipart, wait_for

TIMEOUT = 1.5   # heartbeat timeout of both replicas
INTERVAL = 0.3  # heartbeat interval the registrars use
BODY = multipart([("model", b"whisper-base", None)])


@contextlib.contextmanager
def replicas(catalog, keys_file, redis_url: str) -> Iterator[list[tuple[str, object]]]:
    settings = {"heartbeat_interval": INTERVAL, "heartbeat_timeout": TIMEOUT, "registry_url": redis_url,
                "registry_refresh": 0.1, "upstream_timeout": 10.0}
    with running_gateway(catalog, keys_file, **settings) as a, running_gateway(catalog, keys_file, **settings) as b:
        yield [a, b]


@pytest.fixture()
def engines() -> Iterator[list[str]]:
    with serve(fake_engine_app("a")) as a, serve(fake_engine_app("b")) as b:
        yield [a, b]


def instances(gw: str) -> dict[str, dict]:
    data = httpx.get(f"{gw}/internal/v1/instances", headers=INTERNAL, timeout=5).json()["instances"]
    return {i["url"]: i for i in data.get("whisper-base", [])}


def served_by(gw: str, hold: float = 0.0) -> str:
    query = f"?behaviour=hold&seconds={hold}" if hold else ""
    r = httpx.post(f"{gw}/v1/audio/transcriptions{query}", content=BODY, headers={**AUTH, **CT}, timeout=20)
    assert r.status_code == 200, r.text
    return r.json()["instance"]


def start_registrar(urls: list[str], engine: str, catalog) -> Registrar:
    digest = spec_digest(catalog.get("whisper-base").spec)
    return Registrar(urls, "whisper-base", engine, digest, 1, INTERNAL_TOKEN, interval=INTERVAL).start()


def test_registered_through_a_routed_by_b(catalog, keys_file, redis_server, engines):
    with replicas(catalog, keys_file, redis_server.url) as ((a, _), (b, _)):
        registrars = [start_registrar([a], engine, catalog) for engine in engines]
        try:
            assert wait_for(lambda: set(instances(b)) == set(engines), 3), instances(b)
            # The same instance ids on both replicas: derived from (engine id, URL).
            assert {i["instance_id"] for i in instances(a).values()} == \
                {i["instance_id"] for i in instances(b).values()}
            assert {served_by(b), served_by(b)} == {"a", "b"}
            assert httpx.get(f"{b}/ready").json()["registry"]["available"] is True
            # Deregistered through A: B forgets it at its next poll (a tombstone, not a wait for the TTL).
            registrars[0].stop()
            assert wait_for(lambda: set(instances(b)) == {engines[1]}, TIMEOUT / 2), instances(b)
        finally:
            for registrar in registrars:
                registrar.stop()


def test_in_flight_counts_are_shared(catalog, keys_file, redis_server, engines):
    """A request held on one engine through A steers B's next request to the other engine."""
    with replicas(catalog, keys_file, redis_server.url) as ((a, _), (b, _)):
        registrars = [start_registrar([a], engine, catalog) for engine in engines]
        assert wait_for(lambda: len(instances(b)) == 2, 3)
        for _ in range(3):  # whichever engine A picks, B picks the other one
            # The previous round's request is gone from B's view first (one poll of each replica).
            assert wait_for(lambda: not any(i["remote_in_flight"] for i in instances(b).values()), 3)
            holder: list[str] = []
            thread = threading.Thread(target=lambda: holder.append(served_by(a, hold=3.0)))
            thread.start()
            seen: dict[str, dict] = {}
            assert wait_for(lambda: any(i["remote_in_flight"] for i in seen.update(instances(b)) or seen.values()), 3)
            busy = next(url for url, i in seen.items() if i["remote_in_flight"])
            other = served_by(b)
            thread.join()
            assert other != holder[0] and other == ("b" if busy == engines[0] else "a")
        for registrar in registrars:
            registrar.stop()


def test_redis_down_keeps_routing_expires_locally_and_recovers(catalog, keys_file, redis_server, engines, caplog):
    caplog.set_level("INFO", logger="dalston.gateway")
    with replicas(catalog, keys_file, redis_server.url) as ((a, _), (b, _)):
        registrars = [start_registrar([a, b], engine, catalog) for engine in engines]
        try:
            assert wait_for(lambda: len(instances(a)) == 2 and len(instances(b)) == 2, 5)
            redis_server.stop()
            for gw in (a, b):
                assert wait_for(lambda: httpx.get(f"{gw}/ready").json()["registry"]["available"] is False, 3)
                metrics = httpx.get(f"{gw}/metrics").text
                assert 'dalston_gateway_registry_available{backend="redis"} 0.0' in metrics
            time.sleep(TIMEOUT + 0.5)  # past the heartbeat timeout: first-hand heartbeats keep both alive
            for gw in (a, b):
                assert {served_by(gw), served_by(gw)} == {"a", "b"}
            # An engine that stops heartbeating (crashed) is dropped by each replica on its own.
            registrars[0]._stop.set()
            registrars[0]._thread.join(2)
            started = time.monotonic()
            assert wait_for(lambda: set(instances(a)) == set(instances(b)) == {engines[1]}, TIMEOUT + 2)
            assert time.monotonic() - started <= TIMEOUT + 1.0
            assert caplog.text.count("registry_unavailable") == 2  # once per replica, not once per poll
            # Redis comes back empty: the heartbeats rebuild the shared records, nothing restarts.
            redis_server.start()
            started = time.monotonic()
            client = redis_server.client()
            assert wait_for(lambda: len(client.keys("dalston:registry:instance:*")) == 1, 2 * INTERVAL + 1.0)
            assert time.monotonic() - started <= 2 * INTERVAL + 1.0
            client.close()
            for gw in (a, b):
                assert wait_for(lambda: httpx.get(f"{gw}/ready").json()["registry"]["available"] is True, 3)
            assert caplog.text.count("registry_available") >= 2
        finally:
            for registrar in registrars:
                registrar.stop()


def test_start_with_redis_down_then_up(catalog, keys_file, redis_server, engines):
    """A replica that starts while Redis is down serves what registers with it and joins Redis later."""
    redis_server.stop()
    with replicas(catalog, keys_file, redis_server.url) as ((a, _), (b, _)):
        assert httpx.get(f"{a}/ready").json()["registry"]["available"] is False
        registrar = start_registrar([a], engines[0], catalog)
        try:
            assert wait_for(lambda: len(instances(a)) == 1, 3)
            assert served_by(a) == "a"
            assert instances(b) == {}
            redis_server.start()
            assert wait_for(lambda: len(instances(b)) == 1, 3)  # A's next heartbeat writes it, B reads it
            assert served_by(b) == "a"
        finally:
            registrar.stop()


def test_registrar_takes_several_gateway_urls(catalog, monkeypatch):
    from dalston.registration import registrar_for

    monkeypatch.setenv("DALSTON_INTERNAL_TOKEN", "secret")
    monkeypatch.delenv("DALSTON_ADVERTISE_URL", raising=False)
    spec = catalog.get("whisper-base").spec
    registrar = registrar_for(spec, "127.0.0.1", 8001, gateway_url="http://gw-a:8000/, http://gw-b:8000")
    assert registrar is not None
    assert registrar.gateway_urls == ["http://gw-a:8000", "http://gw-b:8000"]
    assert registrar.gateway_url == "http://gw-a:8000" and registrar.instance_id is None
    assert registrar_for(spec, "127.0.0.1", 8001, gateway_url=" , ") is None


def test_reregistration_keeps_the_requests_in_flight_counted_once():
    """A re-registration while requests run must not leave them counted on a replaced object."""
    from dalston.gateway.instances import InstanceRegistry

    registry = InstanceRegistry(timeout=10)
    first = registry.register("whisper-base", "http://e:1", "0" * 64, 2)
    first.in_flight += 1                      # the proxy took a request on it ...
    again = registry.register("whisper-base", "http://e:1/", "0" * 64, 4)
    assert again is first and again.max_concurrency == 4 and again.load == 0.25
    first.in_flight -= 1                      # ... and releases it on the object it holds
    assert registry.pick("whisper-base").in_flight == 0


@contextlib.contextmanager
def _serve_on(app, host: str, port: int) -> Iterator[str]:
    """`serve` on a given loopback address (127.0.0.2 is loopback on Linux too)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_for(lambda: server.started, 30)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_registrar_heartbeats_every_address_of_a_headless_name(catalog, keys_file, engines):
    """DALSTON_GATEWAY_EACH_ADDRESS: one name (a Kubernetes headless Service) -> every gateway pod.

    The resolver stands in for DNS (socket.getaddrinfo, as `resolve_addresses` calls it): it maps the
    name to two loopback addresses, each with a gateway on the same port, as two pods behind one name.
    """
    from dalston.gateway.app import create_gateway_app
    from tests.fixtures.serving import free_port
    from tests.gateway.conftest import gateway_config

    port = free_port()
    pods = ["127.0.0.1", "127.0.0.2"]
    apps = [create_gateway_app(gateway_config(catalog, keys_file, heartbeat_timeout=TIMEOUT)) for _ in pods]
    with _serve_on(apps[0], pods[0], port), _serve_on(apps[1], pods[1], port):
        digest = spec_digest(catalog.get("whisper-base").spec)
        resolved = list(pods)
        registrar = Registrar(f"http://gateway-pods.test:{port}", "whisper-base", engines[0], digest, 1,
                              INTERNAL_TOKEN, interval=INTERVAL, each_address=True,
                              resolve=lambda host, _: list(resolved) if host == "gateway-pods.test" else []).start()
        try:
            states = [app.state.gateway for app in apps]
            assert wait_for(lambda: all(len(s.instances.live("whisper-base")) == 1 for s in states), 5)
            assert sorted(registrar.instance_ids) == [f"http://{pod}:{port}" for pod in pods]
            resolved.remove("127.0.0.2")  # that pod is gone from the Service: no more heartbeats to it
            assert wait_for(lambda: states[1].instances.live("whisper-base") == [], TIMEOUT + 2)
            assert len(states[0].instances.live("whisper-base")) == 1
            assert list(registrar.instance_ids) == [f"http://127.0.0.1:{port}"]
        finally:
            registrar.stop()
