"""`dalston orchestrator`'s /health, /ready and /metrics: a real orchestrator process, a real
redis-server and a real gateway (to submit the job), on loopback; no engine runs, so the job's
tasks stay in the variant's stream where the gauges can be checked.

A "dead orchestrator" is a consumer named `ghost` that reads the submitted event from the
`orchestrators` group and never acknowledges it, which is exactly what a SIGKILLed orchestrator
leaves behind; a "dead worker" likewise holds one task in the `workers` group.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dalston.jobs import model as m
from tests.fixtures import assets
from tests.fixtures.redis import RedisServer
from tests.fixtures.serving import free_port, write_keys_file
from tests.gateway import processes as p
from tests.jobs.cluster import AUTH, KEY, MODEL, wait_for


def metric(text: str, name: str, labels: str = "") -> float | None:
    """The value of one sample in a Prometheus text exposition, or None if it is absent."""
    pattern = rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else None


class Deployment:
    def __init__(self, root: Path) -> None:
        self.root = root
        engines = assets.engines_tree(root)
        self.redis = RedisServer(root / "redis").start()
        self.env = p.base_env(engines, root / "models")
        self.env.update({"DALSTON_REGISTRY_URL": self.redis.url, "DALSTON_STORAGE_DIR": str(root / "storage")})
        keys = write_keys_file(root / "keys.txt", KEY)
        self.gateway = p.gateway(self.env, keys, root).start()
        self.gateway.wait_http("/health", 30)
        self.orchestrator: p.Proc | None = None

    def start_orchestrator(self, *extra: str) -> p.Proc:
        port = free_port()
        proc = p.Proc("orchestrator", ["orchestrator", "--port", str(port), "--chunk-seconds", "5",
                                       "--visibility-timeout", "1", *extra],
                      self.env, self.root / "orchestrator.log", port).start()
        proc.wait_http("/health", 30)
        self.orchestrator = proc
        return proc

    def get(self, path: str) -> httpx.Response:
        assert self.orchestrator is not None
        return httpx.get(self.orchestrator.url + path, timeout=10)

    def stop(self) -> None:
        for proc in (self.orchestrator, self.gateway):
            if proc is not None:
                proc.stop()
        self.redis.stop()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    running = Deployment(tmp_path)
    try:
        yield running
    finally:
        running.stop()


def test_probes_and_metrics_follow_redis_and_the_jobs(deployment: Deployment, speech_clip) -> None:
    # A job submitted while no orchestrator runs, whose event a dead orchestrator then took and never acknowledged.
    submitted = httpx.post(f"{deployment.gateway.url}/v1/jobs", headers=AUTH, data={"model": MODEL},
                           files={"file": ("beckett.wav", speech_clip("beckett.wav").read_bytes(), "audio/wav")},
                           timeout=30)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    r = deployment.redis.client()
    r.xgroup_create(m.EVENTS_STREAM, m.ORCHESTRATOR_GROUP, id="0", mkstream=True)
    assert r.xreadgroup(m.ORCHESTRATOR_GROUP, "ghost", {m.EVENTS_STREAM: ">"}, count=1)
    assert r.scard(m.status_set_key("queued")) == 1

    orch = deployment.start_orchestrator()
    assert deployment.get("/health").json()["status"] == "ok"
    ready = deployment.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"

    # The live orchestrator reclaims the event after the 1 s visibility timeout and prepares the job.
    wait_for(lambda: r.hget(m.job_key(job_id), "status") == b"running", 30, orch.log_text)
    chunks = int(r.hget(m.job_key(job_id), "chunks_total"))
    assert chunks >= 2  # ~10 s of speech cut at <= 5 s
    # A dead worker holds one of the tasks.
    r.xgroup_create(m.task_stream(MODEL), m.WORKER_GROUP, id="0", mkstream=True)
    assert r.xreadgroup(m.WORKER_GROUP, "ghost", {m.task_stream(MODEL): ">"}, count=1)

    scraped = deployment.get("/metrics")
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    text = scraped.text
    assert metric(text, "dalston_orchestrator_redis_up") == 1
    assert metric(text, "dalston_jobs", 'status="running"') == 1
    assert metric(text, "dalston_jobs", 'status="queued"') == 0
    assert metric(text, "dalston_job_tasks_outstanding", f'engine_id="{MODEL}"') == chunks
    assert metric(text, "dalston_job_tasks_running", f'engine_id="{MODEL}"') == 1
    assert metric(text, "dalston_job_tasks_waiting", f'engine_id="{MODEL}"') == chunks - 1
    assert metric(text, "dalston_job_tasks_outstanding", 'engine_id="whisper-base"') == 0  # every batch variant
    assert metric(text, "dalston_job_reclaims_total", f'stream="{m.EVENTS_STREAM}"') == 1
    assert metric(text, "dalston_orchestrator_events_total", 'type="submitted"') == 1
    assert metric(text, "dalston_orchestrator_prepare_seconds_count") == 1

    # Cancel: the job leaves the running set and its tasks leave the stream (the gauges follow).
    assert httpx.delete(f"{deployment.gateway.url}/v1/jobs/{job_id}", headers=AUTH, timeout=10).status_code == 200
    wait_for(lambda: metric(deployment.get("/metrics").text, "dalston_orchestrator_jobs_finished_total",
                            'status="cancelled"') == 1, 30, orch.log_text)
    text = deployment.get("/metrics").text
    assert metric(text, "dalston_jobs", 'status="running"') == 0
    assert metric(text, "dalston_job_tasks_outstanding", f'engine_id="{MODEL}"') == 0

    # Redis goes away: not ready, still alive (a liveness restart would not bring Redis back), gauges say so.
    deployment.redis.stop()
    ready = deployment.get("/ready")
    assert ready.status_code == 503 and ready.json()["status"] == "redis_unavailable", ready.text
    assert deployment.get("/health").status_code == 200
    text = deployment.get("/metrics").text
    assert metric(text, "dalston_orchestrator_redis_up") == 0
    assert metric(text, "dalston_jobs", 'status="running"') is None  # no stale gauge while Redis is unknown
    assert metric(text, "dalston_orchestrator_events_total", 'type="submitted"') == 1  # own counters stay

    deployment.redis.start()
    wait_for(lambda: deployment.get("/ready").status_code == 200, 30, orch.log_text)

    # SIGTERM: a clean exit (0) and the listener closes with it.
    assert orch.popen is not None
    orch.popen.send_signal(signal.SIGTERM)
    assert orch.popen.wait(30) == 0, orch.log_text()[-2000:]
    with pytest.raises(httpx.ConnectError):
        deployment.get("/health")
    log = orch.log_text()
    assert f"orchestrator_http_listening host=127.0.0.1 port={orch.port}" in log and "Traceback" not in log


def test_a_taken_port_is_a_clear_error(deployment: Deployment) -> None:
    first = deployment.start_orchestrator()
    second = subprocess.run([sys.executable, "-m", "dalston.cli", "orchestrator", "--port", str(first.port)],
                            env=deployment.env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 2
    assert f"cannot listen on 127.0.0.1:{first.port}" in second.stderr and "Traceback" not in second.stderr
    assert first.alive()
