"""parakeet-streaming family: NeMo FastConformer checkpoints served as realtime sessions.

Two modes, chosen by the variant's `runtime.streaming.mode`:

* `cache-aware` (e.g. nemotron-speech-streaming): the encoder was trained with limited, chunked
  attention and causal convolutions, so a stream can be encoded chunk by chunk with per-session
  caches (`cache_last_channel`, `cache_last_time`, `cache_last_channel_len`) and the transducer
  decoder continues from the session's previous hypothesis: every audio frame is encoded once and
  no emitted word is ever revised. Chunk size and look-ahead follow from
  `runtime.streaming.att_context_size` ([left, right] encoder frames), which must be one the
  checkpoint was trained with. Features are computed incrementally and match the offline ones.
* `buffered` (offline checkpoints such as parakeet-rnnt-1.1b): audio is cut into
  `chunk_seconds` chunks; each chunk is decoded inside a window of `context_seconds` in total
  (equal left and right context, as NeMo's buffered inference scripts do), and the words whose
  start falls inside the chunk are committed. Latency is one chunk plus the right context.

Both feed stable words into `dalston.streaming.utterances.UtterancePolicy`, which adds energy-VAD
speech start/end and emits partials and finals in stream-time order. Sessions share the loaded
model and nothing else.

Model work is batched across sessions (`dalston.runtimes.batching.MicroBatcher` with no wait window:
one dispatcher thread per engine, at most `runtime.batch_size` sessions per step): every session with a chunk
ready joins the next step, and ONE `conformer_stream_step` runs for all of them, with their encoder
caches and decoder hypotheses stacked along the batch dimension and split back afterwards. Buffered
windows of equal length are decoded in one `transcribe` call the same way. Model calls only ever
run on the scheduler thread (or under `lock` for batch requests): NeMo's `cache_aware_stream_step`
writes the per-call `drop_extra_pre_encoded` into the encoder's shared `streaming_cfg` and restores
it afterwards, so two sessions stepping in parallel threads (one on its first chunk, which drops
nothing, one on a later chunk) read each other's value; that race was the cause of the token
divergence once seen with parallel sessions (docs/decisions/ADR-018-realtime-batching.md).

Sessions at different positions share a step: a session's first chunk has no pre-encode cache and
keeps all its subsampled frames, a later chunk carries `pre_encode_cache_size` cached feature
frames and drops `drop_extra_pre_encoded` subsampled frames. So the step runs the pre-encode
(subsampling) once per such input shape, exactly as NeMo would for that session alone, and feeds
the equal-length results (R+1 encoder frames for a right context of R) to the conformer layers
and the decoder together (`bypass_pre_encode`). A stream's shorter last chunk is right-padded and
masked by its length.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dalston.engine_sdk import (
    SAMPLE_RATE,
    EngineLoadError,
    StreamEvent,
    StreamingEngine,
    StreamingSession,
    TranscribeOptions,
    Transcript,
    TurnDetection,
    UnsupportedOption,
    Word,
)
from dalston.runtimes import nemo as nemo_rt
from dalston.runtimes.batching import MicroBatcher
from dalston.spec import EngineSpec, NemoRuntime
from dalston.streaming.features import IncrementalFeatures, streaming_preprocessor
from dalston.streaming.utterances import UtterancePolicy
from dalston.streaming.vad import VadConfig, vad_config_for

log = logging.getLogger("dalston.engines.parakeet_streaming")

_WORD_START = "\u2581"  # sentencepiece marks the first piece of every word with this

#: After the first request of a step arrives, wait this long for others. WHY: the sessions released by
#: one step come back within milliseconds when they already hold their next chunk (an engine that fell
#: behind); taken one by one, the first would run a step of its own and every other session would
#: wait for it, so a backlogged engine would alternate steps of 1 and N-1. Small against any step.
GATHER_S = 0.005


@dataclass(frozen=True)
class _Chunk:
    """One session's next cache-aware step: its features and the state it continues from."""

    signal: Any  # [n_mels, frames]: pre-encode cache frames + the chunk (torch, on the model device)
    drop: int  # subsampled frames to drop after the pre-encode (0 on a stream's first chunk)
    last: bool  # the stream's last chunk (keep every output frame)
    cache: tuple[Any, Any, Any]  # cache_last_channel [L,1,C,D], cache_last_time [L,1,D,K], cache_last_channel_len [1]
    hyp: Any  # the running Hypothesis, None before the first step


