"""The model registry: what a client may send as `model`, and which engine id it means.

A model id is an engine id (no indirection), plus a few friendly aliases kept in one data file,
`engines/aliases.yaml`. The registry is built from the catalog, so a new variant file is a new
model with no code change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from dalston.catalog import Catalog, Problem, display_path
from dalston.yamlsubset import YamlSubsetError, load_yaml

_ALIAS = re.compile(r"^[a-z][a-z0-9.-]*[a-z0-9]$")


class ModelNotFound(LookupError):
    """The requested model is neither an engine id nor an alias; the message lists what is known."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"model '{name}' not found; known models: {', '.join(known)}")
        self.name = name
        self.known = known


def load_aliases(path: Path, engine_ids: set[str]) -> tuple[dict[str, str], list[Problem]]:
    """Read `alias: engine-id` pairs; every target must be a known id and no alias may shadow an id."""
    if not path.exists():
        return {}, []
    shown = display_path(path)
    try:
        loaded = load_yaml(path.read_text(encoding="utf-8"), shown)
    except YamlSubsetError as exc:
        return {}, [Problem(shown, exc.line, "", exc.message)]
    aliases: dict[str, str] = {}
    problems: list[Problem] = []
    for alias, target in loaded.data.items():
        line = loaded.line_of((alias,))
        if not _ALIAS.match(alias):
            problems.append(Problem(shown, line, alias, "alias must match ^[a-z][a-z0-9.-]*[a-z0-9]$"))
        elif not isinstance(target, str) or target not in engine_ids:
            problems.append(Problem(shown, line, alias, f"points at unknown engine id {target!r}"))
        elif alias in engine_ids:
            problems.append(Problem(shown, line, alias, "shadows an engine id of the same name"))
        else:
            aliases[alias] = target
    return aliases, problems


@dataclass(frozen=True)
class ModelRegistry:
    """Engine ids and aliases; `resolve` maps either to the engine id that serves it."""

    engine_ids: tuple[str, ...]
    aliases: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> ModelRegistry:
        return cls(engine_ids=tuple(catalog.engines), aliases=dict(catalog.aliases))

    def resolve(self, name: str) -> str:
        if name in self.engine_ids:
            return name
        if name in self.aliases:
            return self.aliases[name]
        raise ModelNotFound(name, list(self.engine_ids))

    def aliases_for(self, engine_id: str) -> list[str]:
        return sorted(a for a, target in self.aliases.items() if target == engine_id)

    def names(self) -> list[str]:
        """Every name a client may send: ids then aliases."""
        return list(self.engine_ids) + sorted(self.aliases)
