"""Webhooks: POST the finished job's status, signed, retried with backoff, every attempt recorded.

Signature: `Dalston-Signature: sha256=<hex HMAC-SHA256 of the exact request body>` under the
deployment's secret (`DALSTON_WEBHOOK_SECRET` / `dalston orchestrator --webhook-secret`). A
receiver recomputes it over the raw body and compares in constant time (`verify` below does
that). The body carries `delivered_at`, so a receiver can also refuse stale replays.

Delivery is at-least-once: a 2xx ends it; anything else (status, timeout, refused connection) is
retried after `backoff * 2**(attempt-1)` seconds, up to `attempts` tries. Each try is appended to
the job's `webhook.deliveries` so a client can see what its endpoint answered.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger("dalston.jobs")

SIGNATURE_HEADER = "Dalston-Signature"
SECRET_ENV = "DALSTON_WEBHOOK_SECRET"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """What a receiver does: recompute the signature over the raw body, compare in constant time."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


@dataclass(frozen=True)
class WebhookPolicy:
    secret: str
    attempts: int = 5
    backoff: float = 2.0
    timeout: float = 10.0


async def deliver(url: str, payload: dict[str, Any], policy: WebhookPolicy,
                  record: Callable[[dict[str, Any]], Awaitable[None]]) -> bool:
    """POST `payload` until a 2xx or `policy.attempts` tries; `record` stores each attempt."""
    async with httpx.AsyncClient(timeout=policy.timeout, follow_redirects=False) as client:
        for attempt in range(1, policy.attempts + 1):
            body = json.dumps({**payload, "delivered_at": round(time.time(), 3)}).encode()
            headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(policy.secret, body),
                       "User-Agent": "dalston-webhooks"}
            outcome: dict[str, Any] = {"attempt": attempt, "at": round(time.time(), 3)}
            try:
                response = await client.post(url, content=body, headers=headers)
                outcome["status_code"] = response.status_code
                ok = 200 <= response.status_code < 300
            except httpx.HTTPError as exc:
                outcome["error"] = f"{type(exc).__name__}: {exc}"[:300]
                ok = False
            outcome["delivered"] = ok
            await record(outcome)
            log.info("webhook_attempt job_id=%s url=%s attempt=%d status=%s delivered=%s", payload.get("id"), url,
                     attempt, outcome.get("status_code", outcome.get("error")), ok)
            if ok:
                return True
            if attempt < policy.attempts:
                await asyncio.sleep(policy.backoff * 2 ** (attempt - 1))
    log.warning("webhook_gave_up job_id=%s url=%s attempts=%d", payload.get("id"), url, policy.attempts)
    return False
