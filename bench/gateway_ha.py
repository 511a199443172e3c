"""Gateway replicas on a shared Redis registry: per-request cost, throughput, and balancing accuracy.

    python bench/gateway.py --replicas 2 --registry redis      # ~3 min on 2 cores (tiny.en)

Real processes on loopback: a real `redis-server`, an embedded-registry `dalston gateway` (G0), two
`dalston gateway --registry redis://...` replicas (A, B) and two `dalston serve whisper-tiny-en`
engines, each pinned to its own half of the CPUs, registered with all three gateways.

1. Cost: the same request sent alternately through G0 and through A (same engines, order flipped
   every pair), for two kinds of request: a real transcription (beckett.wav) and a request the engine
   refuses at once (a non-audio upload: 400 invalid audio), which leaves only the routing and
   proxying path, so a difference of a millisecond is visible. Reported: median per-pair difference
   A - G0 in ms (target <= 2 ms added at median).
2. Throughput: a burst through A alone, then the same burst spread over A and B.
3. Balancing accuracy under a burst: two gateway apps in this process on the same Redis, so the true
   number of requests on each engine (the sum of both replicas' own counts) is known at every pick.
   At each pick the estimate each scheme would use is recorded against that truth: shared counts
   (this replica's own + the other replicas' from the last registry poll: what the gateway uses),
   engine-reported counts (the truth as of the engine's last heartbeat, every `--heartbeat-interval`,
   plus this replica's own changes since), and local-only counts (no sharing). Reported: mean
   absolute error and the share of picks whose choice differs from the choice the truth gives.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tests.fixtures import assets
from tests.fixtures.redis import RedisServer
from tests.gateway import processes as p

KEY = "dk_bench"
AUTH = {"authorization": f"Bearer {KEY}"}
ENGINE = "whisper-tiny-en"


def _post(client: httpx.Client, url: str, audio: bytes, name: str, expect: int) -> float:
    started = time.perf_counter()
    r = client.post(f"{url}/v1/audio/transcriptions", data={"model": ENGINE}, files={"file": (name, audio)})
    elapsed = time.perf_counter() - started
    if r.status_code != expect:
        raise RuntimeError(f"{url}: HTTP {r.status_code} (expected {expect}): {r.text[:300]}")
    return elapsed


def paired_cost(g0: str, a: str, audio: bytes, name: str, expect: int, pairs: int) -> dict[str, Any]:
    """Alternate G0 / A on the same request; the per-pair difference isolates the registry backend."""
    embedded: list[float] = []
    redis: list[float] = []
    with httpx.Client(headers=AUTH, timeout=600) as client:
        for url in (g0, a, g0, a):
            _post(client, url, audio, name, expect)  # warm connections and code paths
        for i in range(pairs):
            order = (g0, a) if i % 2 == 0 else (a, g0)
            got = {url: _post(client, url, audio, name, expect) for url in order}
            embedded.append(got[g0])
            redis.append(got[a])
    diffs = [(r - e) * 1000 for r, e in zip(redis, embedded)]
    return {"pairs": pairs, "embedded_median_ms": statistics.median(embedded) * 1000,
            "redis_median_ms": statistics.median(redis) * 1000, "median_pair_added_ms": statistics.median(diffs),
            "target_added_ms": 2.0, "meets_target": statistics.median(diffs) <= 2.0}


def burst(urls: list[str], audio: bytes, requests: int, concurrency: int) -> float:
    """Requests per second, request i sent to urls[i % len(urls)]."""
    with httpx.Client(headers=AUTH, timeout=600) as client:
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(lambda i: _post(client, urls[i % len(urls)], audio, "beckett.wav", 200), range(requests)))
        return requests / (time.perf_counter() - started)


class PickRecorder:
    """Wraps `pick` on both in-process replicas and scores each scheme's estimate against the truth."""

    def __init__(self, states: list[Any], heartbeat_interval: float) -> None:
        self.states = states
        self.interval = heartbeat_interval
        self.lock = threading.Lock()
        self.rows: list[dict[str, Any]] = []
        self.reported: dict[str, int] = {}        # truth at the last "heartbeat" per instance
        self.own_at_report: list[dict[str, int]] = [{} for _ in states]
        for n, state in enumerate(states):
            state.instances.pick = self._wrap(n, state.instances.pick)

    def truth(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for state in self.states:
            for inst in list(state.instances._by_id.values()):
                total[inst.instance_id] = total.get(inst.instance_id, 0) + inst.in_flight
        return total

    def heartbeat(self) -> None:
        """What engines would report in a heartbeat: their true load now (and each replica's own share)."""
        with self.lock:
            self.reported = self.truth()
            self.own_at_report = [{i.instance_id: i.in_flight for i in list(s.instances._by_id.values())}
                                  for s in self.states]

    def _wrap(self, n: int, pick: Any) -> Any:
        def recorded(engine_id: str) -> Any:
            with self.lock:
                truth = self.truth()
                candidates = self.states[n].instances.live(engine_id)
                row: dict[str, Any] = {"truth": {}, "shared": {}, "reported": {}, "local": {}}
                for inst in candidates:
                    own_delta = inst.in_flight - self.own_at_report[n].get(inst.instance_id, 0)
                    row["truth"][inst.instance_id] = truth.get(inst.instance_id, 0)
                    row["shared"][inst.instance_id] = inst.in_flight + inst.remote_in_flight
                    row["reported"][inst.instance_id] = self.reported.get(inst.instance_id, 0) + own_delta
                    row["local"][inst.instance_id] = inst.in_flight
                if len(candidates) > 1:
                    self.rows.append(row)
                return pick(engine_id)
        return recorded

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"picks": len(self.rows)}
        for scheme in ("shared", "reported", "local"):
            errors = [abs(row[scheme][i] - row["truth"][i]) for row in self.rows for i in row["truth"]]
            wrong = sum(1 for row in self.rows
                        if row["truth"][min(row[scheme], key=row[scheme].get)] > min(row["truth"].values()))
            out[scheme] = {"mean_abs_error": statistics.fmean(errors) if errors else 0.0,
                           "wrong_choice_share": wrong / len(self.rows) if self.rows else 0.0}
        return out


