"""An OpenAI Realtime transcription session on `/v1/realtime` (docs/REALTIME.md, "OpenAI protocol").

Runs inside the same `_SessionHandler` as the native protocol (auth, model check, readiness,
session slot, idle timeout and close codes are shared); only the messages differ. The receive loop
parses client events and converts base64 audio to 16 kHz float32 on the event loop (cheap); a
worker task feeds the engine on the thread pool strictly in order and translates its typed events
with `OpenAITranslator`.

WHY a commit or a clear opens a fresh engine session: an OpenAI item is the audio between two
commits, and finishing the engine session is the one way every family has to flush its last words
(`StreamingSession.finish`); a clear must forget audio the engine may already hold.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import numpy as np

from dalston.engine_sdk import SAMPLE_RATE, Final, StreamEvent, StreamingSession
from dalston.engine_sdk.events import SessionDraining
from dalston.realtime.openai_protocol import (
    BETA,
    CLIENT_EVENTS,
    GA,
    MIN_COMMIT_S,
    EventIds,
    OpenAIError,
    OpenAITranslator,
    TranscriptionSettings,
    apply_update,
    decode_append,
    draining_event,
    error_event,
    session_object,
)
from dalston.segmenting import sentence_events
from dalston.server.realtime_audio import AudioConverter, InvalidFrame

log = logging.getLogger("dalston.realtime")

_CLOSE_INTERNAL = 4500  # as dalston.server.realtime.CLOSE_INTERNAL
_QUEUE_ITEMS = 256  # as the native protocol: beyond this, stop reading the socket (TCP backpressure)
_IDS = EventIds()
#: The message type `_SessionHandler._receive` returns once the SIGTERM drain deadline passed.
DRAIN_DEADLINE = "dalston.drain_deadline"


def wants_openai(query: Any, headers: Any, subprotocol: str | None) -> bool:
    """OpenAI clients say so with `?intent=`, the `realtime` subprotocol, or the beta header."""
    return "intent" in query or subprotocol == "realtime" or "realtime" in headers.get("openai-beta", "")


def wants_beta(headers: Any) -> bool:
    """The beta SDK client sends `OpenAI-Beta: realtime=v1`: answer with beta event names from the start."""
    return "realtime=v1" in headers.get("openai-beta", "")


def is_openai_event(text: str | None) -> bool:
    """A first message that is an OpenAI client event (a client that connected with only `?model=`)."""
    try:
        message = json.loads(text or "")
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("type") in CLIENT_EVENTS


def render_error(code: str, message: str) -> dict[str, Any]:
    """A fatal refusal (unauthorized, too many sessions, ...) as an OpenAI `error` event."""
    return error_event(_IDS, OpenAIError(code, message, error_type="invalid_request_error"
                                         if code not in ("internal_error", "model_not_ready", "shutting_down")
                                         else "server_error"))


def render_draining(event: SessionDraining) -> dict[str, Any]:
    """The server's `session.draining` notice in the OpenAI protocol (an informational event, not `error`)."""
    return draining_event(_IDS, event)


