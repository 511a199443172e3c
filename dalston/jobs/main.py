"""`dalston orchestrator`: run one orchestrator (run several for availability; they share the work).

Works from the environment alone, as the container manifests run it: `DALSTON_REGISTRY_URL` (the
deployment's one Redis), `DALSTON_STORAGE_DIR` (the volume shared with the gateway and the engines),
`DALSTON_WEBHOOK_SECRET`; every other setting has a flag with a default fit for production.
A small HTTP listener (`--host`, `--port`, default 127.0.0.1:8070; containers bind 0.0.0.0:8000)
answers `/health`, `/ready` and `/metrics` for probes and Prometheus (`dalston.jobs.health`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from dalston.shared_redis import add_registry_argument, redis_url_from

if TYPE_CHECKING:  # the heavy modules load in `run`, after the arguments are checked
    import socket

    from dalston.jobs.orchestrator import OrchestratorConfig
    from dalston.jobs.storage import Storage

log = logging.getLogger("dalston.jobs")


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


DEFAULT_PORT = 8070  # beside the gateway's 8000 and an engine's 8080 on one machine


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_registry_argument(parser, " — required: jobs, queues and events live there")
    parser.add_argument("--storage-dir", default=None, help="shared job storage (default $DALSTON_STORAGE_DIR)")
    parser.add_argument("--engines-dir", type=Path, default=None, help="catalog root (default $DALSTON_ENGINES_DIR)")
    parser.add_argument("--chunk-seconds", type=float, default=_env_float("DALSTON_CHUNK_SECONDS", 300.0),
                        help="longest chunk, cut at a silence before it (default 300 s; $DALSTON_CHUNK_SECONDS)")
    parser.add_argument("--max-audio-seconds", type=float, default=None,
                        help="longest job audio (default: the audio-prepare variant's max_audio_duration)")
    parser.add_argument("--max-attempts", type=int, default=3, help="tries per chunk on engine errors (default 3)")
    parser.add_argument("--visibility-timeout", type=float, default=_env_float("DALSTON_VISIBILITY_TIMEOUT", 60.0),
                        help="seconds before a silent orchestrator's event is reclaimed (default 60)")
    parser.add_argument("--concurrency", type=int, default=8, help="events handled at once (default 8)")
    parser.add_argument("--job-ttl", type=int, default=int(_env_float("DALSTON_JOB_TTL", 7 * 24 * 3600)),
                        help="seconds a finished job and its result stay readable (default 7 days; $DALSTON_JOB_TTL)")
    parser.add_argument("--webhook-secret", default=None, help="HMAC key for Dalston-Signature (default $DALSTON_WEBHOOK_SECRET)")
    parser.add_argument("--webhook-attempts", type=int, default=5, help="deliveries tried per webhook (default 5)")
    parser.add_argument("--webhook-backoff", type=float, default=2.0, help="first retry delay, doubled each time (default 2 s)")
    parser.add_argument("--host", default=os.environ.get("DALSTON_ORCHESTRATOR_HOST", "127.0.0.1"),
                        help="bind address of /health, /ready, /metrics (default 127.0.0.1; 0.0.0.0 in containers; "
                             "$DALSTON_ORCHESTRATOR_HOST)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("DALSTON_ORCHESTRATOR_PORT", DEFAULT_PORT)),
                        help=f"port of /health, /ready, /metrics (default {DEFAULT_PORT}; $DALSTON_ORCHESTRATOR_PORT; "
                             "0: any free port, logged); give each orchestrator on one host its own")
    parser.add_argument("--log-level", default=os.environ.get("DALSTON_LOG_LEVEL", "info"))


def _fail(message: str, code: int = 2) -> int:
    print(f"dalston orchestrator: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from dalston.catalog import Catalog, SpecInvalid
    from dalston.jobs.health import bind
    from dalston.jobs.orchestrator import OrchestratorConfig
    from dalston.jobs.storage import storage_from
    from dalston.jobs.webhooks import SECRET_ENV, WebhookPolicy

    try:
        url = redis_url_from(args.registry)
    except ValueError as exc:
        return _fail(str(exc))
    if url is None:
        return _fail("no Redis: pass --registry redis://HOST:6379/0 or set DALSTON_REGISTRY_URL")
    storage = storage_from(args.storage_dir)
    if storage is None:
        return _fail("no job storage: pass --storage-dir DIR or set DALSTON_STORAGE_DIR (shared with the gateway "
                     "and the engines)")
    if args.chunk_seconds < 5 or args.max_attempts < 1 or args.visibility_timeout <= 0 or args.concurrency < 1:
        return _fail("--chunk-seconds must be >= 5, --max-attempts >= 1, --visibility-timeout > 0, --concurrency >= 1")
    try:
        catalog = Catalog.load(args.engines_dir)
    except SpecInvalid as exc:
        return _fail(f"invalid engine catalog:\n{exc}", 1)
    prepare = next((e.spec for e in catalog.engines.values() if e.stage == "prepare"), None)
    max_audio = args.max_audio_seconds or (float(prepare.capabilities.max_audio_duration) if prepare else 14400.0)
    secret = args.webhook_secret or os.environ.get(SECRET_ENV)
    if not secret:
        log.warning("webhooks_disabled reason=no_secret: set %s to sign webhook deliveries", SECRET_ENV)
    config = OrchestratorConfig(
        chunk_seconds=args.chunk_seconds, max_audio_seconds=max_audio,
        variant_limits={i: float(e.spec.capabilities.max_audio_duration) for i, e in catalog.engines.items()},
        max_attempts=args.max_attempts, visibility_timeout=args.visibility_timeout, concurrency=args.concurrency,
        finished_ttl=args.job_ttl,
        webhook=WebhookPolicy(secret, attempts=args.webhook_attempts, backoff=args.webhook_backoff) if secret else None,
        task_engines=tuple(i for i, e in catalog.engines.items() if e.stage == "transcribe" and not e.spec.is_streaming))
    if not 0 <= args.port <= 65535:
        return _fail(f"--port must be 0-65535, got {args.port}")
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        return _fail(f"cannot listen on {args.host}:{args.port} for /health, /ready, /metrics: {exc.strerror or exc} "
                     f"(another orchestrator on this host? give it its own --port)")
    asyncio.run(_main(url, storage, config, sock))
    return 0


async def _main(url: str, storage: Storage, config: OrchestratorConfig, sock: socket.socket) -> None:
    from dalston.jobs.health import HealthServer
    from dalston.jobs.orchestrator import Orchestrator
    from dalston.shared_redis import client

    orchestrator = Orchestrator(client(url), storage, config)
    health = HealthServer(orchestrator.redis, orchestrator.metrics, config.task_engines, sock, orchestrator.name)

    def stop() -> None:
        health.stopping = True  # /ready 503 at once; /health and /metrics answer until the drain is over
        orchestrator.consumer.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    health.start()
    try:
        await orchestrator.run()
        log.info("orchestrator_stopped name=%s", orchestrator.name)
    finally:
        await health.stop()
        await orchestrator.redis.aclose()
