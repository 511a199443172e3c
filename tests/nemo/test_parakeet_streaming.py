"""The parakeet-streaming family on tiny real NeMo checkpoints: cache-aware (TDT, trained; hybrid RNNT+CTC,
untrained) and buffered (the offline TDT checkpoint).

The cache-aware session is checked against NeMo's own offline simulation of cache-aware streaming
(`CacheAwareStreamingAudioBuffer` over the whole file + `conformer_stream_step`): fed 160 ms at a
time, the session must emit exactly the tokens NeMo emits with the whole recording in hand. The
incremental features are checked against the preprocessor run on the whole recording. Event
order, state isolation between interleaved sessions, and (on the training clip) the words
themselves are checked for both modes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from dalston.engine_sdk import SAMPLE_RATE, StreamingSession
from dalston.streaming.features import IncrementalFeatures, streaming_preprocessor
from tests.nemo.conftest import as_dicts, target_words, words_of

CHUNK = int(0.16 * SAMPLE_RATE)
CACHE_AWARE = ("parakeet-streaming-tiny", "parakeet-streaming-tiny-rnnt")
STREAMING_VARIANTS = (*CACHE_AWARE, "parakeet-streaming-tiny-buffered")


def run_session(session: StreamingSession, audio: np.ndarray, chunk: int = CHUNK) -> list[dict[str, Any]]:
    events = []
    for i in range(0, len(audio), chunk):
        events.extend(session.accept(audio[i:i + chunk]))
    events.extend(session.finish())
    return as_dicts(events)


def check_order(events: list[dict[str, Any]], duration: float) -> None:
    """speech_start (partial* final? speech_end)*: partials/finals only inside speech, finals moving forward."""
    in_speech, last_final_end, last_time = False, 0.0, 0.0
    for event in events:
        kind = event["type"]
        if kind == "vad.speech_start":
            assert not in_speech
            in_speech = True
            assert event["time"] >= last_time - 1e-6
            last_time = event["time"]
        elif kind == "vad.speech_end":
            assert in_speech
            in_speech = False
            assert event["time"] >= last_time - 1e-6
            last_time = event["time"]
        else:
            assert in_speech, f"{kind} outside speech"
            assert 0.0 <= event["start"] <= event["end"] <= duration + 0.1
            if kind == "transcript.final":
                assert event["start"] >= last_final_end - 0.5
                last_final_end = event["end"]
                assert event["text"] == " ".join(w["word"] for w in event["words"])
                starts = [w["start"] for w in event["words"]]
                assert starts == sorted(starts)
    assert not in_speech


def final_text(events: list[dict[str, Any]]) -> str:
    return " ".join(e["text"] for e in events if e["type"] == "transcript.final")


def test_incremental_features_equal_offline_features(load_variant, clip) -> None:
    engine = load_variant("parakeet-streaming-tiny")
    audio = clip("beckett")
    pre = streaming_preprocessor(engine.model)
    with torch.inference_mode():
        offline, length = pre(input_signal=torch.from_numpy(audio)[None], length=torch.tensor([len(audio)]))
    offline = offline[0, :, : int(length[0])].numpy()
    for chunk in (CHUNK, 333):
        feats = IncrementalFeatures(pre)
        parts = [feats.push(audio[i:i + chunk]) for i in range(0, len(audio), chunk)] + [feats.flush()]
        incremental = np.concatenate(parts, axis=1)
        assert incremental.shape == offline.shape
        np.testing.assert_allclose(incremental, offline, atol=1e-4, rtol=1e-4)


def nemo_simulation_tokens(model: Any, audio: np.ndarray) -> list[int]:
    """NeMo's reference: CacheAwareStreamingAudioBuffer over the whole file, as its streaming example script does."""
    from nemo.collections.asr.parts.utils.streaming_utils import (
        CacheAwareStreamingAudioBuffer,
    )

    buffer = CacheAwareStreamingAudioBuffer(model=model, online_normalization=False)
    buffer.append_audio(audio)
    cache = model.encoder.get_initial_cache_state(batch_size=1)
    hyps, pred = None, None
    for step, (chunk, lengths) in enumerate(iter(buffer)):
        with torch.inference_mode():
            pred, _, c1, c2, c3, hyps = model.conformer_stream_step(
                processed_signal=chunk, processed_signal_length=lengths, cache_last_channel=cache[0],
                cache_last_time=cache[1], cache_last_channel_len=cache[2], keep_all_outputs=buffer.is_buffer_empty(),
                previous_hypotheses=hyps, previous_pred_out=pred,
                drop_extra_pre_encoded=0 if step == 0 else model.encoder.streaming_cfg.drop_extra_pre_encoded,
                return_transcription=True)
        cache = (c1, c2, c3)
    return [int(t) for t in hyps[0].y_sequence]


@pytest.mark.parametrize(("variant_id", "clip_name", "seconds"), [
    ("parakeet-streaming-tiny", "beckett", None),
    ("parakeet-streaming-tiny", "endgame_nagg_nell", None),
    # untrained: it emits up to max_symbols tokens on every frame, so a few seconds make a long hypothesis
    ("parakeet-streaming-tiny-rnnt", "endgame_nagg_nell", 4),
])
def test_cache_aware_session_matches_nemo_offline_simulation(load_variant, clip, variant_id: str, clip_name: str,
                                                             seconds: float | None) -> None:
    engine = load_variant(variant_id)
    audio = clip(clip_name)[: int(seconds * SAMPLE_RATE) if seconds else None]
    with engine.lock:
        engine.set_timestamps(False)  # NeMo's streaming script runs without timestamp post-processing
        reference = nemo_simulation_tokens(engine.model, audio)
    session = engine.open_session("en")
    run_session(session, audio)
    assert [int(t) for t in session.hypothesis.y_sequence] == reference
    assert session.steps > 5