class OpenAISession:
    """The OpenAI protocol for one connection.

    `handler` is the connection's `dalston.server.realtime._SessionHandler` (typed Any: that module
    imports this one): it owns the socket (`send`, `_receive`), limits, executor, state and slot.
    """

    def __init__(self, handler: Any, *, beta: bool) -> None:
        self.h = handler
        self.spec = handler.state.spec
        self.beta = beta
        self.settings = TranscriptionSettings()
        self.translator = OpenAITranslator(_IDS, beta=beta)
        self.converter: Any = None
        self.worker: asyncio.Task[None] | None = None
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=_QUEUE_ITEMS)
        self.max_seconds = float(self.spec.capabilities.max_audio_duration)
        self.working = False

    # ------------------------------------------------------------------ sending
    async def send_session(self, kind: str) -> None:
        names = BETA if self.beta else GA
        await self.h.send({"type": names[kind], "event_id": _IDS.event(),
                           "session": session_object(self.settings, self.h.session_id, self.spec.id, self.beta)})

    async def error(self, exc: OpenAIError, client_event_id: str | None) -> None:
        log.info("realtime_error session_id=%s code=%s close_code=none param=%s", self.h.session_id, exc.code, exc.param)
        await self.h.send(error_event(_IDS, exc, client_event_id))

    # ------------------------------------------------------------------ receive loop
    async def serve(self, first_text: str | None) -> None:
        """Until the client leaves; a fatal `OpenAIError` (with `close_code`) propagates to the handler."""
        await self.send_session("created")
        await self.h.began()
        pending = [first_text] if first_text is not None else []
        try:
            while True:
                if self.worker is not None and self.worker.done():
                    self.worker.result()  # it failed and closed the session (internal_error)
                    return
                text = pending.pop() if pending else None
                if text is None:
                    message = await self.h._receive(busy=self.busy)
                    if message["type"] == DRAIN_DEADLINE:
                        await self.drain()
                        return
                    if message.get("bytes") is not None:
                        await self.error(OpenAIError("invalid_frame", "binary frames are not part of the OpenAI "
                                                     "protocol: send audio as input_audio_buffer.append with base64"),
                                         None)
                        continue
                    text = message.get("text") or ""
                try:
                    event = json.loads(text)
                except ValueError:
                    event = None
                if not isinstance(event, dict):
                    await self.error(OpenAIError("invalid_json", f"client events must be JSON objects; got {text[:40]!r}"),
                                     None)
                    continue
                event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
                try:
                    await self.handle(event)
                except OpenAIError as exc:
                    if exc.close_code is not None:
                        raise
                    await self.error(exc, event_id)
        finally:
            if self.worker is not None and not self.worker.done():
                self.worker.cancel()

    async def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind in ("session.update", "transcription_session.update"):
            await self.update(event)
        elif kind in ("input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear"):
            if self.worker is None:
                raise OpenAIError("session_not_configured", f"{kind} before session.update: configure the "
                                  "transcription session first (session.type 'transcription')", "type")
            if kind == "input_audio_buffer.append":
                await self.append(event)
            else:
                await self._flush_converter()
                await self.queue.put((kind.rsplit(".", 1)[1], event.get("event_id")))
        else:
            raise OpenAIError("unknown_event", f"unknown or unsupported client event type {kind!r} in a transcription "
                              f"session; supported: {', '.join(CLIENT_EVENTS)}", "type")

    async def update(self, event: dict[str, Any]) -> None:
        if event.get("type") == "transcription_session.update":
            self.beta = self.translator.beta = True
        new = apply_update(event, self.settings, list(self.spec.capabilities.languages))
        if new.model is not None and new.model not in self.h.served:
            raise OpenAIError("model_not_served", f"transcription model {new.model!r} is not served here; this server "
                              f"serves {self.spec.id!r} (use a gateway to reach other models)",
                              "session.input_audio_transcription.model" if self.beta
                              else "session.audio.input.transcription.model")
        old, self.settings = self.settings, new
        if self.converter is None or new.input_format != old.input_format:
            await self._flush_converter()
            fmt = new.input_format
            self.converter = AudioConverter(fmt.rate, fmt.encoding)
        if self.worker is None:
            self.worker = asyncio.create_task(self.work())
            await self.queue.put(("open", new))
        elif new.engine_affecting() != old.engine_affecting():
            await self.queue.put(("open", new))
        await self.send_session("updated")

    async def append(self, event: dict[str, Any]) -> None:
        data = decode_append(event)
        limit = self.h.limits.max_frame_bytes
        if len(data) > limit:
            raise OpenAIError("frame_too_large", f"input_audio_buffer.append carries {len(data)} bytes of audio; at "
                              f"most {limit} per event", "audio")
        try:
            samples = self.converter.convert(data)
        except InvalidFrame as exc:
            raise OpenAIError("invalid_audio", f"input_audio_buffer.append: {exc}", "audio") from None
        self.h.audio_seconds += len(data) / self.converter.width / self.converter.rate
        if self.h.audio_seconds > self.max_seconds:
            raise OpenAIError("audio_too_long", f"session exceeded {self.max_seconds:g} s of audio "
                              "(capabilities.max_audio_duration)", "audio", close_code=4400)
        if len(samples):
            await self.queue.put(("audio", samples))

    async def _flush_converter(self) -> None:
        """End the resampler's stream (its last samples) before a commit, clear or format change."""
        if self.converter is None:
            return
        tail = self.converter.flush()
        fmt = self.settings.input_format
        self.converter = AudioConverter(fmt.rate, fmt.encoding)
        if len(tail):
            await self.queue.put(("audio", tail))

    async def drain(self) -> None:
        """SIGTERM deadline: commit what was appended (its transcription completes), then stop the worker."""
        if self.worker is None:
            return
        await self._flush_converter()
        await self.queue.put(("drain", None))
        await self.worker

    # ------------------------------------------------------------------ worker
    def busy(self) -> bool:
        """Work queued or running: the client is waiting for our events, so it is not idle."""
        if self.worker is None or self.worker.done():
            return False
        return self.working or not self.queue.empty()

    async def work(self) -> None:
        """Feed the engine in order; every commit/clear/settings change starts a new engine session."""
        loop = asyncio.get_running_loop()
        executor = self.h.executor
        engine = self.h.state.engine
        session: StreamingSession | None = None
        offset = 0.0  # stream seconds where `session` started
        fed = 0  # samples fed to `session`
        total = 0  # samples fed in this connection
        carry: tuple[str, Any] | None = None
        settings = self.settings  # what the current engine session was opened with

        async def emit(events: list[StreamEvent]) -> None:
            for event in sentence_events(events):  # one final per sentence, as on the native protocol
                if isinstance(event, Final):
                    self.h.finals += 1
                for body in self.translator.translate(event, offset):
                    await self.h.send(body)

        async def finish() -> None:
            if session is not None and fed:
                await emit(await loop.run_in_executor(executor, session.finish))

        try:
            while True:
                self.working = False
                kind, value = carry if carry is not None else await self.queue.get()
                self.working = True
                carry = None
                if kind == "audio":
                    chunks = [value]
                    while not self.queue.empty():
                        item = self.queue.get_nowait()
                        if item[0] != "audio":
                            carry = item
                            break
                        chunks.append(item[1])
                    audio = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
                    assert session is not None
                    await emit(await loop.run_in_executor(executor, session.accept, audio))
                    fed += len(audio)
                    total += len(audio)
                    continue
                now = total / SAMPLE_RATE
                if kind == "open":
                    await finish()
                    settings = value
                    self.translator.manual = settings.turn is None
                elif kind in ("commit", "drain"):  # drain: the server's last commit before closing 1001
                    if self.translator.item is None and now - self.translator.last_end < MIN_COMMIT_S:
                        if kind == "drain":
                            return
                        await self.error(OpenAIError("input_audio_buffer_commit_empty", "buffer too small: commit "
                                                     f"needs at least {MIN_COMMIT_S * 1000:g} ms of audio; it has "
                                                     f"{max(0.0, now - self.translator.last_end) * 1000:.0f} ms"),
                                         value)
                        continue
                    done = self.translator.items_done
                    await finish()
                    if self.translator.manual or self.translator.items_done == done:
                        for body in self.translator.commit(now):
                            await self.h.send(body)
                    if kind == "drain":
                        return
                else:  # clear
                    for body in self.translator.clear(now):
                        await self.h.send(body)
                session = await loop.run_in_executor(executor, engine.open_session, settings.language, settings.turn)
                offset, fed = now, 0
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an engine bug: this session only; the client may be waiting silently
            log.exception("realtime_internal_error session_id=%s", self.h.session_id)
            for body in self.translator.failed(f"internal error: {type(exc).__name__}"):
                await self.h.send(body)
            await self.h.fail("internal_error", f"internal error: {type(exc).__name__}", _CLOSE_INTERNAL)
