"""The parakeet batch family on tiny real NeMo checkpoints (TDT and CTC), loaded through test-only variants.

What is real here: the `.nemo` files (built and trained at test time), NeMo restore, the decoder
heads, greedy decoding, timestamps, local attention, and the family's own batching. The models
were trained only on beckett.wav, so on beckett they must say its words at its times; on any
other audio their text is meaningless and only structure is checked.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from dalston.catalog import Catalog
from dalston.engine_sdk import (
    SAMPLE_RATE,
    TranscribeOptions,
    Transcript,
    UnsupportedOption,
    create_engine,
)
from dalston.runtimes.nemo import NemoLoadError
from tests.fixtures import nemo_models
from tests.nemo.conftest import target_words, words_of

BATCH_VARIANTS = ("parakeet-tiny-tdt", "parakeet-tiny-ctc")
EN = TranscribeOptions(language="en")


def check_timestamps(transcript: Transcript, duration: float) -> None:
    """Segments and words in order, inside the audio, each segment holding exactly its words' text."""
    previous_seg_end, previous_word_start = 0.0, 0.0
    for i, segment in enumerate(transcript.segments):
        assert segment.id == i
        assert previous_seg_end - 1e-6 <= segment.start <= segment.end <= duration + 1e-6, segment
        assert segment.words, f"segment without words: {segment}"
        assert segment.text == " ".join(w.word for w in segment.words)
        assert segment.start == segment.words[0].start and segment.end == segment.words[-1].end
        for word in segment.words:
            assert previous_word_start - 1e-6 <= word.start <= word.end <= duration + 1e-6, word
            previous_word_start = word.start
        previous_seg_end = segment.end
    assert words_of(transcript.text) == words_of(" ".join(s.text for s in transcript.segments))
    # exactly, not just after normalising: words are cut where the text has spaces (CTC included)
    assert transcript.text == " ".join(w.word for w in transcript.words)


@pytest.mark.parametrize("variant_id", BATCH_VARIANTS)
def test_loads_the_pinned_file_with_the_variants_decoder(load_variant, variant_id: str) -> None:
    engine = load_variant(variant_id)
    facts = engine.describe()
    assert facts["device"] == "cpu"
    assert facts["decoder"] == engine.spec.runtime.decoder
    model = engine.model
    if engine.spec.runtime.decoder == "ctc":
        assert type(model).__name__ == "EncDecCTCModelBPE"
    else:
        # TDT greedy decoding is a different NeMo decoding class than RNNT; the durations come from the checkpoint
        assert type(model).__name__ == "EncDecRNNTBPEModel"
        assert "TDT" in type(model.decoding.decoding).__name__, type(model.decoding.decoding).__name__
        assert list(model.decoding.decoding.durations) == nemo_models.TDT_DURATIONS
    assert model.cfg.decoding.compute_timestamps is True


@pytest.mark.parametrize("variant_id", BATCH_VARIANTS)
def test_beckett_words_and_timestamps(load_variant, clip, variant_id: str) -> None:
    """The clip the tiny models were trained on: its words, in order, inside the audio, cut at sentence ends."""
    audio = clip("beckett")
    duration = len(audio) / SAMPLE_RATE
    transcript = load_variant(variant_id).transcribe(audio, EN)
    print(f"parakeet_tiny variant={variant_id} text={transcript.text!r}")
    assert transcript.language == "en" and transcript.duration == pytest.approx(duration)
    assert words_of(transcript.text) == target_words()
    check_timestamps(transcript, duration)
    # cased, punctuated output is cut into one segment per sentence
    assert [s.text for s in transcript.segments] == list(nemo_models.PHRASES)
    if variant_id == "parakeet-tiny-tdt":
        # TDT word times come from predicted durations and land where the phrases are (the phrase
        # boundaries are the pauses in the recording); CTC spike times are only ordered, not placed.
        for segment, cut in zip(transcript.segments[1:], nemo_models.CUTS[1:-1]):
            assert abs(segment.start - cut) < 0.4, (segment, cut)


@pytest.mark.parametrize("variant_id", BATCH_VARIANTS)
def test_other_audio_gives_well_formed_output(load_variant, clip, variant_id: str) -> None:
    """two_cities is not what the tiny models know: no claim about the words, only about the structure."""
    audio = clip("two_cities")[: 20 * SAMPLE_RATE]  # under the 30 s local-attention threshold
    transcript = load_variant(variant_id).transcribe(audio, EN)
    check_timestamps(transcript, 20.0)


