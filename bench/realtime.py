"""Realtime latency and accuracy: `dalston serve` whisper-streaming vs batch on the same weights, one run.

    python bench/realtime.py                                   # tiny.en + base, beckett + two_cities
    python bench/realtime.py --variants whisper-streaming-base --clips beckett.wav
    python bench/realtime.py --whisperlivekit /path/to/venv/bin/wlk   # also run WhisperLiveKit
    python bench/realtime.py --protocol openai   # + the OpenAI Realtime protocol, side by side with native
    python bench/realtime.py --variants whisper-streaming-base --old-policy --floor 300 --repeat 2
                                          # + the policy before tail decoding, + the adaptive step, taking turns
    python bench/realtime.py --sweep      # parakeet-streaming: 1..16 sessions, serialised vs batched steps
                                          # (tiny model + full-size twins; see bench/realtime_sweep.py)

For every variant a real `dalston serve VARIANT` process is started on its real pinned weights
(`tests.fixtures.assets.model_dir_for`), and every clip is streamed to `/v1/realtime` as pcm16 in
160 ms frames *paced in real time* (like a microphone), with the `dalston stream` client code.

Measured per (variant, clip):
* chunk latency (the issue's definition): for each 160 ms frame that holds speech, the time from
  sending it to the first `transcript.partial`/`final` whose `end` covers the frame's end;
  median and p95. Speech frames are those overlapping a word of the batch transcript (word
  timestamps), so waiting through a pause is not counted as latency.
* word latency (system-neutral, also computed for WhisperLiveKit): for each word of the batch
  transcript, the time from sending the frame that holds its end to the first message whose
  displayed text (finals + current partial) has at least that many words; median and p95.
* final WER of the finals, and batch WER of the same server's `/v1/audio/transcriptions` on the
  same pcm16 samples (uploaded as WAV): same weights, same input, one run. Target ratio <= 1.2.

OpenAI protocol (`--protocol openai`): after each native stream, the same clip is streamed to the same
server over OpenAI's Realtime transcription protocol (24 kHz pcm16, base64 `input_audio_buffer.append`
of the same duration, `dalston stream --protocol openai`'s client); row system `dalston-openai`.
Word latency and WER are computed the same way (displayed text = completed items + the current
item's deltas); chunk latency needs the stream time an event covers, which OpenAI deltas do not
carry, so it is native-only. The framing overhead is also measured directly, per 100 ms chunk of
each clip, on the server's own code paths: JSON parse + base64 decode + 24 -> 16 kHz resampling
(OpenAI) against converting the same 100 ms as a 16 kHz binary pcm16 frame (native), medians of
many repetitions (target: < 5 ms per chunk at median).

WhisperLiveKit (`--whisperlivekit WLK_EXECUTABLE`, a `wlk` from `pip install whisperlivekit` in
its own venv): started as `wlk serve --backend faster-whisper --backend-policy localagreement
--model_dir <the same weights dir> --language en --pcm-input --min-chunk-size 1.0` and fed the same
pcm16 frames on `/asr`; its own defaults otherwise (notably beam size 5 where the dalston variants
use 1, and its Silero voice-activity controller).

Prints a table and writes JSON (default bench/results/realtime.json, git-ignored); the numbers go to
docs/PERFORMANCE.md. The load average is recorded: the machine may be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import jiwer  # noqa: E402
import numpy as np  # noqa: E402

from dalston.commands.stream import (  # noqa: E402
    load_audio_16k,
    realtime_url,
    stream_audio,
    stream_audio_openai,
    to_pcm16,
)
from tests.fixtures import assets  # noqa: E402
from tests.gateway import processes as p  # noqa: E402

KEY = "dk_bench_realtime"
SR = 16000


@dataclass
class Run:
    """One stream of one clip to one system: what arrived when."""

    system: str
    variant: str
    clip: str
    sent_at: list[float]
    updates: list[tuple[float, str]] = field(default_factory=list)  # (arrival, displayed text)
    covers: list[tuple[float, float]] = field(default_factory=list)  # (arrival, stream time covered)
    final_text: str = ""
    first_update_at: float | None = None
    last_frame_at: float = 0.0


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def wer(clip: str, text: str) -> float:
    return float(jiwer.wer(" ".join(assets.reference_words(clip)), " ".join(assets.normalize_words(text)) or "<empty>"))


def wav_bytes(pcm: bytes) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm)
    return out.getvalue()


# ---------------------------------------------------------------- ground truth word times
def reference_word_ends(weights_dir: Path, audio: np.ndarray) -> list[tuple[float, float]]:
    """(start, end) of each word of a batch decode with word timestamps: where speech is, and when
    each word is complete in the stream. The same list serves both systems."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(weights_dir), device="cpu", compute_type="int8", local_files_only=True)
    segments, _ = model.transcribe(audio, language="en", word_timestamps=True, beam_size=1, vad_filter=False)
    words = [(w.start, w.end) for s in segments for w in (s.words or ()) if assets.normalize_words(w.word)]
    return words


