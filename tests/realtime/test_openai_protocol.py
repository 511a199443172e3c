"""OpenAI Realtime transcription sessions on `/v1/realtime`, driven by the official `openai` SDK.

Real server app, real tiny.en / base weights, loopback WebSockets; beckett.wav resampled to 24 kHz
(the SDK's format) and paced in real time where latency matters, as a microphone app sends it.
Every session goes through `tests.realtime.openai_sdk`, which checks on each one that the
concatenated deltas of every item equal its `completed` transcript. The bad-input table uses raw
WebSockets (the SDK cannot send broken events) and checks every row's error, then that the same
connection still transcribes where OpenAI's would, then that a fresh SDK session works.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from typing import Any

import jiwer
import pytest
import websockets

from dalston.auth import KeyStore
from tests.fixtures import assets
from tests.fixtures.serving import TEST_KEY
from tests.realtime.conftest import Loaded, serve_state, server_state
from tests.realtime.openai_sdk import OpenAIRun, check_deltas, check_early_deltas, resample_pcm16, run_sdk_session

COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"


def wer(clip: str, text: str) -> float:
    return float(jiwer.wer(" ".join(assets.reference_words(clip)), " ".join(assets.normalize_words(text)) or "<empty>"))


def check_item_order(run: OpenAIRun, *, vad: bool = True) -> None:
    """Per item, OpenAI's order: speech_started < speech_stopped < committed < item.added < completed;
    committed items chain through previous_item_id."""
    types = [e.type for e in run.events]
    assert types[:2] in (["session.created", "session.updated"],
                         ["transcription_session.created", "transcription_session.updated"]), types[:3]
    previous = None
    for committed in run.of("input_audio_buffer.committed"):
        item = committed["item_id"]
        assert committed["previous_item_id"] == previous, (committed, previous)
        previous = item
        position = {e.type: i for i, e in enumerate(run.events) if e.body.get("item_id") == item
                    or e.body.get("item", {}).get("id") == item}
        chain = ["input_audio_buffer.committed", "conversation.item.added" if "conversation.item.added" in position
                 else "conversation.item.created", COMPLETED]
        if vad and "input_audio_buffer.speech_started" in position:
            chain = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", *chain]
        assert [position[k] for k in chain] == sorted(position[k] for k in chain), (item, position)
        if DELTA in position:  # the last delta of an item comes before its completed
            assert position[DELTA] < position[COMPLETED]
    completed = run.of(COMPLETED)
    assert len(completed) == len(run.of("input_audio_buffer.committed"))
    assert all(c["usage"]["type"] == "duration" and c["usage"]["seconds"] >= 0 for c in completed)


@pytest.fixture(scope="module")
def tiny_base(tiny_engine: Loaded) -> Any:
    """One tiny.en server for this module (auth on: dk_test), idle timeout 5 s."""
    from dalston.admission import RealtimeLimits
    from tests.fixtures.serving import write_keys_file

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        keys = KeyStore.from_file(write_keys_file(Path(tmp) / "keys"))
        with serve_state(server_state(tiny_engine, keys=keys, limits=RealtimeLimits(idle_timeout_s=5))) as base:
            yield base


@pytest.mark.parametrize("variant", ["tiny", "base"])
def test_sdk_streams_beckett_in_real_time(variant: str, request: pytest.FixtureRequest, realtime_server: Any,
                                          clip_audio: Any) -> None:
    """24 kHz pcm16 paced in real time: deltas before the audio ends, completed transcripts = beckett."""
    loaded = request.getfixturevalue(f"{variant}_engine")
    base = realtime_server(loaded)
    run = asyncio.run(run_sdk_session(base, clip_audio("beckett.wav")))
    assert not run.errors, run.errors
    check_item_order(run)
    check_early_deltas(run, len(clip_audio("beckett.wav")) / 16000)
    assert len(run.transcripts) >= 2
    assert wer("beckett.wav", run.text) <= 0.10, run.text


def test_beta_client_and_event_names(tiny_base: str, clip_audio: Any) -> None:
    """The SDK's beta client (`OpenAI-Beta: realtime=v1`, transcription_session.update, pcm16)."""
    run = asyncio.run(run_sdk_session(tiny_base, clip_audio("beckett.wav"), beta=True, realtime=False))
    types = [e.type for e in run.events]
    assert types[:2] == ["transcription_session.created", "transcription_session.updated"], types
    assert "conversation.item.created" in types and "conversation.item.added" not in types
    check_item_order(run)
    assert assets.normalize_words(run.text)[:4] == ["ever", "tried", "ever", "failed"], run.text


