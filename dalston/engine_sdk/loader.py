"""Load a family's `engine.py` by path: family directories are data (they may contain '-')."""

from __future__ import annotations

import importlib.util
import sys

from dalston.catalog import CatalogEntry
from dalston.engine_sdk.base import Engine, EngineLoadError

__all__ = ["EngineLoadError", "create_engine", "load_engine_class"]


def load_engine_class(entry: CatalogEntry) -> type[Engine]:
    """The `ENGINE` class defined by the entry's family `engine.py`."""
    path = entry.engine_py
    if not path.exists():
        raise EngineLoadError(f"{path}: engine family '{entry.family}' has no engine.py")
    module_name = f"dalston_engines.{entry.stage}.{entry.family.replace('-', '_')}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except ImportError as exc:
            del sys.modules[module_name]
            raise EngineLoadError(
                f"{path}: cannot import the '{entry.family}' family ({exc}); install its extra, "
                f"e.g. pip install 'dalston[{'nemo' if getattr(entry.spec.runtime, 'kind', '') == 'nemo' else 'whisper'}]'"
            ) from exc
    engine_class = getattr(module, "ENGINE", None)
    if not (isinstance(engine_class, type) and issubclass(engine_class, Engine)):
        raise EngineLoadError(f"{path}: must define ENGINE = <subclass of dalston.engine_sdk.Engine>")
    return engine_class


def create_engine(entry: CatalogEntry) -> Engine:
    return load_engine_class(entry)(entry.spec)
