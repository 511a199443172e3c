"""Fixtures for gateway tests: real servers on loopback (uvicorn in a thread), never ASGI shortcuts.

WHY a real socket: the things the gateway must get right (streaming uploads, a peer that hangs up
mid-request, upstream timeouts, WebSocket framing) only happen over real connections.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from dalston.auth import KeyStore
from dalston.catalog import Catalog
from dalston.gateway.app import GatewayConfig, create_gateway_app
from tests.fixtures.serving import TEST_KEY, free_port, serve_app  # noqa: F401 (re-exported to the gateway tests)

INTERNAL_TOKEN = "internal-test-token"


#: Run an ASGI app under uvicorn on loopback in a thread (the one runner every suite uses).
serve = serve_app



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
