"""How the client's modules depend on each other: no import cycles (counting imports inside
functions and under TYPE_CHECKING, which hide a cycle without removing it)."""

from __future__ import annotations

import ast
from pathlib import Path

import sami_client

PACKAGE = Path(sami_client.__file__).parent


def _imports(path: Path) -> set[str]:
    """The sami_client modules `path` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "sami_client":
                found.update(f"sami_client.{alias.name}" for alias in node.names)
            elif node.module.startswith("sami_client."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("sami_client."))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {f"sami_client.{p.stem}": p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return {name: _imports(path) & modules.keys() for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of `graph`, or [] when there is none."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str]:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return []
        for target in sorted(graph[node]):
            cycle = visit(target, [*path, node])
            if cycle:
                return cycle
        done.add(node)
        return []

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return []


def test_the_client_has_no_import_cycle() -> None:
    graph = _graph()
    assert "sami_client.context" in graph["sami_client.deployment_cmd"]
    assert _cycle(graph) == []


def test_the_cycle_finder_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_command_groups_do_not_import_the_cli() -> None:
    for name, imports in _graph().items():
        if name.endswith("_cmd"):
            assert "sami_client.cli" not in imports, name
