"""parakeet family: NVIDIA FastConformer checkpoints (TDT, RNNT or CTC heads) run by NeMo.

Everything size-specific comes from the variant's `runtime` (a `NemoRuntime`): the `.nemo` file,
the decoder head, the batch size, and when to switch to local attention. Concurrent requests meet
in a micro-batcher (`dalston.runtimes.batching`): requests that arrive within a few milliseconds
are transcribed in ONE padded model call of up to `runtime.batch_size` files, and the batcher's
single dispatcher thread is the only one that touches the model.

Long audio: full self-attention is quadratic in length, so beyond
`runtime.local_attention_above_seconds` a request is decoded on its own with the encoder switched
to `rel_pos_local_attn` (window `runtime.local_attention_context`) and conv-subsampling chunking,
which is how NVIDIA runs Parakeet on hours of audio; the model is switched back afterwards.

Word timestamps come from the decoder (TDT durations / RNNT emission frames / CTC spikes), and
segments are cut from the words at sentence ends (`dalston.segmenting`, as for every family).

Silence: with `runtime.vad_filter` (overridable per request) the Silero VAD finds the speech first
(`dalston.speech_regions`); audio with none is not decoded, and words outside every speech region are
dropped, so silence and noise give an empty transcript instead of whatever a transducer emits there.

Hotwords: NeMo's phrase boosting tree is a property of the model's decoder, so requests with hotwords
are decoded in their own call with the tree switched in (`nemo_rt.boosted`), then the decoder is restored.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dalston import segmenting, speech_regions
from dalston.engine_sdk import (
    SAMPLE_RATE,
    Engine,
    TranscribeOptions,
    Transcript,
    UnsupportedOption,
)
from dalston.runtimes import nemo as nemo_rt
from dalston.runtimes.batching import MicroBatcher
from dalston.spec import EngineSpec, NemoRuntime

log = logging.getLogger("dalston.engines.parakeet")

#: Shorter than one encoder frame after 8x subsampling of 10 ms features: nothing to decode.
_MIN_SAMPLES = SAMPLE_RATE // 10


@dataclass(frozen=True)
class _Request:
    audio: np.ndarray
    language: str | None
    speech: tuple[tuple[float, float], ...] | None = None  # VAD speech regions (s); None = VAD off
    hotwords: tuple[str, ...] = ()  # phrases to boost (NeMo's boosting tree); () = plain decoding


class ParakeetEngine(Engine):
    def __init__(self, spec: EngineSpec) -> None:
        super().__init__(spec)
        self.runtime = self.runtime_as(NemoRuntime)
        self.model: Any = None  # a NeMo ASRModel (NeMo ships no types)
        self.batcher: MicroBatcher[_Request, Transcript] | None = None
        self.decoder = self.runtime.decoder
        self.long_audio_calls = 0  # requests decoded with local attention (observable by tests and logs)
        self.vad_available = speech_regions.available()

    # ------------------------------------------------------------------ lifecycle
    def load(self, weights_dir: Path) -> None:
        runtime = self.runtime
        if runtime.vad_filter and not self.vad_available:
            log.warning("parakeet_vad_unavailable engine_id=%s reason='faster-whisper (Silero VAD) not installed' "
                        "effect='silence and noise are not gated'", self.spec.id)
        self.model, self.device = nemo_rt.load_asr_model(self.spec, weights_dir)
        nemo_rt.select_decoder(self.model, runtime.decoder, model_file=runtime.model_file)
        self.compute_type = "float32"
        self.batcher = MicroBatcher(self._transcribe_batch, max_batch=runtime.batch_size,
                                    name=f"batcher-{self.spec.id}")

    def describe(self) -> dict[str, str]:
        runtime = self.runtime
        facts = {**super().describe(), "decoder": self.decoder, "batch_size": str(runtime.batch_size),
                 "vad": ("silero" if self.vad_available else "unavailable") if runtime.vad_filter else "off"}
        if runtime.local_attention_above_seconds:
            facts["local_attention_above_s"] = f"{runtime.local_attention_above_seconds:g}"
        return facts

    # ------------------------------------------------------------------ requests
    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        if options.task == "translate":
            raise UnsupportedOption("task", f"{self.spec.id} transcribes only; translation is not supported "
                                            "(capabilities.translation: false)")
        if options.language is not None and options.language not in self.spec.capabilities.languages:
            raise UnsupportedOption("language", f"{self.spec.id} supports language(s) "
                                                f"{', '.join(self.spec.capabilities.languages)}, not '{options.language}'")
        audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        empty = Transcript("", self._language(options.language), len(audio) / SAMPLE_RATE, ())
        if len(audio) < _MIN_SAMPLES:
            return empty
        vad = speech_regions.requested(self.runtime.vad_filter and self.vad_available, self.runtime.vad,
                                       options)
        if vad is not None and not self.vad_available:
            raise UnsupportedOption("vad_filter", f"{self.spec.id} has no VAD in this install (the Silero model ships "
                                                  "with faster-whisper, which is not installed)")
        speech = None if vad is None else tuple(speech_regions.speech_regions(audio, vad))
        if speech == ():
            return empty  # nothing spoken: nothing to decode, nothing to invent
        assert self.batcher is not None, "load() first"
        hotwords = tuple(nemo_rt.hotword_phrases(options.hotwords or ""))
        return self.batcher.submit(_Request(audio, options.language, speech, hotwords))

    def _language(self, requested: str | None) -> str:
        return requested or self.spec.capabilities.languages[0]

    def _is_long(self, audio: np.ndarray) -> bool:
        limit = self.runtime.local_attention_above_seconds
        return limit is not None and len(audio) / SAMPLE_RATE > limit

    # ------------------------------------------------------------------ the dispatcher thread only
    def _transcribe_batch(self, requests: Sequence[_Request]) -> list[Transcript]:
        """One model call for the short requests together, one call each for the long ones.

        Requests with hotwords are decoded in their own call with NeMo's boosting tree switched in.
        """
        results: dict[int, Transcript] = {}
        for hotwords in dict.fromkeys(r.hotwords for r in requests):  # one decoder per set of hotwords
            group = [i for i, r in enumerate(requests) if r.hotwords == hotwords]
            with (nemo_rt.boosted(self.model, self.decoder, hotwords, self.runtime.hotwords_alpha)
                  if hotwords else contextlib.nullcontext()):
                short = [i for i in group if not self._is_long(requests[i].audio)]
                if short:
                    started = time.monotonic()
                    hyps = self._decode([requests[i].audio for i in short])
                    for i, hyp in zip(short, hyps):
                        results[i] = self._to_transcript(hyp, requests[i])
                    log.debug("parakeet_batch size=%d seconds=%.3f", len(short), time.monotonic() - started)
                for i in group:
                    if i not in results:
                        results[i] = self._to_transcript(self._decode_long(requests[i].audio), requests[i])
        return [results[i] for i in range(len(requests))]

    def _decode(self, audios: list[np.ndarray]) -> list[Any]:
        import torch

        with torch.inference_mode():
            out = self.model.transcribe(audios, batch_size=len(audios), return_hypotheses=True,
                                        timestamps=True, verbose=False)
        if isinstance(out, tuple):  # some model classes return (best, all_hypotheses)
            out = out[0]
        return list(out)

    def _decode_long(self, audio: np.ndarray) -> Any:
        """Local attention for one long file, then back to the checkpoint's own attention."""
        runtime = self.runtime
        encoder_cfg = self.model.cfg.encoder
        original = (str(encoder_cfg.get("self_attention_model", "rel_pos")),
                    list(encoder_cfg.get("att_context_size", [-1, -1])),
                    int(encoder_cfg.get("subsampling_conv_chunking_factor", 1)))
        context = list(runtime.local_attention_context or [256, 256])
        try:
            self.model.change_attention_model("rel_pos_local_attn", context, update_config=False)
            self.model.change_subsampling_conv_chunking_factor(1, update_config=False)
        except (ValueError, NotImplementedError, AttributeError, RuntimeError) as exc:  # no local attention here
            log.warning("parakeet_long_audio engine_id=%s seconds=%.1f mode=full_attention reason=%r",
                        self.spec.id, len(audio) / SAMPLE_RATE, f"{type(exc).__name__}: {exc}")
            self._restore_attention(original)
            return self._decode([audio])[0]
        log.info("parakeet_long_audio engine_id=%s seconds=%.1f mode=local_attention context=%s",
                 self.spec.id, len(audio) / SAMPLE_RATE, context)
        try:
            self.long_audio_calls += 1
            return self._decode([audio])[0]
        finally:
            self._restore_attention(original)

    def _restore_attention(self, original: tuple[str, list[int], int]) -> None:
        self.model.change_attention_model(original[0], original[1], update_config=False)
        self.model.change_subsampling_conv_chunking_factor(original[2], update_config=False)

    def _to_transcript(self, hyp: Any, request: _Request) -> Transcript:
        duration = len(request.audio) / SAMPLE_RATE
        words = nemo_rt.hypothesis_words(hyp, duration=duration)
        if request.speech is not None:
            words = [w for w in words if speech_regions.inside(w.start, w.end, list(request.speech))]
        segments = segmenting.segments_from_words(words)
        text = nemo_rt.join_words(words)  # the text IS its words, for every decoder head
        return Transcript(text, self._language(request.language), duration, segments)


ENGINE = ParakeetEngine
