"""`dalston serve`, `dalston transcribe` and `dalston keys` as operators run them: real subprocesses."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from dalston.auth import KeyStore
from tests.fixtures import assets
from tests.fixtures.serving import free_port
from tests.server.conftest import AUTH

PY = [sys.executable, "-m", "dalston"]


def _env(engines: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "DALSTON_ENGINES_DIR": str(engines), "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def tiny_models(engines_with_test_variants: Path, session_model_root: Path) -> Path:
    assets.model_dir_for("whisper-tiny-en", session_model_root, engines_root=engines_with_test_variants)
    return session_model_root


def test_serve_refuses_missing_weights_naming_the_file(engines_with_test_variants, keys_file, tmp_path):
    result = subprocess.run([*PY, "serve", "whisper-tiny-en", "--model-dir", str(tmp_path), "--keys-file", str(keys_file)],
                            env=_env(engines_with_test_variants), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "model.bin" in result.stderr and "sha256" in result.stderr and "dalston models pull whisper-tiny-en" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_to_start_without_keys(engines_with_test_variants, tiny_models):
    env = _env(engines_with_test_variants)
    env.pop("DALSTON_KEYS_FILE", None)
    result = subprocess.run([*PY, "serve", "whisper-tiny-en", "--model-dir", str(tiny_models)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--keys-file" in result.stderr and "Traceback" not in result.stderr


def test_serve_rejects_a_keys_file_holding_plain_keys(engines_with_test_variants, tiny_models, tmp_path):
    bad = tmp_path / "keys.txt"
    bad.write_text("dk_plaintext_key\n")
    result = subprocess.run([*PY, "serve", "whisper-tiny-en", "--model-dir", str(tiny_models), "--keys-file", str(bad)],
                            env=_env(engines_with_test_variants), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and f"{bad}:1:" in result.stderr and "digest" in result.stderr


@pytest.mark.parametrize("extra, env_extra, message", [
    ([], {}, "--queue needs Redis"),
    (["--registry", "redis://127.0.0.1:1/0"], {}, "--storage-dir"),
    (["--registry", "redis://127.0.0.1:1/0", "--storage-dir", "{tmp}", "--queue-slots", "0"], {},
     "--queue-slots (or DALSTON_QUEUE_SLOTS) must be at least 1"),
    (["--registry", "redis://127.0.0.1:1/0", "--storage-dir", "{tmp}"], {"DALSTON_QUEUE_SLOTS": "two"},
     "DALSTON_QUEUE_SLOTS='two' is not a whole number"),
])
def test_serve_queue_mode_names_what_is_missing(engines_with_test_variants, tiny_models, keys_file, tmp_path,
                                               extra, env_extra, message):
    env = {**_env(engines_with_test_variants), **env_extra}
    for name in ("DALSTON_REGISTRY_URL", "DALSTON_STORAGE_DIR"):
        env.pop(name, None)
    args = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    result = subprocess.run([*PY, "serve", "whisper-tiny-en", "--model-dir", str(tiny_models), "--keys-file",
                             str(keys_file), "--queue", *args], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_serve_logs_registration_then_drains_in_flight_on_sigterm(engines_with_test_variants, tiny_models, keys_file):
    port = free_port()
    proc = subprocess.Popen([*PY, "serve", "whisper-tiny-en", "--port", str(port), "--model-dir", str(tiny_models),
                             "--keys-file", str(keys_file)], env=_env(engines_with_test_variants),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "".join(lines)
            try:
                if httpx.get(base + "/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        # The start line names the device the runtime sees and why not the GPU (dalston/devices.py).
        assert any("engine_device engine_id=whisper-tiny-en device=cpu reason=no_driver runtime=ctranslate2" in line
                   and "weights=sizes_checked" in line for line in lines), "".join(lines)
        expected = "engine_registered engine_id=whisper-tiny-en stage=transcribe device=cpu compute_type=int8"
        deadline = time.monotonic() + 10  # the reader thread may lag the process by a moment
        while expected not in "".join(lines):
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.05)

        result: dict[str, httpx.Response] = {}
        clip = assets.speech_clip("two_cities").read_bytes()

        def long_request() -> None:
            result["r"] = httpx.post(base + "/v1/audio/transcriptions", headers=AUTH, timeout=300,
                                     files={"file": ("c.wav", clip)})

        worker = threading.Thread(target=long_request)
        worker.start()
        deadline = time.monotonic() + 30
        while "dalston_requests_in_flight 1.0" not in httpx.get(base + "/metrics").text:
            assert time.monotonic() < deadline and worker.is_alive()
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        worker.join(300)
        assert result["r"].status_code == 200, result["r"].text
        assert assets.normalize_words(result["r"].json()["text"])[:5] == assets.reference_words("two_cities")[:5]
        assert proc.wait(60) == 0
        reader.join(10)
        assert "engine_draining engine_id=whisper-tiny-en" in "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_transcribe_in_process_prints_srt(engines_with_test_variants, model_dir_for, session_model_root):
    model_dir_for("whisper-base")
    env = {**_env(engines_with_test_variants), "DALSTON_MODEL_DIR": str(session_model_root)}
    result = subprocess.run([*PY, "transcribe", str(assets.speech_clip("beckett")), "--model", "fast", "--format", "srt"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("1\n00:00:0")
    spoken = " ".join(line for line in result.stdout.splitlines() if line and "-->" not in line and not line.isdigit())
    assert assets.normalize_words(spoken) == assets.reference_words("beckett")


def test_transcribe_bad_file_is_a_one_line_error(engines_with_test_variants, tmp_path):
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(random.Random(7).randbytes(4096))  # fixed bytes: some random buffers probe as a container
    result = subprocess.run([*PY, "transcribe", str(junk), "--model", "fast"], env=_env(engines_with_test_variants),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and str(junk) in result.stderr and "not decodable" in result.stderr
    assert "Traceback" not in result.stderr


def test_keys_create_prints_once_and_stores_only_the_hash(tmp_path):
    keys = tmp_path / "keys.txt"
    result = subprocess.run([*PY, "keys", "create", "--keys-file", str(keys), "--comment", "ci"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert key.startswith("dk_") and len(key) > 40
    stored = keys.read_text()
    assert key not in stored and "# ci" in stored
    store = KeyStore.from_file(keys)
    assert store.check(key) and not store.check(key + "x") and len(store) == 1
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
