"""Validate engine variant files: each against the schema, and the set across files.

    python -m dalston.tools.validate_engine --all          # every engine.yaml and variants/*.yaml
    python -m dalston.tools.validate_engine PATH [PATH...] # just these files

Prints one line per valid engine id on stdout and one `file:line: field: message` per problem on
stderr. Exit codes: 0 all valid, 1 something invalid, 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dalston.catalog import Catalog, Problem, SpecInvalid, _location_problems, default_root, display_path, read_spec
from dalston.spec import EngineSpec


def _summary(spec: EngineSpec, path: Path) -> str:
    hw = spec.hardware
    gpu = f"{hw.min_vram_gb:g} GB VRAM ({'/'.join(hw.recommended_gpu)})" if spec.container.gpu != "none" else "no GPU"
    cpu = "cpu ok" if hw.supports_cpu else "gpu only"
    size = f"{spec.weights.total_bytes / 1e9:.2f} GB weights" if spec.weights else "no weights"
    return f"ok  {spec.id:<26} {spec.stage:<10} {gpu}, {cpu}, {size}  {display_path(path)}"


def _engines_root_of(path: Path) -> Path | None:
    """The engines root a file sits in, if it is laid out as `<root>/<stage>/<family>/...`."""
    path = path.resolve()
    if path.parent.name == "variants" and len(path.parents) >= 4:
        return path.parents[3]
    if path.name == "engine.yaml" and len(path.parents) >= 3:
        return path.parents[2]
    return None


def validate_files(paths: list[Path], *, allow_unpinned: bool = False) -> tuple[list[str], list[Problem]]:
    """Validate the given files; checks location rules when a file sits in an engines tree."""
    lines: list[str] = []
    problems: list[Problem] = []
    seen: dict[str, Path] = {}
    for path in paths:
        shown = display_path(path)
        if not path.is_file():
            problems.append(Problem(shown, 0, "", "no such file"))
            continue
        try:
            spec, loaded = read_spec(path, allow_unpinned=allow_unpinned)
        except SpecInvalid as exc:
            problems.extend(exc.problems)
            continue
        root = _engines_root_of(path)
        found = _location_problems(path.resolve(), root, spec, loaded) if root else []
        if spec.id in seen:
            found.append(Problem(shown, loaded.line_of(("id",)), "id",
                                 f"duplicate engine id '{spec.id}' (also {display_path(seen[spec.id])})"))
        problems.extend(found)
        if not found:
            seen[spec.id] = path
            lines.append(_summary(spec, path))
    return lines, problems


def validate_all(root: Path, *, allow_unpinned: bool = False) -> tuple[list[str], list[Problem]]:
    catalog, problems = Catalog.scan(root, allow_unpinned=allow_unpinned)
    return [_summary(e.spec, e.path) for e in catalog.engines.values()], problems


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="variant files to validate")
    parser.add_argument("--all", action="store_true", help="validate every engine under the engines root")
    parser.add_argument("--root", type=Path, default=None, help="engines root (default: $DALSTON_ENGINES_DIR or ./engines)")
    parser.add_argument("--allow-unpinned", action="store_true",
                        help="accept weight files whose sha256 is null (local experiments only; never ship)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print problems only")


def run(args: argparse.Namespace) -> int:
    if args.all == bool(args.paths):
        print("validate_engine: give --all or one or more PATHs (not both)", file=sys.stderr)
        return 2
    if args.all:
        lines, problems = validate_all(args.root or default_root(), allow_unpinned=args.allow_unpinned)
    else:
        lines, problems = validate_files(args.paths, allow_unpinned=args.allow_unpinned)
    if not args.quiet:
        for line in lines:
            print(line)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dalston.tools.validate_engine", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
