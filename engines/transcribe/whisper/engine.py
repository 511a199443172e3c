"""whisper family: OpenAI Whisper sizes run by faster-whisper, configured entirely by the variant's runtime.

One loaded `WhisperModel` serves every request (CTranslate2 runs `max_concurrency` of them in
parallel). Audio longer than one 30 s window goes through `BatchedInferencePipeline` when the
variant's `runtime.batch_size` > 1: it decodes VAD-cut chunks in batches, which raises throughput
on long files; a single window gains nothing from batching, so short audio uses the sequential
decoder (and keeps its conditioning on previous text). The batched pipeline needs the VAD to cut
chunks, so a request with `vad_filter=false` is decoded sequentially whatever its length.

Silence and noise: Silero VAD (`runtime.vad_filter`, `runtime.vad`) and the guards in
`runtime.guards` (no-speech, log-prob and compression-ratio thresholds) are per variant and
overridable per request. Each batched chunk is decoded without the previous chunk's text, so a
hallucination cannot carry on across a pause.

Segments: when words were computed, the decoder's segments are re-cut at sentence ends
(`dalston.segmenting`), keeping their tokens, logprobs and temperatures.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from dalston import segmenting, speech_regions
from dalston.engine_sdk import SAMPLE_RATE, Engine, Segment, Transcript, TranscribeOptions
from dalston.runtimes.faster_whisper import load_model, to_segment
from dalston.spec import EngineSpec, FasterWhisperRuntime

#: Whisper's decoding window; audio longer than this benefits from batched chunk decoding.
_WINDOW_SECONDS = 30.0

_T = TypeVar("_T")


def _override(requested: _T | None, variant: _T) -> _T:
    """A request's guard when it set one (None = not set), else the variant's `runtime.guards` value."""
    return variant if requested is None else requested


class WhisperEngine(Engine):
    def __init__(self, spec: EngineSpec) -> None:
        super().__init__(spec)
        self.runtime = self.runtime_as(FasterWhisperRuntime)
        self.model: Any = None  # faster_whisper.WhisperModel (the library ships no types)
        self.batched: Any = None  # faster_whisper.BatchedInferencePipeline, when runtime.batch_size > 1

    def load(self, weights_dir: Path) -> None:
        self.model, self.device, self.compute_type = load_model(self.spec, weights_dir)
        if self.runtime.batch_size > 1:
            from faster_whisper import BatchedInferencePipeline

            self.batched = BatchedInferencePipeline(model=self.model)

    def languages(self) -> frozenset[str] | None:
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        return frozenset(_LANGUAGE_CODES) if self.model.model.is_multilingual else frozenset({"en"})

    def describe(self) -> dict[str, str]:
        runtime = self.runtime
        return {**super().describe(), "batched": "yes" if self.batched is not None else "no",
                "vad_filter": "yes" if runtime.vad_filter else "no"}

    def _decode(self, audio: np.ndarray, options: TranscribeOptions) -> tuple[Iterator[Any], Any]:
        runtime = self.runtime
        guards = runtime.guards

        kwargs: dict[str, Any] = dict(
            language=options.language, task=options.task, initial_prompt=options.prompt or None,
            hotwords=options.hotwords or None,
            word_timestamps=options.word_timestamps, beam_size=options.beam_size or runtime.beam_size,
            # temperature 0 keeps faster-whisper's fallback ladder (0.2, 0.4, …) for failed decodes;
            # a caller-chosen temperature is used as given.
            temperature=options.temperature if options.temperature > 0 else [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            no_speech_threshold=_override(options.no_speech_threshold, guards.no_speech_threshold),
            log_prob_threshold=_override(options.log_prob_threshold, guards.log_prob_threshold),
            compression_ratio_threshold=_override(options.compression_ratio_threshold,
                                                  guards.compression_ratio_threshold),
            condition_on_previous_text=_override(options.condition_on_previous_text,
                                                 guards.condition_on_previous_text),
        )
        vad = speech_regions.requested(runtime.vad_filter, runtime.vad, options)
        vad_parameters = None if vad is None else {"threshold": vad.threshold, "speech_pad_ms": vad.speech_pad_ms,
                                                   "min_silence_duration_ms": vad.min_silence_duration_ms}
        decoded: tuple[Iterator[Any], Any]  # (segments, TranscriptionInfo), as faster-whisper returns them
        if self.batched is not None and vad is not None and len(audio) > _WINDOW_SECONDS * SAMPLE_RATE:
            decoded = self.batched.transcribe(audio, batch_size=runtime.batch_size, vad_filter=True,
                                              vad_parameters=vad_parameters, **kwargs)
        else:
            decoded = self.model.transcribe(audio, vad_filter=vad is not None, vad_parameters=vad_parameters,
                                            **kwargs)
        return decoded

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        segments, info = self._decode(audio, options)
        decoded = tuple(to_segment(i, s) for i, s in enumerate(segments))
        if options.word_timestamps:
            decoded = segmenting.sentence_segments(decoded, tokenize=self._tokenize)
        text = " ".join(s.text for s in decoded if s.text).strip()
        return Transcript(text, info.language, len(audio) / SAMPLE_RATE, decoded)

    def _tokenize(self, text: str) -> list[int]:
        """The model's own BPE ids for a segment text (what Whisper's decoder would emit for it)."""
        return list(self.model.hf_tokenizer.encode(text, add_special_tokens=False).ids)

    def stream_segments(self, audio: np.ndarray, options: TranscribeOptions) -> Iterator[Segment]:
        segments, _ = self._decode(audio, options)  # faster-whisper decodes lazily, segment by segment
        if not options.word_timestamps:
            for i, s in enumerate(segments):
                yield to_segment(i, s)
            return
        sentences = segmenting.SentenceStream(tokenize=self._tokenize)  # the same cuts as `transcribe`
        for i, s in enumerate(segments):
            yield from sentences.push(to_segment(i, s))
        yield from sentences.finish()


ENGINE = WhisperEngine
