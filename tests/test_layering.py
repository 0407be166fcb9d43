"""The package's layering: no import cycle among autorank's modules, counting the imports made
inside functions (they hide a cycle from Python, not from a reader), and no module reaching
into another's private names across packages."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parent.parent / "autorank"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, list[str]]]:
    """(imported module, names imported from it) for every import outside TYPE_CHECKING blocks."""
    out: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = module if is_package else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = ".".join(p for p in (base if node.level else "", node.module or "") if p)
            out.append((target, [alias.name for alias in node.names]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def _graph() -> tuple[nx.DiGraph, dict[str, list[tuple[str, list[str]]]]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    found = {}
    for name, path in files.items():
        imports = _imports(ast.parse(path.read_text()), name, path.name == "__init__.py")
        found[name] = imports
        for target, names in imports:
            if not target.startswith("autorank"):
                continue
            # `from pkg import sub` imports the submodule pkg.sub
            targets = [f"{target}.{n}" if f"{target}.{n}" in files else target for n in names] or [target]
            for t in targets:
                # importing a.b.c runs the __init__ of a.b (and a), unless we are inside it
                # already; the root package is left out: it is the lazy public surface
                parts = t.split(".")
                for i in range(2, len(parts) + 1):
                    dep = ".".join(parts[:i])
                    if dep in files and dep != name and not name.startswith(dep + "."):
                        graph.add_edge(name, dep)
    return graph, found


def test_no_import_cycles() -> None:
    graph, _ = _graph()
    cycles = sorted(sorted(c) for c in nx.simple_cycles(graph))
    assert cycles == [], f"import cycles among autorank modules: {cycles[:10]}"


def test_no_private_names_across_packages() -> None:
    """A module imports another package's public names only (``from ..x import _y`` is out)."""
    _, found = _graph()
    offenders = []
    for name, imports in found.items():
        home = name.split(".")[1] if "." in name else ""
        for target, names in imports:
            parts = target.split(".")
            if parts[0] != "autorank" or len(parts) < 2 or parts[1] == home:
                continue
            offenders += [f"{name}: {target}.{n}" for n in names if n.startswith("_")]
    assert offenders == []


def test_no_module_over_400_lines() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 420}
    assert long == {}
