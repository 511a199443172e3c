"""NeMo fixtures: tiny real FastConformer checkpoints (tests/fixtures/nemo_models.py) behind test-only variants.

Every engine here is made the way `dalston serve` makes it: `Catalog.load(tree)` over the shipped
engines/ plus the tiny variants (pinned to the sha256 of the files just built), `create_engine`,
then `load(<model dir>/<variant id>)`. Loaded engines are session-scoped: NeMo imports and model
restores are the slow part, and the engines hold no per-request state.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("nemo.collections.asr", reason="needs the nemo extra (pip install 'dalston[nemo]')")

from dalston.catalog import Catalog
from dalston.commands.stream import load_audio_16k
from dalston.engine_sdk import Engine, create_engine
from dalston.realtime.native_protocol import render
from tests.fixtures import assets, nemo_models


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.nemo)


@pytest.fixture(scope="session")
def nemo_engines_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """engines/ + test variants + the tiny NeMo variants (weights pinned to the files built for this run)."""
    return nemo_models.engines_tree_with_tiny_models(tmp_path_factory.mktemp("nemo-engines"))


@pytest.fixture(scope="session")
def nemo_model_root(tmp_path_factory: pytest.TempPathFactory, nemo_engines_root: Path) -> Path:
    """A DALSTON_MODEL_DIR-style root with `<variant id>/<file>.nemo` for every tiny variant."""
    root = tmp_path_factory.mktemp("nemo-models")
    catalog = Catalog.load(nemo_engines_root)
    for variant_id in catalog.engines:
        if variant_id.startswith(("parakeet-tiny", "parakeet-streaming-tiny")):
            nemo_models.model_dir_for(variant_id, root, engines_root=nemo_engines_root)
    return root


@pytest.fixture(scope="session")
def load_variant(nemo_engines_root: Path, nemo_model_root: Path) -> Callable[[str], Engine]:
    """`load_variant(id)`: the family engine for a tiny variant, created and loaded like `dalston serve` does."""
    cache: dict[str, Engine] = {}

    def load(variant_id: str) -> Engine:
        if variant_id not in cache:
            engine = create_engine(Catalog.load(nemo_engines_root).get(variant_id))
            engine.load(nemo_model_root / variant_id)
            cache[variant_id] = engine
        return cache[variant_id]

    return load


@pytest.fixture(scope="session")
def clip() -> Callable[[str], np.ndarray]:
    """`clip("beckett")` -> 16 kHz mono float32 samples of a real recording."""
    cache: dict[str, np.ndarray] = {}

    def get(name: str) -> np.ndarray:
        if name not in cache:
            cache[name] = load_audio_16k(assets.speech_clip(name))
        return cache[name]

    return get


def words_of(text: str) -> list[str]:
    return assets.normalize_words(text)


def target_words() -> list[str]:
    return assets.normalize_words(nemo_models.TARGET_TEXT)


def as_dicts(events: list[Any]) -> list[dict[str, Any]]:
    return [render(e) for e in events]
