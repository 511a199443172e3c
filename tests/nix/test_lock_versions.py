"""poetry2nix installs exactly what scripts/install.py installs, for both families.

The flake is evaluated with the stand-in poetry2nix, which reads poetry.lock as the real one at
ce2369db does (`marker` singular, else python-versions; a name locked twice: the last entry;
nixpkgs' setuptools/packaging instead of the locked ones; nix/overrides/ applied on top), and
reports the version it gives every locked name. scripts/install.py's own selection (markers,
extras, the version every dependent accepts) is run for the flake's interpreter (CPython 3.12,
Linux) with the family's extras, and every package it would install must have that version.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.nix.nixutil import REPO, flake_json, git_copy

pytestmark = pytest.mark.nix

SYSTEMS = {"x86_64-linux": "x86_64", "aarch64-linux": "aarch64"}
# One variant of each family: its app is the family's poetry2nix application.
FAMILIES = {"whisper": "whisper-base", "nemo": "parakeet-0.6b"}


def _install_py() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dalston_install_script", REPO / "scripts" / "install.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return git_copy(tmp_path_factory.mktemp("lock") / "repo")


@pytest.mark.parametrize("system", sorted(SYSTEMS))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_poetry2nix_versions_equal_install_py(repo: Path, family: str, system: str) -> None:
    install = _install_py()
    # One evaluation: what the family's poetry2nix application is made of.
    app = flake_json(repo, "eval", f".#packages.{system}.\"{FAMILIES[family]}\".app", "--apply",
                     "a: { inherit (a.standin) extras versions closure autoPatchelfMissing; python = { inherit (a.python) version pythonVersion; }; }")
    python = app["python"]
    env = dict(install.default_environment(), python_version=python["pythonVersion"],
               python_full_version=python["version"], sys_platform="linux", platform_system="Linux",
               os_name="posix", platform_machine=SYSTEMS[system], implementation_name="cpython",
               platform_python_implementation="CPython")
    extras = app["extras"]
    assert extras == ["server", family]
    packages, _ = install.load_lock(repo / "poetry.lock")
    plan = {name: locked.version for name, locked in install.select(packages, extras, env).items()}

    nix = app["versions"]
    differ = {name: (version, nix.get(name)) for name, version in plan.items() if nix.get(name) != version}
    assert not differ, f"{family} on {system}: install.py vs poetry2nix {differ}"
    # poetry2nix also installs what other packages' extras need (mk-poetry-dep.nix turns every extra
    # of a locked package on, e.g. aiohttp for the whisper family): more packages than install.py,
    # each at its one locked version.
    closure = set(app["closure"])
    locked = {name: [p.version for p in packages if p.name == name] for name in closure - set(plan)}
    assert all(len(v) == 1 and nix[name] == v[0] for name, v in locked.items()), locked
    assert {"numpy", "av"} <= closure and ("torch" in closure) == (family == "nemo")


@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_cuda_wheels_link(repo: Path, system: str) -> None:
    """autoPatchelf finds every library the nemo family's CUDA 13 wheels and torch link (stand-in
    verdict: poetry2nix's defaults link only nvidia-*-cu11/-cu12 names; nix/overrides/cuda-wheels.nix)."""
    app = flake_json(repo, "eval", f".#packages.{system}.\"{FAMILIES['nemo']}\".app.standin", "--apply",
                     "s: { inherit (s) autoPatchelfMissing closure; }")
    assert {"torch", "nvidia-cublas", "nvidia-cusolver", "nvidia-cudnn-cu13", "nvidia-cufile", "nvidia-nvshmem-cu13"} <= set(app["closure"])
    assert app["autoPatchelfMissing"] == {}