def test_manual_turns_chain_items(tiny_base: str, clip_audio: Any) -> None:
    """turn_detection null: no VAD events; each commit is one item, chained by previous_item_id."""
    audio = clip_audio("beckett.wav")
    run = asyncio.run(run_sdk_session(tiny_base, audio, turn=None, commit_every_s=5.0, realtime=False))
    types = [e.type for e in run.events]
    assert "input_audio_buffer.speech_started" not in types and "input_audio_buffer.speech_stopped" not in types
    check_item_order(run, vad=False)
    committed = run.of("input_audio_buffer.committed")
    assert len(committed) >= 2 and committed[0]["previous_item_id"] is None
    assert committed[1]["previous_item_id"] == committed[0]["item_id"]
    first, second = run.transcripts[0], run.transcripts[1]
    assert assets.normalize_words(first)[:2] == ["ever", "tried"], first
    assert "better" in assets.normalize_words(second), second
    # the items' audio durations add up to the clip's
    total = sum(c["usage"]["seconds"] for c in run.of(COMPLETED))
    assert abs(total - len(audio) / 16000) < 0.2, total


def test_server_vad_silence_duration_is_honoured(tiny_base: str, clip_audio: Any) -> None:
    """A short silence_duration_ms splits beckett's pauses into more items than a long one."""
    audio = clip_audio("beckett.wav")
    short = asyncio.run(run_sdk_session(tiny_base, audio, realtime=False,
                                        turn={"type": "server_vad", "silence_duration_ms": 200, "threshold": 0.5}))
    long = asyncio.run(run_sdk_session(tiny_base, audio, realtime=False,
                                       turn={"type": "server_vad", "silence_duration_ms": 3000}))
    assert len(short.transcripts) > len(long.transcripts) >= 1, (short.transcripts, long.transcripts)
    updated = short.of("session.updated")[-1]["session"]["audio"]["input"]["turn_detection"]
    assert updated == {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 500, "silence_duration_ms": 200}
    assert assets.normalize_words(short.text) == assets.normalize_words(long.text) or \
        wer("beckett.wav", short.text) <= 0.2, (short.text, long.text)


@pytest.mark.parametrize("rate", [16000, 48000])
def test_other_pcm_rates(rate: int, tiny_base: str, clip_audio: Any) -> None:
    run = asyncio.run(run_sdk_session(tiny_base, clip_audio("beckett.wav"), rate=rate, realtime=False))
    assert assets.normalize_words(run.text)[:4] == ["ever", "tried", "ever", "failed"], run.text
    assert run.of("session.updated")[-1]["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": rate}


async def raw_session(url: str, messages: list[Any], *, subprotocols: list[str] | None = None,
                      headers: dict[str, str] | None = None, until_sentinel: bool = True,
                      wait: float = 60.0) -> tuple[list[dict[str, Any]], int | None, str | None]:
    """Send `messages` (dict -> JSON, str -> text, bytes -> binary) on a raw WebSocket; read until the
    server answers the commit with event_id 'sentinel', or closes."""
    events: list[dict[str, Any]] = []
    async with websockets.connect(url, subprotocols=subprotocols, additional_headers=headers,  # type: ignore[arg-type]
                                  max_size=None) as ws:
        try:
            for message in messages:
                if isinstance(message, float):  # a pause in sending
                    await asyncio.sleep(message)
                    continue
                await ws.send(json.dumps(message) if isinstance(message, dict) else message)
        except websockets.ConnectionClosed:
            pass
        try:
            async with asyncio.timeout(wait):
                while True:
                    event = json.loads(await ws.recv())
                    if event["type"] == "error" and event["error"].get("event_id") == "sentinel" and until_sentinel:
                        break
                    events.append(event)
        except websockets.ConnectionClosed:
            pass
        return events, ws.close_code if ws.close_code is not None else None, ws.subprotocol


