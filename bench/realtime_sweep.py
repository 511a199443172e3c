"""Sessions sweep for parakeet-streaming: N concurrent real-time sessions on ONE engine, serialised vs batched steps.

    python bench/realtime.py --sweep                                  # tiny + 0.6b twin + 1.1b twin
    python bench/realtime.py --sweep --models twin-0.6b --sessions 1,2,4,8,16

Models:
* `tiny`: the trained tiny cache-aware test checkpoint (tests/fixtures/nemo_models.py), which says the
  beckett words: meaningful word latency, but far too cheap per step to show contention.
* `twin-0.6b`, `twin-1.1b`: full-size random-weight twins of parakeet-streaming-0.6b (cache-aware,
  [70, 6]) and parakeet-streaming-1.1b (buffered, 1.6 s chunks in 4 s windows), built at bench time
  by bench/nemo_twins.py (where every dimension comes from is stated there). Their words are
  meaningless; their compute per step is the real one.

For each model, two `dalston serve` processes run the same checkpoint from two bench-time variants
that differ only in `runtime.batch_size`: 1 (the serialised scheduler: sessions take turns, one model
step each) and the shipped cap (batched: one step for every session with a chunk ready). For each
session count N, N sessions stream their clip as pcm16 in 160 ms frames paced in real time (starts
spread over one model chunk), all at once, to one engine. Per point:

* chunk latency p50/p95: per 160 ms frame holding speech (overlapping a word of the session's own
  finals), frame sent -> first partial/final whose `end` covers it (bench/realtime.py's definition);
* word latency p50/p95: per word of the session's own finals, the frame holding its end sent -> the
  displayed text first has that many words;
* display lag p50/p95: per partial/final, arrival minus the stream time it covers (`end`);
* CPU RTF: the engine process's CPU seconds during the point / audio seconds streamed (2 cores: a
  value above 2 cannot keep up);
* kept up: every session's p95 chunk latency and its end-of-stream lag (last frame sent -> session.end)
  under 2 s (for buffered, 2 s plus the mode's own latency, chunk + right context);
* mean batch size from the engine's `dalston_realtime_batch_size` histogram.

Once a scheduler falls behind at N sessions, its larger counts are not run (`--full` runs them).
Writes bench/results/realtime_sweep.json; load averages are recorded per point (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

import nemo_twins
import realtime as rt
from dalston.commands.stream import load_audio_16k, realtime_url, stream_audio
from tests.fixtures import assets, nemo_models
from tests.gateway import processes as p

ROOT = rt.ROOT
SR = 16000
CHUNK_MS = 160


@dataclass(frozen=True)
class Model:
    key: str
    base_variant: str  # the variant file the bench variants are derived from
    batched_cap: int
    clip: str


MODELS = {
    "tiny": Model("tiny", "parakeet-streaming-tiny", 16, "beckett.wav"),
    "twin-0.6b": Model("twin-0.6b", "parakeet-streaming-0.6b", 16, "two_cities.wav"),
    "twin-1.1b": Model("twin-1.1b", "parakeet-streaming-1.1b", 8, "two_cities.wav"),
}


# ---------------------------------------------------------------- variants
def _weights_file(model: Model) -> Path:
    if model.key == "tiny":
        return nemo_models.built_models()["parakeet-streaming-tiny"]
    name = next(t.name for t in nemo_twins.TWINS.values() if t.of == model.base_variant)
    return nemo_twins.built(name)


def write_variants(model: Model, engines: Path, models_dir: Path, max_sessions: int) -> tuple[str, str]:
    """Two variants of `model.base_variant` on the model's file: batch_size 1 and the batched cap."""
    from dalston.catalog import Catalog

    entry = Catalog.load(engines).get(model.base_variant)
    source = next(f for f in (entry.dir / "variants").glob("*.yaml")
                  if re.search(rf"^id: {re.escape(model.base_variant)}$", f.read_text(), re.M))
    text = source.read_text()
    weights = _weights_file(model)
    size, sha = weights.stat().st_size, assets.sha256_of(weights)
    block = (f"weights:\n  repo: dalston-bench/{weights.stem}\n  revision: \"{'0' * 40}\"\n  files:\n"
             f"    - name: {weights.name}\n      size: {size}\n      sha256: {sha}\n")
    text = re.sub(r"^weights:\n(?:[ ].*\n)+", block, text, flags=re.M)
    text = re.sub(r"^  model_file: .*$", f"  model_file: {weights.name}", text, flags=re.M)
    text = re.sub(r"^  max_concurrency: .*$", f"  max_concurrency: {max(max_sessions, 1)}", text, flags=re.M)
    ids = []
    for cap in (1, model.batched_cap):
        size_name = f"{source.stem}-bench-b{cap}"
        variant_id = f"{model.base_variant}-bench-b{cap}"
        variant = re.sub(r"^id: .*$", f"id: {variant_id}", text, flags=re.M)
        variant = re.sub(r"^  batch_size: .*$", f"  batch_size: {cap}", variant, flags=re.M)
        (source.parent / f"{size_name}.yaml").write_text(variant)
        target = models_dir / variant_id
        target.mkdir(parents=True, exist_ok=True)
        (target / weights.name).symlink_to(weights)
        ids.append(variant_id)
    return ids[0], ids[1]


