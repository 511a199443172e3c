"""Batch jobs vs one synchronous request: a 10-minute file, 1 and 2 queue workers, merged-text WER.

    flock /tmp/dalston-bench.lock python bench/jobs.py                 # whisper-base, ~600 s of speech
    python bench/jobs.py --model whisper-tiny-en --minutes 3           # a quick look

One run, side by side, all real processes on loopback (bench/gateway.py's convention):
1. sync: `dalston serve MODEL` pinned to the first half of the CPUs; the whole file in one
   `POST /v1/audio/transcriptions`; wall time from send to the complete response.
2. jobs, 1 worker: real redis-server, `dalston gateway`, `dalston orchestrator`, one
   `dalston serve MODEL --queue` pinned to the first half; wall time from `POST /v1/jobs` to the
   job's `succeeded` (polled every 0.2 s): upload, prepare, every chunk, merge.
3. jobs, 2 workers: the same with a second worker pinned to the other half (as a second GPU or node).
4. sync again, as in 1: load drifts on a shared machine, so the jobs are bracketed by two sync runs
   and compared with their mean.

Reported: wall times, speedup of 2 workers over the sync request and over 1 worker (target >= 1.6x
with two replicas), the WER of each merged transcript against the synchronous one (target: the
difference <= 0.01), and each against the reference text. The file is real speech (the clips of
tests/fixtures joined with 1.5 s pauses) so chunk cuts land in real pauses. Prints a table and
writes JSON (default bench/results/jobs.json). The machine is shared: the ratios, measured in one
run, are the result, not the absolute seconds; the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import jiwer  # noqa: E402

from tests.fixtures import assets  # noqa: E402
from tests.fixtures.serving import free_port  # noqa: E402
from tests.gateway import processes as p  # noqa: E402
from tests.jobs import cluster as c  # noqa: E402


def clip_sequence(minutes: float) -> list[str]:
    """two_cities (44 s) and beckett (10 s) alternating 3:1 until `minutes` of audio."""
    seq, seconds = [], 0.0
    pattern = ["two_cities", "two_cities", "beckett", "two_cities"]
    while seconds < minutes * 60 - 30:
        name = pattern[len(seq) % len(pattern)]
        seq.append(name)
        seconds += (44.4 if name == "two_cities" else 10.0) + 1.5
    return seq


def words(text: str) -> str:
    return " ".join(assets.normalize_words(text))


def run_job(cluster: c.Cluster, audio: Path) -> tuple[float, dict[str, Any], str]:
    started = time.perf_counter()
    response = cluster.submit(audio)
    response.raise_for_status()
    job_id = response.json()["id"]
    while True:
        body = cluster.job(job_id)
        if body["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.2)
    elapsed = time.perf_counter() - started
    if body["status"] != "succeeded":
        raise RuntimeError(f"job {job_id} {body['status']}: {body.get('error')}")
    text = httpx.get(f"{cluster.url}/v1/jobs/{job_id}/result", params={"format": "text"}, headers=c.AUTH,
                     timeout=60).text
    return elapsed, body, text


def sync_request(cluster: c.Cluster, work: Path, model: str, cpus: tuple[int, ...], data: bytes, warm: bytes,
                 label: str = "") -> tuple[float, str]:
    """One engine pinned to `cpus`, warmed, then the whole file in one request: (seconds, text)."""
    port = free_port()
    engine = p.Proc(f"sync-engine{label}", ["serve", model, "--host", "127.0.0.1", "--port", str(port),
                                            "--keys-file", str(cluster.keys)], cluster.env,
                    work / f"sync{label}.log", port, cpus)
    engine.start().wait_http("/ready", 300)
    try:
        with httpx.Client(headers=c.AUTH, timeout=3600) as client:
            client.post(f"{engine.url}/v1/audio/transcriptions", data={"model": model},
                        files={"file": ("w.wav", warm)}).raise_for_status()
            started = time.perf_counter()
            response = client.post(f"{engine.url}/v1/audio/transcriptions", data={"model": model, "response_format": "text"},
                                   files={"file": ("long.wav", data, "audio/wav")})
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            return elapsed, response.text
    finally:
        engine.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="whisper-base", help="variant (real weights needed; default whisper-base)")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the test file (default 10)")
    parser.add_argument("--chunk-seconds", type=float, default=150.0,
                        help="orchestrator --chunk-seconds (default 150: 4-6 chunks of a 10-minute file for 2 x 2 slots)")
    parser.add_argument("--keep-work", action="store_true", help="keep the temp dir (process logs)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "jobs.json")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="dalston-bench-jobs-"))
    cpus = sorted(os.sched_getaffinity(0))
    half = max(1, len(cpus) // 2)
    first, second = tuple(cpus[:half]), tuple(cpus[half:]) or tuple(cpus[:half])
    audio, reference = c.long_clip(work / "long.wav", clip_sequence(args.minutes))
    load_before = os.getloadavg()
    cluster = c.start_cluster(work, workers=0, model=args.model, chunk_seconds=args.chunk_seconds,
                              visibility_timeout=120.0)
    result: dict[str, Any] = {}
    try:
        # 1. one synchronous request on one engine (pinned like one worker); repeated at the end
        data = audio.read_bytes()
        warm = assets.speech_clip("beckett.wav").read_bytes()
        sync_s, sync_text = sync_request(cluster, work, args.model, first, data, warm)
        print(f"sync: {sync_s:.1f} s", flush=True)

        # 2. jobs with one worker, then 3. with two
        runs: dict[int, dict[str, Any]] = {}
        for n in (1, 2):
            while len(cluster.live_workers()) < n:
                worker = cluster.start_worker(first if not cluster.live_workers() else second)
                with httpx.Client(headers=c.AUTH, timeout=600) as client:  # its first inference, off the clock
                    client.post(f"{worker.url}/v1/audio/transcriptions", data={"model": args.model},
                                files={"file": ("w.wav", warm)}).raise_for_status()
            elapsed, body, text = run_job(cluster, audio)
            runs[n] = {"wall_s": elapsed, "chunks": body["chunks"]["total"], "stages": body["stages"],
                       "wer_vs_sync": jiwer.wer(words(sync_text), words(text)),
                       "wer_vs_reference": jiwer.wer(" ".join(reference), words(text)), "text": text}
            print(f"jobs with {n} worker(s): {json.dumps({k: v for k, v in runs[n].items() if k != 'text'})}", flush=True)
        for proc in cluster.live_workers():
            proc.stop()
        # 4. the synchronous request again: load drifts on a shared machine, so bracket the jobs with it
        sync_after_s, _ = sync_request(cluster, work, args.model, first, data, warm, label="-after")
        print(f"sync again: {sync_after_s:.1f} s", flush=True)
    finally:
        cluster.stop()
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)

    sync_wer = jiwer.wer(" ".join(reference), words(sync_text))
    sync_mean = (sync_s + sync_after_s) / 2
    speedup_vs_sync = sync_mean / runs[2]["wall_s"]
    result = {
        "benchmark": "jobs", "model": args.model, "audio_seconds": round(len(data[44:]) / 32000, 1),
        "chunk_seconds": args.chunk_seconds, "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "worker_cpus": [first, second], "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "sync": {"wall_s": sync_s, "wall_s_after": sync_after_s, "wall_s_mean": sync_mean, "wer_vs_reference": sync_wer,
                 "text": sync_text},
        "jobs_1_worker": runs[1], "jobs_2_workers": runs[2],
        "speedup_2_workers_vs_sync": speedup_vs_sync, "speedup_2_vs_1_worker": runs[1]["wall_s"] / runs[2]["wall_s"],
        "target_speedup": 1.6, "meets_speedup": speedup_vs_sync >= 1.6,
        "target_wer_difference": 0.01,
        "meets_wer": abs(runs[2]["wer_vs_reference"] - sync_wer) <= 0.01,
    }
    rows = [
        ("audio (s)", f"{result['audio_seconds']:.0f}"),
        ("sync request, 1 engine (s), before/after", f"{sync_s:.1f}/{sync_after_s:.1f}"),
        ("job, 1 worker (s)", f"{runs[1]['wall_s']:.1f}"),
        ("job, 2 workers (s)", f"{runs[2]['wall_s']:.1f}"),
        ("speedup 2 workers vs mean sync (>=1.6)", f"{speedup_vs_sync:.2f}"),
        ("speedup 2 vs 1 worker", f"{result['speedup_2_vs_1_worker']:.2f}"),
        ("chunks", f"{runs[2]['chunks']}"),
        ("WER sync vs reference", f"{sync_wer:.4f}"),
        ("WER job (2 workers) vs reference", f"{runs[2]['wer_vs_reference']:.4f}"),
        ("WER job (2 workers) vs sync text", f"{runs[2]['wer_vs_sync']:.4f}"),
        ("WER job (1 worker) vs sync text", f"{runs[1]['wer_vs_sync']:.4f}"),
        ("load average before/after", f"{load_before[0]:.1f}/{os.getloadavg()[0]:.1f}"),
    ]
    print(f"jobs benchmark: {args.model}, {result['audio_seconds']:.0f} s file, chunks <= {args.chunk_seconds:g} s, "
          f"{os.cpu_count()} CPUs")
    for name, value in rows:
        print(f"  {name:<42} {value:>12}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
