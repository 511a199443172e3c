"""compose.yaml and deploy/k8s/ are current, derived from the variant files, and valid.

Kubernetes manifests are checked against the API schemas shipped by `kubernetes-validate` (pinned
in the dev extra), strictly: an unknown field fails as a real API server would reject it. KEDA
ScaledObjects, a custom resource kubernetes-validate does not know, are checked against the schema
in keda_schema.py, written from KEDA 2.15's documented fields. compose.yaml is checked against the
Compose Specification's JSON schema (the copy docker-compose 1.29.2 ships, fetched by
tests/fixtures/assets.py), which rejects unknown keys as `docker compose config` does.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from dalston.catalog import Catalog
from dalston.tools import deployment as d
from dalston.tools import generate_compose, generate_k8s
from tests.deploy import keda_schema
from tests.fixtures import assets

REPO = d.REPO_ROOT
K8S_VERSION = "1.31.0"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def test_compose_is_current(capsys):
    assert generate_compose.main(["--check"]) == 0, capsys.readouterr().err


def test_k8s_is_current(capsys):
    assert generate_k8s.main(["--check"]) == 0, capsys.readouterr().err


def test_check_detects_drift(tmp_path, capsys):
    out = tmp_path / "compose.yaml"
    out.write_text((REPO / "compose.yaml").read_text().replace("memory: 4G", "memory: 5G", 1))
    assert generate_compose.main(["--check", "--output", str(out)]) == 1
    k8s = tmp_path / "k8s"
    shutil.copytree(REPO / "deploy" / "k8s", k8s)
    (k8s / "variants" / "whisper-base" / "scaledobject.yaml").unlink()
    assert generate_k8s.main(["--check", "--output", str(k8s)]) == 1
    assert "variants/whisper-base/scaledobject.yaml" in capsys.readouterr().err


def test_compose_services_follow_the_specs(catalog):
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = compose["services"]
    defaults = d.load_defaults(catalog)
    assert set(services) == ({"gateway", "gateway-2", "redis", "orchestrator"}
                             | {d.service_name(e) for e in catalog.engines.values()})
    assert "profiles" not in services["gateway"]
    for engine_id, entry in catalog.engines.items():
        spec = entry.spec
        name = f"stt-realtime-{engine_id}" if spec.is_streaming else f"stt-batch-{entry.stage}-{engine_id}"
        service = services[name]
        assert service["image"] == f"dalston-{engine_id}:{spec.version}"
        assert service["environment"]["ENGINE_ID"] == engine_id
        assert service["environment"]["DALSTON_GATEWAY_URL"] == "${DALSTON_GATEWAY_URL:-http://gateway:8000}"
        assert "DALSTON_INTERNAL_TOKEN" in service["environment"]
        assert service["deploy"]["resources"]["limits"]["memory"] == spec.container.memory
        gpu = service["deploy"]["resources"].get("reservations", {}).get("devices")
        assert (gpu is not None) == (spec.container.gpu == "required")
        assert "/ready" in service["healthcheck"]["test"][-1]
        if engine_id in defaults.default_variants:
            assert "profiles" not in service
        else:
            assert service["profiles"] == [engine_id]


def test_docker_build_args_resolve(catalog):
    """Every variant's Dockerfile and build args point at files that exist (no docker engine runs here)."""
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    for engine_id, entry in catalog.engines.items():
        build = compose["services"][d.service_name(entry)]["build"]
        dockerfile = REPO / build["dockerfile"]
        assert dockerfile.is_file()
        text = dockerfile.read_text()
        assert "ARG VARIANT" in text and "ARG FAMILY_DIR" in text
        family_dir = REPO / build["args"]["FAMILY_DIR"]
        assert family_dir == entry.dir and entry.path.is_relative_to(family_dir)
        assert build["args"]["VARIANT"] == engine_id
        # COPY sources in the build context exist.
        for line in text.splitlines():
            if line.startswith("COPY ") and "${" not in line:
                for source in line.split()[1:-1]:
                    assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source} is missing"


def test_dockerfile_weights_step_uses_the_variant_pins():
    """The weights come from `dalston models pull <VARIANT>`, i.e. the YAML's pinned list, never a copy."""
    for name in ("whisper.Dockerfile", "nemo.Dockerfile"):
        text = (REPO / "deploy" / "docker" / name).read_text()
        assert 'dalston models pull "$VARIANT"' in text
        assert not re.search(r"[0-9a-f]{40,64}", text)  # no second list of hashes or revisions
        assert "COPY ${FAMILY_DIR} /app/${FAMILY_DIR}" in text and "DALSTON_ENGINES_DIR=/app/engines" in text


