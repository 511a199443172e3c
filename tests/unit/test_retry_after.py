"""Retry-After from the queue, and places held for refused requests (dalston/admission.py, issue 11.4).

Before: `Retry-After` was always 2 s although queue waits were 5-8 s, and a place freed in the queue
went to whoever arrived next, so clients that obeyed Retry-After lost to new arrivals again and
again. These drive the real `Admission` on an event loop (no model: the slots are held by tasks).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from dalston.admission import Admission, Limits, is_retry
from dalston.errors import ApiError


def limits(**overrides: float) -> Limits:
    base = {"max_concurrency": 2, "max_queue": 2, "max_upload_bytes": 1 << 20, "retry_after_seconds": 2,
            "retry_grace_seconds": 5.0}
    base.update(overrides)
    return Limits(**base)  # type: ignore[arg-type]


async def fill(admission: Admission, release: asyncio.Event, n: int) -> list[asyncio.Task[None]]:
    """n batch requests that take a slot (or queue) and hold it until `release` is set."""
    async def hold() -> None:
        async with admission.slot():
            await release.wait()

    tasks = [asyncio.create_task(hold()) for _ in range(n)]
    await asyncio.sleep(0.01)
    return tasks


def refuse(admission: Admission, *, retry: bool = False) -> ApiError:
    with pytest.raises(ApiError) as caught:
        admission.check_queue(retry=retry)
    assert caught.value.status == 429
    return caught.value


def test_retry_after_follows_queue_depth_and_service_time() -> None:
    async def run() -> None:
        admission = Admission(limits(retry_grace_seconds=0))
        admission.service_seconds = 6.0  # as if requests had been taking 6 s each
        release = asyncio.Event()
        tasks = await fill(admission, release, 4)  # 2 running, 2 waiting: full
        # (2 waiting + this one) x 6 s / 2 slots = 9 s, not a constant
        assert refuse(admission).headers["Retry-After"] == "9"
        admission.service_seconds = 0.2
        assert refuse(admission).headers["Retry-After"] == "1"  # never below 1 s
        release.set()
        await asyncio.gather(*tasks)

    asyncio.run(run())


def test_service_time_is_learned_from_finished_requests() -> None:
    async def run() -> None:
        admission = Admission(limits())
        for _ in range(20):
            async with admission.slot():
                await asyncio.sleep(0.05)
        assert 0.04 < admission.service_seconds < 0.5

    asyncio.run(run())


def test_a_refused_request_keeps_a_place_that_new_arrivals_cannot_take() -> None:
    async def run() -> None:
        admission = Admission(limits())
        release = asyncio.Event()
        tasks = await fill(admission, release, 4)
        refuse(admission)  # client X refused: one place held for its retry
        release_one = tasks.pop(0)
        release_one.cancel()  # a queued request leaves: one queue place frees up
        await asyncio.sleep(0.01)
        assert admission.queued == 1 and admission.held_places == 1
        refuse(admission)  # a new arrival still finds the queue full (the freed place is held)
        ticket = admission.check_queue(retry=True)  # X's retry takes the held place
        assert ticket.reserved and admission.held_places == 1  # (the new arrival's refusal holds one too)
        release.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())


def test_held_places_expire_after_retry_after_plus_grace() -> None:
    async def run() -> None:
        admission = Admission(limits(retry_grace_seconds=0.2))
        admission.service_seconds = 0.1
        release = asyncio.Event()
        tasks = await fill(admission, release, 4)
        refuse(admission)
        assert admission.held_places == 1
        time.sleep(1.0 + 0.2 + 0.05)  # Retry-After (1 s minimum) + grace
        assert admission.held_places == 0
        release.set()
        await asyncio.gather(*tasks)

    asyncio.run(run())


def test_retry_markers() -> None:
    assert is_retry({"x-stainless-retry-count": "1"}) and is_retry({"dalston-retry": "1"})
    assert not is_retry({"x-stainless-retry-count": "0"}) and not is_retry({}) and not is_retry({"dalston-retry": "x"})
