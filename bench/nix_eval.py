"""Flake evaluation time against the number of variant files (target: linear, < 10 s for 200).

    python bench/nix_eval.py [--sizes 50,100,200] [--repeat 3] [--output FILE]

For the shipped variants and for trees with N generated variants (copies of the shipped Whisper and
Parakeet variant files under new ids, half each, in two generated families), each in its own
temporary git copy of the repository, it times with real Nix:

  parse   nix-instantiate --eval --strict --json nix/variants.nix   (discovery + YAML reader only)
  names   nix eval .#packages.x86_64-linux --apply builtins.attrNames
  show    nix flake show --json                                    (both systems)
  check   nix flake check --no-build                               (instantiates every output, both systems)

The flake commands run with the STAND-IN inputs of tests/nix/standins (nixpkgs, nix2container and
poetry2nix cannot be fetched here), so the numbers are the cost of this repository's Nix code:
discovery, YAML parsing, per-variant weights/engines trees, package/image/app wiring, and the
derivations Nix writes. A real nixpkgs adds its own (constant, per-system) evaluation cost on top.
The evaluation cache is off, so every run evaluates. Median of --repeat runs.

Prints a table and writes JSON (default bench/results/nix_eval.json; bench/results/ is gitignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.nix.nixutil import git_copy, git, nix_env, standin_flags  # noqa: E402

TARGET_SECONDS_200 = 10.0
SOURCES = {  # generated family -> (stage, shipped family whose files it copies, variant file)
    "bench-whisper": ("transcribe", "whisper", "base.yaml"),
    "bench-parakeet": ("transcribe", "parakeet", "0.6b.yaml"),
}


def generate(repo: Path, count: int) -> None:
    """Add `count` variant files (split over the two generated families) and commit them."""
    for index, (family, (stage, shipped, variant)) in enumerate(SOURCES.items()):
        share = count // len(SOURCES) + (1 if index < count % len(SOURCES) else 0)
        source_dir = repo / "engines" / stage / shipped
        target = repo / "engines" / stage / family
        (target / "variants").mkdir(parents=True)
        if (source_dir / "engine.py").exists():
            shutil.copy2(source_dir / "engine.py", target / "engine.py")
        text = (source_dir / "variants" / variant).read_text()
        old_id = f"id: {shipped}-{Path(variant).stem}"
        assert old_id in text, f"{source_dir / 'variants' / variant} has no '{old_id}'"
        for i in range(share):
            (target / "variants" / f"v{i:03d}.yaml").write_text(text.replace(old_id, f"id: {family}-v{i:03d}"))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"{count} generated variants")


def timed(args: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=nix_env(), capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])} failed in {cwd}:\n{proc.stderr[-3000:]}")
    return elapsed


def measure(repo: Path, repeat: int) -> dict[str, float]:
    flags = standin_flags(repo) + ["--option", "eval-cache", "false"]
    commands = {
        "parse": ["nix-instantiate", "--eval", "--strict", "--json", "nix/variants.nix"],
        "names": ["nix", "eval", "--json", ".#packages.x86_64-linux", "--apply", "builtins.attrNames", *flags],
        "show": ["nix", "flake", "show", "--json", *flags],
        "check": ["nix", "flake", "check", "--no-build", *flags],
    }
    timed(commands["names"], repo)  # warm-up: copies the flake and the stand-ins into the store once
    return {name: statistics.median(timed(cmd, repo) for _ in range(repeat)) for name, cmd in commands.items()}


def variant_count(repo: Path) -> int:
    out = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "-E",
                          "builtins.length (builtins.attrNames (import ./nix/variants.nix))"],
                         cwd=repo, env=nix_env(), capture_output=True, text=True, check=True).stdout
    return int(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="50,100,200", help="generated variant counts (default 50,100,200)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "nix_eval.json")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]

    rows = []
    with tempfile.TemporaryDirectory(prefix="dalston-nix-bench-") as tmp:
        for label, extra in [("shipped", 0)] + [(f"+{n} generated", n) for n in sizes]:
            repo = git_copy(Path(tmp) / f"repo-{extra}")
            if extra:
                generate(repo, extra)
            total = variant_count(repo)
            times = measure(repo, args.repeat)
            rows.append({"tree": label, "generated": extra, "variants": total, **{k: round(v, 3) for k, v in times.items()}})
            print(f"bench nix_eval tree={label.replace(' ', '_')} variants={total} "
                  + " ".join(f"{k}_s={v:.2f}" for k, v in times.items()), file=sys.stderr)
            shutil.rmtree(repo)

    nix_version = subprocess.run(["nix", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"\nFlake evaluation time ({nix_version}, stand-in inputs, median of {args.repeat}, seconds)\n")
    header = f"{'tree':<16} {'variants':>8} {'parse':>7} {'names':>7} {'show':>7} {'check':>7} {'check ms/variant':>17}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['tree']:<16} {r['variants']:>8} {r['parse']:>7.2f} {r['names']:>7.2f} {r['show']:>7.2f} "
              f"{r['check']:>7.2f} {1000 * r['check'] / r['variants']:>17.1f}")

    # Linearity: the slope between consecutive generated sizes, in ms per added variant.
    generated = [r for r in rows if r["generated"]]
    slopes = []
    for a, b in zip(generated, generated[1:]):
        for key in ("parse", "names", "show", "check"):
            slopes.append({"from": a["variants"], "to": b["variants"], "what": key,
                           "ms_per_variant": round(1000 * (b[key] - a[key]) / (b["variants"] - a["variants"]), 2)})
    if slopes:
        print("\nms per added variant between sizes (constant slope = linear):")
        for key in ("parse", "names", "show", "check"):
            print(f"  {key:<6} " + "  ".join(f"{s['from']}->{s['to']}: {s['ms_per_variant']:.1f}" for s in slopes if s["what"] == key))
    at_200 = next((r for r in rows if r["generated"] == 200), None)
    verdict = None
    if at_200 is not None:
        worst = max(at_200[k] for k in ("parse", "names", "show", "check"))
        verdict = worst < TARGET_SECONDS_200
        print(f"\n200 generated variants ({at_200['variants']} in all): slowest command {worst:.2f} s "
              f"(target < {TARGET_SECONDS_200:.0f} s): {'PASS' if verdict else 'FAIL'}")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "benchmark": "nix_eval",
        "nix": nix_version,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "inputs": "stand-ins (tests/nix/standins)",
        "repeat": args.repeat,
        "rows": rows,
        "slopes": slopes,
        "target_seconds_at_200": TARGET_SECONDS_200,
        "pass_at_200": verdict,
    }, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0 if verdict in (None, True) else 1


if __name__ == "__main__":
    sys.exit(main())