def _manifests() -> list[Path]:
    return sorted(p for p in (REPO / "deploy" / "k8s").rglob("*.yaml")
                  if p.name not in ("kustomization.yaml", "scaledobject.yaml"))


def _scaled_objects() -> list[Path]:
    return sorted((REPO / "deploy" / "k8s").rglob("scaledobject.yaml"))


@pytest.mark.parametrize("path", _manifests(), ids=lambda p: str(p.relative_to(REPO / "deploy" / "k8s")))
def test_k8s_manifest_validates(path):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


@pytest.mark.parametrize("path", _scaled_objects(), ids=lambda p: p.parent.name)
def test_scaled_object_validates_against_keda_schema(path):
    document = yaml.safe_load(path.read_text())
    assert keda_schema.problems(document) == []


@pytest.mark.parametrize("breakage,message", [
    (lambda so: so["spec"].update(minReplicas=1), "Additional properties are not allowed ('minReplicas'"),
    (lambda so: so["spec"]["triggers"][0]["metadata"].update(threshold=4), "4 is not of type 'string'"),
    (lambda so: so["spec"]["triggers"][0]["metadata"].pop("query"), "'query' is a required property"),
    (lambda so: so["spec"]["scaleTargetRef"].pop("name"), "'name' is a required property"),
    (lambda so: so["spec"]["triggers"][0].update(metricType="Utilization"), "is not one of"),
    (lambda so: so["spec"].update(minReplicaCount=5, maxReplicaCount=2), "minReplicaCount 5 > maxReplicaCount 2"),
    (lambda so: so.update(apiVersion="keda.sh/v1"), "'keda.sh/v1alpha1' was expected"),
])
def test_keda_schema_rejects_broken_scaled_objects(breakage, message):
    document = yaml.safe_load((REPO / "deploy/k8s/variants/audio-prepare/scaledobject.yaml").read_text())
    breakage(document)
    assert any(message in problem for problem in keda_schema.problems(document)), keda_schema.problems(document)


