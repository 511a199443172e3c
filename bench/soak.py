"""Soak and fault run: mixed load through a real gateway and two real engines while processes die.

    python bench/soak.py                    # 10 minutes (the documented run)
    python bench/soak.py --duration 60      # the short version the test command runs (tests/reliability)

Processes (all real, on loopback, started by their documented CLI): `dalston gateway` and two
`dalston serve` instances of one streaming variant (default the test variant whisper-streaming-tiny-en,
real tiny.en weights), which serves batch requests and realtime sessions at once.

Load, for `--duration` seconds:
- batch clients posting clips of several lengths (2 s, 10 s, 44 s) through the gateway, obeying
  429/503 `Retry-After`; every 200 is checked against the text the same clip got before the faults;
- realtime clients streaming beckett.wav paced in real time through the gateway (native protocol);
- bad requests (wrong key, unknown 10 KB model name, not audio, a body cut short): each must get a
  4xx OpenAI-style JSON error, with no more than ~256 bytes of the input echoed back;
- slow clients: headers at 1 byte/s, and a body declaring 1 GB that stalls after 1 KB: the server
  must answer or close, not hold the connection for the whole run.

Faults, at fixed fractions of the run: SIGKILL engine A (restarted 3 s later), SIGTERM engine B
(graceful drain; restarted when it exits), SIGTERM + restart of the gateway on the same port.

Report (table + JSON, default bench/results/soak.json): requests sent / succeeded / failed by reason,
each failure classed as *expected* (it ended while a SIGKILLed engine was still routed to, or while
the gateway restarted — but not a session the gateway relayed at its SIGTERM: it drains) or
*unexpected*; 429/503 with `Retry-After` are counted as refusals the client retries, not failures;
sessions completed / cut and finals lost; bad and slow clients; RSS and open file descriptors of
every process at the start and end of its life. `--check` exits 1 when a target is missed: no wrong
text in an accepted response, no unexpected failure, no realtime session losing finals to a SIGTERM
(of an engine or of the gateway), no held slow connection, RSS growth under 25 % and fds flat (±8)
per process.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import jiwer  # noqa: E402
import websockets  # noqa: E402
import numpy as np  # noqa: E402

from dalston.commands.stream import load_audio_16k, realtime_url, stream_audio  # noqa: E402
from tests.fixtures import assets  # noqa: E402
from tests.gateway import processes as p  # noqa: E402

KEY = "dk_soak"
AUTH = {"authorization": f"Bearer {KEY}"}
HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT = 0.5, 2.0
ECHO_LIMIT = 1024  # bytes of error body allowed for a 10 KB bad model name (the cap is 256 B of echo)
HELD_AFTER = 30.0  # a slow connection still open after this many seconds counts as held


@dataclass
class Fault:
    at: float  # seconds since the load started
    kind: str  # sigkill | sigterm | restart
    proc: str
    until: float = 0.0  # when the process was serving again


@dataclass
class Outcome:
    kind: str  # batch | realtime | bad | slow
    started: float
    ended: float
    result: str  # ok | wrong_text | http_<status> | conn_<error> | cut_<code> | held | closed ...
    detail: str = ""
    expected: bool | None = None  # for failures: explained by a fault


@dataclass
class Usage:
    """RSS and fds of one process: the baseline is taken once it has served under load for a while
    (WARM_S after it became ready: the first requests of each clip length allocate for good), the
    last sample at the end of its life."""

    ready_at: float = 0.0
    first: tuple[int, int] | None = None  # (rss kB, open fds)
    last: tuple[int, int] | None = None


WARM_S = 15.0


@dataclass
class Run:
    t0: float = field(default_factory=time.monotonic)
    faults: list[Fault] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    usage: dict[str, Usage] = field(default_factory=dict)  # "name pid" -> first/last sample
    lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)


# ------------------------------------------------------------------------------------------ clients
def _wer(reference: str, text: str) -> float:
    ref, hyp = " ".join(assets.normalize_words(reference)), " ".join(assets.normalize_words(text))
    return float(jiwer.wer(ref, hyp)) if ref else float(bool(hyp))


async def batch_client(run: Run, url: str, model: str, clips: dict[str, tuple[bytes, str]], stop: float,
                       index: int) -> None:
    names = sorted(clips)
    async with httpx.AsyncClient(headers=AUTH, timeout=120) as client:
        i = index
        while run.now() < stop:
            name = names[i % len(names)]
            i += 1
            audio, reference = clips[name]
            started = run.now()
            try:
                r = await client.post(f"{url}/v1/audio/transcriptions", data={"model": model, "language": "en"},
                                      files={"file": (name, audio, "audio/wav")})
            except httpx.HTTPError as exc:
                run.add(Outcome("batch", started, run.now(), f"conn_{type(exc).__name__}", name))
                await asyncio.sleep(0.5)
                continue
            if r.status_code == 200:
                wer = _wer(reference, r.json()["text"])
                run.add(Outcome("batch", started, run.now(), "ok" if wer <= 0.1 else "wrong_text",
                                f"{name} wer={wer:.2f}"))
            else:
                run.add(Outcome("batch", started, run.now(), f"http_{r.status_code}", f"{name} {r.text[:120]}"))
                if r.status_code in (429, 503):
                    await asyncio.sleep(min(10.0, float(r.headers.get("retry-after", "1") or 1)))


async def realtime_client(run: Run, url: str, model: str, samples: np.ndarray, reference: str, stop: float) -> None:
    while run.now() < stop:
        started = run.now()
        try:
            result = await stream_audio(realtime_url(url, model), samples, chunk_ms=160, realtime=True,
                                        api_key=KEY, language="en", timeout=120)
        except websockets.InvalidStatus as exc:  # refused in the handshake
            status = exc.response.status_code
            if status in (429, 503):  # every instance full or draining: a refusal with Retry-After, like HTTP's
                run.add(Outcome("realtime", started, run.now(), f"http_{status}", exc.response.body[:160].decode(
                    errors="replace")))
                await asyncio.sleep(min(10.0, float(exc.response.headers.get("retry-after", "1") or 1)))
            else:
                run.add(Outcome("realtime", started, run.now(), "conn_InvalidStatus", str(exc)[:160]))
                await asyncio.sleep(0.5)
            continue
        except Exception as exc:  # connection failure
            run.add(Outcome("realtime", started, run.now(), f"conn_{type(exc).__name__}", str(exc)[:160]))
            await asyncio.sleep(0.5)
            continue
        wer = _wer(reference, result.text)
        if result.close_code == 1000:
            outcome = "ok" if wer <= 0.2 else "wrong_text"
        else:
            outcome = f"cut_{result.close_code}"
            if result.close_code in (4029, 4503):
                await asyncio.sleep(1.0)  # refused (engine full or draining): back off as a client would
        errors = ",".join(str(e.get("code")) for e in result.errors)
        run.add(Outcome("realtime", started, run.now(), outcome,
                        f"wer={wer:.2f} finals={len(result.finals)} errors={errors} reason={result.close_reason}"))


def _multipart(fields: dict[str, str], file: tuple[str, bytes]) -> tuple[bytes, str]:
    boundary = "soakboundary" + hashlib.sha256(os.urandom(8)).hexdigest()[:12]
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file[0]}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + file[1] + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


async def bad_client(run: Run, url: str, model: str, audio: bytes, stop: float) -> None:
    body, ctype = _multipart({"model": model}, ("clip.wav", audio))
    cases: list[tuple[str, dict[str, Any]]] = [
        ("wrong_key", {"headers": {"authorization": "Bearer dk_wrong", "content-type": ctype}, "content": body}),
        ("unknown_model", {"headers": {**AUTH}, "data": {"model": "m" * 10_000},
                           "files": {"file": ("clip.wav", audio, "audio/wav")}}),
        ("not_audio", {"headers": {**AUTH}, "data": {"model": model},
                       "files": {"file": ("clip.wav", b"\x00junk" * 500, "audio/wav")}}),
        ("cut_body", {"headers": {**AUTH, "content-type": ctype}, "content": body[: len(body) // 2]}),
    ]
    async with httpx.AsyncClient(timeout=60) as client:
        i = 0
        while run.now() < stop:
            name, kwargs = cases[i % len(cases)]
            i += 1
            started = run.now()
            try:
                r = await client.post(f"{url}/v1/audio/transcriptions", **kwargs)
                err = r.json().get("error", {}) if r.headers.get("content-type", "").startswith("application/json") else {}
                clear = 400 <= r.status_code < 500 and bool(err.get("message")) and len(r.content) <= ECHO_LIMIT
                # 502/503 come from routing (an engine down), before anyone looked at the input
                result = "clear_error" if clear else f"http_{r.status_code}" if r.status_code in (502, 503) \
                    else f"unclear_{r.status_code}"
                detail = f"{name} {r.status_code} {err.get('code')} {len(r.content)}B"
            except httpx.HTTPError as exc:
                result, detail = f"conn_{type(exc).__name__}", name
            run.add(Outcome("bad", started, run.now(), result, detail))
            await asyncio.sleep(1.0)


def _slow_connection(run: Run, port: int, mode: str, stop: float) -> None:
    """One slow client: `headers` sends a request line at 1 byte/s; `stall` declares 1 GB, sends 1 KB, waits."""
    started = run.now()
    request = (b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
               b"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000000\r\n\r\n")
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError as exc:
        run.add(Outcome("slow", started, run.now(), f"conn_{type(exc).__name__}", mode))
        time.sleep(0.5)  # nothing listening (the gateway is restarting): do not spin
        return
    sock.settimeout(1.0)
    answer, sent = b"", 0
    try:
        if mode == "stall":
            sock.sendall(request + b"--b\r\n" + b"x" * 1024)
        while run.now() < stop and run.now() - started < HELD_AFTER:
            if mode == "headers" and sent < len(request):
                sock.sendall(request[sent:sent + 1])
                sent += 1
            try:
                chunk = sock.recv(4096)
            except socket.timeout:
                continue
            if not chunk:
                break
            answer += chunk
        held = run.now() - started >= HELD_AFTER
        status = answer.split(b" ", 2)[1].decode(errors="replace") if answer.startswith(b"HTTP/") else "none"
        run.add(Outcome("slow", started, run.now(), "held" if held else "closed", f"{mode} status={status}"))
    except OSError as exc:  # reset by the server counts as closed
        run.add(Outcome("slow", started, run.now(), "closed", f"{mode} {type(exc).__name__}"))
    finally:
        sock.close()


def slow_clients(run: Run, port: int, stop: float, count: int) -> list[threading.Thread]:
    def loop(mode: str) -> None:
        while run.now() < stop - 5:
            _slow_connection(run, port, mode, stop)

    threads = [threading.Thread(target=loop, args=("headers" if k % 2 else "stall",), daemon=True)
               for k in range(count)]
    for t in threads:
        t.start()
    return threads


# -------------------------------------------------------------------------------------- processes
def _sample(proc: p.Proc) -> tuple[int, int] | None:
    if not proc.alive() or proc.popen is None:
        return None
    pid = proc.popen.pid
    try:
        rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return None


def sampler(run: Run, procs: dict[str, p.Proc], ready: set[int], stop_event: threading.Event) -> None:
    """RSS and fds of every process, from the moment it is ready (so model loading is not "growth")."""
    while not stop_event.is_set():
        for name, proc in list(procs.items()):
            if proc.popen is None or proc.popen.pid not in ready:
                continue
            sample = _sample(proc)
            if sample and proc.popen is not None:
                usage = run.usage.setdefault(f"{name} pid={proc.popen.pid}", Usage(ready_at=time.monotonic()))
                if usage.first is None and time.monotonic() - usage.ready_at >= WARM_S:
                    usage.first = sample
                usage.last = sample
        stop_event.wait(2.0)


def _available(gw: str, model: str) -> int:
    try:
        data = httpx.get(f"{gw}/v1/models", headers=AUTH, timeout=5).json()["data"]
    except (httpx.HTTPError, ValueError, KeyError):
        return 0
    return sum(1 for m in data if m["id"] == model and m.get("available"))


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def faults(run: Run, procs: dict[str, p.Proc], ready: set[int], model: str, duration: float, warmup: bytes) -> None:
    """The fault schedule, in its own thread: kill, drain and restart while the load runs.

    Each fault runs in its own thread at its own time (a slow drain does not push the next one), and
    the schedule returns when all three are done."""
    def restart(name: str, fault: Fault) -> None:
        procs[name].start()
        procs[name].wait_http("/ready", 180)
        assert procs[name].popen is not None
        # one request first, so the first inference's allocations are not counted as growth
        httpx.post(f"{procs[name].url}/v1/audio/transcriptions", headers=AUTH, timeout=300,
                   data={"model": model}, files={"file": ("warmup.wav", warmup, "audio/wav")})
        ready.add(procs[name].popen.pid)
        fault.until = run.now()

    def kill_engine_a() -> None:
        fault = Fault(run.now(), "sigkill", "engine-a")
        run.faults.append(fault)
        procs["engine-a"].kill()
        time.sleep(3)
        restart("engine-a", fault)

    def drain_engine_b() -> None:
        fault = Fault(run.now(), "sigterm", "engine-b")
        run.faults.append(fault)
        procs["engine-b"].stop(timeout=600)
        restart("engine-b", fault)

    def restart_gateway() -> None:
        fault = Fault(run.now(), "restart", "gateway")
        run.faults.append(fault)
        procs["gateway"].stop(timeout=60)
        procs["gateway"].start()
        procs["gateway"].wait_http("/health", 60)
        assert procs["gateway"].popen is not None
        ready.add(procs["gateway"].popen.pid)
        _wait(lambda: _available(procs["gateway"].url, model) >= 1, 30)
        fault.until = run.now()

    def later(fraction: float, action: Any) -> threading.Thread:
        def run_at() -> None:
            time.sleep(max(0.0, fraction * duration - run.now()))
            action()
        thread = threading.Thread(target=run_at, daemon=True)
        thread.start()
        return thread

    for thread in [later(0.2, kill_engine_a), later(0.45, drain_engine_b), later(0.7, restart_gateway)]:
        thread.join()


#: Refused before any work (429/503 + Retry-After; a session refused with 4029/4503): counted, not failures.
REFUSED = ("http_429", "http_503", "cut_4029", "cut_4503")


def classify(run: Run) -> None:
    """A failure is expected when a SIGKILLed engine or the restarting gateway explains it.

    A failure is judged by when it happened (its end): during a SIGKILL window (the kill until the
    gateway has dropped the dead instance: heartbeat timeout) or a gateway restart window (stop until
    it routes again: connection errors while no gateway listens). A SIGTERM explains no cut session:
    an engine drains its sessions, and so does the gateway the restart stops with SIGTERM (sessions
    relayed at the signal finish or are flushed, `dalston.gateway.client_session`).
    """
    windows = []
    for f in run.faults:
        if f.kind == "sigkill":
            windows.append((f.at - 0.1, f.at + HEARTBEAT_TIMEOUT + 1.0, None))
        elif f.kind == "restart":
            windows.append((f.at - 0.1, (f.until or f.at) + 1.0, f.at))
    for o in run.outcomes:
        if o.result in ("ok", "clear_error", "closed", *REFUSED):
            # refused before any work (429/503 + Retry-After; a session refused with 4029 because batch
            # requests hold the engine's one budget, or 4503 while it drains): counted, not a failure
            continue
        cut = o.result.startswith("cut_")  # a session open at the gateway's SIGTERM must not be: it drains
        o.expected = o.result.startswith(("conn_", "http_502", "cut_")) and any(
            start <= o.ended <= end and not (cut and sigterm is not None and o.started < sigterm)
            for start, end, sigterm in windows)


# ------------------------------------------------------------------------------------------ report
def summarize(run: Run, duration: float) -> dict[str, Any]:
    by_kind: dict[str, Counter[str]] = {}
    for o in run.outcomes:
        key = o.result if o.expected is None else f"{o.result} ({'expected' if o.expected else 'UNEXPECTED'})"
        by_kind.setdefault(o.kind, Counter())[key] += 1
    unexpected = [asdict(o) for o in run.outcomes if o.expected is False]
    wrong = [asdict(o) for o in run.outcomes if o.result == "wrong_text"]
    # 4029/4503 are refusals at admission (no audio was taken), not sessions cut by the drain
    sigterm_cut = [asdict(o) for o in run.outcomes if o.kind == "realtime" and o.result.startswith("cut_")
                   and o.result not in REFUSED and not o.expected
                   and any(f.kind in ("sigterm", "restart") and o.started <= f.at <= o.ended
                           for f in run.faults)]
    held = [asdict(o) for o in run.outcomes if o.result == "held"]
    closed = [o.ended - o.started for o in run.outcomes if o.kind == "slow" and o.result == "closed"]
    usage = {name: {"rss_mb_start": u.first[0] / 1024, "rss_mb_end": u.last[0] / 1024,
                    "fds_start": u.first[1], "fds_end": u.last[1]}
             for name, u in run.usage.items() if u.first and u.last}
    leaks = [name for name, u in usage.items()
             if u["rss_mb_end"] > 1.25 * u["rss_mb_start"] + 20 or u["fds_end"] > u["fds_start"] + 8]
    return {
        "duration_s": duration, "outcomes": {k: dict(v) for k, v in by_kind.items()},
        "faults": [asdict(f) for f in run.faults], "slow_closed_median_s": statistics.median(closed) if closed else None,
        "usage": usage,
        "violations": {"wrong_text": wrong, "unexpected_failures": unexpected, "sigterm_sessions_cut": sigterm_cut,
                       "held_connections": held, "resource_growth": leaks},
    }


def print_table(summary: dict[str, Any]) -> None:
    print(f"\nsoak {summary['duration_s']:.0f} s   faults: " +
          ", ".join(f"{f['kind']} {f['proc']} @{f['at']:.0f}s" for f in summary["faults"]))
    print(f"{'kind':10} {'result':44} {'count':>6}")
    for kind, counts in summary["outcomes"].items():
        for result, n in sorted(counts.items()):
            print(f"{kind:10} {result:44} {n:6d}")
    print(f"slow connections closed after median {summary['slow_closed_median_s']} s")
    print(f"\n{'process':34} {'RSS MB start':>12} {'end':>8} {'fds start':>10} {'end':>6}")
    for name, u in summary["usage"].items():
        print(f"{name:34} {u['rss_mb_start']:12.0f} {u['rss_mb_end']:8.0f} {u['fds_start']:10d} {u['fds_end']:6d}")
    bad = {k: len(v) for k, v in summary["violations"].items() if v}
    print("\ntargets: " + ("all met" if not bad else "MISSED " + ", ".join(f"{k}={n}" for k, n in bad.items())))


# ------------------------------------------------------------------------------------------- main
def _clip_wav(samples: np.ndarray) -> bytes:
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


async def load(run: Run, gw_url: str, model: str, clips: dict[str, tuple[bytes, str]], rt: tuple[np.ndarray, str],
               args: argparse.Namespace, stop: float) -> None:
    tasks = [batch_client(run, gw_url, model, clips, stop, k) for k in range(args.batch_clients)]
    tasks += [realtime_client(run, gw_url, model, rt[0], rt[1], stop) for _ in range(args.realtime_clients)]
    tasks.append(bad_client(run, gw_url, model, clips[sorted(clips)[0]][0], stop))
    await asyncio.gather(*tasks)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    ap.add_argument("--model", default="whisper-streaming-tiny-en", help="a streaming variant (batch + realtime)")
    ap.add_argument("--batch-clients", type=int, default=4)
    ap.add_argument("--realtime-clients", type=int, default=2)
    ap.add_argument("--slow-clients", type=int, default=4)
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--keep-work", action="store_true", help="keep the temp dir with the process logs")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="dalston-soak-"))
    engines = assets.engines_tree(work)
    models = work / "models"
    assets.model_dir_for(args.model, models, engines_root=engines)
    keys = work / "keys.txt"
    keys.write_text(hashlib.sha256(KEY.encode()).hexdigest() + "\n")
    env = p.base_env(engines, models)

    beckett = load_audio_16k(assets.speech_clip("beckett.wav"))
    two_cities = load_audio_16k(assets.speech_clip("two_cities.wav"))
    raw = {"short": beckett[: 16000 * 2], "beckett": beckett, "two_cities": two_cities}

    procs: dict[str, p.Proc] = {}
    stop_sampling = threading.Event()
    try:
        procs["gateway"] = p.gateway(env, keys, work, interval=HEARTBEAT_INTERVAL, timeout=HEARTBEAT_TIMEOUT).start()
        procs["gateway"].wait_http("/health", 60)
        for name in ("engine-a", "engine-b"):
            procs[name] = p.engine(args.model, env, keys, work, procs["gateway"].url, label=f"-{name[-1]}")
            # a drain window longer than the longest request, as the Kubernetes manifests give engines
            procs[name].args += ["--shutdown-timeout", "300"]
            procs[name].start()
        for name in ("engine-a", "engine-b"):
            procs[name].wait_http("/ready", 300)
        if not _wait(lambda: _available(procs["gateway"].url, args.model) >= 1, 30):
            raise RuntimeError("engines did not register with the gateway")
        # Reference texts: each clip once, straight to engine A, before any fault; engine B gets the same
        # requests so both are warm when resource sampling starts.
        clips: dict[str, tuple[bytes, str]] = {}
        for name, samples in raw.items():
            audio = _clip_wav(samples)
            for engine in ("engine-b", "engine-a"):
                r = httpx.post(f"{procs[engine].url}/v1/audio/transcriptions", headers=AUTH, timeout=300,
                               data={"model": args.model, "language": "en"},
                               files={"file": (name, audio, "audio/wav")})
                r.raise_for_status()
            clips[name] = (audio, r.json()["text"])
        ready = {proc.popen.pid for proc in procs.values() if proc.popen is not None}

        run = Run()
        sampling = threading.Thread(target=sampler, args=(run, procs, ready, stop_sampling), daemon=True)
        sampling.start()
        fault_thread = threading.Thread(target=faults, args=(run, procs, ready, args.model, args.duration, clips["short"][0]), daemon=True)
        fault_thread.start()
        slow = slow_clients(run, procs["gateway"].port, args.duration, args.slow_clients)
        asyncio.run(load(run, procs["gateway"].url, args.model, clips, (beckett, clips["beckett"][1]), args,
                         args.duration))
        fault_thread.join(300)
        for t in slow:
            t.join(HELD_AFTER + 5)
        stop_sampling.set()
        sampling.join(5)
        classify(run)
        summary = summarize(run, args.duration)
        summary.update({"model": args.model, "machine": platform.node(), "load_avg": os.getloadavg(),
                        "cpus": len(os.sched_getaffinity(0))})
    finally:
        stop_sampling.set()
        for proc in procs.values():
            proc.stop()
        if args.keep_work:
            print(f"work dir (logs): {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_table(summary)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.json}")
    return 1 if args.check and any(summary["violations"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
