"""dalston.shared_redis against a real redis-server (tests/fixtures/redis.py): URL resolution, a client
that answers, fails fast while Redis is down and works again after a restart without being re-made."""

from __future__ import annotations

import argparse
import asyncio
import time

import pytest

from dalston import shared_redis


def test_url_from_argument_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(shared_redis.REGISTRY_URL_ENV, raising=False)
    assert shared_redis.redis_url_from(None) is None
    monkeypatch.setenv(shared_redis.REGISTRY_URL_ENV, "redis://env:6379/0")
    assert shared_redis.redis_url_from(None) == "redis://env:6379/0"
    assert shared_redis.redis_url_from("redis://arg:6379/1") == "redis://arg:6379/1"
    monkeypatch.setenv(shared_redis.REGISTRY_URL_ENV, "")
    assert shared_redis.redis_url_from(None) is None


def test_bad_url_names_the_accepted_forms() -> None:
    with pytest.raises(ValueError, match=r"'http://redis:6379' is not a Redis URL: expected redis://host:port/db"):
        shared_redis.redis_url_from("http://redis:6379")


def test_registry_argument_is_one_spelling() -> None:
    parser = argparse.ArgumentParser()
    shared_redis.add_registry_argument(parser)
    assert parser.parse_args(["--registry", "redis://r:1/0"]).registry == "redis://r:1/0"
    assert parser.parse_args([]).registry is None


def test_connect_round_trip_down_and_back(redis_server) -> None:
    async def scenario() -> None:
        conn = await shared_redis.connect(redis_server.url)
        try:
            await conn.set(b"k", b"\xff\x00bytes")
            assert await conn.get(b"k") == b"\xff\x00bytes"  # bytes in, bytes out
            redis_server.stop()
            started = time.monotonic()
            with pytest.raises(shared_redis.UNAVAILABLE_ERRORS):
                await conn.get(b"k")
            assert time.monotonic() - started < 3.0  # short timeouts, one quick retry: no hang
            redis_server.start()
            await conn.set(b"k2", b"v")  # the same client reconnects by itself
            assert await conn.get(b"k2") == b"v"
            assert await conn.get(b"k") is None  # default fixture keeps nothing across a restart
        finally:
            await conn.aclose()

    asyncio.run(scenario())


def test_connect_to_nothing_fails_fast(redis_server) -> None:
    redis_server.stop()

    async def scenario() -> None:
        with pytest.raises(shared_redis.UNAVAILABLE_ERRORS):
            await shared_redis.connect(redis_server.url)

    started = time.monotonic()
    asyncio.run(scenario())
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize("redis_server", [{"persistence": True}], indirect=True)
def test_persistent_fixture_keeps_data_across_restart(redis_server) -> None:
    client = redis_server.client()
    client.set("job", "queued")
    client.close()
    port = redis_server.port
    redis_server.stop()
    redis_server.start()
    assert redis_server.port == port
    client = redis_server.client()
    assert client.get("job") == b"queued"
    client.close()


def test_redacted_hides_the_password() -> None:
    assert shared_redis.redacted("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert shared_redis.redacted("redis://user:s3cret@redis:6379/0") == "redis://user:***@redis:6379/0"
    assert shared_redis.redacted("redis://redis:6379/0") == "redis://redis:6379/0"
