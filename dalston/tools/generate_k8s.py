"""Generate Kubernetes manifests from the variant files, in a kustomize layout under deploy/k8s/.

    python -m dalston.tools.generate_k8s [--output deploy/k8s] [--check]

Layout:
    base/                 the gateway (Deployment with `gateway_replicas` replicas, RollingUpdate,
                          PodDisruptionBudget, Service) and the Redis its replicas share their
                          registry through (Deployment + Service `dalston-redis`)
                          with an append-only file on its own volume (`dalston-redis-data`), and batch
                          jobs (docs/JOBS.md): the orchestrator Deployment and the ReadWriteMany volume
                          `dalston-jobs` the gateway, orchestrators and batch transcribers share
    variants/<id>/        one engine variant: Deployment, Service, KEDA ScaledObject, kustomization.yaml
    kustomization.yaml    base + the default variants (deploy/defaults.yaml); add others with
                          `resources: [- variants/<id>]` in an overlay of your own

Engines scale on the work waiting, not on CPU: each variant's ScaledObject asks Prometheus for the
queued + in-flight requests (+ active realtime sessions) of all its pods and targets the variant's
`max_concurrency` per replica, between the min/max of deploy/defaults.yaml (per-variant
overrides there). Variants that run on CPU here also get a CPU-utilisation trigger in the same
ScaledObject (KEDA owns the HPA of its target; a second, hand-made HPA would fight it). GPU variants
do not: their work is on the GPU, and the CPU of their pod says nothing about it. Batch transcribers
also scale on their job stream (a `redis-streams` trigger on its length: acknowledged tasks are
deleted, so the length is the chunks waiting or running), which is what wakes a variant whose
`min_replicas` is 0 when a job arrives.

Everything a variant needs comes from its spec: memory request (hardware.min_ram_gb) and limit
(container.memory), `nvidia.com/gpu` and a node affinity on NVIDIA GPU feature discovery's
`nvidia.com/gpu.product` label when the GPU is required, a startup probe sized from the warm start
latency. Secrets the operator creates: `dalston-internal` (key `token`) and `dalston-keys` (key `keys.txt`);
optionally `dalston-webhook` (key `secret`) to sign job webhooks.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any


from dalston.catalog import Catalog, CatalogEntry, SpecInvalid
from dalston.tools import deployment as d

OUTPUT = d.REPO_ROOT / "deploy" / "k8s"
INTERNAL_SECRET = "dalston-internal"
KEYS_SECRET = "dalston-keys"
KEYS_DIR = "/etc/dalston/keys"
GATEWAY_NAME = "dalston-gateway"
GATEWAY_PODS_NAME = "dalston-gateway-pods"  # headless: its DNS name lists every ready gateway pod
REDIS_NAME = "dalston-redis"
ORCHESTRATOR_NAME = "dalston-orchestrator"
JOBS_PVC = "dalston-jobs"
REDIS_PVC = "dalston-redis-data"
REDIS_STORAGE = "5Gi"
WEBHOOK_SECRET = "dalston-webhook"
PRESTOP_SLEEP_S = 5
#: Kept from the termination grace period for the realtime flush after the drain deadline and the exit.
DRAIN_MARGIN_S = 20
#: Termination grace periods. Streaming sessions may run for long: give them time to finish after
#: SIGTERM (the engine stops taking new work and deregisters at once, so nothing new reaches it
#: meanwhile). The gateway relays those sessions, so a gateway pod gets the same time as a realtime
#: engine: a rolling update of the gateway cuts no session an engine rollout would have let finish.
GRACE_BATCH_S = 120
GRACE_REALTIME_S = 300
KEDA_POLLING_S = 15
KEDA_COOLDOWN_S = 300


def _labels(component: str, engine_id: str | None = None, stage: str | None = None) -> dict[str, str]:
    labels = {"app.kubernetes.io/name": "dalston", "app.kubernetes.io/component": component}
    if engine_id:
        labels["dalston.dev/engine-id"] = engine_id
    if stage:
        labels["dalston.dev/stage"] = stage
    return labels


def _secret_env() -> list[dict[str, Any]]:
    return [
        {"name": "DALSTON_INTERNAL_TOKEN",
         "valueFrom": {"secretKeyRef": {"name": INTERNAL_SECRET, "key": "token"}}},
        {"name": "DALSTON_KEYS_FILE", "value": f"{KEYS_DIR}/keys.txt"},
    ]


def _keys_volume() -> tuple[dict[str, Any], dict[str, Any]]:
    return ({"name": "keys", "secret": {"secretName": KEYS_SECRET}},
            {"name": "keys", "mountPath": KEYS_DIR, "readOnly": True})


def _jobs_volume() -> tuple[dict[str, Any], dict[str, Any]]:
    """The ReadWriteMany job storage (uploads, chunks, results) every job process mounts."""
    return ({"name": "jobs", "persistentVolumeClaim": {"claimName": JOBS_PVC}},
            {"name": "jobs", "mountPath": d.JOBS_STORAGE_DIR})


def _jobs_env() -> list[dict[str, Any]]:
    return [{"name": "DALSTON_REGISTRY_URL", "value": d.registry_url(REDIS_NAME)},
            {"name": "DALSTON_STORAGE_DIR", "value": d.JOBS_STORAGE_DIR}]


def _drain_env(grace: int) -> dict[str, Any]:
    """The SIGTERM drain budget (requests, realtime sessions) that fits the grace period after preStop."""
    return {"name": "DALSTON_SHUTDOWN_TIMEOUT", "value": str(grace - PRESTOP_SLEEP_S - DRAIN_MARGIN_S)}


def _http_probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "timeoutSeconds": 3,
            "failureThreshold": failures}


def _service(name: str, labels: dict[str, str], port: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels},
            "spec": {"type": "ClusterIP", "selector": labels,
                     "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]}}


def _headless(service: dict[str, Any]) -> dict[str, Any]:
    service["spec"]["clusterIP"] = "None"
    return service


def engine_deployment(entry: CatalogEntry) -> dict[str, Any]:
    spec = entry.spec
    name = d.service_name(entry)
    labels = _labels("engine", spec.id, entry.stage)
    volume, mount = _keys_volume()
    resources: dict[str, Any] = {
        "requests": {"memory": d.gib(spec.hardware.min_ram_gb), "cpu": "1"},
        "limits": {"memory": d.k8s_quantity(spec.container.memory)},
    }
    pod: dict[str, Any] = {}
    if spec.container.gpu == "required":
        resources["limits"]["nvidia.com/gpu"] = 1
        products = [label for gpu in spec.hardware.recommended_gpu for label in d.GPU_PRODUCT_LABELS[gpu]]
        pod["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": products}]}]}}}
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    warm_s = (spec.performance.warm_start_latency_ms or 10_000) / 1000
    grace = GRACE_REALTIME_S if spec.is_streaming else GRACE_BATCH_S
    container: dict[str, Any] = {
        "name": "engine",
        "image": d.image_name(spec),
        "command": d.engine_command(spec),
        "ports": [{"name": "http", "containerPort": d.ENGINE_PORT, "protocol": "TCP"}],
        "env": [
            {"name": "ENGINE_ID", "value": spec.id},
            _drain_env(grace),
            # Every gateway pod gets the registration and the heartbeats (not one per heartbeat through
            # the Service), so each replica keeps knowing every engine first-hand while Redis is down.
            {"name": "DALSTON_GATEWAY_URL", "value": f"http://{GATEWAY_PODS_NAME}:{d.GATEWAY_PORT}"},
            {"name": "DALSTON_GATEWAY_EACH_ADDRESS", "value": "1"},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "DALSTON_ADVERTISE_URL", "value": f"http://$(POD_IP):{d.ENGINE_PORT}"},
            *_secret_env(),
            {"name": "HF_HUB_OFFLINE", "value": "1"},
        ],
        "resources": resources,
        "startupProbe": _http_probe("/health", 5, max(12, math.ceil(4 * warm_s / 5))),
        "readinessProbe": _http_probe("/ready", 5, 2),
        "livenessProbe": _http_probe("/health", 10, 3),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_S}}},
        "volumeMounts": [mount],
    }
    pod.update({"terminationGracePeriodSeconds": grace, "containers": [container], "volumes": [volume]})
    if d.takes_jobs(spec):  # `--queue`: job chunks from its Redis stream, audio from the shared volume
        jobs_volume, jobs_mount = _jobs_volume()
        container["env"] += _jobs_env()
        container["volumeMounts"].append(jobs_mount)
        pod["volumes"].append(jobs_volume)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            # No `replicas`: the ScaledObject owns the count (a fixed one would be reset on every apply).
            "spec": {"selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels, "annotations": {
                         "prometheus.io/scrape": "true", "prometheus.io/port": str(d.ENGINE_PORT),
                         "prometheus.io/path": "/metrics"}}, "spec": pod}}}


def work_query(entry: CatalogEntry) -> str:
    """PromQL: the work waiting on all pods of this variant (the engines' own gauges, joined to their
    `dalston_engine_info{engine_id=...}` on namespace and pod so that no relabelling is needed)."""
    work = "dalston_requests_queued + dalston_requests_in_flight"
    if entry.spec.is_streaming:
        work += " + dalston_realtime_sessions_active"
    return (f'sum(({work}) * on(namespace, pod) group_left() '
            f'dalston_engine_info{{engine_id="{entry.spec.id}"}})')


def engine_scaled_object(entry: CatalogEntry, defaults: d.Defaults) -> dict[str, Any]:
    """KEDA ScaledObject: replicas = ceil(work waiting / max_concurrency), within the variant's bounds."""
    spec = entry.spec
    name = d.service_name(entry)
    low, high = defaults.replicas(spec.id)
    triggers: list[dict[str, Any]] = [{
        "type": "prometheus", "name": "work-waiting", "metricType": "AverageValue",
        "metadata": {"serverAddress": defaults.prometheus_url, "query": work_query(entry),
                     "threshold": str(spec.capabilities.max_concurrency), "ignoreNullValues": "true"}}]
    if d.takes_jobs(spec):
        triggers.append(job_stream_trigger(entry))
    if d.runs_on_cpu(spec):
        triggers.append({"type": "cpu", "name": "cpu", "metricType": "Utilization",
                         "metadata": {"value": str(defaults.cpu_utilization), "containerName": "engine"}})
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": name, "labels": _labels("engine", spec.id, entry.stage)},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "pollingInterval": KEDA_POLLING_S, "cooldownPeriod": KEDA_COOLDOWN_S,
                     "minReplicaCount": low, "maxReplicaCount": high,
                     # No `fallback`: with Prometheus unreachable the HPA gets no value for this
                     # metric and holds the current size (it never scales down on a missing metric),
                     # where a fixed fallback would jump GPU variants to some guess.
                     "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
                         # Engines are slow to start (weights): scale up at once, down only after a
                         # quiet period, one pod at a time.
                         "scaleDown": {"stabilizationWindowSeconds": KEDA_COOLDOWN_S,
                                       "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}}},
                     "triggers": triggers}}


