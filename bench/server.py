"""Engine server overhead and throughput: raw faster-whisper vs `dalston serve` vs a PyPI peer server, one run.

    python bench/server.py --quick                          # whisper-base, ~5 min on 2 cores
    python bench/server.py                                  # full: more samples, both clips in throughput
    python bench/server.py --quick --variant whisper-tiny-en   # smoke run on the small test model
    python bench/server.py --quick --no-peer --vad-ab       # + the same server with vad_filter=false

Three systems, the same weights (the variant's exact pinned files, laid out by
`tests.fixtures.assets.model_dir_for`), the same clips (beckett ~10 s, two_cities ~44 s) and the
same faster-whisper decode for a given clip:

* raw   - `WhisperModel` in this process (compute type, beam size, num_workers from the variant),
          called the way `engines/transcribe/whisper/engine.py` calls it, on the wav path (so
          faster-whisper's own decode is counted, as the servers count theirs).
* dalston - a real `dalston serve VARIANT` subprocess with a keys file (auth checked on every
          request), over loopback HTTP.
* peer  - `faster-whisper-server==0.0.3` from PyPI (andyjjrt's FastAPI server; NOT the fedirz
          project of the same old name, which is now `speaches` and is not installable here),
          in its own venv, pinned to the same faster-whisper / ctranslate2 / av / numpy versions,
          configured by YAML with the same model options and decode options.

WHY per-clip decode matching: the whisper engine uses `BatchedInferencePipeline` (VAD-cut, batched)
for audio over 30 s when `runtime.batch_size` > 1 and the sequential decoder otherwise. Raw and the
peer are configured to do exactly the same for each clip, so the numbers compare serving, not
decoding strategy.

Measured:
1. Latency: median of N warm single requests per clip and system; the systems and clips are
   interleaved round by round (the order rotates), so machine noise lands on all alike.
   Target: dalston / raw <= 1.05. Each request's CPU seconds (the serving process's user + system
   time, all threads) are recorded too; `--vad-ab` reports both as same-round paired ratios.
2. Throughput: closed-loop clients at 1/2/4/8 concurrency, requests/s and audio-seconds/s; dalston
   and the peer alternate (ABBA in full mode). Target: dalston >= 1.3x peer at 4 clients.

Prints a table and writes JSON (default bench/results/server.json, not committed: bench/results/ is
git-ignored; the numbers that matter are copied into docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx

from tests.fixtures import assets
from tests.gateway.processes import cpu_seconds as pid_cpu_seconds

KEY = "dk_bench_server"
PEER_PACKAGE = "faster-whisper-server==0.0.3"
#: packages the peer venv is pinned to, at the versions this interpreter has (same decoder, same runtime)
PINNED_WITH_PEER = ("faster-whisper", "ctranslate2", "av", "numpy", "onnxruntime", "tokenizers")
WINDOW_SECONDS = 30.0  # engine.py's _WINDOW_SECONDS: longer audio goes through the batched pipeline
TEMPERATURES = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]  # engine.py's fallback ladder for temperature 0


# ------------------------------------------------------------------ inputs
@dataclass(frozen=True)
class Clip:
    name: str
    path: Path
    data: bytes
    seconds: float

    @classmethod
    def load(cls, name: str) -> Clip:
        path = assets.speech_clip(name)
        with wave.open(str(path)) as w:
            seconds = w.getnframes() / w.getframerate()
        return cls(name, path, path.read_bytes(), seconds)


@dataclass(frozen=True)
class Decode:
    """The faster-whisper call the whisper engine makes for one clip (see engine.py `_decode`)."""

    batched: bool
    kwargs: dict[str, Any]

    @classmethod
    def for_clip(cls, runtime: Any, clip: Clip, language: str | None) -> Decode:
        common: dict[str, Any] = {"language": language, "task": "transcribe", "initial_prompt": None,
                                  "word_timestamps": False, "beam_size": runtime.beam_size, "temperature": TEMPERATURES}
        if runtime.batch_size > 1 and clip.seconds > WINDOW_SECONDS:
            return cls(True, {**common, "batch_size": runtime.batch_size, "vad_filter": True})
        return cls(False, {**common, "vad_filter": runtime.vad_filter})


# ------------------------------------------------------------------ the three systems
class RawWhisper:
    """Plain faster-whisper in this process: what a user of the library would write."""

    name = "raw"

    def __init__(self, spec: Any, weights: Path, decodes: dict[str, Decode]) -> None:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.model = WhisperModel(str(weights), device="cpu", compute_type=spec.runtime.compute_type_cpu,
                                  num_workers=spec.capabilities.max_concurrency, local_files_only=True)
        self.pipeline = BatchedInferencePipeline(model=self.model)
        self.decodes = decodes

    def transcribe(self, clip: Clip) -> str:
        decode = self.decodes[clip.name]
        runner = self.pipeline if decode.batched else self.model
        segments, _ = runner.transcribe(str(clip.path), **decode.kwargs)
        return " ".join(s.text.strip() for s in segments if s.text.strip())


class HttpSystem:
    """An OpenAI-style transcription endpoint; one keep-alive client per calling thread."""

    def __init__(self, name: str, url: str, fields: Callable[[Clip], dict[str, str]],
                 headers: dict[str, str] | None = None, pid: int | None = None) -> None:
        self.name, self.url, self.fields, self.headers = name, url, fields, headers or {}
        self.pid = pid  # the server process, for its CPU time (cpu_seconds)
        self._local = threading.local()

    def _client(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(headers=self.headers, timeout=1800)
        return client

    def transcribe(self, clip: Clip) -> str:
        r = self._client().post(f"{self.url}/v1/audio/transcriptions", data=self.fields(clip),
                                files={"file": (clip.path.name, clip.data, "audio/wav")})
        if r.status_code != 200:
            raise RuntimeError(f"{self.name}: HTTP {r.status_code}: {r.text[:400]}")
        return str(r.json()["text"]).strip()


class Process:
    """A server subprocess of ours: started in its own session, stopped by its own pid only."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path, port: int) -> None:
        self.name, self.argv, self.env, self.log, self.port = name, argv, env, log, port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Process:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=self.log.parent)
        return self

    def wait_http(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; log:\n{self._tail()}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name}: {path} not 200 after {timeout:.0f} s; log:\n{self._tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else "(no log)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DALSTON_KEYS_FILE")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def dalston_process(variant: str, engines: Path, models: Path, keys: Path, work: Path) -> Process:
    port = free_port()
    argv = [sys.executable, "-m", "dalston", "serve", variant, "--port", str(port), "--engines-dir", str(engines),
            "--model-dir", str(models), "--keys-file", str(keys)]
    env = {**base_env(), "PYTHONPATH": str(ROOT)}
    return Process("dalston", argv, env, work / "dalston.log", port)


