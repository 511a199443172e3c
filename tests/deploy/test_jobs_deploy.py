"""The batch-job parts of the generated deployments (docs/JOBS.md): Redis kept on disk, the
orchestrator, shared job storage, batch transcribers in queue mode, and KEDA waking them on their stream.
"""

from __future__ import annotations

import copy

import pytest
import yaml

from dalston.catalog import Catalog
from dalston.jobs.model import task_stream
from dalston.tools import deployment as d
from dalston.tools import generate_k8s
from tests.deploy import keda_schema

REPO = d.REPO_ROOT
K8S = REPO / "deploy" / "k8s"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def _env(container: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_compose_runs_the_documented_job_stack(catalog):
    services = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]
    # `docker compose up -d gateway orchestrator redis stt-batch-transcribe-whisper-large-v3`: all four exist
    named = ["gateway", "orchestrator", "redis", "stt-batch-transcribe-whisper-large-v3"]
    assert all(name in services and "profiles" not in services[name] for name in named)
    redis = services["redis"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert redis["volumes"] == ["redis-data:/data"]
    orchestrator = services["orchestrator"]
    prepare = next(e for e in catalog.engines.values() if e.stage == "prepare")
    assert orchestrator["image"] == d.image_name(prepare.spec)
    assert orchestrator["command"] == ["dalston", "orchestrator", "--host", "0.0.0.0", "--port", "8000"]
    # healthy = its /ready answers (the listener is up and Redis answers it), on the port it listens on
    assert orchestrator["healthcheck"]["test"][-1].endswith("urlopen('http://127.0.0.1:8000/ready', timeout=3)")
    for name in ("gateway", "orchestrator"):
        env = services[name]["environment"]
        assert env["DALSTON_REGISTRY_URL"] == "${DALSTON_REGISTRY_URL-redis://redis:6379/0}"
        assert env["DALSTON_STORAGE_DIR"] == d.JOBS_STORAGE_DIR
        assert f"jobs:{d.JOBS_STORAGE_DIR}" in services[name]["volumes"]
    for entry in catalog.engines.values():
        service = services[d.service_name(entry)]
        queued = d.takes_jobs(entry.spec)
        assert ("--queue" in service["command"]) == queued == (entry.stage == "transcribe")
        assert ("DALSTON_STORAGE_DIR" in service["environment"]) == queued
        assert (f"jobs:{d.JOBS_STORAGE_DIR}" in service["volumes"]) == queued


def test_k8s_orchestrator_storage_and_durable_redis(catalog):
    base = K8S / "base"
    resources = yaml.safe_load((base / "kustomization.yaml").read_text())["resources"]
    assert {"orchestrator-deployment.yaml", "jobs-pvc.yaml", "redis-pvc.yaml"} <= set(resources)
    jobs_pvc = yaml.safe_load((base / "jobs-pvc.yaml").read_text())
    assert jobs_pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    orch = yaml.safe_load((base / "orchestrator-deployment.yaml").read_text())
    assert orch["spec"]["replicas"] == d.load_defaults(catalog).orchestrator_replicas >= 2
    container = orch["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["dalston", "orchestrator", "--host", "0.0.0.0", "--port", "8000"]
    assert container["image"] == d.orchestrator_image(catalog)
    # probes and the scrape target are the listener `dalston orchestrator --port` opens
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    annotations = orch["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8000" and annotations["prometheus.io/path"] == "/metrics"
    env = _env(container)
    assert env["DALSTON_REGISTRY_URL"] == "redis://dalston-redis:6379/0" and env["DALSTON_STORAGE_DIR"] == d.JOBS_STORAGE_DIR
    assert env["DALSTON_WEBHOOK_SECRET"]["secretKeyRef"]["optional"] is True
    redis = yaml.safe_load((base / "redis-deployment.yaml").read_text())["spec"]["template"]["spec"]
    assert "--appendonly" in redis["containers"][0]["command"]
    assert redis["volumes"][0]["persistentVolumeClaim"]["claimName"] == "dalston-redis-data"
    claims = {}
    for path in [base / "gateway-deployment.yaml", base / "orchestrator-deployment.yaml",
                 *sorted((K8S / "variants").glob("*/deployment.yaml"))]:
        pod = yaml.safe_load(path.read_text())["spec"]["template"]["spec"]
        claims[path.parent.name if path.parent != base else path.stem] = any(
            v.get("persistentVolumeClaim", {}).get("claimName") == "dalston-jobs" for v in pod["volumes"])
    assert claims["gateway-deployment"] and claims["orchestrator-deployment"]
    for engine_id, entry in catalog.engines.items():
        assert claims[engine_id] == d.takes_jobs(entry.spec), engine_id


def test_batch_transcribers_scale_on_their_job_stream(catalog):
    for engine_id, entry in catalog.engines.items():
        scaled = yaml.safe_load((K8S / "variants" / engine_id / "scaledobject.yaml").read_text())
        streams = [t for t in scaled["spec"]["triggers"] if t["type"] == "redis-streams"]
        if not d.takes_jobs(entry.spec):
            assert streams == [], engine_id
            continue
        (trigger,) = streams
        assert trigger["metadata"]["stream"] == task_stream(engine_id)  # the stream `dalston serve --queue` reads
        # CPU pods take one chunk at a time (dalston/jobs/worker.py), GPU pods max_concurrency
        slots = 1 if entry.spec.container.gpu != "required" else entry.spec.capabilities.max_concurrency
        assert trigger["metadata"]["streamLength"] == str(slots)
        assert trigger["metadata"]["address"] == "dalston-redis:6379" and "consumerGroup" not in trigger["metadata"]
        assert keda_schema.problems(scaled) == []
        broken = copy.deepcopy(scaled)
        next(t for t in broken["spec"]["triggers"] if t["type"] == "redis-streams")["metadata"].pop("stream")
        assert any("'stream' is a required property" in p for p in keda_schema.problems(broken))


def test_only_batch_transcribers_may_scale_to_zero(catalog, tmp_path):
    text = (REPO / "deploy" / "defaults.yaml").read_text()
    zero = tmp_path / "defaults.yaml"
    zero.write_text(text.replace("  whisper-large-v3:\n    min_replicas: 1", "  whisper-large-v3:\n    min_replicas: 0"))
    defaults = d.load_defaults(catalog, zero)
    assert defaults.replicas("whisper-large-v3")[0] == 0
    scaled = generate_k8s.engine_scaled_object(catalog.engines["whisper-large-v3"], defaults)
    assert scaled["spec"]["minReplicaCount"] == 0 and keda_schema.problems(scaled) == []
    realtime = next(i for i, e in catalog.engines.items() if e.spec.is_streaming)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("autoscaling_overrides:\n", f"autoscaling_overrides:\n  {realtime}:\n    min_replicas: 0\n"))
    with pytest.raises(ValueError, match="0 only for batch transcription variants"):
        d.load_defaults(catalog, bad)