def test_concurrent_requests_share_model_calls_and_match_single_results(load_variant, clip) -> None:
    """N requests at once -> fewer than N model calls (micro-batching), same transcripts as one at a time."""
    engine = load_variant("parakeet-tiny-tdt")
    beckett = clip("beckett")
    inputs = [beckett, beckett[: 6 * SAMPLE_RATE], clip("two_cities")[: 12 * SAMPLE_RATE], beckett[2 * SAMPLE_RATE:]]
    alone = [engine.transcribe(a, EN) for a in inputs]
    before = engine.batcher.stats.batches
    results: list[Transcript | None] = [None] * len(inputs)
    barrier = threading.Barrier(len(inputs))

    def run(i: int) -> None:
        barrier.wait()
        results[i] = engine.transcribe(inputs[i], EN)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    calls = engine.batcher.stats.batches - before
    assert 1 <= calls < len(inputs), f"{len(inputs)} concurrent requests took {calls} model calls"
    assert max(list(engine.batcher.stats.sizes)[-calls:]) > 1
    for single, batched in zip(alone, results):
        assert batched is not None
        assert batched.text == single.text
        assert [w.word for w in batched.words] == [w.word for w in single.words]
        # Padding to the batch's longest file may move a TDT duration by one encoder frame (80 ms), no more.
        for a, b in zip(batched.words, single.words):
            assert abs(a.start - b.start) <= 0.081 and abs(a.end - b.end) <= 0.081, (a, b)


@pytest.mark.parametrize("variant_id", BATCH_VARIANTS)
def test_long_audio_switches_to_local_attention_and_back(load_variant, clip, variant_id: str) -> None:
    """44 s > local_attention_above_seconds (30 in the test variant): decoded with local attention, then restored."""
    engine = load_variant(variant_id)
    short_before = engine.transcribe(clip("beckett"), EN)
    calls = engine.long_audio_calls
    audio = clip("two_cities")
    transcript = engine.transcribe(audio, EN)
    assert engine.long_audio_calls == calls + 1
    check_timestamps(transcript, len(audio) / SAMPLE_RATE)
    encoder = engine.model.encoder
    assert encoder.self_attention_model == "rel_pos"
    assert list(encoder.att_context_size) == [-1, -1]
    assert engine.transcribe(clip("beckett"), EN) == short_before


def test_local_attention_really_changes_the_encoder(load_variant, clip) -> None:
    """The long path is not a no-op: forcing it on the training clip changes the encoder's attention layers."""
    engine = load_variant("parakeet-tiny-tdt")
    layer = engine.model.encoder.layers[0].self_attn
    before = type(layer).__name__
    engine.model.change_attention_model("rel_pos_local_attn", [32, 32], update_config=False)
    try:
        assert type(engine.model.encoder.layers[0].self_attn).__name__ != before
    finally:
        engine.model.change_attention_model("rel_pos", [-1, -1], update_config=False)
    assert type(engine.model.encoder.layers[0].self_attn).__name__ == before


def test_translate_and_foreign_language_are_clear_errors(load_variant, clip) -> None:
    engine = load_variant("parakeet-tiny-tdt")
    with pytest.raises(UnsupportedOption) as err:
        engine.transcribe(clip("beckett"), TranscribeOptions(task="translate"))
    assert err.value.param == "task" and "translation" in err.value.message
    with pytest.raises(UnsupportedOption) as err:
        engine.transcribe(clip("beckett"), TranscribeOptions(language="de"))
    assert err.value.param == "language"


@pytest.mark.parametrize("samples", [0, 100])
def test_empty_and_tiny_audio_give_an_empty_transcript(load_variant, samples: int) -> None:
    transcript = load_variant("parakeet-tiny-ctc").transcribe(np.zeros(samples, dtype=np.float32), EN)
    assert transcript.text == "" and transcript.segments == ()


def test_missing_weight_file_is_a_clear_load_error(nemo_engines_root: Path, tmp_path: Path) -> None:
    engine = create_engine(Catalog.load(nemo_engines_root).get("parakeet-tiny-tdt"))
    with pytest.raises(NemoLoadError, match="parakeet-tiny-tdt.nemo.*missing.*dalston models pull"):
        engine.load(tmp_path)


def test_decoder_the_checkpoint_lacks_is_a_clear_load_error(nemo_engines_root: Path, nemo_model_root: Path,
                                                             tmp_path: Path) -> None:
    """A variant saying `decoder: tdt` over a CTC-only checkpoint must not silently serve CTC."""
    ctc = Catalog.load(nemo_engines_root).get("parakeet-tiny-ctc")
    text = (ctc.dir / "variants" / "tiny-ctc.yaml").read_text().replace("decoder: ctc", "decoder: tdt")
    text = text.replace("id: parakeet-tiny-ctc", "id: parakeet-tiny-wrong")
    (ctc.dir / "variants" / "tiny-wrong.yaml").write_text(text)
    try:
        engine = create_engine(Catalog.load(nemo_engines_root).get("parakeet-tiny-wrong"))
        with pytest.raises(NemoLoadError, match="runtime.decoder is 'tdt' but this checkpoint .* has only: ctc"):
            engine.load(nemo_model_root / "parakeet-tiny-ctc")
    finally:
        (ctc.dir / "variants" / "tiny-wrong.yaml").unlink()


