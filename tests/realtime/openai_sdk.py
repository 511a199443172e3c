"""Drive dalston's OpenAI Realtime transcription protocol with the official `openai` Python SDK.

`run_sdk_session` is what an OpenAI user writes: `AsyncOpenAI(base_url=...)`,
`client.realtime.connect(extra_query={"intent": "transcription"})` (or the beta client),
`session.update`, base64 `input_audio_buffer.append` paced in real time, a final commit. It
records every raw server event with its arrival time, checks that the SDK parses each one, and
checks the delta invariant (`check_deltas`) on every session it runs, so every OpenAI session in
the suite is checked.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np

from tests.fixtures.serving import TEST_KEY


def resample_pcm16(audio16k: np.ndarray, rate: int) -> bytes:
    """16 kHz float32 -> pcm16 bytes at `rate` (libswresample, as a client would)."""
    if rate == 16000:
        return (np.clip(audio16k, -1, 1) * 32767).astype("<i2").tobytes()
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    frame = av.AudioFrame.from_ndarray(audio16k[None, :].astype(np.float32), format="flt", layout="mono")
    frame.sample_rate = 16000
    out = [*resampler.resample(frame), *resampler.resample(None)]
    return b"".join(f.to_ndarray().astype("<i2").tobytes() for f in out)


@dataclass
class Received:
    at: float  # seconds since the first append
    body: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.body.get("type"))


@dataclass
class OpenAIRun:
    events: list[Received] = field(default_factory=list)
    last_append_at: float = 0.0

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e.body for e in self.events if e.type == kind]

    @property
    def transcripts(self) -> list[str]:
        return [e["transcript"] for e in self.of("conversation.item.input_audio_transcription.completed")]

    @property
    def text(self) -> str:
        return " ".join(t for t in self.transcripts if t)

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [e["error"] for e in self.of("error")]


def check_early_deltas(run: OpenAIRun, duration_s: float) -> None:
    """Deltas arrive before the audio ends: the first delta is for speech that ended well before the
    end of the clip (stream time), and arrives before the last append (wall clock) -- unless the
    server was measurably behind real time (a loaded machine), which is printed instead."""
    deltas = [e for e in run.events if e.type == "conversation.item.input_audio_transcription.delta"]
    assert deltas, "no deltas"
    first = deltas[0]
    started = next(e for e in run.events if e.type == "input_audio_buffer.speech_started"
                   and e.body["item_id"] == first.body["item_id"])
    assert started.body["audio_start_ms"] / 1000 < duration_s - 2.0, started.body
    if first.at >= run.last_append_at:
        # how far behind real time the server's utterance ends came (a healthy server: < 1.5 s)
        lag = max(e.at - e.body["audio_end_ms"] / 1000 for e in run.events
                  if e.type == "input_audio_buffer.speech_stopped")
        assert lag > 2.0, f"first delta at {first.at:.2f}s after the last append at {run.last_append_at:.2f}s"
        print(f"server {lag:.1f}s behind real time (machine load {os.getloadavg()[0]:.1f}): wall-clock check skipped")


def check_deltas(events: Sequence[dict[str, Any]]) -> None:
    """Deltas only append: per item, the concatenated deltas are exactly the completed transcript,
    and no delta arrives after its item's `completed`."""
    deltas: dict[str, str] = {}
    completed: dict[str, str] = {}
    for event in events:
        kind = event.get("type")
        if kind == "conversation.item.input_audio_transcription.delta":
            assert event["item_id"] not in completed, f"delta after completed: {event}"
            assert event["content_index"] == 0 and event["delta"], event
            deltas[event["item_id"]] = deltas.get(event["item_id"], "") + event["delta"]
        elif kind == "conversation.item.input_audio_transcription.completed":
            completed[event["item_id"]] = event["transcript"]
    for item_id, transcript in completed.items():
        assert deltas.get(item_id, "") == transcript, (item_id, deltas.get(item_id), transcript)
    assert set(deltas) <= set(completed), f"deltas for items never completed: {set(deltas) - set(completed)}"


async def run_sdk_session(base_url: str, audio16k: np.ndarray, *, rate: int = 24000, chunk_ms: int = 100,
                          realtime: bool = True, turn: dict[str, Any] | None | str = "default",
                          language: str | None = "en", model: str | None = None, beta: bool = False,
                          commit_every_s: float | None = None, api_key: str = TEST_KEY,
                          extra_query: dict[str, str] | None = None, timeout: float = 300.0) -> OpenAIRun:
    """One transcription session with the official SDK; returns every server event it received.

    `turn`: "default" sends none (server_vad with the engine's defaults), None = manual commits,
    a dict = that turn_detection. `commit_every_s`: also commit after every so many seconds of
    audio (manual turns). Always ends with a commit, then waits until it was handled.
    """
    from openai import AsyncOpenAI

    http = base_url.rstrip("/")
    client = AsyncOpenAI(api_key=api_key, base_url=http + "/v1", max_retries=0,
                         websocket_base_url=http.replace("http", "ws", 1) + "/v1")  # the beta client defaults to wss
    pcm = resample_pcm16(audio16k, rate)
    step = rate * chunk_ms // 1000 * 2
    run = OpenAIRun()
    transcription: dict[str, Any] = {"language": language}
    if model:
        transcription["model"] = model
    query = {"intent": "transcription", **(extra_query or {})}
    if beta:
        connect = client.beta.realtime.connect(model=model or "", extra_query=query)
        session: dict[str, Any] = {"input_audio_format": "pcm16", "input_audio_transcription": transcription}
        if turn != "default":
            session["turn_detection"] = turn
        assert rate == 24000, "beta pcm16 is 24 kHz"
    else:
        connect = client.realtime.connect(extra_query=query)
        audio_input: dict[str, Any] = {"format": {"type": "audio/pcm", "rate": rate}, "transcription": transcription}
        if turn != "default":
            audio_input["turn_detection"] = turn
        session = {"type": "transcription", "audio": {"input": audio_input}}
    async with connect as conn:
        t0 = time.monotonic()

        async def send() -> None:
            nonlocal t0
            if beta:
                await conn.transcription_session.update(session=session)  # type: ignore[attr-defined]
            else:
                await conn.session.update(session=session)  # type: ignore[arg-type]
            t0 = time.monotonic()
            since_commit = 0
            for i, start in enumerate(range(0, len(pcm), step)):
                if realtime:
                    await asyncio.sleep(max(0.0, t0 + i * chunk_ms / 1000 - time.monotonic()))
                await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[start:start + step]).decode())
                since_commit += step
                if commit_every_s and since_commit >= commit_every_s * rate * 2:
                    await conn.input_audio_buffer.commit()
                    since_commit = 0
            run.last_append_at = time.monotonic() - t0
            await conn.input_audio_buffer.commit()
            # Commits are handled in order after the audio before them; a second, empty commit is
            # answered with input_audio_buffer_commit_empty once the first one's item is complete.
            await conn.input_audio_buffer.commit(event_id="sentinel")

        sender = asyncio.create_task(send())
        try:
            async with asyncio.timeout(timeout):
                while True:
                    raw = await conn.recv_bytes()
                    body = json.loads(raw)
                    parsed = conn.parse_event(raw)  # the SDK knows every event type we send
                    assert parsed.type == body["type"]
                    if body["type"] == "error" and body["error"].get("event_id") == "sentinel":
                        break  # the sentinel commit was processed, so everything before it was
                    run.events.append(Received(time.monotonic() - t0, body))
        finally:
            sender.cancel()
    check_deltas([e.body for e in run.events])
    return run
