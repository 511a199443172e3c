"""`dalston models list|pull|verify`: the catalog's models and their pinned weights on this machine.

`pull` is what images, init containers and a fresh laptop run before `dalston serve`; `verify` re-hashes
every byte (what the server's start-up check skips unless `--verify`). Exit codes: 0 ok, 1 weights
missing/damaged or the download failed, 2 unknown variant or bad usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dalston.catalog import Catalog, CatalogEntry, SpecInvalid
from dalston.catalog import ModelNotFound, ModelRegistry
from dalston.weights import (
    MIRROR_ENV,
    MODEL_DIR_ENV,
    WeightsError,
    check_weights,
    pull,
    weights_dir,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    list_ = sub.add_parser("list", help="every model: id, stage, family, aliases, weights size, present locally")
    pull_ = sub.add_parser("pull", help="download a variant's pinned weight files (resume, sha256 verified)")
    verify = sub.add_parser("verify", help="check every pinned file of a variant by size and full sha256")
    for p in (pull_, verify):
        p.add_argument("variant", help="variant id or alias")
    for p in (list_, pull_, verify):
        p.add_argument("--engines-dir", type=Path, default=None,
                       help="engines tree (default $DALSTON_ENGINES_DIR or the packaged engines/)")
        p.add_argument("--model-dir", default=None,
                       help=f"root of weights dirs (default ${MODEL_DIR_ENV}, else container.model_cache)")
    pull_.add_argument("--mirror", action="append", default=None, metavar="URL",
                       help=f"base URL serving <repo>/resolve/<revision>/<file>; repeat to try several in order "
                            f"(default ${MIRROR_ENV}, else https://huggingface.co)")
    pull_.add_argument("--no-progress", action="store_true", help="no progress output on stderr")
    pull_.add_argument("--timeout", type=float, default=60.0, help="seconds without data before a retry")


def _fail(message: str, code: int = 1) -> int:
    print(f"dalston models: {message}", file=sys.stderr)
    return code


def _local_state(entry: CatalogEntry, model_dir: str | None) -> str:
    """present / missing / incomplete (sizes only: listing must stay fast)."""
    spec = entry.spec
    if spec.weights is None:
        return "-"
    directory = weights_dir(spec, model_dir)
    try:
        check_weights(spec, directory)
    except WeightsError:
        have = sum((directory / f.name).is_file() for f in spec.weights.files)
        return "missing" if have == 0 else f"incomplete({have}/{len(spec.weights.files)})"
    return "present"


def _list(catalog: Catalog, registry: ModelRegistry, model_dir: str | None) -> int:
    rows = [("ID", "STAGE", "FAMILY", "ALIASES", "WEIGHTS", "LOCAL")]
    for engine_id, entry in catalog.engines.items():
        size = f"{entry.spec.weights.total_bytes / 1e6:.1f} MB" if entry.spec.weights else "-"
        rows.append((engine_id, entry.stage, entry.family, ",".join(registry.aliases_for(engine_id)) or "-",
                     size, _local_state(entry, model_dir)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        catalog = Catalog.load(args.engines_dir)
    except SpecInvalid as exc:
        return _fail(f"the engines tree has invalid variant files:\n{exc}")
    registry = ModelRegistry.from_catalog(catalog)
    if args.action == "list":
        return _list(catalog, registry, args.model_dir)
    try:
        spec = catalog.get(registry.resolve(args.variant)).spec
    except ModelNotFound as exc:
        return _fail(str(exc), 2)
    directory = weights_dir(spec, args.model_dir)
    if spec.weights is None:
        print(f"{spec.id}: no weights to {args.action}", file=sys.stderr)
        return 0
    try:
        if args.action == "pull":  # pull verifies every file it keeps or writes
            pull(spec, directory, mirrors=args.mirror, progress=not args.no_progress, timeout=args.timeout)
        else:
            check_weights(spec, directory, verify=True)
    except WeightsError as exc:
        return _fail(str(exc))
    print(f"{spec.id}: {len(spec.weights.files)} files, {spec.weights.total_bytes} bytes, sha256 verified in {directory}")
    return 0
