"""whisper family: OpenAI Whisper sizes run by faster-whisper, configured entirely by the variant's runtime.

One loaded `WhisperModel` serves every request (CTranslate2 runs `max_concurrency` of them in
parallel). Audio longer than one 30 s window goes through `BatchedInferencePipeline` when the
variant's `runtime.batch_size` > 1: it decodes VAD-cut chunks in batches, which raises throughput
on long files; a single window gains nothing from batching, so short audio uses the sequential
decoder (and keeps its conditioning on previous text).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dalston.engine_sdk import SAMPLE_RATE, Engine, Segment, Transcript, TranscribeOptions
from dalston.runtimes.faster_whisper import load_model, to_segment

#: Whisper's decoding window; audio longer than this benefits from batched chunk decoding.
_WINDOW_SECONDS = 30.0


class WhisperEngine(Engine):
    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.model: Any = None
        self.batched: Any = None

    def load(self, weights_dir: Path) -> None:
        self.model, self.device, self.compute_type = load_model(self.spec, weights_dir)
        if self.spec.runtime.batch_size > 1:
            from faster_whisper import BatchedInferencePipeline

            self.batched = BatchedInferencePipeline(model=self.model)

    def languages(self) -> frozenset[str] | None:
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        return frozenset(_LANGUAGE_CODES) if self.model.model.is_multilingual else frozenset({"en"})

    def describe(self) -> dict[str, str]:
        return {**super().describe(), "batched": "yes" if self.batched is not None else "no"}

    def _decode(self, audio: np.ndarray, options: TranscribeOptions) -> tuple[Iterator[Any], Any]:
        runtime = self.spec.runtime
        kwargs: dict[str, Any] = dict(
            language=options.language, task=options.task, initial_prompt=options.prompt or None,
            word_timestamps=options.word_timestamps, beam_size=options.beam_size or runtime.beam_size,
            # temperature 0 keeps faster-whisper's fallback ladder (0.2, 0.4, …) for failed decodes;
            # a caller-chosen temperature is used as given.
            temperature=options.temperature if options.temperature > 0 else [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
        )
        vad = runtime.vad_filter if options.vad_filter is None else options.vad_filter
        if self.batched is not None and len(audio) > _WINDOW_SECONDS * SAMPLE_RATE:
            return self.batched.transcribe(audio, batch_size=runtime.batch_size, vad_filter=True, **kwargs)
        return self.model.transcribe(audio, vad_filter=vad, **kwargs)

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        segments, info = self._decode(audio, options)
        out = tuple(to_segment(i, s) for i, s in enumerate(segments))
        return Transcript(" ".join(s.text for s in out if s.text).strip(), info.language, len(audio) / SAMPLE_RATE, out)

    def stream_segments(self, audio: np.ndarray, options: TranscribeOptions) -> Iterator[Segment]:
        segments, _ = self._decode(audio, options)  # faster-whisper decodes lazily, segment by segment
        for i, s in enumerate(segments):
            yield to_segment(i, s)


ENGINE = WhisperEngine
