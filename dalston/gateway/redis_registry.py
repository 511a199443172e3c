"""The instance registry shared by gateway replicas through Redis (`dalston gateway --registry URL`).

Each replica keeps the in-memory table of `InstanceRegistry` and routes from it alone: no request
waits on Redis. Two background tasks keep the table shared:

- a writer applies this replica's changes in order: a registration or heartbeat writes the instance
  record (`SET ... PX heartbeat_timeout`: missed heartbeats expire it in Redis itself), a
  deregistration or a drop deletes it and leaves a tombstone so the other replicas drop it too;
- a poller, every `refresh` seconds, publishes this replica's in-flight counts (a hash with a TTL,
  so a replica that dies stops counting within a few polls) and reads every record, tombstone and
  the other replicas' counts in two pipelined round trips.

WHY a short poll and not keyspace notifications: notifications need `notify-keyspace-events` set on
the server (managed Redis often forbids CONFIG SET); Pub/Sub delivery is at most once, so after any
disconnect a full read is needed anyway, i.e. the poll must exist regardless; `expired` events fire
when Redis gets round to deleting a key, not at its TTL; and in-flight counts change per request,
which as events would be far more traffic than a snapshot a few times a second. The poll bounds
staleness to `refresh` (0.25 s by default) at a cost of a few cheap commands per replica per poll.

A record present in Redis refreshes the local `last_seen` (its age is read from its remaining TTL,
Redis's clock, so replicas need no synchronised clocks); a record's absence removes nothing. An
instance leaves the table by local expiry (no heartbeat, first-hand or via Redis, for
`heartbeat_timeout`), by a tombstone, or by this replica's own drop. So when Redis is unavailable
every replica keeps routing on its last known table, still drops an engine that stops
heartbeating, and when Redis returns empty the records come back with the next heartbeats while
nothing is dropped in between. State changes are logged once each: `registry_unavailable`,
`registry_available`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import time
import uuid
from typing import Any, Callable

from dalston import shared_redis
from dalston.gateway.instances import Instance, InstanceRegistry

log = logging.getLogger("dalston.gateway")

PREFIX = "dalston:registry:"
INDEX = PREFIX + "instances"     # set of instance ids that have (or had) a record
GATEWAYS = PREFIX + "gateways"   # set of gateway ids that publish in-flight counts
ALIVE = b"@"                     # field every load hash has, so an idle replica's hash still exists


def record_key(instance_id: str) -> str:
    return f"{PREFIX}instance:{instance_id}"


def tombstone_key(instance_id: str) -> str:
    return f"{PREFIX}gone:{instance_id}"


def load_key(gateway_id: str) -> str:
    return f"{PREFIX}load:{gateway_id}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisRegistry(InstanceRegistry):
    """`InstanceRegistry` as a local cache of the registry every replica shares through Redis."""

    backend = "redis"

    def __init__(self, timeout: float, url: str, *, refresh: float = 0.25, gateway_id: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(timeout=timeout, clock=clock)
        self.url = shared_redis.check_url(url)
        self.refresh = refresh
        self.gateway_id = gateway_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.load_ttl = max(3 * refresh, 1.0)
        self.available: bool | None = None  # None until the first sync says
        self.error: str | None = None
        self.changed_at = clock()
        self.synced_at = -math.inf
        self._dropped: dict[str, float] = {}  # instance id -> local time this replica dropped it
        self._writes: asyncio.Queue[tuple[str, Instance]] = asyncio.Queue()
        self._redis: Any = None
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (lazily: a Redis that is down does not stop the gateway) and start the sync tasks."""
        self._redis = shared_redis.client(self.url)
        await self.sync_once()
        self._tasks = [asyncio.create_task(self._writer(), name="registry-writer"),
                       asyncio.create_task(self._poller(), name="registry-poller")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._redis is not None:
            with contextlib.suppress(*shared_redis.UNAVAILABLE_ERRORS):
                await self._redis.srem(GATEWAYS, self.gateway_id)
                await self._redis.delete(load_key(self.gateway_id))
            await self._redis.aclose()
            self._redis = None

    def status(self) -> dict[str, Any]:
        age = self.clock() - self.synced_at
        return {"backend": self.backend, "url": shared_redis.redacted(self.url), "available": bool(self.available),
                "error": self.error, "last_sync_age_s": None if math.isinf(age) else round(age, 3),
                "gateway_id": self.gateway_id}

    # --- changes made through this replica ---------------------------------------------------------

    def register(self, engine_id: str, url: str, spec_digest: str, max_concurrency: int,
                 reason: str = "registered") -> Instance:
        inst = super().register(engine_id, url, spec_digest, max_concurrency, reason)
        self._dropped.pop(inst.instance_id, None)
        self._writes.put_nowait(("put", inst))
        return inst

    def heartbeat(self, instance_id: str, registration: dict[str, Any] | None = None) -> Instance | None:
        known = instance_id in self._by_id
        inst = super().heartbeat(instance_id, registration)
        if inst is not None and known:  # (an adopted instance was queued by register)
            self._writes.put_nowait(("put", inst))
        return inst

    def deregister(self, instance_id: str) -> Instance | None:
        inst = super().deregister(instance_id)
        if inst is not None:
            self._dropped[instance_id] = self.clock()
            self._writes.put_nowait(("delete", inst))
        return inst

    def mark_dead(self, inst: Instance, reason: str) -> None:
        """Drop it here and, by a tombstone, on every replica (local expiry stays local: see `_merge`)."""
        if inst.instance_id in self._by_id:
            self._dropped[inst.instance_id] = self.clock()
            self._writes.put_nowait(("delete", inst))
        super().mark_dead(inst, reason)

    # --- background sync ---------------------------------------------------------------------------

    async def _writer(self) -> None:
        while True:
            op, inst = await self._writes.get()
            if not self.available:
                continue  # the poller probes Redis; heartbeats rewrite every record once it is back
            try:
                await self._apply_write(op, inst)
            except shared_redis.UNAVAILABLE_ERRORS as exc:
                self._state(False, exc)

    async def _apply_write(self, op: str, inst: Instance) -> None:
        ttl_ms = max(1, int(self.timeout * 1000))
        async with self._redis.pipeline(transaction=False) as pipe:
            if op == "put":
                record = {"engine_id": inst.engine_id, "url": inst.url, "spec_digest": inst.spec_digest,
                          "max_concurrency": inst.max_concurrency, "ttl_ms": ttl_ms}
                pipe.set(record_key(inst.instance_id), json.dumps(record), px=ttl_ms)
                pipe.delete(tombstone_key(inst.instance_id))
            else:
                pipe.delete(record_key(inst.instance_id))
                pipe.set(tombstone_key(inst.instance_id), b"1", px=ttl_ms)
            pipe.sadd(INDEX, inst.instance_id)
            await pipe.execute()

    async def _poller(self) -> None:
        while True:
            await asyncio.sleep(self.refresh)
            await self.sync_once()

    async def sync_once(self) -> None:
        """Publish this replica's counts and merge the shared registry into the local table."""
        try:
            ids, gateways = await self._publish_and_list()
            records, loads = await self._read(ids, gateways)
        except shared_redis.UNAVAILABLE_ERRORS as exc:
            self._state(False, exc)
            if self.clock() - self.synced_at > self.load_ttl:
                for inst in self._by_id.values():
                    inst.remote_in_flight = 0  # counts that old would only mislead
            return
        self._state(True, None)
        self.synced_at = self.clock()
        self._merge(records, loads)

    async def _publish_and_list(self) -> tuple[list[str], list[str]]:
        counts: dict[str | bytes, int] = {ALIVE: 1}
        counts.update({inst.instance_id: inst.in_flight for inst in self._by_id.values() if inst.in_flight})
        key = load_key(self.gateway_id)
        # MULTI/EXEC: another replica must never read this hash between the DEL and the HSET.
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=counts)
            pipe.pexpire(key, int(self.load_ttl * 1000))
            pipe.sadd(GATEWAYS, self.gateway_id)
            pipe.smembers(INDEX)
            pipe.smembers(GATEWAYS)
            *_, ids, gateways = await pipe.execute()
        return sorted(_text(i) for i in ids), sorted(_text(g) for g in gateways if _text(g) != self.gateway_id)

    async def _read(self, ids: list[str], gateways: list[str]
                    ) -> tuple[list[tuple[str, Any, int, bool]], dict[str, dict[bytes, bytes]]]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for instance_id in ids:
                pipe.get(record_key(instance_id))
                pipe.pttl(record_key(instance_id))
                pipe.exists(tombstone_key(instance_id))
            for gateway_id in gateways:
                pipe.hgetall(load_key(gateway_id))
            replies = await pipe.execute()
        records = [(ids[n], replies[3 * n], int(replies[3 * n + 1]), bool(replies[3 * n + 2]))
                   for n in range(len(ids))]
        loads = {g: replies[3 * len(ids) + n] for n, g in enumerate(gateways)}
        gone_ids = [i for i, raw, _, tomb in records if raw is None and not tomb]
        gone_gateways = [g for g, load in loads.items() if not load]
        if gone_ids or gone_gateways:  # housekeeping: forget index entries whose keys have expired
            async with self._redis.pipeline(transaction=False) as pipe:
                if gone_ids:
                    pipe.srem(INDEX, *gone_ids)
                if gone_gateways:
                    pipe.srem(GATEWAYS, *gone_gateways)
                await pipe.execute()
        return records, loads

    def _merge(self, records: list[tuple[str, Any, int, bool]], loads: dict[str, dict[bytes, bytes]]) -> None:
        now = self.clock()
        for instance_id, raw, pttl_ms, tombstoned in records:
            if tombstoned:
                inst = self._by_id.get(instance_id)
                if inst is not None:
                    self._drop(inst, "removed_via_other_gateway")
                continue
            if raw is None or pttl_ms < 0:
                continue
            try:
                record = json.loads(raw)
                heard = now - max(0.0, (int(record["ttl_ms"]) - pttl_ms) / 1000)
                engine_id, url = str(record["engine_id"]), str(record["url"])
                max_concurrency = int(record["max_concurrency"])
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("registry_record_invalid instance_id=%s error=%s", instance_id, exc)
                continue
            if heard <= self._dropped.get(instance_id, -math.inf):
                continue  # this replica dropped it after that heartbeat
            inst = self._by_id.get(instance_id)
            if inst is None:
                inst = Instance(instance_id=instance_id, engine_id=engine_id, url=url,
                                spec_digest=str(record.get("spec_digest", "")), max_concurrency=max_concurrency,
                                last_seen=heard, order=next(self._counter))
                self._by_id[instance_id] = inst
                log.info("instance_discovered engine_id=%s url=%s instance_id=%s via=registry",
                         engine_id, url, instance_id)
            else:
                inst.last_seen = max(inst.last_seen, heard)
        remote: dict[str, int] = {}
        for load in loads.values():
            for field, value in load.items():
                if field != ALIVE:
                    remote[_text(field)] = remote.get(_text(field), 0) + int(value)
        for inst in self._by_id.values():
            inst.remote_in_flight = remote.get(inst.instance_id, 0)
        cutoff = now - self.timeout
        self._dropped = {i: t for i, t in self._dropped.items() if t > cutoff}
        self.expire()

    def _state(self, available: bool, exc: BaseException | None) -> None:
        """Record Redis's state; log only when it changes (one line per outage, one per recovery)."""
        error = None if exc is None else f"{type(exc).__name__}: {exc}"
        if available == self.available:
            self.error = error if not available else None
            return
        now = self.clock()
        if available:
            log.info("registry_available url=%s gateway_id=%s after_s=%.1f instances=%d",
                     shared_redis.redacted(self.url), self.gateway_id,
                     0.0 if self.available is None else now - self.changed_at, len(self._by_id))
        else:
            log.warning("registry_unavailable url=%s gateway_id=%s error=%r action=routing_on_last_known_registry "
                        "instances=%d", shared_redis.redacted(self.url), self.gateway_id, error, len(self._by_id))
        self.available, self.error, self.changed_at = available, error, now
