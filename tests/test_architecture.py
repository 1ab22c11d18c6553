"""The shape of the package: imports run one way, layer by layer, with no cycle.

Read from the source with :mod:`ast`, so the test sees every import a module
makes when it loads (imports under ``if TYPE_CHECKING:`` are for the type
checker only and are left out; imports inside functions run later, when the
package is whole, and are checked against the layers but not for cycles).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "resultkit"

#: Lower layers never import higher ones (a module may import its own layer).
LAYERS: list[tuple[str, ...]] = [
    ("errors", "_native", "_celery_compat", "durations", "report", "explain", "choices", "figures"),
    ("urls", "compression", "records", "retention"),
    ("serializers",),
    ("encryption",),
    (
        "codec",
        "compare",
        "drivers",
        "apps",
        "summary",
        "purge",
        "checkpoint",
        "boundary",
        "cluster",
        "query",
        "offload",
    ),
    ("stores", "backends"),
    ("transfer", "progress", "checks"),
    ("commands", "beat"),
    ("render", "plot", "web"),
    ("cli",),
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("resultkit", *parts))


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(path: Path, *, top_level_only: bool) -> Iterator[str]:
    module = _module_name(path)
    tree = ast.parse(path.read_text())

    def walk(nodes: list[ast.stmt]) -> Iterator[ast.stmt]:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try)):
                yield from walk(node.body)
                yield from walk(node.orelse)
                for handler in getattr(node, "handlers", []):
                    yield from walk(handler.body)
                continue
            yield node
            if not top_level_only:
                for child in ast.walk(node):
                    if child is not node and isinstance(child, (ast.Import, ast.ImportFrom)):
                        yield child

    for node in walk(tree.body):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node, path.name == "__init__.py")
            yield target
            for alias in node.names:  # "from . import x" imports the module x
                yield f"{target}.{alias.name}"


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _layer(module: str) -> int | None:
    first = module.split(".")[1] if module.count(".") else ""
    for index, names in enumerate(LAYERS):
        if first in names:
            return index
    return None


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in _modules() if m != "resultkit" and _layer(m) is None]
    assert not unplaced, f"add these to LAYERS in {__file__}: {unplaced}"


def test_no_module_imports_a_higher_layer() -> None:
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        mine = _layer(name)
        if mine is None:
            continue
        for target in _imports(path, top_level_only=False):
            theirs = _layer(target) if target.startswith("resultkit.") else None
            if theirs is not None and theirs > mine:
                wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_there_is_no_import_cycle() -> None:
    modules = _modules()
    graph = {
        name: {t for t in _imports(path, top_level_only=True) if t in modules and t != name}
        for name, path in modules.items()
    }
    # A package's __init__ importing its own submodules is how packages are made.
    for name in graph:
        graph[name] = {t for t in graph[name] if not (t.startswith(name + "."))}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target) :], target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_commands_and_library_code_never_import_click() -> None:
    offenders = [
        name
        for name, path in _modules().items()
        if not (name == "resultkit.cli" or name.startswith("resultkit.cli."))
        and any(
            t == "click" or t.startswith("click.") for t in _imports(path, top_level_only=False)
        )
    ]
    assert not offenders, f"only the cli package talks to click: {offenders}"