def job_stream_trigger(entry: CatalogEntry) -> dict[str, Any]:
    """KEDA `redis-streams` on the variant's job stream: replicas = ceil(chunks outstanding / chunks per replica).

    Chunks per replica is `deployment.queue_slots`: one on CPU pods, `max_concurrency` on GPU pods.

    The stream-length mode (no consumer group): workers delete what they acknowledge, so XLEN counts
    exactly the chunks waiting or running, and it is non-zero from the moment a job is prepared —
    pending-entries mode would read 0 for tasks no worker has taken yet, and so could not wake a
    variant that scaled to zero.
    """
    from dalston.jobs.model import task_stream

    return {"type": "redis-streams", "name": "jobs-waiting", "metricType": "AverageValue",
            "metadata": {"address": f"{REDIS_NAME}:{d.REDIS_PORT}", "stream": task_stream(entry.spec.id),
                         "streamLength": str(d.queue_slots(entry.spec)), "databaseIndex": "0"}}


def gateway_deployment(defaults: d.Defaults) -> dict[str, Any]:
    labels = _labels("gateway")
    volume, mount = _keys_volume()
    container = {
        "name": "gateway", "image": d.gateway_image(), "command": d.gateway_command(),
        "ports": [{"name": "http", "containerPort": d.GATEWAY_PORT, "protocol": "TCP"}],
        "env": [*_secret_env(), *_jobs_env(), _drain_env(GRACE_REALTIME_S)],
        "resources": {"requests": {"memory": "256Mi", "cpu": "500m"}, "limits": {"memory": "1Gi"}},
        "readinessProbe": _http_probe("/ready", 5, 2),
        "livenessProbe": _http_probe("/health", 10, 3),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_S}}},
        "volumeMounts": [mount, _jobs_volume()[1]],
    }
    # Several replicas share the registry through Redis (DALSTON_REGISTRY_URL): any replica routes
    # to every engine, so a rolling update replaces them one at a time with no gap in routing; the
    # old pod drains (dalston.gateway.main): /ready 503, relayed sessions finish or get 1001.
    spread = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                           "labelSelector": {"matchLabels": labels}}}]}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": GATEWAY_NAME, "labels": labels},
            "spec": {"replicas": defaults.gateway_replicas,
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                     "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels, "annotations": {
                         "prometheus.io/scrape": "true", "prometheus.io/port": str(d.GATEWAY_PORT)}},
                         "spec": {"terminationGracePeriodSeconds": GRACE_REALTIME_S, "affinity": spread,
                                  "containers": [container], "volumes": [volume, _jobs_volume()[0]]}}}}