@pytest.mark.parametrize("variant_id", STREAMING_VARIANTS)
def test_beckett_stream_events(load_variant, clip, variant_id: str) -> None:
    """Training clip, 160 ms chunks: events in protocol order for every mode; the trained cache-aware
    model also says the clip's words, partials first (the buffered mode decodes windows that start
    mid-phrase, which the overfit model never saw, and the RNNT model is untrained: no word claims)."""
    engine = load_variant(variant_id)
    audio = clip("beckett")
    events = run_session(engine.open_session("en"), audio)
    if variant_id != "parakeet-streaming-tiny-rnnt":  # the untrained model's text is long noise
        print(f"parakeet_streaming variant={variant_id} events={[(e['type'], e.get('text')) for e in events]}")
    check_order(events, len(audio) / SAMPLE_RATE)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "vad.speech_start" and kinds[-1] == "vad.speech_end"
    if variant_id == "parakeet-streaming-tiny":
        assert "transcript.partial" in kinds
        assert kinds.index("transcript.partial") < kinds.index("transcript.final")
        assert words_of(final_text(events)) == target_words()
        # stable words: every partial's committed text is a prefix of what the utterance finally says
        finals = [e for e in events if e["type"] == "transcript.final"]
        for partial in (e for e in events if e["type"] == "transcript.partial"):
            assert any(f["text"].startswith(partial["committed"]) for f in finals), partial


def test_hybrid_checkpoint_streams_with_its_rnnt_head(load_variant) -> None:
    engine = load_variant("parakeet-streaming-tiny-rnnt")
    assert type(engine.model).__name__ == "EncDecHybridRNNTCTCBPEModel"
    assert engine.model.cur_decoder == "rnnt"
    assert "TDT" not in type(engine.model.decoding.decoding).__name__


@pytest.mark.parametrize("variant_id", STREAMING_VARIANTS)
def test_interleaved_sessions_are_isolated(load_variant, clip, variant_id: str) -> None:
    """Two sessions fed alternately give exactly what each gives alone (no shared caches or hypotheses)."""
    engine = load_variant(variant_id)
    seconds = 4 if variant_id == "parakeet-streaming-tiny-rnnt" else 12  # untrained: long noisy hypotheses
    a, b = clip("beckett")[: seconds * SAMPLE_RATE], clip("endgame_nagg_nell")[: seconds * SAMPLE_RATE]
    alone_a, alone_b = run_session(engine.open_session(), a), run_session(engine.open_session(), b)
    sa, sb = engine.open_session(), engine.open_session()
    got_a: list[Any] = []
    got_b: list[Any] = []
    for i in range(0, max(len(a), len(b)), CHUNK):
        if i < len(a):
            got_a.extend(sa.accept(a[i:i + CHUNK]))
        if i < len(b):
            got_b.extend(sb.accept(b[i:i + CHUNK]))
    got_b.extend(sb.finish())
    got_a.extend(sa.finish())
    assert as_dicts(got_a) == alone_a
    assert as_dicts(got_b) == alone_b
    check_order(alone_b, len(b) / SAMPLE_RATE)


def test_silence_produces_no_events(load_variant) -> None:
    engine = load_variant("parakeet-streaming-tiny")
    assert run_session(engine.open_session(), np.zeros(3 * SAMPLE_RATE, dtype=np.float32)) == []


@pytest.mark.parametrize("variant_id", ["parakeet-streaming-tiny", "parakeet-streaming-tiny-buffered"])
def test_client_chunking_does_not_change_the_events(load_variant, clip, variant_id: str) -> None:
    """Events are produced per model step, so 50 ms, 160 ms and 1 s client frames give the same stream."""
    engine = load_variant(variant_id)
    audio = clip("beckett")
    runs = {chunk: [(e["type"], e.get("text")) for e in run_session(engine.open_session(), audio, chunk)]
            for chunk in (800, CHUNK, 16000)}
    assert runs[800] == runs[CHUNK] == runs[16000], runs


def test_buffered_session_decodes_chunks_with_context(load_variant, clip) -> None:
    engine = load_variant("parakeet-streaming-tiny-buffered")
    session = engine.open_session()
    audio = clip("beckett")
    run_session(session, audio)
    streaming = engine.spec.runtime.streaming
    assert session.windows == int(np.ceil(len(audio) / SAMPLE_RATE / streaming.chunk_seconds))
    assert session.side == round((streaming.context_seconds - streaming.chunk_seconds) / 2 * SAMPLE_RATE)


def test_variant_att_context_must_be_one_the_checkpoint_has(nemo_engines_root, nemo_model_root) -> None:
    from dalston.catalog import Catalog
    from dalston.engine_sdk import create_engine
    from dalston.runtimes.nemo import NemoLoadError

    entry = Catalog.load(nemo_engines_root).get("parakeet-streaming-tiny")
    path = entry.dir / "variants" / "tiny-wrong.yaml"
    path.write_text((entry.dir / "variants" / "tiny.yaml").read_text()
                    .replace("id: parakeet-streaming-tiny", "id: parakeet-streaming-tiny-wrong")
                    .replace("att_context_size: [12, 3]", "att_context_size: [70, 6]"))
    try:
        engine = create_engine(Catalog.load(nemo_engines_root).get("parakeet-streaming-tiny-wrong"))
        with pytest.raises(NemoLoadError, match=r"att_context_size \[70, 6\] is not one .* \[\[12, 3\]\]"):
            engine.load(nemo_model_root / "parakeet-streaming-tiny")
    finally:
        path.unlink()
