"""The boundaries between Sami's parts, read from the source with `ast` (nothing is imported).

- The domain (sami_control/core, sami_control/domain when it exists) and the manifests
  library import neither grpc nor protobuf: they are plain Python, testable without a server.
- The client and the agent import nothing of the control plane, and the control plane
  nothing of them: each ships and evolves on its own; what they share is in sami_common and
  sami_manifests, which import none of the three programs.
- The generated code (`sami.v1`, `make proto`) is imported by one module per side:
  sami_control/api/pb.py, sami_agent/pb.py, sami_client/pb.py. Tests and bench are exempt.
- Inside the control plane the layers import downwards only: the core (its services, data and
  the storage interface it declares, core/store.py) imports none of the layers around it
  (api, storage, the server); a storage backend imports of the control plane only the
  core's data and interface (core/model.py, core/store.py, core/errors.py), never a service.
- No shipped package imports sami_dev, which the wheel leaves out.
- The project's own modules import each other without cycles. Every import statement counts,
  at any depth (one inside a function still runs), except under `if TYPE_CHECKING:`.

A `from pkg import name` counts as importing the module `pkg.name` when there is one, else
`pkg`; importing `pkg.mod` does not count as importing `pkg` itself (its __init__ runs
first, but counting that would make every package that re-exports its modules a cycle).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("sami_common", "sami_manifests", "sami_control", "sami_agent", "sami_client")
DEVELOPMENT = "sami_dev"  # not in the wheel (pyproject.toml)
PACKAGES = (*SHIPPED, DEVELOPMENT)
PROGRAMS = ("sami_control", "sami_agent", "sami_client")
# Where the domain lives: no grpc, no protobuf, no generated code.
PURE = ("sami_control.core", "sami_control.domain", "sami_manifests")
WIRE = ("grpc", "grpc_status", "grpc_health", "grpc_reflection", "google", "sami")
GENERATED = "sami.v1"
PB_MODULES = {
    "sami_control": "sami_control.api.pb",
    "sami_agent": "sami_agent.pb",
    "sami_client": "sami_client.pb",
}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, e.g. sami_agent.cron
    target: str  # the imported module, e.g. sami_agent.executor
    path: str  # of the importing file, relative to the repo root
    line: int
    type_only: bool  # under `if TYPE_CHECKING:`

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def project_files() -> dict[str, Path]:
    """Module name → file, for every module of the project's packages."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", "")
    return name == "TYPE_CHECKING"