# ------------------------------------------------------------------ the peer
def ensure_peer_venv(venv: Path) -> Path:
    """The peer's python, installing `PEER_PACKAGE` into `venv` first if needed (through pip's configured index).

    The decoding stack is pinned to this interpreter's versions so that the peer runs the very same
    faster-whisper and CTranslate2 code as raw and dalston.
    """
    from importlib.metadata import PackageNotFoundError, version

    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import faster_whisper_server"]
    if python.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return python
    print(f"installing peer {PEER_PACKAGE} into {venv} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pins = []
    for name in PINNED_WITH_PEER:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pass
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", PEER_PACKAGE,
                    *pins], check=True)
    return python


def peer_versions(python: Path) -> dict[str, str]:
    code = ("import json, importlib.metadata as m; print(json.dumps({n: m.version(n) for n in "
            f"{['faster-whisper-server', *PINNED_WITH_PEER, 'uvicorn', 'fastapi']!r}}}))")
    return json.loads(subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout)


def peer_process(python: Path, spec: Any, weights: Path, decodes: dict[str, Decode], work: Path) -> Process:
    """faster-whisper-server in multi-model mode: one entry per decode path, same model and decode options."""
    model_options = {"device": "cpu", "compute_type": spec.runtime.compute_type_cpu,
                     "num_workers": spec.capabilities.max_concurrency, "local_files_only": True}
    entries = {}
    for decode in decodes.values():
        options = {k: v for k, v in decode.kwargs.items() if k not in ("batch_size", "initial_prompt")}
        name = "batched" if decode.batched else "sequential"
        entries[name] = {"name": name, "path": str(weights), "batch_size": decode.kwargs.get("batch_size", 1),
                         "model_options": model_options, "transcribe_options": options}
    config = work / "peer.yaml"
    config.write_text(json.dumps({"models": list(entries.values())}, indent=2))  # JSON is YAML
    port = free_port()
    argv = [str(python), "-m", "faster_whisper_server", "--config", str(config), "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning"]
    return Process("peer", argv, base_env(), work / "peer.log", port)


