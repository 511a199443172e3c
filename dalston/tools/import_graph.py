"""Print the import graph of the `dalston` package and fail (exit 1) on any cycle.

`python -m dalston.tools.import_graph` lists every module with the dalston modules it imports, then
the cycles (strongly connected components). Every import counts — module level, inside functions,
and under `if TYPE_CHECKING:` — because a lazy or type-only import that closes a loop is still two
modules that cannot be understood (or moved) one without the other; hiding the loop inside a
function is how the catalog <-> models and gateway app <-> proxy cycles went unnoticed.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGE = "dalston"


def module_files(root: Path) -> dict[str, Path]:
    """`dalston.x.y` -> its file, for every .py file of the package under `root` (the package dir)."""
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imported(node: ast.AST, module: str, is_package: bool, modules: set[str]) -> list[str]:
    """The modules `node` imports: `from pkg import sub` names `pkg.sub`, `from pkg import name` names `pkg`."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:  # relative: resolve against this module's package
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        return [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in modules else prefix for a in node.names]
    return []


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (a name that is a submodule counts as that module)."""
    files = module_files(root)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        deps: set[str] = set()
        for node in ast.walk(tree):
            for name in _imported(node, module, path.name == "__init__.py", set(files)):
                if name in files and name != module:
                    deps.add(name)
        graph[module] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted, largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for dep in sorted(graph.get(node, ())):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found, key=lambda c: (-len(c), c))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dalston.tools.import_graph", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the package directory (default: this dalston)")
    args = parser.parse_args(argv)
    graph = import_graph(args.root)
    for module in sorted(graph):
        deps = ", ".join(sorted(graph[module])) or "-"
        print(f"{module} -> {deps}")
    found = cycles(graph)
    edges = sum(len(d) for d in graph.values())
    if found:
        for component in found:
            print(f"import_cycle modules={','.join(component)}", file=sys.stderr)
        print(f"import_graph modules={len(graph)} edges={edges} cycles={len(found)}", file=sys.stderr)
        return 1
    print(f"import_graph modules={len(graph)} edges={edges} cycles=0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
