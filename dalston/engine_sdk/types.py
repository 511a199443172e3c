"""What every engine family returns: a transcript with segments and words, and streaming events.

Times are seconds from the start of the audio. The server renders these into every response format
(json, text, srt, vtt, verbose_json, SSE), so families never format output. Realtime events are
in `dalston.engine_sdk.events`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Task = Literal["transcribe", "translate"]


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str
    probability: float | None = None


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    words: tuple[Word, ...] = ()
    # Decoder facts OpenAI's verbose_json reports per segment; None/() where a family has no such thing.
    seek: int = 0
    tokens: tuple[int, ...] = ()
    temperature: float | None = None
    compression_ratio: float | None = None


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None
    duration: float
    segments: tuple[Segment, ...] = ()

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TranscribeOptions:
    """Per-request options; None means "the variant's runtime default"."""

    language: str | None = None
    task: Task = "transcribe"
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False
    beam_size: int | None = None
    # Voice activity detection (Silero for Whisper, gating for Parakeet); None = the variant's YAML.
    vad_filter: bool | None = None
    vad_threshold: float | None = None
    min_silence_duration_ms: int | None = None
    speech_pad_ms: int | None = None
    # Whisper's guards against invented text; None = the variant's `runtime.guards`.
    no_speech_threshold: float | None = None
    log_prob_threshold: float | None = None
    compression_ratio_threshold: float | None = None
    condition_on_previous_text: bool | None = None
    #: Vocabulary to bias decoding towards (not the OpenAI `prompt`, which stays Whisper's initial prompt).
    hotwords: str | None = None
