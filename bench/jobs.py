"""Batch jobs vs one synchronous request: a 10-minute file, 1 and 2 queue workers, merged-text WER.

    flock /tmp/dalston-bench.lock python bench/jobs.py                 # whisper-base, ~600 s of speech
    python bench/jobs.py --model whisper-tiny-en --minutes 3           # a quick look

One run, side by side, all real processes on loopback (bench/gateway.py's convention), in
`--rounds` rounds (default 3) of:
1. sync: one `dalston serve MODEL` (started once, warm) pinned to the first half of the CPUs; the
   whole file in one `POST /v1/audio/transcriptions`; wall time from send to the complete response.
2. jobs, 1 worker: real redis-server, `dalston gateway`, `dalston orchestrator`, one
   `dalston serve MODEL --queue` pinned to the first half; wall time from `POST /v1/jobs` to the
   job's `succeeded` (polled every 0.2 s): upload, prepare, every chunk, merge.
3. jobs, 2 workers: the same with a second worker pinned to the other half (as a second GPU or node).
One more sync request ends the run, so each round's jobs lie between two sync requests and are
compared with their mean (load drifts on a shared machine by 20 % within minutes); the headline is
the median of the rounds' ratios.

Reported per round: wall times, speedup of 2 workers over the sync request and over 1 worker (target >= 1.6x
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
import statistics
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


def cpu_seconds(cluster: c.Cluster) -> dict[str, float]:
    """CPU seconds (user + system) each process of the deployment has used so far, from /proc/PID/stat."""
    procs = {proc.name: proc.popen.pid for proc in [cluster.gateway, *cluster.orchestrators, *cluster.live_workers()]
             if proc.popen is not None}
    if cluster.redis.process is not None:
        procs["redis"] = cluster.redis.process.pid
    return {name: p.cpu_seconds(pid) for name, pid in procs.items()}


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


class SyncEngine:
    """One engine pinned to `cpus`, warmed, kept for every synchronous request of the run."""

    def __init__(self, cluster: c.Cluster, work: Path, model: str, cpus: tuple[int, ...], warm: bytes) -> None:
        port = free_port()
        self.model = model
        self.proc = p.Proc("sync-engine", ["serve", model, "--host", "127.0.0.1", "--port", str(port),
                                           "--keys-file", str(cluster.keys)], cluster.env, work / "sync.log", port, cpus)
        self.proc.start().wait_http("/ready", 300)
        self.client = httpx.Client(headers=c.AUTH, timeout=3600)
        self.client.post(f"{self.proc.url}/v1/audio/transcriptions", data={"model": model},
                         files={"file": ("w.wav", warm)}).raise_for_status()

    def transcribe(self, data: bytes) -> tuple[float, str]:
        """The whole file in one request: (seconds, text)."""
        started = time.perf_counter()
        response = self.client.post(f"{self.proc.url}/v1/audio/transcriptions",
                                    data={"model": self.model, "response_format": "text"},
                                    files={"file": ("long.wav", data, "audio/wav")})
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        return elapsed, response.text

    def stop(self) -> None:
        self.client.close()
        self.proc.stop()


def workers(cluster: c.Cluster, n: int, cpus: list[tuple[int, ...]], model: str, warm: bytes) -> None:
    """Exactly `n` live queue workers, the i-th pinned to cpus[i], each warmed by one direct request."""
    for proc in cluster.live_workers()[n:]:
        proc.stop()
    while len(cluster.live_workers()) < n:
        worker = cluster.start_worker(cpus[len(cluster.live_workers())])
        with httpx.Client(headers=c.AUTH, timeout=600) as client:  # its first inference, off the clock
            client.post(f"{worker.url}/v1/audio/transcriptions", data={"model": model},
                        files={"file": ("w.wav", warm)}).raise_for_status()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="whisper-base", help="variant (real weights needed; default whisper-base)")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the test file (default 10)")
    parser.add_argument("--chunk-seconds", type=float, default=150.0,
                        help="orchestrator --chunk-seconds (default 150: four chunks of the 10-minute file, two "
                             "per replica, so the replica that finishes first takes the next; 300 is the "
                             "orchestrator's own default, sized for hour-long files)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of sync / 1 worker / 2 workers; ratios are per round, then the median (default 3)")
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
    data = audio.read_bytes()
    warm = assets.speech_clip("beckett.wav").read_bytes()
    syncs: list[float] = []
    rounds: list[dict[str, Any]] = []
    try:
        sync = SyncEngine(cluster, work, args.model, first, warm)  # pinned like the first worker
        try:
            # Each round: the synchronous request, the job on one worker, the job on two; one more
            # synchronous request at the end, so every round's jobs are bracketed by two of them
            # (load drifts on a shared machine).
            for r in range(args.rounds):
                seconds, sync_text = sync.transcribe(data)
                syncs.append(seconds)
                print(f"round {r + 1}: sync {seconds:.1f} s", flush=True)
                runs: dict[int, dict[str, Any]] = {}
                for n in (1, 2):
                    workers(cluster, n, [first, second], args.model, warm)
                    cpu_before = cpu_seconds(cluster)
                    elapsed, body, text = run_job(cluster, audio)
                    cpu_used = {k: round(v - cpu_before.get(k, 0.0), 2) for k, v in cpu_seconds(cluster).items()}
                    runs[n] = {"wall_s": elapsed, "chunks": body["chunks"]["total"], "stages": body["stages"],
                               "wer_vs_sync": jiwer.wer(words(sync_text), words(text)),
                               "wer_vs_reference": jiwer.wer(" ".join(reference), words(text)),
                               "cpu_seconds": cpu_used, "text": text}
                    shown = {k: v for k, v in runs[n].items() if k != "text"}
                    print(f"round {r + 1}: jobs with {n} worker(s): {json.dumps(shown)}", flush=True)
                rounds.append({"sync_s": seconds, "sync_text": sync_text, "jobs_1_worker": runs[1],
                               "jobs_2_workers": runs[2]})
            seconds, _ = sync.transcribe(data)
            syncs.append(seconds)
            print(f"sync again: {seconds:.1f} s", flush=True)
        finally:
            sync.stop()
    finally:
        cluster.stop()
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)

    sync_wer = jiwer.wer(" ".join(reference), words(rounds[0]["sync_text"]))
    for r, row in enumerate(rounds):
        row["sync_mean_s"] = (syncs[r] + syncs[r + 1]) / 2
        row["speedup_2_workers_vs_sync"] = row["sync_mean_s"] / row["jobs_2_workers"]["wall_s"]
        row["speedup_2_vs_1_worker"] = row["jobs_1_worker"]["wall_s"] / row["jobs_2_workers"]["wall_s"]
    speedup = statistics.median(row["speedup_2_workers_vs_sync"] for row in rounds)
    wer_diff = max(abs(row["jobs_2_workers"]["wer_vs_reference"] - sync_wer) for row in rounds)
    result = {
        "benchmark": "jobs", "model": args.model, "audio_seconds": round(len(data[44:]) / 32000, 1),
        "chunk_seconds": args.chunk_seconds, "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "worker_cpus": [first, second], "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "sync_seconds": syncs, "sync_wer_vs_reference": sync_wer, "rounds": rounds,
        "speedup_2_workers_vs_sync_median": speedup, "target_speedup": 1.6, "meets_speedup": speedup >= 1.6,
        "wer_difference_max": wer_diff, "target_wer_difference": 0.01, "meets_wer": wer_diff <= 0.01,
    }
    print(f"jobs benchmark: {args.model}, {result['audio_seconds']:.0f} s file, chunks <= {args.chunk_seconds:g} s, "
          f"{os.cpu_count()} CPUs, {args.rounds} rounds")
    print(f"  {'round':<6} {'sync s (before/after)':>22} {'1 worker s':>11} {'2 workers s':>12} {'chunks':>7} "
          f"{'2w vs sync':>11} {'2w vs 1w':>9} {'WER 2w vs sync':>15}")
    for r, row in enumerate(rounds):
        one, two = row["jobs_1_worker"], row["jobs_2_workers"]
        print(f"  {r + 1:<6} {f'{syncs[r]:.1f}/{syncs[r + 1]:.1f}':>22} {one['wall_s']:>11.1f} {two['wall_s']:>12.1f} "
              f"{two['chunks']:>7} {row['speedup_2_workers_vs_sync']:>10.2f}x {row['speedup_2_vs_1_worker']:>8.2f}x "
              f"{two['wer_vs_sync']:>15.4f}")
    print(f"  median speedup, 2 workers vs sync: {speedup:.2f}x (target >= 1.6); WER sync vs reference {sync_wer:.4f}, "
          f"largest job-minus-sync WER difference {wer_diff:.4f} (target <= 0.01); "
          f"load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
