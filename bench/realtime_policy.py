"""whisper-streaming policy cost, offline: what each re-decode costs in CPU time, how long its window is,
and how soon a word could show on an idle machine, for the shipped policy and the one before it.

    python bench/realtime_policy.py                                   # base, beckett + two_cities
    python bench/realtime_policy.py --variants whisper-streaming-tiny-en --clips two_cities.wav

WHY offline and in CPU time: on the shared 2-core machine a paced run's wall-clock latencies are
mostly other jobs' load (bench/realtime.py records it, and measures the real thing). Here each clip
is fed in 160 ms pcm16 frames, as fast as the session takes them, to sessions opened by the real
whisper-streaming engine (`engine.open_session`, the variant's real weights); the old policy is the
same engine's decoders with `tail_decode=False`, a fixed `min_chunk_ms` step and every re-decode on
the full 30 s encoder input.
Per re-decode, the process CPU time (all threads) is recorded, which other jobs do not inflate
much (context switches and cache misses still do, a little).

Reported per (policy, clip):
* re-decode CPU s mean / max, re-decode window s mean / max, number of re-decodes;
* partials WER: the last partial of each utterance (what was on screen just before the final)
  against the reference text; final WER of the finals;
* idle word latency estimate: for each word of a batch decode, (stream time of the first re-decode
  whose displayed text has that many words, plus that decode's CPU time) minus the end of the
  frame holding the word. It assumes a decode's wall time equals its CPU time (2 threads would
  be faster, queueing slower): a comparison between policies, not a prediction.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jiwer  # noqa: E402
import numpy as np  # noqa: E402

from dalston.catalog import Catalog  # noqa: E402
from dalston.commands.stream import load_audio_16k, to_pcm16  # noqa: E402
from dalston.engine_sdk import TranscribeOptions, create_engine  # noqa: E402
from dalston.engine_sdk.events import Final, Partial  # noqa: E402
from dalston.streaming.local_agreement import LocalAgreementSession  # noqa: E402
from tests.fixtures import assets  # noqa: E402

SR = 16000
FRAME = 2560  # 160 ms


def wer(clip: str, text: str) -> float:
    return float(jiwer.wer(" ".join(assets.reference_words(clip)), " ".join(assets.normalize_words(text)) or "<empty>"))


class Timed:
    """Wraps a decoder: records (CPU seconds, window seconds) per call."""

    def __init__(self, decode: Any) -> None:
        self.decode = decode
        self.calls: list[tuple[float, float]] = []

    def __call__(self, audio: np.ndarray, prompt: str) -> Any:
        started = time.process_time()
        words = self.decode(audio, prompt)
        self.calls.append((time.process_time() - started, len(audio) / SR))
        return words


def run(session: LocalAgreementSession, redecode: Timed, audio: np.ndarray, word_ends: list[float],
        clip: str) -> dict[str, Any]:
    finals: list[str] = []
    last_partial: dict[int, str] = {}
    shown: list[tuple[float, int]] = []  # (estimated time on screen, words displayed)
    for i in range(0, len(audio) + FRAME, FRAME):
        chunk = audio[i:i + FRAME]
        before = len(redecode.calls)
        events = session.accept(chunk) if len(chunk) else session.finish()
        now = min(len(audio), i + FRAME) / SR + sum(c for c, _ in redecode.calls[before:])
        for event in events:
            if isinstance(event, Final):
                finals.append(event.text)
            elif isinstance(event, Partial):
                last_partial[len(finals)] = event.text
                shown.append((now, len(assets.normalize_words(" ".join([*finals, event.text])))))
    latencies = []
    for k, end in enumerate(word_ends):
        frame_end = (int(end * SR) // FRAME + 1) * FRAME / SR
        at = next((t for t, n in shown if n >= k + 1 and t >= frame_end - 1e-9), None)
        if at is not None:
            latencies.append(at - frame_end)
    cpu = [c for c, _ in redecode.calls]
    windows = [w for _, w in redecode.calls]
    return {"redecodes": len(cpu), "cpu_mean_s": statistics.mean(cpu), "cpu_max_s": max(cpu),
            "window_mean_s": statistics.mean(windows), "window_max_s": max(windows),
            "partials_wer": wer(clip, " ".join(last_partial[k] for k in sorted(last_partial))),
            "final_wer": wer(clip, " ".join(finals)),
            "latency_median_s": float(np.median(latencies)) if latencies else None,
            "latency_p95_s": float(np.percentile(latencies, 95)) if latencies else None,
            "latency_words": len(latencies), "words": len(word_ends)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="whisper-streaming-base")
    parser.add_argument("--clips", default="beckett.wav,two_cities.wav")
    args = parser.parse_args(argv)
    engines = assets.engines_tree(Path(tempfile.mkdtemp(prefix="dalston-bench-policy-")))
    print(f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'variant':<28} {'policy':<6} {'clip':<15} {'n':>3} {'cpu mean/max s':>15} {'window mean/max s':>18} "
          f"{'partials WER':>12} {'final WER':>9} {'est latency med/p95 s':>22}")
    for variant in [v for v in args.variants.split(",") if v]:
        entry = Catalog.load(engines).get(variant)
        engine: Any = create_engine(entry)
        engine.load(assets.model_dir_for(variant, Path(tempfile.mkdtemp()), engines_root=engines))
        for clip in [c for c in args.clips.split(",") if c]:
            audio = np.frombuffer(to_pcm16(load_audio_16k(assets.speech_clip(clip))), dtype="<i2").astype(np.float32) / 32768
            batch = engine.transcribe(audio, TranscribeOptions(language="en", word_timestamps=True))
            ends = [w.end for s in batch.segments for w in s.words if assets.normalize_words(w.word)]
            for policy in ("new", "old"):
                shipped = engine.open_session(language="en")
                if policy == "new":
                    redecode = Timed(shipped.redecode)
                    session = LocalAgreementSession(shipped.decode, shipped.config, redecode)
                else:
                    redecode = Timed(shipped.decode)  # the full 30 s encoder input
                    old = replace(shipped.config, tail_decode=False, min_chunk_floor_s=None)  # main before
                    session = LocalAgreementSession(shipped.decode, old, redecode)
                r = run(session, redecode, audio, ends, clip)
                print(f"{variant:<28} {policy:<6} {clip:<15} {r['redecodes']:>3} "
                      f"{r['cpu_mean_s']:>7.2f}/{r['cpu_max_s']:<7.2f} {r['window_mean_s']:>9.1f}/{r['window_max_s']:<8.1f} "
                      f"{r['partials_wer']:>12.3f} {r['final_wer']:>9.3f} "
                      f"{r['latency_median_s']:>11.2f}/{r['latency_p95_s']:<10.2f}", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
