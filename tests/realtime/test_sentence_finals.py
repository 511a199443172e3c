"""Realtime finals are sentences, cut like `verbose_json` segments (issue 14), on both protocols.

Real whisper-streaming weights (tiny.en; the shipped base on beckett), real clips, real loopback
WebSockets through the real server app. The clip is beckett (six short sentences), a 1.5 s pause,
then two_cities. For every final: at most one sentence end, and it is the final's last word; a final
that does not end a sentence is the last of its utterance (the VAD heard a pause mid-sentence, and a
final cannot wait for the next utterance); times inside the utterance and moving forward; the finals
joined give the transcript of their words. The OpenAI protocol is fed the same pcm16 samples (16 kHz
`audio/pcm`), so its engine session decodes exactly what the native one did: each of its deltas is
one native final, and each item's `completed` transcript is that item's finals joined.
"""

from __future__ import annotations

import asyncio
from typing import Any

import jiwer
import numpy as np
import pytest

from dalston.commands.stream import StreamResult, realtime_url, stream_audio, stream_audio_openai
from dalston.engine_sdk.types import Word
from dalston.segmenting import ends_sentence
from tests.fixtures import assets
from tests.realtime.openai_sdk import check_deltas
from tests.realtime.test_whisper_streaming import check_event_order, wer

DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"


@pytest.fixture(scope="module")
def clip(clip_audio: Any) -> np.ndarray:
    pause = np.zeros(int(16000 * 1.5), dtype=np.float32)
    return np.concatenate([clip_audio("beckett.wav"), pause, clip_audio("two_cities.wav")])


def clip_wer(text: str) -> float:
    reference = assets.reference_words("beckett.wav") + assets.reference_words("two_cities.wav")
    return float(jiwer.wer(" ".join(reference), " ".join(assets.normalize_words(text)) or "<empty>"))


def utterances(result: StreamResult) -> list[list[dict[str, Any]]]:
    """The finals of each speech_start .. speech_end, in order."""
    out: list[list[dict[str, Any]]] = []
    for event in result.events:
        if event.type == "vad.speech_start":
            out.append([])
        elif event.type == "transcript.final":
            out[-1].append(event.body)
    return [u for u in out if u]


def items(result: StreamResult) -> list[list[str]]:
    """The deltas of each OpenAI item, in order (whisper-streaming sends text only in finals)."""
    out: dict[str, list[str]] = {}
    for event in result.events:
        if event.type == DELTA:
            out.setdefault(event.body["item_id"], []).append(event.body["delta"])
    return list(out.values())


def check_sentences(groups: list[list[str]]) -> None:
    """Each text holds at most one sentence end, as its last word; inside a group (an utterance or an
    item) every text but the last ends a sentence (only a pause may end one mid-sentence)."""
    for group in groups:
        for i, text in enumerate(group):
            words = [Word(0, 0, w) for w in text.split()]
            assert words, group
            assert not any(ends_sentence(w) for w in words[:-1]), f"two sentences in one final: {text!r}"
            assert i == len(group) - 1 or ends_sentence(words[-1]), f"a final inside an utterance must end a " \
                f"sentence: {text!r} in {group}"


def check_native(result: StreamResult) -> list[str]:
    check_event_order(result)
    finals = result.finals
    assert finals, "no finals"
    check_sentences([[f["text"] for f in u] for u in utterances(result)])
    last_end = 0.0
    for final in finals:
        assert final["text"] == " ".join(w["word"] for w in final["words"]), final
        assert last_end <= final["start"] <= final["end"], (last_end, final)
        assert all(final["start"] <= w["start"] <= w["end"] <= final["end"] for w in final["words"]), final
        last_end = final["end"]
    assert result.text == " ".join(f["text"] for f in finals)
    return [f["text"] for f in finals]


@pytest.mark.parametrize("variant", ["tiny"])
def test_native_and_openai_finals_are_sentences(variant: str, request: pytest.FixtureRequest, realtime_server: Any,
                                                clip: np.ndarray) -> None:
    loaded = request.getfixturevalue(f"{variant}_engine")
    base = realtime_server(loaded)
    native = asyncio.run(stream_audio(realtime_url(base, loaded.spec.id), clip, chunk_ms=160, language="en"))
    texts = check_native(native)
    print(f"sentence_finals variant={loaded.spec.id} finals={len(texts)} utterances={len(utterances(native))}")
    for text in texts:
        print(f"  {text}")
    assert len(texts) > len(utterances(native)), "no utterance was split into sentences"
    assert clip_wer(native.text) <= 0.10, native.text

    openai = asyncio.run(stream_audio_openai(realtime_url(base, loaded.spec.id) + "&intent=transcription", clip,
                                             rate=16000, language="en"))
    assert not openai.errors and openai.close_code in (1000, None), openai.errors
    check_deltas([e.body for e in openai.events])  # an item's deltas joined = its completed transcript
    deltas = items(openai)
    print(f"sentence_deltas items={len(deltas)} deltas={sum(map(len, deltas))}")
    check_sentences([[d.strip() for d in item] for item in deltas])
    assert all(d.startswith(" ") for item in deltas for d in item[1:])  # sentences of one item joined by a space
    assert sum(map(len, deltas)) > len(deltas), "no item was split into sentences"
    assert clip_wer(openai.text) <= 0.10, openai.text


def test_base_finals_on_beckett_are_its_sentences(base_engine: Any, realtime_server: Any, clip_audio: Any) -> None:
    """The shipped base variant on beckett (one utterance before the pause, one after): the same rules."""
    base = realtime_server(base_engine)
    result = asyncio.run(stream_audio(realtime_url(base, base_engine.spec.id), clip_audio("beckett.wav"),
                                      chunk_ms=160, language="en"))
    texts = check_native(result)
    print(f"sentence_finals variant={base_engine.spec.id} finals={texts}")
    # No count: base punctuates beckett as three sentences here but as one sentence of commas per utterance
    # on other CPUs (int8 kernels, AVX-512 EPYC; see 97502f3); the split itself is shown by the tiny test.
    assert wer("beckett.wav", " ".join(texts)) <= 0.10, texts