def ws_url(base: str, query: str = "intent=transcription") -> str:
    return base.replace("http://", "ws://") + "/v1/realtime?" + query


AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
UPDATE = {"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
    "format": {"type": "audio/pcm", "rate": 24000}, "transcription": {"language": "en"}, "turn_detection": None}}}}


def speech(clip_audio: Any, seconds: float = 2.5, rate: int = 24000) -> list[dict[str, Any]]:
    pcm = resample_pcm16(clip_audio("beckett.wav")[: int(16000 * seconds)], rate)
    step = rate // 10 * 2
    return [{"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i:i + step]).decode()}
            for i in range(0, len(pcm), step)]


def recover(clip_audio: Any) -> list[Any]:
    """After a non-fatal error: the same connection still transcribes (OpenAI's keeps going too)."""
    return [*speech(clip_audio), {"type": "input_audio_buffer.commit"},
            {"type": "input_audio_buffer.commit", "event_id": "sentinel"}]


B64_ODD = base64.b64encode(b"\x00\x01\x02").decode()
BAD_INPUT = [
    # (name, messages before recovery, code, update needed before recovery)
    ("invalid json", ["not json{"], "invalid_json", True),
    ("binary frame", [b"\x00\x00"], "invalid_frame", True),
    ("append before session.update", [{"type": "input_audio_buffer.append", "audio": B64_ODD}], "session_not_configured", True),
    ("commit before session.update", [{"type": "input_audio_buffer.commit"}], "session_not_configured", True),
    ("unknown event type", [UPDATE, {"type": "response.create"}], "unknown_event", False),
    ("bad base64", [UPDATE, {"type": "input_audio_buffer.append", "audio": "%%%not base64"}], "invalid_base64", False),
    ("odd pcm16 byte count", [UPDATE, {"type": "input_audio_buffer.append", "audio": B64_ODD}], "invalid_audio", False),
    ("wrong sample rate", [{**UPDATE, "session": {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 12345}}}}}], "invalid_sample_rate", True),
    ("semantic_vad", [{**UPDATE, "session": {"type": "transcription", "audio": {"input": {
        "turn_detection": {"type": "semantic_vad"}}}}}], "unsupported_turn_detection", True),
    ("unknown session field", [{**UPDATE, "session": {"type": "transcription", "voice": "alloy"}}],
     "unknown_parameter", True),
    ("conversation session type", [{**UPDATE, "session": {"type": "realtime"}}], "unsupported_session_type", True),
    ("model not served here", [{**UPDATE, "session": {"type": "transcription", "audio": {"input": {
        "transcription": {"model": "gpt-4o-transcribe"}}}}}], "model_not_served", True),
    ("language the model lacks", [{**UPDATE, "session": {"type": "transcription", "audio": {"input": {
        "transcription": {"language": "de"}}}}}], "unsupported_language", True),
    ("threshold out of range", [{**UPDATE, "session": {"type": "transcription", "audio": {"input": {
        "turn_detection": {"type": "server_vad", "threshold": 7}}}}}], "invalid_value", True),
    ("empty commit", [UPDATE, {"type": "input_audio_buffer.commit"}], "input_audio_buffer_commit_empty", False),
    ("append over the per-event limit", [UPDATE, {"type": "input_audio_buffer.append",
                                                   "audio": base64.b64encode(b"\x00" * ((1 << 20) + 2)).decode()}],
     "frame_too_large", False),
]


@pytest.mark.parametrize("name,messages,code,needs_update", BAD_INPUT, ids=[row[0] for row in BAD_INPUT])
def test_bad_input_then_the_session_keeps_working(name: str, messages: list[Any], code: str, needs_update: bool,
                                                   tiny_base: str, clip_audio: Any) -> None:
    tail = ([UPDATE] if needs_update else []) + recover(clip_audio)
    events, close_code, _ = asyncio.run(raw_session(ws_url(tiny_base), [*messages, *tail], headers=AUTH))
    errors = [e["error"] for e in events if e["type"] == "error"]
    assert [e["code"] for e in errors] == [code], events
    assert errors[0]["message"] and errors[0]["type"] == "invalid_request_error"
    assert all(e["event_id"] for e in events)
    transcripts = [e["transcript"] for e in events if e["type"] == COMPLETED]
    assert transcripts and assets.normalize_words(transcripts[-1])[:2] == ["ever", "tried"], (name, events[-4:])
    check_deltas(events)
    assert close_code is None  # still open: the client closed it
    good = asyncio.run(run_sdk_session(tiny_base, clip_audio("beckett.wav")[: 16000 * 3], realtime=False))
    assert assets.normalize_words(good.text)[:2] == ["ever", "tried"]