def _statements(tree: ast.AST, type_only: bool = False) -> Iterator[tuple[ast.stmt, bool]]:
    """Every import statement of the tree, at any depth, with whether it is type-only."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, type_only
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from _statements(ast.Module(body=[child], type_ignores=[]), True)
            for child in node.orelse:
                yield from _statements(ast.Module(body=[child], type_ignores=[]), type_only)
        else:
            yield from _statements(node, type_only)


def _base(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a `from` import names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


@cache
def imports_of(module: str) -> tuple[Import, ...]:
    path = project_files()[module]
    rel = str(path.relative_to(ROOT))
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    found: list[Import] = []
    for node, type_only in _statements(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            assert isinstance(node, ast.ImportFrom)
            base = _base(module, path, node)
            # `from pkg import name` imports the module pkg.name when there is one.
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in project_files() else base
                for a in node.names
            ]
        for target in dict.fromkeys(targets):
            found.append(Import(module, target, rel, node.lineno, type_only))
    return tuple(found)


def all_imports() -> Iterator[Import]:
    for module in project_files():
        yield from imports_of(module)


def listed(bad: list[Import]) -> str:
    return "\n".join(f"  {i.where}: {i.source} imports {i.target}" for i in bad)


# -- the checks, as functions of the imports (the tests below run them on the real tree and on
# -- made-up ones, so that each is seen to fail) ------------------------------------------------


def wire_in_domain(imports: Iterator[Import]) -> list[Import]:
    return [i for i in imports if within(i.source, *PURE) and within(i.target, *WIRE)]


def crossed_programs(imports: Iterator[Import]) -> list[Import]:
    """Imports from one program into another, or from a shared package into a program."""
    bad = []
    for i in imports:
        source_program = next((p for p in PROGRAMS if within(i.source, p)), None)
        target_program = next((p for p in PROGRAMS if within(i.target, p)), None)
        if target_program is not None and source_program != target_program:
            bad.append(i)
    return bad


# What a storage backend may import of the control plane: the core's data and interfaces
# (the store's, and the replicas' bus that a shared database carries).
STORAGE_MAY_IMPORT = (
    "sami_control.core.model",
    "sami_control.core.store",
    "sami_control.core.errors",
    "sami_control.core.bus",
)


def crossed_layers(imports: Iterator[Import]) -> list[Import]:
    """The core importing the layers around it, or storage importing more than the core's
    data and storage interface."""
    bad = []
    for i in imports:
        if not within(i.target, "sami_control") or within(i.target, "sami_control.core"):
            outward = False
        else:
            outward = within(i.source, "sami_control.core")
        backend_reaching_in = (
            within(i.source, "sami_control.storage")
            and within(i.target, "sami_control")
            and not within(i.target, "sami_control.storage", *STORAGE_MAY_IMPORT)
        )
        if outward or backend_reaching_in:
            bad.append(i)
    return bad


def development_in_shipped(imports: Iterator[Import]) -> list[Import]:
    return [i for i in imports if within(i.source, *SHIPPED) and within(i.target, DEVELOPMENT)]


def generated_outside_pb(imports: Iterator[Import]) -> list[Import]:
    pb_modules = set(PB_MODULES.values())
    return [i for i in imports if within(i.target, GENERATED) and i.source not in pb_modules]


def cycles(imports: Iterator[Import], own: tuple[str, ...] = PACKAGES) -> list[list[Import]]:
    """One cycle (as the chain of imports that closes it) per strongly connected component
    of the runtime import graph among the modules of the packages `own`."""
    edges: dict[str, dict[str, Import]] = {}
    for i in imports:
        if not i.type_only and within(i.target, *own) and i.target != i.source:
            edges.setdefault(i.source, {}).setdefault(i.target, i)
    found = []
    for component in _components(edges):
        found.append(_chain(edges, component))
    return found


def _components(edges: dict[str, dict[str, Import]]) -> list[set[str]]:
    """Tarjan's strongly connected components with more than one module, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, {}))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return components


def _chain(edges: dict[str, dict[str, Import]], component: set[str]) -> list[Import]:
    """A shortest cycle through the component's first module (breadth first)."""
    start = min(component)
    came_from: dict[str, Import] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target, imp in sorted(edges.get(node, {}).items()):
            if target not in component:
                continue
            if target == start:
                chain = [imp]
                while chain[0].source != start:
                    chain.insert(0, came_from[chain[0].source])
                return chain
            if target not in came_from:
                came_from[target] = imp
                queue.append(target)
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def shown(chain: list[Import]) -> str:
    steps = [f"{chain[0].source}"] + [f"  → {i.target}  ({i.where})" for i in chain]
    return "\n    ".join(steps)


def in_package(chain: list[Import], package: str) -> bool:
    return any(within(i.source, package) for i in chain)


# -- the real tree ----------------------------------------------------------------------------


def test_the_scan_sees_the_project() -> None:
    # A scan that found nothing would pass every check below.
    modules = project_files()
    for expected in (
        "sami_control.core.transitions",
        "sami_agent.connection",
        "sami_client.client",
        "sami_manifests.tree",
    ):
        assert expected in modules
    assert any(i.target == "sami_manifests" for i in imports_of("sami_client.manifests_cmd"))


def test_the_domain_and_the_manifests_library_import_no_grpc_or_protobuf() -> None:
    bad = wire_in_domain(all_imports())
    assert not bad, (
        "sami_control/core, sami_control/domain and sami_manifests must stay plain Python"
        " (convert to and from protobuf in sami_control/api):\n" + listed(bad)
    )


