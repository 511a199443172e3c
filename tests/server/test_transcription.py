"""whisper-base over real HTTP on real speech: accuracy, every response format, SSE, translation, model listing."""

from __future__ import annotations

import json
import re

import jiwer
import pytest

from tests.fixtures import assets
from tests.server.conftest import post_audio

CLIPS = ("beckett", "two_cities")


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(" ".join(assets.normalize_words(reference)), " ".join(assets.normalize_words(hypothesis)))


@pytest.mark.parametrize("clip", CLIPS)
def test_whisper_base_wer_over_http(client, clip):
    response = post_audio(client, assets.speech_clip(clip), model="whisper-base", language="en")
    assert response.status_code == 200, response.text
    error = wer(assets.reference_text(clip), response.json()["text"])
    assert error <= 0.05, f"{clip}: WER {error:.3f} > 0.05: {response.json()['text']!r}"


def test_alias_resolves_to_this_engine(client):
    response = post_audio(client, assets.speech_clip("beckett"), model="fast", response_format="text")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert wer(assets.reference_text("beckett"), response.text) <= 0.05


_SRT_CUE = re.compile(r"^(\d+)\n(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})\n(.+)$", re.S)
_VTT_CUE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})\n(.+)$", re.S)


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


@pytest.fixture(scope="module")
def two_cities(client):
    """The reference text, duration and json transcript of the longer clip (several segments)."""
    clip = assets.speech_clip("two_cities")
    from dalston.audio import decode_audio

    text = post_audio(client, clip).json()["text"]
    return clip, decode_audio(clip).duration, text


def test_srt_parses_into_ordered_cues_covering_the_text(client, two_cities):
    clip, duration, text = two_cities
    response = post_audio(client, clip, response_format="srt")
    assert response.status_code == 200 and "subrip" in response.headers["content-type"]
    blocks = response.text.strip().split("\n\n")
    assert len(blocks) >= 2
    previous_end, spoken = 0.0, []
    for number, block in enumerate(blocks, start=1):
        match = _SRT_CUE.match(block)
        assert match, f"not an SRT cue: {block!r}"
        assert int(match[1]) == number
        start, end = _seconds(*match.groups()[1:5]), _seconds(*match.groups()[5:9])
        assert previous_end - 0.01 <= start <= end <= duration + 0.05
        previous_end = end
        spoken.append(match[10])
    assert assets.normalize_words(" ".join(spoken)) == assets.normalize_words(text)


def test_vtt_parses_into_ordered_cues_covering_the_text(client, two_cities):
    clip, duration, text = two_cities
    response = post_audio(client, clip, response_format="vtt")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/vtt")
    header, *blocks = response.text.strip().split("\n\n")
    assert header == "WEBVTT"
    previous_end, spoken = 0.0, []
    for block in blocks:
        match = _VTT_CUE.match(block)
        assert match, f"not a VTT cue: {block!r}"
        start, end = _seconds(*match.groups()[0:4]), _seconds(*match.groups()[4:8])
        assert previous_end - 0.01 <= start <= end <= duration + 0.05
        previous_end = end
        spoken.append(match[9])
    assert assets.normalize_words(" ".join(spoken)) == assets.normalize_words(text)


