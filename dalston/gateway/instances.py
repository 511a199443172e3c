"""The live instance registry: which engine processes serve which engine id, and how busy they are.

`InstanceRegistry` is the embedded default, kept in memory on purpose: engines re-register on their
own (every heartbeat carries the registration, so a restarted gateway takes the instance back at
once), and there is no state to persist or reconcile. `dalston.gateway.redis_registry.RedisRegistry`
extends it for several gateway replicas: the same table, used as a local cache of a registry
shared through Redis (`dalston gateway --registry redis://...`). `GatewayState.create` picks one.

The proxy routes only from this table, synchronously and without I/O: `pick` chooses the live
instance with the least work in flight relative to its capacity, counting this replica's requests
(`in_flight`, exact) and the other replicas' (`remote_in_flight`, from the shared registry).

An instance's id is derived from (engine id, URL), so the registrations of one engine process with
several replicas name the same instance.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from collections.abc import Collection
from typing import Any, Callable

log = logging.getLogger("dalston.gateway")


@dataclass
class Instance:
    """One registered engine process."""

    instance_id: str
    engine_id: str
    url: str
    spec_digest: str
    max_concurrency: int
    last_seen: float
    in_flight: int = 0
    served: int = 0
    order: int = 0  # registration order; breaks ties so equal load spreads round-robin
    remote_in_flight: int = 0  # requests other gateway replicas have on it (shared registry only)
    heard_at: float = -math.inf  # when this gateway last got its registration or heartbeat first-hand

    @property
    def load(self) -> float:
        """Requests on the instance from every gateway, per slot: what least-loaded routing compares."""
        return (self.in_flight + self.remote_in_flight) / self.max_concurrency

    def to_json(self) -> dict[str, object]:
        return {"instance_id": self.instance_id, "url": self.url, "in_flight": self.in_flight,
                "remote_in_flight": self.remote_in_flight, "max_concurrency": self.max_concurrency,
                "served": self.served}


def instance_id_for(engine_id: str, url: str) -> str:
    """The instance id of the engine `engine_id` served at `url`: the same on every gateway replica."""
    return hashlib.sha256(f"{engine_id}\n{url.rstrip('/')}".encode()).hexdigest()[:32]


@dataclass
class InstanceRegistry:
    """Instances by engine id; an instance silent for `timeout` seconds is dropped."""

    backend = "memory"
    timeout: float
    clock: Callable[[], float] = time.monotonic
    _by_id: dict[str, Instance] = field(default_factory=dict)
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def start(self) -> None:
        """Start background work (none in memory); the gateway's lifespan calls it."""

    async def stop(self) -> None:
        """Stop background work (none in memory)."""

    def status(self) -> dict[str, Any]:
        """The registry's health for /ready and /metrics: the in-memory table is always available."""
        return {"backend": self.backend, "available": True}

    def register(self, engine_id: str, url: str, spec_digest: str, max_concurrency: int,
                 reason: str = "registered") -> Instance:
        """Add an instance; a re-registration of the same engine id at the same URL updates it in place.

        In place, not replaced: the proxy holds the `Instance` of every request in flight and releases
        its count on that object, so a new object would keep those requests counted forever.
        """
        url = url.rstrip("/")
        instance_id = instance_id_for(engine_id, url)
        now = self.clock()
        inst = self._by_id.get(instance_id)
        if inst is None:
            inst = Instance(instance_id=instance_id, engine_id=engine_id, url=url, spec_digest=spec_digest,
                            max_concurrency=max_concurrency, last_seen=now, heard_at=now,
                            order=next(self._counter))
            self._by_id[instance_id] = inst
        else:
            inst.spec_digest, inst.max_concurrency, inst.last_seen, inst.heard_at = \
                spec_digest, max_concurrency, now, now
        log.info("instance_%s engine_id=%s url=%s instance_id=%s max_concurrency=%d",
                 reason, engine_id, url, inst.instance_id, max_concurrency)
        return inst

    def heartbeat(self, instance_id: str, registration: dict[str, Any] | None = None) -> Instance | None:
        """Refresh an instance; None if it is unknown (dropped, or the gateway restarted).

        `registration` (engine_id, url, spec_digest, max_concurrency; already checked against the
        catalog) comes with every heartbeat from current engines: an unknown instance whose id it
        matches is taken back as if it had just registered.
        """
        self.expire()
        inst = self._by_id.get(instance_id)
        if inst is None and registration is not None \
                and instance_id_for(registration["engine_id"], registration["url"]) == instance_id:
            return self.register(registration["engine_id"], registration["url"], registration["spec_digest"],
                                 registration["max_concurrency"], reason="adopted")
        if inst is not None:
            inst.last_seen = inst.heard_at = self.clock()
        return inst

    def deregister(self, instance_id: str) -> Instance | None:
        inst = self._by_id.pop(instance_id, None)
        if inst is not None:
            log.info("instance_deregistered engine_id=%s url=%s instance_id=%s", inst.engine_id, inst.url, instance_id)
        return inst

    def mark_dead(self, inst: Instance, reason: str) -> None:
        """Drop an instance the proxy could not reach; it comes back when it next registers."""
        self._drop(inst, reason)

    def expire(self) -> None:
        now = self.clock()
        for inst in list(self._by_id.values()):
            if now - inst.last_seen > self.timeout:
                self._drop(inst, f"no_heartbeat_for={now - inst.last_seen:.1f}s")

    def _drop(self, inst: Instance, reason: str) -> None:
        if self._by_id.pop(inst.instance_id, None) is not None:
            log.warning("instance_dropped engine_id=%s url=%s instance_id=%s reason=%s",
                        inst.engine_id, inst.url, inst.instance_id, reason)

    def live(self, engine_id: str) -> list[Instance]:
        self.expire()
        return [i for i in self._by_id.values() if i.engine_id == engine_id]

    def all(self) -> list[Instance]:
        self.expire()
        return list(self._by_id.values())

    def pick(self, engine_id: str, exclude: Collection[str] = ()) -> Instance | None:
        """The live instance with the fewest requests in flight (relative to its capacity), oldest-served first.

        `exclude`: instance ids already tried for this request (alive but refusing it)."""
        candidates = [i for i in self.live(engine_id) if i.instance_id not in exclude]
        if not candidates:
            return None
        return min(candidates, key=lambda i: (i.load, i.served, i.order))
