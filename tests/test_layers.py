"""The suite's layers point down only (autodrop <- models <- experiments <- scripts), no module
of them imports the tests, and no import circle ties modules together, lazy imports included.
(The library's own floors: tests/test_schedules.py.)"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("autodrop", "models", "experiments", "scripts")  # each may import those before it


def _modules() -> dict[str, Path]:
    modules = {}
    for package in LAYERS:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """module -> the suite modules it imports, at the top or inside a function (``from a import
    b`` imports module ``a.b`` where there is one, else ``a``; a name resolves to its longest
    module prefix)."""
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                assert node.module.split(".")[0] != "tests", f"{module} imports the tests"
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    targets.add(submodule if submodule in modules else resolve(node.module))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] != "tests", f"{module} imports the tests"
                    targets.add(resolve(alias.name))
        graph[module] = targets - {None, module}
    return graph


def test_layers_point_down_and_nothing_imports_the_tests() -> None:
    for module, imported in import_graph().items():
        layer = LAYERS.index(module.split(".")[0])
        for other in imported:
            assert LAYERS.index(other.split(".")[0]) <= layer, f"{module} imports {other}"


def test_no_import_circle() -> None:
    graph = import_graph()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import circle: " + " -> ".join([*path, module]))
        if module in done:
            return
        for other in sorted(graph[module]):
            visit(other, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_the_generic_loop_knows_no_schedule_by_name() -> None:
    """What a method needs from the loop is part of the schedule contract (ScheduleHooks): the
    loop and the job neither compare against a schedule's name nor import a schedule module."""
    from autodrop.registry import SCHEDULE_CLASSES, SCHEDULE_NAMES

    schedule_modules = {cls.__module__ for cls in SCHEDULE_CLASSES}
    names = set(SCHEDULE_NAMES) - {"step"}  # also the epoch record's optimizer-step field
    for name in ("experiments/loop.py", "experiments/job.py"):
        tree = ast.parse((REPO / name).read_text())
        strings = {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        }
        assert not strings & names, (name, strings & names)
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not imported & schedule_modules, (name, imported & schedule_modules)