def test_gateway_is_replicated_on_a_shared_registry(catalog):
    base = REPO / "deploy" / "k8s" / "base"
    defaults = d.load_defaults(catalog)
    dep = yaml.safe_load((base / "gateway-deployment.yaml").read_text())
    assert dep["spec"]["replicas"] == defaults.gateway_replicas >= 2
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    redis_svc = yaml.safe_load((base / "redis-service.yaml").read_text())
    assert env["DALSTON_REGISTRY_URL"] == f"redis://{redis_svc['metadata']['name']}:6379/0"
    pdb = yaml.safe_load((base / "gateway-pdb.yaml").read_text())
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert 1 <= pdb["spec"]["minAvailable"] < dep["spec"]["replicas"]  # a drain can take one, never all
    redis_dep = yaml.safe_load((base / "redis-deployment.yaml").read_text())
    image = redis_dep["spec"]["template"]["spec"]["containers"][0]["image"]
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+", image)  # official image, pinned tag
    assert redis_svc["spec"]["selector"] == redis_dep["spec"]["selector"]["matchLabels"]
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())["resources"]
    assert {"gateway-pdb.yaml", "gateway-pods-service.yaml", "redis-deployment.yaml",
            "redis-service.yaml"} <= set(kustomization)
    # Engines heartbeat every gateway pod: the headless Service's name resolves to each of them.
    pods = yaml.safe_load((base / "gateway-pods-service.yaml").read_text())
    assert pods["spec"]["clusterIP"] == "None" and pods["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    engine = yaml.safe_load((REPO / "deploy/k8s/variants/whisper-base/deployment.yaml").read_text())
    engine_env = {e["name"]: e.get("value") for e in engine["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert engine_env["DALSTON_GATEWAY_URL"] == f"http://{pods['metadata']['name']}:8000"
    assert engine_env["DALSTON_GATEWAY_EACH_ADDRESS"] == "1"


def test_gateway_drain_fits_its_grace_period_and_matches_realtime_engines(catalog):
    """A rolled gateway pod drains what it relays (dalston.gateway.main) for DALSTON_SHUTDOWN_TIMEOUT,
    which fits its grace period after preStop with room for the close and exit, and is no shorter
    than a realtime engine's: a gateway rollout cuts no session an engine rollout would let finish."""
    dep = yaml.safe_load((REPO / "deploy/k8s/base/gateway-deployment.yaml").read_text())
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    drain = float({e["name"]: e.get("value") for e in container["env"]}["DALSTON_SHUTDOWN_TIMEOUT"])
    assert 0 < drain + container["lifecycle"]["preStop"]["sleep"]["seconds"] + 15 < pod["terminationGracePeriodSeconds"]
    for engine_id, entry in catalog.engines.items():
        if entry.spec.is_streaming:
            engine = yaml.safe_load((REPO / f"deploy/k8s/variants/{engine_id}/deployment.yaml").read_text())
            engine_pod = engine["spec"]["template"]["spec"]
            engine_env = {e["name"]: e.get("value") for e in engine_pod["containers"][0]["env"]}
            assert drain >= float(engine_env["DALSTON_SHUTDOWN_TIMEOUT"]), engine_id
            assert pod["terminationGracePeriodSeconds"] >= engine_pod["terminationGracePeriodSeconds"], engine_id
    # compose: Docker's SIGKILL comes after the default 30 s drain and the close
    services = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]
    for name in ("gateway", "gateway-2"):
        assert int(services[name]["stop_grace_period"].rstrip("s")) > 30 + 15, name


def test_compose_ha_profile(catalog):
    services = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]
    # redis is a regular service since batch jobs need it (docs/JOBS.md); ha adds the second gateway
    assert "profiles" not in services["redis"] and re.fullmatch(r"redis:\d+\.\d+\.\d+", services["redis"]["image"])
    assert services["gateway-2"]["profiles"] == ["ha"] and services["gateway-2"]["depends_on"] == ["redis"]
    for name in ("gateway", "gateway-2"):  # the compose Redis unless DALSTON_REGISTRY_URL is set (empty: embedded)
        assert services[name]["environment"]["DALSTON_REGISTRY_URL"] == "${DALSTON_REGISTRY_URL-redis://redis:6379/0}"
    env = dict(line.split("=", 1) for line in (REPO / "deploy" / "compose-ha.env").read_text().splitlines()
               if line and not line.startswith("#"))
    assert env == {"COMPOSE_PROFILES": "ha", "DALSTON_REGISTRY_URL": "redis://redis:6379/0",
                   "DALSTON_GATEWAY_URL": "http://gateway:8000,http://gateway-2:8000"}


def _compose_errors(doc: dict) -> list[str]:
    """Compose-spec schema violations of `doc` (the top-level `name`, newer than this schema, checked
    by the spec's rule for project names: lowercase letters, digits, dashes, underscores)."""
    import jsonschema

    schema = json.loads((assets.ensure(assets.COMPOSE_SCHEMA) / "compose_spec.json").read_text())
    doc = dict(doc)
    name = doc.pop("name", None)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in jsonschema.Draft201909Validator(schema).iter_errors(doc)]
    if name is not None and not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", str(name)):
        errors.append(f"name: {name!r} is not a valid project name")
    return errors


def test_compose_matches_the_compose_spec_schema(catalog):
    assert _compose_errors(yaml.safe_load((REPO / "compose.yaml").read_text())) == []
    # and the check bites: an unknown key, a wrong type, a bad project name
    broken = yaml.safe_load((REPO / "compose.yaml").read_text())
    broken["services"]["gateway"]["helthcheck"] = {}
    broken["services"]["redis"]["ports"] = "6379"
    broken["name"] = "Dalston!"
    errors = _compose_errors(broken)
    assert len(errors) == 3 and any("helthcheck" in e for e in errors), errors


