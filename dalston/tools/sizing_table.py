"""Keep the sizing table in docs/DEPLOY.md equal to the variant files.

    python -m dalston.tools.sizing_table            # rewrite the table between the markers
    python -m dalston.tools.sizing_table --check    # exit 1 if the doc's table is stale

The table is the part of the deployment guide most likely to rot (a new variant, a changed memory
limit), so it is generated, never edited by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dalston.catalog import Catalog, SpecInvalid
from dalston.tools import deployment as d

DOC = d.REPO_ROOT / "docs" / "DEPLOY.md"
BEGIN = "<!-- sizing-table:begin (python -m dalston.tools.sizing_table) -->"
END = "<!-- sizing-table:end -->"


def render_table(catalog: Catalog) -> str:
    defaults = d.load_defaults(catalog)
    rows = ["| engine id | stage | service | GPU | recommended GPU | min VRAM | RAM request / limit | weights "
            "| max concurrency | RTF GPU / CPU | warm start | compose |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for engine_id, entry in catalog.engines.items():
        spec, hw, perf = entry.spec, entry.spec.hardware, entry.spec.performance
        weights = f"{spec.weights.total_bytes / 1e9:.2f} GB" if spec.weights else "none"
        rtf = " / ".join("–" if v is None else f"{v:g}" for v in (perf.rtf_gpu, perf.rtf_cpu))
        warm = "–" if perf.warm_start_latency_ms is None else f"{perf.warm_start_latency_ms / 1000:g} s"
        compose = "default" if engine_id in defaults.default_variants else f"`--profile {engine_id}`"
        rows.append(
            f"| `{engine_id}` | {entry.stage} | `{d.service_name(entry)}` | {spec.container.gpu} "
            f"| {', '.join(hw.recommended_gpu) or '–'} | {hw.min_vram_gb:g} GB | {hw.min_ram_gb:g} GB / "
            f"{spec.container.memory} | {weights} | {spec.capabilities.max_concurrency} | {rtf} | {warm} | {compose} |")
    return "\n".join(rows)


def updated(text: str, table: str) -> str:
    if BEGIN not in text or END not in text:
        raise ValueError(f"{DOC}: markers {BEGIN!r} … {END!r} not found")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dalston.tools.sizing_table", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    try:
        text = args.doc.read_text(encoding="utf-8")
        new = updated(text, render_table(Catalog.load()))
    except (OSError, SpecInvalid, ValueError) as exc:
        print(f"sizing_table: error: {exc}", file=sys.stderr)
        return 1
    if args.check:
        if new != text:
            print(f"{args.doc}: sizing table out of date; run python -m dalston.tools.sizing_table", file=sys.stderr)
            return 1
        return 0
    args.doc.write_text(new, encoding="utf-8")
    print(f"updated {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