# ------------------------------------------------------------------ measurements
def wer(clip: str, text: str) -> float:
    import jiwer

    return float(jiwer.wer(" ".join(assets.reference_words(clip)), " ".join(assets.normalize_words(text))))


def cpu_seconds(system: Any) -> float | None:
    """CPU seconds (user + system, all threads) used so far by the process serving `system`: this one
    for raw, the server's for an HTTP system that knows its pid (None otherwise).

    WHY beside wall time: on a shared machine a request's wall time includes waiting for a core that
    another job holds, which swamps a few-percent difference; the CPU time the work itself needs is
    far less sensitive to that (not immune: caches and frequency are shared too).
    """
    if isinstance(system, RawWhisper):
        return time.process_time()
    pid = getattr(system, "pid", None)
    if pid is None:
        return None
    return pid_cpu_seconds(pid)


def timed(system: Any, clip: Clip) -> tuple[float, str]:
    started = time.perf_counter()
    text = system.transcribe(clip)
    return time.perf_counter() - started, text


def inference_seconds_total(url: str, clip: Clip) -> float:
    """Seconds dalston spent inside `engine.transcribe` so far, from /metrics (sum of RTF x clip length).

    Read before and after one request, it splits that request's latency into inference and
    everything around it (HTTP, multipart, decode, scheduling, rendering): the server's own overhead,
    measured on the same request, so machine noise on the inference does not blur it.
    """
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("dalston_real_time_factor_sum"):
            return float(line.split()[-1]) * clip.seconds
    raise RuntimeError("dalston_real_time_factor_sum missing from /metrics")


def measure_latency(systems: list[Any], clips: list[Clip], runs: int) -> dict[str, Any]:
    """Median warm single-request latency; round r runs every clip on every system, order rotated by r."""
    samples: dict[str, dict[str, list[float]]] = {c.name: {s.name: [] for s in systems} for c in clips}
    texts: dict[str, dict[str, str]] = {c.name: {} for c in clips}
    overhead: dict[str, list[float]] = {c.name: [] for c in clips}
    cpu: dict[str, dict[str, list[float]]] = {c.name: {s.name: [] for s in systems} for c in clips}
    for r in range(runs):
        order = systems[r % len(systems):] + systems[:r % len(systems)]
        for clip in clips:
            for system in order:
                probe = system.name == "dalston"
                before = inference_seconds_total(system.url, clip) if probe else 0.0
                cpu_before = cpu_seconds(system)
                seconds, text = timed(system, clip)
                if cpu_before is not None:
                    cpu[clip.name][system.name].append(cpu_seconds(system) - cpu_before)  # type: ignore[operator]
                if probe:
                    overhead[clip.name].append(seconds - (inference_seconds_total(system.url, clip) - before))
                samples[clip.name][system.name].append(seconds)
                texts[clip.name][system.name] = text
        print(f"  latency round {r + 1}/{runs}: " + "  ".join(
            f"{c.name}:" + ",".join(f"{s.name}={samples[c.name][s.name][-1]:.2f}" for s in systems) for c in clips),
            flush=True)
    out: dict[str, Any] = {}
    for clip in clips:
        per = {}
        for system in systems:
            xs = samples[clip.name][system.name]
            per[system.name] = {"median_s": statistics.median(xs), "min_s": min(xs), "max_s": max(xs),
                                "stdev_s": statistics.stdev(xs) if len(xs) > 1 else 0.0, "samples_s": xs,
                                "wer": wer(clip.name, texts[clip.name][system.name]),
                                "text": texts[clip.name][system.name]}
            if cpu[clip.name][system.name]:
                per[system.name]["cpu_median_s"] = statistics.median(cpu[clip.name][system.name])
                per[system.name]["cpu_samples_s"] = cpu[clip.name][system.name]
        raw = per["raw"]["median_s"]
        ratios = {f"{s.name}/raw": per[s.name]["median_s"] / raw for s in systems if s.name != "raw"}
        # same-round pairs: robust to slow drifts in machine load (other jobs on a shared box)
        paired = {f"{s.name}/raw": statistics.median(x / y for x, y in zip(samples[clip.name][s.name],
                                                                          samples[clip.name]["raw"], strict=True))
                  for s in systems if s.name != "raw"}
        same = len({texts[clip.name][s.name] for s in systems}) == 1
        out[clip.name] = {"audio_seconds": clip.seconds, "systems": per, "ratios": ratios,
                          "paired_median_ratios": paired, "texts_identical": same}
        if overhead[clip.name]:
            o = statistics.median(overhead[clip.name])
            out[clip.name]["dalston_outside_inference"] = {
                "median_s": o, "fraction_of_latency": o / per["dalston"]["median_s"], "samples_s": overhead[clip.name]}
    return out


