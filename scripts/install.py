"""Install the exact versions in poetry.lock for the chosen extras, with plain pip, then dalston itself.

WHY not `poetry install`: pip is on every machine, CI needs no Poetry, and the result is the same
set of pinned versions. The lock (format 2.1) records for every package the marker under which
it is needed (`extra == "nemo" and platform_system == "Linux"`), so selecting packages is marker
evaluation against this interpreter plus the chosen extras; where the lock holds two versions of
one name that both apply, the one every selected dependent accepts wins. Everything is installed
with `--no-deps`, so pip never re-resolves and never drifts from the lock.

Torch: on a machine without an NVIDIA driver and with a CPU build of the locked torch version
available to pip (e.g. `torch-2.13.0+cpu` via PIP_FIND_LINKS / an extra index), the CUDA runtime
wheels (nvidia-*, cuda-toolkit, triton: several GB) are skipped. If pip would pick the CUDA
build, they are installed too, because that build cannot import without them.

Usage: python scripts/install.py [--extras whisper,server] [--torch auto|cpu|cuda] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

try:
    from packaging.markers import Marker, default_environment
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:  # a fresh interpreter: pip always carries its own copy
    from pip._vendor.packaging.markers import Marker, default_environment
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.specifiers import SpecifierSet
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
CUDA_ONLY = re.compile(r"^(nvidia-.*|cuda-toolkit|triton)$")


@dataclass
class Locked:
    name: str
    version: str
    marker: Marker | None
    deps: dict[str, list[dict]] = field(default_factory=dict)


def log(message: str) -> None:
    print(f"install {message}", flush=True)


def _dep_entries(value: object) -> list[dict]:
    """A lock dependency value ("*", {version, markers}, or a list of those) as a list of dicts."""
    if isinstance(value, str):
        return [{"version": value}]
    if isinstance(value, dict):
        return [value]
    return [v if isinstance(v, dict) else {"version": v} for v in value]  # type: ignore[union-attr]


class Constraint:
    """A lock dependency constraint: Poetry writes unions as `A || B` (e.g. ">=1.10,<2.0 || >=2.4.dev0,<3"),
    which PEP 440 specifier sets cannot express, so a constraint is any-of several specifier sets."""

    def __init__(self, text: str) -> None:
        text = text.strip()
        parts = [part.strip() for part in text.split("||")] if text not in ("", "*") else []
        self.text = text if parts else ""
        self.alternatives = [SpecifierSet(f"=={part}" if part[0].isdigit() else part) for part in parts]

    def __contains__(self, version: Version) -> bool:
        return not self.alternatives or any(version in alt for alt in self.alternatives)

    def __str__(self) -> str:
        return self.text

    def __bool__(self) -> bool:
        return bool(self.alternatives)


def _spec(text: str) -> Constraint:
    """A lock constraint: "*" is anything, a bare "2.16.2" means ==2.16.2, `||` separates alternatives."""
    return Constraint(text)


def load_lock(path: Path) -> tuple[list[Locked], dict[str, list[str]]]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    lock_version = data.get("metadata", {}).get("lock-version", "0")
    if Version(lock_version) < Version("2.1"):
        sys.exit(f"{path}: lock-version {lock_version} has no per-package markers; re-lock with Poetry >= 2.0")
    packages = [
        Locked(canonicalize_name(p["name"]), p["version"], Marker(p["markers"]) if p.get("markers") else None,
               {canonicalize_name(k): _dep_entries(v) for k, v in p.get("dependencies", {}).items()})
        for p in data["package"]
    ]
    return packages, data.get("extras", {})


def applies(marker: Marker | None, extras: list[str], env: dict[str, str]) -> bool:
    """Marker truth for this interpreter with any one of `extras` requested (lock markers OR extras)."""
    if marker is None:
        return True
    return any(marker.evaluate(dict(env, extra=e)) for e in (extras or [""]))


def select(packages: list[Locked], extras: list[str], env: dict[str, str]) -> dict[str, Locked]:
    chosen: dict[str, list[Locked]] = {}
    for p in packages:
        if applies(p.marker, extras, env):
            chosen.setdefault(p.name, []).append(p)
    result = {name: cands[0] for name, cands in chosen.items() if len(cands) == 1}
    # The extras each package is asked for (torch -> cuda-toolkit[cublas,...]): a dependency's own
    # markers speak of the dependent's extras, not ours.
    asked: dict[str, list[str]] = {}
    for p in (c for cands in chosen.values() for c in cands):
        for dep, entries in p.deps.items():
            for e in entries:
                asked.setdefault(dep, []).extend(e.get("extras", []))
    for name, cands in chosen.items():
        if len(cands) == 1:
            continue
        specs = [_spec(e.get("version", "*"))
                 for p in result.values() for e in p.deps.get(name, [])
                 if applies(Marker(e["markers"]) if e.get("markers") else None, asked.get(p.name, []), env)]
        fits = [c for c in cands if all(Version(c.version) in s for s in specs)]
        if not fits:
            sys.exit(f"poetry.lock: no locked version of {name} ({', '.join(c.version for c in cands)}) "
                     f"satisfies {', '.join(map(str, specs))}")
        result[name] = max(fits, key=lambda c: Version(c.version))
    check_closed(result, asked, env)
    return result


def check_closed(plan: dict[str, Locked], asked: dict[str, list[str]], env: dict[str, str]) -> None:
    """Every dependency a selected package needs here is selected, at a version it accepts."""
    problems = []
    for p in plan.values():
        for dep, entries in p.deps.items():
            for e in entries:
                if e.get("optional") and not asked.get(p.name):
                    continue
                if not applies(Marker(e["markers"]) if e.get("markers") else None, asked.get(p.name, []), env):
                    continue
                spec = _spec(e.get("version", "*"))
                have = plan.get(dep)
                if have is None or Version(have.version) not in spec:
                    problems.append(f"{p.name}=={p.version} needs {dep}{spec or ''}, "
                                    f"plan has {have.version if have else 'nothing'}")
    if problems:
        sys.exit("poetry.lock selection is not closed (re-run `poetry lock`?):\n  " + "\n  ".join(problems))


def check_fresh(pyproject: Path, plan: dict[str, Locked], extras: list[str], env: dict[str, str]) -> None:
    """Fail early when pyproject.toml asks for something the lock does not provide (a stale lock)."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    wanted = list(project.get("dependencies", []))
    for extra in extras:
        wanted += project.get("optional-dependencies", {}).get(extra, [])
    stale = []
    for text in wanted:
        req = Requirement(text)
        if req.marker is not None and not applies(req.marker, extras, env):
            continue
        have = plan.get(canonicalize_name(req.name))
        if have is None or not req.specifier.contains(Version(have.version), prereleases=True):
            stale.append(f"{text} (locked: {have.version if have else 'nothing'})")
    if stale:
        sys.exit(f"poetry.lock is out of date with pyproject.toml: {'; '.join(stale)}\n"
                 f"fix: run `poetry lock` and commit poetry.lock")