# ---------------------------------------------------------------- one point
@dataclass
class Session:
    run: rt.Run
    words: list[tuple[float, float]]
    lags: list[float]
    done_at: float


async def one_session(url: str, variant: str, audio: np.ndarray, delay: float) -> Session:
    await asyncio.sleep(delay)
    finals: list[str] = []
    words: list[tuple[float, float]] = []
    lags: list[float] = []
    run = rt.Run("dalston", variant, "", [])
    done_at = [float("nan")]

    def on_event(event: Any) -> None:
        body = event.body
        if event.type in ("transcript.partial", "transcript.final"):
            shown = " ".join([*finals, body["text"]])
            if event.type == "transcript.final":
                finals.append(body["text"])
                words.extend((float(w["start"]), float(w["end"])) for w in body.get("words", []))
            run.updates.append((event.at, shown))
            run.covers.append((event.at, float(body["end"])))
            lags.append(event.at - float(body["end"]))
        elif event.type == "session.end":
            done_at[0] = event.at

    result = await stream_audio(url, audio, chunk_ms=CHUNK_MS, realtime=True, api_key=rt.KEY, language="en",
                                on_event=on_event)
    if result.errors or result.close_code != 1000:
        raise RuntimeError(f"{variant}: errors={result.errors} close={result.close_code}")
    run.sent_at, run.last_frame_at = result.sent_at, result.last_frame_at
    return Session(run, words, lags, done_at[0])


