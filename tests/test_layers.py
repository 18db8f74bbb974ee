"""The suite's layers point down only (autodrop <- models <- experiments <- scripts, and the
``autodrop-train`` launcher on top), no module of them imports the tests, and no import circle
ties modules together: imports inside functions count, and so do imports by name
(``importlib.import_module``, ``__import__``). (The library's own floors:
tests/test_schedules.py.)"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Each may import those before it.
LAYERS = ("autodrop", "models", "experiments", "scripts", "autodrop_train")
# The modules that import by a computed name, and the names they compute from: the component
# tables (``experiments.specs.KINDS``), which it imports when their sources cannot be read.
IMPORTS_BY_COMPUTED_NAME = {"experiments.specs"}


def _by_name(node: ast.AST) -> str | None | bool:
    """For a call that imports by name: the literal module name, or False for a computed one;
    None for any other node."""
    if not isinstance(node, ast.Call):
        return None
    function = node.func
    called = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
    if called not in ("import_module", "__import__"):
        return None
    argument = node.args[0] if node.args else None
    if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
        return argument.value
    return False


def _computed_targets() -> set[str]:
    from experiments import specs

    return {kind.module for kind in specs.KINDS.values()}


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
            elif (named := _by_name(node)) is not None:
                if named is False:
                    assert module in IMPORTS_BY_COMPUTED_NAME, f"{module} imports a computed name"
                    targets |= {resolve(name) for name in _computed_targets()}
                else:
                    assert named.split(".")[0] != "tests", f"{module} imports the tests"
                    targets.add(resolve(named))
        graph[module] = targets - {None, module}
    return graph


def test_layers_point_down_and_nothing_imports_the_tests() -> None:
    for module, imported in import_graph().items():
        layer = LAYERS.index(module.split(".")[0])
        for other in imported:
            assert LAYERS.index(other.split(".")[0]) <= layer, f"{module} imports {other}"


def test_imports_by_name_are_counted() -> None:
    """A module that imports by name is held to the layers like any other: the launcher's import
    of the runner is seen, and the library imports nothing by name."""
    graph = import_graph()
    assert "experiments.train" in graph["autodrop_train"]
    code = ["import importlib", "importlib.import_module('experiments.train')", "__import__('x')"]
    calls = [_by_name(node) for line in code for node in ast.walk(ast.parse(line))]
    assert [c for c in calls if c is not None] == ["experiments.train", "x"]
    for path in (REPO / "autodrop").rglob("*.py"):
        tree = ast.parse(path.read_text())
        assert not [n for n in ast.walk(tree) if _by_name(n) is not None], path


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


def test_the_generic_runner_knows_no_schedule_by_name() -> None:
    """What a method needs from the loop, and what the console shows of it, is part of the
    schedule contract (ScheduleHooks): the runner's generic modules neither compare against a
    schedule's name or its record fields (``autodrop/drops``) nor import a schedule module."""
    from autodrop.registry import SCHEDULE_CLASSES, SCHEDULE_NAMES

    schedule_modules = {cls.__module__ for cls in SCHEDULE_CLASSES}
    names = set(SCHEDULE_NAMES) - {"step"}  # also the epoch record's optimizer-step field
    for name in GENERIC_MODULES:
        tree = ast.parse((REPO / name).read_text())
        strings = {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        }
        named = {text for text in strings if text in names or text.split("/")[0] in names}
        assert not named, (name, named)
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not imported & schedule_modules, (name, imported & schedule_modules)


GENERIC_MODULES = (
    "experiments/loop.py",
    "experiments/job.py",
    "experiments/console.py",
    "experiments/run_records.py",
)
