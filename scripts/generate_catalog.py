#!/usr/bin/env python3
"""Write the engine catalog: every engine.yaml and variants/*.yaml, validated, as one JSON document.

    python scripts/generate_catalog.py --dry-run           # print it
    python scripts/generate_catalog.py --output catalog.json

`.engines` is keyed by engine id (sorted) and holds each full spec with defaults filled in;
`.sources` says where each came from; `.aliases` maps friendly names to ids. Output is
deterministic (sorted keys), so it can be diffed and cached. Exit 1 when any file is invalid.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dalston.catalog import Catalog, default_root  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the engine catalog JSON from the variant files.")
    parser.add_argument("--dry-run", action="store_true", help="print the catalog instead of writing it")
    parser.add_argument("--output", type=Path, default=Path("catalog.json"), help="where to write (default catalog.json)")
    parser.add_argument("--root", type=Path, default=None, help="engines root (default: $DALSTON_ENGINES_DIR or ./engines)")
    args = parser.parse_args(argv)
    catalog, problems = Catalog.scan(args.root or default_root())
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        print("catalog not written: fix the files above (python -m dalston.tools.validate_engine --all)", file=sys.stderr)
        return 1
    text = catalog.dumps()
    if args.dry_run:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
        print(f"catalog_written path={args.output} engines={len(catalog.engines)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
