"""Create a new engine family: `engines/<stage>/<name>/engine.py` plus one YAML file per variant.

    python -m dalston.tools.scaffold_engine my-asr --stage transcribe --variants small,large
    python -m dalston.tools.scaffold_engine loudness --stage prepare      # single-size: engine.yaml

The generated files validate as they are (no weights yet: pin them before shipping a model), show
up in the catalog and the model registry, and get Nix outputs, all with no other edit. Refuses to
overwrite an existing engine. Exit codes: 0 created, 1 refused or invalid, 2 usage.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import get_args

from dalston.catalog import default_root, display_path
from dalston.spec import SCHEMA_VERSION, Stage
from dalston.tools.validate_engine import validate_files

_NAME = re.compile(r"^[a-z][a-z0-9-]*[a-z0-9]$")
_VARIANT = re.compile(r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$|^[a-z0-9]$")

_VARIANT_YAML = """\
# {id}: describe what this variant is for and what it needs.
schema_version: "{schema_version}"
id: {id}
stage: {stage}
name: {title}
version: "0.1.0"
description: >
  TODO: the model, its size and what it is good at. Pin its weights (weights:
  repo, revision, files with size and sha256) and its runtime section before shipping.
container:
  gpu: optional
  memory: 4G
  model_cache: /models
capabilities:
  languages: [en]
  max_audio_duration: 3600
  streaming: {streaming}
  word_timestamps: false
  translation: false
  max_concurrency: 1
input:
  audio_formats: [{formats}]
  sample_rate: 16000
  channels: 1
hardware:
  min_vram_gb: 2
  recommended_gpu: [t4]
  supports_cpu: true
  min_ram_gb: 4
performance:
  warm_start_latency_ms: 1000
"""

_ENGINE_PY = '''\
"""The {name} engine family: one implementation shared by every variant in this directory.

Read every size-specific value from `self.spec`; once the family has a `runtime` kind, narrow it in
`__init__` with `self.runtime = self.runtime_as(MyRuntime)`. Never name a variant here. This file is
type-checked with mypy --strict in the test command. See docs/ENGINES.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dalston.engine_sdk import {base}, Transcript, TranscribeOptions{session_import}


class {cls}({base}):
    def load(self, weights_dir: Path) -> None:
        raise NotImplementedError("{name}: load the model from weights_dir (local files only)")

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        raise NotImplementedError("{name}: transcribe 16 kHz mono float32 audio")
{session_method}

ENGINE = {cls}
'''

_SESSION_METHOD = '''
    def open_session(self, language: str | None = None, turn: TurnDetection | None = None) -> StreamingSession:
        raise NotImplementedError("{name}: return a StreamingSession holding per-session state")
'''


def scaffold(root: Path, name: str, stage: str, variants: list[str]) -> list[Path]:
    """Write the family's files and return their paths; raises FileExistsError if it exists."""
    family_dir = root / stage / name
    if family_dir.exists():
        raise FileExistsError(f"{display_path(family_dir)} already exists; refusing to overwrite an engine")
    streaming = stage == "realtime"
    written: list[Path] = []
    files: dict[Path, str] = {}
    sizes: list[str | None] = [*variants] if variants else [None]  # None: one engine.yaml, no variants/
    for variant in sizes:
        engine_id = f"{name}-{variant}" if variant else name
        path = family_dir / "variants" / f"{variant}.yaml" if variant else family_dir / "engine.yaml"
        files[path] = _VARIANT_YAML.format(
            schema_version=SCHEMA_VERSION, id=engine_id, stage=stage,
            title=" ".join(part.capitalize() for part in engine_id.split("-")),
            streaming="true" if streaming else "false",
            formats="pcm16, float32" if streaming else "wav, mp3, flac, ogg, opus, m4a, webm",
        )
    cls = "".join(part.capitalize() for part in re.split(r"[-.]", name)) + "Engine"
    files[family_dir / "engine.py"] = _ENGINE_PY.format(
        name=name, cls=cls, base="StreamingEngine" if streaming else "Engine",
        session_import=", StreamingSession, TurnDetection" if streaming else "",
        session_method=_SESSION_METHOD.format(name=name) if streaming else "",
    )
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="family name, e.g. my-asr (engine ids become NAME-VARIANT)")
    parser.add_argument("--stage", required=True, choices=get_args(Stage))
    parser.add_argument("--variants", default="", help="comma-separated sizes, e.g. small,large (default: one engine.yaml)")
    parser.add_argument("--root", type=Path, default=None, help="engines root (default: $DALSTON_ENGINES_DIR or ./engines)")


def run(args: argparse.Namespace) -> int:
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not _NAME.match(args.name):
        print(f"scaffold_engine: name '{args.name}' must match {_NAME.pattern}", file=sys.stderr)
        return 2
    bad = [v for v in variants if not _VARIANT.match(v)]
    if bad or len(set(variants)) != len(variants):
        print(f"scaffold_engine: bad or repeated variant names: {', '.join(bad) or args.variants}", file=sys.stderr)
        return 2
    root = args.root or default_root()
    try:
        written = scaffold(root, args.name, args.stage, variants)
    except FileExistsError as exc:
        print(f"scaffold_engine: {exc}", file=sys.stderr)
        return 1
    _, problems = validate_files([p for p in written if p.suffix == ".yaml"])
    for path in written:
        print(f"created {display_path(path)}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dalston.tools.scaffold_engine", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