def chunk_latencies(run: Run, chunk_s: float, words: list[tuple[float, float]]) -> list[float]:
    """Per speech frame: first covering event's arrival minus the frame's send time."""
    out = []
    for i, sent in enumerate(run.sent_at):
        lo, hi = i * chunk_s, (i + 1) * chunk_s
        if not any(s < hi and e > lo for s, e in words):
            continue
        arrival = next((t for t, covered in run.covers if t >= sent and covered >= hi - 1e-3), None)
        if arrival is not None:
            out.append(arrival - sent)
    return out


def word_latencies(run: Run, chunk_s: float, words: list[tuple[float, float]]) -> list[float]:
    """Per reference word: first time the displayed text has that many words, minus when its last frame was sent."""
    counts = [(t, len(assets.normalize_words(text))) for t, text in run.updates]
    out = []
    for k, (_, end) in enumerate(words):
        frame = min(int(end / chunk_s), len(run.sent_at) - 1)
        sent = run.sent_at[frame]
        arrival = next((t for t, n in counts if n >= k + 1 and t >= sent), None)
        if arrival is not None:
            out.append(arrival - sent)
    return out


# ---------------------------------------------------------------- dalston
async def stream_dalston(url: str, variant: str, clip: str, audio: np.ndarray, chunk_ms: int, pace: bool) -> Run:
    finals: list[str] = []
    run = Run("dalston", variant, clip, [])

    def on_event(event: Any) -> None:
        body = event.body
        if event.type == "transcript.final":
            finals.append(body["text"])
            run.updates.append((event.at, " ".join(finals)))
            run.covers.append((event.at, float(body["end"])))
        elif event.type == "transcript.partial":
            run.updates.append((event.at, " ".join([*finals, body["text"]])))
            run.covers.append((event.at, float(body["end"])))

    result = await stream_audio(realtime_url(url, variant), audio, chunk_ms=chunk_ms, realtime=pace, api_key=KEY,
                                language="en", on_event=on_event)
    if result.errors or result.close_code != 1000:
        raise RuntimeError(f"dalston {variant} {clip}: errors={result.errors} close={result.close_code}")
    run.sent_at, run.last_frame_at, run.final_text = result.sent_at, result.last_frame_at, result.text
    first = next((e for e in result.events if e.type == "transcript.partial"), None)
    run.first_update_at = first.at if first else None
    return run


async def stream_openai(url: str, variant: str, clip: str, audio: np.ndarray, chunk_ms: int, pace: bool) -> Run:
    """The same clip over the OpenAI protocol: displayed text = completed items + the open item's deltas."""
    done: list[str] = []
    current = {"text": ""}
    run = Run("dalston-openai", variant, clip, [])

    def on_event(event: Any) -> None:
        body = event.body
        if event.type == "conversation.item.input_audio_transcription.delta":
            current["text"] += body["delta"]
            run.updates.append((event.at, " ".join([*done, current["text"]]).strip()))
        elif event.type == "conversation.item.input_audio_transcription.completed":
            if body["transcript"]:
                done.append(body["transcript"])
            current["text"] = ""
            run.updates.append((event.at, " ".join(done)))

    result = await stream_audio_openai(realtime_url(url, variant) + "&intent=transcription", audio, model=variant,
                                       chunk_ms=chunk_ms, realtime=pace, api_key=KEY, language="en",
                                       on_event=on_event)
    if result.errors:
        raise RuntimeError(f"dalston-openai {variant} {clip}: errors={result.errors}")
    run.sent_at, run.last_frame_at, run.final_text = result.sent_at, result.last_frame_at, result.text
    first = next((t for t, _ in run.updates), None)
    run.first_update_at = first
    return run


