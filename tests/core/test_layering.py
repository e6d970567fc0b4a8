"""The import layers drawn in the README's Architecture section hold.

entry points → toy_world / benchmarks → devkit → nodes / training → psa_model: no module imports
a package above its own, and no two top-level packages import each other (no cycle). Every
import statement counts, including those inside functions.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("psa_model", "nodes", "training", "devkit", "toy_world", "benchmarks", "scripts")
# What each package must never import (the packages above it).
FORBIDDEN = {
    "psa_model": {"nodes", "training", "devkit", "toy_world", "benchmarks", "scripts"},
    "nodes": {"devkit", "toy_world", "benchmarks", "scripts"},
    "training": {"devkit", "toy_world", "benchmarks", "scripts"},
    "devkit": {"toy_world", "benchmarks", "scripts"},
    "toy_world": {"scripts"},
    "benchmarks": {"scripts"},
}


def imported_packages(path: Path, root: Path | None = None) -> set[str]:
    """The repository's top-level packages this file imports (absolute or relative)."""
    package = path.relative_to(root or REPO_ROOT).parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.add(node.module.split(".")[0])
            else:
                base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
                target = list(base) + (node.module.split(".") if node.module else [])
                if target:
                    found.add(target[0])
                else:  # ``from .. import x`` at the repository root: the names are packages
                    found.update(alias.name for alias in node.names)
    return found & set(PACKAGES)


def package_graph() -> dict[str, dict[str, list[str]]]:
    """package → imported package → the files that import it."""
    graph: dict[str, dict[str, list[str]]] = {p: {} for p in PACKAGES}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            for other in imported_packages(path) - {package}:
                graph[package].setdefault(other, []).append(str(path.relative_to(REPO_ROOT)))
    return graph


def test_no_import_runs_up_the_layers():
    graph = package_graph()
    wrong = {f"{package} → {other}": files for package, edges in graph.items()
             for other, files in edges.items() if other in FORBIDDEN.get(package, set())}
    assert not wrong, f"imports that run up the layers (README: Architecture): {wrong}"


def test_no_cycle_between_top_level_packages():
    graph = package_graph()

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph[start]:
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(p for p in PACKAGES if reaches(p, p, {p}))
    assert not cycles, f"packages on an import cycle: {cycles}; edges: { {p: sorted(e) for p, e in graph.items()} }"


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    folder = tmp_path / "nodes" / "sub"
    folder.mkdir(parents=True)
    (folder / "mod.py").write_text("def f():\n    from devkit.fixtures import load_unet\n\n"
                                   "from ...scripts import run_demo\nfrom .. import folders\n")
    assert imported_packages(folder / "mod.py", root=tmp_path) == {"devkit", "scripts", "nodes"}
