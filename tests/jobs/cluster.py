"""A job deployment on loopback for tests and bench/jobs.py: real redis-server, gateway, orchestrator, queue workers.

Every piece is a real process started by its documented command (`dalston gateway --registry ...
--storage-dir ...`, `dalston orchestrator`, `dalston serve whisper-tiny-en --queue`), sharing one
storage directory and one Redis, with short visibility timeouts so reclaim happens in seconds.
"""

from __future__ import annotations

import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.fixtures import assets
from tests.fixtures.redis import RedisServer
from tests.fixtures.serving import free_port, write_keys_file
from tests.gateway import processes as p

KEY, OTHER_KEY = "dk_test", "dk_other"
AUTH, OTHER_AUTH = {"Authorization": f"Bearer {KEY}"}, {"Authorization": f"Bearer {OTHER_KEY}"}
WEBHOOK_SECRET = "test-webhook-secret"
MODEL = "whisper-tiny-en"


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]
    keys: Path
    redis: RedisServer
    gateway: p.Proc
    orchestrators: list[p.Proc] = field(default_factory=list)
    workers: list[p.Proc] = field(default_factory=list)
    visibility_timeout: float = 3.0
    chunk_seconds: float = 30.0
    orchestrator_extra: list[str] = field(default_factory=list)
    model: str = MODEL

    @property
    def url(self) -> str:
        return self.gateway.url

    def start_orchestrator(self) -> p.Proc:
        n, port = len(self.orchestrators), free_port()  # its /health, /ready, /metrics (not the shared default)
        proc = p.Proc(f"orchestrator{n}", ["orchestrator", "--port", str(port),
                                           "--visibility-timeout", str(self.visibility_timeout),
                                           "--chunk-seconds", str(self.chunk_seconds), "--webhook-backoff", "0.2",
                                           "--webhook-secret", WEBHOOK_SECRET, *self.orchestrator_extra],
                      self.env, self.root / f"orchestrator{n}.log", port).start()
        self.orchestrators.append(proc)
        wait_for(lambda: "orchestrator_started" in proc.log_text() or not proc.alive(), 30)
        assert proc.alive(), proc.log_text()[-3000:]
        return proc

    def start_worker(self, cpus: tuple[int, ...] | None = None) -> p.Proc:
        port = free_port()
        args = ["serve", self.model, "--host", "127.0.0.1", "--port", str(port), "--keys-file", str(self.keys),
                "--queue", "--visibility-timeout", str(self.visibility_timeout)]
        proc = p.Proc(f"worker{len(self.workers)}", args, self.env, self.root / f"worker{len(self.workers)}.log",
                      port, cpus).start()
        self.workers.append(proc)
        proc.wait_http("/ready", 120)
        wait_for(lambda: "queue_worker_started" in proc.log_text(), 30)
        return proc

    def live_workers(self) -> list[p.Proc]:
        return [w for w in self.workers if w.alive()]

    def stop(self) -> None:
        for proc in [*self.workers, *self.orchestrators, self.gateway]:
            proc.stop()
        self.redis.stop()

    # ------------------------------------------------------------------ client side
    def submit(self, audio: Path | bytes, *, auth: dict[str, str] = AUTH, model: str | None = None,
               **fields: Any) -> httpx.Response:
        data = audio.read_bytes() if isinstance(audio, Path) else audio
        form: dict[str, Any] = {"model": model or self.model, **fields}
        return httpx.post(f"{self.url}/v1/jobs", headers=auth, data=form, files={"file": ("audio.wav", data, "audio/wav")},
                          timeout=60)

    def job(self, job_id: str, auth: dict[str, str] = AUTH) -> dict[str, Any]:
        for _ in range(10):  # a 503 with Retry-After (Redis slow to answer on a loaded machine) is retried
            response = httpx.get(f"{self.url}/v1/jobs/{job_id}", headers=auth, timeout=10)
            if response.status_code != 503:
                break
            time.sleep(0.5)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def wait_status(self, job_id: str, statuses: set[str], timeout: float = 180) -> dict[str, Any]:
        body: dict[str, Any] = {}

        def reached() -> bool:
            nonlocal body
            body = self.job(job_id)
            return body["status"] in statuses

        wait_for(reached, timeout, lambda: f"job {job_id} stuck: {body}\n{self.logs()}")
        return body

    def logs(self) -> str:
        procs = [self.gateway, *self.orchestrators, *self.workers]
        return "\n".join(f"--- {proc.name}\n{proc.log_text()[-2500:]}" for proc in procs)


def start_cluster(root: Path, *, workers: int = 2, visibility_timeout: float = 3.0, chunk_seconds: float = 30.0,
                  worker_cpus: list[tuple[int, ...] | None] | None = None, model: str = MODEL,
                  orchestrator_extra: list[str] | None = None) -> Cluster:
    engines = assets.engines_tree(root)
    models = root / "models"
    assets.model_dir_for(model, models, engines_root=engines)
    keys = write_keys_file(root / "keys.txt", KEY, OTHER_KEY)
    redis = RedisServer(root / "redis", persistence=True).start()
    env = p.base_env(engines, models)
    env.update({"DALSTON_REGISTRY_URL": redis.url, "DALSTON_STORAGE_DIR": str(root / "storage")})
    gateway = p.gateway(env, keys, root, interval=0.5, timeout=2.0).start()
    cluster = Cluster(root, env, keys, redis, gateway, visibility_timeout=visibility_timeout,
                      chunk_seconds=chunk_seconds, orchestrator_extra=list(orchestrator_extra or []), model=model)
    try:
        gateway.wait_http("/health", 30)
        cluster.start_orchestrator()
        for n in range(workers):
            cluster.start_worker((worker_cpus or [None] * workers)[n])
    except BaseException:
        cluster.stop()
        raise
    return cluster


def wait_for(condition: Any, timeout: float, describe: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(describe() if describe else f"condition not met within {timeout}s")
        time.sleep(0.1)


def long_clip(path: Path, sequence: list[str], pause_s: float = 1.5) -> tuple[Path, list[str]]:
    """Real clips joined with `pause_s` of silence: the WAV and the reference words in order."""
    from dalston.audio import decode_audio

    parts, words = [], []
    silence = np.zeros(int(pause_s * 16000), np.float32)
    for name in sequence:
        parts += [decode_audio(assets.speech_clip(f"{name}.wav")).samples, silence]
        words += assets.reference_words(name)
    samples = np.concatenate(parts[:-1])
    pcm = (np.clip(samples, -1.0, 32767 / 32768) * 32768).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(pcm.tobytes())
    return path, words


#: About three minutes: 3 x two_cities (44 s) + 4 x beckett (10 s) + pauses.
THREE_MINUTES = ["two_cities", "beckett", "two_cities", "beckett", "two_cities", "beckett", "beckett"]
#: About a minute and a half, for the failure tests.
NINETY_SECONDS = ["two_cities", "beckett", "two_cities"]