@pytest.mark.parametrize("pieces", [
    ["▁f", "ail", "ed", "▁", "."],  # NeMo words: 'failed', '.' (the text is 'failed.')
    ["ail", ".", "▁", ".", "."],  # NeMo words: 'ail.', '..' (the text is 'ail...')
    ["▁F", "ail", "▁", ".", "▁ag", "ain"],  # NeMo words: 'Fail', '.', 'again' (the text is 'Fail. again')
    ["▁", "f", "▁", "ail", "ed"],  # here NeMo agrees: 'f', 'ailed'
])
def test_ctc_words_are_the_words_of_the_text(load_variant, pieces: list[str]) -> None:
    """Token sequences where NeMo 3.0.0's own word grouper disagrees with its text (a lone '▁' before '.'),
    run through the real CTC decoding of the tiny checkpoint: our words are exactly the text's words."""
    from nemo.collections.asr.parts.utils.rnnt_utils import Hypothesis
    from nemo.collections.asr.parts.utils.timestamp_utils import process_timestamp_outputs

    from dalston.runtimes.nemo import hypothesis_words

    model = load_variant("parakeet-tiny-ctc").model
    ids = [model.tokenizer.tokenizer.piece_to_id(p) for p in pieces]
    assert 0 not in ids, "every piece is in the tiny tokenizer's vocabulary"
    hyp = Hypothesis(score=0.0, y_sequence=ids, text=(ids, [2] * len(ids)), timestamp=[])
    hyp = model.decoding.compute_ctc_timestamps(hyp, "all")
    hyp = process_timestamp_outputs([hyp], model.encoder.subsampling_factor,
                                    model.cfg.preprocessor.window_stride)[0]
    nemo_words = [w["word"] for w in hyp.timestamp["word"]]
    words = hypothesis_words(hyp)
    assert [w.word for w in words] == hyp.text.split(), (hyp.text, nemo_words)
    assert all(a.end <= b.start + 1e-6 or a.start <= b.start for a, b in zip(words, words[1:]))


@pytest.mark.parametrize("signal", ["silence", "tone_440hz", "white_noise"])
def test_non_speech_gives_an_empty_transcript(load_variant, signal: str) -> None:
    """VAD gating (runtime.vad_filter): no speech found, nothing decoded, nothing invented."""
    from tests.fixtures import noise

    transcript = load_variant("parakeet-tiny-tdt").transcribe(noise.NON_SPEECH[signal](), EN)
    assert transcript.text == "" and transcript.segments == ()


def test_speech_around_a_long_silence_adds_no_words_in_it(load_variant, clip) -> None:
    """The tiny model knows beckett only as recorded, so its words on the spliced clip are not checked,
    only that none is placed in the silence (the whisper tests check the words themselves)."""
    from tests.fixtures import noise

    engine = load_variant("parakeet-tiny-tdt")
    audio, gap_start, gap_end = noise.speech_with_gap("beckett", 20.0)
    transcript = engine.transcribe(audio, EN)
    assert transcript.words and transcript.text == " ".join(w.word for w in transcript.words)
    assert not [w for w in transcript.words if w.start > gap_start + 0.5 and w.end < gap_end - 0.5]
    ungated = engine.transcribe(noise.silence(30.0), TranscribeOptions(language="en", vad_filter=False))
    print(f"parakeet_tiny on 30 s of silence without VAD: {ungated.text!r}")


@pytest.mark.parametrize("variant_id", BATCH_VARIANTS)
def test_hotwords_switch_in_nemos_boosting_tree_for_that_request_only(load_variant, clip, variant_id: str) -> None:
    """NeMo 3.0.0 boosts phrases for greedy TDT and CTC decoding: the decode changes, and the next
    request without hotwords decodes exactly as before (decoder restored)."""
    engine = load_variant(variant_id)
    audio = clip("two_cities")[: 10 * SAMPLE_RATE]
    plain = engine.transcribe(audio, EN)
    hinted = engine.transcribe(audio, TranscribeOptions(language="en", hotwords="Fail better, matter"))
    print(f"{variant_id} plain={plain.text!r} hinted={hinted.text!r}")
    assert hinted.text != plain.text
    # Which way a boost moves these tiny checkpoints is not asserted: they are trained on the test
    # machine (tests/fixtures/nemo_models.py) and their weights differ with its CPU's float kernels, so
    # the same hint added "matter" on one machine and dropped "Fail again." on another (AVX-512 EPYC).
    # The direction is tested on real Whisper weights (tests/server/test_hotwords.py).
    assert engine.transcribe(audio, EN) == plain


def test_without_the_vad_installed_silence_is_not_gated_and_asking_for_it_is_a_clear_error(load_variant) -> None:
    """The nemo extra alone has no faster-whisper (which ships the Silero model): the engine says so in
    describe(), serves ungated by default, and refuses an explicit vad_filter=true."""
    engine = load_variant("parakeet-tiny-tdt")
    assert engine.describe()["vad"] == "silero"
    engine.vad_available = False  # what speech_regions.available() reports without faster-whisper
    try:
        assert engine.describe()["vad"] == "unavailable"
        assert engine.transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32), EN).duration == 1.0
        with pytest.raises(UnsupportedOption) as err:
            engine.transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32), TranscribeOptions(language="en", vad_filter=True))
        assert err.value.param == "vad_filter" and "faster-whisper" in err.value.message
    finally:
        engine.vad_available = True
