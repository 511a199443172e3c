"""OpenAI's Realtime API, transcription sessions: client events in, server events out (docs/REALTIME.md).

Two halves, both free of I/O so they are unit-testable:

* `apply_update` reads a `session.update` (GA: `session.type = "transcription"`,
  `session.audio.input.{format, transcription, turn_detection, noise_reduction}`) or a beta
  `transcription_session.update` (`input_audio_format`, `input_audio_transcription`,
  `turn_detection`) into `TranscriptionSettings`. Fields a transcription engine cannot honour but
  that are harmless are accepted and ignored (listed in `ACCEPTED_IGNORED`); anything else unknown
  is an `unknown_parameter` error naming the field, as OpenAI does.
* `OpenAITranslator` turns the engine SDK's typed events into OpenAI server events, in OpenAI's
  order per item: `input_audio_buffer.speech_started` -> `speech_stopped` -> `committed` ->
  `conversation.item.added` (beta: `.created`) -> `...transcription.delta`* -> `.completed`.

WHY deltas may arrive before `speech_stopped`: dalston's engines stream, so text exists while the
speaker is still talking. A delta is only ever text no later event revises (`Partial.stable`, or a
`Final`), so a client that appends deltas ends with exactly the `completed` transcript; the item it
belongs to was announced by `speech_started` (`item_id`). With manual commits (turn_detection
null) no item exists before the commit, so that item's text is sent right after `committed`.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from dalston.engine_sdk.events import (Final, Partial, SessionDraining, SpeechStarted, SpeechStopped, StreamEvent,
                                      TurnDetection)

#: Sample rates accepted for `audio/pcm` (OpenAI itself takes only 24000); all resampled to 16 kHz.
PCM_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
DEFAULT_RATE = 24000
#: Engine defaults reported back when the client leaves a server_vad field unset (VadConfig, PolicyConfig).
DEFAULT_THRESHOLD = 0.5
DEFAULT_SILENCE_MS = 800
DEFAULT_PREFIX_MS = 500
#: OpenAI refuses to commit less audio than this.
MIN_COMMIT_S = 0.1

GA = {"created": "session.created", "updated": "session.updated", "item": "conversation.item.added"}
BETA = {"created": "transcription_session.created", "updated": "transcription_session.updated",
        "item": "conversation.item.created"}

CLIENT_EVENTS = ("session.update", "transcription_session.update", "input_audio_buffer.append",
                 "input_audio_buffer.commit", "input_audio_buffer.clear")

#: Accepted and ignored (documented in docs/REALTIME.md): they change nothing a transcription engine does.
ACCEPTED_IGNORED = {
    "session": {"include", "client_secret", "id", "object", "expires_at", "model", "modalities"},
    "audio": {"output"},
    "input": {"noise_reduction"},
    "transcription": {"delay", "keywords", "languages"},
    "turn_detection": {"create_response", "interrupt_response", "idle_timeout_ms"},
    "beta": {"include", "client_secret", "id", "object", "expires_at", "input_audio_noise_reduction", "modalities"},
}


class OpenAIError(Exception):
    """A client mistake reported as an OpenAI `error` event; the session goes on unless `close_code`."""

    def __init__(self, code: str, message: str, param: str | None = None, *, close_code: int | None = None,
                 error_type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param
        self.close_code = close_code
        self.error_type = error_type


@dataclass(frozen=True)
class InputFormat:
    encoding: str  # "pcm16" | "pcmu" | "pcma"
    rate: int

    def to_ga(self) -> dict[str, Any]:
        if self.encoding == "pcm16":
            return {"type": "audio/pcm", "rate": self.rate}
        return {"type": f"audio/{self.encoding}"}

    def to_beta(self) -> str:
        return {"pcm16": "pcm16", "pcmu": "g711_ulaw", "pcma": "g711_alaw"}[self.encoding]


@dataclass(frozen=True)
class TranscriptionSettings:
    """What a session was configured with; `turn=None` means manual commits (turn_detection null)."""

    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    input_format: InputFormat = InputFormat("pcm16", DEFAULT_RATE)
    turn: TurnDetection | None = field(default_factory=TurnDetection)
    noise_reduction: Any = None  # echoed back, not applied

    def engine_affecting(self) -> tuple[Any, ...]:
        """The fields that need a fresh engine session when they change."""
        return (self.language, self.turn)


def _obj(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise OpenAIError("invalid_type", f"{param} must be an object, got {type(value).__name__}", param)
    return value


def _check_keys(body: dict[str, Any], allowed: set[str], ignored: set[str], param: str) -> None:
    unknown = sorted(set(body) - allowed - ignored)
    if unknown:
        raise OpenAIError("unknown_parameter", f"unknown parameter '{param}.{unknown[0]}' for a transcription session",
                          f"{param}.{unknown[0]}")


def _language(value: Any, languages: list[str], param: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not (2 <= len(value) <= 3 and value.isalpha()):
        raise OpenAIError("invalid_value", f"{param}={value!r}: must be an ISO 639-1 code", param)
    code = value.lower()
    if "multilingual" not in languages and code not in languages:
        raise OpenAIError("unsupported_language", f"{param}={code!r}: this model supports {', '.join(languages)}", param)
    return code


def _transcription(body: Any, current: TranscriptionSettings, languages: list[str], param: str) -> TranscriptionSettings:
    if body is None:
        return current
    body = _obj(body, param)
    _check_keys(body, {"model", "language", "prompt"}, ACCEPTED_IGNORED["transcription"], param)
    out = current
    if "model" in body:
        model = body["model"]
        if model is not None and (not isinstance(model, str) or not model):
            raise OpenAIError("invalid_value", f"{param}.model must be a model id or alias", f"{param}.model")
        out = replace(out, model=model)
    if "language" in body:
        out = replace(out, language=_language(body["language"], languages, f"{param}.language"))
    if "prompt" in body:
        prompt = body["prompt"]
        if prompt is not None and not isinstance(prompt, str):
            raise OpenAIError("invalid_type", f"{param}.prompt must be a string", f"{param}.prompt")
        out = replace(out, prompt=prompt or None)
    return out


def _int_field(body: dict[str, Any], key: str, param: str, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise OpenAIError("invalid_value", f"{param}.{key}={value!r}: must be an integer from {low} to {high}",
                          f"{param}.{key}")
    return value


def _turn(body: Any, param: str) -> TurnDetection | None:
    if body is None:
        return None
    body = _obj(body, param)
    kind = body.get("type", "server_vad")
    if kind == "semantic_vad":
        raise OpenAIError("unsupported_turn_detection", f"{param}.type='semantic_vad' is not supported: dalston's "
                          "engines detect turns with an energy VAD; use 'server_vad' or null", f"{param}.type")
    if kind != "server_vad":
        raise OpenAIError("invalid_value", f"{param}.type={kind!r}: must be 'server_vad' (or turn_detection null)",
                          f"{param}.type")
    _check_keys(body, {"type", "threshold", "prefix_padding_ms", "silence_duration_ms", "eagerness"},
                ACCEPTED_IGNORED["turn_detection"], param)
    threshold = body.get("threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not 0.0 <= threshold <= 1.0):
        raise OpenAIError("invalid_value", f"{param}.threshold={threshold!r}: must be a number from 0.0 to 1.0",
                          f"{param}.threshold")
    return TurnDetection(threshold=None if threshold is None else float(threshold),
                         prefix_padding_ms=_int_field(body, "prefix_padding_ms", param, 0, 5000),
                         silence_duration_ms=_int_field(body, "silence_duration_ms", param, 30, 10000))


def _ga_format(body: Any, param: str) -> InputFormat:
    body = _obj(body, param)
    _check_keys(body, {"type", "rate"}, set(), param)
    kind = body.get("type", "audio/pcm")
    if kind == "audio/pcm":
        rate = body.get("rate", DEFAULT_RATE)
        if not isinstance(rate, int) or isinstance(rate, bool) or rate not in PCM_RATES:
            raise OpenAIError("invalid_sample_rate", f"{param}.rate={rate!r}: must be one of "
                              f"{', '.join(map(str, PCM_RATES))} (24000 is OpenAI's)", f"{param}.rate")
        return InputFormat("pcm16", rate)
    if kind in ("audio/pcmu", "audio/pcma"):
        if body.get("rate", 8000) != 8000:
            raise OpenAIError("invalid_sample_rate", f"{param}.rate: G.711 ({kind}) is 8000 Hz", f"{param}.rate")
        return InputFormat(kind.removeprefix("audio/"), 8000)
    raise OpenAIError("invalid_value", f"{param}.type={kind!r}: must be audio/pcm, audio/pcmu or audio/pcma",
                      f"{param}.type")


def apply_update(event: dict[str, Any], current: TranscriptionSettings, languages: list[str]) -> TranscriptionSettings:
    """`current` with the fields this update sets (fields it omits keep their value, as in OpenAI)."""
    beta = event.get("type") == "transcription_session.update"
    session = _obj(event.get("session", {}), "session")
    out = current
    if beta:
        _check_keys(session, {"input_audio_format", "input_audio_transcription", "turn_detection"},
                    ACCEPTED_IGNORED["beta"], "session")
        if "input_audio_format" in session:
            fmt = session["input_audio_format"]
            formats = {"pcm16": InputFormat("pcm16", DEFAULT_RATE), "g711_ulaw": InputFormat("pcmu", 8000),
                       "g711_alaw": InputFormat("pcma", 8000)}
            if fmt not in formats:
                raise OpenAIError("invalid_value", f"session.input_audio_format={fmt!r}: must be pcm16, g711_ulaw or "
                                  "g711_alaw", "session.input_audio_format")
            out = replace(out, input_format=formats[fmt])
        out = _transcription(session.get("input_audio_transcription"), out, languages, "session.input_audio_transcription")
        if "turn_detection" in session:
            out = replace(out, turn=_turn(session["turn_detection"], "session.turn_detection"))
        if "input_audio_noise_reduction" in session:
            out = replace(out, noise_reduction=session["input_audio_noise_reduction"])
        return out
    _check_keys(session, {"type", "audio"}, ACCEPTED_IGNORED["session"], "session")
    if session.get("type", "transcription") != "transcription":
        raise OpenAIError("unsupported_session_type", f"session.type={session.get('type')!r}: dalston serves "
                          "transcription sessions only (session.type 'transcription', ?intent=transcription)",
                          "session.type")
    audio = _obj(session.get("audio") or {}, "session.audio")
    _check_keys(audio, {"input"}, ACCEPTED_IGNORED["audio"], "session.audio")
    inp = _obj(audio.get("input") or {}, "session.audio.input")
    _check_keys(inp, {"format", "transcription", "turn_detection"}, ACCEPTED_IGNORED["input"], "session.audio.input")
    if "format" in inp:
        out = replace(out, input_format=_ga_format(inp["format"], "session.audio.input.format"))
    out = _transcription(inp.get("transcription"), out, languages, "session.audio.input.transcription")
    if "turn_detection" in inp:
        out = replace(out, turn=_turn(inp["turn_detection"], "session.audio.input.turn_detection"))
    if "noise_reduction" in inp:
        out = replace(out, noise_reduction=inp["noise_reduction"])
    return out


def decode_append(event: dict[str, Any]) -> bytes:
    """The raw audio bytes of an `input_audio_buffer.append` (base64 `audio`)."""
    audio = event.get("audio")
    if not isinstance(audio, str):
        raise OpenAIError("invalid_base64", "input_audio_buffer.append needs 'audio': base64-encoded audio", "audio")
    try:
        return base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise OpenAIError("invalid_base64", "input_audio_buffer.append: 'audio' is not valid base64", "audio") from None


# ----------------------------------------------------------------------------------- server events
class EventIds:
    """`event_...` and `item_...` ids, unique per server process."""

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:8]
        self._counter = itertools.count(1)

    def event(self) -> str:
        return f"event_{self._prefix}{next(self._counter):08d}"

    def item(self) -> str:
        return f"item_{self._prefix}{next(self._counter):08d}"


def session_object(settings: TranscriptionSettings, session_id: str, model: str | None, beta: bool) -> dict[str, Any]:
    """The session as `session.created` / `session.updated` report it (effective values)."""
    turn: dict[str, Any] | None = None
    if settings.turn is not None:
        t = settings.turn
        turn = {"type": "server_vad",
                "threshold": DEFAULT_THRESHOLD if t.threshold is None else t.threshold,
                "prefix_padding_ms": DEFAULT_PREFIX_MS if t.prefix_padding_ms is None else t.prefix_padding_ms,
                "silence_duration_ms": DEFAULT_SILENCE_MS if t.silence_duration_ms is None else t.silence_duration_ms}
    transcription = {"model": settings.model or model, "language": settings.language, "prompt": settings.prompt or ""}
    if beta:
        return {"id": session_id, "object": "realtime.transcription_session",
                "input_audio_format": settings.input_format.to_beta(), "input_audio_transcription": transcription,
                "turn_detection": turn, "input_audio_noise_reduction": settings.noise_reduction, "include": None}
    return {"type": "transcription", "id": session_id, "object": "realtime.transcription_session",
            "audio": {"input": {"format": settings.input_format.to_ga(), "transcription": transcription,
                                "turn_detection": turn, "noise_reduction": settings.noise_reduction}},
            "include": []}


def draining_event(ids: EventIds, event: SessionDraining) -> dict[str, Any]:
    """dalston's `session.draining` in OpenAI's shape (an `event_id`): informational, not an `error`.

    OpenAI has no such event; its SDKs pass unknown event types through (openai 2.x parses it as a
    generic event with `type` and the extra fields), so a client that does not know it ignores it.
    """
    return {"type": event.type, "event_id": ids.event(), "deadline_s": round(event.deadline_s, 3)}


def error_event(ids: EventIds, exc: OpenAIError, client_event_id: str | None = None) -> dict[str, Any]:
    return {"type": "error", "event_id": ids.event(),
            "error": {"type": exc.error_type, "code": exc.code, "message": exc.message, "param": exc.param,
                      "event_id": client_event_id}}


@dataclass
class _Item:
    id: str
    start: float  # stream seconds
    announced: bool  # the client knows the id (speech_started, or committed)
    finals: list[str] = field(default_factory=list)
    sent: str = ""  # concatenation of the deltas sent so far

    def text(self, stable: str = "") -> str:
        return " ".join(t for t in [*self.finals, stable] if t)


class OpenAITranslator:
    """Typed events of one connection (across its engine sessions) -> OpenAI server events.

    `offset`: the stream time at which the engine session that produced the events started (each
    commit or clear starts a fresh engine session; OpenAI's `audio_*_ms` count from the start of
    the connection). `manual`: turn_detection null, so only `commit` ends an item.
    """

    def __init__(self, ids: EventIds, *, beta: bool = False, manual: bool = False) -> None:
        self.ids = ids
        self.beta = beta
        self.manual = manual
        self.item: _Item | None = None
        self.previous_item_id: str | None = None
        self.last_end = 0.0  # stream seconds where the last item (or clear) ended
        self.items_done = 0

    @property
    def names(self) -> dict[str, str]:
        return BETA if self.beta else GA

    def event(self, kind: str, **body: Any) -> dict[str, Any]:
        return {"type": kind, "event_id": self.ids.event(), **body}

    def translate(self, event: StreamEvent, offset: float) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if isinstance(event, SpeechStarted):
            if self.manual:
                return out
            if self.item is not None and self.item.announced:  # not closed (cannot happen with a sane policy)
                out += self._complete(offset + event.time)
            start = offset + event.time
            self.item = self._merge_pending(_Item(self.ids.item(), start, announced=True))
            out.append(self.event("input_audio_buffer.speech_started", audio_start_ms=_ms(start), item_id=self.item.id))
            out += self._deltas(self.item.text())
        elif isinstance(event, Partial):
            if self.item is not None and self.item.announced and event.stable:
                out += self._deltas(self.item.text(event.stable))
        elif isinstance(event, Final):
            if self.item is None:  # manual mode, or a final before any speech start: held until announced
                self.item = _Item(self.ids.item(), self.last_end, announced=False)
            self.item.finals.append(event.text.strip())
            if self.item.announced:
                out += self._deltas(self.item.text())
        elif isinstance(event, SpeechStopped):
            if self.manual or self.item is None or not self.item.announced:
                return out
            end = offset + event.time
            out.append(self.event("input_audio_buffer.speech_stopped", audio_end_ms=_ms(end), item_id=self.item.id))
            out += self._complete(end)
        return out

    def commit(self, now: float) -> list[dict[str, Any]]:
        """An explicit commit (after the engine session was flushed): the pending item, even if silent."""
        if self.item is None:
            self.item = _Item(self.ids.item(), self.last_end, announced=False)
        return self._complete(now)

    def clear(self, now: float) -> list[dict[str, Any]]:
        """`input_audio_buffer.clear`: forget the uncommitted item (its text is never sent)."""
        self.item = None
        self.last_end = now
        return [self.event("input_audio_buffer.cleared")]

    def failed(self, message: str) -> list[dict[str, Any]]:
        """The engine failed mid-item: the client learns which item has no transcript."""
        if self.item is None or not self.item.announced:
            return []
        return [self.event("conversation.item.input_audio_transcription.failed", item_id=self.item.id,
                           content_index=0, error={"type": "server_error", "code": "internal_error",
                                                   "message": message, "param": None})]

    # ------------------------------------------------------------------ internals
    def _merge_pending(self, item: _Item) -> _Item:
        """Finals that came before this speech start (manual-mode leftovers) belong to it."""
        if self.item is not None and not self.item.announced:
            item.finals = self.item.finals + item.finals
            item.start = min(item.start, self.item.start)
        return item

    def _deltas(self, text: str) -> list[dict[str, Any]]:
        item = self.item
        assert item is not None
        if len(text) <= len(item.sent) or not text.startswith(item.sent):
            return []
        delta, item.sent = text[len(item.sent):], text
        return [self.event("conversation.item.input_audio_transcription.delta", item_id=item.id, content_index=0,
                           delta=delta)]

    def _complete(self, end: float) -> list[dict[str, Any]]:
        item = self.item
        assert item is not None
        out = [self.event("input_audio_buffer.committed", previous_item_id=self.previous_item_id, item_id=item.id),
               self.event(self.names["item"], previous_item_id=self.previous_item_id,
                          item={"id": item.id, "object": "realtime.item", "type": "message", "status": "completed",
                                "role": "user", "content": [{"type": "input_audio", "transcript": None}]})]
        item.announced = True
        text = item.text()
        out += self._deltas(text)
        out.append(self.event("conversation.item.input_audio_transcription.completed", item_id=item.id,
                              content_index=0, transcript=text,
                              usage={"type": "duration", "seconds": round(max(0.0, end - item.start), 3)}))
        self.previous_item_id = item.id
        self.item = None
        self.last_end = end
        self.items_done += 1
        return out


def _ms(seconds: float) -> int:
    return max(0, int(round(seconds * 1000)))