def framing_overhead(audio: np.ndarray, repeats: int = 20) -> dict[str, Any]:
    """Server-side cost per 100 ms chunk: OpenAI framing (JSON + base64 + 24 -> 16 kHz) minus native
    (a binary 16 kHz pcm16 frame), on the server's own code paths, median over the clip's chunks."""
    import base64

    from dalston.commands.stream import _resample
    from dalston.realtime.openai_protocol import decode_append
    from dalston.server.realtime_audio import AudioConverter

    pcm16k = to_pcm16(audio)
    pcm24k = to_pcm16(_resample(audio, 24000))
    native_frames = [pcm16k[i:i + 3200] for i in range(0, len(pcm16k), 3200)]
    openai_texts = [json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm24k[i:i + 4800]).decode()})
                    for i in range(0, len(pcm24k), 4800)]
    n = min(len(native_frames), len(openai_texts))
    native_ms: list[float] = []
    openai_ms: list[float] = []
    client_ms: list[float] = []
    for _ in range(repeats):
        native, openai = AudioConverter(16000, "pcm16"), AudioConverter(24000, "pcm16")
        for i in range(n):
            t = time.perf_counter()
            native.convert(native_frames[i])
            native_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            openai.convert(decode_append(json.loads(openai_texts[i])))
            openai_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm24k[i * 4800:(i + 1) * 4800]).decode()})
            client_ms.append((time.perf_counter() - t) * 1000)
    med_native, med_openai = statistics.median(native_ms), statistics.median(openai_ms)
    return {"chunks": n, "repeats": repeats, "native_ms_median": med_native, "openai_ms_median": med_openai,
            "overhead_ms_median": med_openai - med_native, "openai_ms_p95": percentile(openai_ms, 95),
            "client_encode_ms_median": statistics.median(client_ms),
            "meets_target": med_openai - med_native < 5.0}


def batch_text(url: str, variant: str, pcm: bytes, clip: str) -> str:
    r = httpx.post(f"{url}/v1/audio/transcriptions", headers={"authorization": f"Bearer {KEY}"}, timeout=900,
                   data={"model": variant, "language": "en"}, files={"file": (clip, wav_bytes(pcm), "audio/wav")})
    r.raise_for_status()
    return str(r.json()["text"])


# ---------------------------------------------------------------- WhisperLiveKit
async def stream_wlk(url: str, variant: str, clip: str, pcm: bytes, chunk_ms: int, pace: bool) -> Run:
    import websockets

    run = Run("whisperlivekit", variant, clip, [])
    step = SR * chunk_ms // 1000 * 2
    async with websockets.connect(url, max_size=None, open_timeout=30) as ws:
        json.loads(await ws.recv())  # {"type": "config", ...}
        t0 = time.monotonic()
        done = asyncio.Event()

        async def receive() -> None:
            async for message in ws:
                body = json.loads(message)
                if body.get("type") == "ready_to_stop":
                    done.set()
                    return
                lines = " ".join(line.get("text", "") for line in body.get("lines", [])).strip()
                text = f"{lines} {body.get('buffer_transcription', '')}".strip()
                now = time.monotonic() - t0
                if text and (not run.updates or run.updates[-1][1] != text):
                    run.updates.append((now, text))
                    if run.first_update_at is None:
                        run.first_update_at = now
                run.final_text = lines

        receiver = asyncio.create_task(receive())
        for i, start in enumerate(range(0, len(pcm), step)):
            if pace:
                await asyncio.sleep(max(0.0, t0 + i * chunk_ms / 1000 - time.monotonic()))
            run.sent_at.append(time.monotonic() - t0)
            await ws.send(pcm[start:start + step])
        run.last_frame_at = time.monotonic() - t0
        await ws.send(b"")  # WhisperLiveKit's end-of-stream
        await asyncio.wait_for(receiver, 600)
    return run


