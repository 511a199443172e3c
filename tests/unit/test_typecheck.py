"""mypy --strict over the `dalston` package ([tool.mypy] in pyproject.toml) is part of the test command.

Scope, deliberately: `dalston/` strict with zero errors and no blanket ignores (third-party modules
without types — ctranslate2, faster_whisper, nemo — are `Any` at the boundary, per module). The
family `engine.py` files and the tests are not in the gate yet: they are loaded by path (several
files named engine.py), and narrowing `spec.runtime` there is the families' owners' change.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_mypy_strict_on_the_package_is_clean() -> None:
    done = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml")],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Success: no issues found" in done.stdout
