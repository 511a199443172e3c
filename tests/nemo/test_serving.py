"""Tiny parakeet variants served by the real server over loopback: every response format, and /v1/realtime.

Same app, same catalog path as `dalston serve parakeet-tiny-tdt`: the variant file pins the `.nemo`
built for this run, the server loads it through the family's engine.py, and requests go over HTTP
and WebSocket sockets.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from dalston.commands.stream import realtime_url, stream_audio
from dalston.engine_sdk import SAMPLE_RATE
from dalston.realtime.native_protocol import render
from dalston.segmenting import sentence_events
from tests.fixtures import assets, nemo_models
from tests.fixtures.serving import AUTH, TEST_KEY, Running, running_server
from tests.nemo.conftest import target_words, words_of



@pytest.fixture(scope="module")
def tdt_server(nemo_engines_root: Path, nemo_model_root: Path, keys_file: Path) -> Iterator[Running]:
    with running_server("parakeet-tiny-tdt", engines_root=nemo_engines_root, model_dir=nemo_model_root,
                        keys_file=keys_file) as running:
        yield running


@pytest.fixture(scope="module")
def client(tdt_server: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tdt_server.url, headers=AUTH, timeout=120) as c:
        yield c


def post(client: httpx.Client, clip: str = "beckett", endpoint: str = "/v1/audio/transcriptions",
         **fields: Any) -> httpx.Response:
    path = assets.speech_clip(clip)
    with open(path, "rb") as fh:
        return client.post(endpoint, files={"file": (path.name, fh, "audio/wav")},
                           data={"model": "parakeet-tiny-tdt", **fields})


def test_json_and_text(client: httpx.Client) -> None:
    response = post(client)
    assert response.status_code == 200, response.text
    assert words_of(response.json()["text"]) == target_words()
    response = post(client, response_format="text")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert words_of(response.text) == target_words()


def test_verbose_json_with_words_and_segments(client: httpx.Client) -> None:
    response = post(client, response_format="verbose_json", **{"timestamp_granularities[]": ["word", "segment"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["language"] == "english" and body["duration"] == pytest.approx(159414 / SAMPLE_RATE, abs=0.01)
    assert [s["text"].strip() for s in body["segments"]] == list(nemo_models.PHRASES)
    assert words_of(" ".join(w["word"] for w in body["words"])) == target_words()
    starts = [w["start"] for w in body["words"]]
    assert starts == sorted(starts) and all(w["start"] <= w["end"] <= body["duration"] for w in body["words"])


_CUE = re.compile(r"(\d\d):(\d\d):(\d\d)[,.](\d{3}) --> (\d\d):(\d\d):(\d\d)[,.](\d{3})\n(.+)")


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_one_cue_per_sentence(client: httpx.Client, fmt: str) -> None:
    response = post(client, response_format=fmt)
    assert response.status_code == 200, response.text
    cues = _CUE.findall(response.text)
    assert [c[8].strip() for c in cues] == list(nemo_models.PHRASES)
    times = [(int(c[0]) * 3600 + int(c[1]) * 60 + int(c[2]) + int(c[3]) / 1000,
              int(c[4]) * 3600 + int(c[5]) * 60 + int(c[6]) + int(c[7]) / 1000) for c in cues]
    assert all(a <= b for a, b in times) and [a for a, _ in times] == sorted(a for a, _ in times)
    if fmt == "vtt":
        assert response.text.startswith("WEBVTT")


def test_sse_stream(client: httpx.Client) -> None:
    response = post(client, stream="true")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in response.text.splitlines()
              if line.startswith("data: ") and line != "data: [DONE]"]
    done = [e for e in events if e.get("type") == "transcript.text.done"]
    assert done and words_of(done[-1]["text"]) == target_words()


def test_translation_is_refused_with_an_openai_error(client: httpx.Client) -> None:
    response = post(client, endpoint="/v1/audio/translations")
    assert response.status_code == 400
    error = response.json()["error"]
    assert "translat" in error["message"] and error["type"] and "code" in error


def test_concurrent_http_requests_are_batched(client: httpx.Client, tdt_server: Running) -> None:
    batcher = tdt_server.state.engine.batcher
    before = (batcher.stats.batches, batcher.stats.items)
    single = post(client, "two_cities").json()["text"]
    with ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(lambda _: post(client, "two_cities").json()["text"], range(4)))
    assert texts == [single] * 4
    batches, items = batcher.stats.batches - before[0], batcher.stats.items - before[1]
    assert items == 5 and batches < items, (batches, items)


# ---------------------------------------------------------------------------------------------- realtime
@pytest.fixture(scope="module")
def streaming_server(nemo_engines_root: Path, nemo_model_root: Path, keys_file: Path) -> Iterator[Running]:
    with running_server("parakeet-streaming-tiny", engines_root=nemo_engines_root, model_dir=nemo_model_root,
                        keys_file=keys_file) as running:
        yield running


def pcm16_roundtrip(samples: np.ndarray) -> np.ndarray:
    """What the server receives from `dalston stream` (pcm16 frames), as float32."""
    return (np.clip(samples, -1, 1) * 32767.0).astype("<i2").astype(np.float32) / 32768.0


def test_realtime_session_over_websocket(streaming_server: Running, clip) -> None:
    audio = clip("beckett")
    url = realtime_url(streaming_server.url, "parakeet-streaming-tiny", api_key=TEST_KEY)
    result = asyncio.run(stream_audio(url, audio, chunk_ms=160, language="en"))
    types = [e.type for e in result.events]
    assert types[0] == "session.begin" and types[-1] == "session.end" and "error" not in types, types
    assert result.close_code == 1000
    assert "transcript.partial" in types and "transcript.final" in types
    assert types.index("vad.speech_start") < types.index("transcript.partial") < types.index("transcript.final")
    assert words_of(result.text) == target_words()
    # exactly what the engine's own session gives on the same samples, finals cut into sentences
    engine = streaming_server.state.engine
    session = engine.open_session("en")
    direct = []
    received = pcm16_roundtrip(audio)
    for i in range(0, len(received), 2560):
        direct += [render(e) for e in sentence_events(session.accept(received[i:i + 2560]))]
    direct += [render(e) for e in sentence_events(session.finish())]
    over_ws = [e.body for e in result.events if e.type not in ("session.begin", "session.end")]
    assert [e["type"] for e in over_ws] == [e["type"] for e in direct]
    assert [e.get("text") for e in over_ws] == [e.get("text") for e in direct]
    finals = [e["text"] for e in over_ws if e["type"] == "transcript.final"]
    assert len(finals) > types.count("vad.speech_end"), finals  # beckett's sentences, one final each


def test_two_concurrent_realtime_sessions_are_isolated(streaming_server: Running, clip) -> None:
    a, b = clip("beckett"), clip("endgame_nagg_nell")[: 10 * SAMPLE_RATE]
    url = realtime_url(streaming_server.url, "parakeet-streaming-tiny", api_key=TEST_KEY)

    async def both() -> list[Any]:
        return await asyncio.gather(stream_audio(url, a, chunk_ms=160), stream_audio(url, b, chunk_ms=160))

    alone = [asyncio.run(stream_audio(url, x, chunk_ms=160)) for x in (a, b)]
    together = asyncio.run(both())
    for one, other in zip(alone, together):
        strip = [(e.type, e.body.get("text")) for e in one.events if e.type != "session.begin"]
        assert strip == [(e.type, e.body.get("text")) for e in other.events if e.type != "session.begin"]
    assert httpx.get(f"{streaming_server.url}/health").status_code == 200


def test_openai_sdk_session_streams_words_as_deltas(streaming_server: Running, clip) -> None:
    """The official `openai` SDK against the tiny cache-aware parakeet: 24 kHz audio paced in real
    time; its words are stable once emitted, so deltas stream while the audio is still being sent,
    and every item's deltas add up to its completed transcript (checked by run_sdk_session)."""
    from tests.realtime.openai_sdk import check_early_deltas, run_sdk_session

    run = asyncio.run(run_sdk_session(streaming_server.url, clip("beckett"), model="parakeet-streaming-tiny"))
    assert not run.errors, run.errors
    check_early_deltas(run, len(clip("beckett")) / SAMPLE_RATE)
    deltas = [e for e in run.events if e.type == "conversation.item.input_audio_transcription.delta"]
    # word-by-word: more deltas than items
    assert len(deltas) > len(run.transcripts), ([d.body["delta"] for d in deltas], run.transcripts)
    assert words_of(run.text) == target_words(), run.text
