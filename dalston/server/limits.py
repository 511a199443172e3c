"""Admission control: at most `max_concurrency` inferences run, a bounded number wait, the rest get 429.

WHY a gate and not just a thread pool: a pool queues without bound, so under overload every request
waits longer and longer and clients time out anyway. Refusing early with `Retry-After` lets a
gateway or client go elsewhere while this engine works through what it has.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from dalston.server.errors import ApiError


@dataclass(frozen=True)
class Limits:
    max_concurrency: int
    max_queue: int  # requests allowed to wait for a slot; beyond this, 429
    max_upload_bytes: int
    retry_after_seconds: int = 2


class InferenceGate:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._slots = asyncio.Semaphore(limits.max_concurrency)
        self.in_flight = 0
        self.queued = 0
        self.peak_in_flight = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one inference slot for the body of the `async with`; 429 when the wait queue is full."""
        if self._slots.locked() and self.queued >= self.limits.max_queue:
            raise ApiError(429, f"engine busy: {self.in_flight} inferences running and {self.queued} waiting "
                                f"(max_concurrency={self.limits.max_concurrency}, max_queue={self.limits.max_queue}); "
                                f"retry after {self.limits.retry_after_seconds} s",
                           "rate_limit_exceeded", type_="rate_limit_error",
                           headers={"Retry-After": str(self.limits.retry_after_seconds)})
        self.queued += 1
        try:
            await self._slots.acquire()
        finally:
            self.queued -= 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1
            self._slots.release()
