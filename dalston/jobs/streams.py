"""A consumer-group reader for one Redis stream: pull only what there is room for, keep what it holds alive, reclaim the dead's.

Used by both sides of the job system: queue workers (`dalston serve ID --queue`, one stream per
variant) and orchestrators (the events stream). Delivery is at-least-once:

- `XREADGROUP ... COUNT free` asks for no more entries than the caller has free capacity for, so an
  engine is never handed more than it can run (the rest stay in the stream for other replicas).
- While a handler runs, its entry is re-claimed by its own consumer every `visibility_timeout/3`
  (`XCLAIM ... JUSTID`, which resets the idle time without counting a delivery): a long task is not
  mistaken for a dead one.
- An entry idle longer than `visibility_timeout` (its consumer died: SIGKILL, OOM, node loss) is
  taken over with `XAUTOCLAIM` by any live consumer of the group.
- An entry delivered more than `max_deliveries` times goes to `on_exhausted` instead of the handler,
  so a task that kills every worker that touches it ends (the job fails) instead of looping forever.

The handler acknowledges (usually in one MULTI with the result it records); an exception leaves the
entry pending, to be retried after the visibility timeout. Redis being unreachable is logged once
per outage (`redis_unavailable` / `redis_available`) and retried with backoff; nothing exits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from dalston.jobs.model import RECLAIMS_KEY
from dalston.shared_redis import SOCKET_TIMEOUT, UNAVAILABLE_ERRORS

log = logging.getLogger("dalston.jobs")

REDIS_DOWN = UNAVAILABLE_ERRORS
#: XREADGROUP's BLOCK must end well within the client's socket timeout, or an idle read looks like an outage.
BLOCK_MS = int(SOCKET_TIMEOUT * 1000 / 2)


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Delivery:
    stream: str
    entry_id: str
    fields: dict[str, str]
    deliveries: int  # 1 the first time; more when reclaimed from a consumer that did not acknowledge


Handler = Callable[[Delivery], Awaitable[None]]


class RedisHealth:
    """Logs `redis_unavailable` once when an outage starts and `redis_available` once when it ends."""

    def __init__(self, who: str) -> None:
        self.who = who
        self.down_since: float | None = None

    def failed(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("redis_unavailable who=%s error=%r", self.who, exc)

    def ok(self) -> None:
        if self.down_since is not None:
            log.info("redis_available who=%s outage_seconds=%.1f", self.who, time.monotonic() - self.down_since)
            self.down_since = None


class StreamConsumer:
    def __init__(self, redis: aioredis.Redis, stream: str, group: str, name: str, *, handler: Handler,
                 on_exhausted: Handler, capacity: Callable[[], int], visibility_timeout: float,
                 max_deliveries: int, block_ms: int = BLOCK_MS) -> None:
        self.redis, self.stream, self.group, self.name = redis, stream, group, name
        self.handler, self.on_exhausted, self.capacity = handler, on_exhausted, capacity
        self.visibility_timeout, self.max_deliveries, self.block_ms = visibility_timeout, max_deliveries, block_ms
        self.active: dict[str, asyncio.Task[None]] = {}
        self.health = RedisHealth(f"{group}/{name}")
        self._room = asyncio.Event()
        self._stopping = False
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self.reclaimed = 0  # entries this consumer took over from dead ones (also summed in Redis, RECLAIMS_KEY)

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        """Read and dispatch until `stop()`; survives Redis outages and restarts."""
        keepalive = asyncio.create_task(self._keep_alive())
        backoff = 0.2
        try:
            await self._ensure_group()
            while not self._stopping:
                try:
                    await self._step()
                    self.health.ok()
                    backoff = 0.2
                except REDIS_DOWN as exc:
                    self.health.failed(exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                except ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
                    await self._ensure_group()  # Redis restarted without persistence, or the stream was deleted
        finally:
            keepalive.cancel()

    def stop(self) -> None:
        self._stopping = True
        self._room.set()

    async def drain(self, timeout: float) -> None:
        """Wait for running handlers; what does not finish stays pending and is reclaimed elsewhere."""
        if self.active:
            await asyncio.wait(list(self.active.values()), timeout=timeout)

    async def _ensure_group(self) -> None:
        while not self._stopping:
            try:
                await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
                return
            except ResponseError as exc:
                if "BUSYGROUP" in str(exc):
                    return
                raise
            except REDIS_DOWN as exc:
                self.health.failed(exc)
                await asyncio.sleep(1.0)

    # ------------------------------------------------------------------ reading
    def free(self) -> int:
        return max(0, self.capacity() - len(self.active))

    async def _step(self) -> None:
        free = self.free()
        if free <= 0:
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), timeout=0.5)
            except asyncio.TimeoutError:
                pass
            return
        if time.monotonic() >= self._next_claim:
            free -= await self._reclaim(free)
            if free <= 0:
                return
        reply = await self.redis.xreadgroup(self.group, self.name, {self.stream: ">"}, count=free, block=self.block_ms)
        for entry_id, fields in _entries(reply):
            self._dispatch(Delivery(self.stream, entry_id, fields, 1))

    async def _reclaim(self, free: int) -> int:
        """Take over entries idle past the visibility timeout; returns how many were dispatched."""
        reply = await self.redis.xautoclaim(self.stream, self.group, self.name,
                                            int(self.visibility_timeout * 1000), self._claim_cursor, count=free)
        self._claim_cursor = text(reply[0])
        claimed = [(text(i), _fields(f)) for i, f in reply[1] if f is not None]
        if self._claim_cursor == "0-0":  # scanned the whole pending list: wait before the next scan
            self._next_claim = time.monotonic() + max(self.visibility_timeout / 4, 0.2)
        for entry_id, fields in claimed:
            pending = await self.redis.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
            count = int(pending[0]["times_delivered"]) if pending else 1
            log.warning("task_reclaimed stream=%s entry=%s consumer=%s deliveries=%d", self.stream, entry_id,
                        self.name, count)
            self._dispatch(Delivery(self.stream, entry_id, fields, count))
        if claimed:  # after dispatching: a deployment-wide count per stream, for the orchestrator's /metrics
            self.reclaimed += len(claimed)
            await self.redis.hincrby(RECLAIMS_KEY, self.stream, len(claimed))
        return len(claimed)

    def _dispatch(self, delivery: Delivery) -> None:
        call = self.on_exhausted if delivery.deliveries > self.max_deliveries else self.handler
        task = asyncio.create_task(self._run_handler(call, delivery))
        self.active[delivery.entry_id] = task

    async def _run_handler(self, call: Handler, delivery: Delivery) -> None:
        try:
            await call(delivery)
        except asyncio.CancelledError:
            raise
        except REDIS_DOWN as exc:
            self.health.failed(exc)
            log.warning("entry_left_pending stream=%s entry=%s reason=redis_unavailable", self.stream, delivery.entry_id)
        except Exception:
            log.exception("handler_failed stream=%s entry=%s deliveries=%d: left pending, retried after %.0f s",
                          self.stream, delivery.entry_id, delivery.deliveries, self.visibility_timeout)
        finally:
            self.active.pop(delivery.entry_id, None)
            self._room.set()

    async def _keep_alive(self) -> None:
        """Reset the idle time of the entries this consumer is working on, so nobody reclaims them."""
        while True:
            await asyncio.sleep(self.visibility_timeout / 3)
            ids: list[Any] = list(self.active)
            if not ids:
                continue
            try:
                await self.redis.xclaim(self.stream, self.group, self.name, 0, ids, justid=True)
            except REDIS_DOWN as exc:
                self.health.failed(exc)
            except ResponseError as exc:
                log.warning("keepalive_failed stream=%s error=%r", self.stream, exc)

    async def ack(self, delivery: Delivery, pipe: Any | None = None) -> None:
        """Acknowledge and delete the entry (alone, or queued on a MULTI pipeline the caller executes)."""
        target = pipe if pipe is not None else self.redis.pipeline(transaction=True)
        target.xack(self.stream, self.group, delivery.entry_id)
        target.xdel(self.stream, delivery.entry_id)
        if pipe is None:
            await target.execute()


def _fields(raw: Any) -> dict[str, str]:
    return {text(k): text(v) for k, v in (raw or {}).items()}


def _entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    """Entries of an XREADGROUP reply, RESP2 (list of [stream, entries]) or RESP3 (dict)."""
    if not reply:
        return []
    streams = reply.items() if isinstance(reply, dict) else reply
    out: list[tuple[str, dict[str, str]]] = []
    for _, entries in streams:
        for entry_id, fields in entries:
            if fields is not None:
                out.append((text(entry_id), _fields(fields)))
    return out