def gateway_pdb(defaults: d.Defaults) -> dict[str, Any]:
    """Voluntary disruptions (node drains) leave at least one gateway replica serving."""
    labels = _labels("gateway")
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": GATEWAY_NAME, "labels": labels},
            "spec": {"minAvailable": max(1, defaults.gateway_replicas - 1), "selector": {"matchLabels": labels}}}


def redis_deployment() -> dict[str, Any]:
    """One Redis for the shared registry; use a managed one instead by pointing DALSTON_REGISTRY_URL at it."""
    labels = _labels("redis")
    container = {
        "name": "redis", "image": d.REDIS_IMAGE, "command": d.REDIS_COMMAND,
        "ports": [{"name": "redis", "containerPort": d.REDIS_PORT, "protocol": "TCP"}],
        "resources": {"requests": {"memory": "64Mi", "cpu": "100m"}, "limits": {"memory": "256Mi"}},
        "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 5, "timeoutSeconds": 2},
        "livenessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 10, "failureThreshold": 3},
        "volumeMounts": [{"name": "data", "mountPath": d.REDIS_DATA_DIR}],
    }
    pod = {"containers": [container], "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": REDIS_PVC}}]}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": REDIS_NAME, "labels": labels},
            "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": pod}}}


def _pvc(name: str, component: str, access: str, size: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "labels": _labels(component)},
            "spec": {"accessModes": [access], "resources": {"requests": {"storage": size}}}}


