"""Subtitle-grade SRT/VTT and sentence segments from whisper-base over HTTP, on real speech.

two_cities (44 s) and a ~3-minute splice of the real clips both go through the batched pipeline
(> 30 s), whose own segments are whole VAD chunks; the cues must still be within the limits
(42 chars x 2 lines, 0.8-7 s), parse with real subtitle parsers (`srt`, `webvtt-py`), say exactly
the transcript, and sit on the word times.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import srt
import webvtt

from dalston.segmenting import CueLimits
from tests.fixtures import assets, noise
from tests.server.conftest import post_audio

LIMITS = CueLimits()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    audio, _ = noise.long_speech()
    return {"two_cities": assets.speech_clip("two_cities"),
            "three_minutes": noise.write_wav(tmp_path_factory.mktemp("long") / "three_minutes.wav", audio)}


@pytest.fixture(scope="module")
def decoded(client, clips) -> dict[str, dict]:
    """verbose_json (segments + words), srt and vtt of each clip, from the same server."""
    out = {}
    for name, path in clips.items():
        verbose = post_audio(client, path, response_format="verbose_json", language="en",
                             **{"timestamp_granularities[]": ["word", "segment"]})
        assert verbose.status_code == 200, verbose.text
        out[name] = {"verbose": verbose.json(),
                     "srt": post_audio(client, path, response_format="srt", language="en").text,
                     "vtt": post_audio(client, path, response_format="vtt", language="en").text}
    return out


def _check_cues(cues: list[tuple[float, float, str]], body: dict) -> None:
    lines = [line for _, _, text in cues for line in text.split("\n")]
    assert all(len(line) <= LIMITS.max_line_width for line in lines), max(lines, key=len)
    assert all(1 <= len(text.split("\n")) <= LIMITS.max_line_count for _, _, text in cues)
    for (start, end, text), nxt in zip(cues, cues[1:] + [(body["duration"], 0, "")]):
        assert end - start <= LIMITS.max_cue_seconds + 0.001, (start, end, text)
        # at least 0.8 s, unless stretched as far as the next cue (or the end of the audio) allows
        assert end - start >= LIMITS.min_cue_seconds - 0.001 or end >= nxt[0] - 0.001, (start, end, text)
    assert " ".join(text.replace("\n", " ") for _, _, text in cues) == body["text"]
    # cue times sit on the word times: each cue starts with a word's start and ends no later than the next cue
    starts = {round(w["start"], 3) for w in body["words"]}
    for (start, end, _), nxt in zip(cues, cues[1:] + [(body["duration"] + 1, 0, "")]):
        assert round(start, 3) in starts and end <= nxt[0] + 0.001


@pytest.mark.parametrize("name", ["two_cities", "three_minutes"])
def test_srt_and_vtt_cues_are_subtitles(decoded, name: str) -> None:
    body = decoded[name]["verbose"]
    parsed_srt = list(srt.parse(decoded[name]["srt"]))
    assert [c.index for c in parsed_srt] == list(range(1, len(parsed_srt) + 1))
    _check_cues([(c.start.total_seconds(), c.end.total_seconds(), c.content) for c in parsed_srt], body)
    parsed_vtt = webvtt.from_buffer(io.StringIO(decoded[name]["vtt"]))
    _check_cues([(_clock(c.start), _clock(c.end), c.text) for c in parsed_vtt], body)
    assert len(parsed_vtt) == len(parsed_srt)
    print(f"{name}: {len(parsed_srt)} cues for {body['duration']:.0f} s")


def _clock(value: str) -> float:
    hours, minutes, seconds = value.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@pytest.mark.parametrize("name", ["two_cities", "three_minutes"])
def test_verbose_json_segments_are_sentences(decoded, name: str) -> None:
    body = decoded[name]["verbose"]
    segments = body["segments"]
    assert [s["id"] for s in segments] == list(range(len(segments)))
    assert all(a["end"] <= b["start"] for a, b in zip(segments, segments[1:]))
    assert all(s["end"] - s["start"] <= 30.0 for s in segments)
    assert " ".join(s["text"] for s in segments) == body["text"]
    ends = [s["text"][-1] for s in segments[:-1]]
    assert sum(e in ".?!" for e in ends) >= len(ends) - 1, [s["text"] for s in segments]
    for s in segments:  # Whisper's decoder facts, real values
        assert s["tokens"] and all(isinstance(t, int) for t in s["tokens"])
        assert isinstance(s["seek"], int) and s["temperature"] is not None
        assert s["avg_logprob"] < 0 and 0 < s["compression_ratio"] < 5 and 0 <= s["no_speech_prob"] <= 1
    assert body["language"] == "english" and body["usage"] == {"type": "duration", "seconds": body["duration"]}


def test_cue_limits_are_request_options(client, clips) -> None:
    body = post_audio(client, clips["two_cities"], response_format="srt", language="en", max_line_width="30",
                      max_line_count="1", max_cue_seconds="3").text
    cues = list(srt.parse(body))
    assert all(len(c.content) <= 30 and "\n" not in c.content for c in cues)
    assert all((c.end - c.start).total_seconds() <= 3.001 for c in cues)


@pytest.mark.parametrize("field,value", [("max_line_width", "5"), ("max_line_count", "two"),
                                         ("max_cue_seconds", "nan"), ("vad_threshold", "1.5"),
                                         ("vad_filter", "maybe"), ("speech_pad_ms", "-1")])
def test_bad_extension_values_are_clear_400s(client, field: str, value: str) -> None:
    response = post_audio(client, assets.speech_clip("beckett"), response_format="srt", **{field: value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == field and error["code"] == "invalid_parameter" and value in error["message"]


def test_streamed_verbose_json_has_the_same_sentences_and_words_only_when_asked(client) -> None:
    import json

    # two_cities, not beckett: Whisper base punctuates beckett as one sentence of commas on some CPUs
    # (int8 kernels differ: AVX-512 EPYC), and this test needs several sentences to compare
    clip = assets.speech_clip("two_cities")
    plain = post_audio(client, clip, response_format="verbose_json", language="en").json()
    response = post_audio(client, clip, stream="true", response_format="verbose_json", language="en")
    events = [json.loads(line[len("data: "):]) for line in response.text.split("\n\n") if line.startswith("data: ")]
    segments = [e for e in events if e["type"] == "transcript.text.segment"]
    assert [s["text"] for s in segments] == [s["text"] for s in plain["segments"]]
    assert len(segments) >= 5 and all("words" not in s for s in segments)
    assert "words" not in events[-1]


def test_cli_cue_flags(engines_with_test_variants, model_dir_for, session_model_root) -> None:
    """`dalston transcribe --format srt --max-line-count 1 --max-line-width 20`, and a bad value named clearly."""
    import os
    import subprocess
    import sys

    model_dir_for("whisper-base")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DALSTON_ENGINES_DIR": str(engines_with_test_variants),
           "DALSTON_MODEL_DIR": str(session_model_root)}
    command = [sys.executable, "-m", "dalston", "transcribe", str(assets.speech_clip("beckett")), "--model", "fast",
               "--format", "srt", "--max-line-count", "1", "--max-line-width", "20"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    cues = list(srt.parse(result.stdout))
    assert cues and all(len(c.content) <= 20 and "\n" not in c.content for c in cues)
    bad = subprocess.run(command[:-1] + ["5"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--max-line-width" in bad.stderr and "Traceback" not in bad.stderr
