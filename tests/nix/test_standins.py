"""The stand-ins model the real tools where the flake's correctness depends on them.

Each test evaluates a stand-in directly (nix-instantiate, no flake) on a small input shaped like the
one that broke the real build, and shows that the stand-in reproduces the real tool's behaviour
(and so fails the old wiring) while the fixed wiring in nix/ passes. What each stand-in was checked
against (repository, revision, path) is in its header and in docs/NIX.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.nix.nixutil import NIX_DIR, STANDINS, eval_error, eval_json, nix_literal

pytestmark = pytest.mark.nix

PRELUDE = f"""
let
  b = builtins;
  pkgs = import {STANDINS}/nixpkgs/default.nix {{
    system = "x86_64-linux";
    config.allowUnfreePredicate = (import {NIX_DIR}/lib/runtime-family.nix).isCudaRuntime;
  }};
  n2c = import {STANDINS}/nix2container/nix2container.nix {{ inherit pkgs; }};
  p2n = import {STANDINS}/poetry2nix/poetry2nix.nix {{ inherit pkgs; }};
  cuda = pkgs.cudaPackages_12.libcublas.lib;
  app = pkgs.runCommand "app" {{ }} "ln -s ${{pkgs.python312}}/bin/python3 $out";
  config = {{ Env = [ "PATH=${{app}}/bin" "LD_LIBRARY_PATH=${{cuda}}/lib" ]; }};
  paths = image: map (l: l.paths) image.standin.layers;
in
"""


def _dupes(layers: list[list[str]]) -> set[str]:
    seen: set[str] = set()
    dupes: set[str] = set()
    for paths in layers:
        dupes |= seen & set(paths)
        seen |= set(paths)
    return dupes


# --- nix2container -------------------------------------------------------------------------------

def test_nix2container_dedupes_against_direct_layers_only_and_adds_the_config_closure() -> None:
    """The old nested chain (deps <- cuda <- app <- weights, image layers = [weights]) repeats the
    interpreter in deps, app and the config layer, and app and CUDA in the config layer."""
    got = eval_json(PRELUDE + """
    let
      weights = pkgs.runCommand "weights" { } "mkdir $out";
      deps = n2c.buildLayer { deps = [ pkgs.python312 ]; };
      cudaL = n2c.buildLayer { deps = [ cuda ]; layers = [ deps ]; };
      appNested = n2c.buildLayer { deps = [ app ]; layers = [ cudaL ]; };
      weightsNested = n2c.buildLayer { deps = [ weights ]; layers = [ appNested ]; };
      appFlat = n2c.buildLayer { deps = [ app ]; layers = [ deps cudaL ]; };
      weightsFlat = n2c.buildLayer { deps = [ weights ]; layers = [ deps cudaL appFlat ]; };
      nested = n2c.buildImage { name = "x"; inherit config; layers = [ weightsNested ]; };
    in {
      nested = paths nested;
      nestedLast = b.elemAt nested.standin.layers 4;
      flat = (n2c.buildImage { name = "x"; inherit config; layers = [ deps cudaL appFlat weightsFlat ]; }).standin.layers;
      python = pkgs.python312.outPath;
      cuda = cuda.outPath;
      app = app.outPath;
    }""")
    nested = got["nested"]
    assert len(nested) == 5, "deps, cuda, app, weights, and the customization layer of the config's closure"
    assert _dupes(nested) == {got["python"], got["cuda"], got["app"]}
    assert got["nestedLast"]["customization"] is True
    assert sorted(got["nestedLast"]["paths"]) == sorted([got["python"], got["cuda"], got["app"]])
    flat = got["flat"]
    assert [len(l["paths"]) for l in flat] == [1, 1, 1, 1] and not any(l["customization"] for l in flat)
    assert _dupes([l["paths"] for l in flat]) == set()


def test_nix2container_same_layer_inputs_give_one_digest_and_an_image_lists_it_once() -> None:
    got = eval_json(PRELUDE + """
    let
      deps = n2c.buildLayer { deps = [ pkgs.python312 ]; };
      again = n2c.buildLayer { deps = [ pkgs.python312 ]; };
      img = n2c.buildImage { name = "x"; layers = [ deps again ]; };
    in { a = deps.standin.digest; b = again.standin.digest; n = b.length img.standin.layers; }""")
    assert got["a"] == got["b"] and got["n"] == 1


# --- poetry2nix ---------------------------------------------------------------------------------------

LOCK_DUPLICATES = """
[[package]]
name = "numpy"
version = "2.4.6"
python-versions = ">=3.11"
markers = "python_version < \\"3.13\\""
files = [{file = "numpy-2.4.6.tar.gz", hash = "sha256:00"}]

