"""`dalston stream FILE --model ID [--realtime] [--url ws://...] [--api-key KEY] [--protocol openai]`.

Decodes FILE to 16 kHz mono, sends it as pcm16 frames of `--chunk-ms` over `/v1/realtime`, paced in
real time with `--realtime` (what a microphone would do) or as fast as the socket takes it, and
prints partials (rewriting one line on a terminal) and finals. `stream_audio` is the same client as
a library: the realtime tests and `bench/realtime.py` use it, so what they measure is what users run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np

DEFAULT_URL = "ws://127.0.0.1:8000/v1/realtime"
_COMPLETED = "conversation.item.input_audio_transcription.completed"
_DELTA = "conversation.item.input_audio_transcription.delta"
_FINAL, _SENTINEL = "dalston-stream-final", "dalston-stream-end"  # event ids of the two closing commits


@dataclass
class ReceivedEvent:
    """A server event and when it arrived (seconds since the first audio frame was sent)."""

    at: float
    body: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.body.get("type"))


@dataclass
class StreamResult:
    events: list[ReceivedEvent] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)  # per chunk, seconds since the first frame
    chunk_seconds: float = 0.0
    last_frame_at: float = 0.0
    close_code: int | None = None
    close_reason: str = ""

    @property
    def finals(self) -> list[dict[str, Any]]:
        return [e.body for e in self.events if e.type == "transcript.final"]

    @property
    def completed(self) -> list[dict[str, Any]]:
        """OpenAI protocol: one `...transcription.completed` per item."""
        return [e.body for e in self.events if e.type == _COMPLETED]

    @property
    def text(self) -> str:
        texts = [f["text"] for f in self.finals] + [c["transcript"] for c in self.completed]
        return " ".join(t for t in texts if t).strip()

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Error events; OpenAI's nested `error` object is flattened to the native shape (code, message)."""
        return [e.body.get("error", e.body) if isinstance(e.body.get("error"), dict) else e.body
                for e in self.events if e.type == "error"]


