"""The shape of the library, checked: imports run one way (CLI -> workflows -> contract and
helpers), with no cycle; only the CLI package speaks click; the workflows know the built-in world
only through the plugin hooks it registers."""

from __future__ import annotations

import ast
from pathlib import Path

import emu_cli

PACKAGE = Path(emu_cli.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports(path: Path, modules: set[str], *, typing: bool = False) -> set[str]:
    """The emu_cli modules that ``path`` imports, at the top or inside functions (a lazy import
    is still a dependency); with ``typing``, also those only a type checker sees."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and _type_checking(node) and not typing
        for child in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from package import module` depends on that module
            found |= {f"{node.module}.{a.name}" for a in node.names} & modules
    return {name for name in found if name in modules}


def graph(*, typing: bool = False) -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports(path, set(paths), typing=typing) - {name} for name, path in paths.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_library_has_no_import_cycle():
    edges = graph()
    # the package's own __init__ re-exports the public API: an edge into it from inside is a
    # use of that API, which the modules must not make (they import from where things live)
    inward = sorted(name for name, targets in edges.items() if "emu_cli" in targets)
    assert not inward, f"modules importing the package root instead of the module: {inward}"
    assert cycles(edges) == []
    assert cycles(graph(typing=True)) == [], "not even through imports for type hints"


def test_cycles_are_found():  # the check above can fail
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_only_the_cli_package_imports_click():
    speaking = sorted(
        module_name(path)
        for path in PACKAGE.rglob("*.py")
        if "click" in {name.split(".")[0] for name in _all_imports(path)}
        and not module_name(path).startswith("emu_cli.cli")
    )
    assert speaking == []


def _all_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_workflows_know_the_world_only_through_its_plugin():
    edges = graph()
    workflows = ("emu_cli.curate", "emu_cli.evaluate", "emu_cli.human", "emu_cli.training")
    reaching = sorted(
        f"{name} -> {target}"
        for name, targets in edges.items()
        if name.startswith(workflows)
        for target in targets
        if target.startswith("emu_cli.world")
    )
    assert reaching == []


def test_the_public_api_is_exported():
    for name in ("hookimpl", "Backend", "Model", "Stage", "Filter", "Judge", "Panel",
                 "PromptSet", "Prompt", "EmuError", "ScaledLearningRates"):  # fmt: skip
        assert name in emu_cli.__all__ and hasattr(emu_cli, name), name