[[package]]
name = "numpy"
version = "2.5.5"
python-versions = ">=3.12"
markers = "python_version == \\"3.13\\""
files = [{file = "numpy-2.5.5.tar.gz", hash = "sha256:00"}]

[[package]]
name = "setuptools"
version = "84.2.1"
python-versions = ">=3.9"
files = [{file = "setuptools-84.2.1.tar.gz", hash = "sha256:00"}]

[[package]]
name = "packaging"
version = "24.2"
python-versions = ">=3.8"
files = [{file = "packaging-24.2.tar.gz", hash = "sha256:00"}]

[metadata]
lock-version = "2.1"
python-versions = ">=3.11,<3.14"
"""

PYPROJECT = """
[tool.poetry]
name = "demo"
version = "0.1.0"
[tool.poetry.dependencies]
python = ">=3.11"
{deps}
"""


def _project(tmp: Path, lock: str, deps: list[str]) -> tuple[str, str]:
    (tmp / "poetry.lock").write_text(lock)
    (tmp / "pyproject.toml").write_text(PYPROJECT.format(deps="\n".join(f'"{d}" = "*"' for d in deps)))
    return nix_literal(tmp / "pyproject.toml"), nix_literal(tmp / "poetry.lock")


def _packages(pyproject: str, lock: str, overrides: str) -> str:
    return (f"p2n.mkPoetryPackages {{ pyproject = /. + {pyproject}; poetrylock = /. + {lock}; "
            f"python = pkgs.python312; preferWheels = true; overrides = {overrides}; }}")


def test_poetry2nix_ignores_markers_takes_the_last_duplicate_and_nixpkgs_build_tools(tmp_path: Path) -> None:
    """Poetry 2's `markers` are never read: Python 3.12 gets numpy 2.5.5 (locked for 3.13 only),
    and nixpkgs' setuptools/packaging replace the locked ones."""
    pyproject, lock = _project(tmp_path, LOCK_DUPLICATES, ["numpy", "setuptools", "packaging"])
    versions = eval_json(PRELUDE + f"({_packages(pyproject, lock, 'p2n.defaultPoetryOverrides')}).standin.versions")
    assert versions["numpy"] == "2.5.5"
    nixpkgs = eval_json(PRELUDE + "b.mapAttrs (_: p: p.version) pkgs.python312.pkgs")
    assert versions["setuptools"] == nixpkgs["setuptools"] != "84.2.1"
    assert versions["packaging"] == nixpkgs["packaging"] != "24.2"


def test_poetry2nix_reads_marker_singular(tmp_path: Path) -> None:
    """A lock entry with `marker` (Poetry 1's key) is selected by it, python-versions unread."""
    lock = LOCK_DUPLICATES.replace('markers = "python_version == \\"3.13\\""', 'marker = "python_version == \\"3.13\\""')
    pyproject, path = _project(tmp_path, lock, ["numpy"])
    versions = eval_json(PRELUDE + f"({_packages(pyproject, path, 'p2n.defaultPoetryOverrides')}).standin.versions")
    assert versions["numpy"] == "2.4.6"


def test_dalston_overrides_refuse_a_duplicate_and_keep_locked_build_tools(tmp_path: Path) -> None:
    ours = f"(p2n.defaultPoetryOverrides.extend (import {NIX_DIR}/overrides/locked-versions.nix {{ lock = b.fromTOML (b.readFile (/. + LOCK)); pwd = /tmp; }}))"
    pyproject, lock = _project(tmp_path, LOCK_DUPLICATES, ["numpy", "setuptools", "packaging"])
    error = eval_error(PRELUDE + f"({_packages(pyproject, lock, ours.replace('LOCK', lock))}).standin.versions")
    assert "poetry.lock has more than one entry for numpy (2.4.6, 2.5.5)" in error

    single = LOCK_DUPLICATES.split("[[package]]")
    del single[2]  # the 3.13 numpy entry
    pyproject, lock = _project(tmp_path, "[[package]]".join(single), ["numpy", "setuptools", "packaging"])
    versions = eval_json(PRELUDE + f"({_packages(pyproject, lock, ours.replace('LOCK', lock))}).standin.versions")
    assert versions == {"numpy": "2.4.6", "setuptools": "84.2.1", "packaging": "24.2"}