def test_verbose_json_segments_and_words_ordered_inside_the_audio(client, two_cities):
    clip, duration, text = two_cities
    response = post_audio(client, clip, response_format="verbose_json",
                          **{"timestamp_granularities[]": ["word", "segment"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == "transcribe" and body["language"] == "english"  # a name, as OpenAI reports it
    assert body["duration"] == pytest.approx(duration, abs=0.01)
    assert assets.normalize_words(body["text"]) == assets.normalize_words(text)
    segments, words = body["segments"], body["words"]
    assert [s["id"] for s in segments] == list(range(len(segments)))
    for a, b in zip(segments, segments[1:]):
        assert a["start"] <= a["end"] <= b["start"] + 0.01
    assert 0 <= segments[0]["start"] and segments[-1]["end"] <= duration + 0.05
    assert all(s["avg_logprob"] < 0 and 0 <= s["no_speech_prob"] <= 1 for s in segments)
    for a, b in zip(words, words[1:]):
        assert a["start"] <= a["end"] <= b["start"] + 0.01
    assert 0 <= words[0]["start"] and words[-1]["end"] <= duration + 0.05
    assert all(0 <= w["probability"] <= 1 for w in words)
    assert assets.normalize_words(" ".join(w["word"] for w in words)) == assets.normalize_words(body["text"])


def test_verbose_json_default_has_segments_not_words(client):
    body = post_audio(client, assets.speech_clip("beckett"), response_format="verbose_json").json()
    assert body["segments"] and "words" not in body


def test_sse_deltas_concatenate_to_the_final_text(client, two_cities):
    clip, _, text = two_cities
    response = post_audio(client, clip, stream="true")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[len("data: "):]) for line in response.text.split("\n\n") if line.startswith("data: ")]
    assert [e["type"] for e in events[:-1]] == ["transcript.text.delta"] * (len(events) - 1)
    assert len(events) >= 3, "two_cities has several segments: expect several deltas"
    assert events[-1]["type"] == "transcript.text.done"
    assert "".join(e["delta"] for e in events[:-1]) == events[-1]["text"]
    assert assets.normalize_words(events[-1]["text"]) == assets.normalize_words(text)


def test_sse_verbose_json_streams_segments_with_times(client):
    """dalston extension: stream=true + verbose_json adds segment events and the whole body in the done event."""
    clip = assets.speech_clip("beckett")
    plain = post_audio(client, clip, response_format="verbose_json", language="en",
                       **{"timestamp_granularities[]": ["word", "segment"]}).json()
    response = post_audio(client, clip, stream="true", response_format="verbose_json", language="en",
                          **{"timestamp_granularities[]": ["word", "segment"]})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[len("data: "):]) for line in response.text.split("\n\n") if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "transcript.text.done"
    assert kinds[:-1] == ["transcript.text.delta", "transcript.text.segment"] * ((len(kinds) - 1) // 2)
    segments = [e for e in events if e["type"] == "transcript.text.segment"]
    assert [s["id"] for s in segments] == [f"seg_{s['id']}" for s in plain["segments"]]
    assert [(s["start"], s["end"], s["text"]) for s in segments] == [
        (s["start"], s["end"], s["text"]) for s in plain["segments"]]
    assert [w for s in segments for w in s["words"]] == plain["words"]
    done = events[-1]
    assert "".join(e["delta"] for e in events if e["type"] == "transcript.text.delta") == done["text"]
    assert {k: v for k, v in done.items() if k != "type"} == plain
    assert assets.normalize_words(done["text"]) == assets.reference_words("beckett")


def test_translation_endpoint_returns_english(client):
    response = post_audio(client, assets.speech_clip("beckett"), "/v1/audio/translations", response_format="verbose_json")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == "translate"
    assert wer(assets.reference_text("beckett"), body["text"]) <= 0.2


def test_models_and_capabilities(client, base_server):
    listing = client.get("/v1/models").json()
    assert listing["object"] == "list"
    assert {m["id"] for m in listing["data"]} == {"whisper-base", "fast"}
    assert all(m["root"] == "whisper-base" and m["object"] == "model" for m in listing["data"])
    card = client.get("/v1/models/fast").json()
    assert card["root"] == "whisper-base"
    # the card fields the web console shows, the same names as on the gateway
    assert card["stage"] == "transcribe" and card["languages"] == ["multilingual"] and card["aliases"] == ["fast"]
    assert card["device"] == "cpu" and card["available"] is True and card["word_timestamps"] is True
    assert card["hardware"] == {"gpu": "optional", "cpu": True}
    missing = client.get("/v1/models/whisper-large-v3")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    caps = client.get("/v1/capabilities").json()
    assert caps["id"] == "whisper-base" and caps["weights"]["revision"] == base_server.state.spec.weights.revision
    assert caps["runtime_facts"]["device"] == "cpu" and caps["runtime_facts"]["compute_type"] == "int8"


def test_health_ready_metrics_need_no_key(base_server):
    import httpx

    assert httpx.get(base_server.url + "/health").json()["status"] == "ok"
    assert httpx.get(base_server.url + "/ready").status_code == 200
    metrics = httpx.get(base_server.url + "/metrics").text
    assert 'dalston_requests_total{route="/v1/audio/transcriptions",status="200"}' in metrics
    assert re.search(r"^dalston_audio_seconds_total [1-9]", metrics, re.M)
    assert "dalston_real_time_factor_count" in metrics and "dalston_requests_in_flight" in metrics and "dalston_requests_queued" in metrics
