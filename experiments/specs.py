"""What every registered component accepts, read from its builder's source: the one way the
runner learns the schedules, models, optimizers and datasets it can build.

Each kind of component has one table, a tuple of builders in a module of its own layer
(``KINDS``): a builder is a class (its ``name`` attribute is the registry name, its
``__init__`` the signature) or a function (its own name is the registry name). A builder's
keyword parameters, less the ones the runner supplies (``Kind.context``: the optimizer and the
budget of a schedule, the parameters of an optimizer, ...), are the component's options, with
the builder's defaults; the config schemas, ``--help``, the key checks and the run records all
derive from that (``experiments.config``). Adding a component is its file, its YAML and its
entry in the table.

The specs are read with ``ast`` from the source files, without importing them: composing and
checking a config then costs no torch import (the command line answers in a fraction of a
second). The reading is exact for what it accepts: defaults that are literals or module
constants holding literals, annotations as written, literal class attributes; anything else
(a computed default, a table built by code) is not guessed at but read by importing the
builder (``inspect``), which is slower and always right. ``tests/test_registration.py`` checks
that both readings agree for every registered component, so the fast one never drifts.
(Caching the imported specs keyed by a digest of the sources was the alternative; it pays the
import on the first run after every edit and needs a place to write and an invalidation rule,
while reading the source needs neither.)
"""

from __future__ import annotations

import ast
import enum
import functools
import importlib
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: A parameter without a default: the config must set it.
REQUIRED = "???"
#: The packages whose sources are read; a name imported from elsewhere (torch) is external.
SUITE_PACKAGES = ("autodrop", "models", "experiments")


@dataclass(frozen=True)
class Kind:
    """One kind of component: its config section and where its table is."""

    section: str  # the config section, scheduler.name=... (conf/<section>/<name>.yaml)
    module: str  # the module holding the table
    table: str  # the table's name in that module: a tuple of builders
    context: tuple[str, ...]  # parameters the runner passes, never options
    # Config keys every component of the kind has besides its options (the section's own).
    common: tuple[str, ...] = ("name",)


KINDS: dict[str, Kind] = {
    kind.section: kind
    for kind in (
        Kind(
            "scheduler",
            "autodrop.registry",
            "SCHEDULE_CLASSES",
            ("optimizer", "steps_per_epoch", "epochs"),
            ("name", "label"),
        ),
        Kind("model", "models.registry", "MODELS", ("num_classes",)),
        Kind("optimizer", "experiments.optimizers", "OPTIMIZERS", ("params", "steps_per_epoch")),
        Kind(
            "data",
            "experiments.data.datasets",
            "DATASETS",
            ("root", "image_size"),
            ("name", "root", "image_size", "augment", "drop_last", "val_size"),
        ),
    )
}


@dataclass(frozen=True)
class Option:
    """A keyword option of a builder: its annotation as written and its default."""

    name: str
    annotation: str = "Any"
    default: Any = REQUIRED

    @property
    def required(self) -> bool:
        return self.default is REQUIRED or self.default == REQUIRED


@dataclass(frozen=True)
class Spec:
    """A registered component as the config sees it."""

    section: str
    name: str
    builder: str  # "<module>:<qualified name>"
    options: tuple[Option, ...]
    # Literal class attributes of a class builder (its own and inherited): display names,
    # colours and other metadata results show without importing the class.
    attributes: Mapping[str, Any] = field(default_factory=dict)
    returns: str | None = None  # the builder's return annotation as written
    takes_any: bool = False  # **kwargs: options beyond the named ones are passed on

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(option.name for option in self.options)

    def load(self) -> Any:
        """The builder itself (imports its module)."""
        module, _, qualname = self.builder.partition(":")
        value: Any = importlib.import_module(module)
        for part in qualname.split("."):
            value = getattr(value, part)
        return value


class StaticReadError(ValueError):
    """A spec the source does not show literally (read by importing instead)."""


# ---------------------------------------------------------------------------------- reading


def module_file(module: str) -> Path:
    """The source file of ``module``, found as the import system would, without importing it
    (importing a package's module runs the package's ``__init__``, which may import torch)."""
    top, *rest = module.split(".")
    if top in sys.modules and getattr(sys.modules[top], "__path__", None):
        roots = [Path(p).parent for p in sys.modules[top].__path__]
    else:
        roots = [Path(entry or ".") for entry in sys.path]
    for root in roots:
        base = root.joinpath(top, *rest)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate.resolve()
    raise StaticReadError(f"module {module} has no source file on sys.path")


