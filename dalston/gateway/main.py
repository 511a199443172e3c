"""`dalston gateway`: run the routing gateway in front of the engines.

SIGTERM (a rolling update, a node drain) drains instead of cutting: `/ready` turns 503 at once so
load balancers and Kubernetes take the replica out, new requests and sessions get 503
`shutting_down` + `Retry-After`, in-flight HTTP requests and relayed realtime sessions (told
`session.draining`) may finish up to `--shutdown-timeout`; then the sessions left are closed with
1001 "going away" (clients reconnect through another replica), HTTP requests left are cut, and the
process exits 0. `dalston.draining.DrainingServer` takes over uvicorn's shutdown, as for engines.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dalston import connection_limits, draining, shared_redis
from dalston.catalog import Catalog, SpecInvalid
from dalston.registration import INTERNAL_TOKEN_ENV

if TYPE_CHECKING:
    from dalston.gateway.state import GatewayState

KEYS_FILE_ENV = "DALSTON_KEYS_FILE"
log = logging.getLogger("dalston.gateway")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; 0.0.0.0 in containers)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--keys-file", type=Path, default=os.environ.get(KEYS_FILE_ENV),
                        help=f"dk_ key hashes, one sha256 per line (default ${KEYS_FILE_ENV})")
    parser.add_argument("--insecure-no-auth", action="store_true",
                        help="accept requests without an API key (local experiments only)")
    parser.add_argument("--internal-token", default=os.environ.get(INTERNAL_TOKEN_ENV),
                        help=f"shared secret engines register with (default ${INTERNAL_TOKEN_ENV})")
    parser.add_argument("--heartbeat-interval", type=float, default=2.0, help="seconds between engine heartbeats")
    parser.add_argument("--heartbeat-timeout", type=float, default=6.0,
                        help="drop an instance silent this long (default 6 s = 3 missed heartbeats)")
    parser.add_argument("--upstream-timeout", type=float, default=600.0,
                        help="seconds to wait for an engine's answer before 504")
    parser.add_argument("--max-upload-bytes", type=int, default=1 << 30, help="413 above this (default 1 GiB)")
    parser.add_argument("--max-prefix-bytes", type=int, default=8 << 20,
                        help="bytes buffered while looking for the model field (default 8 MiB)")
    shared_redis.add_registry_argument(parser, help_suffix="; gateway replicas on one Redis share their "
                                       "instance registry and in-flight counts (docs/DEPLOY.md)")
    parser.add_argument("--registry-refresh", type=float, default=0.25,
                        help="seconds between reads of the shared registry (default 0.25)")
    connection_limits.add_arguments(parser)
    draining.add_shutdown_argument(parser, "in-flight requests and relayed realtime sessions")
    parser.add_argument("--engines-dir", type=Path, default=None, help="catalog root (default $DALSTON_ENGINES_DIR)")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--storage-dir", default=None,
                        help="job storage shared with orchestrators and engines (default $DALSTON_STORAGE_DIR); "
                             "with --registry it enables /v1/jobs")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from dalston.auth import KeyStore
    from dalston.gateway.app import GatewayConfig, create_gateway_app

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    # httpx logs every proxied request at INFO; the gateway's own metrics and key=value lines cover them.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    if not args.internal_token:
        print(f"dalston gateway: error: no internal token; set {INTERNAL_TOKEN_ENV} (the same secret on every "
              f"engine) or pass --internal-token", file=sys.stderr)
        return 2
    if args.keys_file is None and not args.insecure_no_auth:
        print(f"dalston gateway: error: no keys file; pass --keys-file (or set {KEYS_FILE_ENV}); create one with "
              f"`dalston keys create --keys-file FILE`, or run with --insecure-no-auth", file=sys.stderr)
        return 2
    if args.heartbeat_timeout <= args.heartbeat_interval:
        print("dalston gateway: error: --heartbeat-timeout must be longer than --heartbeat-interval", file=sys.stderr)
        return 2
    if not 0 < args.registry_refresh < args.heartbeat_timeout:
        print("dalston gateway: error: --registry-refresh must be positive and shorter than --heartbeat-timeout",
              file=sys.stderr)
        return 2
    try:
        limits = connection_limits.from_arguments(args)
    except ValueError as exc:
        print(f"dalston gateway: error: invalid connection limits: {exc}", file=sys.stderr)
        return 2
    try:
        registry_url = shared_redis.redis_url_from(args.registry)
        catalog = Catalog.load(args.engines_dir)
        keys = None if args.keys_file is None else KeyStore.from_file(args.keys_file)
    except SpecInvalid as exc:
        print(f"dalston gateway: invalid engine catalog:\n{exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"dalston gateway: error: {exc}", file=sys.stderr)
        return 1
    config = GatewayConfig(catalog=catalog, internal_token=args.internal_token, keys=keys,
                           heartbeat_interval=args.heartbeat_interval, heartbeat_timeout=args.heartbeat_timeout,
                           upstream_timeout=args.upstream_timeout, max_upload_bytes=args.max_upload_bytes,
                           max_prefix_bytes=args.max_prefix_bytes, registry_url=registry_url,
                           registry_refresh=args.registry_refresh)
    if args.shutdown_timeout < 0:
        print("dalston gateway: error: --shutdown-timeout must be 0 or more seconds", file=sys.stderr)
        return 2
    app = create_gateway_app(config)
    app.state.jobs = _jobs_backend(registry_url, args, catalog)
    state: GatewayState = app.state.gateway
    uv_config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level.lower(), access_log=False,
                               timeout_graceful_shutdown=max(1, round(args.shutdown_timeout)),
                               ws="websockets-sansio",  # the WebSocket stack the engines and tests use
                               http=connection_limits.protocol_class(limits))
    server = draining.DrainingServer(uv_config, shutdown_timeout=args.shutdown_timeout,
                                     on_signal=lambda sig: _start_draining(state, sig, args.shutdown_timeout),
                                     drain=lambda timeout_s, abort: _drain(state, timeout_s, abort))
    server.run()
    return 0


def _start_draining(state: GatewayState, sig: int, timeout_s: float) -> None:
    """First SIGTERM/SIGINT: stop taking new work at once (`/ready` 503, new work 503 `shutting_down`)."""
    state.draining = True
    log.info("gateway_draining signal=%d sessions=%d requests=%d deadline_s=%.1f", sig, len(state.sessions),
             state.requests, timeout_s)


async def _drain(state: GatewayState, timeout_s: float, abort: Callable[[], bool]) -> None:
    """Let relayed sessions and HTTP requests finish until the deadline; then close the sessions 1001.

    HTTP requests still running at the deadline are left to uvicorn's shutdown (given at least 1 s),
    which then cancels them: their clients see the connection close and retry elsewhere.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(state.sessions.drain(timeout_s, abort=abort),
                         draining.wait_until(lambda: state.requests == 0, started + timeout_s, abort))
    log.info("gateway_drained seconds=%.2f sessions_left=%d requests_left=%d", loop.time() - started,
             len(state.sessions), state.requests)


def _jobs_backend(url: str | None, args: argparse.Namespace, catalog: Catalog) -> object | None:
    """The /v1/jobs backend when both Redis and storage are configured; otherwise jobs answer 503."""
    from dalston.jobs.routes import JobsBackend
    from dalston.jobs.storage import storage_from

    storage = storage_from(args.storage_dir)
    if url is None or storage is None:
        logging.getLogger("dalston.gateway").info("jobs_disabled reason=%s",
                                                  "no_registry" if url is None else "no_storage_dir")
        return None
    logging.getLogger("dalston.gateway").info("jobs_enabled storage=%s", storage.root)
    return JobsBackend(url, storage, catalog, max_upload_bytes=args.max_upload_bytes)