def balance_study(redis_url: str, engines: list[str], catalog_dir: Path, keys: Path, audio: bytes,
                  requests: int, concurrency: int, heartbeat_interval: float) -> dict[str, Any]:
    from dalston.auth import KeyStore
    from dalston.catalog import Catalog
    from dalston.gateway.app import GatewayConfig, create_gateway_app
    from dalston.registration import Registrar, spec_digest
    from tests.fixtures.serving import serve_app

    catalog = Catalog.load(catalog_dir)
    config = dict(catalog=catalog, internal_token=p.INTERNAL_TOKEN, keys=KeyStore.from_file(keys),
                  heartbeat_interval=heartbeat_interval, heartbeat_timeout=max(6.0, 3 * heartbeat_interval),
                  registry_url=redis_url)
    apps = [create_gateway_app(GatewayConfig(**config)) for _ in range(2)]  # type: ignore[arg-type]
    states = [app.state.gateway for app in apps]
    with serve_app(apps[0]) as a, serve_app(apps[1]) as b:
        digest = spec_digest(catalog.get(ENGINE).spec)
        registrars = [Registrar([a, b], ENGINE, url, digest, 2, p.INTERNAL_TOKEN, interval=0.5).start()
                      for url in engines]
        try:
            deadline = time.monotonic() + 20
            while any(len(s.instances.live(ENGINE)) < len(engines) for s in states):
                if time.monotonic() > deadline:
                    raise TimeoutError("in-process replicas did not see the engines")
                time.sleep(0.1)
            recorder = PickRecorder(states, heartbeat_interval)
            stop = threading.Event()

            def heartbeats() -> None:
                while not stop.wait(heartbeat_interval):
                    recorder.heartbeat()

            beat = threading.Thread(target=heartbeats, daemon=True)
            beat.start()
            # Arrivals spread over time, alternating replicas: the case where what one replica knows
            # about the other's requests matters.
            with httpx.Client(headers=AUTH, timeout=600) as client, ThreadPoolExecutor(concurrency) as pool:
                futures = []
                for i in range(requests):
                    futures.append(pool.submit(_post, client, (a, b)[i % 2], audio, "beckett.wav", 200))
                    time.sleep(0.15)
                for future in futures:
                    future.result()
            stop.set()
            return recorder.summary()
        finally:
            for registrar in registrars:
                registrar.stop()


