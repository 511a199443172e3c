"""mypy --strict ([tool.mypy] in pyproject.toml) is part of the test command, on the package and on every family.

Scope, deliberately:
- `dalston/`: strict, zero errors, no blanket ignores. Third-party modules without types (ctranslate2,
  faster_whisper, nemo) are `Any` at the boundary, per module in pyproject.
- `engines/<stage>/<family>/engine.py`: the same strict level, one mypy run per file. WHY one run each:
  family directories are data, not packages (`whisper-streaming` has a '-'; the loader imports each
  file by path), so every file is the top-level module `engine` to mypy, and two of them in one run
  are a "duplicate module" error. Families narrow `spec.runtime` with `Engine.runtime_as`.
  A newly scaffolded family starts inside the gate (its template passes it, checked below).
- `tests/`: not type-checked. They are mostly unannotated pytest functions and fixtures; at mypy's
  default level they still report ~80 errors, nearly all from test-only conveniences (redis
  responses, `**kwargs` helpers), and annotating them would not catch bugs in what ships. The tests
  are checked by running them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FAMILIES = sorted((REPO / "engines").glob("*/*/engine.py"))


def _mypy(*targets: str | Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
                           *map(str, targets)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Success: no issues found" in done.stdout


def test_mypy_strict_on_the_package_is_clean() -> None:
    _mypy()  # the `files` of [tool.mypy]: dalston/


def test_every_family_is_in_the_gate() -> None:
    families = {f"{p.parent.parent.name}/{p.parent.name}" for p in FAMILIES}
    assert {"transcribe/whisper", "transcribe/parakeet", "realtime/whisper-streaming",
            "realtime/parakeet-streaming", "prepare/audio-prepare"} <= families


@pytest.mark.parametrize("engine_py", FAMILIES, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_mypy_strict_on_each_family_is_clean(engine_py: Path) -> None:
    _mypy(engine_py.relative_to(REPO))


def test_a_scaffolded_family_passes_the_gate(tmp_path: Path) -> None:
    from dalston.tools import scaffold_engine

    for name, stage in (("my-asr", "transcribe"), ("my-rt", "realtime")):
        assert scaffold_engine.main([name, "--stage", stage, "--variants", "x", "--root", str(tmp_path)]) == 0
    _mypy(tmp_path / "transcribe/my-asr/engine.py")
    _mypy(tmp_path / "realtime/my-rt/engine.py")
