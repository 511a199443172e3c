"""No words invented on silence or noise: whisper-base and whisper-tiny-en as their YAML configures them.

VAD (Silero, on by default for the batch Whisper variants) and the guards come from the variant
files; the signals are numpy-made with fixed seeds (tests/fixtures/noise.py). The tiny Parakeet model
gets the same signals in tests/nemo/test_parakeet_batch.py.
"""

from __future__ import annotations

import pytest

from dalston.catalog import Catalog
from dalston.engine_sdk import TranscribeOptions, create_engine
from tests.fixtures import assets, noise

VARIANTS = ("whisper-base", "whisper-tiny-en")


@pytest.fixture(scope="module")
def engines(engines_with_test_variants, model_dir_for):
    catalog = Catalog.load(engines_with_test_variants)
    loaded = {}
    for variant in VARIANTS:
        engine = create_engine(catalog.get(variant))
        engine.load(assets.model_dir_for(variant, model_dir_for("whisper-base").parent,
                                         engines_root=engines_with_test_variants))
        loaded[variant] = engine
    return loaded


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("signal", sorted(noise.NON_SPEECH))
def test_non_speech_gives_an_empty_transcript(engines, variant: str, signal: str) -> None:
    transcript = engines[variant].transcribe(noise.NON_SPEECH[signal](), TranscribeOptions(language="en"))
    assert transcript.text == "" and transcript.segments == (), transcript.text


def _repeats(words: list[str], n: int = 3) -> bool:
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(grams) != len(set(grams))


@pytest.mark.parametrize("variant", VARIANTS)
def test_speech_around_a_long_silence_keeps_its_words_and_adds_none(engines, variant: str) -> None:
    audio, gap_start, gap_end = noise.speech_with_gap("beckett", 20.0)
    options = TranscribeOptions(language="en", word_timestamps=True)
    transcript = engines[variant].transcribe(audio, options)
    alone = engines[variant].transcribe(noise._load("beckett"), options)
    assert assets.normalize_words(transcript.text) == assets.normalize_words(alone.text)
    inside = [w for w in transcript.words if w.start > gap_start + 0.5 and w.end < gap_end - 0.5]
    assert not inside, inside
    assert not _repeats(assets.normalize_words(transcript.text))


def test_vad_can_be_turned_off_per_request(engines) -> None:
    """The same tone with vad_filter=false reaches the decoder (the guards alone decide then)."""
    engine = engines["whisper-tiny-en"]
    seen: list[bool] = []
    original = engine.model.transcribe

    def spy(audio, **kwargs):  # observes the call, does not replace it
        seen.append(kwargs["vad_filter"])
        return original(audio, **kwargs)

    engine.model.transcribe = spy
    try:
        engine.transcribe(noise.tone(5.0), TranscribeOptions(language="en", vad_filter=False))
        engine.transcribe(noise.tone(5.0), TranscribeOptions(language="en"))
    finally:
        del engine.model.transcribe
    assert seen == [False, True]