def test_the_programs_import_nothing_of_each_other() -> None:
    bad = crossed_programs(all_imports())
    assert not bad, (
        "sami_control, sami_agent and sami_client must not import each other, and"
        " sami_common and sami_manifests none of them (move what they share to sami_common"
        " or sami_manifests):\n" + listed(bad)
    )


def test_the_control_planes_layers_import_downwards_only() -> None:
    bad = crossed_layers(all_imports())
    assert not bad, (
        "sami_control/core must not import api, storage or the server (they depend on it),"
        " and a storage backend imports only the core's data and storage interface"
        f" ({', '.join(STORAGE_MAY_IMPORT)}):\n" + listed(bad)
    )


def test_no_shipped_package_imports_the_development_package() -> None:
    bad = development_in_shipped(all_imports())
    assert not bad, f"{DEVELOPMENT} is not in the wheel: an installed Sami fails here:\n" + listed(
        bad
    )


def test_generated_code_is_imported_by_one_module_per_side() -> None:
    bad = generated_outside_pb(all_imports())
    assert not bad, (
        f"import the generated code ({GENERATED}) through the side's pb module"
        f" ({', '.join(sorted(PB_MODULES.values()))}):\n" + listed(bad)
    )
    for side, pb in PB_MODULES.items():
        assert any(within(i.target, GENERATED) for i in imports_of(pb)), f"{pb} of {side}"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles(package: str) -> None:
    found = [chain for chain in cycles(all_imports()) if in_package(chain, package)]
    assert not found, (
        "import cycles (break them: move the shared part into a module both import, or"
        " import for types only under `if TYPE_CHECKING:`):\n  "
        + "\n  ".join(shown(chain) for chain in found)
    )


# -- the checks themselves fail on made-up imports ------------------------------------------


def _imp(source: str, target: str, type_only: bool = False) -> Import:
    return Import(source, target, source.replace(".", "/") + ".py", 1, type_only)


def test_each_check_catches_what_it_is_for() -> None:
    assert wire_in_domain(iter([_imp("sami_control.core.model", "google.protobuf")]))
    assert wire_in_domain(iter([_imp("sami_manifests.tree", "grpc")]))
    assert not wire_in_domain(iter([_imp("sami_control.api.convert", "google.protobuf")]))
    assert crossed_programs(iter([_imp("sami_client.cli", "sami_control.core.model")]))
    assert crossed_programs(iter([_imp("sami_common.cron", "sami_agent.cron")]))
    assert crossed_programs(iter([_imp("sami_manifests.tree", "sami_control.core")]))
    assert crossed_layers(iter([_imp("sami_control.core.deployments", "sami_control.storage")]))
    assert crossed_layers(iter([_imp("sami_control.core.store", "sami_control.api.errors")]))
    assert crossed_layers(iter([_imp("sami_control.storage.sqlite", "sami_control.core.audit")]))
    assert not crossed_layers(
        iter([_imp("sami_control.storage.sqlite", "sami_control.core.model")])
    )
    assert not crossed_layers(iter([_imp("sami_control.api.rpc", "sami_control.core.audit")]))
    assert development_in_shipped(iter([_imp("sami_agent.cli", "sami_dev.devswarm")]))
    assert not development_in_shipped(iter([_imp("sami_dev.devswarm", "sami_common.logs")]))
    assert not crossed_programs(iter([_imp("sami_agent.cron", "sami_common.cron")]))
    assert generated_outside_pb(iter([_imp("sami_agent.jobs", "sami.v1")]))
    assert not generated_outside_pb(iter([_imp("sami_agent.pb", "sami.v1")]))
    three = [
        _imp("sami_a.x", "sami_a.y"),
        _imp("sami_a.y", "sami_a.z"),
        _imp("sami_a.z", "sami_a.x"),
    ]
    (chain,) = cycles(iter([*three, _imp("sami_a.z", "sami_a.w")]), own=("sami_a",))
    assert [i.target for i in chain] == ["sami_a.y", "sami_a.z", "sami_a.x"]
    assert "sami_a.x\n      → sami_a.y" in shown(chain)
    type_only = _imp("sami_a.z", "sami_a.x", type_only=True)
    assert not cycles(iter([*three[:2], type_only]), own=("sami_a",))