def realtime_url(url: str, model: str | None, api_key: str | None = None) -> str:
    """`url` (ws://host:port or a full .../v1/realtime URL) with `?model=` (and `api_key=` if given)."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path.endswith("/v1/realtime") else parts.path.rstrip("/") + "/v1/realtime"
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    if model:
        query["model"] = model
    if api_key:
        query["api_key"] = api_key
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))


def load_audio_16k(path: Path) -> np.ndarray:
    """Any audio file -> 16 kHz mono float32 (dalston.audio when installed, else PyAV via faster-whisper)."""
    try:
        from dalston.audio import decode_audio
    except ImportError:  # an install without the server's audio module: PyAV through faster-whisper
        from faster_whisper.audio import decode_audio as fw_decode

        return np.asarray(fw_decode(str(path), sampling_rate=16000), dtype=np.float32)
    return decode_audio(path).samples


def to_pcm16(samples: np.ndarray) -> bytes:
    return bytes((np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes())


async def stream_audio(
    url: str,
    samples: np.ndarray,
    *,
    chunk_ms: int = 160,
    realtime: bool = False,
    api_key: str | None = None,
    language: str | None = None,
    on_event: Callable[[ReceivedEvent], None] | None = None,
    timeout: float = 600.0,
) -> StreamResult:
    """Send 16 kHz mono `samples` as pcm16 chunks; collect every event until the server closes."""
    import websockets

    result = StreamResult(chunk_seconds=chunk_ms / 1000)
    step = 16000 * chunk_ms // 1000
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    async with websockets.connect(url, additional_headers=headers, max_size=None, open_timeout=30) as ws:
        t0 = time.monotonic()

        async def receive() -> None:
            try:
                async for message in ws:
                    if isinstance(message, str):
                        event = ReceivedEvent(time.monotonic() - t0, json.loads(message))
                        result.events.append(event)
                        if on_event:
                            on_event(event)
            except websockets.ConnectionClosed:
                pass

        receiver = asyncio.create_task(receive())
        try:
            await ws.send(json.dumps({"type": "session.config", "sample_rate": 16000, "encoding": "pcm16",
                                      "language": language}))
            t0 = time.monotonic()
            for i, start in enumerate(range(0, len(samples), step)):
                if realtime:
                    await asyncio.sleep(max(0.0, t0 + i * chunk_ms / 1000 - time.monotonic()))
                result.sent_at.append(time.monotonic() - t0)
                await ws.send(to_pcm16(samples[start:start + step]))
            result.last_frame_at = time.monotonic() - t0
            await ws.send(json.dumps({"type": "session.end"}))
        except websockets.ConnectionClosed:
            pass
        await asyncio.wait_for(receiver, timeout)
        result.close_code = ws.close_code
        result.close_reason = ws.close_reason or ""
    return result


async def stream_audio_openai(
    url: str,
    samples: np.ndarray,
    *,
    model: str | None = None,
    chunk_ms: int = 100,
    rate: int = 24000,
    realtime: bool = False,
    api_key: str | None = None,
    language: str | None = None,
    on_event: Callable[[ReceivedEvent], None] | None = None,
    timeout: float = 600.0,
) -> StreamResult:
    """The OpenAI Realtime transcription protocol (docs/REALTIME.md): 16 kHz `samples` resampled to
    `rate` pcm16, sent as base64 `input_audio_buffer.append` events of `chunk_ms`, then a commit.

    The server handles commits in order after the audio before them, so a second, empty commit
    (answered with `input_audio_buffer_commit_empty`) marks the point where every item is complete;
    then the client closes, as OpenAI clients do. `model`: the transcription model (a gateway
    routes by it).
    """
    import base64

    import websockets

    result = StreamResult(chunk_seconds=chunk_ms / 1000)
    pcm = to_pcm16(_resample(samples, rate))
    step = rate * chunk_ms // 1000 * 2
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    transcription: dict[str, Any] = {"language": language}
    if model:
        transcription["model"] = model
    update = {"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": rate}, "transcription": transcription}}}}
    async with websockets.connect(url, additional_headers=headers, max_size=None, open_timeout=30) as ws:
        t0 = time.monotonic()
        done = asyncio.Event()

        async def receive() -> None:
            try:
                async for message in ws:
                    if isinstance(message, str):
                        body = json.loads(message)
                        error = body.get("error") or {} if body.get("type") == "error" else {}
                        if error.get("event_id") == _SENTINEL:
                            done.set()
                            return
                        if error.get("event_id") == _FINAL and error.get("code") == "input_audio_buffer_commit_empty":
                            continue  # the VAD had already ended the last item
                        event = ReceivedEvent(time.monotonic() - t0, body)
                        result.events.append(event)
                        if on_event:
                            on_event(event)
                        if body.get("type") == "error" and body["error"].get("code") in _FATAL:
                            return
            except websockets.ConnectionClosed:
                pass

        receiver = asyncio.create_task(receive())
        try:
            await ws.send(json.dumps(update))
            t0 = time.monotonic()
            for i, start in enumerate(range(0, len(pcm), step)):
                if realtime:
                    await asyncio.sleep(max(0.0, t0 + i * chunk_ms / 1000 - time.monotonic()))
                result.sent_at.append(time.monotonic() - t0)
                chunk = base64.b64encode(pcm[start:start + step]).decode("ascii")
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
            result.last_frame_at = time.monotonic() - t0
            await ws.send(json.dumps({"type": "input_audio_buffer.commit", "event_id": _FINAL}))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit", "event_id": _SENTINEL}))
        except websockets.ConnectionClosed:
            pass
        await asyncio.wait_for(receiver, timeout)
        if done.is_set():
            await ws.close()
        result.close_code = ws.close_code
        result.close_reason = ws.close_reason or ""
    return result


# Errors after which an OpenAI session is closed by the server (the others leave it open).
_FATAL = {"missing_api_key", "invalid_api_key", "forbidden_credential", "model_not_found", "too_many_sessions",
          "idle_timeout", "model_not_ready", "shutting_down", "internal_error", "audio_too_long", "unsupported_intent"}


def _resample(samples: np.ndarray, rate: int) -> np.ndarray:
    if rate == 16000:
        return samples
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    frame = av.AudioFrame.from_ndarray(np.asarray(samples, dtype=np.float32)[None, :], format="flt", layout="mono")
    frame.sample_rate = 16000
    out = [f.to_ndarray().reshape(-1) for f in [*resampler.resample(frame), *resampler.resample(None)]]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


class _Printer:
    """Partials rewrite one terminal line; finals are printed once, on their own line."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.width = 0
        self.item_text = ""  # OpenAI protocol: the current item's deltas
        self.item_start = self.item_end = 0.0

    def __call__(self, event: ReceivedEvent) -> None:
        body = event.body
        kind = event.type
        if kind == "transcript.partial":
            if self.tty:
                line = f"… {body.get('text', '')}"[-(_columns() - 1):]
                sys.stdout.write("\r" + line + " " * max(0, self.width - len(line)))
                self.width = len(line)
                sys.stdout.flush()
            else:
                print(f"partial [{body.get('start', 0):7.2f}-{body.get('end', 0):7.2f}] {body.get('text', '')}", flush=True)
        elif kind == "transcript.final":
            self._clear()
            print(f"[{body.get('start', 0):7.2f}-{body.get('end', 0):7.2f}] {body.get('text', '')}", flush=True)
        elif kind == _DELTA:
            self.item_text += body.get("delta", "")
            if self.tty:
                line = f"… {self.item_text}"[-(_columns() - 1):]
                sys.stdout.write("\r" + line + " " * max(0, self.width - len(line)))
                self.width = len(line)
                sys.stdout.flush()
        elif kind == "input_audio_buffer.speech_started":
            self.item_start = body.get("audio_start_ms", 0) / 1000
        elif kind == "input_audio_buffer.speech_stopped":
            self.item_end = body.get("audio_end_ms", 0) / 1000
        elif kind == _COMPLETED:
            self._clear()
            self.item_text = ""
            if body.get("transcript"):
                print(f"[{self.item_start:7.2f}-{self.item_end:7.2f}] {body['transcript']}", flush=True)
        elif kind == "error":
            self._clear()
            nested = body.get("error")
            error = nested if isinstance(nested, dict) else body
            print(f"dalston stream: server error {error.get('code')}: {error.get('message')}", file=sys.stderr)

    def _clear(self) -> None:
        if self.tty and self.width:
            sys.stdout.write("\r" + " " * self.width + "\r")
            self.width = 0