def run(args: Any, root: Path) -> dict[str, Any]:
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="dalston-bench-gateway-ha-"))
    engines_dir = assets.engines_tree(work)
    model_dir = work / "models"
    assets.model_dir_for(ENGINE, model_dir, engines_root=engines_dir)
    keys = work / "keys.txt"
    keys.write_text(hashlib.sha256(KEY.encode()).hexdigest() + "\n")
    audio = assets.speech_clip("beckett.wav").read_bytes()
    junk = b"this is not audio " * 64
    env = p.base_env(engines_dir, model_dir)
    cpus = sorted(os.sched_getaffinity(0))
    halves = [tuple(cpus[: len(cpus) // 2]), tuple(cpus[len(cpus) // 2:])] if len(cpus) > 1 else [None, None]
    redis = RedisServer(work / "redis").start()
    procs: list[p.Proc] = []
    load_before = os.getloadavg()
    try:
        g0 = p.gateway(env, keys, work)
        g0.log = work / "gateway-embedded.log"
        ga = p.gateway(env, keys, work, extra=["--registry", redis.url])
        ga.log = work / "gateway-a.log"
        gb = p.gateway(env, keys, work, extra=["--registry", redis.url])
        gb.log = work / "gateway-b.log"
        for gw in (g0, ga, gb):
            procs.append(gw.start())
        for gw in (g0, ga, gb):
            gw.wait_http("/health", 30)
        gateways = ",".join(gw.url for gw in (g0, ga, gb))
        engines = [p.engine(ENGINE, env, keys, work, gateways, label=f"-{n}", cpus=halves[n]).start()
                   for n in range(2)]
        procs += engines
        for engine in engines:
            engine.wait_http("/ready", 300)
        for gw in (g0, ga, gb):
            deadline = time.monotonic() + 30
            while len(httpx.get(f"{gw.url}/internal/v1/instances", headers={
                    "authorization": f"Bearer {p.INTERNAL_TOKEN}"}).json()["instances"].get(ENGINE, [])) < 2:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{gw.name} did not see both engines")
                time.sleep(0.2)
        cost_fast = paired_cost(g0.url, ga.url, junk, "junk.wav", 400, args.cost_pairs)
        cost_real = paired_cost(g0.url, ga.url, audio, "beckett.wav", 200, args.requests)
        one = burst([ga.url], audio, args.burst, args.concurrency)
        two = burst([ga.url, gb.url], audio, args.burst, args.concurrency)
        balance = balance_study(redis.url, [e.url for e in engines], engines_dir, keys, audio,
                                args.balance_requests, args.concurrency, args.heartbeat_interval)
    finally:
        for proc in reversed(procs):
            proc.stop()
        redis.stop()
        if not args.keep_work:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    return {"benchmark": "gateway-ha", "engine_id": ENGINE, "cpu_count": os.cpu_count(),
            "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
            "cost_fast_path": cost_fast, "cost_transcription": cost_real,
            "throughput": {"burst": args.burst, "concurrency": args.concurrency, "one_replica_rps": one,
                           "two_replicas_rps": two, "ratio": two / one},
            "balance": balance}


def table(result: dict[str, Any]) -> list[tuple[str, str]]:
    fast, real, tp, bal = (result["cost_fast_path"], result["cost_transcription"], result["throughput"],
                           result["balance"])
    rows = [
        ("fast path: embedded / redis median (ms)", f"{fast['embedded_median_ms']:.2f} / {fast['redis_median_ms']:.2f}"),
        ("fast path: redis added, median pair (ms)", f"{fast['median_pair_added_ms']:+.2f}"),
        ("transcription: embedded / redis (ms)", f"{real['embedded_median_ms']:.0f} / {real['redis_median_ms']:.0f}"),
        ("transcription: redis added, median (ms)", f"{real['median_pair_added_ms']:+.1f}"),
        ("throughput 1 replica / 2 (req/s)", f"{tp['one_replica_rps']:.2f} / {tp['two_replicas_rps']:.2f}"),
        ("throughput ratio 2 vs 1", f"{tp['ratio']:.2f}"),
        ("balance picks scored", str(bal["picks"])),
    ]
    for scheme in ("shared", "reported", "local"):
        rows.append((f"{scheme}: mean |error| / wrong picks",
                     f"{bal[scheme]['mean_abs_error']:.2f} / {bal[scheme]['wrong_choice_share']:.0%}"))
    rows.append(("load average before/after", f"{result['loadavg_before'][0]:.1f}/{result['loadavg_after'][0]:.1f}"))
    return rows


if __name__ == "__main__":  # pragma: no cover - run through bench/gateway.py
    raise SystemExit("run: python bench/gateway.py --replicas 2 --registry redis")
