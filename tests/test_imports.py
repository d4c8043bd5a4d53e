"""Dependencies point one way (DESIGN.md): no import cycles between modules, and
ui -> vcam_harmonize -> models, training -> models, nothing imports ui or the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: the installed package name of each top-level folder
PACKAGES = {"vcam_harmonize": "vcam_harmonize", "models": "vcam_harmonize.models",
            "ui": "vcam_harmonize.ui", "training": "vcam_harmonize.training"}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).glob("*.py"):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules that ``name`` imports anywhere in its file (lazy imports
    inside functions count too; ``TYPE_CHECKING`` blocks do not)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for child in node.body for n in ast.walk(child)}
    targets = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets.add(base)
            targets |= {f"{base}.{alias.name}" for alias in node.names}
    return {t for t in targets if t in known and t != name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt.endswith("__init__"):
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if state.get(nxt) is None and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None and (found := visit(node)):
            return found
    return None


def _is_package_init(name: str) -> bool:
    return name in PACKAGES.values()


def test_there_is_no_import_cycle(graph):
    # a package's __init__ re-exports its modules; only module-to-module edges count
    edges = {name: {t for t in targets if not _is_package_init(t)}
             for name, targets in graph.items() if not _is_package_init(name)}
    cycle = _cycle(edges)
    assert cycle is None, " -> ".join(cycle)


def test_the_layers_point_one_way(graph):
    def layer(name: str) -> str:
        for package in ("vcam_harmonize.models", "vcam_harmonize.ui", "vcam_harmonize.training"):
            if name == package or name.startswith(package + "."):
                return package.rpartition(".")[2]
        return "camera"

    allowed = {"ui": {"ui", "camera", "models"}, "camera": {"camera", "models"},
               "models": {"models"}, "training": {"training", "models"}}
    for name, targets in graph.items():
        for target in targets:
            assert layer(target) in allowed[layer(name)], f"{name} imports {target}"


def test_nothing_imports_the_cli(graph):
    users = sorted(name for name, targets in graph.items() if "vcam_harmonize.cli" in targets)
    assert users == [], users


def test_the_check_sees_a_cycle_and_a_lazy_import(tmp_path):
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from vcam_harmonize import cli\n")
    assert _imports("probe", source, {"vcam_harmonize.cli"}) == {"vcam_harmonize.cli"}
