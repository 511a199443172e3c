"""whisper-streaming family: faster-whisper behind the LocalAgreement-2 streaming policy.

Everything size-specific comes from the variant's `runtime` (compute types, beam size, and
`runtime.streaming.min_chunk_ms` / `max_buffer_seconds`). The policy itself lives in
`dalston.streaming.local_agreement` and knows nothing about Whisper: this file only adapts a loaded
faster-whisper model into its `decode(audio, prompt) -> words` callable. One loaded model is shared
by every session (CTranslate2 runs `max_concurrency` decodes in parallel); each session owns its
buffer, committed words and detected language.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from dalston.engine_sdk import StreamingEngine, StreamingSession, Transcript, TranscribeOptions, TurnDetection, Word
from dalston.runtimes.faster_whisper import load_model, to_segments
from dalston.spec import EngineSpec, FasterWhisperRuntime
from dalston.streaming.local_agreement import LocalAgreementSession, PolicyConfig

#: Language detection needs a little speech; before this much audio, the guess is unreliable.
_DETECT_AFTER_S = 2.0


class WhisperStreamingEngine(StreamingEngine):
    """A Whisper variant that serves realtime sessions (and, for convenience, batch requests)."""

    def __init__(self, spec: EngineSpec) -> None:
        super().__init__(spec)
        self.runtime = self.runtime_as(FasterWhisperRuntime)
        self.model: Any = None  # faster_whisper.WhisperModel (the library ships no types)

    def load(self, weights_dir: Path) -> None:
        self.model, self.device, self.compute_type = load_model(self.spec, weights_dir)

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        """Batch decode of a whole file with the same weights (what the streaming WER is compared to)."""
        runtime = self.runtime
        segments, info = self.model.transcribe(
            audio, language=options.language, task=options.task, initial_prompt=options.prompt,
            temperature=options.temperature, word_timestamps=options.word_timestamps,
            beam_size=options.beam_size or runtime.beam_size,
            vad_filter=runtime.vad_filter if options.vad_filter is None else options.vad_filter)
        out = to_segments(segments)
        return Transcript(" ".join(s.text for s in out).strip(), info.language, info.duration, out)

    def policy_config(self) -> PolicyConfig:
        streaming = self.runtime.streaming
        if streaming is None:
            return PolicyConfig()
        floor = None if streaming.min_chunk_floor_ms is None else streaming.min_chunk_floor_ms / 1000
        return PolicyConfig(min_chunk_s=streaming.min_chunk_ms / 1000, min_chunk_floor_s=floor,
                            max_buffer_s=streaming.max_buffer_seconds)

    def open_session(self, language: str | None = None, turn: TurnDetection | None = None) -> StreamingSession:
        return LocalAgreementSession(_WhisperDecoder(self, language), self.policy_config().with_turn(turn))


class _WhisperDecoder:
    """decode(audio, prompt) for one session: greedy/beam decode with word timestamps, no VAD filter.

    WHY temperature 0 without fallback: fallback re-decodes at higher temperatures up to five times,
    which multiplies latency exactly when audio is hard; the policy's agreement step already
    discards unstable words. A multilingual model detects the language once per session (after
    `_DETECT_AFTER_S` of audio) and keeps it, so every later decode skips detection.
    """

    def __init__(self, engine: WhisperStreamingEngine, language: str | None) -> None:
        self.engine = engine
        multilingual = bool(getattr(engine.model, "model", None) is None or engine.model.model.is_multilingual)
        self.language = language if multilingual else (language or "en")
        self._lock = threading.Lock()

    def __call__(self, audio: np.ndarray, prompt: str) -> list[Word]:
        if len(audio) == 0:
            return []
        runtime = self.engine.runtime
        segments, info = self.engine.model.transcribe(
            audio,
            language=self.language,
            initial_prompt=prompt or None,
            word_timestamps=True,
            beam_size=runtime.beam_size,
            temperature=0.0,
            vad_filter=False,
            condition_on_previous_text=False,
        )
        words = [Word(w.start, w.end, w.word, w.probability) for s in segments for w in (s.words or ())]
        if self.language is None and len(audio) / 16000 >= _DETECT_AFTER_S:
            self.language = info.language
        return words


ENGINE = WhisperStreamingEngine
