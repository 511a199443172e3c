"""`dalston doctor` and the `engine_device` start line: real CTranslate2/torch, real libraries.

This machine has no GPU and no NVIDIA driver, so the CPU answers are checked with their reasons;
the driver lookup itself (the thing a Nix image gets wrong without LD_LIBRARY_PATH) is checked by
putting a real shared object named libcuda.so.1 on the library path of a fresh process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import assets

PY = [sys.executable, "-m", "dalston"]


def _env(engines: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DALSTON_ENGINES_DIR": str(engines)}
    env.pop("LD_LIBRARY_PATH", None)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def tiny_models(engines_with_test_variants: Path, session_model_root: Path) -> Path:
    assets.model_dir_for("whisper-tiny-en", session_model_root, engines_root=engines_with_test_variants)
    return session_model_root


def _doctor(engines: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PY, "doctor", *args], env=_env(engines, **env), capture_output=True, text=True, timeout=120)


def test_doctor_reports_weights_devices_library_path_and_versions(engines_with_test_variants, tiny_models):
    proc = _doctor(engines_with_test_variants, "--json", ENGINE_ID="whisper-tiny-en", DALSTON_MODEL_DIR=str(tiny_models))
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["engine_id"] == "whisper-tiny-en"
    assert facts["weights"] == "verified (sha256)" and facts["weights_dir"] == str(tiny_models / "whisper-tiny-en")
    assert (facts["runtime"], facts["device"], facts["cuda_devices"]) == ("ctranslate2", "cpu", 0)
    assert "libcuda.so.1 not loadable" in facts["cpu_reason"] and facts["library_path"] == ""
    import ctranslate2

    assert facts["versions"]["ctranslate2"] == ctranslate2.__version__
    assert facts["python"].startswith("CPython 3.")


def test_doctor_names_damaged_weights_and_exits_1(engines_with_test_variants, tmp_path):
    proc = _doctor(engines_with_test_variants, "whisper-tiny-en", "--model-dir", str(tmp_path))
    assert proc.returncode == 1
    assert "weights: NOT OK" in proc.stdout and "model.bin: missing" in proc.stdout
    assert "device: cpu" in proc.stdout and "Traceback" not in proc.stderr


def test_doctor_without_a_variant_or_with_an_unknown_one_says_so(engines_with_test_variants):
    proc = _doctor(engines_with_test_variants)
    assert proc.returncode == 2 and "set ENGINE_ID" in proc.stderr
    proc = _doctor(engines_with_test_variants, "no-such-model")
    assert proc.returncode == 2 and "no-such-model" in proc.stderr and "Traceback" not in proc.stderr


def test_torch_variant_reports_a_cpu_build(engines_with_test_variants):
    pytest.importorskip("torch")
    proc = _doctor(engines_with_test_variants, "parakeet-0.6b", "--quick", "--json")
    facts = json.loads(proc.stdout)
    import torch

    assert facts["runtime"] == "torch" and facts["device"] == "cpu"
    if torch.version.cuda is None:
        assert facts["cpu_reason"] == f"torch {facts['versions']['torch']} is a CPU-only build"


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler to build a stand-in libcuda.so.1")
def test_driver_is_found_only_through_the_library_path(engines_with_test_variants, tiny_models, tmp_path):
    """A real shared object named libcuda.so.1 (no CUDA in it) in a directory on LD_LIBRARY_PATH loads;
    CTranslate2 then still finds no device, and doctor says the driver loaded but no device is visible."""
    driver_dir = tmp_path / "driver"
    driver_dir.mkdir()
    (tmp_path / "empty.c").write_text("int dalston_not_a_driver(void) { return 0; }\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(driver_dir / "libcuda.so.1"), str(tmp_path / "empty.c")], check=True)
    proc = _doctor(engines_with_test_variants, "whisper-tiny-en", "--quick", "--json",
                   DALSTON_MODEL_DIR=str(tiny_models), LD_LIBRARY_PATH=str(driver_dir))
    facts = json.loads(proc.stdout)
    assert facts["driver"] == "libcuda.so.1 loads" and facts["library_path"] == str(driver_dir)
    assert facts["device"] == "cpu" and facts["cuda_devices"] == 0
    assert facts["cpu_reason"].startswith(("driver loaded but no CUDA device visible", "ctranslate2:"))
