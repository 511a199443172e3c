"""The OpenAI protocol's pure halves: session.update parsing and the typed-event translator.

The translator is fed the engine SDK's typed events as the two streaming policies emit them (see
dalston/streaming/local_agreement.py and utterances.py): whisper-style (no stable text before the
final) and parakeet-style (committed words stable); real engines are in tests/realtime and tests/nemo.
"""

from __future__ import annotations

import pytest

from dalston.engine_sdk.events import Final, Partial, SpeechStarted, SpeechStopped, TurnDetection
from dalston.realtime.openai_protocol import (
    EventIds,
    InputFormat,
    OpenAIError,
    OpenAITranslator,
    TranscriptionSettings,
    apply_update,
    session_object,
)
from tests.realtime.openai_sdk import check_deltas

LANGS = ["multilingual"]


def ga(**input_fields: object) -> dict:
    return {"type": "session.update", "session": {"type": "transcription", "audio": {"input": input_fields}}}


def test_ga_update_fields_and_partial_updates_keep_the_rest() -> None:
    s = apply_update(ga(format={"type": "audio/pcm", "rate": 16000}, transcription={"model": "m", "language": "EN"},
                        turn_detection={"type": "server_vad", "threshold": 0.7, "silence_duration_ms": 400,
                                        "create_response": True}, noise_reduction={"type": "near_field"}),
                     TranscriptionSettings(), LANGS)
    assert s.input_format == InputFormat("pcm16", 16000) and s.model == "m" and s.language == "en"
    assert s.turn == TurnDetection(threshold=0.7, prefix_padding_ms=None, silence_duration_ms=400)
    s2 = apply_update(ga(turn_detection=None), s, LANGS)
    assert s2.turn is None and s2.model == "m" and s2.input_format == s.input_format
    assert apply_update(ga(format={"type": "audio/pcmu"}), s, LANGS).input_format == InputFormat("pcmu", 8000)


def test_beta_update() -> None:
    s = apply_update({"type": "transcription_session.update", "session": {
        "input_audio_format": "g711_alaw", "input_audio_transcription": {"model": "m", "prompt": "hi"},
        "turn_detection": {"type": "server_vad", "prefix_padding_ms": 200}, "input_audio_noise_reduction": None}},
        TranscriptionSettings(), LANGS)
    assert s.input_format == InputFormat("pcma", 8000) and s.prompt == "hi" and s.turn.prefix_padding_ms == 200
    beta = session_object(s, "rt_1", "x", beta=True)
    assert beta["input_audio_format"] == "g711_alaw" and beta["turn_detection"]["prefix_padding_ms"] == 200


@pytest.mark.parametrize("update,code,param", [
    (ga(format={"type": "audio/pcm", "rate": 12345}), "invalid_sample_rate", "session.audio.input.format.rate"),
    (ga(format={"type": "audio/pcmu", "rate": 16000}), "invalid_sample_rate", "session.audio.input.format.rate"),
    (ga(turn_detection={"type": "semantic_vad"}), "unsupported_turn_detection", "session.audio.input.turn_detection.type"),
    (ga(turn_detection={"type": "server_vad", "silence_duration_ms": -1}), "invalid_value",
     "session.audio.input.turn_detection.silence_duration_ms"),
    (ga(transcription={"language": "english"}), "invalid_value", "session.audio.input.transcription.language"),
    (ga(bogus=1), "unknown_parameter", "session.audio.input.bogus"),
    ({"type": "session.update", "session": {"type": "realtime"}}, "unsupported_session_type", "session.type"),
    ({"type": "transcription_session.update", "session": {"input_audio_format": "pcm24"}}, "invalid_value",
     "session.input_audio_format"),
])
def test_bad_updates_name_the_field(update: dict, code: str, param: str) -> None:
    with pytest.raises(OpenAIError) as info:
        apply_update(update, TranscriptionSettings(), LANGS)
    assert (info.value.code, info.value.param) == (code, param) and info.value.close_code is None


def test_unsupported_language_for_an_english_model() -> None:
    with pytest.raises(OpenAIError) as info:
        apply_update(ga(transcription={"language": "de"}), TranscriptionSettings(), ["en"])
    assert info.value.code == "unsupported_language"


def run(translator: OpenAITranslator, events: list, offset: float = 0.0) -> list[dict]:
    return [out for e in events for out in translator.translate(e, offset)]


def test_whisper_style_items_deltas_only_from_finals() -> None:
    """LocalAgreement partials promise nothing (stable=""), so only its finals become deltas; a trim
    final mid-utterance and the closing final make one item."""
    t = OpenAITranslator(EventIds())
    out = run(t, [SpeechStarted(1.0), Partial("ever tried", 1.0, 2.0, "ever"), Final("Ever tried.", 1.0, 2.1),
                  Partial("ever failed", 2.2, 3.0, ""), Final("Ever failed.", 2.2, 3.1), SpeechStopped(3.9),
                  SpeechStarted(5.0), Final("No matter.", 5.0, 6.0), SpeechStopped(6.8)], offset=10.0)
    kinds = [e["type"] for e in out]
    assert kinds[:4] == ["input_audio_buffer.speech_started", "conversation.item.input_audio_transcription.delta",
                         "conversation.item.input_audio_transcription.delta", "input_audio_buffer.speech_stopped"]
    check_deltas(out)
    completed = [e for e in out if e["type"] == "conversation.item.input_audio_transcription.completed"]
    assert [c["transcript"] for c in completed] == ["Ever tried. Ever failed.", "No matter."]
    assert out[0]["audio_start_ms"] == 11000 and completed[0]["usage"] == {"type": "duration", "seconds": 2.9}
    committed = [e for e in out if e["type"] == "input_audio_buffer.committed"]
    assert committed[0]["previous_item_id"] is None and committed[1]["previous_item_id"] == committed[0]["item_id"]


def test_parakeet_style_stable_words_stream_as_deltas() -> None:
    t = OpenAITranslator(EventIds())
    out = run(t, [SpeechStarted(0.1), Partial("soft gro", 0.1, 0.5, "soft", "soft"),
                  Partial("soft grown", 0.1, 0.7, "soft", "soft"), Partial("soft grown up", 0.1, 0.9, "soft grown",
                                                                           "soft grown"),
                  Final("soft grown up", 0.1, 1.0), SpeechStopped(1.8)])
    deltas = [e["delta"] for e in out if e["type"] == "conversation.item.input_audio_transcription.delta"]
    assert deltas == ["soft", " grown", " up"]
    check_deltas(out)


def test_manual_commits_hold_text_until_the_item_exists_and_clear_forgets() -> None:
    t = OpenAITranslator(EventIds(), manual=True)
    out = run(t, [SpeechStarted(0.1), Partial("a b", 0.1, 0.5, "a", "a"), Final("A b.", 0.1, 0.6), SpeechStopped(1.4)])
    assert out == []  # no VAD events and nothing before the commit
    out = t.commit(2.0)
    assert [e["type"] for e in out] == ["input_audio_buffer.committed", "conversation.item.added",
                                        "conversation.item.input_audio_transcription.delta",
                                        "conversation.item.input_audio_transcription.completed"]
    assert out[-1]["transcript"] == "A b." and out[-1]["usage"]["seconds"] == 2.0
    run(t, [Final("gone", 2.1, 2.5)])
    assert [e["type"] for e in t.clear(3.0)] == ["input_audio_buffer.cleared"]
    silent = t.commit(3.5)
    assert silent[-1]["transcript"] == "" and silent[0]["previous_item_id"] == out[0]["item_id"]
    check_deltas(out + silent)
