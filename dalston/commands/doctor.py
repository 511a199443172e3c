"""`dalston doctor [VARIANT]`: what an operator needs to debug an engine image or install.

Prints, one `key: value` per line (or one JSON object with --json): the engine id (argument, else
$ENGINE_ID as every image sets it), the engines tree and weights directory in use, whether every
pinned weight file is present and matches its sha256 (--quick: sizes only), the devices the model
runtime sees (CTranslate2 or torch) with the reason when it is the CPU, whether the NVIDIA driver
(libcuda.so.1) loads from this library path, the library path itself, and the versions of Python,
dalston and the runtimes. In an image: `docker run --rm --gpus all IMAGE dalston doctor`.
Exit codes: 0 ok, 1 weights missing/damaged, 2 unknown variant or no variant given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

from dalston import devices
from dalston.catalog import Catalog, ModelNotFound, ModelRegistry, SpecInvalid
from dalston.weights import WeightsError, check_weights, weights_dir

VERSIONED = ("dalston", "ctranslate2", "faster-whisper", "torch", "nemo-toolkit", "numpy", "av")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("variant", nargs="?", default=None, help="variant id or alias (default $ENGINE_ID)")
    parser.add_argument("--engines-dir", type=Path, default=None,
                        help="engines tree (default $DALSTON_ENGINES_DIR or the packaged engines/)")
    parser.add_argument("--model-dir", default=None, help="root of weights dirs (default $DALSTON_MODEL_DIR)")
    parser.add_argument("--quick", action="store_true", help="check weight files by size only, no sha256")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of lines")


def _fail(message: str, code: int) -> int:
    print(f"dalston doctor: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    variant = args.variant or os.environ.get("ENGINE_ID")
    if not variant:
        return _fail("no variant: give one (dalston doctor whisper-base) or set ENGINE_ID", 2)
    try:
        catalog = Catalog.load(args.engines_dir)
    except SpecInvalid as exc:
        return _fail(f"the engines tree has invalid variant files:\n{exc}", 1)
    try:
        entry = catalog.get(ModelRegistry.from_catalog(catalog).resolve(variant))
    except ModelNotFound as exc:
        return _fail(str(exc), 2)
    spec = entry.spec

    directory = weights_dir(spec, args.model_dir)
    try:
        check_weights(spec, directory, verify=not args.quick)
        weights = "none pinned" if spec.weights is None else ("present (sizes)" if args.quick else "verified (sha256)")
        weights_ok = True
    except WeightsError as exc:
        weights, weights_ok = f"NOT OK: {exc}", False

    report = devices.probe(devices.runtime_for(spec))
    driver, why = devices.driver_loadable()
    facts: dict[str, object] = {
        "engine_id": spec.id,
        "variant_file": str(entry.path),
        "weights_dir": str(directory),
        "weights": weights,
        "runtime": report.runtime,
        "device": report.device,
        "cuda_devices": report.count,
        "cpu_reason": report.detail if report.device == "cpu" else "",
        "torch_cuda_build": report.cuda_build if report.runtime == "torch" else "",
        "driver": f"{devices.DRIVER_LIBRARY} loads" if driver else f"{devices.DRIVER_LIBRARY} not loadable: {why}",
        "library_path": devices.library_path(),
        "nvidia_visible_devices": os.environ.get("NVIDIA_VISIBLE_DEVICES", ""),
        "python": f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        "versions": {name: devices.version_of(name) or "-" for name in VERSIONED},
    }
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        for key, value in facts.items():
            if isinstance(value, dict):
                value = " ".join(f"{k}={v}" for k, v in value.items())
            print(f"{key}: {value}")
    return 0 if weights_ok else 1
