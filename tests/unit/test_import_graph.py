"""`python -m dalston.tools.import_graph`: the package's import graph has no cycle, and the tool would see one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dalston.tools.import_graph import cycles, import_graph

REPO = Path(__file__).resolve().parents[2]


def test_dalston_has_no_import_cycle() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "dalston.tools.import_graph"], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    graph = dict(line.split(" -> ") for line in done.stdout.splitlines() if " -> " in line)
    assert "dalston.gateway.routes" in graph and "dalston.gateway.transport" in graph["dalston.gateway.routes"]
    assert "dalston.gateway.routes" not in graph["dalston.gateway.transport"]
    assert done.stdout.rstrip().endswith("cycles=0")


def test_lazy_and_type_only_imports_close_a_cycle(tmp_path: Path) -> None:
    package = tmp_path / "dalston"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from dalston.sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from dalston import c\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    (package / "d.py").write_text("import dalston.a\n")
    graph = import_graph(package)
    assert graph["dalston.sub.b"] == {"dalston.c"} and graph["dalston.c"] == {"dalston.a"}
    assert cycles(graph) == [["dalston.a", "dalston.c", "dalston.sub.b"]]
    done = subprocess.run([sys.executable, "-m", "dalston.tools.import_graph", "--root", str(package)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert done.returncode == 1
    assert "import_cycle modules=dalston.a,dalston.c,dalston.sub.b" in done.stderr
