"""The realtime WebSocket endpoint: `GET /v1/realtime?model=ID` (see docs/REALTIME.md).

Two protocols share this session handler (auth, model check, readiness, session slots, idle
timeout, close codes): the native one below, and OpenAI's Realtime transcription protocol
(`?intent=transcription`, `dalston.server.realtime_openai`). Engines emit typed events; finals are cut
into sentences (`dalston.segmenting.sentence_events`, as `verbose_json` segments are); each
protocol renders them (`dalston.realtime.native_protocol`, `dalston.realtime.openai_protocol`).

Native: one connection is one session. The client sends a JSON `session.config`, then binary audio frames,
then `{"type": "session.end"}` (or just closes); the server answers with JSON events. Each session
owns a `StreamingSession` from the engine and holds one slot of the server's `Admission` budget
(shared with batch requests) for its whole life; its audio is handed to a worker task that runs
`accept` / `finish` on the admission executor, strictly in order, so a slow decode never blocks the
event loop (other sessions, `/health`) and never reorders events. Auth, model and readiness checks
are the HTTP routes' own (`dalston.admission`), and their `ApiError` becomes an `error` event with
the same `code` and a close code from `dalston.errors.CLOSE_CODES`.

WHY every refusal accepts first and then closes with a 4xxx code: a WebSocket closed before the
handshake completes reaches the client as a bare HTTP 403, which cannot say *why*; after accepting,
the client gets an `error` event with a machine-readable `code` and a close code it can branch on.
The exception is a gateway (`Dalston-Refuse-In-Handshake: 1`): it is told the HTTP status and JSON
error in the handshake, so a full or draining engine costs it nothing but a try of the next instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from dalston.admission import HANDSHAKE_REFUSAL_HEADER, SessionSlot, authenticate, resolve_model
from dalston.audio import SAMPLE_RATE
from dalston.engine_sdk import Final, StreamEvent, StreamingEngine, StreamingSession
from dalston.engine_sdk.events import SessionDraining
from dalston.errors import ApiError
from dalston.realtime import native_protocol
from dalston.segmenting import sentence_events
from dalston.realtime.openai_protocol import OpenAIError
from dalston.server.realtime_audio import AudioConverter, InvalidFrame
from dalston.server.realtime_openai import (
    DRAIN_DEADLINE,
    OpenAISession,
    is_openai_event,
    render_error,
    wants_beta,
    wants_openai,
)
from dalston.server.realtime_drain import DrainNotice, receive_until, render_notice
from dalston.server.state import ServerState

log = logging.getLogger("dalston.realtime")

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # drained after SIGTERM: finals for what was received were sent (realtime_drain)
CLOSE_BAD_MESSAGE = 4400
CLOSE_IDLE_TIMEOUT = 4408
CLOSE_INTERNAL = 4500

ENCODINGS = {"pcm16": 2, "float32": 4}  # bytes per sample (native protocol)
SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_QUEUE_FRAMES = 256  # backpressure: stop reading the socket when this many frames wait for decode
#: A new session that finds every slot taken waits this long for one to be freed before 4029. WHY:
#: a client that drops and reconnects at once can reach the server before the dropped session's
#: task has run on its disconnect (tens of ms on a loaded CPU); the slot is freed at that moment,
#: and the waiting session takes it then instead of being refused.
SLOT_WAIT_S = 1.0


class ProtocolError(Exception):
    """A client mistake: sent as an `error` event, then the socket is closed with `close_code`."""

    def __init__(self, code: str, message: str, close_code: int = CLOSE_BAD_MESSAGE) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code


@dataclass(frozen=True)
class SessionConfig:
    sample_rate: int
    encoding: str
    language: str | None


def parse_session_config(text: str, languages: list[str]) -> SessionConfig:
    """Validate the first message; every field error names the field and the allowed values."""
    message = _parse_json(text)
    if message.get("type") != "session.config":
        raise ProtocolError("config_required", f"the first message must be session.config, got type={message.get('type')!r}")
    unknown = sorted(set(message) - {"type", "sample_rate", "encoding", "language"})
    if unknown:
        raise ProtocolError("invalid_config", f"session.config: unknown field(s) {', '.join(unknown)}")
    rate = message.get("sample_rate", SAMPLE_RATE)
    if not isinstance(rate, int) or isinstance(rate, bool) or rate not in SAMPLE_RATES:
        raise ProtocolError("invalid_sample_rate",
                            f"session.config.sample_rate={rate!r}: must be one of {', '.join(map(str, SAMPLE_RATES))}")
    encoding = message.get("encoding", "pcm16")
    if encoding not in ENCODINGS:
        raise ProtocolError("invalid_encoding", f"session.config.encoding={encoding!r}: must be pcm16 or float32")
    language = message.get("language")
    if language is not None:
        if not isinstance(language, str) or not (2 <= len(language) <= 3 and language.isalpha()):
            raise ProtocolError("invalid_language", f"session.config.language={language!r}: must be an ISO 639-1 code or null")
        language = language.lower()
        if "multilingual" not in languages and language not in languages:
            raise ProtocolError("unsupported_language",
                                f"session.config.language={language!r}: this model supports {', '.join(languages)}")
    return SessionConfig(rate, encoding, language)


def _parse_json(text: str) -> dict[str, Any]:
    try:
        message = json.loads(text)
    except ValueError:
        raise ProtocolError("invalid_json", f"text frames must be JSON objects; got {text[:40]!r}") from None
    if not isinstance(message, dict):
        raise ProtocolError("invalid_json", "text frames must be JSON objects")
    return message


def realtime_routes(state: ServerState) -> list[BaseRoute]:
    """The `/v1/realtime` WebSocket route for a server whose engine is a `StreamingEngine`."""
    engine = state.engine
    assert isinstance(engine, StreamingEngine), f"{state.spec.id} has no realtime engine"

    async def endpoint(websocket: WebSocket) -> None:
        # OpenAI's browser SDK offers `realtime, openai-insecure-api-key.<key>`: answer `realtime`
        subprotocol = "realtime" if "realtime" in (websocket.scope.get("subprotocols") or ()) else None
        handler = _SessionHandler(websocket, state, engine)
        if wants_openai(websocket.query_params, websocket.headers, subprotocol):
            handler.protocol = "openai"
        if websocket.headers.get(HANDSHAKE_REFUSAL_HEADER) == "1":  # a gateway, which can try another instance
            try:
                await handler.admit()
            except ApiError as exc:
                log.info("realtime_refused_in_handshake session_id=%s code=%s status=%d", handler.session_id,
                         exc.code, exc.status)
                with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
                    await websocket.send_denial_response(exc.response())
                return
            try:
                await websocket.accept(subprotocol=subprotocol)
            except BaseException:
                handler.release_slot()
                raise
        else:
            await websocket.accept(subprotocol=subprotocol)
            try:
                await handler.admit()
            except ApiError as exc:
                await handler.fail(exc.code, exc.message, exc.close_code)
                return
        await handler.run()

    return [WebSocketRoute("/v1/realtime", endpoint)]


class _SessionHandler:
    def __init__(self, websocket: WebSocket, state: ServerState, engine: StreamingEngine) -> None:
        self.ws = websocket
        self.state = state
        self.engine = engine
        self.limits = state.realtime_limits
        self.executor = state.admission.executor
        self.session_id = "rt_" + uuid.uuid4().hex[:16]
        self._send_lock = asyncio.Lock()
        self._closed = False
        self._slot: SessionSlot | None = None
        self.audio_seconds = 0.0
        self.finals = 0
        self.protocol = "native"  # or "openai": decides how errors and events are rendered
        self.served = {state.spec.id, *state.registry.aliases_for(state.spec.id)}  # names of this server's model
        self._notice = DrainNotice()  # `session.draining`, once the server drains and the session began
        self._expired = asyncio.Event()  # the drain deadline passed: stop reading, flush, close 1001

    # -------------------------------------------------------------- sending
    async def send(self, message: dict[str, Any]) -> None:
        if self._closed:
            return
        async with self._send_lock:
            try:
                await self.ws.send_json(message)
            except (WebSocketDisconnect, RuntimeError):
                self._closed = True

    def release_slot(self) -> None:
        """Give the session slot back; idempotent.

        WHY before the close frame goes out: a client that has seen its session close may reconnect
        at once, and must not be refused with 4029 by a slot that is only released afterwards.
        """
        if self._slot is not None:
            self._slot.release()

    async def fail(self, code: str, message: str, close_code: int) -> None:
        self.release_slot()
        log.info("realtime_error session_id=%s code=%s close_code=%d message=%r", self.session_id, code, close_code, message)
        await self.send(render_error(code, message) if self.protocol == "openai"
                        else {"type": "error", "code": code, "message": message})
        await self.close(close_code)

    async def notify_draining(self, deadline: float) -> None:
        """SIGTERM: tell the client (`session.draining`) once its session has begun (`realtime_drain`)."""
        await self._send_notice(self._notice.draining(deadline))

    def expire(self) -> None:
        self._expired.set()

    async def began(self) -> None:
        """The protocol sent its first event; a draining notice that came earlier follows it now."""
        await self._send_notice(self._notice.begin())

    async def _send_notice(self, event: SessionDraining | None) -> None:
        if event is not None:
            await self.send(render_notice(event, self.protocol))

    async def close(self, code: int) -> None:
        self.release_slot()
        if self._closed or self.ws.application_state == WebSocketState.DISCONNECTED:
            self._closed = True
            return
        self._closed = True
        try:
            await self.ws.close(code, "server shutting down" if code == CLOSE_GOING_AWAY else None)
        except RuntimeError:
            pass

    # -------------------------------------------------------------- session
    async def admit(self) -> None:
        """Key, intent, model, readiness, then a slot of the admission budget; `ApiError` if any fails."""
        ws = self.ws
        authenticate(self.state.keys, ws.headers, ws.query_params, ws.scope.get("subprotocols", ()))
        intent = ws.query_params.get("intent")
        if intent is not None and intent != "transcription":
            raise ApiError(400, f"intent={intent!r}: dalston serves transcription sessions only "
                                "(?intent=transcription)", "unsupported_intent", param="intent")
        resolve_model(self.state.registry, ws.query_params.get("model"), served=self.state.spec.id)
        self.state.require_ready()
        self._slot = await self.state.admission.open_session(wait_s=SLOT_WAIT_S)

    async def run(self) -> None:
        """Serve an admitted session to its end; the slot is given back however it ends."""
        spec = self.state.spec
        started = time.monotonic()
        sessions = self.state.sessions
        try:
            await sessions.add(self)
            await self._serve()
            if self._expired.is_set():
                await self.close(CLOSE_GOING_AWAY)
        except (ProtocolError, OpenAIError) as exc:
            await self.fail(exc.code, exc.message, exc.close_code or CLOSE_BAD_MESSAGE)
        except WebSocketDisconnect:
            self._closed = True
        except Exception as exc:  # an engine bug: report it to this client only, keep the server up
            log.exception("realtime_internal_error session_id=%s", self.session_id)
            await self.fail("internal_error", f"internal error: {type(exc).__name__}", CLOSE_INTERNAL)
        finally:
            self.release_slot()
            sessions.discard(self)
            log.info("realtime_session_closed session_id=%s model=%s audio_seconds=%.2f finals=%d wall_seconds=%.2f",
                     self.session_id, spec.id, self.audio_seconds, self.finals, time.monotonic() - started)

    async def _receive(self, busy: Callable[[], bool] | None = None) -> Message:
        """The next message; idle_timeout after `idle_timeout_s` of silence, unless `busy()` says the
        server still owes the client events (an OpenAI client waits for them without sending)."""
        while True:
            try:
                message = await asyncio.wait_for(receive_until(self.ws, self._expired), timeout=self.limits.idle_timeout_s)
                break
            except asyncio.TimeoutError:
                if busy is not None and busy():
                    continue
                raise ProtocolError("idle_timeout", f"no message for {self.limits.idle_timeout_s:g} s; closing the "
                                    "session", CLOSE_IDLE_TIMEOUT) from None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        return message

    async def _serve(self) -> None:
        spec = self.state.spec
        if self.protocol == "openai":
            await OpenAISession(self, beta=wants_beta(self.ws.headers)).serve(None)
            return
        first = await self._receive()
        if first["type"] == DRAIN_DEADLINE:  # drained before the client configured anything: nothing to flush
            return
        if is_openai_event(first.get("text")):  # an OpenAI client that connected with only ?model=
            self.protocol = "openai"
            await OpenAISession(self, beta=wants_beta(self.ws.headers)).serve(first["text"])
            return
        if first.get("text") is None:
            raise ProtocolError("config_required", "send session.config (a JSON text frame) before any audio")
        config = parse_session_config(first["text"], spec.capabilities.languages)
        converter = AudioConverter(config.sample_rate, config.encoding)
        loop = asyncio.get_running_loop()
        session: StreamingSession = await loop.run_in_executor(self.executor, self.engine.open_session, config.language)
        await self.send({"type": "session.begin", "session_id": self.session_id, "model": spec.id,
                         "sample_rate": config.sample_rate, "encoding": config.encoding, "language": config.language,
                         "model_sample_rate": SAMPLE_RATE, "max_frame_bytes": self.limits.max_frame_bytes,
                         "idle_timeout": self.limits.idle_timeout_s})
        await self.began()
        queue: asyncio.Queue[np.ndarray | None] = asyncio.Queue(maxsize=_QUEUE_FRAMES)
        worker = asyncio.create_task(self._work(session, queue))
        max_seconds = float(spec.capabilities.max_audio_duration)
        try:
            while True:
                if worker.done():  # the worker failed: surface its exception
                    worker.result()
                    return
                message = await self._receive()
                if message["type"] == DRAIN_DEADLINE:  # SIGTERM deadline: as if the client sent session.end
                    tail = converter.flush()
                    if len(tail):
                        await queue.put(tail)
                    break
                data = message.get("bytes")
                if data is not None:
                    if len(data) > self.limits.max_frame_bytes:
                        raise ProtocolError("frame_too_large",
                                            f"binary frame of {len(data)} bytes exceeds {self.limits.max_frame_bytes} bytes")
                    try:
                        samples = converter.convert(data)
                    except InvalidFrame as exc:
                        raise ProtocolError("invalid_frame", str(exc)) from None
                    self.audio_seconds += len(data) / converter.width / config.sample_rate
                    if self.audio_seconds > max_seconds:
                        raise ProtocolError("audio_too_long", f"session exceeded {max_seconds:g} s of audio "
                                            "(capabilities.max_audio_duration)")
                    if len(samples):
                        await queue.put(samples)
                    continue
                control = _parse_json(message.get("text") or "")
                kind = control.get("type")
                if kind == "session.end":
                    tail = converter.flush()
                    if len(tail):
                        await queue.put(tail)
                    break
                if kind == "session.config":
                    raise ProtocolError("config_repeated", "session.config may only be sent once, as the first message")
                raise ProtocolError("unknown_message", f"unknown message type {kind!r}; expected binary audio or session.end")
        except BaseException:
            worker.cancel()
            raise
        await queue.put(None)
        await worker
        self.release_slot()  # decoding is over: the next session may start before this one's goodbye
        await self.send({"type": "session.end", "session_id": self.session_id,
                         "duration": round(self.audio_seconds, 3), "finals": self.finals})
        await self.close(CLOSE_GOING_AWAY if self._expired.is_set() else CLOSE_NORMAL)

    async def _work(self, session: StreamingSession, queue: asyncio.Queue[np.ndarray | None]) -> None:
        """Decode in order; drain whatever is queued into one `accept` (the policy steps by stream time)."""
        loop = asyncio.get_running_loop()
        while True:
            chunks: list[np.ndarray] = []
            item = await queue.get()
            done = item is None
            if item is not None:
                chunks.append(item)
            while not done and not queue.empty():
                item = queue.get_nowait()
                if item is None:
                    done = True
                else:
                    chunks.append(item)
            if chunks:
                audio = np.concatenate(chunks)
                events = await loop.run_in_executor(self.executor, session.accept, audio)
                await self._emit(events)
            if done:
                await self._emit(await loop.run_in_executor(self.executor, session.finish))
                return

    async def _emit(self, events: list[StreamEvent]) -> None:
        for event in sentence_events(events):
            if isinstance(event, Final):
                self.finals += 1
            await self.send(native_protocol.render(event))
