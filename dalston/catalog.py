"""Find every engine variant file, validate it, cross-check the set, index it by engine id, and say
which engine id a client's `model` name (an id or an alias from `engines/aliases.yaml`) means.

The catalog is the Python reader's view of `engines/`: `nix/variants.nix` discovers the same files
by the same rules (`engines/<stage>/<family>/variants/<size>.yaml`, or `engine.yaml` for a family
with one size), and a test holds the two equal. The engine id is redundant with the file's location
on purpose: it is written in the file (so the file is self-describing) and checked against the path
(so ids cannot drift or collide).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dalston.errors import echo
from dalston.spec import SCHEMA_VERSION, EngineSpec
from dalston.yamlsubset import LoadedYaml, YamlSubsetError, load_yaml

ENGINES_DIR_ENV = "DALSTON_ENGINES_DIR"
_ALIAS = re.compile(r"^[a-z][a-z0-9.-]*[a-z0-9]$")


def default_root() -> Path:
    """`$DALSTON_ENGINES_DIR`, else the `engines/` directory beside the `dalston` package."""
    env = os.environ.get(ENGINES_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parent.parent / "engines"


def display_path(path: Path) -> str:
    """A path as operators want it in messages: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class Problem:
    """One validation finding, printed as `file:line: field: message`."""

    path: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{self.path}:{self.line}: {where}{self.message}"