@dataclass(frozen=True)
class _ChunkOut:
    cache: tuple[Any, Any, Any]
    hyp: Any


class ParakeetStreamingEngine(StreamingEngine):
    def __init__(self, spec: EngineSpec) -> None:
        super().__init__(spec)
        self.runtime = self.runtime_as(NemoRuntime)
        streaming = self.runtime.streaming
        if streaming is None:
            raise EngineLoadError(f"{spec.id}: runtime.streaming is missing; the parakeet-streaming family needs "
                                  "mode: cache-aware (att_context_size) or buffered (chunk/context seconds)")
        self.mode: Literal["cache-aware", "buffered"] = streaming.mode
        # The mode's own fields, narrowed once (NemoStreaming's validator requires them for their mode).
        self.att_context_size: list[int] = []  # cache-aware: [left, right] encoder frames
        self.chunk_seconds = self.context_seconds = 0.0  # buffered: audio decided per step, whole window
        if streaming.mode == "cache-aware":
            if streaming.att_context_size is None:
                raise EngineLoadError(f"{spec.id}: cache-aware streaming needs runtime.streaming.att_context_size")
            self.att_context_size = list(streaming.att_context_size)
        else:
            if streaming.chunk_seconds is None or streaming.context_seconds is None:
                raise EngineLoadError(f"{spec.id}: buffered streaming needs runtime.streaming.chunk_seconds and "
                                      "context_seconds")
            self.chunk_seconds, self.context_seconds = streaming.chunk_seconds, streaming.context_seconds
        self.model: Any = None  # a NeMo ASRModel (NeMo ships no types)
        self.preprocessor: Any = None
        # Held around every model call (batched steps on the scheduler thread, batch transcribe requests).
        self.lock = threading.RLock()
        # One of the two runs the model steps, by mode (`batcher` is whichever it is).
        self.chunk_batcher: MicroBatcher[_Chunk, _ChunkOut] | None = None  # cache-aware
        self.window_batcher: MicroBatcher[np.ndarray, list[Word]] | None = None  # buffered
        self._trim_outputs = False  # cache-aware: non-last chunks must be cut to valid_out_len
        self.drop_extra = 0  # cache-aware: subsampled frames a later chunk drops (its pre-encode cache)
        self.frame_seconds = 0.0  # seconds per encoder output frame
        self.feature_seconds = 0.0  # seconds per feature frame
        self.subsampling = 8
        self._timestamps = True  # decoding config state; only changed under `lock`

    # ------------------------------------------------------------------ lifecycle
    @property
    def batcher(self) -> MicroBatcher[_Chunk, _ChunkOut] | MicroBatcher[np.ndarray, list[Word]] | None:
        """The batcher that runs this engine's model steps (its `stats` feed tests and logs)."""
        return self.chunk_batcher if self.chunk_batcher is not None else self.window_batcher

    def load(self, weights_dir: Path) -> None:
        runtime = self.runtime
        self.model, self.device = nemo_rt.load_asr_model(self.spec, weights_dir)
        nemo_rt.select_decoder(self.model, runtime.decoder, model_file=runtime.model_file)
        self.compute_type = "float32"
        self.feature_seconds = float(self.model.cfg.preprocessor.window_stride)
        self.subsampling = int(getattr(self.model.encoder, "subsampling_factor", 8))
        self.frame_seconds = self.feature_seconds * self.subsampling
        name = f"realtime-batch-{self.spec.id}"
        if self.mode == "cache-aware":
            self._setup_cache_aware()
            self.chunk_batcher = MicroBatcher(self._cache_aware_step, max_batch=runtime.batch_size,
                                              window_s=GATHER_S, name=name)
        else:
            self.window_batcher = MicroBatcher(self._window_step, max_batch=runtime.batch_size, window_s=GATHER_S,
                                               name=name)

    def _setup_cache_aware(self) -> None:
        from nemo.collections.asr.parts.mixins.streaming import StreamingEncoder

        runtime = self.runtime
        encoder = self.model.encoder
        if runtime.decoder == "ctc":
            raise nemo_rt.NemoLoadError(f"{runtime.model_file}: cache-aware streaming here decodes with a transducer "
                                        "head (runtime.decoder rnnt or tdt); use mode: buffered for CTC")
        if not isinstance(encoder, StreamingEncoder) or getattr(encoder, "att_context_style", "") not in (
                "chunked_limited", "chunked_limited_with_rc"):
            raise nemo_rt.NemoLoadError(f"{runtime.model_file}: not a cache-aware checkpoint (encoder "
                                        f"{type(encoder).__name__}, att_context_style "
                                        f"{getattr(encoder, 'att_context_style', None)!r}); use mode: buffered")
        wanted = self.att_context_size
        supported = [list(c) for c in getattr(encoder, "att_context_size_all", [encoder.att_context_size])]
        if wanted not in supported:
            raise nemo_rt.NemoLoadError(f"{runtime.model_file}: runtime.streaming.att_context_size {wanted} is not one "
                                        f"this checkpoint was trained with: {supported}")
        encoder.set_default_att_context_size(wanted)
        try:
            self.preprocessor = streaming_preprocessor(self.model)
        except ValueError as exc:
            raise nemo_rt.NemoLoadError(f"{runtime.model_file}: {exc}") from None
        cfg = encoder.streaming_cfg
        # read once: NeMo's own stream step rewrites this shared field per call (module docstring)
        self.drop_extra = int(cfg.drop_extra_pre_encoded)
        # Does a steady chunk encode to more frames than valid_out_len (chunked_limited_with_rc)? Then
        # NeMo cuts non-last chunks and keeps all of the last one, and the two cannot share a step.
        steady = self._pick(cfg.chunk_size, False) + self._pick(cfg.pre_encode_cache_size, False)
        self._trim_outputs = cfg.valid_out_len > 0 and self._encoded_frames(steady, self.drop_extra) > \
            cfg.valid_out_len
        log.info("parakeet_streaming_setup engine_id=%s mode=cache-aware att_context_size=%s chunk_frames=%s "
                 "shift_frames=%s pre_encode_cache=%s max_batch=%d", self.spec.id, wanted, cfg.chunk_size,
                 cfg.shift_size, cfg.pre_encode_cache_size, runtime.batch_size)

    def _encoded_frames(self, feature_frames: int, drop: int) -> int:
        import torch

        n_mels = int(self.model.encoder._feat_in)
        with self.lock, torch.inference_mode():
            x = torch.zeros((1, n_mels, feature_frames), device=self.model.device)
            return int(self._pre_encode(x, drop)[0].shape[1])

    @staticmethod
    def _pick(value: Any, first: bool) -> int:
        if isinstance(value, (list, tuple)):
            return int(value[0] if first else value[1])
        return int(value)

    def describe(self) -> dict[str, str]:
        facts = {**super().describe(), "decoder": self.runtime.decoder, "streaming": self.mode}
        if self.mode == "cache-aware":
            facts["att_context_size"] = "x".join(str(v) for v in self.att_context_size)
        return facts

    # ------------------------------------------------------------------ batch (same weights, whole file)
    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        if options.task == "translate":
            raise UnsupportedOption("task", f"{self.spec.id} transcribes only; translation is not supported")
        duration = len(audio) / SAMPLE_RATE
        words = self.decode_window(np.asarray(audio, dtype=np.float32))
        segments = nemo_rt.segments_from_words(words)
        return Transcript(nemo_rt.join_words(words), options.language or self.spec.capabilities.languages[0],
                          duration, segments)

    def decode_window(self, audio: np.ndarray) -> list[Word]:
        """Offline decode of one piece of audio with word timestamps (seconds from its start)."""
        import torch

        if len(audio) < SAMPLE_RATE // 10:
            return []
        with self.lock, torch.inference_mode():
            self.set_timestamps(True)
            out = self.model.transcribe([audio], batch_size=1, return_hypotheses=True, timestamps=True, verbose=False)
        hyp = (out[0] if isinstance(out, tuple) else out)[0]
        return nemo_rt.hypothesis_words(hyp, duration=len(audio) / SAMPLE_RATE)

    def decode_session_window(self, audio: np.ndarray) -> list[Word]:
        """A buffered session's window, decoded in one step with other sessions' windows of the same length."""
        if len(audio) < SAMPLE_RATE // 10:
            return []
        assert self.window_batcher is not None, "load() a buffered variant first"
        return self.window_batcher.submit(np.asarray(audio, dtype=np.float32))

    def set_timestamps(self, enabled: bool) -> None:
        """Offline decodes need NeMo's timestamp post-processing; cache-aware steps must not have it.

        WHY: with `compute_timestamps` on, NeMo turns each hypothesis' frame list into a dict, and the
        next streaming step's `merge_` of the continuation into the previous hypothesis then fails.
        Cache-aware sessions take frame indices from the raw hypotheses instead. Call under `lock`.
        """
        if self._timestamps != enabled:
            nemo_rt.select_decoder(self.model, self.runtime.decoder, model_file=self.runtime.model_file,
                                   timestamps=enabled)
            self._timestamps = enabled

    # ------------------------------------------------------------------ batched model steps (scheduler thread)
    def _pre_encode(self, signal: Any, drop: int) -> tuple[Any, Any]:
        """[B, n_mels, T] features -> ([B, T', d_model], lengths): the encoder's subsampling, as NeMo's
        `ConformerEncoder.forward_internal` runs it before the conformer layers, then the dropped frames."""
        import torch

        encoder = self.model.encoder
        x = signal.transpose(1, 2)
        lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.int64, device=x.device)
        if isinstance(encoder.pre_encode, torch.nn.Linear):
            return encoder.pre_encode(x), lengths
        x, lengths = encoder.pre_encode(x=x, lengths=lengths)
        lengths = lengths.to(torch.int64)
        if drop > 0:
            x = x[:, drop:, :]
            lengths = (lengths - drop).clamp(min=0)
        return x, lengths

    def _cache_aware_step(self, chunks: Sequence[_Chunk]) -> list[_ChunkOut]:
        """ONE conformer_stream_step for every session in `chunks` (see the module docstring).

        Only an encoder whose chunks encode to more frames than it outputs (chunked_limited_with_rc)
        needs two calls when last and non-last chunks meet: NeMo keeps all frames of a last chunk only.
        """
        if not self._trim_outputs or len({c.last for c in chunks}) == 1:
            return self._cache_aware_call(chunks)
        results: dict[int, _ChunkOut] = {}
        for last in (False, True):
            members = [i for i, c in enumerate(chunks) if c.last == last]
            for i, out in zip(members, self._cache_aware_call([chunks[i] for i in members])):
                results[i] = out
        return [results[i] for i in range(len(chunks))]

    def _cache_aware_call(self, chunks: Sequence[_Chunk]) -> list[_ChunkOut]:
        import torch

        model = self.model
        self.observe_batch(len(chunks))
        with self.lock, torch.inference_mode():
            self.set_timestamps(False)
            # pre-encode per input shape (first chunk / later chunk / short last chunk)
            embedded: list[Any] = [None] * len(chunks)
            shapes: dict[tuple[int, int], list[int]] = {}
            for i, chunk in enumerate(chunks):
                shapes.setdefault((int(chunk.signal.shape[1]), chunk.drop), []).append(i)
            for (_, drop), members in shapes.items():
                x, lengths = self._pre_encode(torch.stack([chunks[i].signal for i in members]), drop)
                for k, i in enumerate(members):
                    embedded[i] = x[k, : int(lengths[k])]
            lengths = torch.tensor([e.shape[0] for e in embedded], dtype=torch.int64, device=model.device)
            signal = torch.nn.utils.rnn.pad_sequence(embedded, batch_first=True)
            (_, _, c_channel, c_time, c_len, hyps) = model.conformer_stream_step(
                processed_signal=signal, processed_signal_length=lengths,
                cache_last_channel=torch.cat([c.cache[0] for c in chunks], dim=1),
                cache_last_time=torch.cat([c.cache[1] for c in chunks], dim=1),
                cache_last_channel_len=torch.cat([c.cache[2] for c in chunks], dim=0),
                keep_all_outputs=all(c.last for c in chunks), previous_hypotheses=[c.hyp for c in chunks],
                previous_pred_out=None, drop_extra_pre_encoded=None, return_transcription=True,
                bypass_pre_encode=True)
            # clones: a session's cache must not keep the whole batch's tensors alive
            return [_ChunkOut((c_channel[:, i:i + 1].clone(), c_time[:, i:i + 1].clone(), c_len[i:i + 1].clone()),
                              hyps[i]) for i in range(len(chunks))]

    def _window_step(self, windows: Sequence[np.ndarray]) -> list[list[Word]]:
        """Buffered sessions' windows: one offline `transcribe` call per window length.

        WHY per length: stacking windows of different lengths pads the shorter ones, and padding
        changes what the convolutions and the per-feature normalisation see, so a session's words
        would depend on who it shared the step with. Steady-state windows all have one length
        (`context_seconds`); only a stream's first and last windows are shorter.
        """
        results: dict[int, list[Word]] = {}
        by_length: dict[int, list[int]] = {}
        for i, window in enumerate(windows):
            by_length.setdefault(len(window), []).append(i)
        for members in by_length.values():
            group = [windows[i] for i in members]
            self.observe_batch(len(group))
            for i, words in zip(members, self._transcribe_windows(group)):
                results[i] = words
        return [results[i] for i in range(len(windows))]

    def _transcribe_windows(self, windows: Sequence[np.ndarray]) -> list[list[Word]]:
        import torch

        with self.lock, torch.inference_mode():
            self.set_timestamps(True)
            out = self.model.transcribe(list(windows), batch_size=len(windows), return_hypotheses=True,
                                        timestamps=True, verbose=False)
        hyps = out[0] if isinstance(out, tuple) else out
        return [nemo_rt.hypothesis_words(h, duration=len(w) / SAMPLE_RATE) for h, w in zip(hyps, windows)]

    # ------------------------------------------------------------------ realtime
    def open_session(self, language: str | None = None, turn: TurnDetection | None = None) -> StreamingSession:
        if language is not None and language not in self.spec.capabilities.languages:
            raise UnsupportedOption("language", f"{self.spec.id} supports {', '.join(self.spec.capabilities.languages)}, "
                                                f"not '{language}'")
        vad = vad_config_for(turn)  # prefix_padding_ms: no effect, the model hears all audio anyway
        if self.mode == "cache-aware":
            return CacheAwareSession(self, vad)
        return BufferedSession(self, vad)