def orchestrator_deployment(catalog: Catalog, defaults: d.Defaults) -> dict[str, Any]:
    """`dalston orchestrator` replicas (they share the work through Redis; any may die)."""
    labels = _labels("orchestrator")
    # Prepare streams: each of its (at most 2) running prepares holds about one chunk span of float32
    # (~35 MB at the default 300 s chunks, docs/JOBS.md), whatever the file's length, so the limit does
    # not grow with `max_audio_duration`: the interpreter, PyAV and two prepares fit in 1 GiB.
    jobs_volume, jobs_mount = _jobs_volume()
    container = {
        "name": "orchestrator", "image": d.orchestrator_image(catalog), "command": d.orchestrator_command(),
        "env": [*_jobs_env(), {"name": "DALSTON_WEBHOOK_SECRET", "valueFrom": {"secretKeyRef": {
            "name": WEBHOOK_SECRET, "key": "secret", "optional": True}}}],
        "ports": [{"name": "http", "containerPort": d.ORCHESTRATOR_PORT, "protocol": "TCP"}],
        "resources": {"requests": {"memory": "512Mi", "cpu": "500m"}, "limits": {"memory": "1Gi"}},
        # /ready: Redis answers (a rollout waits for it); /health never depends on Redis, so an outage
        # does not restart every orchestrator (they retry on their own).
        "readinessProbe": _http_probe("/ready", 5, 2),
        "livenessProbe": _http_probe("/health", 10, 3),
        "volumeMounts": [jobs_mount],
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": ORCHESTRATOR_NAME, "labels": labels},
            "spec": {"replicas": defaults.orchestrator_replicas, "selector": {"matchLabels": labels},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                     "template": {"metadata": {"labels": labels, "annotations": {
                         "prometheus.io/scrape": "true", "prometheus.io/port": str(d.ORCHESTRATOR_PORT),
                         "prometheus.io/path": "/metrics"}},
                                  "spec": {"terminationGracePeriodSeconds": 30, "containers": [container],
                                           "volumes": [jobs_volume]}}}}


