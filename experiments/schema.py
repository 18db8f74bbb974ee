"""The Hydra schemas of the config tree, derived: the runner's own sections from the typed
settings (``experiments.settings``, where their defaults are declared), each component's
section from its builder's signature (``experiments.specs``).

The YAML files under ``conf/`` pull a schema in through their defaults list
(``/schema_<section>_<name>@_here_``) and set only what differs, so a misspelt key or a wrong
type fails at composition time. Nothing here imports torch.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import enum
import functools
import typing
from collections.abc import Iterable
from typing import Any

from omegaconf import MISSING

from experiments import settings, specs

#: Config keys outside every section.
TOP_LEVEL_KEYS = ("experiment_name", "seed")
#: The sections with one schema (the others depend on the chosen option: ``CHOSEN``).
FIXED = tuple(settings.SECTIONS)
CHOSEN = (*settings.COMPONENTS, "logger")

#: The honest protocol's validation split per dataset (``protocol=honest``): CIFAR 5,000 of its
#: 50,000 training images (500 per class); ImageNet 10,000 (10 per class, as balanced as its val
#: folder, which stays the test set); digits 360 of its 1,437 training digits (as many, class by
#: class, as its test split). The classes take the test split's shares (validation_split).
HONEST_VAL_SIZES: dict[str, int] = {
    "cifar10": 5_000,
    "cifar100": 5_000,
    "imagenet": 10_000,
    "digits": 360,
}


def honest_val_size(dataset: str) -> int:
    """The validation split size of ``protocol=honest`` for ``dataset`` (its resolver)."""
    if dataset not in HONEST_VAL_SIZES:
        raise ValueError(
            f"data.name={dataset!r} has no honest validation size (known: "
            f"{', '.join(HONEST_VAL_SIZES)}): set data.val_size yourself"
        )
    return HONEST_VAL_SIZES[dataset]


#: The horizon study's budgets, as multiples of the task's standard epochs T.
HORIZON_BUDGETS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)


def horizon_epochs(standard_epochs: Any, budget: Any) -> int:
    """``budget`` x ``standard_epochs`` as a whole number of epochs (the ``horizon_epochs``
    resolver of the horizon study's ``trainer.epochs``); ValueError when it is not one (the
    study's checks, ``experiments.studies.check_horizon``, refuse such values first)."""
    if standard_epochs is None or budget is None:
        raise ValueError(
            "horizon.standard_epochs and horizon.budget are both needed for trainer.epochs "
            f"(got {standard_epochs!r} and {budget!r})"
        )
    epochs = float(standard_epochs) * float(budget)
    if epochs < 1 or not epochs.is_integer():
        raise ValueError(
            f"horizon.budget={budget!r} is invalid: {budget} x horizon.standard_epochs="
            f"{standard_epochs} is {epochs:g} epochs, not a whole number of epochs (>= 1)"
        )
    return int(epochs)


def tuning_label(name: str, trial: int | None) -> str:
    """``step-trial=3``; the schedule's name for the defaults (the ``tuning_label`` resolver of
    the tuning study's ``scheduler.label``)."""
    return str(name) if trial is None else f"{name}-trial={trial}"


# ------------------------------------------------------------------------- option types

_SIMPLE = {"int": int, "float": float, "bool": bool, "str": str}


def _parse(annotation: str) -> ast.expr | None:
    try:
        return ast.parse(annotation, mode="eval").body
    except SyntaxError:
        return None


def _without_none(node: ast.expr) -> list[ast.expr]:
    """The members of a union annotation other than None (``X | None``, ``Optional[X]``)."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _without_none(node.left) + _without_none(node.right)
    if isinstance(node, ast.Subscript) and ast.unparse(node.value) in (
        "Optional",
        "typing.Optional",
    ):
        return _without_none(node.slice)
    if isinstance(node, ast.Constant) and node.value is None:
        return []
    return [node]


def _nullable(node: ast.expr) -> bool:
    return len(_without_none(node)) != len(_members(node))


def _members(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _members(node.left) + _members(node.right)
    if isinstance(node, ast.Subscript) and ast.unparse(node.value) in (
        "Optional",
        "typing.Optional",
    ):
        return [*_members(node.slice), ast.Constant(None)]
    return [node]


def choices(annotation: str) -> tuple[Any, ...] | None:
    """The values a ``Literal[...]`` annotation allows (None for any other annotation)."""
    node = _parse(annotation)
    members = _without_none(node) if node is not None else []
    if len(members) == 1 and isinstance(members[0], ast.Subscript):
        if ast.unparse(members[0].value) in ("Literal", "typing.Literal"):
            values = members[0].slice
            items = values.elts if isinstance(values, ast.Tuple) else [values]
            return tuple(ast.literal_eval(item) for item in items)
    return None


@functools.cache
def _choice_enum(values: tuple[str, ...]) -> type[enum.StrEnum]:
    """An enum of a Literal's strings, so the schema refuses other values at composition (as it
    does for the runner's own enums) and ``--help`` shows them."""
    return enum.StrEnum("Choice", {value: value for value in values})


def field_type(annotation: str) -> Any:
    """The type OmegaConf holds for an option annotated ``annotation`` (as written): a plain
    type, an Optional of one, a Literal of strings as an enum, or Any (lists and other
    containers are checked by the builder)."""
    node = _parse(annotation)
    if node is None:
        return Any
    members = _without_none(node)
    allowed = choices(annotation)
    if allowed is not None and all(isinstance(value, str) for value in allowed):
        kind: Any = _choice_enum(allowed)
    elif len(members) == 1 and ast.unparse(members[0]) in _SIMPLE:
        kind = _SIMPLE[ast.unparse(members[0])]
    else:
        return Any
    return kind | None if _nullable(node) else kind


# ------------------------------------------------------------------------------ schemas


def _default(value: Any) -> Any:
    if value is specs.REQUIRED or value is dataclasses.MISSING:
        return MISSING
    if isinstance(value, tuple | list | dict):
        copy = (lambda v=value: dict(v)) if isinstance(value, dict) else (lambda v=value: list(v))
        return dataclasses.field(default_factory=copy)
    return value


def _settings_fields(cls: type, skip: Iterable[str] = ()) -> list[tuple[str, Any, Any]]:
    """(name, type, default) of a settings class's fields, nested settings as their schemas."""
    hints = typing.get_type_hints(cls)
    out = []
    for item in dataclasses.fields(cls):
        if item.name in skip:
            continue
        kind = hints[item.name]
        if dataclasses.is_dataclass(kind):
            out.append(
                (item.name, schema_of(kind), dataclasses.field(default_factory=schema_of(kind)))
            )
            continue
        if item.default_factory is not dataclasses.MISSING:
            default = _default(item.default_factory())
        else:
            default = _default(item.default)
        out.append((item.name, kind, default))
    return out


@functools.cache
def schema_of(cls: type) -> type:
    """The (mutable) OmegaConf schema of a frozen settings class: the same fields, types and
    defaults (OmegaConf makes a frozen dataclass's config read-only, which Hydra cannot merge
    into)."""
    return dataclasses.make_dataclass(f"{cls.__name__}Config", _settings_fields(cls))


def component_schema(spec: specs.Spec) -> type:
    """The schema of a registered component: its section's own keys (``name`` first, with the
    registry name as its default) and the builder's options with the builder's defaults."""
    common = _settings_fields(settings.COMPONENTS[spec.section], skip=("options",))
    fields = [
        (name, kind, spec.name if name == "name" else default) for name, kind, default in common
    ]
    fields += [
        (option.name, field_type(option.annotation), _default(option.default))
        for option in spec.options
        if option.name not in {name for name, _, _ in common}
    ]
    title = "".join(part.title() for part in spec.name.split("_"))
    return dataclasses.make_dataclass(f"{title}{spec.section.title()}Config", fields)


@functools.cache
def chosen_schemas(section: str) -> dict[str, type]:
    """name -> schema of every option of a chosen section (registered components, loggers)."""
    if section == "logger":
        return {name: schema_of(cls) for name, cls in settings.LOGGERS.items()}
    return {name: component_schema(spec) for name, spec in specs.specs(section).items()}


@functools.cache
def root_schema() -> type:
    """The schema of the whole config (the chosen sections are typed by their YAML's)."""
    fields = []
    for name, kind, default in _settings_fields(settings.RunSettings, skip=CHOSEN):
        fields.append((name, kind, default))
    chosen = [(section, Any, MISSING) for section in CHOSEN]
    order = [item.name for item in dataclasses.fields(settings.RunSettings)]
    by_name = {name: (name, kind, default) for name, kind, default in [*fields, *chosen]}
    return dataclasses.make_dataclass("Config", [by_name[name] for name in order])


def section_schemas(section: str, chosen: str | None = None) -> list[type]:
    """The schemas a config section may follow: its one schema, or the chosen option's (all
    options' when ``chosen`` is None)."""
    if section in FIXED:
        return [schema_of(settings.SECTIONS[section])]
    options = chosen_schemas(section) if section in CHOSEN else {}
    if chosen is None:
        return list(options.values())
    return [options[chosen]] if chosen in options else []


def _field_names(section: str, chosen: str | None) -> set[str]:
    """The keys of a section's schemas (``section_schemas``), from the settings classes and the
    component specs alone (no schema class is made)."""
    if section in FIXED:
        return {f.name for f in dataclasses.fields(settings.SECTIONS[section])}
    if section == "logger":
        loggers = settings.LOGGERS if chosen is None else {chosen: settings.LOGGERS.get(chosen)}
        return {f.name for cls in loggers.values() if cls for f in dataclasses.fields(cls)}
    if section not in settings.COMPONENTS:
        return set()
    found = specs.specs(section)
    chosen_specs = found.values() if chosen is None else [found[chosen]] if chosen in found else []
    own = {f.name for f in dataclasses.fields(settings.COMPONENTS[section])} - {"options"}
    return {name for spec in chosen_specs for name in (*own, *spec.option_names)}


def schema_keys(section: str, chosen: str | None = None) -> list[str]:
    """Dotted keys of a section (``trainer.epochs``, ...), over ``section_schemas``."""
    return sorted(f"{section}.{name}" for name in _field_names(section, chosen))


def section_options(section: str) -> list[str]:
    """The options of a chosen section (registered components, loggers); [] for the others."""
    if section == "logger":
        return list(settings.LOGGERS)
    return list(specs.names(section)) if section in settings.COMPONENTS else []


def known_keys() -> list[str]:
    """Every key some composition of the config tree can have (hydra.* aside)."""
    keys = [*TOP_LEVEL_KEYS]
    for section in (*FIXED, *CHOSEN):
        keys += schema_keys(section)
    return sorted(set(keys))


def option_choices(section: str, chosen: str, key: str) -> tuple[Any, ...] | None:
    """The values a component's ``Literal`` option allows (None: not a choice)."""
    spec = specs.spec(section, chosen) if section in settings.COMPONENTS else None
    option = spec.option(key) if spec is not None else None
    return choices(option.annotation) if option is not None else None


def unknown_key_message(key: str, candidates: Iterable[str]) -> str:
    """'unknown key trainer.epoch; did you mean trainer.epochs?' (difflib's closest match)."""
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.85)
    if close:
        return f"unknown key {key}; did you mean {close[0]}?"
    return f"unknown key {key} (--cfg job prints the config with every key)"
