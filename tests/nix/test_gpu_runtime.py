"""The CUDA libraries a whisper GPU image ships are the ones CTranslate2's wheel loads.

CTranslate2's Linux wheel links the CUDA runtime statically and dlopens cuBLAS by soname
(`libcublas.so.<major>`); the image puts nixpkgs' `cudaPackages_<major>.libcublas` on the library
path (nix/lib/runtime-family.nix). A wheel built for another CUDA major would find nothing there
and fall back to the CPU. This reads the sonames from the installed wheel (the locked version)
and holds the major equal to the Nix side's; it also pins that the wheel needs no cuDNN, which
is why whisper images no longer carry it.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from tests.nix.nixutil import NIX_DIR, REPO, STANDINS, eval_error, eval_json

pytestmark = pytest.mark.nix


def _libctranslate2() -> bytes:
    pytest.importorskip("ctranslate2")
    dist = metadata.distribution("ctranslate2")
    libs = [Path(str(dist.locate_file(f))) for f in dist.files or [] if re.search(r"libctranslate2[^/]*\.so", str(f))]
    assert libs, "no libctranslate2 shared object in the installed ctranslate2 wheel"
    return libs[0].read_bytes()


def test_ctranslate2_wheel_cuda_major_is_the_one_the_image_ships() -> None:
    locked = {p["name"]: p["version"] for p in tomllib.loads((REPO / "poetry.lock").read_text())["package"]}
    assert metadata.version("ctranslate2") == locked["ctranslate2"], "installed ctranslate2 is not the locked one"
    data = _libctranslate2()
    cublas = set(re.findall(rb"libcublas\.so\.(\d+)", data))
    assert len(cublas) == 1, cublas
    major = eval_json(f"(import {NIX_DIR}/lib/runtime-family.nix).ctranslate2CudaMajor")
    assert cublas == {major.encode()}
    assert b"libcudnn" not in data, "this CTranslate2 loads cuDNN: add cudaPackages.cudnn back to the whisper CUDA layer"


def test_cuda_package_set_is_chosen_by_that_major() -> None:
    pkgs = f'import {STANDINS}/nixpkgs/default.nix {{ system = "x86_64-linux"; config.allowUnfreePredicate = _: true; }}'
    family = f"import {NIX_DIR}/lib/runtime-family.nix"
    got = eval_json(f"let f = {family}; p = {pkgs}; in (f.cudaPackagesFor p).cudaMajorVersion")
    assert got == "12"
    error = eval_error(f"let f = {family}; p = {pkgs}; in (f.cudaPackagesFor (p // {{ cudaPackages_12 = p.cudaPackages_12 // {{ cudaMajorVersion = \"13\"; }}; }})).cudaMajorVersion")
    assert "CTranslate2 needs 12" in error
