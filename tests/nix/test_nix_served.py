"""What the Nix outputs put on disk is what `dalston serve` runs from: a real transcription.

The `whisper-base` weights are built by Nix offline (fixed-output derivations against the real
upstream hashes, satisfied from a local file:// mirror of the PyPI-shipped bytes), and its engines
tree by the flake (evaluated with the stand-in inputs; the tree itself is builtins-only, so it
really builds). Then `dalston serve` is started as a separate process with exactly the
environment the image config and the `whisper-base` wrapper give it (ENGINE_ID,
DALSTON_ENGINES_DIR, DALSTON_MODEL_DIR, HF_HUB_OFFLINE) and no other hint, and a real clip is
transcribed over loopback. The Python application is this checkout's (poetry2nix's build of it
needs the network); everything it reads comes from /nix/store.

These builds go to the machine's /nix/store (a chroot store's links would not resolve for the
server): about 150 MB, shared with every later build of the same hashes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jiwer
import pytest

from tests.fixtures import assets
from tests.fixtures.serving import free_port
from tests.nix.nixutil import NIX_DIR, flake, git_copy, run
from tests.nix.test_weights_build import VARIANT, _mirror

pytestmark = [pytest.mark.nix, pytest.mark.slow]


def _build_weights_from_mirror(tmp: Path) -> Path:
    mirror = _mirror(tmp)
    proc = run(
        ["nix-build", str(NIX_DIR / "weights.nix"), "-A", VARIANT, "--no-out-link",
         "--arg", "mirrors", f'[ "file://{mirror}" ]', "--option", "extra-sandbox-paths", str(mirror)],
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.strip().splitlines()[-1])


def _flake_outputs(repo: Path) -> dict[str, Path]:
    """The `whisper-base` package's weights and engines, built through the flake."""
    attrs = [f".#packages.x86_64-linux.{VARIANT}.{part}" for part in ("weights", "engines")]
    proc = flake(repo, "build", "--no-link", "--json", *attrs)
    assert proc.returncode == 0, proc.stderr
    outs = {Path(o["outputs"]["out"]) for o in json.loads(proc.stdout)}
    by_part = {part: [o for o in outs if o.name.endswith(f"-{VARIANT}-{part}")] for part in ("weights", "engines")}
    assert all(len(found) == 1 for found in by_part.values()), outs
    return {part: found[0] for part, found in by_part.items()}


def test_dalston_serve_runs_from_nix_built_weights_and_engines(tmp_path: Path) -> None:
    weights = _build_weights_from_mirror(tmp_path)
    built = _flake_outputs(git_copy(tmp_path / "repo"))
    # The flake's weights are the mirror-built ones: same hashes, same store path, nothing fetched.
    assert built["weights"] == weights

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DALSTON_")}
    env.update(ENGINE_ID=VARIANT, DALSTON_ENGINES_DIR=str(built["engines"] / "engines"),
               DALSTON_MODEL_DIR=str(weights), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    server = subprocess.Popen(
        [sys.executable, "-m", "dalston.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--insecure-no-auth"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, f"dalston serve exited:\n{server.stdout.read() if server.stdout else ''}"
            try:
                if httpx.get(base + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "dalston serve did not become ready in 180 s"
            time.sleep(0.5)
        models = httpx.get(base + "/v1/models", timeout=10).json()
        assert VARIANT in [m["id"] for m in models["data"]]
        clip = assets.speech_clip("beckett")
        reply = httpx.post(base + "/v1/audio/transcriptions", timeout=300,
                           files={"file": ("beckett.wav", clip.read_bytes(), "audio/wav")}, data={"model": "fast"})
        assert reply.status_code == 200, reply.text
        text = reply.json()["text"]
        error = jiwer.wer(" ".join(assets.reference_words("beckett")), " ".join(assets.normalize_words(text)))
        assert error <= 0.2, f"WER {error:.3f}: {text!r}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