def paired_ratio(a: list[float], b: list[float], resamples: int = 10000) -> dict[str, Any]:
    """A/B from same-round pairs: the median of a_i / b_i, its quartiles, and a bootstrap 95 % interval
    of that median (fixed seed). WHY pairs: on a shared machine the load drifts over minutes; the two
    requests of one round see nearly the same load, so their ratio cancels most of it."""
    import random

    ratios = sorted(x / y for x, y in zip(a, b, strict=True))
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples))
    return {"pairs": len(ratios), "median": statistics.median(ratios), "q1": q[0], "q3": q[2],
            "ci95": [medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]], "ratios": ratios}


class HealthProbe:
    """GET /health every 0.25 s while a burst runs: does the server still answer while it is busy?

    WHY: a server that runs inference on its event loop (the peer does) cannot answer liveness
    probes meanwhile, and an orchestrator may then restart a pod that is merely busy.
    """

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        if self.url:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self.url:
            self._thread.join()

    def _run(self) -> None:
        with httpx.Client(timeout=600) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                client.get(f"{self.url}/health")
                self.latencies.append(time.perf_counter() - started)
                self._stop.wait(0.25)


def burst(system: Any, clip: Clip, clients: int, requests: int) -> dict[str, float]:
    """`clients` closed-loop clients send `requests` requests in all; rate = requests / wall time."""
    latencies: list[float] = []
    lock = threading.Lock()

    def one(_: int) -> None:
        seconds, _text = timed(system, clip)
        with lock:
            latencies.append(seconds)

    with HealthProbe(getattr(system, "url", None)) as probe:
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(one, range(requests)))
        wall = time.perf_counter() - started
    out = {"requests": requests, "wall_s": wall, "latency_p50_s": statistics.median(latencies),
           "latency_max_s": max(latencies)}
    if probe.latencies:
        out["health_p50_s"], out["health_max_s"] = statistics.median(probe.latencies), max(probe.latencies)
    return out


