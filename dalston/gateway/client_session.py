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
from dalston.server.realtime_drain import DrainNotice, receive_until, render_notice

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
        self.notice = DrainNotice()  # `session.draining`, once the gateway drains and the session began
        self.expired = asyncio.Event()  # the drain deadline passed: stop relaying, close 1001
        self._lock = asyncio.Lock()
        self._flush_ids: tuple[str, str] | None = None  # event ids of the OpenAI flush requests

    @property
    def began(self) -> bool:
        """The session's first event reached the client."""
        return self.notice.began

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
        await self._tell(self.notice.draining(deadline))

    def expire(self) -> None:
        self.expired.set()

    async def begin(self) -> None:
        """The session's first event reached the client; a draining notice that came earlier follows it."""
        await self._tell(self.notice.begin())

    async def _tell(self, event: SessionDraining | None) -> None:
        if event is None:
            return
        try:
            await self.send_json(render_notice(event, self.protocol))
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the client left meanwhile: its relay ends on its own

    async def receive(self) -> Message:
        """The client's next message, or `{"type": DRAIN_DEADLINE}` once the drain deadline passed."""
        return await receive_until(self.ws, self.expired)

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
