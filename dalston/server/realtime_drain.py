"""Draining realtime sessions on SIGTERM: warn them, let them finish, then flush and close with 1001.

uvicorn's own shutdown (0.54: `Server.shutdown` -> `connection.shutdown()` on every connection)
closes each open WebSocket at once with 1012, so a session open at SIGTERM lost the speech it had
sent but not yet seen finalised. `dalston serve` therefore drains sessions itself *before* handing
over to uvicorn (`dalston.draining.DrainingServer`), while the port still listens (new sessions get
4503 `shutting_down`, `/ready` 503):

1. every open session is told `session.draining` with the seconds left (`--shutdown-timeout`);
2. sessions that end on their own in that time end as usual (`session.end`, close 1000);
3. at the deadline each remaining session stops reading, decodes what it received, sends its
   finals and `session.end`, and closes with 1001 "going away"; this flush is bounded by
   `FLUSH_TIMEOUT_S`, after which uvicorn's shutdown closes whatever is left.

A session registers when it takes its slot and unregisters after its close frame is sent, so an
empty registry means no socket uvicorn could still cut. `dalston gateway` drains the sessions it
relays with the same registry (`dalston.gateway.client_session`): told, finished, then closed 1001.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from starlette.types import Message
from starlette.websockets import WebSocket

from dalston.draining import wait_until
from dalston.engine_sdk.events import SessionDraining
from dalston.realtime import native_protocol
from dalston.server.realtime_openai import DRAIN_DEADLINE, render_draining

log = logging.getLogger("dalston.realtime")

FLUSH_TIMEOUT_S = 15.0  # after the deadline: final decode of what each session received


class DrainableSession(Protocol):
    session_id: str

    async def notify_draining(self, deadline: float) -> None:
        """Tell the client the server drains until `deadline` (event-loop time)."""

    def expire(self) -> None:
        """The deadline passed: stop reading, flush finals, close with 1001."""


class OpenSessions:
    """The realtime sessions open on this server, and the drain that ends them."""

    def __init__(self) -> None:
        self._open: set[DrainableSession] = set()
        self.deadline: float | None = None  # event-loop time; set once draining started
        self.expired = False

    def __len__(self) -> int:
        return len(self._open)

    async def add(self, session: DrainableSession) -> None:
        """Register a session; one that opens while draining is told at once (and expired if late)."""
        self._open.add(session)
        if self.deadline is not None:
            await session.notify_draining(self.deadline)
        if self.expired:
            session.expire()

    def discard(self, session: DrainableSession) -> None:
        self._open.discard(session)

    async def drain(self, timeout_s: float, *, abort: Callable[[], bool] = lambda: False) -> None:
        """Warn, wait up to `timeout_s` for sessions to end, then expire the rest and wait for their flush.

        `abort()` true (a second SIGTERM/SIGINT: uvicorn's force exit) stops waiting at once.
        """
        if not self._open:
            return
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        self.deadline = loop.time() + timeout_s
        log.info("realtime_draining sessions=%d deadline_s=%.1f", len(self._open), timeout_s)
        await asyncio.gather(*(s.notify_draining(self.deadline) for s in list(self._open)), return_exceptions=True)
        await self._wait_empty(self.deadline, abort)
        if self._open and not abort():
            self.expired = True
            log.info("realtime_drain_deadline sessions=%d action=flush_and_close_1001", len(self._open))
            for session in list(self._open):
                session.expire()
            await self._wait_empty(loop.time() + FLUSH_TIMEOUT_S, abort)
        if self._open:
            log.warning("realtime_drain_incomplete sessions=%s reason=%s", ",".join(s.session_id for s in self._open),
                        "forced_exit" if abort() else f"flush_exceeded_{FLUSH_TIMEOUT_S:g}s")
        log.info("realtime_drained seconds=%.2f left=%d", time.monotonic() - started, len(self._open))

    async def _wait_empty(self, until: float, abort: Callable[[], bool]) -> None:
        await wait_until(lambda: not self._open, until, abort)


class DrainNotice:
    """The one `session.draining` a client is told: once the drain has started *and* its session has
    begun (the protocol's first event went out), whichever comes second. Shared by an engine's
    sessions (`dalston.server.realtime`) and the sessions a gateway relays (`dalston.gateway.client_session`)."""

    def __init__(self) -> None:
        self.began = False
        self._deadline: float | None = None  # event-loop time; set when the drain starts
        self._told = False

    def draining(self, deadline: float) -> SessionDraining | None:
        """The drain started: the notice to send now, or None (not begun yet, or already told)."""
        self._deadline = deadline
        return self._due()

    def begin(self) -> SessionDraining | None:
        """The session's first event went out: the notice that was waiting for it, if any."""
        self.began = True
        return self._due()

    def _due(self) -> SessionDraining | None:
        if not self.began or self._deadline is None or self._told:
            return None
        self._told = True
        return SessionDraining(max(0.0, self._deadline - asyncio.get_running_loop().time()))


def render_notice(event: SessionDraining, protocol: str) -> dict[str, Any]:
    """`session.draining` in the client's protocol ("openai" or "native")."""
    return render_draining(event) if protocol == "openai" else native_protocol.render(event)


async def receive_until(ws: WebSocket, expired: asyncio.Event) -> Message:
    """`ws.receive()`, or `{"type": DRAIN_DEADLINE}` once `expired` is set (the message is kept if both)."""
    if expired.is_set():
        return {"type": DRAIN_DEADLINE}
    receiving = asyncio.ensure_future(ws.receive())
    expiring = asyncio.ensure_future(expired.wait())
    try:
        await asyncio.wait({receiving, expiring}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        expiring.cancel()
        if not receiving.done():
            receiving.cancel()  # uvicorn keeps an unread message queued: nothing is lost
    if receiving.done() and not receiving.cancelled():
        return dict(receiving.result())
    return {"type": DRAIN_DEADLINE}
