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
