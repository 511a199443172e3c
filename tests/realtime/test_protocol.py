"""The realtime bad-input table, over a real WebSocket against the real server app on tiny.en weights.

Every row: the client gets exactly one `error` event with a machine-readable code and the
documented close code, and afterwards the server is healthy (/health 200) and a good session still
transcribes. `test_bad_clients_leave_a_running_session_alone` fires the whole table while a good
session is streaming and checks that session's transcript is exactly what it is alone.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import numpy as np
import pytest
import websockets

from dalston.auth import KeyStore, hash_key, new_key
from dalston.commands.stream import realtime_url, stream_audio, to_pcm16
from dalston.admission import RealtimeLimits
from tests.fixtures import assets
from tests.realtime.conftest import Loaded, serve_state, server_state

CONFIG = {"type": "session.config", "sample_rate": 16000, "encoding": "pcm16", "language": "en"}


async def exchange(url: str, messages: list[Any], *, headers: dict[str, str] | None = None,
                   wait: float = 30.0) -> tuple[list[dict[str, Any]], int | None]:
    """Send `messages` (dict -> JSON text, str -> text, bytes -> binary), then read until the server closes."""
    events: list[dict[str, Any]] = []
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        try:
            for message in messages:
                await ws.send(json.dumps(message) if isinstance(message, dict) else message)
        except websockets.ConnectionClosed:
            pass  # the server may refuse before we finish sending; its events are still buffered
        try:
            async with asyncio.timeout(wait):
                while True:
                    events.append(json.loads(await ws.recv()))
        except websockets.ConnectionClosed:
            pass
        await ws.wait_closed()
        return events, ws.close_code


def assert_healthy(base: str, spec_id: str, clip_audio: Any) -> None:
    """/health and /ready answer 200 and a good session on the same server still transcribes beckett."""
    for path in ("/health", "/ready"):
        assert httpx.get(base + path, timeout=10).status_code == 200, path
    result = asyncio.run(stream_audio(realtime_url(base, spec_id), clip_audio("beckett.wav")[: 16000 * 3], language="en"))
    assert result.close_code == 1000 and "ever tried" in result.text.lower(), result.text


def error_of(events: list[dict[str, Any]]) -> str:
    errors = [e for e in events if e["type"] == "error"]
    assert len(errors) == 1, events
    assert errors[0]["message"], errors[0]
    return str(errors[0]["code"])


PCM = to_pcm16(np.zeros(2560, dtype=np.float32))

BAD_INPUT = [
    # (name, messages, error code, close code)
    ("garbage text first", ["hello there"], "invalid_json", 4400),
    ("json that is not an object", ["[1, 2]"], "invalid_json", 4400),
    ("audio before session.config", [PCM], "config_required", 4400),
    ("wrong first message type", [{"type": "session.end"}], "config_required", 4400),
    ("unsupported sample rate", [{**CONFIG, "sample_rate": 12345}], "invalid_sample_rate", 4400),
    ("sample rate not an int", [{**CONFIG, "sample_rate": "16k"}], "invalid_sample_rate", 4400),
    ("unknown encoding", [{**CONFIG, "encoding": "mulaw"}], "invalid_encoding", 4400),
    ("language this model lacks", [{**CONFIG, "language": "de"}], "unsupported_language", 4400),
    ("unknown config field", [{**CONFIG, "channels": 2}], "invalid_config", 4400),
    ("garbage text after config", [CONFIG, PCM, "not json{"], "invalid_json", 4400),
    ("unknown message type", [CONFIG, {"type": "session.pause"}], "unknown_message", 4400),
    ("config twice", [CONFIG, CONFIG], "config_repeated", 4400),
    ("odd-length pcm16 frame", [CONFIG, PCM, b"\x00\x01\x02"], "invalid_frame", 4400),
    ("float32 frame not a multiple of 4", [{**CONFIG, "encoding": "float32"}, b"\x00" * 6], "invalid_frame", 4400),
    ("float32 NaN", [{**CONFIG, "encoding": "float32"}, np.full(8, np.nan, "<f4").tobytes()], "invalid_frame", 4400),
    ("oversized frame", [CONFIG, b"\x00" * ((1 << 20) + 2)], "frame_too_large", 4400),
]


@pytest.fixture(scope="module")
def tiny_url(tiny_engine: Loaded) -> Any:
    """One real server for the table (idle timeout 1.5 s so that row stays quick)."""
    with serve_state(server_state(tiny_engine, limits=RealtimeLimits(idle_timeout_s=1.5))) as base:
        yield base


@pytest.mark.parametrize("name,messages,code,close", BAD_INPUT, ids=[row[0] for row in BAD_INPUT])
def test_bad_input(name: str, messages: list[Any], code: str, close: int, tiny_url: str, tiny_engine: Loaded,
                   clip_audio: Any) -> None:
    spec = tiny_engine.spec
    events, close_code = asyncio.run(exchange(realtime_url(tiny_url, spec.id), messages))
    assert error_of(events) == code, events
    assert close_code == close
    assert_healthy(tiny_url, spec.id, clip_audio)


def test_idle_timeout(tiny_url: str, tiny_engine: Loaded, clip_audio: Any) -> None:
    spec = tiny_engine.spec
    events, close_code = asyncio.run(exchange(realtime_url(tiny_url, spec.id), [CONFIG, PCM]))
    assert events[0]["type"] == "session.begin"
    assert error_of(events) == "idle_timeout" and close_code == 4408
    # Silent config-less connections time out too.
    events, close_code = asyncio.run(exchange(realtime_url(tiny_url, spec.id), []))
    assert error_of(events) == "idle_timeout" and close_code == 4408
    assert_healthy(tiny_url, spec.id, clip_audio)


def test_forbidden_model(tiny_url: str, tiny_engine: Loaded, clip_audio: Any) -> None:
    spec = tiny_engine.spec
    events, close_code = asyncio.run(exchange(realtime_url(tiny_url, "whisper-base"), [CONFIG]))
    assert error_of(events) == "model_not_found" and close_code == 4004
    assert_healthy(tiny_url, spec.id, clip_audio)


def test_model_defaults_to_the_served_one(tiny_url: str, clip_audio: Any) -> None:
    result = asyncio.run(stream_audio(realtime_url(tiny_url, None), clip_audio("beckett.wav")[: 16000 * 3], language="en"))
    assert result.events[0].body["model"] == "whisper-streaming-tiny-en" and result.close_code == 1000


def test_resampled_rates_transcribe(tiny_url: str, tiny_engine: Loaded, clip_audio: Any) -> None:
    """pcm16 at 48 kHz and float32 at 8 kHz are resampled to 16 kHz server-side, not rejected."""
    spec = tiny_engine.spec
    audio16 = clip_audio("beckett.wav")
    import av

    for rate, encoding in ((48000, "pcm16"), (8000, "float32")):
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        frame = av.AudioFrame.from_ndarray(audio16[None, :], format="flt", layout="mono")
        frame.sample_rate = 16000
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in [*resampler.resample(frame), *resampler.resample(None)]])
        payload = to_pcm16(audio) if encoding == "pcm16" else audio.astype("<f4").tobytes()
        step = (rate * 160 // 1000) * (2 if encoding == "pcm16" else 4)
        frames = [payload[i:i + step] for i in range(0, len(payload), step)]
        events, close_code = asyncio.run(exchange(
            realtime_url(tiny_url, spec.id),
            [{**CONFIG, "sample_rate": rate, "encoding": encoding}, *frames, {"type": "session.end"}], wait=120))
        assert close_code == 1000, events[-2:]
        text = " ".join(e["text"] for e in events if e["type"] == "transcript.final")
        words = assets.normalize_words(text)
        assert words[:4] == ["ever", "tried", "ever", "failed"], (rate, encoding, text)
        assert events[-1]["type"] == "session.end" and abs(events[-1]["duration"] - len(audio16) / 16000) < 0.05


def test_too_many_sessions(tiny_engine: Loaded, realtime_server: Any, clip_audio: Any) -> None:
    """max_concurrency sessions run; the next one gets 4029; the running ones finish unaffected."""
    spec = tiny_engine.spec
    base = realtime_server(tiny_engine)
    url = realtime_url(base, spec.id)
    audio = clip_audio("beckett.wav")
    limit = spec.capabilities.max_concurrency
    solo = asyncio.run(stream_audio(url, audio, language="en")).text

    async def scenario() -> tuple[list[Any], tuple[list[dict[str, Any]], int | None]]:
        holders = [asyncio.ensure_future(stream_audio(url, audio, language="en", realtime=True)) for _ in range(limit)]
        await asyncio.sleep(1.0)  # all holders are connected and streaming
        refused = await exchange(url, [CONFIG])
        return list(await asyncio.gather(*holders)), refused

    results, (events, close_code) = asyncio.run(scenario())
    assert error_of(events) == "too_many_sessions" and close_code == 4029
    for result in results:
        assert result.close_code == 1000 and result.text == solo
    assert_healthy(base, spec.id, clip_audio)  # slots were released


def test_not_ready(tiny_engine: Loaded, realtime_server: Any) -> None:
    spec = tiny_engine.spec
    base = realtime_server(tiny_engine, ready=False)
    events, close_code = asyncio.run(exchange(realtime_url(base, spec.id), [CONFIG]))
    assert error_of(events) == "model_not_ready" and close_code == 4503


def test_draining_server_takes_no_new_session(tiny_engine: Loaded, clip_audio: Any) -> None:
    """After SIGTERM (`draining`), new sessions get 4503 while the process finishes what it has."""
    state = server_state(tiny_engine)
    with serve_state(state) as base:
        url = realtime_url(base, tiny_engine.spec.id)
        assert asyncio.run(stream_audio(url, clip_audio("beckett.wav")[: 16000 * 2], language="en")).close_code == 1000
        state.draining = True
        events, close_code = asyncio.run(exchange(url, [CONFIG]))
        assert error_of(events) == "shutting_down" and close_code == 4503


def test_bad_clients_leave_a_running_session_alone(tiny_engine: Loaded, realtime_server: Any, clip_audio: Any) -> None:
    """Every bad-input row, fired while a good session streams in real time: the good session's
    transcript and event order are exactly as when it runs alone, and each bad client still gets
    its own error and close code (a slot freed by one bad client is reusable by the next at once)."""
    spec = tiny_engine.spec
    base = realtime_server(tiny_engine)
    url = realtime_url(base, spec.id)
    audio = clip_audio("beckett.wav")
    alone = asyncio.run(stream_audio(url, audio, language="en"))

    async def scenario() -> tuple[Any, list[tuple[str, list[dict[str, Any]], int | None]]]:
        good = asyncio.ensure_future(stream_audio(url, audio, language="en", realtime=True))
        await asyncio.sleep(0.5)
        outcomes = []
        for name, messages, _, _ in BAD_INPUT:
            events, close_code = await exchange(url, messages)
            outcomes.append((name, events, close_code))
        assert not good.done(), "the good session should still be streaming while the bad clients run"
        return await good, outcomes

    together, outcomes = asyncio.run(scenario())
    for (name, events, close_code), (_, _, code, close) in zip(outcomes, BAD_INPUT):
        assert error_of(events) == code and close_code == close, (name, events, close_code)
    assert together.close_code == 1000 and not together.errors
    assert together.text == alone.text, (together.text, alone.text)
    # Partials depend on timing (a server under load decodes less often); everything else may not.
    assert [e.type for e in together.events if e.type != "transcript.partial"] == \
        [e.type for e in alone.events if e.type != "transcript.partial"]
    assert_healthy(base, spec.id, clip_audio)


def test_api_key_required(tiny_engine: Loaded, realtime_server: Any, tmp_path: Any, clip_audio: Any) -> None:
    """No key, a wrong header key and a wrong ?api_key= all get 4001 (the HTTP API's codes); the right key
    works by header, by ?api_key= and by the `openai-insecure-api-key.<key>` subprotocol."""
    key = new_key()
    keys_file = tmp_path / "keys"
    keys_file.write_text(hash_key(key) + "\n")
    spec = tiny_engine.spec
    base = realtime_server(tiny_engine, keys=KeyStore.from_file(keys_file))
    url = realtime_url(base, spec.id)
    for headers, query_key, code in ((None, None, "missing_api_key"),
                                     ({"Authorization": "Bearer dk_wrong"}, None, "invalid_api_key"),
                                     (None, "dk_wrong", "invalid_api_key")):
        events, close_code = asyncio.run(exchange(realtime_url(base, spec.id, query_key), [CONFIG], headers=headers))
        assert error_of(events) == code and close_code == 4001
    short = clip_audio("beckett.wav")[: 16000 * 3]
    by_header = asyncio.run(stream_audio(url, short, api_key=key, language="en"))
    by_query = asyncio.run(stream_audio(realtime_url(base, spec.id, key), short, language="en"))
    assert by_header.close_code == 1000 and by_query.close_code == 1000 and by_header.text == by_query.text