def measure_throughput(systems: list[Any], clip: Clip, levels: list[int], requests: Callable[[int], int],
                       reps: int) -> dict[str, Any]:
    """Per level the systems alternate: rep k runs them forward for even k, backward for odd (A B, B A, ...).

    Levels also start alternately with A and B, so with reps=2 a level runs A B B A or B A A B.
    """
    out: dict[str, Any] = {}
    for i, clients in enumerate(levels):
        order = systems if i % 2 == 0 else systems[::-1]
        schedule = [s for k in range(reps) for s in (order if k % 2 == 0 else order[::-1])]
        runs: dict[str, list[dict[str, float]]] = {s.name: [] for s in systems}
        for system in schedule:
            runs[system.name].append(burst(system, clip, clients, requests(clients)))
        level = {}
        for name, rs in runs.items():
            n, wall = sum(r["requests"] for r in rs), sum(r["wall_s"] for r in rs)
            level[name] = {"requests": n, "wall_s": wall, "requests_per_s": n / wall,
                           "audio_s_per_s": n * clip.seconds / wall,
                           "latency_p50_s": statistics.median(r["latency_p50_s"] for r in rs),
                           "latency_max_s": max(r["latency_max_s"] for r in rs)}
            if all("health_max_s" in r for r in rs):
                level[name]["health_p50_s"] = statistics.median(r["health_p50_s"] for r in rs)
                level[name]["health_max_s"] = max(r["health_max_s"] for r in rs)
        if "peer" in level:
            level["dalston/peer"] = level["dalston"]["requests_per_s"] / level["peer"]["requests_per_s"]
        out[str(clients)] = level
        print(f"  throughput {clip.name} clients={clients}: " + "  ".join(
            f"{n}={v['requests_per_s']:.3f} req/s" for n, v in level.items() if isinstance(v, dict)), flush=True)
    return out


def warm(systems: list[Any], clips: list[Clip]) -> None:
    """Two requests per system and clip (the peer loads its models lazily on the first one)."""
    for clip in clips:
        for system in systems:
            for _ in range(2):
                system.transcribe(clip)


# ------------------------------------------------------------------ report
def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1), "os": platform.platform(),
            "python": platform.python_version(), "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]}