def start_wlk(executable: str, weights: Path, warmup: Path, log: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    cmd = [executable, "serve", "--host", "127.0.0.1", "--port", str(port), "--backend", "faster-whisper",
           "--backend-policy", "localagreement", "--model_dir", str(weights), "--language", "en", "--pcm-input",
           "--min-chunk-size", "1.0", "--warmup-file", str(warmup)]
    with log.open("ab") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_health(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"whisperlivekit exited {proc.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"whisperlivekit not healthy after {timeout}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ---------------------------------------------------------------- main
def summarize(run: Run, chunk_s: float, words: list[tuple[float, float]], batch: str | None) -> dict[str, Any]:
    chunks = chunk_latencies(run, chunk_s, words) if run.covers else []
    wl = word_latencies(run, chunk_s, words)
    stream_wer = wer(run.clip, run.final_text)
    batch_wer = wer(run.clip, batch) if batch is not None else None
    return {
        "system": run.system, "variant": run.variant, "clip": run.clip, "frames": len(run.sent_at),
        "chunk_latency_median_s": percentile(chunks, 50), "chunk_latency_p95_s": percentile(chunks, 95),
        "chunk_latency_samples": len(chunks),
        "word_latency_median_s": percentile(wl, 50), "word_latency_p95_s": percentile(wl, 95),
        "word_latency_samples": len(wl), "reference_words": len(words),
        "first_update_s": run.first_update_at, "last_frame_s": run.last_frame_at,
        "updates_before_last_frame": sum(1 for t, _ in run.updates if t < run.last_frame_at),
        "final_wer": stream_wer, "batch_wer": batch_wer,
        "wer_ratio": _ratio(stream_wer, batch_wer),
        "meets_wer_target": None if batch_wer is None else stream_wer <= 1.2 * batch_wer + 1e-9,
        "final_text": run.final_text, "batch_text": batch,
        "word_latencies_s": wl, "chunk_latencies_s": chunks,
    }


def bench_variant(engines: Path, variant: str, suffix: str, streaming: dict[str, Any]) -> str:
    """A bench-time copy `<variant>-<suffix>` of `variant` (same weights) with `runtime.streaming` keys
    set (a value of None removes the key)."""
    import re

    from dalston.catalog import Catalog

    entry = Catalog.load(engines).get(variant)
    source = next(f for f in (entry.dir / "variants").glob("*.yaml") if f"\nid: {variant}\n" in f.read_text())
    text = source.read_text()
    for key, value in streaming.items():
        text = re.sub(rf"^ *{key}: .*\n", "", text, flags=re.M)
        if value is not None:
            text = text.replace("    policy: local-agreement\n", f"    policy: local-agreement\n    {key}: {value}\n")
    (source.parent / f"{source.stem}-{suffix}.yaml").write_text(text.replace(f"\nid: {variant}\n",
                                                                             f"\nid: {variant}-{suffix}\n"))
    return f"{variant}-{suffix}"


def fixed_step_variant(engines: Path, variant: str) -> str:
    """A bench-time copy of `variant` without `min_chunk_floor_ms` (re-decode every `min_chunk_ms`), same weights."""
    return bench_variant(engines, variant, "fixedstep", {"min_chunk_floor_ms": None})


def old_policy_variant(engines: Path, variant: str) -> str:
    """A bench-time copy of `variant` with the policy before tail decoding: every re-decode is the
    whole utterance buffer through Whisper's full 30 s encoder input, once per `min_chunk_ms`."""
    return bench_variant(engines, variant, "oldpolicy", {"tail_decode": "false", "short_encoder_pad_ms": None,
                                                         "min_chunk_floor_ms": None})


def floor_variant(engines: Path, variant: str, floor_ms: int) -> str:
    """A bench-time copy of `variant` with the adaptive re-decode step on (`min_chunk_floor_ms`)."""
    return bench_variant(engines, variant, f"floor{floor_ms}", {"min_chunk_floor_ms": floor_ms})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--sweep" in argv:  # parakeet-streaming sessions sweep (bench/realtime_sweep.py)
        import realtime_sweep

        return realtime_sweep.main([a for a in argv if a != "--sweep"])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="whisper-streaming-tiny-en,whisper-streaming-base")
    parser.add_argument("--clips", default="beckett.wav,two_cities.wav")
    parser.add_argument("--chunk-ms", type=int, default=160)
    parser.add_argument("--no-pace", action="store_true", help="send as fast as possible (latencies then mean little)")
    parser.add_argument("--whisperlivekit", default=shutil.which("wlk"),
                        help="path of a `wlk` executable (pip install whisperlivekit in its own venv); default: on PATH")
    parser.add_argument("--keep-work", action="store_true", help="keep the temp dir (process logs)")
    parser.add_argument("--protocol", choices=("native", "openai"), default="native",
                        help="openai: also stream every clip over the OpenAI Realtime protocol, side by side")
    parser.add_argument("--fixed-step", action="store_true",
                        help="also run each variant with its adaptive re-decode step switched off, side by side")
    parser.add_argument("--old-policy", action="store_true",
                        help="also run each variant with the policy before tail decoding (whole-utterance re-decodes, "
                             "full 30 s encoder input), side by side")
    parser.add_argument("--floor", type=int, default=None, metavar="MS",
                        help="also run each variant with the adaptive re-decode step (min_chunk_floor_ms: MS)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="stream every clip this many times per variant (variants take turns on each clip, "
                             "so a change in machine load hits them alike)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "realtime.json")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    clips = [c for c in args.clips.split(",") if c]
    chunk_s = args.chunk_ms / 1000
    pace = not args.no_pace

    work = Path(tempfile.mkdtemp(prefix="dalston-bench-realtime-"))
    engines = assets.engines_tree(work)
    variants = [v for variant in variants for v in (
        variant, *([fixed_step_variant(engines, variant)] if args.fixed_step else []),
        *([old_policy_variant(engines, variant)] if args.old_policy else []),
        *([floor_variant(engines, variant, args.floor)] if args.floor is not None else []))]
    models = work / "models"
    keys = work / "keys.txt"
    keys.write_text(hashlib.sha256(KEY.encode()).hexdigest() + "\n")
    env = p.base_env(engines, models)
    env.pop("OMP_NUM_THREADS", None)  # both systems use faster-whisper's own thread defaults
    audio = {c: load_audio_16k(assets.speech_clip(c)) for c in clips}
    pcm = {c: to_pcm16(a) for c, a in audio.items()}
    same = {c: np.frombuffer(b, dtype="<i2").astype(np.float32) / 32768.0 for c, b in pcm.items()}
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    wlk_status = "not run: no `wlk` executable (pass --whisperlivekit)" if not args.whisperlivekit else "ran"

    try:
        # Every dalston variant is served at once (idle servers cost memory, not CPU) and the variants
        # take turns on each clip, so a change in machine load hits all of them alike.
        weights = {v: assets.model_dir_for(v, models, engines_root=engines) for v in variants}
        word_cache: dict[Path, dict[str, list[tuple[float, float]]]] = {}
        for v in variants:
            key = weights[v].resolve()
            if key not in word_cache:
                word_cache[key] = {c: reference_word_ends(weights[v], same[c]) for c in clips}
        words = {v: word_cache[weights[v].resolve()] for v in variants}
        batches: dict[str, dict[str, str]] = {v: {} for v in variants}
        running: dict[str, Any] = {}
        try:
            for variant in variants:
                running[variant] = p.engine(variant, env, keys, work, None).start()
            for variant, engine in running.items():
                engine.wait_http("/ready", 300)
                asyncio.run(stream_dalston(engine.url, variant, clips[0], audio[clips[0]][: SR * 3], args.chunk_ms, False))
            for repeat in range(args.repeat):
                for clip in clips:
                    for variant, engine in running.items():
                        run = asyncio.run(stream_dalston(engine.url, variant, clip, audio[clip], args.chunk_ms, pace))
                        if clip not in batches[variant]:
                            batches[variant][clip] = batch_text(engine.url, variant, pcm[clip], clip)
                        rows.append({**summarize(run, chunk_s, words[variant][clip], batches[variant][clip]),
                                     "repeat": repeat, "loadavg": os.getloadavg()})
                        print(_line(rows[-1]), flush=True)
                        if args.protocol == "openai":
                            run = asyncio.run(stream_openai(engine.url, variant, clip, audio[clip], args.chunk_ms, pace))
                            rows.append({**summarize(run, chunk_s, words[variant][clip], batches[variant][clip]),
                                         "repeat": repeat})
                            print(_line(rows[-1]), flush=True)
        finally:
            for engine in running.values():
                engine.stop()
        for variant in variants:
            if args.whisperlivekit:
                port = p.free_port()
                log = work / f"wlk-{variant}.log"
                proc = start_wlk(args.whisperlivekit, weights[variant], assets.speech_clip("beckett.wav"), log, port)
                try:
                    wait_health(f"http://127.0.0.1:{port}", proc, log)
                    for clip in clips:
                        run = asyncio.run(stream_wlk(f"ws://127.0.0.1:{port}/asr", variant, clip, pcm[clip], args.chunk_ms, pace))
                        rows.append(summarize(run, chunk_s, words[variant][clip], batches[variant].get(clip)))
                        print(_line(rows[-1]), flush=True)
                except Exception as exc:  # record why the comparison did not run, keep dalston's numbers
                    wlk_status = f"failed: {type(exc).__name__}: {exc}"[:500]
                    print(f"whisperlivekit {wlk_status}", file=sys.stderr)
                finally:
                    stop(proc)
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)  # weights there are symlinks into the asset cache

    framing = {c: framing_overhead(audio[c]) for c in clips} if args.protocol == "openai" else {}
    result = {"benchmark": "realtime", "chunk_ms": args.chunk_ms, "paced": pace, "cpu_count": os.cpu_count(),
              "openai_framing_per_100ms_chunk": framing,
              "machine": platform.machine(), "python": platform.python_version(),
              "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "whisperlivekit": wlk_status,
              "rows": rows}
    if args.repeat > 1:  # every repeat's latencies pooled, per variant and clip
        for key in dict.fromkeys((r["system"], r["variant"], r["clip"]) for r in rows):
            group = [r for r in rows if (r["system"], r["variant"], r["clip"]) == key and "repeat" in r]
            if len(group) < 2:
                continue
            wl = [x for r in group for x in r["word_latencies_s"]]
            ch = [x for r in group for x in r["chunk_latencies_s"]]
            rows.append({**group[0], "system": f"{key[0]}*{len(group)}", "repeat": "pooled",
                         "word_latency_median_s": percentile(wl, 50), "word_latency_p95_s": percentile(wl, 95),
                         "chunk_latency_median_s": percentile(ch, 50), "chunk_latency_p95_s": percentile(ch, 95),
                         "first_update_s": statistics.median(r["first_update_s"] or 0 for r in group),
                         "final_wer": max(r["final_wer"] for r in group), "word_latencies_s": wl, "chunk_latencies_s": ch})
    print()
    print(_header())
    for row in rows:
        print(_line(row))
    for clip, f in framing.items():
        print(f"openai framing per 100 ms chunk ({clip}, {f['chunks']} chunks x {f['repeats']}): server "
              f"{f['openai_ms_median']:.3f} ms vs native {f['native_ms_median']:.3f} ms, overhead "
              f"{f['overhead_ms_median']:.3f} ms median (target < 5: {'met' if f['meets_target'] else 'NOT met'}); "
              f"client encode {f['client_encode_ms_median']:.3f} ms")
    print(f"whisperlivekit: {wlk_status}; load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


def _ratio(stream: float, batch: float | None) -> float | None:
    """stream / batch WER; 1.0 when both are 0 (equal), None when undefined (no batch, or batch 0 < stream)."""
    if batch is None:
        return None
    if batch == 0:
        return 1.0 if stream == 0 else None
    return stream / batch


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _header() -> str:
    return (f"{'system':<15} {'variant':<36} {'clip':<15} {'chunk med/p95 s':>16} {'word med/p95 s':>15} "
            f"{'1st upd s':>9} {'WER':>6} {'batch':>6} {'ratio':>6}")


def _line(r: dict[str, Any]) -> str:
    chunk = f"{_fmt(r['chunk_latency_median_s'])}/{_fmt(r['chunk_latency_p95_s'])}"
    word = f"{_fmt(r['word_latency_median_s'])}/{_fmt(r['word_latency_p95_s'])}"
    return (f"{r['system']:<15} {r['variant']:<36} {r['clip']:<15} {chunk:>16} {word:>15} "
            f"{_fmt(r['first_update_s']):>9} {_fmt(r['final_wer'], '.3f'):>6} {_fmt(r['batch_wer'], '.3f'):>6} "
            f"{_fmt(r['wer_ratio']):>6}")


if __name__ == "__main__":
    sys.exit(main())