def _columns() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="audio file (any format PyAV decodes)")
    parser.add_argument("--model", required=True, help="model id or alias, e.g. whisper-streaming-base")
    parser.add_argument("--url", default=os.environ.get("DALSTON_REALTIME_URL", DEFAULT_URL),
                        help=f"server or gateway, ws://host:port[/v1/realtime] (default {DEFAULT_URL})")
    parser.add_argument("--api-key", default=os.environ.get("DALSTON_API_KEY"), help="dk_... key (or $DALSTON_API_KEY)")
    parser.add_argument("--realtime", action="store_true", help="pace audio in real time (default: as fast as possible)")
    parser.add_argument("--chunk-ms", type=int, default=160, help="audio per frame (default 160)")
    parser.add_argument("--language", default=None, help="ISO 639-1 code; default: the model detects it")
    parser.add_argument("--json", action="store_true", help="print every event as one JSON line")
    parser.add_argument("--protocol", choices=("native", "openai"), default="native",
                        help="native dalston events (default) or OpenAI Realtime transcription (24 kHz base64 pcm16)")


def run(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        print(f"dalston stream: {args.file}: no such file", file=sys.stderr)
        return 1
    if not 10 <= args.chunk_ms <= 5000:
        print("dalston stream: --chunk-ms must be between 10 and 5000", file=sys.stderr)
        return 2
    try:
        samples = load_audio_16k(args.file)
    except Exception as exc:  # undecodable input: say which file, never a traceback
        print(f"dalston stream: {args.file}: cannot decode audio ({exc})", file=sys.stderr)
        return 1
    url = realtime_url(args.url, args.model)
    if args.protocol == "openai":
        url += "&intent=transcription"
    printer: Callable[[ReceivedEvent], None]
    if args.json:
        def printer(event: ReceivedEvent) -> None:
            print(json.dumps(event.body), flush=True)
    else:
        printer = _Printer(sys.stdout.isatty())
    try:
        if args.protocol == "openai":
            result = asyncio.run(stream_audio_openai(url, samples, model=args.model, chunk_ms=args.chunk_ms,
                                                     realtime=args.realtime, api_key=args.api_key,
                                                     language=args.language, on_event=printer))
        else:
            result = asyncio.run(stream_audio(url, samples, chunk_ms=args.chunk_ms, realtime=args.realtime,
                                              api_key=args.api_key, language=args.language, on_event=printer))
    except (OSError, asyncio.TimeoutError) as exc:
        print(f"dalston stream: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # handshake refused (HTTP status), bad URL...
        print(f"dalston stream: {url}: {exc}", file=sys.stderr)
        return 1
    if result.errors or (result.close_code not in (1000, None)) or (args.protocol == "openai" and not result.completed):
        if result.errors and args.json:  # the event went to stdout; say it on stderr too
            error = result.errors[0]
            print(f"dalston stream: server error {error.get('code')}: {error.get('message')}", file=sys.stderr)
        if not result.errors:
            print(f"dalston stream: connection closed with code {result.close_code} {result.close_reason}", file=sys.stderr)
        return 1
    return 0
