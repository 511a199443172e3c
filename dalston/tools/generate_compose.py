"""Generate `compose.yaml` from the variant files: the gateway plus one service per engine variant.

    python -m dalston.tools.generate_compose            # rewrite compose.yaml
    python -m dalston.tools.generate_compose --check    # exit 1 if compose.yaml is not current

Each engine service runs the variant's Nix image (`dalston-<id>:<version>`, loaded with
`nix run .#image-<id>.copyToDockerDaemon` or similar) or builds it from its family's Dockerfile,
registers itself with the gateway, and reports ready on /ready. `docker compose up` starts the
gateway and the default variants (deploy/defaults.yaml); any other variant runs with
`docker compose --profile <id> up`.

Batch jobs (docs/JOBS.md) need `redis` (the official image, pinned, with an append-only file on
the `redis-data` volume) and the `orchestrator`; both are regular services, so
`docker compose up -d gateway orchestrator redis stt-batch-transcribe-whisper-large-v3` runs a job
deployment as written. Every service finds Redis at `DALSTON_REGISTRY_URL` (default
redis://redis:6379/0; set it empty for the embedded registry without jobs), the gateway, the
orchestrator and the batch transcribers share the `jobs` volume (`DALSTON_STORAGE_DIR`), and the
batch transcribers run `dalston serve ID --queue`.

The `ha` profile adds a second gateway, `gateway-2`; `deploy/compose-ha.env` turns it on and
points every engine at both gateways (`docker compose --env-file deploy/compose-ha.env up`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


from dalston.catalog import Catalog, CatalogEntry, SpecInvalid
from dalston.tools import deployment as d

OUTPUT = d.REPO_ROOT / "compose.yaml"
HA_ENV_OUTPUT = d.REPO_ROOT / "deploy" / "compose-ha.env"
KEYS_IN_CONTAINER = "/etc/dalston/keys.txt"
TOKEN = "${DALSTON_INTERNAL_TOKEN:?set DALSTON_INTERNAL_TOKEN to a shared secret, e.g. openssl rand -hex 32}"
KEYS_ON_HOST = "${DALSTON_KEYS_FILE:-./keys.txt}"
# Unset: the compose Redis (registry and jobs). Set empty: the embedded registry, and no jobs.
REGISTRY_URL = "${DALSTON_REGISTRY_URL-redis://redis:6379/0}"
JOBS_VOLUME = f"jobs:{d.JOBS_STORAGE_DIR}"
JOBS_ENV = {"DALSTON_REGISTRY_URL": REGISTRY_URL, "DALSTON_STORAGE_DIR": d.JOBS_STORAGE_DIR}
GATEWAY_URLS = f"${{DALSTON_GATEWAY_URL:-http://{d.GATEWAY_SERVICE}:{d.GATEWAY_PORT}}}"
HA_PROFILE = "ha"


def _healthcheck(start_period_s: int, port: int = d.ENGINE_PORT) -> dict[str, Any]:
    return {"test": d.ready_probe_command(port), "interval": "10s", "timeout": "5s", "retries": 3,
            "start_period": f"{start_period_s}s"}


def gateway_service(host_port: int = d.GATEWAY_PORT, ha_only: bool = False) -> dict[str, Any]:
    service: dict[str, Any] = {
        "image": d.gateway_image(),
        "build": {"context": ".", "dockerfile": "deploy/docker/gateway.Dockerfile"},
        "command": d.gateway_command(),
        "ports": [f"{host_port}:{d.GATEWAY_PORT}"],
        "environment": {"DALSTON_INTERNAL_TOKEN": TOKEN, "DALSTON_KEYS_FILE": KEYS_IN_CONTAINER, **JOBS_ENV},
        "volumes": [f"{KEYS_ON_HOST}:{KEYS_IN_CONTAINER}:ro", JOBS_VOLUME],
        "depends_on": [d.REDIS_SERVICE],
        "healthcheck": _healthcheck(10),
        "restart": "unless-stopped",
        # SIGTERM drains what it relays for --shutdown-timeout (default 30 s), then closes 1001: as a
        # realtime engine, time for that and the exit before Docker's SIGKILL
        "stop_grace_period": "60s",
    }
    if ha_only:
        service["profiles"] = [HA_PROFILE]
    return service


def redis_service() -> dict[str, Any]:
    """The one Redis: gateway registry (soft state) and batch jobs (kept in an append-only file)."""
    return {
        "image": d.REDIS_IMAGE,
        "command": d.REDIS_COMMAND,
        "volumes": [f"redis-data:{d.REDIS_DATA_DIR}"],
        "healthcheck": {"test": ["CMD", "redis-cli", "ping"], "interval": "5s", "timeout": "3s", "retries": 3},
        "restart": "unless-stopped",
    }


def orchestrator_service(catalog: Catalog) -> dict[str, Any]:
    """`dalston orchestrator` in the prepare variant's image (it runs the prepare stage's decoder)."""
    prepare = next(e for e in catalog.engines.values() if e.stage == "prepare")
    return {
        "image": d.orchestrator_image(catalog),
        "build": {"context": ".", "dockerfile": d.dockerfile_for(prepare), "args": d.build_args(prepare, catalog)},
        "command": d.orchestrator_command(),
        "environment": {**JOBS_ENV, "DALSTON_WEBHOOK_SECRET": "${DALSTON_WEBHOOK_SECRET:-}"},
        "volumes": [JOBS_VOLUME],
        "depends_on": [d.REDIS_SERVICE],
        "healthcheck": _healthcheck(10, d.ORCHESTRATOR_PORT),  # /ready: it answers and Redis answers it
        "restart": "unless-stopped",
        "stop_grace_period": "30s",
    }


def ha_env() -> str:
    """deploy/compose-ha.env: the `ha` profile, both gateways on Redis, every engine registered with both."""
    gateways = ",".join(f"http://{name}:{d.GATEWAY_PORT}" for name in (d.GATEWAY_SERVICE, d.GATEWAY_2_SERVICE))
    return (f"# {d.GENERATED.format(module='dalston.tools.generate_compose')}\n"
            "# docker compose --env-file deploy/compose-ha.env up -d   (see docs/DEPLOY.md)\n"
            f"COMPOSE_PROFILES={HA_PROFILE}\n"
            f"DALSTON_REGISTRY_URL={d.registry_url(d.REDIS_SERVICE)}\n"
            f"DALSTON_GATEWAY_URL={gateways}\n")


def engine_service(entry: CatalogEntry, catalog: Catalog, default: bool) -> dict[str, Any]:
    spec = entry.spec
    name = d.service_name(entry)
    warm_s = (spec.performance.warm_start_latency_ms or 10_000) // 1000
    service: dict[str, Any] = {
        "image": d.image_name(spec),
        "build": {"context": ".", "dockerfile": d.dockerfile_for(entry), "args": d.build_args(entry, catalog)},
        "command": d.engine_command(spec),
        "environment": {
            "ENGINE_ID": spec.id,
            "DALSTON_GATEWAY_URL": GATEWAY_URLS,
            "DALSTON_ADVERTISE_URL": f"http://{name}:{d.ENGINE_PORT}",
            "DALSTON_INTERNAL_TOKEN": TOKEN,
            "DALSTON_KEYS_FILE": KEYS_IN_CONTAINER,
        },
        "volumes": [f"{KEYS_ON_HOST}:{KEYS_IN_CONTAINER}:ro"],
        "depends_on": [d.GATEWAY_SERVICE],
        "healthcheck": _healthcheck(max(30, 4 * warm_s)),
        "restart": "unless-stopped",
        "stop_grace_period": "60s" if spec.is_streaming else "30s",
    }
    if d.takes_jobs(spec):  # `--queue`: pulls job chunks from its Redis stream, reads them from the jobs volume
        service["environment"].update(JOBS_ENV)
        service["volumes"].append(JOBS_VOLUME)
        service["depends_on"] = [d.GATEWAY_SERVICE, d.REDIS_SERVICE]
    resources: dict[str, Any] = {"limits": {"memory": spec.container.memory}}
    if spec.container.gpu == "required":
        resources["reservations"] = {"devices": [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]}
    service["deploy"] = {"resources": resources}
    if not default:
        service["profiles"] = [spec.id]
    return service


def render(catalog: Catalog) -> str:
    defaults = d.load_defaults(catalog)
    services: dict[str, Any] = {d.GATEWAY_SERVICE: gateway_service(),
                                d.GATEWAY_2_SERVICE: gateway_service(d.GATEWAY_PORT + 1, ha_only=True),
                                d.REDIS_SERVICE: redis_service(),
                                d.ORCHESTRATOR_SERVICE: orchestrator_service(catalog)}
    for engine_id, entry in catalog.engines.items():
        services[d.service_name(entry)] = engine_service(entry, catalog, engine_id in defaults.default_variants)
    header = (f"# {d.GENERATED.format(module='dalston.tools.generate_compose')}\n"
              "# docker compose up                      -> gateway + " + ", ".join(defaults.default_variants) + "\n"
              "# docker compose --profile <id> up       -> also that variant (e.g. --profile whisper-base)\n"
              "# docker compose --env-file deploy/compose-ha.env up -> two gateways sharing a registry on redis\n"
              "# docker compose up -d gateway orchestrator redis stt-batch-transcribe-<id> -> batch jobs (docs/JOBS.md)\n"
              "# Needs DALSTON_INTERNAL_TOKEN in the environment and a keys file (DALSTON_KEYS_FILE, default\n"
              "# ./keys.txt) from `dalston keys create --keys-file keys.txt`. See docs/DEPLOY.md.\n")
    return header + d.dump_yaml({"name": "dalston", "services": services, "volumes": {"jobs": {}, "redis-data": {}}})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dalston.tools.generate_compose", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from what would be written")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--engines-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        text = render(Catalog.load(args.engines_dir))
    except (SpecInvalid, ValueError) as exc:
        print(f"generate_compose: error: {exc}", file=sys.stderr)
        return 1
    outputs = {args.output: text, args.output.parent / HA_ENV_OUTPUT.relative_to(d.REPO_ROOT): ha_env()}
    if args.check:
        stale = [path for path, content in outputs.items()
                 if (path.read_text(encoding="utf-8") if path.exists() else "") != content]
        if stale:
            print(f"{', '.join(map(str, stale))}: out of date; run python -m dalston.tools.generate_compose",
                  file=sys.stderr)
            return 1
        print(f"{args.output}: up to date")
        return 0
    for path, content in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
