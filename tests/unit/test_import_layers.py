"""The packages depend one way (ARCHITECTURE.md): the import graph, read from the source, has no circle between
files, and every import across packages goes down the layers. Imports inside functions count too; imports under
`if TYPE_CHECKING:` do not (they never run: annotations only)."""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

SOURCE = Path(__file__).resolve().parents[2] / "src" / "nestbed"

# Bottom to top. A package may import its own modules, the leaves, and packages of a lower layer.
LAYERS = ["model", "embed", "plan", "realize", "agent", "cluster", "control", "scenario", "kinds", "web", "cli"]
# Programs run inside nodes: on their own, they use nothing of the testbed but the leaves.
APART = ["apps"]
# Modules every layer may use; they import only each other (and the standard library).
LEAVES = {"nestbed.errors", "nestbed.types", "nestbed.paths", "nestbed.procs", "nestbed.channel",
          "nestbed.guestproto", "nestbed.netlinkwire", "nestbed.kinds.registry"}


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: at the top, in functions, in try blocks; not under TYPE_CHECKING."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)
    visit(tree)
    return found


def module_graph(source: Path = SOURCE) -> nx.DiGraph:
    modules: dict[str, Path] = {}
    for path in source.rglob("*.py"):
        parts = list(path.relative_to(source.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    graph = nx.DiGraph()
    for name, path in modules.items():
        graph.add_node(name)
        package = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = name.split(".") if package else name.split(".")[:-1]
                    base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
                # `from pkg import mod` imports the module; `from pkg import name` the package's __init__
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            graph.add_edges_from((name, target) for target in targets if target in modules and target != name)
    return graph


def unit(module: str) -> str:
    """The package a module belongs to (model, realize, …), or the leaf module's own name."""
    if module in LEAVES:
        return module
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def allowed(source: str, target: str) -> bool:
    a, b = unit(source), unit(target)
    if a == b or b in LEAVES or b == "":     # "": the package itself (its version, its location)
        return True
    if a in LEAVES or a in APART or b in APART:
        return False
    if a == "":            # nestbed/__init__.py: loads the public API lazily
        return True
    return a in LAYERS and b in LAYERS and LAYERS.index(b) < LAYERS.index(a)


def test_every_package_is_known() -> None:
    packages = {unit(m) for m in module_graph()} - {""}
    unknown = packages - set(LAYERS) - set(APART) - LEAVES
    assert LEAVES <= set(module_graph()), f"leaves that do not exist: {sorted(LEAVES - set(module_graph()))}"
    assert not unknown, f"place {sorted(unknown)} in LAYERS, APART or LEAVES (and in ARCHITECTURE.md)"


def test_no_import_circle_between_files() -> None:
    circles = [sorted(c) for c in nx.strongly_connected_components(module_graph()) if len(c) > 1]
    assert not circles, f"import circles: {circles}"


def test_imports_go_down_the_layers() -> None:
    back = sorted((a, b) for a, b in module_graph().edges if not allowed(a, b))
    assert not back, "imports against the layers (" + " → ".join(LAYERS) + "):\n" + \
        "\n".join(f"  {a} imports {b}" for a, b in back)


@pytest.mark.parametrize("edge, ok", [(("nestbed.plan.compile", "nestbed.model.topology"), True),
                                      (("nestbed.realize.apply", "nestbed.agent.mailbox"), False),
                                      (("nestbed.paths", "nestbed.realize.state"), False),
                                      (("nestbed.apps.flooder", "nestbed.errors"), True),
                                      (("nestbed.apps.flooder", "nestbed.agent.host"), False)])
def test_the_rule_itself(edge: tuple[str, str], ok: bool) -> None:
    assert allowed(*edge) is ok


def test_the_graph_sees_imports_inside_functions(tmp_path: Path) -> None:
    package = tmp_path / "nestbed"
    (package / "model").mkdir(parents=True)
    (package / "realize").mkdir()
    for path in (package / "__init__.py", package / "model" / "__init__.py", package / "realize" / "__init__.py",
                 package / "realize" / "state.py"):
        path.write_text("")
    (package / "model" / "topology.py").write_text("def f():\n    from nestbed.realize import state\n")
    (package / "model" / "units.py").write_text("if TYPE_CHECKING:\n    from nestbed.realize import state\n")
    edges = module_graph(package).edges
    assert ("nestbed.model.topology", "nestbed.realize.state") in edges
    assert ("nestbed.model.units", "nestbed.realize.state") not in edges


def test_every_package_has_an_init() -> None:
    """setuptools' find_packages ships only directories with an __init__.py: a module elsewhere is lost."""
    bare = [str(d.relative_to(SOURCE)) for d in SOURCE.rglob("*") if d.is_dir() and any(d.glob("*.py"))
            and not (d / "__init__.py").exists()]
    assert not bare, f"add an __init__.py to {bare}"