class SpecInvalid(Exception):
    """A variant file (or the set of them) failed validation; `problems` lists every finding."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def _field_path(loc: tuple[Any, ...], data: Any) -> tuple[str | int, ...]:
    """Map a pydantic error location to a path in the YAML data (dropping union tags like 'nemo')."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
            path.append(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            path.append(part)
        elif isinstance(node, dict) and isinstance(part, str) and part not in node and part != loc[-1]:
            continue  # a discriminated-union tag, e.g. ('runtime', 'nemo', 'decoder')
        else:
            path.append(part)
            node = None
    return tuple(path)


def _format_field(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_spec(text: str, source: str, *, allow_unpinned: bool = False) -> tuple[EngineSpec, LoadedYaml]:
    """Validate one variant document; raise `SpecInvalid` naming file, line and field of each error."""
    try:
        loaded = load_yaml(text, source)
    except YamlSubsetError as exc:
        raise SpecInvalid([Problem(source, exc.line, "", exc.message)]) from None
    try:
        spec = EngineSpec.model_validate(loaded.data, context={"allow_unpinned": allow_unpinned})
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            path = _field_path(err["loc"], loaded.data)
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown field (not in schema 1.1; check spelling)"
            elif err["type"] == "literal_error" and "expected" in err.get("ctx", {}):
                message = f"{message}; got {err.get('input')!r}"
            problems.append(Problem(source, loaded.line_of(path), _format_field(path), message))
        raise SpecInvalid(problems) from None
    return spec, loaded


def read_spec(path: Path, *, allow_unpinned: bool = False) -> tuple[EngineSpec, LoadedYaml]:
    """Parse one variant file; every failure (including non-UTF-8 bytes) is a `SpecInvalid`."""
    shown = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecInvalid([Problem(shown, 1, "", f"not UTF-8 text ({exc.reason})")]) from None
    return parse_spec(text, shown, allow_unpinned=allow_unpinned)


@dataclass(frozen=True)
class CatalogEntry:
    """A validated variant and where it lives: `engines/<stage>/<family>/...`."""

    spec: EngineSpec
    path: Path
    family: str
    stage: str

    @property
    def dir(self) -> Path:
        """The family directory, holding the shared `engine.py`."""
        return self.path.parent.parent if self.path.parent.name == "variants" else self.path.parent

    @property
    def engine_py(self) -> Path:
        return self.dir / "engine.py"


def discover(root: Path) -> list[Path]:
    """Every variant file under `root`, in a stable order (the order Nix's readDir also yields)."""
    found = list(root.glob("*/*/engine.yaml")) + list(root.glob("*/*/variants/*.yaml"))
    return sorted(found)


def _location_problems(path: Path, root: Path, spec: EngineSpec, loaded: LoadedYaml) -> list[Problem]:
    rel = path.relative_to(root)
    stage, family = rel.parts[0], rel.parts[1]
    expected = family if path.name == "engine.yaml" else f"{family}-{path.stem}"
    shown = display_path(path)
    problems = []
    if spec.id != expected:
        problems.append(Problem(shown, loaded.line_of(("id",)), "id",
                                f"'{spec.id}' does not match its location: a file at {rel} must have id '{expected}'"))
    if spec.stage != stage:
        problems.append(Problem(shown, loaded.line_of(("stage",)), "stage",
                                f"'{spec.stage}' does not match its directory engines/{stage}/"))
    return problems


# ------------------------------------------------------------------ model names
class ModelNotFound(LookupError):
    """The requested model is neither an engine id nor an alias; the message lists what is known."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"model '{echo(name)}' not found; known models: {', '.join(known)}")
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


class Catalog:
    """All engine variants under one root, by id, plus the model aliases."""

    def __init__(self, root: Path, engines: dict[str, CatalogEntry], aliases: dict[str, str]) -> None:
        self.root = root
        self.engines = dict(sorted(engines.items()))
        self.aliases = dict(sorted(aliases.items()))

    @classmethod
    def scan(cls, root: Path | None = None, *, allow_unpinned: bool = False) -> tuple[Catalog, list[Problem]]:
        """Load what is valid and collect every problem (what `validate_engine --all` reports)."""
        root = (root or default_root()).resolve()
        engines: dict[str, CatalogEntry] = {}
        problems: list[Problem] = []
        for family_dir in sorted(p for p in root.glob("*/*") if p.is_dir()):
            if (family_dir / "engine.yaml").exists() and (family_dir / "variants").is_dir():
                problems.append(Problem(display_path(family_dir / "engine.yaml"), 1, "",
                                        "a family has either engine.yaml or variants/*.yaml, not both"))
        for path in discover(root):
            shown = display_path(path)
            try:
                spec, loaded = read_spec(path, allow_unpinned=allow_unpinned)
            except SpecInvalid as exc:
                problems.extend(exc.problems)
                continue
            where = _location_problems(path, root, spec, loaded)
            if spec.id in engines:
                where.append(Problem(shown, loaded.line_of(("id",)), "id",
                                     f"duplicate engine id '{spec.id}' (also {display_path(engines[spec.id].path)})"))
            problems.extend(where)
            if not where:
                rel = path.relative_to(root)
                engines[spec.id] = CatalogEntry(spec=spec, path=path, family=rel.parts[1], stage=rel.parts[0])
        aliases, alias_problems = load_aliases(root / "aliases.yaml", set(engines))
        problems.extend(alias_problems)
        return cls(root, engines, aliases), problems

    @classmethod
    def load(cls, root: Path | None = None) -> Catalog:
        """The catalog, or `SpecInvalid` listing every problem: servers refuse to start on a bad tree."""
        catalog, problems = cls.scan(root)
        if problems:
            raise SpecInvalid(problems)
        return catalog

    def get(self, engine_id: str) -> CatalogEntry:
        try:
            return self.engines[engine_id]
        except KeyError:
            known = ", ".join(self.engines)
            raise KeyError(f"unknown engine id '{engine_id}'; known: {known}") from None

    def to_json(self) -> dict[str, Any]:
        """The catalog document: `.engines` keyed by id holds each full spec (defaults filled in)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "engines": {i: e.spec.model_dump(mode="json") for i, e in self.engines.items()},
            "sources": {
                i: {"path": str(e.path.relative_to(self.root)), "family": e.family, "stage": e.stage}
                for i, e in self.engines.items()
            },
            "aliases": self.aliases,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"


@dataclass(frozen=True)
class ModelRegistry:
    """Engine ids and aliases; `resolve` maps either to the engine id that serves it.

    A model id is an engine id (no indirection), plus a few friendly aliases kept in one data file,
    `engines/aliases.yaml`: a new variant file is a new model with no code change.
    """

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
