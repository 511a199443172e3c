"""Run real Nix evaluations and builds for the tests under tests/nix/.

WHY a helper: every Nix test needs the same environment (flakes on, no substituters so an offline
machine never retries a binary cache) and the same skip rule (skip only when Nix is absent).
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
NIX_DIR = REPO / "nix"

HAVE_NIX = shutil.which("nix-instantiate") is not None
requires_nix = pytest.mark.skipif(not HAVE_NIX, reason="nix-instantiate not on PATH (install nix-bin)")


def _no_build_users() -> bool:
    """Root without the `nixbld` group (Debian's nix-bin does not create it): build as root itself."""
    if os.geteuid() != 0:
        return False
    try:
        grp.getgrnam("nixbld")
    except KeyError:
        return True
    return False


NIX_CONFIG = "experimental-features = nix-command flakes\nsubstituters =\n" + (
    "build-users-group =\n" if _no_build_users() else ""
)


def nix_env(**extra: str) -> dict[str, str]:
    """The environment every Nix call gets: flakes enabled, no binary cache, offline hubs."""
    env = dict(os.environ)
    env["NIX_CONFIG"] = NIX_CONFIG
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env.update(extra)
    return env


def nix_literal(value: str | Path) -> str:
    """A Nix string literal for `value` (paths are passed as strings and turned into paths by callers)."""
    return json.dumps(str(value)).replace("${", "\\${")


def run(args: list[str], *, cwd: Path | None = None, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd or REPO, env=nix_env(**env), capture_output=True, text=True, timeout=timeout)


def eval_json(expr: str, *, cwd: Path | None = None, timeout: float = 300) -> Any:
    """`nix-instantiate --eval --strict --json -E expr`, parsed; fails the test with Nix's stderr."""
    proc = run(["nix-instantiate", "--eval", "--strict", "--json", "-E", expr], cwd=cwd, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"nix evaluation failed:\n{proc.stderr}")
    return json.loads(proc.stdout)


def eval_error(expr: str, *, cwd: Path | None = None) -> str:
    """Evaluate `expr`, which must fail; return Nix's error text."""
    proc = run(["nix-instantiate", "--eval", "--strict", "--json", "-E", expr], cwd=cwd)
    assert proc.returncode != 0, f"expected evaluation to fail, got {proc.stdout[:500]}"
    return proc.stderr


# --- flakes ------------------------------------------------------------------------------------

STANDINS = REPO / "tests" / "nix" / "standins"
SYSTEMS = ("x86_64-linux", "aarch64-linux")


def standin_flags(root: Path) -> list[str]:
    """Replace the three real inputs (unreachable offline) with the stand-in flakes under `root`.

    The stand-ins check the wiring only (see tests/nix/standins/README.md); nothing is built.
    """
    flags = ["--no-write-lock-file"]
    for name in ("nixpkgs", "nix2container", "poetry2nix"):
        flags += ["--override-input", name, f"path:{root / 'tests' / 'nix' / 'standins' / name}"]
    return flags


def git_copy(dest: Path) -> Path:
    """A fresh git repository at `dest` with this repository's tracked files (flakes see only those)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    dest.mkdir(parents=True, exist_ok=True)
    for rel in filter(None, listed.decode().split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "copy")
    return dest


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.email=nix-tests@dalston.invalid", "-c", "user.name=nix tests", *args],
        cwd=repo, capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def flake(repo: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`nix <args> <flake flags>` in `repo` with the stand-in inputs; the caller checks returncode."""
    return run(["nix", *args, *standin_flags(repo)], cwd=repo, timeout=timeout)


def flake_json(repo: Path, *args: str, timeout: float = 600) -> Any:
    proc = flake(repo, *args, "--json", timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"nix {' '.join(args)} failed:\n{proc.stderr}")
    return json.loads(proc.stdout)
