"""Gateway overhead and scale-out, measured on loopback with real engine processes and real weights.

    python bench/gateway.py                  # whisper-base, beckett.wav; ~3 min on 2 cores
    python bench/gateway.py --requests 20 --burst 16
    python bench/gateway.py --replicas 2 --registry redis   # replicas on Redis: see bench/gateway_ha.py

1. Latency: the same transcription request (same bytes, same multipart body) sent alternately
   straight to a `dalston serve whisper-base` process and through `dalston gateway` to that same
   process, in one run, order flipped every pair so drift lands on both. Reported: medians, the
   ratio of medians, the median of the per-pair ratios and the median per-pair difference (the
   gateway's cost in ms). Target: ratio <= 1.03.
2. Throughput: a burst of concurrent requests through the gateway with one engine instance, then
   with a second instance of the same variant registered (the gateway spreads by least in-flight).
   WHY each instance is pinned to its own half of the CPUs (sched_setaffinity): on one machine,
   two unpinned instances just share the same cores and "two instances" would measure nothing;
   pinned, the second instance brings its own hardware, as a second node or GPU does in a
   deployment. The one-instance burst runs on the first half only.

Prints a table and writes JSON (default bench/results/gateway.json; bench/results/ is git-ignored,
the numbers that matter go to docs/PERFORMANCE.md). The machine's load average is recorded: on a
shared machine, compare the ratio, which is measured side by side, not absolute seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.fixtures import assets  # noqa: E402
from tests.gateway import processes as p  # noqa: E402

KEY = "dk_bench"


def post(client: httpx.Client, url: str, engine_id: str, audio: bytes, clip: str) -> float:
    """One transcription request; seconds from send to the complete response body."""
    started = time.perf_counter()
    r = client.post(f"{url}/v1/audio/transcriptions", data={"model": engine_id},
                    files={"file": (clip, audio, "audio/wav")})
    elapsed = time.perf_counter() - started
    if r.status_code != 200:
        raise RuntimeError(f"{url}: HTTP {r.status_code}: {r.text[:300]}")
    return elapsed


def burst(url: str, engine_id: str, audio: bytes, clip: str, requests: int, concurrency: int) -> float:
    """Requests per second for `requests` requests, `concurrency` in flight at a time."""
    with httpx.Client(headers={"authorization": f"Bearer {KEY}"}, timeout=900) as client:
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(lambda _: post(client, url, engine_id, audio, clip), range(requests)))
        return requests / (time.perf_counter() - started)


def cpu_halves() -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
    """Two disjoint CPU sets (None, None on a one-CPU machine: then instances cannot be separated)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    half = len(cpus) // 2
    return tuple(cpus[:half]), tuple(cpus[half:])


