"""The import layers drawn in the README's Architecture section hold.

entry points → toy_world / benchmarks → devkit → nodes / training → psa_model: no module imports
a package above its own, and no two top-level packages import each other (no cycle). Every
import statement counts, including those inside functions.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("psa_model", "nodes", "operator_mode", "training", "devkit", "toy_world", "benchmarks", "scripts")
# What each package must never import (the packages above it).
FORBIDDEN = {
    "psa_model": {"nodes", "training", "devkit", "toy_world", "benchmarks", "scripts"},
    "nodes": {"devkit", "toy_world", "benchmarks", "scripts"},
    "operator_mode": {"devkit", "toy_world", "benchmarks", "scripts"},
    "training": {"devkit", "toy_world", "benchmarks", "scripts"},
    "devkit": {"toy_world", "benchmarks", "scripts"},
    "toy_world": {"scripts"},
    "benchmarks": {"scripts"},
}


def imported_packages(path: Path, root: Path | None = None) -> set[str]:
    """The repository's top-level packages this file imports (absolute or relative)."""
    package = path.relative_to(root or REPO_ROOT).parts[:-1]
    absolute, relative = set(), set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            absolute.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            absolute.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            target = list(package[:len(package) - (node.level - 1)]) + (node.module.split(".") if node.module else [])
            # ``from .. import x`` at the repository root imports packages by name.
            relative.update(target[:1] or [alias.name for alias in node.names])
    # An absolute ``nodes`` is ComfyUI's module (it comes first on sys.path); this pack's ``nodes/``
    # is only ever imported relatively or through devkit.pack_loader.
    found = (absolute - {"nodes"}) | relative
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
                                   "from ...scripts import run_demo\nfrom .. import folders\nimport nodes\n")
    assert imported_packages(folder / "mod.py", root=tmp_path) == {"devkit", "scripts", "nodes"}
    (folder / "comfy.py").write_text("import nodes\nfrom nodes import NODE_CLASS_MAPPINGS\n")
    assert imported_packages(folder / "comfy.py", root=tmp_path) == set()
