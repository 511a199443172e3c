"""Admission: who may call (one key parser), which engine a model name means, and how much work runs.

Every entry point — the engine's HTTP routes, the engine's realtime WebSocket and the gateway — asks
the same three questions through this module, so they give the same answers and the same errors:

* `authenticate` reads the one credential a request carries (`Authorization: Bearer`, `?api_key=`
  or the `openai-insecure-api-key.<key>` WebSocket subprotocol) and raises `ApiError` 401/403.
* `resolve_model` maps an id or alias to an engine id and raises `ApiError` 400/404.
* `Admission` is one server's capacity: ONE budget of `capabilities.max_concurrency` slots shared
  by batch requests and realtime sessions (a streaming variant serves both, and the hardware does
  not care which kind of inference it runs), a bounded wait queue for batch requests, one executor
  for the blocking work, and the counters `/metrics` exports.

WHY a budget and not just a thread pool: a pool queues without bound, so under overload every request
waits longer and longer and clients time out anyway. Refusing early (429 + `Retry-After`, before the
upload is read: `check_queue`) lets a gateway or client go elsewhere while this engine works through
what it has. A realtime session holds a slot for its whole life and never queues (it cannot wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from dalston.auth import KEY_PREFIX, KeyStore
from dalston.catalog import ModelNotFound, ModelRegistry
from dalston.errors import ApiError, echo

#: How a browser's WebSocket (which cannot set headers) sends a key, as OpenAI's realtime API defines it.
SUBPROTOCOL_KEY_PREFIX = "openai-insecure-api-key."
DEFAULT_MAX_FRAME_BYTES = 1 << 20
DEFAULT_IDLE_TIMEOUT_S = 30.0


# ------------------------------------------------------------------ who may call
def bearer_token(headers: Mapping[str, str], query: Mapping[str, str] | None = None,
                 subprotocols: Iterable[str] = ()) -> str | None:
    """The credential a request carries, or None: the Bearer header, else `?api_key=`, else the subprotocol.

    `query` and `subprotocols` are passed by WebSocket routes only: a browser cannot set headers on a
    WebSocket, while an HTTP client can (and keys in URLs end up in access logs).
    """
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if query is not None and query.get("api_key"):
        return query["api_key"].strip() or None
    for protocol in subprotocols:
        if protocol.startswith(SUBPROTOCOL_KEY_PREFIX) and len(protocol) > len(SUBPROTOCOL_KEY_PREFIX):
            return protocol[len(SUBPROTOCOL_KEY_PREFIX):]
    return None


def authenticate(keys: KeyStore | None, headers: Mapping[str, str], query: Mapping[str, str] | None = None,
                 subprotocols: Iterable[str] = ()) -> None:
    """Raise `ApiError` unless the request carries an accepted `dk_` key (`keys` None: auth is off).

    401 `missing_api_key` (nothing usable sent), 403 `forbidden_credential` (a token that is not a
    dalston key, e.g. an OpenAI `sk-` key sent to the wrong base URL), 401 `invalid_api_key`.
    """
    if keys is None:
        return
    token = bearer_token(headers, query, subprotocols)
    if token is None:
        raise ApiError(401, "missing API key: send 'Authorization: Bearer dk_...'", "missing_api_key",
                       type_="authentication_error", headers={"WWW-Authenticate": "Bearer"})
    if not token.startswith(KEY_PREFIX):
        raise ApiError(403, "this server accepts only dalston keys ('dk_...'); create one with `dalston keys create`",
                       "forbidden_credential", type_="permission_error")
    if not keys.check(token):
        raise ApiError(401, "invalid API key", "invalid_api_key", type_="authentication_error",
                       headers={"WWW-Authenticate": "Bearer"})


# ------------------------------------------------------------------ which engine
def resolve_model(models: ModelRegistry, name: str | None, *, served: str | None = None) -> str:
    """The engine id `name` (an id or alias) means; `ApiError` 400 when missing, 404 when unknown.

    With `served` (an engine server's own id): a missing name means that engine, and a name that
    resolves to another engine is a 404 that says which engine serves it and what this one accepts.
    """
    if not name:
        if served is not None:
            return served
        raise ApiError(400, "missing 'model': send it as a form field (before the file) or as ?model=<id>",
                       "missing_model", param="model")
    try:
        engine_id = models.resolve(name)
    except ModelNotFound as exc:
        if served is None:
            raise ApiError(404, str(exc), "model_not_found", param="model") from None
        raise _not_served(models, served, f"model '{echo(name)}' does not exist") from None
    if served is not None and engine_id != served:
        raise _not_served(models, served, f"'{echo(name)}' is served by the {engine_id} engine, not this one")
    return engine_id


def _not_served(models: ModelRegistry, served: str, where: str) -> ApiError:
    accepted = ", ".join([served, *models.aliases_for(served)])
    return ApiError(404, f"{where}; this server serves {served} (accepted names: {accepted})", "model_not_found",
                    param="model")


# ------------------------------------------------------------------ how much runs
@dataclass(frozen=True)
class Limits:
    """One server's admission limits, from the variant (`max_concurrency`) and `dalston serve` flags."""

    max_concurrency: int
    max_queue: int  # batch requests allowed to wait for a slot; beyond this, 429
    max_upload_bytes: int
    retry_after_seconds: int = 2  # the service-time estimate until a request has finished here
    retry_grace_seconds: float = 5.0  # a refused request's place is held this long after its Retry-After; 0: never


#: Headers that mark a request as a retry of one this server refused: OpenAI's SDKs send
#: `x-stainless-retry-count: N` on their automatic retries; other clients may send `Dalston-Retry: 1`.
RETRY_HEADERS = ("x-stainless-retry-count", "dalston-retry")


#: Sent by the gateway on the realtime handshake it relays: "refuse in the handshake". An engine that
#: cannot take the session (full, draining, bad key) then answers with the HTTP status and JSON error
#: instead of accepting and closing 4029/4503, so the gateway can try another instance before anything
#: reached the client. Clients talking to an engine directly keep the error event + close code.
HANDSHAKE_REFUSAL_HEADER = "dalston-refuse-in-handshake"


def is_retry(headers: Mapping[str, str]) -> bool:
    for name in RETRY_HEADERS:
        value = headers.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return True
    return False


@dataclass(frozen=True)
class Ticket:
    """What `check_queue` decided before the body was read; `reserved`: it used a place held for a retry."""

    reserved: bool = False


@dataclass(frozen=True)
class RealtimeLimits:
    """Per-session limits; `dalston serve --realtime-idle-timeout` sets `idle_timeout_s`."""

    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES


class SessionSlot:
    """The slot a realtime session holds; `release` is idempotent (a session may give it back early)."""

    def __init__(self, admission: Admission) -> None:
        self._admission: Admission | None = admission

    def release(self) -> None:
        if self._admission is not None:
            admission, self._admission = self._admission, None
            admission._release(session=True)


class Admission:
    """One budget of `max_concurrency` slots for batch requests and realtime sessions alike, one executor.

    Counters (read by `/metrics` at scrape time): `in_flight` batch requests holding a slot,
    `sessions_active` realtime sessions holding one, `queued` batch requests waiting, and
    `rejections` by reason (`queue_full`, `no_free_slot`). `peak_used` is the most slots ever held
    at once (tests and benchmarks read it).
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._slots = asyncio.Semaphore(limits.max_concurrency)
        self.in_flight = 0
        self.sessions_active = 0
        self.queued = 0
        self.peak_used = 0
        self.rejections: Counter[str] = Counter()
        # WHY: Retry-After from the queue, not a constant. A fixed 2 s under a 5-8 s queue sent obedient
        # clients back too early, into a full queue again (186 429s for 100 requests in the probe).
        self.service_seconds = float(limits.retry_after_seconds)  # moving average of how long a slot is held
        # WHY places held for refused requests: freed queue places used to go to whoever arrived next,
        # so a client that waited as told lost to new arrivals again and again (5 requests were refused
        # 30 times running). A refusal holds one place until Retry-After + grace; new arrivals see the
        # queue as full while places are held, and a retry (is_retry) takes one.
        self._held: list[float] = []  # expiry times (monotonic) of places held for refused requests
        # decode + inference workers; the slots, not the pool, bound how many run (+1: a decode
        # of the next request may start while the slots are busy finishing theirs)
        self.executor = ThreadPoolExecutor(max_workers=limits.max_concurrency + 1, thread_name_prefix="infer")

    @property
    def used(self) -> int:
        return self.in_flight + self.sessions_active

    @property
    def held_places(self) -> int:
        now = time.monotonic()
        self._held = [t for t in self._held if t > now]
        return len(self._held)

    def retry_after(self) -> int:
        """Seconds until a slot is likely free for one more request: waiting work x service time / slots."""
        waiting = self.queued + self.held_places + 1
        return max(1, min(60, math.ceil(waiting * self.service_seconds / self.limits.max_concurrency)))

    def check_queue(self, *, retry: bool = False, hold: bool = True) -> Ticket:
        """429 now if a batch request could neither run nor wait: call before reading the body.

        `retry` (from `is_retry(headers)`): the request may take a place held for a refused request.
        `hold`: a refusal holds a place for the client's retry (False on the re-check after the body).
        """
        if not self._slots.locked():
            return Ticket()
        held = self.held_places
        if retry and held and self.queued < self.limits.max_queue:
            self._held.pop(0)
            return Ticket(reserved=True)
        if self.queued + held < self.limits.max_queue:
            return Ticket()
        self.rejections["queue_full"] += 1
        retry_after = self.retry_after()
        if hold and self.limits.retry_grace_seconds > 0 and held < self.limits.max_queue:
            self._held.append(time.monotonic() + retry_after + self.limits.retry_grace_seconds)
        raise ApiError(429, f"engine busy: {self.in_flight} requests and {self.sessions_active} realtime sessions "
                            f"hold all {self.limits.max_concurrency} slots and {self.queued} requests wait "
                            f"(max_concurrency={self.limits.max_concurrency}, max_queue={self.limits.max_queue}); "
                            f"retry after {retry_after} s",
                       "rate_limit_exceeded", type_="rate_limit_error",
                       headers={"Retry-After": str(retry_after), "Connection": "close"})

    @contextlib.asynccontextmanager
    async def slot(self, ticket: Ticket | None = None) -> AsyncIterator[None]:
        """Hold one slot for the body of the `async with` (a batch request); wait in the queue, or 429.

        `ticket`: the pre-body decision; a request that took a held place is not checked again.
        """
        if ticket is None or not ticket.reserved:
            self.check_queue(hold=ticket is None)
        self.queued += 1
        try:
            await self._slots.acquire()
        finally:
            self.queued -= 1
        self._taken(session=False)
        started = time.monotonic()
        try:
            yield
        finally:
            self.service_seconds += 0.2 * (time.monotonic() - started - self.service_seconds)
            self._release(session=False)

    async def open_session(self, wait_s: float = 0.0) -> SessionSlot:
        """A slot for a realtime session: now, or if one is freed within `wait_s`; else 429 `too_many_sessions`.

        Sessions do not queue like batch requests (a live stream cannot wait); `wait_s` only bridges
        the moment between a client dropping a session and the server noticing (see realtime.py).
        """
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=wait_s if self._slots.locked() else None)
        except asyncio.TimeoutError:
            self.rejections["no_free_slot"] += 1
            raise ApiError(429, f"all {self.limits.max_concurrency} slots are busy ({self.sessions_active} realtime "
                                f"sessions, {self.in_flight} requests; capabilities.max_concurrency); retry later "
                                f"or on another instance", "too_many_sessions", type_="rate_limit_error",
                           headers={"Retry-After": str(self.retry_after())}) from None
        self._taken(session=True)
        return SessionSlot(self)

    def shutdown(self) -> None:
        """Stop the executor: queued work is cancelled, running work finishes in its thread."""
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _taken(self, *, session: bool) -> None:
        if session:
            self.sessions_active += 1
        else:
            self.in_flight += 1
        self.peak_used = max(self.peak_used, self.used)

    def _release(self, *, session: bool) -> None:
        if session:
            self.sessions_active -= 1
        else:
            self.in_flight -= 1
        self._slots.release()
