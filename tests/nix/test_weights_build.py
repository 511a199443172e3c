"""`whisper-base-weights` really builds, offline, from a local file:// mirror, against the upstream hashes.

The mirror is filled with the PyPI-shipped bytes of Systran/faster-whisper-base (tests/fixtures/assets),
laid out like the upstream (`<mirror>/<repo>/resolve/<revision>/<file>`). Each build uses its own
chroot store under tmp (`--store <dir>`), so the machine's /nix/store is untouched; a chroot store
builds in the sandbox, so the mirror directory is passed in with `extra-sandbox-paths`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from dalston.catalog import Catalog
from tests.fixtures import assets
from tests.nix.nixutil import NIX_DIR, REPO, eval_json, run

pytestmark = pytest.mark.nix

VARIANT = "whisper-base"


def _place(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)  # same filesystem: no 145 MB copy
    except OSError:
        shutil.copyfile(src, dest)


def _mirror(tmp: Path, corrupt: str | None = None) -> Path:
    """A file:// mirror of the variant's pinned files, optionally with one byte of one file changed."""
    spec = Catalog.load(REPO / "engines").get(VARIANT).spec
    source = assets.whisper_base_dir()
    mirror = tmp / "mirror"
    base = mirror / spec.weights.repo / "resolve" / spec.weights.revision
    for f in spec.weights.files:
        dest = base / f.name
        if f.name == corrupt:
            data = bytearray((source / f.name).read_bytes())
            data[len(data) // 2] ^= 0x01
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(bytes(data))
        else:
            _place(source / f.name, dest)
    return mirror


def _build(tmp: Path, mirror: Path):
    store = tmp / "store"
    return run(
        [
            "nix-build", str(NIX_DIR / "weights.nix"), "-A", VARIANT, "--no-out-link",
            "--arg", "mirrors", f'[ "file://{mirror}" ]',
            "--store", str(store), "--option", "extra-sandbox-paths", str(mirror),
        ],
        timeout=900,
    ), store


def test_weights_build_offline_from_mirror(tmp_path: Path) -> None:
    proc, store = _build(tmp_path, _mirror(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip().splitlines()[-1]
    # The mirror changes no store path: same output as the upstream-URL derivation.
    upstream = eval_json(f"(import {NIX_DIR / 'weights.nix'} {{ }}).{VARIANT}.outPath")
    assert out == upstream
    spec = Catalog.load(REPO / "engines").get(VARIANT).spec
    model_dir = store / out.lstrip("/") / VARIANT
    assert sorted(p.name for p in model_dir.iterdir()) == sorted(f.name for f in spec.weights.files)
    for f in spec.weights.files:
        target = os.readlink(model_dir / f.name)
        real = store / Path(os.path.normpath(target)).relative_to("/")
        assert real.stat().st_size == f.size
        assert hashlib.sha256(real.read_bytes()).hexdigest() == f.sha256, f.name
    refs = run(["nix-store", "--store", str(store), "-q", "--references", out]).stdout.split()
    assert len(refs) == len(spec.weights.files)


def test_wrong_byte_fails_with_hash_mismatch(tmp_path: Path) -> None:
    proc, _ = _build(tmp_path, _mirror(tmp_path, corrupt="config.json"))
    assert proc.returncode != 0
    assert "hash mismatch" in proc.stderr, proc.stderr
    assert "config.json" in proc.stderr
