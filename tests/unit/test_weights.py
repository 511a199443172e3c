"""Weights on disk and `dalston models pull` against a real HTTP server on loopback serving the real test weights.

The server lays files out as the hub does (`<repo>/resolve/<revision>/<file>`), honours or ignores
Range on demand, can cut a response mid-file, or flip one byte; every request it receives is logged
so the tests can assert what the client actually sent.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dalston.catalog import Catalog
from dalston.spec import EngineSpec
from dalston.weights import WeightsError, check_weights, pull, weights_dir

TINY = "whisper-tiny-en"


@dataclass
class Behaviour:
    honor_range: bool = True
    cut_after: dict[str, int] = field(default_factory=dict)  # file name -> bytes sent before the cut (once)
    corrupt: set[str] = field(default_factory=set)  # file names served with one byte flipped
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    files: dict[str, Path]
    behaviour: Behaviour

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        b = self.behaviour
        b.requests.append((self.path, self.headers.get("Range")))
        source = self.files.get(self.path)
        if source is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = source.stat().st_size
        start = 0
        rng = self.headers.get("Range")
        if rng and b.honor_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(size - start))
        self.send_header("Accept-Ranges", "bytes" if b.honor_range else "none")
        self.end_headers()
        name = source.name
        cut = b.cut_after.pop(name, None)
        with source.open("rb") as fh:
            fh.seek(start)
            pos = start
            while chunk := fh.read(1 << 20):
                if name in b.corrupt and pos <= size // 2 < pos + len(chunk):
                    i = size // 2 - pos
                    chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1:]
                if cut is not None and pos + len(chunk) >= cut:
                    self.wfile.write(chunk[:cut - pos])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(chunk)
                pos += len(chunk)


@pytest.fixture(scope="module")
def catalog(engines_with_test_variants: Path) -> Catalog:
    return Catalog.load(engines_with_test_variants)


@pytest.fixture(scope="module")
def tiny(catalog: Catalog) -> EngineSpec:
    return catalog.get(TINY).spec


@pytest.fixture
def hub(catalog: Catalog, whisper_tiny_en_dir: Path, whisper_base_dir: Path) -> Iterator[tuple[str, Behaviour]]:
    """(base URL, behaviour): the tiny.en test variant and whisper-base served at their pinned revisions."""
    files: dict[str, Path] = {}
    for variant, source in ((TINY, whisper_tiny_en_dir), ("whisper-base", whisper_base_dir)):
        w = catalog.get(variant).spec.weights
        for wf in w.files:
            files["/" + w.url_for(wf, "").lstrip("/")] = source / wf.name
    behaviour = Behaviour()
    handler = type("Handler", (_Handler,), {"files": files, "behaviour": behaviour})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", behaviour
    finally:
        server.shutdown()
        server.server_close()


def _only(spec: EngineSpec, *names: str) -> EngineSpec:
    """The same variant pinning a subset of its files (keeps the single-file tests quick)."""
    files = [f for f in spec.weights.files if f.name in names]
    return spec.model_copy(update={"weights": spec.weights.model_copy(update={"files": files})})


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- weights_dir / check_weights ------------------------------------------------------------------

def test_weights_dir_prefers_argument_then_env_then_model_cache(tiny: EngineSpec, monkeypatch) -> None:
    monkeypatch.delenv("DALSTON_MODEL_DIR", raising=False)
    assert weights_dir(tiny) == Path(tiny.container.model_cache) / TINY
    monkeypatch.setenv("DALSTON_MODEL_DIR", "/env/models")
    assert weights_dir(tiny) == Path("/env/models") / TINY
    assert weights_dir(tiny, "/arg") == Path("/arg") / TINY


def test_check_weights_accepts_the_real_files(tiny: EngineSpec, whisper_tiny_en_dir: Path) -> None:
    check_weights(tiny, whisper_tiny_en_dir, verify=True)


def test_check_weights_lists_every_problem_with_path_pin_finding_and_fix(
        tiny: EngineSpec, whisper_tiny_en_dir: Path, tmp_path: Path) -> None:
    directory = tmp_path / TINY
    directory.mkdir()
    (directory / "model.bin").symlink_to(whisper_tiny_en_dir / "model.bin")
    (directory / "tokenizer.json").write_bytes(b"{}")
    config = bytearray((whisper_tiny_en_dir / "config.json").read_bytes())
    config[10] ^= 0xFF  # same size, other bytes: only verify sees it
    (directory / "config.json").write_bytes(bytes(config))
    pins = {f.name: f for f in tiny.weights.files}

    with pytest.raises(WeightsError) as err:
        check_weights(tiny, directory)
    message = str(err.value)
    assert TINY in message and "2 problem(s)" in message
    assert f"{directory / 'vocabulary.txt'}: missing (expected {pins['vocabulary.txt'].size} bytes, " \
           f"sha256 {pins['vocabulary.txt'].sha256})" in message
    assert f"{directory / 'tokenizer.json'}: wrong size: expected {pins['tokenizer.json'].size} bytes, " \
           f"sha256 {pins['tokenizer.json'].sha256}, found 2 bytes" in message
    assert "config.json" not in message
    assert f"fix: dalston models pull {TINY} --model-dir {tmp_path}" in message

    with pytest.raises(WeightsError) as err:
        check_weights(tiny, directory, verify=True)
    assert "3 problem(s)" in str(err.value)
    assert f"{directory / 'config.json'}: wrong content: expected sha256 {pins['config.json'].sha256}, " \
           f"found sha256 {_sha(directory / 'config.json')}" in str(err.value)


def test_check_weights_names_a_missing_directory_and_every_file(tiny: EngineSpec, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"weights directory does not exist") as err:
        check_weights(tiny, tmp_path / TINY)
    for wf in tiny.weights.files:
        assert f"{tmp_path / TINY / wf.name}: missing (expected {wf.size} bytes, sha256 {wf.sha256})" in str(err.value)


# --- pull -----------------------------------------------------------------------------------------

def test_pull_fetches_every_pinned_file_then_skips_correct_ones(hub, tiny: EngineSpec, tmp_path: Path) -> None:
    base, behaviour = hub
    dest = pull(tiny, tmp_path / TINY, mirrors=[base], progress=False)
    check_weights(tiny, dest, verify=True)
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".")) == sorted(
        f.name for f in tiny.weights.files)
    assert [p for p, _ in behaviour.requests] == [
        f"/Systran/faster-whisper-tiny.en/resolve/{tiny.weights.revision}/{f.name}" for f in tiny.weights.files]

    behaviour.requests.clear()
    pull(tiny, dest, mirrors=[base], progress=False)
    assert behaviour.requests == []


def test_pull_resumes_an_interrupted_download_with_range(hub, tiny: EngineSpec, tmp_path: Path) -> None:
    base, behaviour = hub
    spec = _only(tiny, "model.bin")
    behaviour.cut_after["model.bin"] = 30_000_000
    with pytest.raises(WeightsError) as err:
        pull(spec, tmp_path, mirrors=[base], progress=False, retries=0)
    assert "partial download is kept" in str(err.value) and "model.bin" in str(err.value)
    part = tmp_path / "model.bin.part"
    kept = part.stat().st_size
    assert 0 < kept <= 30_000_000 and not (tmp_path / "model.bin").exists()

    pull(spec, tmp_path, mirrors=[base], progress=False)
    assert behaviour.requests[-1][1] == f"bytes={kept}-"
    assert not part.exists()
    check_weights(spec, tmp_path, verify=True)


def test_pull_retries_within_one_call(hub, tiny: EngineSpec, tmp_path: Path) -> None:
    base, behaviour = hub
    spec = _only(tiny, "model.bin")
    behaviour.cut_after["model.bin"] = 20_000_000
    pull(spec, tmp_path, mirrors=[base], progress=False, retries=1)
    assert behaviour.requests[0][1] is None and behaviour.requests[1][1].startswith("bytes=")
    check_weights(spec, tmp_path, verify=True)


def test_pull_restarts_when_the_server_ignores_range(hub, tiny: EngineSpec, tmp_path: Path) -> None:
    base, behaviour = hub
    behaviour.honor_range = False
    spec = _only(tiny, "model.bin")
    (tmp_path / "model.bin.part").write_bytes(b"not the model" * 1000)  # would poison a blind append
    pull(spec, tmp_path, mirrors=[base], progress=False)
    assert behaviour.requests[0][1] == "bytes=13000-"
    check_weights(spec, tmp_path, verify=True)


def test_pull_rejects_a_corrupted_byte_and_leaves_nothing(hub, tiny: EngineSpec, tmp_path: Path) -> None:
    base, behaviour = hub
    behaviour.corrupt.add("tokenizer.json")
    spec = _only(tiny, "tokenizer.json")
    pin = spec.weights.files[0]
    with pytest.raises(WeightsError) as err:
        pull(spec, tmp_path, mirrors=[base], progress=False)
    message = str(err.value)
    assert f"sha256 mismatch: expected {pin.sha256}, got " in message and "the download was deleted" in message
    assert str(tmp_path / "tokenizer.json") in message
    assert not (tmp_path / "tokenizer.json").exists() and not (tmp_path / "tokenizer.json.part").exists()


def test_pull_falls_back_to_the_next_mirror(hub, tiny: EngineSpec, tmp_path: Path) -> None:
    base, behaviour = hub
    spec = _only(tiny, "config.json")
    pull(spec, tmp_path, mirrors=[base + "/missing", base], progress=False)
    assert [p.split("/resolve/")[0] for p, _ in behaviour.requests] == [
        "/missing/Systran/faster-whisper-tiny.en", "/Systran/faster-whisper-tiny.en"]
    check_weights(spec, tmp_path, verify=True)


def test_pull_replaces_a_damaged_file(hub, tiny: EngineSpec, whisper_tiny_en_dir: Path, tmp_path: Path) -> None:
    base, _ = hub
    spec = _only(tiny, "config.json")
    damaged = bytearray((whisper_tiny_en_dir / "config.json").read_bytes())
    damaged[0] ^= 0xFF
    (tmp_path / "config.json").write_bytes(bytes(damaged))
    pull(spec, tmp_path, mirrors=[base], progress=False)
    check_weights(spec, tmp_path, verify=True)


# --- dalston models (the real CLI in a subprocess) ------------------------------------------------

def _cli(*args: str, engines: Path, mirror: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DALSTON_ENGINES_DIR": str(engines), "HF_HUB_OFFLINE": "1"}
    env.pop("DALSTON_MODEL_DIR", None)
    if mirror:
        env["DALSTON_WEIGHTS_MIRROR"] = mirror
    return subprocess.run([sys.executable, "-m", "dalston.cli", "models", *args], check=False, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_pull_alias_verify_and_list(hub, engines_with_test_variants: Path, tmp_path: Path) -> None:
    base, behaviour = hub
    engines = engines_with_test_variants
    pulled = _cli("pull", "fast", "--model-dir", str(tmp_path), engines=engines, mirror=base)
    assert pulled.returncode == 0, pulled.stderr
    assert "whisper-base: 4 files, 147882941 bytes, sha256 verified" in pulled.stdout
    assert "weights_download file=model.bin bytes=145217532 resume_from=0" in pulled.stderr
    assert all(p.startswith("/Systran/faster-whisper-base/resolve/") for p, _ in behaviour.requests)

    verified = _cli("verify", "whisper-base", "--model-dir", str(tmp_path), engines=engines)
    assert verified.returncode == 0, verified.stderr

    listed = _cli("list", "--model-dir", str(tmp_path), engines=engines)
    assert listed.returncode == 0
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert rows["whisper-base"] == ["whisper-base", "transcribe", "whisper", "fast", "147.9", "MB", "present"]
    assert rows[TINY][-1] == "missing" and rows["audio-prepare"][-1] == "-"

    shutil.copyfile(tmp_path / "whisper-base" / "config.json", tmp_path / "c")
    data = bytearray((tmp_path / "c").read_bytes())
    data[5] ^= 0xFF
    (tmp_path / "whisper-base" / "config.json").write_bytes(bytes(data))
    broken = _cli("verify", "fast", "--model-dir", str(tmp_path), engines=engines)
    assert broken.returncode == 1
    assert "config.json: wrong content: expected sha256 56a6d811" in broken.stderr
    assert f"fix: dalston models pull whisper-base --model-dir {tmp_path}" in broken.stderr


def test_cli_unknown_variant_lists_known_ids(engines_with_test_variants: Path) -> None:
    result = _cli("pull", "whisper-huge", engines=engines_with_test_variants)
    assert result.returncode == 2
    assert "model 'whisper-huge' not found; known models:" in result.stderr and TINY in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_pull_failure_is_a_message_not_a_traceback(hub, engines_with_test_variants: Path, tmp_path: Path) -> None:
    base, _ = hub
    result = _cli("pull", TINY, "--model-dir", str(tmp_path), "--mirror", base + "/nowhere",
                  engines=engines_with_test_variants)
    assert result.returncode == 1
    assert f"could not fetch {TINY} weight file" in result.stderr and "HTTP 404" in result.stderr
    assert "Traceback" not in result.stderr