class _WordBuilder:
    """Sub-word tokens with their times -> words (a piece starting with '▁' opens a new word)."""

    def __init__(self, tokenizer: Any, frame_seconds: float) -> None:
        self.tokenizer = tokenizer
        self.frame_seconds = frame_seconds
        self.done: list[Word] = []
        self.first_index = 0  # word number of done[0]
        self._ids: list[int] = []
        self._frames: list[int] = []

    def add(self, token_ids: list[int], frames: list[int]) -> None:
        pieces = self.tokenizer.ids_to_tokens(token_ids) if token_ids else []
        for token, piece, frame in zip(token_ids, pieces, frames):
            if piece.startswith(_WORD_START) and self._ids:
                self._close()
            self._ids.append(token)
            self._frames.append(frame)

    def _close(self) -> None:
        text = self.tokenizer.ids_to_text(self._ids).strip()
        if text:
            start = self._frames[0] * self.frame_seconds
            end = (self._frames[-1] + 1) * self.frame_seconds
            self.done.append(Word(round(start, 3), round(end, 3), text))
        self._ids, self._frames = [], []

    def words(self) -> list[Word]:
        """Complete words, then the open one (if any) last."""
        if not self._ids:
            return list(self.done)
        text = self.tokenizer.ids_to_text(self._ids).strip()
        open_word = Word(round(self._frames[0] * self.frame_seconds, 3),
                         round((self._frames[-1] + 1) * self.frame_seconds, 3), text)
        return [*self.done, open_word] if text else list(self.done)

    def has_open(self) -> bool:
        return bool(self._ids) and bool(self.tokenizer.ids_to_text(self._ids).strip())

    def forget_before(self, index: int) -> None:
        drop = max(0, min(index - self.first_index, len(self.done)))
        del self.done[:drop]
        self.first_index += drop