@functools.cache
def _parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _module_tree(module: str) -> ast.Module:
    return _parsed(module_file(module))


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _definition(module: str, name: str, seen: frozenset[str] = frozenset()) -> tuple[str, ast.AST]:
    """(module, node) defining ``name`` in ``module``: a def, a class or an assignment, followed
    through ``from x import y`` re-exports."""
    key = f"{module}:{name}"
    if key in seen:
        raise StaticReadError(f"{key} is imported in a circle")
    tree = _module_tree(module)
    found: tuple[str, ast.AST] | None = None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name:
            found = (module, node)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                found = (module, node)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    source = _absolute(module, node)
                    if source.split(".")[0] not in SUITE_PACKAGES:
                        raise StaticReadError(f"{name} comes from {source}, outside the suite")
                    found = _definition(source, alias.name, seen | {key})
    if found is None:
        raise StaticReadError(f"{name} is not defined in {module}")
    return found


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return str(node.module)
    package = _package_of(module, module_file(module)).split(".")
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def _literal(module: str, node: ast.expr | None) -> Any:
    """The value of a default or attribute: a literal, or a module constant holding one."""
    if node is None:
        raise StaticReadError("no value")
    try:
        return ast.literal_eval(node)
    except ValueError:
        pass
    if isinstance(node, ast.Name):
        where, definition = _definition(module, node.id)
        if isinstance(definition, ast.Assign | ast.AnnAssign):
            return _literal(where, definition.value)
    raise StaticReadError(f"{ast.unparse(node)} in {module} is not a literal")


def _class_chain(module: str, node: ast.ClassDef) -> list[tuple[str, ast.ClassDef]]:
    """The class and its suite bases, depth first (external bases, e.g. torch's, are left out:
    they define none of the suite's metadata)."""
    chain = [(module, node)]
    for base in node.bases:
        if not isinstance(base, ast.Name):
            continue
        try:
            where, definition = _definition(module, base.id)
        except StaticReadError:
            continue  # an external base
        if isinstance(definition, ast.ClassDef):
            chain += _class_chain(where, definition)
    return chain


def _attributes(chain: list[tuple[str, ast.ClassDef]]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for module, cls in reversed(chain):  # a subclass overrides its bases
        for statement in cls.body:
            targets = []
            if isinstance(statement, ast.Assign):
                targets = [t.id for t in statement.targets if isinstance(t, ast.Name)]
            elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
                targets = [statement.target.id] if isinstance(statement.target, ast.Name) else []
            for target in targets:
                if target.startswith("_"):
                    continue
                value = statement.value
                if isinstance(value, ast.Name) and value.id in values:  # label = display_name
                    values[target] = values[value.id]
                    continue
                try:
                    values[target] = _literal(module, value)
                except StaticReadError:
                    values.pop(target, None)  # not literal here: not known statically
                if not _is_plain(values.get(target)):
                    values.pop(target, None)
    return values


def _options(
    module: str, function: ast.FunctionDef, context: tuple[str, ...], skip_self: bool
) -> tuple[tuple[Option, ...], bool]:
    arguments = function.args
    if arguments.vararg is not None or arguments.posonlyargs:
        raise StaticReadError(f"{function.name} takes *args or positional-only arguments")
    positional = arguments.args[1:] if skip_self else arguments.args
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(arguments.defaults))
    defaults += list(arguments.defaults)
    pairs = [*zip(positional, defaults, strict=True)]
    pairs += list(zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True))
    options = []
    for argument, default in pairs:
        if argument.arg in context:
            continue
        annotation = ast.unparse(argument.annotation) if argument.annotation else "Any"
        value = REQUIRED if default is None else _literal(module, default)
        options.append(Option(argument.arg, annotation, value))
    return tuple(options), arguments.kwarg is not None


def _table_entries(kind: Kind) -> list[str]:
    where, node = _definition(kind.module, kind.table)
    value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
    if not isinstance(value, ast.Tuple | ast.List) or not all(
        isinstance(item, ast.Name) for item in value.elts
    ):
        raise StaticReadError(f"{kind.module}.{kind.table} is not a literal tuple of names")
    if where != kind.module:
        raise StaticReadError(f"{kind.module}.{kind.table} is defined in {where}")
    return [item.id for item in value.elts]  # type: ignore[union-attr]


