"""Obedient clients under overload: how often they are refused, with and without held retry places.

    python bench/retry.py                         # 16 clients x 6 requests, whisper-tiny-en, ~3 min
    python bench/retry.py --clients 16 --requests 100

Clients are the official `openai` Python SDK (its automatic retries obey `Retry-After` and send
`x-stainless-retry-count`), posting beckett.wav to a real `dalston serve` (real tiny.en weights) with a
small queue (`--max-queue 2`), so most requests meet a full engine at first. The same load runs
against two engine processes, one after the other in one run: `--retry-grace 5` (a refused request's
place is held for its retry; the default) and `--retry-grace 0` (no held places: freed places go to
whoever arrives first). Both compute `Retry-After` from the queue. Reported per configuration: total
429s, 429s per request (mean, max), requests refused 5+ times, completion time p50/p95/max, wall time.

Prints a table and writes JSON (default bench/results/retry.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import openai  # noqa: E402

from tests.fixtures import assets  # noqa: E402
from tests.gateway import processes as p  # noqa: E402

KEY = "dk_bench"


def run_load(url: str, model: str, audio: bytes, clients: int, requests: int) -> dict[str, Any]:
    local = threading.local()

    def count(response: httpx.Response) -> None:
        if response.status_code == 429:
            local.refused += 1

    def client_loop(_: int) -> list[tuple[int, float]]:
        http = httpx.Client(event_hooks={"response": [count]}, timeout=600)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=1000, http_client=http)
        out = []
        for _ in range(requests):
            local.refused = 0
            started = time.perf_counter()
            client.audio.transcriptions.create(model=model, file=("beckett.wav", audio, "audio/wav"))
            out.append((local.refused, time.perf_counter() - started))
        http.close()
        return out

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client_loop, range(clients)) for r in rs]
    wall = time.perf_counter() - started
    refused = [r for r, _ in results]
    latency = sorted(t for _, t in results)
    return {"requests": len(results), "wall_s": wall, "refusals_total": sum(refused),
            "refusals_mean": statistics.mean(refused), "refusals_max": max(refused),
            "refused_5_plus": sum(1 for r in refused if r >= 5),
            "latency_p50_s": latency[len(latency) // 2], "latency_p95_s": latency[int(len(latency) * 0.95) - 1],
            "latency_max_s": latency[-1]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="whisper-tiny-en")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=6, help="per client")
    ap.add_argument("--max-queue", type=int, default=2)
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "retry.json")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="dalston-retry-"))
    engines = assets.engines_tree(work)
    assets.model_dir_for(args.model, work / "models", engines_root=engines)
    keys = work / "keys.txt"
    keys.write_text(hashlib.sha256(KEY.encode()).hexdigest() + "\n")
    env = p.base_env(engines, work / "models")
    audio = assets.speech_clip("beckett.wav").read_bytes()
    rows: dict[str, Any] = {}
    for label, grace in (("held places (--retry-grace 5)", "5"), ("no held places (--retry-grace 0)", "0")):
        engine = p.engine(args.model, env, keys, work, None, label=f"-grace{grace}")
        engine.args += ["--max-queue", str(args.max_queue), "--retry-grace", grace]
        engine.start()
        try:
            engine.wait_http("/ready", 180)
            httpx.post(f"{engine.url}/v1/audio/transcriptions", headers={"authorization": f"Bearer {KEY}"},
                       files={"file": ("w.wav", audio, "audio/wav")}, timeout=120)  # warm-up
            rows[label] = run_load(engine.url, args.model, audio, args.clients, args.requests)
        finally:
            engine.stop()
    result = {"model": args.model, "clients": args.clients, "requests_per_client": args.requests,
              "max_queue": args.max_queue, "load_avg": os.getloadavg(), "configs": rows}
    print(f"\n{args.clients} obedient openai-SDK clients x {args.requests} requests, {args.model}, "
          f"max_queue {args.max_queue}, load avg {os.getloadavg()[0]:.1f}")
    print(f"{'configuration':34} {'429s':>6} {'per req':>8} {'max':>5} {'>=5':>5} {'p50 s':>7} {'p95 s':>7} "
          f"{'max s':>7} {'wall s':>7}")
    for label, r in rows.items():
        print(f"{label:34} {r['refusals_total']:6d} {r['refusals_mean']:8.2f} {r['refusals_max']:5d} "
              f"{r['refused_5_plus']:5d} {r['latency_p50_s']:7.2f} {r['latency_p95_s']:7.2f} {r['latency_max_s']:7.2f} "
              f"{r['wall_s']:7.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
