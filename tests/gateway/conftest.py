"""Fixtures for gateway tests: real servers on loopback (uvicorn in a thread), never ASGI shortcuts.

WHY a real socket: the things the gateway must get right (streaming uploads, a peer that hangs up
mid-request, upstream timeouts, WebSocket framing) only happen over real connections.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from dalston.auth import KeyStore
from dalston.catalog import Catalog
from dalston.gateway.app import GatewayConfig, create_gateway_app
from tests.fixtures.serving import TEST_KEY  # noqa: F401 (re-exported to the gateway tests)

INTERNAL_TOKEN = "internal-test-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(app: object, port: int | None = None) -> Iterator[str]:
    """Run an ASGI app with uvicorn on 127.0.0.1 in a thread; yield its base URL; stop it after."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on", ws="websockets-sansio"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)



@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return Catalog.load()


def gateway_config(catalog: Catalog, keys_file: Path, **overrides: object) -> GatewayConfig:
    settings: dict[str, object] = {"heartbeat_interval": 0.2, "heartbeat_timeout": 0.8}
    settings.update(overrides)
    return GatewayConfig(catalog=catalog, internal_token=INTERNAL_TOKEN, keys=KeyStore.from_file(keys_file),
                         **settings)  # type: ignore[arg-type]


@contextlib.contextmanager
def running_gateway(catalog: Catalog, keys_file: Path, **overrides: object) -> Iterator[tuple[str, object]]:
    app = create_gateway_app(gateway_config(catalog, keys_file, **overrides))
    with serve(app) as url:
        yield url, app.state.gateway