def _static_spec(kind: Kind, entry: str) -> Spec:
    module, node = _definition(kind.module, entry)
    if isinstance(node, ast.FunctionDef):
        options, takes_any = _options(module, node, kind.context, skip_self=False)
        returns = ast.unparse(node.returns) if node.returns else None
        return Spec(
            kind.section, node.name, f"{module}:{node.name}", options, {}, returns, takes_any
        )
    if not isinstance(node, ast.ClassDef):
        raise StaticReadError(f"{entry} in {kind.module} is neither a class nor a function")
    chain = _class_chain(module, node)
    attributes = _attributes(chain)
    init = next(
        (
            (where, item)
            for where, cls in chain
            for item in cls.body
            if isinstance(item, ast.FunctionDef) and item.name == "__init__"
        ),
        None,
    )
    if init is None:
        raise StaticReadError(f"{node.name} defines no __init__ in the suite's code")
    options, takes_any = _options(init[0], init[1], kind.context, skip_self=True)
    if not isinstance(attributes.get("name"), str):
        raise StaticReadError(f"{node.name} has no literal `name`")
    return Spec(
        kind.section,
        attributes["name"],
        f"{module}:{node.name}",
        options,
        attributes,
        node.name,
        takes_any,
    )


# --------------------------------------------------------------------------- by importing


def imported_spec(kind: Kind, builder: Any) -> Spec:
    """The spec of ``builder`` read from the imported object (``inspect``): the reference the
    static reading is checked against, and its fallback."""
    is_class = inspect.isclass(builder)
    signature = inspect.signature(builder)
    options = []
    for parameter in signature.parameters.values():
        if parameter.name in kind.context or parameter.kind in (
            parameter.VAR_KEYWORD,
            parameter.VAR_POSITIONAL,
        ):
            continue
        annotation = parameter.annotation
        if annotation is inspect.Parameter.empty:
            annotation = "Any"
        elif not isinstance(annotation, str):
            annotation = inspect.formatannotation(annotation)
        default = REQUIRED if parameter.default is inspect.Parameter.empty else parameter.default
        options.append(Option(parameter.name, annotation, default))
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    attributes: dict[str, Any] = {}
    if is_class:
        for cls in reversed(builder.__mro__):
            if cls.__module__.split(".")[0] in SUITE_PACKAGES:
                for key, value in vars(cls).items():
                    if _is_plain(value) and not key.startswith("_"):
                        attributes[key] = value
    name = builder.name if is_class else builder.__name__
    returns = builder.__name__ if is_class else _return_text(builder)
    reference = f"{builder.__module__}:{builder.__qualname__}"
    return Spec(kind.section, name, reference, tuple(options), attributes, returns, takes_any)


def _return_text(function: Callable[..., Any]) -> str | None:
    annotation = inspect.signature(function).return_annotation
    if annotation is inspect.Signature.empty:
        return None
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", None)


def _is_plain(value: Any) -> bool:
    """Whether ``value`` is what a literal in the source can spell (enum members are not)."""
    if isinstance(value, enum.Enum):
        return False
    if isinstance(value, str | int | float | bool | type(None)):
        return True
    if isinstance(value, tuple | list):
        return all(_is_plain(item) for item in value)
    return isinstance(value, dict) and all(_is_plain(v) for v in value.values())


def _imported_specs(kind: Kind) -> dict[str, Spec]:
    table = getattr(importlib.import_module(kind.module), kind.table)
    return {spec.name: spec for spec in (imported_spec(kind, builder) for builder in table)}


# ------------------------------------------------------------------------------- the tables


@functools.cache
def specs(section: str) -> dict[str, Spec]:
    """Every registered component of ``section``, by name, in table order (read from the
    source; by importing when the source does not show it literally)."""
    kind = KINDS[section]
    try:
        found = [_static_spec(kind, entry) for entry in _table_entries(kind)]
    except (StaticReadError, OSError, SyntaxError):
        return _imported_specs(kind)
    by_name = {spec.name: spec for spec in found}
    if len(by_name) != len(found):
        raise ValueError(f"two registered {section} components share a name")
    return by_name


def names(section: str) -> tuple[str, ...]:
    """The registered names of ``section``, in table order."""
    return tuple(specs(section))


def spec(section: str, name: str) -> Spec | None:
    return specs(section).get(name)


@functools.cache
def table_literal(section: str, name: str) -> Any:
    """A literal the module of ``section``'s table declares beside it (e.g. the optimizers'
    ``SETS_ITS_OWN_LR``), read from the source; by importing when it is not a literal."""
    kind = KINDS[section]
    try:
        where, node = _definition(kind.module, name)
        if isinstance(node, ast.Assign | ast.AnnAssign):
            return _literal(where, node.value)
    except (StaticReadError, OSError, SyntaxError):
        pass
    return getattr(importlib.import_module(kind.module), name)


def clear() -> None:
    """Forget what was read (a test that adds a component to a copy of the tree)."""
    specs.cache_clear()
    table_literal.cache_clear()
    _parsed.cache_clear()
