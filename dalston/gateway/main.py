"""`dalston gateway`: run the routing gateway in front of the engines."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from dalston import connection_limits, shared_redis
from dalston.catalog import Catalog, SpecInvalid
from dalston.registration import INTERNAL_TOKEN_ENV

KEYS_FILE_ENV = "DALSTON_KEYS_FILE"


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
    app = create_gateway_app(config)
    app.state.jobs = _jobs_backend(registry_url, args, catalog)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower(), access_log=False,
                timeout_graceful_shutdown=30, ws="websockets-sansio", http=connection_limits.protocol_class(limits))  # the WebSocket stack the engines and tests use
    return 0


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
