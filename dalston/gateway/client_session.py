"""The client side of one realtime session the gateway relays, as the SIGTERM drain sees it.

A gateway replica that is stopped (a rolling update, a node drain) must not cut the sessions it
relays: it drains them as an engine drains its own (`dalston.server.realtime_drain.OpenSessions`,
the same registry): each is told `session.draining` in its protocol once its session has begun
(the engine's first event went through, or the gateway's own `session.created`), may go on until
the deadline and end as usual (the engine's close code and reason are relayed), and at the
deadline is closed with 1001 "going away" so the client reconnects through another replica.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from dalston.engine_sdk.events import SessionDraining
from dalston.realtime import native_protocol
from dalston.server.realtime_openai import DRAIN_DEADLINE, render_draining

CLOSE_GOING_AWAY = 1001
GOING_AWAY_REASON = "going away: gateway shutting down, reconnect"
#: After the deadline: how long the engine may take to finish a session (within the drain's own
#: `realtime_drain.FLUSH_TIMEOUT_S`, after which uvicorn's shutdown closes what is left).
FLUSH_TIMEOUT_S = 10.0


class ClientSession:
    """One client WebSocket: sends are serialised (the relay and the drain notice share the socket)."""

    def __init__(self, websocket: WebSocket, *, openai: bool) -> None:
        self.ws = websocket
        self.session_id = "gw_" + uuid.uuid4().hex[:16]
        self.protocol = "openai" if openai else "native"  # how a draining notice is rendered
        self.began = False
        self.expired = asyncio.Event()  # the drain deadline passed: stop relaying, close 1001
        self._deadline: float | None = None  # event-loop time; set when the gateway drains
        self._told = False
        self._lock = asyncio.Lock()
        self._flush_ids: tuple[str, str] | None = None  # event ids of the OpenAI flush requests

    def flush_requests(self) -> list[str]:
        """The messages that ask the engine to finish what it received (none before the session began)."""
        if not self.began:
            return []
        if self.protocol == "native":
            return [json.dumps({"type": "session.end"})]
        self._flush_ids = (f"{self.session_id}_drain_commit", f"{self.session_id}_drain_end")
        return [json.dumps({"type": "input_audio_buffer.commit", "event_id": self._flush_ids[0]}),
                json.dumps({"type": "input_audio_buffer.clear", "event_id": self._flush_ids[1]})]

    def flush_answer(self, text: str) -> tuple[bool, bool]:
        """For an engine event after the OpenAI flush was asked: (drop it, the flush is complete).

        Dropped: the answers to the gateway's own requests (`cleared`; an `error` naming their event
        ids, e.g. `input_audio_buffer_commit_empty`), which the client did not ask for.
        """
        if self._flush_ids is None:
            return False, False
        try:
            event = json.loads(text)
        except ValueError:
            return False, False
        if not isinstance(event, dict):
            return False, False
        if event.get("type") == "input_audio_buffer.cleared":
            return True, True
        error = event.get("error")
        if event.get("type") == "error" and isinstance(error, dict) and error.get("event_id") in self._flush_ids:
            return True, error.get("event_id") == self._flush_ids[1]
        return False, False

    async def send(self, message: str | bytes) -> None:
        async with self._lock:
            if isinstance(message, bytes):
                await self.ws.send_bytes(message)
            else:
                await self.ws.send_text(message)

    async def send_json(self, event: dict[str, Any]) -> None:
        async with self._lock:
            await self.ws.send_json(event)

    async def notify_draining(self, deadline: float) -> None:
        """The gateway drains until `deadline`: tell the client now, or once its session has begun."""
        self._deadline = deadline
        if self.began:
            await self._tell()

    def expire(self) -> None:
        self.expired.set()

    async def begin(self) -> None:
        """The session's first event reached the client; a draining notice that came earlier follows it."""
        if not self.began:
            self.began = True
            await self._tell()

    async def _tell(self) -> None:
        if self._deadline is None or self._told:
            return
        self._told = True
        event = SessionDraining(max(0.0, self._deadline - asyncio.get_running_loop().time()))
        body = render_draining(event) if self.protocol == "openai" else native_protocol.render(event)
        try:
            await self.send_json(body)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the client left meanwhile: its relay ends on its own

    async def receive(self) -> Message:
        """The client's next message, or `{"type": DRAIN_DEADLINE}` once the drain deadline passed."""
        if self.expired.is_set():
            return {"type": DRAIN_DEADLINE}
        receiving = asyncio.ensure_future(self.ws.receive())
        expiring = asyncio.ensure_future(self.expired.wait())
        try:
            await asyncio.wait({receiving, expiring}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            expiring.cancel()
            if not receiving.done():
                receiving.cancel()
        if receiving.done() and not receiving.cancelled():
            return dict(receiving.result())
        return {"type": DRAIN_DEADLINE}

    async def close(self, code: int, reason: str | None = None) -> None:
        """Close the client's socket once (a no-op if it is gone)."""
        if self.ws.application_state == WebSocketState.DISCONNECTED or \
                self.ws.client_state == WebSocketState.DISCONNECTED:
            return
        try:
            async with self._lock:
                await self.ws.close(code=code, reason=reason)
        except (RuntimeError, WebSocketDisconnect, OSError):
            pass
