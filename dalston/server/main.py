"""`dalston serve VARIANT_ID`: run one engine variant over HTTP.

Start-up order is what an operator debugging a pod needs: resolve the variant (id or alias), check
the keys file and the pinned weight files *before* binding the port (a broken deployment fails fast
with a message naming the file), then listen — `/health` answers at once, `/ready` turns 200 once
the model is loaded, and only then does the engine register with a gateway. SIGTERM makes `/ready`
503 and deregisters first; open realtime sessions are drained while the port still listens (told,
finished or flushed and closed with 1001: `dalston.server.realtime_drain`), then uvicorn drains
in-flight HTTP requests before exiting (`dalston.draining` takes over uvicorn's shutdown, as the gateway's).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from dalston import connection_limits, draining
from dalston.auth import KEYS_FILE_ENV, KeysFileError, KeyStore

if TYPE_CHECKING:  # imported where used: `dalston serve --help` should not load the server stack
    from starlette.applications import Starlette

    from dalston.catalog import CatalogEntry, ModelRegistry
    from dalston.registration import Registrar
    from dalston.server.state import ServerState

log = logging.getLogger("dalston.server")

LOG_FORMAT = "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("variant", nargs="?", default=os.environ.get("ENGINE_ID"),
                        help="variant id or alias (default $ENGINE_ID)")
    parser.add_argument("--host", default=os.environ.get("DALSTON_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("DALSTON_PORT", "8080")))
    parser.add_argument("--engines-dir", type=Path, default=None, help="engines tree (default $DALSTON_ENGINES_DIR or the packaged engines/)")
    parser.add_argument("--model-dir", default=None, help="root of weights dirs (default $DALSTON_MODEL_DIR, else container.model_cache)")
    parser.add_argument("--verify", action="store_true", help="also check the sha256 of every weight file at start")
    parser.add_argument("--keys-file", default=os.environ.get(KEYS_FILE_ENV), help=f"API key digests (default ${KEYS_FILE_ENV})")
    parser.add_argument("--insecure-no-auth", action="store_true", help="serve without API keys (local development only)")
    parser.add_argument("--max-upload-mb", type=float, default=1024.0, help="413 above this upload size")
    parser.add_argument("--retry-grace", type=float, default=5.0,
                        help="seconds a refused request's queue place is held after its Retry-After for its retry "
                             "(x-stainless-retry-count / Dalston-Retry); 0 disables (default 5)")
    parser.add_argument("--max-queue", type=int, default=None, help="requests that may wait for a slot (default 4 x max_concurrency); beyond: 429")
    parser.add_argument("--realtime-idle-timeout", type=float, default=None, help="seconds without audio before a realtime session is closed")
    connection_limits.add_arguments(parser)
    draining.add_shutdown_argument(parser, "in-flight requests and realtime sessions")
    parser.add_argument("--gateway", default=None, help="register with this gateway URL, or several comma-separated (gateway replicas sharing "
                             "a registry: each gets the heartbeats) (default $DALSTON_GATEWAY_URL)")
    parser.add_argument("--log-level", default=os.environ.get("DALSTON_LOG_LEVEL", "info"))
    from dalston.jobs.worker import add_queue_arguments

    add_queue_arguments(parser)  # --queue: batch-job worker mode (docs/JOBS.md)


def _fail(message: str, code: int = 1) -> int:
    print(f"dalston serve: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    from dalston.catalog import Catalog, SpecInvalid
    from dalston.catalog import ModelNotFound, ModelRegistry
    from dalston.weights import WeightsError, check_weights, weights_dir

    if not args.variant:
        return _fail("name the variant to serve: dalston serve VARIANT_ID (or set ENGINE_ID)", 2)
    try:
        catalog = Catalog.load(args.engines_dir)
    except SpecInvalid as exc:
        return _fail(f"the engines tree has invalid variant files:\n{exc}")
    registry = ModelRegistry.from_catalog(catalog)
    try:
        entry = catalog.get(registry.resolve(args.variant))
    except ModelNotFound as exc:
        return _fail(str(exc), 2)

    if args.insecure_no_auth:
        keys = None
        log.warning("auth_disabled engine_id=%s reason=--insecure-no-auth", entry.spec.id)
    else:
        try:
            keys = KeyStore.from_env(args.keys_file)
        except KeysFileError as exc:
            return _fail(str(exc))
        if keys is None:
            return _fail(f"no API keys: give --keys-file PATH (or ${KEYS_FILE_ENV}); create one with "
                         f"`dalston keys create --keys-file PATH`, or pass --insecure-no-auth for local use", 2)

    try:
        connection_limits.from_arguments(args)
    except ValueError as exc:
        return _fail(f"invalid connection limits: {exc}", 2)

    directory = weights_dir(entry.spec, args.model_dir)
    try:
        check_weights(entry.spec, directory, verify=args.verify)
    except WeightsError as exc:
        return _fail(str(exc))

    from dalston import devices  # the same facts `dalston doctor` prints

    log.info(devices.log_line(entry.spec, devices.probe(devices.runtime_for(entry.spec)),
                              weights="verified" if args.verify else "sizes_checked"))
    return _serve(args, entry, registry, keys, directory)


def _serve(args: argparse.Namespace, entry: CatalogEntry, registry: ModelRegistry, keys: KeyStore | None,
           directory: Path) -> int:
    import asyncio
    import contextlib

    from dalston.engine_sdk import EngineLoadError
    from dalston.jobs.worker import QueueConfigError, queue_worker_from
    from dalston.registration import RegistrationConfigError, registrar_for
    from dalston.server.app import create_app
    from dalston.admission import RealtimeLimits
    from dalston.server.state import ServerState

    realtime_limits = RealtimeLimits(idle_timeout_s=args.realtime_idle_timeout) if args.realtime_idle_timeout else None
    try:
        state = ServerState.create(entry, registry, directory, keys=keys, max_queue=args.max_queue,
                                   retry_grace_seconds=max(0.0, args.retry_grace),
                                   max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                                   realtime_limits=realtime_limits)
        registrar = registrar_for(entry.spec, args.host, args.port, args.gateway)
        queue = queue_worker_from(args, state)
    except (EngineLoadError, RegistrationConfigError, QueueConfigError) as exc:
        return _fail(str(exc))

    once = _Once(registrar)
    server: draining.DrainingServer | None = None
    failed: list[str] = []

    def on_failure(error: str) -> None:
        failed.append(error)
        if server is not None:
            server.should_exit = True

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        state.load_in_background(on_ready=once.start, on_failure=on_failure)
        queue_task = asyncio.create_task(queue.run()) if queue is not None else None
        yield
        state.draining = True
        if queue is not None and queue_task is not None:
            await queue.stop(timeout=args.shutdown_timeout)
            queue_task.cancel()
        once.stop()
        state.close()

    app = create_app(state, lifespan=lifespan)
    limits = connection_limits.from_arguments(args)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level.lower(),
                            timeout_graceful_shutdown=int(args.shutdown_timeout), access_log=False,
                            ws="websockets-sansio", http=connection_limits.protocol_class(limits))
    def on_signal(sig: int) -> None:
        """Stop advertising at once: `/ready` 503, new work refused, deregistered from the gateway."""
        state.draining = True
        admission = state.admission
        log.info("engine_draining engine_id=%s signal=%d in_flight=%d queued=%d sessions_active=%d deadline_s=%.1f",
                 state.spec.id, sig, admission.in_flight, admission.queued, admission.sessions_active,
                 args.shutdown_timeout)
        once.stop()

    async def drain(timeout_s: float, abort: Callable[[], bool]) -> None:
        # Sessions first, while the port listens (new sessions get 4503); HTTP requests in flight run
        # on meanwhile, and uvicorn's graceful shutdown gets the time that is left for the rest.
        await state.sessions.drain(timeout_s, abort=abort)

    server = draining.DrainingServer(config, shutdown_timeout=args.shutdown_timeout, on_signal=on_signal, drain=drain)
    log.info("engine_starting engine_id=%s host=%s port=%d weights_dir=%s auth=%s", entry.spec.id, args.host,
             args.port, directory, "keys" if keys is not None else "disabled")
    server.run()
    if failed:
        return _fail(f"{entry.spec.id} did not load: {failed[0]}")
    return 0


class _Once:
    """The registrar (or none), started at most once and stopped at most once, only if started."""

    def __init__(self, registrar: Registrar | None) -> None:
        self.registrar, self.started, self.stopped = registrar, False, False

    def start(self) -> None:
        if self.registrar is not None and not self.started:
            self.started = True
            self.registrar.start()

    def stop(self) -> None:
        if self.registrar is not None and self.started and not self.stopped:
            self.stopped = True
            self.registrar.stop()