def instance_counts(gw: str, engine_id: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{gw}/internal/v1/instances", headers={"authorization": f"Bearer {p.INTERNAL_TOKEN}"}, timeout=10)
    r.raise_for_status()
    return list(r.json()["instances"].get(engine_id, []))


def wait_instances(gw: str, engine_id: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(instance_counts(gw, engine_id)) == count:
            return
        time.sleep(0.2)
    raise TimeoutError(f"gateway did not see {count} instance(s) of {engine_id}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="whisper-base", help="variant to serve (real weights needed)")
    parser.add_argument("--requests", type=int, default=12, help="latency pairs (direct + gateway each)")
    parser.add_argument("--burst", type=int, default=12, help="requests per throughput burst")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight during a burst")
    parser.add_argument("--clip", default="beckett.wav")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="DALSTON_MODEL_DIR-style root holding <engine>/ (default: test asset cache)")
    parser.add_argument("--keep-work", action="store_true", help="keep the temp dir (process logs)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default bench/results/gateway.json, gateway-ha.json with --replicas 2)")
    parser.add_argument("--replicas", type=int, choices=(1, 2), default=1,
                        help="2: gateway replicas sharing a registry (needs --registry redis; whisper-tiny-en)")
    parser.add_argument("--registry", choices=("memory", "redis"), default="memory")
    parser.add_argument("--cost-pairs", type=int, default=200, help="--replicas 2: fast-path cost pairs")
    parser.add_argument("--balance-requests", type=int, default=48, help="--replicas 2: requests in the balance study")
    parser.add_argument("--heartbeat-interval", type=float, default=2.0,
                        help="--replicas 2: heartbeat interval of the engine-reported scheme in the balance study")
    args = parser.parse_args(argv)
    if args.replicas == 2 or args.registry == "redis":
        if (args.replicas, args.registry) != (2, "redis"):
            parser.error("--replicas 2 and --registry redis go together (one embedded gateway is the default run)")
        return _replicas(args)
    args.output = args.output or ROOT / "bench" / "results" / "gateway.json"

    work = Path(tempfile.mkdtemp(prefix="dalston-bench-gateway-"))
    engines = assets.engines_tree(work)
    model_dir = args.model_dir or work / "models"
    if args.model_dir is None:
        assets.model_dir_for(args.engine, model_dir, engines_root=engines)
    keys = work / "keys.txt"
    keys.write_text(hashlib.sha256(KEY.encode()).hexdigest() + "\n")
    audio = assets.speech_clip(args.clip).read_bytes()
    env = p.base_env(engines, model_dir)
    first_cpus, second_cpus = cpu_halves()
    load_before = os.getloadavg()
    gw = p.gateway(env, keys, work).start()
    procs = [gw]
    try:
        gw.wait_http("/health", 30)
        first = p.engine(args.engine, env, keys, work, gw.url, label="-1", cpus=first_cpus).start()
        procs.append(first)
        first.wait_http("/ready", 300)
        wait_instances(gw.url, args.engine, 1)

        direct: list[float] = []
        through: list[float] = []
        with httpx.Client(headers={"authorization": f"Bearer {KEY}"}, timeout=900) as client:
            for url in (first.url, gw.url, first.url, gw.url):  # warm both paths and connections
                post(client, url, args.engine, audio, args.clip)
            for i in range(args.requests):
                pair = {}
                for url in ((first.url, gw.url) if i % 2 == 0 else (gw.url, first.url)):
                    pair[url] = post(client, url, args.engine, audio, args.clip)
                direct.append(pair[first.url])
                through.append(pair[gw.url])

        one = burst(gw.url, args.engine, audio, args.clip, args.burst, args.concurrency)
        second = p.engine(args.engine, env, keys, work, gw.url, label="-2", cpus=second_cpus).start()
        procs.append(second)
        second.wait_http("/ready", 300)
        wait_instances(gw.url, args.engine, 2)
        burst(second.url, args.engine, audio, args.clip, 2, 2)  # warm the second instance directly
        served_before = {i["url"]: i["served"] for i in instance_counts(gw.url, args.engine)}
        two = burst(gw.url, args.engine, audio, args.clip, args.burst, args.concurrency)
        spread = {i["url"]: i["served"] - served_before.get(i["url"], 0) for i in instance_counts(gw.url, args.engine)}
    finally:
        for proc in reversed(procs):
            proc.stop()
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)  # weights there are symlinks into the asset cache

    pair_ratios = [t / d for t, d in zip(through, direct)]
    pair_diffs_ms = [(t - d) * 1000 for t, d in zip(through, direct)]
    ratio = statistics.median(through) / statistics.median(direct)
    result = {
        "benchmark": "gateway", "engine_id": args.engine, "clip": args.clip,
        "cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "latency": {"pairs": args.requests, "direct_median_s": statistics.median(direct),
                    "gateway_median_s": statistics.median(through), "ratio_of_medians": ratio,
                    "median_pair_ratio": statistics.median(pair_ratios),
                    "median_pair_overhead_ms": statistics.median(pair_diffs_ms),
                    "target_ratio": 1.03, "meets_target": ratio <= 1.03,
                    "direct_s": direct, "gateway_s": through},
        "throughput": {"burst": args.burst, "concurrency": args.concurrency,
                       "instance_cpus": [first_cpus, second_cpus], "one_instance_rps": one,
                       "two_instances_rps": two, "speedup": two / one,
                       "two_instance_spread": list(spread.values())},
    }
    rows = [
        ("direct median latency (s)", f"{statistics.median(direct):.3f}"),
        ("via gateway median latency (s)", f"{statistics.median(through):.3f}"),
        ("gateway / direct, medians (<=1.03)", f"{ratio:.3f}"),
        ("gateway / direct, median pair", f"{statistics.median(pair_ratios):.3f}"),
        ("gateway cost per request (ms)", f"{statistics.median(pair_diffs_ms):.1f}"),
        ("throughput, 1 instance (req/s)", f"{one:.3f}"),
        ("throughput, 2 instances (req/s)", f"{two:.3f}"),
        ("speedup 2 vs 1", f"{two / one:.2f}"),
        ("requests per instance (2-inst burst)", "/".join(str(v) for v in spread.values())),
        ("load average before/after", f"{load_before[0]:.1f}/{os.getloadavg()[0]:.1f}"),
    ]
    print(f"gateway benchmark: {args.engine}, {args.clip}, {os.cpu_count()} CPUs")
    for name, value in rows:
        print(f"  {name:<38} {value:>10}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


def _replicas(args: argparse.Namespace) -> int:
    from bench import gateway_ha

    result = gateway_ha.run(args, ROOT)
    print(f"gateway replicas benchmark: {gateway_ha.ENGINE}, beckett.wav, {os.cpu_count()} CPUs")
    for name, value in gateway_ha.table(result):
        print(f"  {name:<44} {value:>16}")
    output = args.output or ROOT / "bench" / "results" / "gateway-ha.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
