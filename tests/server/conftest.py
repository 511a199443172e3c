"""Server fixtures: the real app serving real Whisper weights over loopback HTTP, with a real keys file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.serving import AUTH, TEST_KEY, Running, running_server  # noqa: F401 (re-exported)

@pytest.fixture(scope="session")
def base_server(engines_with_test_variants: Path, model_dir_for, session_model_root: Path,
                keys_file: Path) -> Iterator[Running]:
    """whisper-base (the shipped variant's exact pinned bytes), small upload limit for the 413 case."""
    model_dir_for("whisper-base")
    with running_server("whisper-base", engines_root=engines_with_test_variants, model_dir=session_model_root,
                        keys_file=keys_file, max_upload_bytes=8 * 1024 * 1024) as running:
        yield running


@pytest.fixture(scope="session")
def client(base_server: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_server.url, headers=AUTH, timeout=300) as c:
        yield c


def post_audio(client: httpx.Client, path: Path, endpoint: str = "/v1/audio/transcriptions",
               **fields: str | list[str]) -> httpx.Response:
    with open(path, "rb") as handle:
        return client.post(endpoint, files={"file": (path.name, handle, "application/octet-stream")}, data=fields)
