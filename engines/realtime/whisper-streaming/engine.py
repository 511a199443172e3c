"""whisper-streaming family: faster-whisper behind the LocalAgreement-2 streaming policy.

Everything size-specific comes from the variant's `runtime` (compute types, beam size, and
`runtime.streaming.min_chunk_ms` / `max_buffer_seconds`). The policy itself lives in
`dalston.streaming.local_agreement` and knows nothing about Whisper: this file only adapts a loaded
faster-whisper model into its `decode(audio, prompt) -> words` callables (the final decode on
Whisper's full 30 s input; re-decodes optionally on a short encoder input, `short_encoder_pad_ms`,
see `_ShortEncoder` and docs/decisions/ADR-019). One loaded model is shared
by every session (CTranslate2 runs `max_concurrency` decodes in parallel); each session owns its
buffer, committed words and detected language.
"""

from __future__ import annotations

import copy
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
                            max_buffer_s=streaming.max_buffer_seconds, tail_decode=streaming.tail_decode)

    def open_session(self, language: str | None = None, turn: TurnDetection | None = None) -> StreamingSession:
        decoder = _WhisperDecoder(self, language)
        return LocalAgreementSession(decoder, self.policy_config().with_turn(turn), decoder.redecode)


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
        streaming = engine.runtime.streaming
        pad_ms = None if streaming is None else streaming.short_encoder_pad_ms
        self._pad_frames = None if pad_ms is None else pad_ms // 10
        self._short = None if self._pad_frames is None else _ShortEncoder(engine.model)

    def __call__(self, audio: np.ndarray, prompt: str) -> list[Word]:
        """The final decode of an utterance: Whisper's full 30 s encoder input, as a batch decode."""
        return self._decode(self.engine.model, audio, prompt)

    def redecode(self, audio: np.ndarray, prompt: str) -> list[Word]:
        """A re-decode behind partials: with `short_encoder_pad_ms`, the encoder sees only the window
        plus that padding (see `_ShortEncoder`); tokens capped so a loop cannot run long."""
        if self._short is None or self._pad_frames is None or self.language is None:
            return self._decode(self.engine.model, audio, prompt)  # language detection wants the full window
        self._short.frames = _even(len(audio) // 160 + self._pad_frames)
        return self._decode(self._short.model, audio, prompt, max_new_tokens=int(len(audio) / 16000 * 8) + 10)

    def _decode(self, model: Any, audio: np.ndarray, prompt: str, **options: Any) -> list[Word]:
        if len(audio) == 0:
            return []
        runtime = self.engine.runtime
        segments, info = model.transcribe(
            audio,
            language=self.language,
            initial_prompt=prompt or None,
            word_timestamps=True,
            beam_size=runtime.beam_size,
            temperature=0.0,
            vad_filter=False,
            condition_on_previous_text=False,
            **options,
        )
        words = [Word(w.start, w.end, w.word, w.probability) for s in segments for w in (s.words or ())]
        if self.language is None and len(audio) / 16000 >= _DETECT_AFTER_S:
            self.language = info.language
        return words


def _even(frames: int) -> int:
    """Mel frames for the encoder: even (its second convolution has stride 2), at most Whisper's 3000."""
    return min(3000, frames + frames % 2)


class _ShortEncoder:
    """A view of a loaded faster-whisper `WhisperModel` whose encoder sees only the first `frames`
    mel frames of the (30 s padded) input.

    WHY: faster-whisper pads every decode to Whisper's 30 s window, so the encoder costs the same
    for a 2 s window as for a 30 s one, and on CPU the encoder is most of a re-decode: cutting the
    re-decode window alone did not lower the CPU time per re-decode (base, two_cities: 1.0 s either
    way). CTranslate2's Whisper encoder accepts fewer frames; encoding the window plus a few seconds
    of the usual zero padding costs a fraction (0.27 s mean). Whisper never saw inputs shorter than
    30 s in training: with no padding it loops ("it was the age of wisdom, it was the age of
    wisdom, ..."); with 4 s of padding its partials on beckett and two_cities were as accurate as
    full-window ones (docs/PERFORMANCE.md). Only partials use it: finals keep the full 30 s input.

    One per session, because `frames` is set before each decode. `model` is a shallow copy of the
    loaded model (the CTranslate2 model, tokenizer and feature extractor are shared, not copied)
    whose `encode`, the method faster-whisper calls on each padded window, is replaced on the
    instance.
    """

    def __init__(self, model: Any) -> None:
        self.frames: int | None = None
        self.model: Any = copy.copy(model)
        full_encode = self.model.encode

        def encode(features: np.ndarray) -> Any:
            return full_encode(features if self.frames is None else features[..., :self.frames])

        self.model.encode = encode


ENGINE = WhisperStreamingEngine
