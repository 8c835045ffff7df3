"""The package's layout holds: no import cycle (function-level imports included), and small modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "apikeys"
MAX_LINES = 250


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its __init__), migrations aside."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if "migrations" in parts:
            continue  # Alembic's scripts, loaded by Alembic
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its file, except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and isinstance(branch.test, ast.Name) and branch.test.id == "TYPE_CHECKING"
        for statement in branch.body
        for node in ast.walk(statement)
    }
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            # "from apikeys import errors" imports the module apikeys.errors; "from x import name" imports x.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found |= {target for target in targets if target in known and target != name}
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """Return one import cycle as a list of modules, or None."""
    state = {}

    def visit(node, trail):
        state[node] = "open"
        for target in sorted(edges[node]):
            if state.get(target) == "open":
                return trail[trail.index(target) :] + [target]
            if target not in state:
                cycle = visit(target, trail + [target])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node, [node])
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_cycle():
    edges = graph()
    assert "apikeys.verification.core" in edges and edges["apikeys.factory"]  # the walk found the package
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


def test_the_check_finds_a_cycle_hidden_in_a_function():
    edges = {"a": {"b"}, "b": set()}
    assert find_cycle(edges) is None
    edges["b"].add("a")  # b imports a inside a function: still a cycle
    assert find_cycle(edges) == ["a", "b", "a"]


def test_the_verification_core_has_no_flask():
    """The check order knows nothing of HTTP: it imports neither Flask nor the modules that do."""
    edges = graph()
    reached, pending = set(), ["apikeys.verification.core"]
    while pending:
        module = pending.pop()
        if module not in reached:
            reached.add(module)
            pending.extend(edges[module])
    for module in reached:
        tree = ast.parse(modules()[module].read_text())
        names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not {name for name in names if name.split(".")[0] in ("flask", "werkzeug")}, module


@pytest.mark.parametrize("name", sorted(modules()))
def test_every_module_is_small(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines: split it by job"