def _histogram(url: str) -> tuple[float, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    values = []
    for name in ("dalston_realtime_batch_size_count", "dalston_realtime_batch_size_sum"):
        match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
        values.append(float(match.group(1)) if match else 0.0)
    return values[0], values[1]


def point(engine: p.Proc, variant: str, streams: list[np.ndarray], limit_s: float, chunk_s: float) -> dict[str, Any]:
    assert engine.popen is not None
    url = realtime_url(engine.url, variant)
    n = len(streams)
    load_before = os.getloadavg()[0]
    cpu_before, (count_before, sum_before) = p.cpu_seconds(engine.popen.pid), _histogram(engine.url)

    async def all_sessions() -> list[Session]:
        return list(await asyncio.gather(*(one_session(url, variant, a, k * chunk_s / n) for k, a in enumerate(streams))))

    started = time.monotonic()
    sessions = asyncio.run(all_sessions())
    wall = time.monotonic() - started
    cpu = p.cpu_seconds(engine.popen.pid) - cpu_before
    count, total = _histogram(engine.url)
    chunk_lat, word_lat, lags, behind, per_session_p95 = [], [], [], [], []
    for s in sessions:
        chunks = rt.chunk_latencies(s.run, CHUNK_MS / 1000, s.words)
        chunk_lat += chunks
        word_lat += rt.word_latencies(s.run, CHUNK_MS / 1000, s.words)
        lags += s.lags
        behind.append(s.done_at - s.run.last_frame_at)
        per_session_p95.append(rt.percentile(chunks, 95) if chunks else float("inf"))
    audio_s = sum(len(a) for a in streams) / SR
    kept_up = all(v < limit_s for v in per_session_p95) and all(b < limit_s for b in behind)
    return {
        "sessions": n, "kept_up": kept_up, "wall_s": round(wall, 2),
        "chunk_latency_p50_s": rt.percentile(chunk_lat, 50), "chunk_latency_p95_s": rt.percentile(chunk_lat, 95),
        "chunk_latency_worst_session_p95_s": max(per_session_p95),
        "word_latency_p50_s": rt.percentile(word_lat, 50), "word_latency_p95_s": rt.percentile(word_lat, 95),
        "display_lag_p50_s": rt.percentile(lags, 50), "display_lag_p95_s": rt.percentile(lags, 95),
        "end_lag_max_s": max(behind), "cpu_rtf": cpu / audio_s, "audio_seconds": audio_s,
        "steps": count - count_before, "mean_batch": (total - sum_before) / max(1.0, count - count_before),
        "samples": {"chunks": len(chunk_lat), "words": len(word_lat)},
        "loadavg_before": load_before, "loadavg_after": os.getloadavg()[0],
    }


def streams_for(model: Model, n: int, seconds: float) -> list[np.ndarray]:
    audio = load_audio_16k(assets.speech_clip(model.clip))
    if model.key == "tiny":
        return [audio[: int(seconds * SR)] for _ in range(n)]  # the only clip it knows
    length = int(seconds * SR)
    hop = max(0, (len(audio) - length) // max(1, n - 1)) if n > 1 else 0
    return [audio[k * hop: k * hop + length] for k in range(n)]


def _mode_latency(model: Model, engines: Path) -> float:
    """The mode's own latency before any compute: chunk + right context (buffered), one chunk (cache-aware)."""
    from dalston.catalog import Catalog

    streaming = Catalog.load(engines).get(model.base_variant).spec.runtime.streaming
    if streaming.mode == "buffered":
        return streaming.chunk_seconds + (streaming.context_seconds - streaming.chunk_seconds) / 2
    return 0.0


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,twin-0.6b,twin-1.1b")
    parser.add_argument("--sessions", default="1,2,4,8,16")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per session (default 10)")
    parser.add_argument("--full", action="store_true", help="also run counts above the one a scheduler fell behind at")
    parser.add_argument("--keep-work", action="store_true")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "realtime_sweep.json")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.sessions.split(",") if c]
    work = Path(tempfile.mkdtemp(prefix="dalston-bench-sweep-"))
    engines = nemo_models.engines_tree_with_tiny_models(work)
    models_dir = work / "models"
    keys = work / "keys.txt"
    keys.write_text(hashlib.sha256(rt.KEY.encode()).hexdigest() + "\n")
    env = p.base_env(engines, models_dir)
    env.pop("OMP_NUM_THREADS", None)  # torch's default: one intra-op thread per core, as in production
    rows: list[dict[str, Any]] = []
    started = os.getloadavg()
    try:
        for key in [m for m in args.models.split(",") if m]:
            model = MODELS[key]
            serial, batched = write_variants(model, engines, models_dir, max(counts))
            limit = 2.0 + _mode_latency(model, engines)
            procs = {v: p.engine(v, env, keys, work, None).start() for v in (serial, batched)}
            try:
                for proc in procs.values():
                    proc.wait_http("/ready", 900)
                for variant, proc in procs.items():  # warm-up: first-step allocations
                    warm = streams_for(model, 1, 3.0)[0]
                    asyncio.run(stream_audio(realtime_url(proc.url, variant), warm, api_key=rt.KEY, language="en"))
                for variant, proc in procs.items():
                    behind_at = None
                    for n in counts:
                        row = {"model": key, "variant": variant, "scheduler": "serialised" if variant == serial
                               else "batched", "cap": 1 if variant == serial else model.batched_cap, "sessions": n}
                        if behind_at is not None and not args.full:
                            rows.append({**row, "skipped": f"fell behind at {behind_at} sessions"})
                            continue
                        row.update(point(proc, variant, streams_for(model, n, args.seconds), limit,
                                         _chunk_seconds(proc)))
                        rows.append(row)
                        print(_line(row), flush=True)
                        if not row["kept_up"] and behind_at is None:
                            behind_at = n
            finally:
                for proc in procs.values():
                    proc.stop()
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    result = {"benchmark": "realtime_sweep", "chunk_ms": CHUNK_MS, "seconds_per_session": args.seconds,
              "cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
              "loadavg_start": started, "loadavg_end": os.getloadavg(), "rows": rows}
    print()
    print(_header())
    for row in rows:
        print(_line(row))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"load average {started[0]:.1f} -> {os.getloadavg()[0]:.1f}; wrote {args.output}")
    return 0


def _chunk_seconds(proc: p.Proc) -> float:
    """Spread session starts over one model chunk (from the engine's setup log line; 0.56 s if absent)."""
    match = re.search(r"shift_frames=\[\d+, (\d+)\]", proc.log_text())
    return int(match.group(1)) / 100 if match else 0.56


def _f(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _header() -> str:
    return (f"{'model':<10} {'scheduler':<10} {'N':>3} {'kept up':>7} {'chunk p50/p95 s':>16} {'word p50/p95 s':>15} "
            f"{'lag p50/p95 s':>14} {'cpu rtf':>7} {'batch':>5} {'load':>9}")


def _line(r: dict[str, Any]) -> str:
    if "skipped" in r:
        return f"{r['model']:<10} {r['scheduler']:<10} {r['sessions']:>3} {'-':>7} ({r['skipped']})"
    return (f"{r['model']:<10} {r['scheduler']:<10} {r['sessions']:>3} {('yes' if r['kept_up'] else 'NO'):>7} "
            f"{_f(r['chunk_latency_p50_s']) + '/' + _f(r['chunk_latency_p95_s']):>16} "
            f"{_f(r['word_latency_p50_s']) + '/' + _f(r['word_latency_p95_s']):>15} "
            f"{_f(r['display_lag_p50_s']) + '/' + _f(r['display_lag_p95_s']):>14} {_f(r['cpu_rtf']):>7} "
            f"{_f(r['mean_batch'], '.1f'):>5} {_f(r['loadavg_before'], '.1f') + '>' + _f(r['loadavg_after'], '.1f'):>9}")


if __name__ == "__main__":
    sys.exit(main())