def test_validator_rejects_a_broken_manifest():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    doc = yaml.safe_load((REPO / "deploy/k8s/variants/whisper-base/deployment.yaml").read_text())
    doc["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kustomizations_reference_existing_resources(catalog):
    root = REPO / "deploy" / "k8s"
    for kfile in root.rglob("kustomization.yaml"):
        for resource in yaml.safe_load(kfile.read_text())["resources"]:
            assert (kfile.parent / resource).exists(), f"{kfile}: {resource} missing"
    top = yaml.safe_load((root / "kustomization.yaml").read_text())["resources"]
    assert top == ["base", *(f"variants/{v}" for v in d.load_defaults(catalog).default_variants)]


def test_k8s_resources_follow_the_specs(catalog):
    root = REPO / "deploy" / "k8s" / "variants"
    for engine_id, entry in catalog.engines.items():
        spec = entry.spec
        dep = yaml.safe_load((root / engine_id / "deployment.yaml").read_text())
        pod = dep["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["image"] == d.image_name(spec)
        assert container["resources"]["limits"]["memory"] == spec.container.memory.rstrip("i") + "i"
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert "preStop" in container["lifecycle"] and pod["terminationGracePeriodSeconds"] > 0
        # the SIGTERM drain (requests, realtime sessions + their flush) fits the grace period after preStop
        env = {e["name"]: e.get("value") for e in container["env"]}
        drain = float(env["DALSTON_SHUTDOWN_TIMEOUT"])
        assert 0 < drain + container["lifecycle"]["preStop"]["sleep"]["seconds"] + 15 < pod["terminationGracePeriodSeconds"]
        assert drain >= (270 if spec.is_streaming else 90), (engine_id, drain)
        if spec.container.gpu == "required":
            assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
            expr = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
                "nodeSelectorTerms"][0]["matchExpressions"][0]
            assert expr["key"] == "nvidia.com/gpu.product"
            for gpu in spec.hardware.recommended_gpu:
                assert set(d.GPU_PRODUCT_LABELS[gpu]) <= set(expr["values"])
        else:
            assert "nvidia.com/gpu" not in container["resources"]["limits"] and "affinity" not in pod
        assert "replicas" not in dep["spec"]  # the ScaledObject owns it
        scaled = yaml.safe_load((root / engine_id / "scaledobject.yaml").read_text())["spec"]
        assert scaled["scaleTargetRef"]["name"] == dep["metadata"]["name"] == d.service_name(entry)
        assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == d.load_defaults(catalog).replicas(engine_id)
        work, *others = scaled["triggers"]
        cpu = [t for t in others if t["type"] != "redis-streams"]
        assert work["type"] == "prometheus" and work["metadata"]["threshold"] == str(spec.capabilities.max_concurrency)
        query = work["metadata"]["query"]
        assert "dalston_requests_queued + dalston_requests_in_flight" in query
        assert f'engine_id="{engine_id}"' in query
        assert ("dalston_realtime_sessions_active" in query) == spec.is_streaming
        # A CPU trigger only for variants that get no GPU here; never a second HPA next to KEDA's own.
        assert [t["type"] for t in cpu] == (["cpu"] if spec.container.gpu != "required" else [])
        assert not (root / engine_id / "hpa.yaml").exists()


def test_autoscaling_bounds_come_from_defaults_with_overrides(catalog, tmp_path):
    defaults = d.load_defaults(catalog)
    assert defaults.replicas("whisper-large-v3") == (1, 8)
    assert defaults.replicas("whisper-base") == (defaults.min_replicas, defaults.max_replicas)
    bad = tmp_path / "defaults.yaml"
    bad.write_text((REPO / "deploy" / "defaults.yaml").read_text().replace("max_replicas: 8", "max_replicas: 0"))
    with pytest.raises(ValueError, match="autoscaling_overrides.whisper-large-v3: need 0 <= min_replicas"):
        d.load_defaults(catalog, bad)


def test_gpu_label_map_is_total():
    assert d.GPU_PRODUCT_LABELS["t4"] == ("Tesla-T4",)


def test_new_variant_needs_no_code(tmp_path):
    """A variant added as one YAML file gets its compose service and manifests with no other change."""
    engines = tmp_path / "engines"
    shutil.copytree(REPO / "engines", engines)
    base = engines / "transcribe" / "whisper" / "variants" / "base.yaml"
    (base.parent / "small.yaml").write_text(base.read_text().replace("id: whisper-base", "id: whisper-small"))
    catalog = Catalog.load(engines)
    compose = yaml.safe_load(generate_compose.render(catalog))
    assert compose["services"]["stt-batch-transcribe-whisper-small"]["profiles"] == ["whisper-small"]
    files = generate_k8s.render(catalog)
    assert "variants/whisper-small/deployment.yaml" in files


def test_sizing_table_in_deploy_doc_is_current(capsys):
    from dalston.tools import sizing_table

    assert sizing_table.main(["--check"]) == 0, capsys.readouterr().err


def test_sizing_table_has_every_variant(catalog):
    from dalston.tools import sizing_table

    table = sizing_table.render_table(catalog)
    for engine_id, entry in catalog.engines.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| `{engine_id}` "))
        assert entry.spec.container.memory in row and d.service_name(entry) in row