class CacheAwareSession(StreamingSession):
    """One stream through a cache-aware encoder: its own feature buffer, encoder caches and hypothesis.

    Each ready chunk is handed to the engine's batcher and this (worker) thread waits for the step
    that runs it; everything else (features, VAD, events) runs here, in parallel with other sessions.
    """

    def __init__(self, engine: ParakeetStreamingEngine, vad: VadConfig | None = None) -> None:
        import torch

        self.engine = engine
        model = engine.model
        self.cfg = model.encoder.streaming_cfg
        self.features = IncrementalFeatures(engine.preprocessor)
        self.policy = UtterancePolicy(vad, sample_rate=SAMPLE_RATE)
        self.words = _WordBuilder(model.tokenizer, engine.frame_seconds)
        n_mels = int(model.encoder._feat_in)
        self._feats = torch.zeros((1, n_mels, 0))  # feature frames from _feat_offset on (cache + unconsumed)
        self._feat_offset = 0
        self._available = 0  # feature frames received in total
        self._buffer_idx = 0  # global feature frame where the next chunk starts
        self._step = 0
        with engine.lock:
            self._cache = model.encoder.get_initial_cache_state(batch_size=1)
        self.hypothesis: Any = None  # the running NeMo Hypothesis (tokens so far)
        self._emitted = 0  # tokens of the hypothesis already turned into words
        sampling = getattr(model.encoder.pre_encode, "get_sampling_frames", lambda: None)()
        self._sampling = sampling
        self.steps = 0

    _pick = staticmethod(ParakeetStreamingEngine._pick)

    # ------------------------------------------------------------------ protocol
    def accept(self, audio: np.ndarray) -> list[StreamEvent]:
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        events = self.policy.audio(audio)  # updates held for the VAD that this audio made due
        self.words.forget_before(self.policy.taken)
        self._add_features(self.features.push(audio))
        while self._available - self._buffer_idx >= self._pick(self.cfg.chunk_size, self._step == 0):
            self._run_chunk(last=False)
            # updates come from model steps only, so what is emitted does not depend on how the
            # client slices its audio; each is released once the VAD has heard past it (here, or by
            # the client's next frames in policy.audio)
            events += self._events(last_open=True)
        return events

    def finish(self) -> list[StreamEvent]:
        self._add_features(self.features.flush())
        events: list[StreamEvent] = []
        while self._buffer_idx < self._available:
            remaining = self._available - self._buffer_idx
            if self._sampling is not None and remaining < self._pick(self._sampling, self._step == 0):
                break  # too short to produce an encoder frame (NeMo's buffer stops here too)
            last = remaining <= self._pick(self.cfg.chunk_size, self._step == 0)
            self._run_chunk(last=last)
            events += self._events(last_open=not last)
        events += self._events(last_open=False)
        return events + self.policy.finish()

    # ------------------------------------------------------------------ internals
    def _add_features(self, feats: np.ndarray) -> None:
        import torch

        if feats.shape[1]:
            self._feats = torch.cat([self._feats, torch.from_numpy(feats)[None]], dim=2)
            self._available += feats.shape[1]

    def _run_chunk(self, *, last: bool) -> None:
        """One step of this stream, fed exactly as NeMo's CacheAwareStreamingAudioBuffer would feed it,
        run by the engine's batcher together with the other sessions that have a chunk ready."""
        import torch

        assert self.engine.chunk_batcher is not None, "load() a cache-aware variant first"
        first = self._step == 0
        chunk_size = self._pick(self.cfg.chunk_size, first)
        shift = self._pick(self.cfg.shift_size, first)
        start = self._buffer_idx - self._feat_offset
        chunk = self._feats[0, :, start:start + chunk_size]
        cache_frames = self._pick(self.cfg.pre_encode_cache_size, first)
        if first:
            cache = torch.zeros((chunk.shape[0], cache_frames))
        else:
            cache = self._feats[0, :, max(0, start - cache_frames):start]
            if cache.shape[1] < cache_frames:
                cache = torch.cat([torch.zeros((chunk.shape[0], cache_frames - cache.shape[1])), cache], dim=1)
        signal = torch.cat([cache, chunk], dim=1).to(self.engine.model.device)
        out = self.engine.chunk_batcher.submit(_Chunk(signal, 0 if first else self.engine.drop_extra, last,
                                                self._cache, self.hypothesis))
        self._cache, self.hypothesis = out.cache, out.hyp
        # this chunk's encoder output starts at encoder frame ceil(buffer_idx / subsampling) of the
        # stream (causal 8x subsampling: mel frame 0 -> encoder frame 0)
        self._collect_tokens(out.hyp, -(-self._buffer_idx // self.engine.subsampling))
        self._buffer_idx += shift
        self._step += 1
        self.steps += 1
        # forget features no future chunk or pre-encode cache can need
        keep = max(0, self._buffer_idx - self._pick(self.cfg.pre_encode_cache_size, False)) - self._feat_offset
        if keep > 0:
            self._feats = self._feats[:, :, keep:]
            self._feat_offset += keep

    def _collect_tokens(self, hyp: Any, chunk_frame: int) -> None:
        """New tokens of the running hypothesis, with the stream encoder frame each was emitted at."""
        sequence = hyp.y_sequence
        tokens = sequence.tolist() if hasattr(sequence, "tolist") else list(sequence)
        stamps = hyp.timestamp
        stamps = stamps.tolist() if hasattr(stamps, "tolist") else list(stamps or [])
        new = tokens[self._emitted:]
        if not new:
            return
        if len(stamps) == len(tokens):
            # NeMo's label-looping decoders keep a running `decoded_length` in the decoder state and
            # give stream-global frames; other greedy decoders number frames within the chunk.
            base = 0 if hasattr(hyp.dec_state, "decoded_length") else chunk_frame
            frames = [base + int(f) for f in stamps[self._emitted:]]
        else:  # no per-token frames: place them at the start of this chunk
            frames = [chunk_frame] * len(new)
        self._emitted = len(tokens)
        self.words.add([int(t) for t in new], frames)

    def _events(self, *, last_open: bool) -> list[StreamEvent]:
        decoded_until = self._buffer_idx * self.engine.feature_seconds
        words = self.words.words()
        events = self.policy.words(words[self.policy.taken - self.words.first_index:] if words else [],
                                   self.policy.taken, decoded_until, last_open=last_open and self.words.has_open())
        self.words.forget_before(self.policy.taken)
        return events


class BufferedSession(StreamingSession):
    """One stream decoded chunk by chunk inside a sliding window of left/right context."""

    def __init__(self, engine: ParakeetStreamingEngine, vad: VadConfig | None = None) -> None:
        self.engine = engine
        self.chunk = round(engine.chunk_seconds * SAMPLE_RATE)
        total = max(engine.context_seconds, engine.chunk_seconds)
        self.side = round((total - engine.chunk_seconds) / 2 * SAMPLE_RATE)
        self.policy = UtterancePolicy(vad, sample_rate=SAMPLE_RATE)
        self._audio = np.zeros(0, dtype=np.float32)
        self._offset = 0  # stream sample index of _audio[0]
        self._total = 0
        self._next = 0  # stream sample index where the next chunk starts
        self._words: list[Word] = []
        self._first_index = 0
        self.windows = 0

    def accept(self, audio: np.ndarray) -> list[StreamEvent]:
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        events = self.policy.audio(audio)  # updates held for the VAD that this audio made due
        self._forget_taken()
        self._audio = np.concatenate([self._audio, audio])
        self._total += len(audio)
        while self._total >= self._next + self.chunk + self.side:
            self._decode_chunk()
            events += self._events()  # per decoded chunk: independent of how the client slices audio
        return events

    def finish(self) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        while self._next < self._total:
            self._decode_chunk()
            events += self._events()
        return events + self._events() + self.policy.finish()

    def _decode_chunk(self) -> None:
        start, end = self._next, self._next + self.chunk
        lo, hi = max(0, start - self.side), min(self._total, end + self.side)
        window = self._audio[lo - self._offset:hi - self._offset]
        last = end >= self._total
        offset = lo / SAMPLE_RATE
        for w in self.engine.decode_session_window(window):
            t = w.start + offset
            if start / SAMPLE_RATE <= t and (t < end / SAMPLE_RATE or last):
                self._words.append(Word(round(t, 3), round(w.end + offset, 3), w.word, w.probability))
        self._next = end
        self.windows += 1
        keep_from = max(0, self._next - self.side)
        if keep_from > self._offset:
            self._audio = self._audio[keep_from - self._offset:]
            self._offset = keep_from

    def _events(self) -> list[StreamEvent]:
        decoded_until = min(self._next, self._total) / SAMPLE_RATE
        taken = self.policy.taken
        events = self.policy.words(self._words[taken - self._first_index:], taken, decoded_until, last_open=False)
        self._forget_taken()
        return events

    def _forget_taken(self) -> None:
        drop = self.policy.taken - self._first_index
        del self._words[:drop]
        self._first_index += drop


ENGINE = ParakeetStreamingEngine