def has_nvidia_driver() -> bool:
    return Path("/proc/driver/nvidia").exists() or shutil.which("nvidia-smi") is not None


def pip_would_pick_cpu_torch(version: str) -> bool:
    """Ask pip (dry run, no install) which torch build `torch==version` resolves to here."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--quiet", "--report", "-",
         "--ignore-installed", f"torch=={version}"], capture_output=True, text=True)
    if proc.returncode != 0:
        return False
    try:
        report = json.loads(proc.stdout)
        picked = report["install"][0]["metadata"]["version"]
    except (ValueError, KeyError, IndexError):
        return False
    return "+cpu" in picked


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def satisfied(p: Locked) -> bool:
    have = installed_version(p.name)
    return have is not None and Version(have).public == Version(p.version).public


def dalston_is_editable_here() -> bool:
    try:
        dist = metadata.distribution("dalston")
    except metadata.PackageNotFoundError:
        return False
    direct = dist.read_text("direct_url.json")
    if not direct:
        return False
    info = json.loads(direct)
    return info.get("dir_info", {}).get("editable", False) and info.get("url", "").rstrip("/") == ROOT.as_uri()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", default="whisper,server",
                        help="comma-separated extras from pyproject.toml (default: whisper,server)")
    parser.add_argument("--torch", choices=("auto", "cpu", "cuda"), default=os.environ.get("DALSTON_TORCH", "auto"),
                        help="cpu skips the CUDA runtime wheels; auto = cpu when there is no NVIDIA driver "
                             "and pip resolves torch to a +cpu build")
    parser.add_argument("--lock", type=Path, default=ROOT / "poetry.lock")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, install nothing")
    args = parser.parse_args(argv)

    packages, lock_extras = load_lock(args.lock)
    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    unknown = [e for e in extras if e not in lock_extras]
    if unknown:
        sys.exit(f"unknown extra(s) {', '.join(unknown)}; poetry.lock has: {', '.join(lock_extras)}")
    env = default_environment()
    plan = select(packages, extras, env)
    check_fresh(ROOT / "pyproject.toml", plan, extras, env)

    if "torch" in plan:
        mode = args.torch
        if mode == "auto":
            have = installed_version("torch") or ""
            cpu_ok = not has_nvidia_driver() and (
                (satisfied(plan["torch"]) and "+cpu" in have) or pip_would_pick_cpu_torch(plan["torch"].version))
            mode = "cpu" if cpu_ok else "cuda"
        if mode == "cpu":
            skipped = sorted(n for n in plan if CUDA_ONLY.match(n))
            for n in skipped:
                del plan[n]
            log(f"torch=cpu skipped={len(skipped)} (CUDA runtime wheels: {' '.join(skipped)})")
        else:
            log("torch=cuda (installing the CUDA runtime wheels torch needs)")

    todo = sorted((p for p in plan.values() if not satisfied(p)), key=lambda p: p.name)
    log(f"extras={','.join(extras) or '-'} locked={len(plan)} to_install={len(todo)}")
    if args.dry_run:
        for p in sorted(plan.values(), key=lambda p: p.name):
            print(f"{p.name}=={p.version}{'' if p in todo else '  (installed)'}")
        return 0
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "--quiet"]
    if todo:
        subprocess.run(pip + [f"{p.name}=={p.version}" for p in todo], check=True)
    if not dalston_is_editable_here():
        log("dalston: installing this checkout in editable mode")
        subprocess.run(pip + ["--editable", str(ROOT)], check=True)
    missing = [p.name for p in plan.values() if not satisfied(p)]
    if missing:
        sys.exit(f"after install, still not at the locked version: {', '.join(missing)}")
    log("done: every locked package and dalston (editable) are installed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
