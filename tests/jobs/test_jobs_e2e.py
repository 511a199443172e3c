"""Batch jobs end to end: real redis-server, `dalston gateway`, `dalston orchestrator`, two
`dalston serve whisper-tiny-en --queue` workers (real weights), all real processes on loopback.

One module-scoped deployment serves every test, in order: the long file split and transcribed in
parallel, ownership, bad input, webhooks, cancel, then the failure tests (worker SIGKILL,
orchestrator SIGKILL, Redis restart with persistence), each of which leaves the deployment whole.
Visibility timeouts are 3 s so reclaims take seconds, not minutes.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from collections.abc import Iterator
from pathlib import Path

import httpx
import jiwer
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dalston.audio import wav_bytes
from dalston.jobs.model import DETECTED_LANGUAGE, job_key
from dalston.jobs.webhooks import SIGNATURE_HEADER, verify
from tests.fixtures import assets
from tests.fixtures.serving import serve_app
from tests.jobs import cluster as c

pytestmark = pytest.mark.slow

MAX_AUDIO_S = 240  # the deployment's job limit (orchestrator --max-audio-seconds): the long clip is ~182 s


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[c.Cluster]:
    running = c.start_cluster(tmp_path_factory.mktemp("jobs"), orchestrator_extra=["--max-audio-seconds", str(MAX_AUDIO_S)])
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[str]]]:
    root = tmp_path_factory.mktemp("clips")
    return {"long": c.long_clip(root / "three_minutes.wav", c.THREE_MINUTES),
            "medium": c.long_clip(root / "ninety_seconds.wav", c.NINETY_SECONDS)}


def wer(reference: list[str], text: str) -> float:
    return float(jiwer.wer(" ".join(reference), " ".join(assets.normalize_words(text))))


def result(cluster: c.Cluster, job_id: str, fmt: str = "verbose_json") -> httpx.Response:
    return httpx.get(f"{cluster.url}/v1/jobs/{job_id}/result", params={"format": fmt}, headers=c.AUTH, timeout=30)


def worker_chunks(cluster: c.Cluster, job_id: str) -> dict[str, list[int]]:
    """Chunks each worker finished for `job_id`, from its `task_done` log lines."""
    done: dict[str, list[int]] = {}
    for proc in cluster.workers:
        done[proc.name] = [int(n) for n in re.findall(rf"task_done job_id={job_id} chunk=(\d+)", proc.log_text())]
    return done


def most_tasks_at_once(proc: c.p.Proc, job_id: str) -> int:
    """The most chunks of `job_id` one worker ran at the same time, from its task_started/task_done log lines."""
    running = most = 0
    for event in re.findall(rf"task_(started|done) job_id={job_id} ", proc.log_text()):
        running += 1 if event == "started" else -1
        most = max(most, running)
    return most


def _log_time(line: str) -> float:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def task_time(cluster: c.Cluster, job_id: str, chunk: int, event: str) -> float:
    """When a worker logged task_<event> for `chunk` of `job_id` (the last time, if it ran twice)."""
    times = [_log_time(line) for w in cluster.workers for line in w.log_text().splitlines()
             if f"task_{event} job_id={job_id} chunk={chunk} " in line]
    return max(times)


def language_sources(cluster: c.Cluster, job_id: str) -> dict[int, str]:
    """chunk -> where its language came from (request, detected, chunk0), per its task_done log line."""
    return {int(n): src for w in cluster.workers
            for n, src in re.findall(rf"task_done job_id={job_id} chunk=(\d+) .*?language_from=(\w+)", w.log_text())}


def check_transcript(body: dict, reference: list[str], duration: float) -> None:
    segments, words = body["segments"], body["words"]
    times = [t for s in segments for t in (s["start"], s["end"])]
    assert times == sorted(times), "segment times go backwards across a seam"
    word_times = [t for w in words for t in (w["start"], w["end"])]
    assert word_times == sorted(word_times), "word times go backwards across a seam"
    assert [s["id"] for s in segments] == list(range(len(segments)))
    assert 0 <= times[0] and times[-1] <= duration + 0.01
    assert wer(reference, body["text"]) <= 0.1, body["text"]


def test_long_file_is_chunked_spread_over_both_workers_and_merged(cluster: c.Cluster, clips) -> None:
    path, reference = clips["long"]
    submitted = cluster.submit(path, response_format="verbose_json", **{"timestamp_granularities[]": ["word", "segment"]})
    assert submitted.status_code == 202, submitted.text
    assert submitted.json()["status"] == "queued" and submitted.headers["location"].endswith(submitted.json()["id"])
    job_id = submitted.json()["id"]
    body = cluster.wait_status(job_id, {"succeeded", "failed"})
    assert body["status"] == "succeeded", body
    assert body["progress"] == 1.0 and 175 < body["duration"] < 190
    assert body["chunks"]["total"] >= 6 and body["chunks"]["done"] == body["chunks"]["total"]
    assert set(body["stages"]) == {"queued", "prepare", "transcribe", "merge"}
    by_worker = worker_chunks(cluster, job_id)
    assert all(by_worker.values()), f"a worker got no chunk: {by_worker}"
    assert sorted(n for ns in by_worker.values() for n in ns) == list(range(body["chunks"]["total"]))
    # CPU workers take one chunk at a time although the variant allows 2 requests (dalston/jobs/worker.py)
    assert {most_tasks_at_once(w, job_id) for w in cluster.workers if by_worker[w.name]} == {1}
    # no language asked: chunk 0 detects it and records it on the job; chunks started after that use it
    assert language_sources(cluster, job_id)[0] == "detected"
    chunk0_done = task_time(cluster, job_id, 0, "done")
    later = {n: src for n, src in language_sources(cluster, job_id).items()
             if n > 0 and task_time(cluster, job_id, n, "started") > chunk0_done + 0.5}
    assert all(src == "chunk0" for src in later.values()), later
    assert cluster.redis.client().hget(job_key(job_id), DETECTED_LANGUAGE) in (b"en", "en")

    verbose = result(cluster, job_id)
    assert verbose.status_code == 200
    check_transcript(verbose.json(), reference, body["duration"])
    text = result(cluster, job_id, "text").text
    assert text.strip() == verbose.json()["text"]
    srt = result(cluster, job_id, "srt")
    assert srt.status_code == 200 and srt.text.startswith("1\n00:00:0")
    assert result(cluster, job_id, "vtt").text.startswith("WEBVTT")
    assert result(cluster, job_id, "mp3").status_code == 400

    listed = httpx.get(f"{cluster.url}/v1/jobs", headers=c.AUTH, params={"limit": 1}, timeout=10).json()
    assert listed["data"][0]["id"] == job_id and listed["object"] == "list"


def test_a_job_is_visible_only_to_its_key(cluster: c.Cluster, speech_clip) -> None:
    older = cluster.submit(speech_clip("beckett.wav")).json()["id"]  # so the owner has two pages on its own
    job_id = cluster.submit(speech_clip("beckett.wav")).json()["id"]
    cluster.wait_status(older, {"succeeded"})
    cluster.wait_status(job_id, {"succeeded"})
    for method, path in (("GET", ""), ("GET", "/result"), ("DELETE", "")):
        response = httpx.request(method, f"{cluster.url}/v1/jobs/{job_id}{path}", headers=c.OTHER_AUTH, timeout=10)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "job_not_found"
    others = httpx.get(f"{cluster.url}/v1/jobs", headers=c.OTHER_AUTH, timeout=10).json()["data"]
    assert job_id not in [j["id"] for j in others]
    assert httpx.get(f"{cluster.url}/v1/jobs/{job_id}", timeout=10).status_code == 401
    assert httpx.get(f"{cluster.url}/v1/jobs/job_{'0' * 32}", headers=c.AUTH, timeout=10).status_code == 404
    # the owner's pages: newest first, `after` continues where the last page stopped
    first = httpx.get(f"{cluster.url}/v1/jobs", headers=c.AUTH, params={"limit": 1}, timeout=10).json()
    assert first["data"][0]["id"] == job_id and first["has_more"]
    second = httpx.get(f"{cluster.url}/v1/jobs", headers=c.AUTH, params={"limit": 1, "after": job_id}, timeout=10).json()
    assert second["data"][0]["id"] == older


def test_bad_input_is_refused_at_submit_or_fails_the_job_clearly(cluster: c.Cluster, speech_clip, tmp_path) -> None:
    beckett = speech_clip("beckett.wav")
    cases = [({"model": "no-such-model"}, 404, "model_not_found"),
             ({"model": "whisper-streaming-base"}, 400, "unsupported_model"),
             ({"response_format": "mp3"}, 400, "invalid_response_format"),
             ({"temperature": "7"}, 400, "invalid_temperature"),
             ({"language": "fr"}, 400, "unsupported_language"),  # tiny.en is English only
             ({"task": "translate"}, 400, "unsupported_option"),
             ({"webhook_url": "ftp://example"}, 400, "invalid_webhook_url")]
    for fields, status, code in cases:
        response = cluster.submit(beckett, **fields)
        assert response.status_code == status and response.json()["error"]["code"] == code, (fields, response.text)
    no_file = httpx.post(f"{cluster.url}/v1/jobs", headers=c.AUTH, data={"model": c.MODEL},
                         files={"other": ("x", b"x")}, timeout=10)
    assert no_file.status_code == 400 and no_file.json()["error"]["code"] == "missing_file"
    empty = cluster.submit(b"")
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "empty_file"

    junk = cluster.submit(bytes(range(256)) * 64)
    assert junk.status_code == 202
    failed = cluster.wait_status(junk.json()["id"], {"failed", "succeeded"}, timeout=60)
    assert failed["status"] == "failed" and failed["error"]["code"] == "invalid_audio", failed
    assert "not decodable audio" in failed["error"]["message"] or "not a recognised" in failed["error"]["message"]
    refused = result(cluster, junk.json()["id"])
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "job_not_succeeded"

    noise = np.random.default_rng(0).normal(0, 0.01, (MAX_AUDIO_S + 10) * 16000)
    too_long = cluster.submit(wav_bytes(noise.astype(np.float32)))
    failed = cluster.wait_status(too_long.json()["id"], {"failed", "succeeded"}, timeout=60)
    assert failed["status"] == "failed" and failed["error"]["code"] == "audio_too_long", failed
    assert f"at most {MAX_AUDIO_S} s" in failed["error"]["message"]


def test_webhook_is_signed_and_retried_until_delivered(cluster: c.Cluster, speech_clip) -> None:
    received: list[tuple[bytes, str | None, int]] = []

    async def hook(request: Request) -> Response:
        body = await request.body()
        status = 500 if len(received) < 2 else 200  # fail twice, accept the third
        received.append((body, request.headers.get(SIGNATURE_HEADER), status))
        return Response(status_code=status)

    with serve_app(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as hook_url:
        job_id = cluster.submit(speech_clip("beckett.wav"), webhook_url=f"{hook_url}/hook").json()["id"]
        cluster.wait_status(job_id, {"succeeded"})
        c.wait_for(lambda: len(received) >= 3 and len(cluster.job(job_id)["webhook"]["deliveries"]) >= 3, 30)
        time.sleep(0.5)
    assert [status for _, _, status in received] == [500, 500, 200]
    for body, signature, _ in received:
        assert verify(c.WEBHOOK_SECRET, body, signature)
        assert not verify("another-secret", body, signature)
        payload = json.loads(body)
        assert payload["id"] == job_id and payload["status"] == "succeeded"
    deliveries = cluster.job(job_id)["webhook"]["deliveries"]
    assert [(d["attempt"], d["status_code"], d["delivered"]) for d in deliveries] == \
        [(1, 500, False), (2, 500, False), (3, 200, True)]


def test_cancel_stops_the_job_and_empties_the_stream(cluster: c.Cluster, clips) -> None:
    path, _ = clips["long"]
    job_id = cluster.submit(path).json()["id"]
    cluster.wait_status(job_id, {"running"}, timeout=60)
    cancelled = httpx.delete(f"{cluster.url}/v1/jobs/{job_id}", headers=c.AUTH, timeout=10)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    again = httpx.delete(f"{cluster.url}/v1/jobs/{job_id}", headers=c.AUTH, timeout=10)
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_not_cancellable"
    redis = cluster.redis.client()
    stream = f"dalston:tasks:{c.MODEL}"
    # tasks already running finish (their results are dropped); nothing stays queued or pending
    c.wait_for(lambda: redis.xlen(stream) == 0 and redis.xpending(stream, "workers")["pending"] == 0, 30)
    time.sleep(1.0)
    started = sum(len(re.findall(rf"task_started job_id={job_id} ", w.log_text())) for w in cluster.workers)
    body = cluster.job(job_id)
    assert body["status"] == "cancelled" and started < body["chunks"]["total"], (started, body)
    assert result(cluster, job_id).status_code == 409


def test_a_killed_worker_holding_a_task_loses_nothing(cluster: c.Cluster, clips) -> None:
    path, reference = clips["medium"]
    job_id = cluster.submit(path, response_format="verbose_json", **{"timestamp_granularities[]": ["word", "segment"]}).json()["id"]
    victim = cluster.live_workers()[0]
    c.wait_for(lambda: f"task_started job_id={job_id}" in victim.log_text(), 60, cluster.logs)
    victim.kill()  # SIGKILL while it holds (at least) one task
    body = cluster.wait_status(job_id, {"succeeded", "failed"}, timeout=120)
    assert body["status"] == "succeeded", body
    survivor_logs = "".join(w.log_text() for w in cluster.live_workers())
    assert "task_reclaimed" in survivor_logs
    chunks = worker_chunks(cluster, job_id)
    finished = sorted(n for ns in chunks.values() for n in ns)
    assert set(finished) == set(range(body["chunks"]["total"]))  # nothing lost (a reclaimed chunk may run twice)
    merged = result(cluster, job_id).json()
    check_transcript(merged, reference, body["duration"])  # ... and nothing duplicated in the text
    assert len(assets.normalize_words(merged["text"])) <= len(reference) + 3
    cluster.start_worker()


def test_a_killed_orchestrator_is_replaced_and_the_job_completes(cluster: c.Cluster, clips) -> None:
    path, reference = clips["medium"]
    job_id = cluster.submit(path).json()["id"]
    cluster.wait_status(job_id, {"running"}, timeout=60)
    for proc in cluster.orchestrators:
        proc.kill()
    time.sleep(1.0)
    cluster.start_orchestrator()
    body = cluster.wait_status(job_id, {"succeeded", "failed"}, timeout=120)
    assert body["status"] == "succeeded", body
    assert wer(reference, result(cluster, job_id, "text").text) <= 0.1


def test_a_task_that_no_worker_finishes_fails_its_job_after_the_delivery_limit(cluster: c.Cluster, speech_clip) -> None:
    """Workers that take a task and die every time (here: a consumer that reads and never acknowledges,
    as a SIGKILLed worker leaves it) do not loop forever: the 4th delivery fails the job (worker_lost)."""
    for proc in cluster.live_workers():
        proc.stop()
    job_id = cluster.submit(speech_clip("beckett.wav")).json()["id"]
    cluster.wait_status(job_id, {"running"}, timeout=60)
    redis, stream = cluster.redis.client(), f"dalston:tasks:{c.MODEL}"
    assert redis.xreadgroup("workers", "ghost-1", {stream: ">"}, count=1)  # delivery 1, never acknowledged
    for n in (2, 3):  # two more crashed takers, each after the visibility timeout
        time.sleep(cluster.visibility_timeout + 0.5)
        assert redis.xautoclaim(stream, "workers", f"ghost-{n}", int(cluster.visibility_timeout * 1000))[1]
    worker = cluster.start_worker()  # reclaims it as delivery 4 > 3 and gives up
    body = cluster.wait_status(job_id, {"failed", "succeeded"}, timeout=60)
    assert body["status"] == "failed" and body["error"]["code"] == "worker_lost", body
    assert "never finished it" in body["error"]["message"]
    assert f"task_started job_id={job_id}" not in worker.log_text()
    c.wait_for(lambda: redis.xlen(stream) == 0 and redis.xpending(stream, "workers")["pending"] == 0, 10)


def test_engine_errors_are_retried_up_to_the_limit_then_fail_the_job(cluster: c.Cluster, speech_clip) -> None:
    """The orchestrator's side of a failing engine: each `chunk_failed` event, sent exactly as
    dalston/jobs/worker.py `_report_failure` sends it (task taken off the stream, event with the
    task, code, error, retryable=1), re-enqueues the chunk with the next attempt; the third fails the job."""
    for proc in cluster.live_workers():
        proc.stop()
    job_id = cluster.submit(speech_clip("beckett.wav")).json()["id"]
    cluster.wait_status(job_id, {"running"}, timeout=60)
    redis, stream = cluster.redis.client(), f"dalston:tasks:{c.MODEL}"
    for attempt in (1, 2, 3):
        c.wait_for(lambda: redis.xlen(stream) == 1, 10)
        ((entry_id, fields),) = redis.xrange(stream)
        task = json.loads(fields[b"task"])
        assert task["attempt"] == attempt and fields[b"job"].decode() == job_id
        pipe = redis.pipeline(transaction=True)
        pipe.xadd("dalston:events", {"type": "chunk_failed", "job": job_id, "task": fields[b"task"],
                                     "code": "engine_error", "error": f"RuntimeError: CUDA out of memory ({attempt})",
                                     "retryable": "1", "worker": "test"})
        pipe.srem(f"dalston:job:{job_id}:tasks", entry_id)
        pipe.xdel(stream, entry_id)
        pipe.execute()
    body = cluster.wait_status(job_id, {"failed", "succeeded"}, timeout=30)
    assert body["status"] == "failed" and body["error"]["code"] == "engine_error", body
    assert "after 3 attempt(s): RuntimeError: CUDA out of memory (3)" in body["error"]["message"]
    assert redis.xlen(stream) == 0


def test_queued_jobs_survive_a_redis_restart_with_persistence(cluster: c.Cluster, clips) -> None:
    for proc in cluster.live_workers():
        proc.stop()
    path, reference = clips["medium"]
    job_id = cluster.submit(path).json()["id"]
    body = cluster.wait_status(job_id, {"running"}, timeout=60)  # prepared: its tasks wait in the stream
    assert body["chunks"]["done"] == 0
    cluster.redis.stop()
    time.sleep(2.0)  # an outage the orchestrator notices (a quicker restart is hidden by the client's retry)
    cluster.redis.start()
    assert cluster.redis.client().xlen(f"dalston:tasks:{c.MODEL}") == body["chunks"]["total"]
    for _ in range(2):
        cluster.start_worker()
    body = cluster.wait_status(job_id, {"succeeded", "failed"}, timeout=120)
    assert body["status"] == "succeeded", body
    assert wer(reference, result(cluster, job_id, "text").text) <= 0.1
    orchestrator_log = cluster.orchestrators[-1].log_text()
    # the outage was noticed and its end too (a loaded machine may add short outages of its own)
    assert "redis_unavailable" in orchestrator_log
    assert orchestrator_log.rindex("redis_available") > orchestrator_log.rindex("redis_unavailable")
    assert cluster.gateway.alive() and cluster.orchestrators[-1].alive()


def test_cli_submits_follows_progress_and_writes_the_result(cluster: c.Cluster, speech_clip, tmp_path) -> None:
    import subprocess
    import sys

    out = tmp_path / "beckett.srt"
    base = [sys.executable, "-m", "dalston.cli", "jobs", "--url", cluster.url, "--api-key", c.KEY]
    done = subprocess.run([*base, "submit", str(speech_clip("beckett.wav")), "--model", c.MODEL, "--format", "srt",
                           "-o", str(out)], env=cluster.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "100% succeeded chunks 1/1" in done.stderr
    assert out.read_text().startswith("1\n00:00:00,000 --> ") and "fail better" in out.read_text().lower()
    missing = subprocess.run([*base, "status", "job_" + "1" * 32], env=cluster.env, capture_output=True, text=True,
                             timeout=30)
    assert missing.returncode == 1 and missing.stderr.startswith("dalston jobs: HTTP 404 job_not_found:")
    assert "Traceback" not in missing.stderr
    nowhere = subprocess.run([sys.executable, "-m", "dalston.cli", "jobs", "--url", "http://127.0.0.1:9", "list"],
                             env=cluster.env, capture_output=True, text=True, timeout=30)
    assert nowhere.returncode == 1 and "cannot reach the gateway" in nowhere.stderr

    # `dalston transcribe --job URL` is the same client: a job with progress, the result written like a local run
    vtt = tmp_path / "beckett.vtt"
    as_job = subprocess.run([sys.executable, "-m", "dalston.cli", "transcribe", str(speech_clip("beckett.wav")),
                             "--job", cluster.url, "--api-key", c.KEY, "--model", c.MODEL, "--format", "vtt",
                             "-o", str(vtt)], env=cluster.env, capture_output=True, text=True, timeout=120)
    assert as_job.returncode == 0, as_job.stderr
    assert "100% succeeded chunks 1/1" in as_job.stderr
    assert vtt.read_text().startswith("WEBVTT") and "fail better" in vtt.read_text().lower()
    submitted = re.search(r"(job_[0-9a-f]{32}) \[", as_job.stderr)
    assert submitted and cluster.job(submitted.group(1))["response_format"] == "vtt"
    local_only = subprocess.run([sys.executable, "-m", "dalston.cli", "transcribe", str(speech_clip("beckett.wav")),
                                 "--job", cluster.url, "--hotwords", "Beckett"], env=cluster.env, capture_output=True,
                                text=True, timeout=60)
    assert local_only.returncode == 2 and "--hotwords apply to in-process transcription only" in local_only.stderr
