"""SIGTERM on a realtime engine loses no audio: real `dalston serve whisper-streaming-tiny-en` processes
(real tiny.en weights) behind a real `dalston gateway`, sessions streaming beckett.wav paced in real time.

uvicorn's own shutdown closes open WebSockets at once with 1012 (no finals, no event); these tests
fail on that. What they check (docs/REALTIME.md "Draining"):

* a session open at SIGTERM gets `session.draining` (relayed unchanged by the gateway), keeps
  streaming, ends normally with finals for all its speech (WER vs the reference) and 1000;
* with a short `--shutdown-timeout` it gets, at the deadline, the finals for what the server received,
  `session.end` with that duration, and 1001 (relayed by the gateway); an OpenAI-protocol session
  beside it gets the same event (with an `event_id`), its transcription so far, and 1001;
* meanwhile a new session on the draining engine gets 4503 `shutting_down` and `/ready` is 503;
* the process exits 0;
* a *gateway* replica that gets SIGTERM mid-session (its own drain, `dalston.gateway.client_session`)
  tells both sessions, has the engine flush them at its deadline, relays those finals, closes 1001.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from typing import Any

import httpx
import jiwer
import numpy as np
import pytest
import websockets

from dalston.commands.stream import StreamResult, load_audio_16k, realtime_url, stream_audio, stream_audio_openai
from tests.fixtures import assets
from tests.gateway import processes as p

pytestmark = pytest.mark.slow

KEY = "dk_test"
MODEL = "whisper-streaming-tiny-en"
SIGTERM_AFTER_S = 3.0  # of audio sent, paced in real time


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("drain")
    engines = assets.engines_tree(root)
    models = root / "models"
    assets.model_dir_for(MODEL, models, engines_root=engines)
    keys = root / "keys.txt"
    keys.write_text(hashlib.sha256(KEY.encode()).hexdigest() + "\n")
    env = p.base_env(engines, models)
    gw = p.gateway(env, keys, root, interval=0.5, timeout=2.0).start()
    try:
        gw.wait_http("/health", 30)
        yield {"gateway": gw, "env": env, "keys": keys, "root": root}
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def beckett() -> np.ndarray:
    return load_audio_16k(assets.speech_clip("beckett.wav"))


def _engine(cluster: Any, shutdown_timeout: float) -> p.Proc:
    proc = p.engine(MODEL, cluster["env"], cluster["keys"], cluster["root"], cluster["gateway"].url)
    proc.args += ["--shutdown-timeout", str(shutdown_timeout)]
    proc.start()
    proc.wait_http("/ready", 180)
    gw = cluster["gateway"].url
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # registered: the gateway routes the model to it
        data = httpx.get(f"{gw}/v1/models", headers={"authorization": f"Bearer {KEY}"}, timeout=5).json()["data"]
        if any(m["id"] == MODEL and m["available"] for m in data):
            return proc
        time.sleep(0.2)
    raise TimeoutError(f"{MODEL} never became available on the gateway:\n{proc.log_text()[-2000:]}")


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


async def _refused_while_draining(engine_url: str) -> tuple[list[dict[str, Any]], int | None, int]:
    """A new session straight to the draining engine, and its /ready status."""
    events: list[dict[str, Any]] = []
    async with websockets.connect(realtime_url(engine_url, MODEL, KEY)) as ws:
        try:
            async for message in ws:
                events.append(json.loads(message))
        except websockets.ConnectionClosed:
            pass
    async with httpx.AsyncClient() as client:
        ready = (await client.get(engine_url + "/ready", timeout=5)).status_code
    return events, ws.close_code, ready


async def _stream_and_sigterm(cluster: Any, engine: p.Proc, audio: np.ndarray,
                              protocols: tuple[str, ...] = ("native",)) -> tuple[list[StreamResult], Any]:
    """One session per protocol through the gateway, streaming `audio` in real time; SIGTERM the
    engine after SIGTERM_AFTER_S, then (once every session was told it drains) probe the engine."""
    url = realtime_url(cluster["gateway"].url, MODEL)
    told = [asyncio.Event() for _ in protocols]

    def on_event_for(flag: asyncio.Event) -> Any:
        return lambda event: flag.set() if event.type == "session.draining" else None

    sessions = []
    for protocol, flag in zip(protocols, told):
        if protocol == "openai":
            sessions.append(stream_audio_openai(url + "&intent=transcription", audio, realtime=True, api_key=KEY,
                                                language="en", on_event=on_event_for(flag), timeout=120))
        else:
            sessions.append(stream_audio(url, audio, realtime=True, api_key=KEY, language="en",
                                         on_event=on_event_for(flag), timeout=120))
    streams = [asyncio.create_task(session) for session in sessions]
    await asyncio.sleep(SIGTERM_AFTER_S)
    engine.sigterm()
    await asyncio.wait_for(asyncio.gather(*(flag.wait() for flag in told)), 10)
    probe = await _refused_while_draining(engine.url)
    return list(await asyncio.gather(*streams)), probe


def _check_drain_side_effects(engine: p.Proc, probe: Any, sessions: int = 1) -> None:
    events, close_code, ready = probe
    assert close_code == 4503 and [e.get("code") for e in events] == ["shutting_down"], (close_code, events)
    assert ready == 503
    assert engine.popen is not None
    assert engine.popen.wait(60) == 0, engine.log_text()[-3000:]
    log = engine.log_text()
    assert f"realtime_draining sessions={sessions}" in log and re.search(r"realtime_drained seconds=\S+ left=0", log), log[-3000:]


def test_sigterm_mid_session_finishes_it_with_all_finals(cluster: Any, beckett: np.ndarray) -> None:
    """A native and an OpenAI-protocol session open at SIGTERM (60 s budget) are told, keep streaming
    and end as usual with the finals for all their speech; the engine then exits 0."""
    engine = _engine(cluster, shutdown_timeout=60)
    try:
        (native, openai), probe = asyncio.run(_stream_and_sigterm(cluster, engine, beckett, ("native", "openai")))
    finally:
        engine.stop(timeout=90)
    reference = " ".join(_words(assets.reference_text("beckett")))
    for result in (native, openai):
        drains = [e.body for e in result.events if e.type == "session.draining"]
        assert len(drains) == 1 and 50 < drains[0]["deadline_s"] <= 60, drains
        assert not result.errors, result.errors
        assert result.close_code == 1000, (result.close_code, result.close_reason)
        assert jiwer.wer(reference, " ".join(_words(result.text))) <= 0.1, result.text
    assert native.events[-1].type == "session.end"
    _check_drain_side_effects(engine, probe, sessions=2)


def test_short_shutdown_timeout_flushes_finals_then_closes_1001(cluster: Any, beckett: np.ndarray) -> None:
    """A native and an OpenAI-protocol session open at SIGTERM with a 2.5 s budget: both are told,
    both get the finals for the audio the server received, then 1001 (relayed by the gateway)."""
    timeout = 2.5
    engine = _engine(cluster, shutdown_timeout=timeout)
    try:
        (native, openai), probe = asyncio.run(_stream_and_sigterm(cluster, engine, beckett, ("native", "openai")))
    finally:
        engine.stop(timeout=90)
    reference = _words(assets.reference_text("beckett"))
    for result in (native, openai):
        drains = [e.body for e in result.events if e.type == "session.draining"]
        assert len(drains) == 1 and 0 < drains[0]["deadline_s"] <= timeout, drains
        assert not result.errors, result.errors
        assert result.close_code == 1001, (result.close_code, result.close_reason)
    assert openai.events[[e.type for e in openai.events].index("session.draining")].body["event_id"]

    # native: session.end says how much audio was received; the finals cover it
    ends = [e.body for e in native.events if e.type == "session.end"]
    assert len(ends) == 1 and native.events[-1].type == "session.end", native.events[-3:]
    received = ends[0]["duration"]
    total = len(beckett) / 16000
    assert SIGTERM_AFTER_S + timeout - 1 < received < total - 1, (received, total)
    assert native.finals and all(f["end"] <= received + 0.05 for f in native.finals), native.finals
    heard_until = max(w["end"] for f in native.finals for w in f["words"])
    assert heard_until > received - 2.0, (heard_until, received, native.finals)

    # both: the text is the reference up to where the audio was cut ("ever tried ever failed no matter"
    # has been said 5.5 s in), and no more
    for result in (native, openai):
        got = _words(result.text)
        assert 4 <= len(got) < len(reference), got
        assert jiwer.wer(" ".join(reference[:len(got)]), " ".join(got)) <= 0.2, got
    _check_drain_side_effects(engine, probe, sessions=2)


def test_gateway_sigterm_flushes_relayed_sessions_then_closes_1001(cluster: Any, beckett: np.ndarray) -> None:
    """A gateway replica gets SIGTERM (2.5 s budget) while relaying a native and an OpenAI-protocol
    session to a real engine that stays up: both are told `session.draining` by the gateway; at the
    deadline the gateway asks the engine to finish (native `session.end`; OpenAI commit), relays the
    finals for what the engine received, then closes 1001 "going away"; a new session on the draining
    gateway is refused in the handshake (503 `shutting_down`); the gateway exits 0 and the engine
    ends both sessions cleanly. Before, the gateway's uvicorn shutdown cut both at once with 1012."""
    timeout = 2.5
    root = cluster["root"] / "gateway-drain"
    root.mkdir(exist_ok=True)
    gw = p.gateway(cluster["env"], cluster["keys"], root, interval=0.5, timeout=2.0,
                   extra=["--shutdown-timeout", str(timeout)]).start()
    engine = p.engine(MODEL, cluster["env"], cluster["keys"], root, None)
    engine.args += ["--gateway", gw.url]
    try:
        gw.wait_http("/health", 60)
        engine.start()
        engine.wait_http("/ready", 180)
        deadline = time.monotonic() + 20
        while not any(m["id"] == MODEL and m["available"] for m in httpx.get(
                f"{gw.url}/v1/models", headers={"authorization": f"Bearer {KEY}"}, timeout=5).json()["data"]):
            assert time.monotonic() < deadline, gw.log_text()[-2000:]
            time.sleep(0.2)

        async def run() -> tuple[list[StreamResult], tuple[int, str], int]:
            url = realtime_url(gw.url, MODEL)
            told = [asyncio.Event(), asyncio.Event()]
            sessions = [
                stream_audio(url, beckett, realtime=True, api_key=KEY, language="en", timeout=120,
                             on_event=lambda e: told[0].set() if e.type == "session.draining" else None),
                stream_audio_openai(url + "&intent=transcription", beckett, realtime=True, api_key=KEY, language="en",
                                    timeout=120,
                                    on_event=lambda e: told[1].set() if e.type == "session.draining" else None)]
            streams = [asyncio.create_task(s) for s in sessions]
            await asyncio.sleep(SIGTERM_AFTER_S)
            gw.sigterm()
            await asyncio.wait_for(asyncio.gather(*(flag.wait() for flag in told)), 10)
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(realtime_url(gw.url, MODEL, KEY)):
                    pass
            response = refused.value.response
            async with httpx.AsyncClient() as client:
                ready = (await client.get(gw.url + "/ready", timeout=5)).status_code
            return (list(await asyncio.gather(*streams)),
                    (response.status_code, json.loads(response.body or b"")["error"]["code"]), ready)

        (native, openai), refusal, ready = asyncio.run(run())
        assert refusal == (503, "shutting_down") and ready == 503
        reference = _words(assets.reference_text("beckett"))
        for result in (native, openai):
            drains = [e.body for e in result.events if e.type == "session.draining"]
            assert len(drains) == 1 and 0 < drains[0]["deadline_s"] <= timeout, drains
            assert not result.errors, result.errors
            assert result.close_code == 1001 and result.close_reason.startswith("going away"), \
                (result.close_code, result.close_reason)
            got = _words(result.text)  # the reference up to where the audio was cut, and no more
            assert 4 <= len(got) < len(reference), got
            assert jiwer.wer(" ".join(reference[:len(got)]), " ".join(got)) <= 0.2, got
        ends = [e.body for e in native.events if e.type == "session.end"]
        assert len(ends) == 1 and native.events[-1].type == "session.end", native.events[-3:]
        assert SIGTERM_AFTER_S + timeout - 1 < ends[0]["duration"] < len(beckett) / 16000 - 1, ends
        assert openai.completed, [e.type for e in openai.events]
        assert gw.popen is not None and gw.popen.wait(30) == 0, gw.log_text()[-3000:]
        log = gw.log_text()
        assert re.search(r"gateway_draining signal=15 sessions=2 requests=0 deadline_s=2\.5", log), log[-3000:]
        assert log.count("complete=True") == 2, log[-3000:]
        assert engine.alive()
        assert engine.log_text().count("realtime_session_closed") >= 2
    finally:
        gw.stop()
        engine.stop(timeout=60)
