"""Typed realtime events: what a streaming session emits, independent of any wire protocol.

A family's `StreamingSession` returns these; it never builds JSON. The server renders them in one
place per protocol: `dalston.realtime.native_protocol.render` (dalston's own `/v1/realtime`
events) and `dalston.realtime.openai_protocol.OpenAITranslator` (OpenAI Realtime transcription
events). WHY typed: two protocols read the same events, and a field one of them needs (such as
`Partial.stable`, the text no later event will revise) must exist for every family, which a
dataclass enforces and an ad-hoc dict does not.

Times are seconds of stream time from the first audio sample of the session, unrounded; the
renderers round them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Union

from dalston.engine_sdk.types import Word


@dataclass(frozen=True)
class SpeechStarted:
    """The VAD opened an utterance that began at `time`."""

    type: ClassVar[str] = "vad.speech_start"
    time: float


@dataclass(frozen=True)
class SpeechStopped:
    """The utterance opened by the last `SpeechStarted` ended at `time` (after its finals)."""

    type: ClassVar[str] = "vad.speech_end"
    time: float


@dataclass(frozen=True)
class Partial:
    """The current utterance so far; replaces the previous partial.

    `committed`: the prefix the policy agreed on (may still be revised by the final, for policies
    whose final is a fresh decode). `stable`: a prefix of `text` that the utterance's finals are
    guaranteed to start with; "" when the policy can promise nothing before its final. Protocols
    whose clients only append text (OpenAI deltas) send `stable` and nothing else early.
    """

    type: ClassVar[str] = "transcript.partial"
    text: str
    start: float
    end: float
    committed: str
    stable: str = ""


@dataclass(frozen=True)
class Final:
    """Stable text for a stretch of speech; never revised. `words`: its words with stream times."""

    type: ClassVar[str] = "transcript.final"
    text: str
    start: float
    end: float
    words: tuple[Word, ...] = ()


StreamEvent = Union[SpeechStarted, SpeechStopped, Partial, Final]
"""Any event a streaming session returns from `accept` / `finish`."""


@dataclass(frozen=True)
class SessionDraining:
    """Sent by the server, never returned by an engine: the server got SIGTERM and is draining.

    The session goes on as usual for `deadline_s` more seconds (the client may keep streaming and
    end it normally); then the server stops reading, sends the finals for the audio it received,
    `session.end` and closes with 1001. WHY an event and not just the close: a client that knows
    can stop early, or open its next session on another instance while this one finishes.
    """

    type: ClassVar[str] = "session.draining"
    deadline_s: float


@dataclass(frozen=True)
class TurnDetection:
    """Client-chosen utterance segmentation; None fields mean "the engine's default".

    `threshold` (0..1, OpenAI's server_vad scale: higher needs louder speech),
    `prefix_padding_ms` (audio kept before the detected onset), `silence_duration_ms` (quiet that
    ends an utterance). Each family's utterance policy maps these onto its VAD.
    """

    threshold: float | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None
