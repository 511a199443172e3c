"""The live instance registry: which engine processes serve which engine id, and how busy they are.

Kept in memory on purpose: engines re-register on their own (a heartbeat answered with 404 makes the
registrar register again), so a restarted gateway rebuilds this table within one heartbeat interval
and there is no state to persist or reconcile.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

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

    def to_json(self) -> dict[str, object]:
        return {"instance_id": self.instance_id, "url": self.url, "in_flight": self.in_flight,
                "max_concurrency": self.max_concurrency, "served": self.served}


@dataclass
class InstanceRegistry:
    """Instances by engine id; an instance silent for `timeout` seconds is dropped."""

    timeout: float
    clock: Callable[[], float] = time.monotonic
    _by_id: dict[str, Instance] = field(default_factory=dict)
    _counter: itertools.count = field(default_factory=lambda: itertools.count(1))

    def register(self, engine_id: str, url: str, spec_digest: str, max_concurrency: int) -> Instance:
        """Add an instance; a re-registration of the same engine id at the same URL replaces the old one."""
        url = url.rstrip("/")
        for old in list(self._by_id.values()):
            if old.engine_id == engine_id and old.url == url:
                del self._by_id[old.instance_id]
        inst = Instance(instance_id=uuid.uuid4().hex, engine_id=engine_id, url=url, spec_digest=spec_digest,
                        max_concurrency=max_concurrency, last_seen=self.clock(), order=next(self._counter))
        self._by_id[inst.instance_id] = inst
        log.info("instance_registered engine_id=%s url=%s instance_id=%s max_concurrency=%d",
                 engine_id, url, inst.instance_id, max_concurrency)
        return inst

    def heartbeat(self, instance_id: str) -> Instance | None:
        """Refresh an instance; None if it is unknown (dropped, or the gateway restarted)."""
        self.expire()
        inst = self._by_id.get(instance_id)
        if inst is not None:
            inst.last_seen = self.clock()
        return inst

    def deregister(self, instance_id: str) -> Instance | None:
        inst = self._by_id.pop(instance_id, None)
        if inst is not None:
            log.info("instance_deregistered engine_id=%s url=%s instance_id=%s", inst.engine_id, inst.url, instance_id)
        return inst

    def mark_dead(self, inst: Instance, reason: str) -> None:
        """Drop an instance the proxy could not reach; it comes back when it next registers."""
        if self._by_id.pop(inst.instance_id, None) is not None:
            log.warning("instance_dropped engine_id=%s url=%s instance_id=%s reason=%s",
                        inst.engine_id, inst.url, inst.instance_id, reason)

    def expire(self) -> None:
        now = self.clock()
        for inst in list(self._by_id.values()):
            if now - inst.last_seen > self.timeout:
                self.mark_dead(inst, f"no_heartbeat_for={now - inst.last_seen:.1f}s")

    def live(self, engine_id: str) -> list[Instance]:
        self.expire()
        return [i for i in self._by_id.values() if i.engine_id == engine_id]

    def all(self) -> list[Instance]:
        self.expire()
        return list(self._by_id.values())

    def pick(self, engine_id: str) -> Instance | None:
        """The live instance with the fewest requests in flight (relative to its capacity), oldest-served first."""
        candidates = self.live(engine_id)
        if not candidates:
            return None
        return min(candidates, key=lambda i: (i.in_flight / i.max_concurrency, i.served, i.order))