def _wheel(name: str, version: str, deps: list[str]) -> str:
    dep_table = "".join(f'\n[package.dependencies]\n' if i == 0 else "" for i in range(1 if deps else 0))
    dep_lines = "".join(f'{d} = "*"\n' for d in deps)
    return (f'[[package]]\nname = "{name}"\nversion = "{version}"\npython-versions = ">=3"\n'
            f'files = [{{file = "{name.replace("-", "_")}-{version}-py3-none-manylinux_2_27_x86_64.whl", hash = "sha256:00"}}]\n'
            f"{dep_table}{dep_lines}\n")


CUDA13_LOCK = "".join([
    _wheel("nvidia-cublas", "13.1.1.3", []),
    _wheel("nvidia-nvjitlink", "13.5.37", []),
    _wheel("nvidia-cusparse", "12.6.3.3", ["nvidia-nvjitlink"]),
    _wheel("nvidia-cusolver", "12.0.4.66", ["nvidia-cublas", "nvidia-cusparse", "nvidia-nvjitlink"]),
    _wheel("nvidia-cudnn-cu13", "9.20.0.48", ["nvidia-cublas"]),
    _wheel("nvidia-cufile", "1.15.1.6", []),
    _wheel("nvidia-nvshmem-cu13", "3.4.5", []),
    _wheel("nvidia-cublas-cu12", "12.8.4.1", []),
]) + '[metadata]\nlock-version = "2.1"\npython-versions = ">=3.11"\n'


def test_poetry2nix_defaults_link_only_cu11_cu12_wheels_and_dalston_overrides_link_cuda13(tmp_path: Path) -> None:
    deps = ["nvidia-cusolver", "nvidia-cudnn-cu13", "nvidia-cufile", "nvidia-nvshmem-cu13", "nvidia-cublas-cu12"]
    pyproject, lock = _project(tmp_path, CUDA13_LOCK, deps)
    defaults = eval_json(PRELUDE + f"""
      let r = {_packages(pyproject, lock, 'p2n.defaultPoetryOverrides')}; in {{
        missing = r.standin.autoPatchelfMissing;
        cu12 = r.python.pkgs.nvidia-cublas-cu12.postFixup or "";
        cu13 = r.python.pkgs.nvidia-cublas.postFixup or "";
      }}""")
    assert "$out/lib" in defaults["cu12"] and defaults["cu13"] == ""
    assert defaults["missing"] == {
        "nvidia-cusolver": ["libcublas.so.13", "libcublasLt.so.13", "libcusparse.so.12", "libnvJitLink.so.13"],
        "nvidia-cusparse": ["libnvJitLink.so.13"],
        "nvidia-cublas": ["libcuda.so.1"],
        "nvidia-cudnn-cu13": ["libcublas.so.13", "libcublasLt.so.13", "libcuda.so.1"],
        "nvidia-cufile": ["libcuda.so.1", "libibverbs.so.1", "librdmacm.so.1", "libnuma.so.1"],
        "nvidia-nvshmem-cu13": ["libcuda.so.1", "libmpi.so.40", "libpmix.so.2", "libucp.so.0", "libucs.so.0", "libfabric.so.1"],
    }
    ours = f"(p2n.defaultPoetryOverrides.extend (import {NIX_DIR}/overrides/cuda-wheels.nix {{ lock = b.fromTOML (b.readFile (/. + {lock})); }}))"
    fixed = eval_json(PRELUDE + f"({_packages(pyproject, lock, ours)}).standin.autoPatchelfMissing")
    assert fixed == {}


# --- nixpkgs --------------------------------------------------------------------------------------------

def test_nixpkgs_refuses_unfree_cuda_unless_the_predicate_allows_it() -> None:
    error = eval_error(f'(import {STANDINS}/nixpkgs/default.nix {{ system = "x86_64-linux"; }}).cudaPackages.libcublas.name')
    assert "Package 'libcublas-12.8.4.1' has an unfree license" in error
    got = eval_json(PRELUDE + """{
      major = pkgs.cudaPackages.cudaMajorVersion;
      same = pkgs.cudaPackages_12.libcublas.outPath == pkgs.cudaPackages.libcublas.outPath;
      driver = pkgs.addDriverRunpath.driverLink;
    }""")
    assert got == {"major": "12", "same": True, "driver": "/run/opengl-driver"}
