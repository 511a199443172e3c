"""Session-wide test setup: offline model hubs, and session fixtures over the cached real assets.

Kept small on purpose: each area adds its own fixtures in `tests/<area>/conftest.py`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Set at import time, before any test module imports faster-whisper / transformers / NeMo: a hub
# look-up on a machine without the hub hangs for minutes instead of failing.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from tests.fixtures import assets  # noqa: E402  (after the environment above)
from tests.fixtures.redis import redis_server  # noqa: E402,F401  (a real redis-server on a free port)


@pytest.fixture(scope="session")
def whisper_base_dir() -> Path:
    """Real Whisper base CTranslate2 files (config.json, model.bin, tokenizer.json, vocabulary.txt)."""
    return assets.whisper_base_dir()


@pytest.fixture(scope="session")
def whisper_tiny_en_dir() -> Path:
    """Real Whisper tiny.en CTranslate2 files: the fast model for tests that need any real model."""
    return assets.whisper_tiny_en_dir()


@pytest.fixture(scope="session")
def speech_clip():
    """`speech_clip("beckett.wav") -> Path` of a real recording (see assets.CLIP_NAMES)."""
    return assets.speech_clip


@pytest.fixture(scope="session")
def reference_text():
    """`reference_text("two_cities") -> str`: the true text spoken in a clip."""
    return assets.reference_text


@pytest.fixture(scope="session")
def session_model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `DALSTON_MODEL_DIR`-style root shared by the session; fill it with `model_dir_for`."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def model_dir_for(session_model_root: Path):
    """`model_dir_for("whisper-base") -> <root>/whisper-base/` holding the variant's real pinned files."""

    def build(variant_id: str, root: Path | None = None) -> Path:
        return assets.model_dir_for(variant_id, root or session_model_root)

    return build


@pytest.fixture(scope="session")
def engines_with_test_variants(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """engines/ plus test-only variants (e.g. whisper-tiny-en); pass as DALSTON_ENGINES_DIR / Catalog.load(root)."""
    return assets.engines_tree(tmp_path_factory.mktemp("engines-tree"))


@pytest.fixture(scope="session")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A keys file accepting `tests.fixtures.serving.TEST_KEY` (dk_test), stored as its SHA-256 digest."""
    from tests.fixtures.serving import write_keys_file

    return write_keys_file(tmp_path_factory.mktemp("keys") / "keys.txt")
