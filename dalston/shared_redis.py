"""The one Redis every dalston process shares: how its URL is found and how a client is made.

Every process that needs Redis (the gateway's registry, job queues, the orchestrator, `dalston serve
--queue`) takes the same `--registry URL` option, defaulting to `$DALSTON_REGISTRY_URL`, so one
setting points a whole deployment at one Redis. Without it each process runs its embedded,
in-memory default.

Clients are made here, with one set of choices: bytes in and out (`decode_responses=False`; callers
decode what they store), short socket timeouts and a single quick retry, so that a Redis that is down
or unreachable costs a caller a fraction of a second and a clear `redis.exceptions.ConnectionError`
or `TimeoutError`, never a hang; and a periodic health check so a connection idle across a Redis
restart is re-opened instead of failing the first command after it.
"""

from __future__ import annotations

import argparse
import os
from urllib.parse import urlsplit

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

REGISTRY_URL_ENV = "DALSTON_REGISTRY_URL"
SCHEMES = ("redis", "rediss", "unix")

# What "Redis is unavailable" looks like to a caller of a client made by `connect`.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, OSError)

SOCKET_TIMEOUT = 1.0          # seconds for one command's reply
CONNECT_TIMEOUT = 1.0         # seconds to open a connection
HEALTH_CHECK_INTERVAL = 5     # seconds a pooled connection may idle before a PING checks it


def redis_url_from(arg: str | None) -> str | None:
    """The Redis URL to use: `arg` (from `--registry`), else `$DALSTON_REGISTRY_URL`, else None (embedded)."""
    url = arg or os.environ.get(REGISTRY_URL_ENV) or None
    if url is not None:
        check_url(url)
    return url


def check_url(url: str) -> str:
    """`url` if it is a Redis URL; ValueError naming the accepted forms otherwise."""
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise ValueError(f"registry URL {url!r} is not a Redis URL: expected redis://host:port/db, "
                         f"rediss://host:port/db or unix:///path/to/redis.sock")
    return url


def redacted(url: str) -> str:
    """`url` with any password replaced by `***`, for logs and status pages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def add_registry_argument(parser: argparse.ArgumentParser, help_suffix: str = "") -> None:
    """`--registry URL` (default `$DALSTON_REGISTRY_URL`): the one spelling of this option on every command."""
    parser.add_argument("--registry", default=None, metavar="URL",
                        help=f"shared Redis, e.g. redis://redis:6379/0 (default ${REGISTRY_URL_ENV}; "
                             f"unset: embedded, in-memory){help_suffix}")


def client(url: str) -> redis.asyncio.Redis:
    """A client for `url` with dalston's timeouts; connects lazily (use `connect` to check it answers)."""
    check_url(url)
    return redis.asyncio.Redis.from_url(
        url, decode_responses=False, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT,
        health_check_interval=HEALTH_CHECK_INTERVAL,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), retries=1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError])


async def connect(url: str) -> redis.asyncio.Redis:
    """A client for `url` that has answered a PING; raises one of `UNAVAILABLE_ERRORS` if Redis does not.

    Callers that must start while Redis is down (the gateway keeps routing on what it knows) use
    `client(url)` and handle the errors per command instead.
    """
    conn = client(url)
    try:
        await conn.ping()
    except BaseException:
        await conn.aclose()
        raise
    return conn
