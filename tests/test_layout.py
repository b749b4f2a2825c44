"""The structure the code promises (README "Architecture", gateway/*/__init__.py).

* Dependencies point one way: ``gateway``, ``renewal`` and the CLI use ``ca`` and
  ``store``; ``ca`` uses ``store``; ``store`` uses nothing of ours.
* Outside a package only its public face is imported (``from ca import …``), never a
  private module (``ca._authority``).
* No import cycle inside ``gateway/``; its login services import no aiohttp.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("brokergate", "ca", "gateway", "renewal", "store")
ALLOWED = {  # package -> our packages it may import
    "store": set(),
    "ca": {"store"},
    "renewal": {"ca", "store"},
    "gateway": {"ca", "store"},
    "brokergate": {"ca", "gateway", "renewal", "store"},
    "bench": {"ca", "gateway", "renewal", "store", "brokergate"},
}


def _modules(package: str) -> dict[str, Path]:
    found = {}
    for path in sorted((REPO / package).rglob("*.py")):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, *, top_level_only: bool = False) -> list[tuple[int, str]]:
    """(line, module) of every import of ours in ``path`` (``from x import y`` as x.y too,
    since y may be a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: list[tuple[int, str]] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] in OURS]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_dependencies_point_one_way(package: str) -> None:
    wrong = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in _modules(package).values()
        for line, name in _imports(path)
        if (top := name.split(".")[0]) != package and top not in ALLOWED[package]
    ]
    assert not wrong, "\n".join(wrong)


def _private_module(name: str) -> bool:
    """Whether ``name`` reaches into a private module (``ca._authority``,
    ``gateway.auth._sessions.X``), not a public name of a package's face."""
    parts = name.split(".")
    for end in range(2, len(parts) + 1):
        if parts[end - 1].startswith("_"):
            base = REPO.joinpath(*parts[:end])
            if base.with_suffix(".py").exists() or base.is_dir():
                return True
    return False


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_only_public_faces_are_imported_from_outside(package: str) -> None:
    wrong = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in _modules(package).values()
        for line, name in _imports(path)
        if name.split(".")[0] != package and _private_module(name)
    ]
    assert not wrong, "\n".join(wrong)


def _gateway_graph() -> dict[str, set[str]]:
    modules = _modules("gateway")
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for _, imported in _imports(path, top_level_only=True):
            # the longest prefix that is a module of ours (``from gateway.auth._x import y``)
            parts = imported.split(".")
            for end in range(len(parts), 0, -1):
                candidate = ".".join(parts[:end])
                if candidate in modules:
                    if candidate != name:
                        targets.add(candidate)
                    break
        graph[name] = targets
    return graph


def test_no_import_cycle_inside_the_gateway() -> None:
    graph = _gateway_graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append([*trail[trail.index(target) :], target])
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_login_services_import_no_aiohttp() -> None:
    wrong = []
    for path in sorted((REPO / "gateway" / "logins").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            wrong += [f"{path.name}:{node.lineno} {n}" for n in names if n.startswith("aiohttp")]
    assert not wrong, "\n".join(wrong)


def test_the_checks_see_a_violation(tmp_path: Path) -> None:
    """The parser behind these checks finds a private import (so they can fail)."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from ca._authority import CertificateAuthority\nimport gateway.auth._sessions\n"
    )
    assert (1, "ca._authority") in _imports(sample)
    assert (2, "gateway.auth._sessions") in _imports(sample)
    assert _private_module("ca._authority") and _private_module("gateway.auth._sessions")
    assert not _private_module("ca.CertificateAuthority") and not _private_module("gateway.auth")