def local_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in (*PINNED_WITH_PEER, "uvicorn", "starlette"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def git_revision() -> str:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return rev.stdout.strip() or "unknown"


def print_tables(result: dict[str, Any]) -> None:
    lat, targets = result["latency"], result["targets"]
    print(f"\nsingle-request latency, warm, median of {result['config']['latency_runs']} "
          f"({result['variant']}, {result['machine']['cores']} cores)")
    print(f"{'clip':<11}{'audio s':>8}{'raw s':>9}{'dalston s':>11}{'peer s':>9}{'dalston/raw':>13}{'paired':>8}"
          f"{'peer/raw':>10}{'WER raw/dal/peer':>20}{'same text':>11}")
    for clip, row in lat.items():
        s = row["systems"]
        peer = s.get("peer", {})
        wers = "/".join(f"{s[n]['wer']:.3f}" if n in s else "-" for n in ("raw", "dalston", "peer"))
        print(f"{clip:<11}{row['audio_seconds']:>8.1f}{s['raw']['median_s']:>9.3f}{s['dalston']['median_s']:>11.3f}"
              f"{peer.get('median_s', float('nan')):>9.3f}{row['ratios']['dalston/raw']:>13.3f}"
              f"{row['paired_median_ratios']['dalston/raw']:>8.3f}"
              f"{row['ratios'].get('peer/raw', float('nan')):>10.3f}{wers:>20}{row['texts_identical']!s:>11}")
    print(f"target dalston/raw <= {targets['latency_ratio_max']}")
    for clip, row in lat.items():
        if "dalston_outside_inference" in row:
            o = row["dalston_outside_inference"]
            print(f"dalston time outside engine.transcribe ({clip}): median {o['median_s'] * 1000:.1f} ms "
                  f"= {o['fraction_of_latency']:.1%} of its latency (HTTP, multipart, decode, queue, render)")
    for clip, levels in result["throughput"].items():
        print(f"\nthroughput, {clip} ({lat.get(clip, {}).get('audio_seconds', 0):.1f} s audio), closed-loop clients")
        names = [n for n in ("raw", "dalston", "peer") if n in next(iter(levels.values()))]
        probed = [n for n in names if n != "raw"]
        print(f"{'clients':>7}" + "".join(f"{n + ' req/s':>14}{n + ' aud s/s':>15}" for n in names)
              + f"{'dalston/peer':>14}" + "".join(f"{n + ' /health max s':>22}" for n in probed))
        for clients, level in levels.items():
            print(f"{clients:>7}" + "".join(f"{level[n]['requests_per_s']:>14.3f}{level[n]['audio_s_per_s']:>15.2f}"
                                            for n in names)
                  + (f"{level['dalston/peer']:>14.2f}" if "dalston/peer" in level else f"{'-':>14}")
                  + "".join(f"{level[n].get('health_max_s', float('nan')):>22.3f}" for n in probed))
    print(f"target dalston/peer at 4 clients >= {targets['throughput_ratio_at_4_min']}")


def verdicts(result: dict[str, Any]) -> dict[str, Any]:
    t = result["targets"]
    out: dict[str, Any] = {"latency": {c: row["ratios"]["dalston/raw"] <= t["latency_ratio_max"]
                                       for c, row in result["latency"].items()}}
    out["throughput_at_4"] = {c: lv["4"]["dalston/peer"] >= t["throughput_ratio_at_4_min"]
                              for c, lv in result["throughput"].items() if "4" in lv and "dalston/peer" in lv["4"]}
    return out


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="whisper-base", help="whisper-base (default) or whisper-tiny-en")
    parser.add_argument("--quick", action="store_true", help="fewer samples; throughput on beckett only")
    parser.add_argument("--clips", default="two_cities,beckett")
    parser.add_argument("--language", default="en", help="sent by every system ('' = detect)")
    parser.add_argument("--latency-runs", type=int, default=None, help="default 6 quick / 12 full (a multiple of 3: each system leads equally often)")
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument("--throughput-clips", default=None, help="default beckett quick / all clips full")
    parser.add_argument("--raw-throughput", action=argparse.BooleanOptionalAction, default=None,
                        help="also measure raw in-process throughput (the ceiling); default on in full mode")
    parser.add_argument("--reps", type=int, default=None, help="bursts per system and level (default 1 quick / 2 full)")
    parser.add_argument("--peer-venv", type=Path, default=Path(tempfile.gettempdir()) / "peer-venv")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--vad-ab", action="store_true",
                        help="also time the same dalston server with vad_filter=false (VAD cost; target <= 1.05)")
    parser.add_argument("--keep-work", action="store_true", help="keep the temp dir (server logs, peer config)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "server.json")
    args = parser.parse_args(argv)

    quick = args.quick
    runs = args.latency_runs or (6 if quick else 12)
    levels = [int(x) for x in args.concurrency.split(",")]
    clips = [Clip.load(n.strip()) for n in args.clips.split(",") if n.strip()]
    if args.throughput_clips is not None:
        tp_names = {n.strip() for n in args.throughput_clips.split(",") if n.strip()}
    else:
        tp_names = {"beckett"} if quick else {c.name for c in clips}
    tp_clips = [c for c in clips if c.name in tp_names]
    raw_tp = (not quick) if args.raw_throughput is None else args.raw_throughput
    reps = args.reps or (1 if quick else 2)
    requests: Callable[[int], int] = (lambda c: max(4, c)) if quick else (lambda c: max(6, 2 * c))
    language = args.language or None

    from dalston.catalog import Catalog

    work = Path(tempfile.mkdtemp(prefix="dalston-bench-server-"))
    engines = assets.engines_tree(work)
    models = work / "models"
    weights = assets.model_dir_for(args.variant, models, engines_root=engines)
    spec = Catalog.load(engines).get(args.variant).spec
    decodes = {c.name: Decode.for_clip(spec.runtime, c, language) for c in clips}
    keys = work / "keys.txt"
    keys.write_text(hashlib.sha256(KEY.encode()).hexdigest() + "\n")
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    print(f"work dir {work}; variant {args.variant}; weights {weights}; loadavg {load_at_start}", flush=True)

    processes: list[Process] = []
    try:
        dalston = dalston_process(args.variant, engines, models, keys, work).start()
        processes.append(dalston)
        peer_proc, peer_python = None, None
        if not args.no_peer:
            peer_python = ensure_peer_venv(args.peer_venv)
            peer_proc = peer_process(peer_python, spec, weights, decodes, work).start()
            processes.append(peer_proc)
        raw = RawWhisper(spec, weights, decodes)
        dalston.wait_http("/ready", 600)
        lang_field = {"language": language} if language else {}
        assert dalston.proc is not None
        systems: list[Any] = [raw, HttpSystem("dalston", dalston.url, lambda c: {"model": args.variant, **lang_field},
                                              {"Authorization": f"Bearer {KEY}"}, pid=dalston.proc.pid)]
        if args.vad_ab:  # the same server and decode, VAD off per request: what VAD-on-by-default costs
            systems.append(HttpSystem("dalston-novad", dalston.url, lambda c: {
                "model": args.variant, "vad_filter": "false", **lang_field}, {"Authorization": f"Bearer {KEY}"},
                pid=dalston.proc.pid))
        if peer_proc is not None:
            peer_proc.wait_http("/health", 300)
            systems.append(HttpSystem("peer", peer_proc.url, lambda c: {
                "model_name": "batched" if decodes[c.name].batched else "sequential", **lang_field},
                pid=peer_proc.proc.pid if peer_proc.proc else None))

        print("warming up ...", flush=True)
        warm(systems, clips)
        print(f"latency: {runs} rounds", flush=True)
        latency = measure_latency(systems, clips, runs)
        throughput = {}
        http = [s for s in systems if s.name != "raw"]
        for clip in tp_clips:
            tp_systems = ([raw] if raw_tp else []) + http
            throughput[clip.name] = measure_throughput(tp_systems, clip, levels, requests, reps)
    finally:
        for proc in reversed(processes):
            proc.stop()
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)  # weights there are symlinks into the asset cache

    result: dict[str, Any] = {
        "benchmark": "server", "variant": args.variant, "mode": "quick" if quick else "full",
        "command": "python bench/server.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "git": git_revision(), "machine": {**machine(), "loadavg_at_start": load_at_start}, "versions": {"local": local_versions()},
        "weights": {f.name: f.sha256 for f in spec.weights.files},
        "clips": {c.name: {"seconds": c.seconds, "sha256": hashlib.sha256(c.data).hexdigest()} for c in clips},
        "config": {"latency_runs": runs, "concurrency": levels, "throughput_reps": reps, "language": language,
                   "compute_type": spec.runtime.compute_type_cpu, "beam_size": spec.runtime.beam_size,
                   "num_workers": spec.capabilities.max_concurrency, "batch_size": spec.runtime.batch_size,
                   "decode_per_clip": {n: "batched" if d.batched else "sequential" for n, d in decodes.items()},
                   "throughput_requests": {str(c): requests(c) * reps for c in levels}},
        "peer": None if args.no_peer else {"package": PEER_PACKAGE, "versions": peer_versions(peer_python)},
        "targets": {"latency_ratio_max": 1.05, "throughput_ratio_at_4_min": 1.3},
        "latency": latency, "throughput": throughput,
    }
    result["met"] = verdicts(result)
    if args.vad_ab:
        result["vad_ab"] = {c: {"dalston/dalston-novad": row["systems"]["dalston"]["median_s"]
                                / row["systems"]["dalston-novad"]["median_s"], "target_max": 1.05,
                                "paired": paired_ratio(row["systems"]["dalston"]["samples_s"],
                                                       row["systems"]["dalston-novad"]["samples_s"]),
                                "paired_cpu": paired_ratio(row["systems"]["dalston"]["cpu_samples_s"],
                                                           row["systems"]["dalston-novad"]["cpu_samples_s"])}
                            for c, row in latency.items()}
    print_tables(result)
    for clip_name, row in result.get("vad_ab", {}).items():
        p = row["paired"]
        print(f"VAD on/off latency {clip_name}: ratio of medians {row['dalston/dalston-novad']:.3f}; "
              f"{p['pairs']} same-round pairs: median {p['median']:.3f}, IQR {p['q1']:.3f}-{p['q3']:.3f}, "
              f"95% CI of the median {p['ci95'][0]:.3f}-{p['ci95'][1]:.3f} (target <= 1.05)")
        p = row["paired_cpu"]
        print(f"VAD on/off server CPU seconds {clip_name}: {p['pairs']} same-round pairs: median {p['median']:.3f}, "
              f"IQR {p['q1']:.3f}-{p['q3']:.3f}, 95% CI of the median {p['ci95'][0]:.3f}-{p['ci95'][1]:.3f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
