"""`dalston` command line: one table of subcommands, each implemented in its own module.

A subcommand module defines `add_arguments(parser)` and `run(args) -> int`; modules are imported
only when their subcommand runs, so `dalston schema` works without the server or model extras.
Exit codes: 0 ok, 1 failure/invalid input, 2 usage.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("dalston.server.main", "serve one engine variant over HTTP (OpenAI audio API + realtime)"),
    "transcribe": ("dalston.commands.transcribe", "transcribe a file in process, no server"),
    "stream": ("dalston.commands.stream", "stream a file to a realtime endpoint and print partials/finals"),
    "gateway": ("dalston.gateway.main", "run the gateway that routes requests to engines by model"),
    "orchestrator": ("dalston.jobs.main", "run a batch-job orchestrator (prepare, chunk, merge) on the shared Redis"),
    "jobs": ("dalston.commands.jobs", "submit a batch job to a gateway, follow its progress, write the result"),
    "models": ("dalston.commands.models", "list models, pull or verify pinned weights"),
    "keys": ("dalston.commands.keys", "create API keys (stored as SHA-256 hashes)"),
    "schema": ("dalston.commands.schema", "print the JSON Schema of variant files"),
    "validate": ("dalston.tools.validate_engine", "validate engine variant files"),
    "doctor": ("dalston.commands.doctor", "debug an engine install/image: weights, devices, library path, versions"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dalston", description="Speech-to-text engines, one per model variant.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        parser = build_parser()
        if argv and argv[0] not in ("-h", "--help"):
            parser.print_usage(sys.stderr)
            print(f"dalston: error: unknown command '{argv[0]}' (choose from {', '.join(SUBCOMMANDS)})", file=sys.stderr)
            return 2
        parser.print_help()
        return 0 if argv else 2
    name = argv[0]
    module_name, help_text = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        print(f"dalston {name}: unavailable ({exc}); install the matching extra, e.g. pip install 'dalston[server,whisper]'",
              file=sys.stderr)
        return 1
    parser = argparse.ArgumentParser(prog=f"dalston {name}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