@pytest.mark.parametrize("name,query,subprotocols,headers,code,close", [
    ("no key", "intent=transcription", None, None, "missing_api_key", 4001),
    ("wrong subprotocol key", "intent=transcription", ["realtime", "openai-insecure-api-key.dk_wrong"], None,
     "invalid_api_key", 4001),
    ("conversation intent", "intent=conversation", None, AUTH, "unsupported_intent", 4400),
    ("model this server lacks", "intent=transcription&model=whisper-base", None, AUTH, "model_not_found", 4004),
])
def test_refused_sessions(name: str, query: str, subprotocols: Any, headers: Any, code: str, close: int,
                          tiny_base: str, clip_audio: Any) -> None:
    events, close_code, _ = asyncio.run(raw_session(ws_url(tiny_base, query), [], subprotocols=subprotocols,
                                                    headers=headers, until_sentinel=False))
    assert [e["error"]["code"] for e in events if e["type"] == "error"] == [code], events
    assert close_code == close
    good = asyncio.run(run_sdk_session(tiny_base, clip_audio("beckett.wav")[: 16000 * 3], realtime=False))
    assert assets.normalize_words(good.text)[:2] == ["ever", "tried"]


def test_browser_subprotocol_auth_and_g711(tiny_base: str, clip_audio: Any) -> None:
    """`realtime, openai-insecure-api-key.<key>` is answered with `realtime`; G.711 µ-law at 8 kHz transcribes."""
    import audioop  # noqa: F401 -- stdlib in 3.11; only used to encode the test input

    pcm8 = resample_pcm16(clip_audio("beckett.wav")[: 16000 * 3], 8000)
    ulaw = audioop.lin2ulaw(pcm8, 2)
    update = {**UPDATE, "session": {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcmu"}, "transcription": {"language": "en"}, "turn_detection": None}}}}
    appends = [{"type": "input_audio_buffer.append", "audio": base64.b64encode(ulaw[i:i + 800]).decode()}
               for i in range(0, len(ulaw), 800)]
    events, _, subprotocol = asyncio.run(raw_session(
        ws_url(tiny_base), [update, *appends, {"type": "input_audio_buffer.commit"},
                            {"type": "input_audio_buffer.commit", "event_id": "sentinel"}],
        subprotocols=["realtime", f"openai-insecure-api-key.{TEST_KEY}"]))
    assert subprotocol == "realtime"
    transcripts = [e["transcript"] for e in events if e["type"] == COMPLETED]
    assert assets.normalize_words(" ".join(transcripts))[:2] == ["ever", "tried"], events[-3:]


def test_model_query_without_intent(tiny_base: str, clip_audio: Any) -> None:
    """`client.realtime.connect(model=...)` (no intent): the first OpenAI event selects the protocol."""
    run = asyncio.run(run_sdk_session(tiny_base, clip_audio("beckett.wav")[: 16000 * 3], realtime=False,
                                      extra_query={"model": "whisper-streaming-tiny-en"}))
    assert assets.normalize_words(run.text)[:2] == ["ever", "tried"]


def test_too_many_sessions_then_close(tiny_engine: Loaded, realtime_server: Any, clip_audio: Any) -> None:
    """Over capabilities.max_concurrency: an `error` event, close 4029; the holders finish unharmed."""
    base = realtime_server(tiny_engine)
    audio = clip_audio("beckett.wav")[: 16000 * 4]
    limit = tiny_engine.spec.capabilities.max_concurrency

    async def scenario() -> tuple[list[OpenAIRun], Any]:
        holders = [asyncio.ensure_future(run_sdk_session(base, audio)) for _ in range(limit)]
        await asyncio.sleep(1.5)
        refused = await raw_session(ws_url(base), [UPDATE], until_sentinel=False)
        return list(await asyncio.gather(*holders)), refused

    runs, (events, close_code, _) = asyncio.run(scenario())
    assert [e["error"]["code"] for e in events if e["type"] == "error"] == ["too_many_sessions"]
    assert close_code == 4029
    for run in runs:
        assert assets.normalize_words(run.text)[:2] == ["ever", "tried"]


def test_audio_over_the_session_limit_closes(tiny_engine: Loaded, clip_audio: Any) -> None:
    """More audio than capabilities.max_audio_duration: `audio_too_long`, close 4400 (as native)."""
    spec = tiny_engine.spec
    short = spec.model_copy(update={"capabilities": spec.capabilities.model_copy(update={"max_audio_duration": 2})})
    loaded = dataclasses.replace(tiny_engine, entry=dataclasses.replace(tiny_engine.entry, spec=short))
    with serve_state(server_state(loaded)) as base:
        events, close_code, _ = asyncio.run(raw_session(ws_url(base), [UPDATE, *speech(clip_audio, 3.0)],
                                                        until_sentinel=False))
        assert [e["error"]["code"] for e in events if e["type"] == "error"] == ["audio_too_long"]
        assert close_code == 4400
        good = asyncio.run(run_sdk_session(base, clip_audio("beckett.wav")[: 16000 * 1], realtime=False))
        assert not good.errors


class _FailingEngine:
    """The real tiny.en engine whose sessions raise once 1.6 s of audio were fed (an engine bug).

    Wraps `engines/realtime/whisper-streaming/engine.py`'s StreamingEngine as of this commit: every
    other attribute and call goes to it, so the server sees a real engine until the fault fires.
    """

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def open_session(self, language: Any = None, turn: Any = None) -> Any:
        session = self._engine.open_session(language, turn)
        fed = {"samples": 0}
        real_accept = session.accept

        def accept(audio: Any) -> Any:
            fed["samples"] += len(audio)
            if fed["samples"] > 1.6 * 16000:
                raise RuntimeError("injected engine fault")
            return real_accept(audio)

        session.accept = accept
        return session


def test_engine_failure_mid_item(tiny_engine: Loaded, clip_audio: Any) -> None:
    """The open item gets `…transcription.failed`, then `internal_error` and close 4500; the server lives on."""
    from dalston.engine_sdk import StreamingEngine

    state = server_state(tiny_engine)
    real = state.engine
    StreamingEngine.register(_FailingEngine)  # the server checks isinstance(engine, StreamingEngine)
    state.engine = _FailingEngine(real)  # type: ignore[assignment]
    with serve_state(state) as base:
        events, close_code, _ = asyncio.run(raw_session(ws_url(base), [
            {**UPDATE, "session": {"type": "transcription", "audio": {"input": {"transcription": {"language": "en"}}}}},
            *speech(clip_audio, 4.0)[:15], 2.0, *speech(clip_audio, 4.0)[15:]], until_sentinel=False))
        kinds = [e["type"] for e in events]
        assert "input_audio_buffer.speech_started" in kinds, kinds
        assert kinds[-2:] == ["conversation.item.input_audio_transcription.failed", "error"], events[-2:]
        assert events[-1]["error"]["code"] == "internal_error" and close_code == 4500
        state.engine = real
        good = asyncio.run(run_sdk_session(base, clip_audio("beckett.wav")[: 16000 * 3], realtime=False))
        assert assets.normalize_words(good.text)[:2] == ["ever", "tried"]


def test_docs_sdk_example_runs(base_engine: Loaded, realtime_server: Any, clip_audio: Any,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """The official-SDK example in docs/REALTIME.md, executed as written against whisper-streaming-base."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "REALTIME.md").read_text()
    section = doc[doc.index("### Example: the official `openai` Python SDK"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/REALTIME.md", "exec"), namespace)
    base = realtime_server(base_engine)
    asyncio.run(namespace["main"](resample_pcm16(clip_audio("beckett.wav"), 24000), base_url=base + "/v1"))
    printed = capsys.readouterr().out
    assert wer("beckett.wav", printed) <= 0.10, printed