def redis_service() -> dict[str, Any]:
    labels = _labels("redis")
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": REDIS_NAME, "labels": labels},
            "spec": {"type": "ClusterIP", "selector": labels,
                     "ports": [{"name": "redis", "port": d.REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}]}}


def _kustomization(resources: list[str]) -> dict[str, Any]:
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": resources}


def render(catalog: Catalog) -> dict[str, str]:
    """Every file under the output directory: relative path -> YAML text."""
    defaults = d.load_defaults(catalog)
    header = f"# {d.GENERATED.format(module='dalston.tools.generate_k8s')}\n"
    base: dict[str, Any] = {
        "gateway-deployment.yaml": gateway_deployment(defaults),
        "gateway-pdb.yaml": gateway_pdb(defaults),
        "gateway-service.yaml": _service(GATEWAY_NAME, _labels("gateway"), d.GATEWAY_PORT),
        "gateway-pods-service.yaml": _headless(_service(GATEWAY_PODS_NAME, _labels("gateway"), d.GATEWAY_PORT)),
        "redis-deployment.yaml": redis_deployment(),
        "redis-service.yaml": redis_service(),
        "redis-pvc.yaml": _pvc(REDIS_PVC, "redis", "ReadWriteOnce", REDIS_STORAGE),
        "orchestrator-deployment.yaml": orchestrator_deployment(catalog, defaults),
        "jobs-pvc.yaml": _pvc(JOBS_PVC, "jobs", "ReadWriteMany", defaults.jobs_storage_size),
    }
    docs: dict[str, Any] = {f"base/{name}": doc for name, doc in base.items()}
    docs["base/kustomization.yaml"] = _kustomization(list(base))
    for engine_id, entry in catalog.engines.items():
        labels = _labels("engine", engine_id, entry.stage)
        docs[f"variants/{engine_id}/deployment.yaml"] = engine_deployment(entry)
        docs[f"variants/{engine_id}/service.yaml"] = _service(d.service_name(entry), labels, d.ENGINE_PORT)
        docs[f"variants/{engine_id}/scaledobject.yaml"] = engine_scaled_object(entry, defaults)
        docs[f"variants/{engine_id}/kustomization.yaml"] = _kustomization(
            ["deployment.yaml", "service.yaml", "scaledobject.yaml"])
    docs["kustomization.yaml"] = _kustomization(["base", *(f"variants/{v}" for v in defaults.default_variants)])
    return {path: header + d.dump_yaml(doc) for path, doc in docs.items()}


def _existing(output: Path) -> dict[str, str]:
    return {p.relative_to(output).as_posix(): p.read_text(encoding="utf-8")
            for p in sorted(output.rglob("*.yaml"))} if output.exists() else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dalston.tools.generate_k8s", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true", help="exit 1 if the files differ from what would be written")
    parser.add_argument("--engines-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        files = render(Catalog.load(args.engines_dir))
    except (SpecInvalid, ValueError) as exc:
        print(f"generate_k8s: error: {exc}", file=sys.stderr)
        return 1
    if args.check:
        current = _existing(args.output)
        stale = sorted(p for p in set(files) | set(current) if files.get(p) != current.get(p))
        if stale:
            print(f"{args.output}: out of date ({', '.join(stale)}); run python -m dalston.tools.generate_k8s",
                  file=sys.stderr)
            return 1
        print(f"{args.output}: up to date ({len(files)} files)")
        return 0
    for path in set(_existing(args.output)) - set(files):  # a removed variant leaves nothing behind
        (args.output / path).unlink()
    for path, text in files.items():
        target = args.output / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    for directory in sorted((p for p in args.output.rglob("*") if p.is_dir()), reverse=True):
        if not any(directory.iterdir()):
            directory.rmdir()
    print(f"wrote {len(files)} files under {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
