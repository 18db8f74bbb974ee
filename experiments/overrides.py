"""Command-line overrides checked against the config schemas before Hydra composes anything.

Hydra refuses a misspelt key with a multi-line message and a hint to add it with ``+`` (which it
then accepts and the runner ignores). Here every key, also one added with ``+``, is checked
against the schemas with a did-you-mean, every value against its field's type, and every group
choice against the files of its group, so a mistake costs one line (see ``experiments.cli``).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, ValueType
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from experiments.config import (
    CONF_DIR,
    ConfigError,
    compose_config,
    did_you_mean,
    refused_value,
)
from experiments.schema import (
    CHOSEN,
    TOP_LEVEL_KEYS,
    known_keys,
    root_schema,
    schema_keys,
    section_options,
    section_schemas,
    unknown_key_message,
)

# Groups chosen on the command line whose options are the YAML files below conf/<group>.
CHECKED_GROUPS = (
    "experiment",
    "data",
    "model",
    "optimizer",
    "scheduler",
    "trainer",
    "logger",
    "protocol",
)


def group_options(group: str) -> list[str]:
    folder = CONF_DIR / group
    return sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml"))


def hydra_group_options(group: str) -> list[str]:
    """The options of one of Hydra's own groups (``hydra/launcher``: Hydra's, its plugins' and
    conf/hydra/'s), from Hydra's config search path."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return GlobalHydra.instance().config_loader().get_group_options(group)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return GlobalHydra.instance().config_loader().get_group_options(group)


def _values(override: Override) -> list[Any]:
    """The values an override sets (each of a choice or range sweep); [] when not enumerable."""
    if override.is_delete() or override.value_type == ValueType.GLOB_CHOICE_SWEEP:
        return []  # a glob is matched against the group's options by Hydra itself
    if override.is_discrete_sweep():
        return list(override.sweep_iterator())
    if override.is_sweep_override():
        return []
    return [override.value()]


def _is_interpolation(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("${")


def _check_group(group: str, values: Iterable[Any], options: Sequence[str]) -> None:
    for value in values:
        if str(value) not in options:
            shown = "null" if value is None else value  # Hydra cannot choose no option either
            raise ConfigError(
                f"{group}={shown} is invalid: allowed values are {', '.join(options)}"
                f"{did_you_mean(group, shown, options)}"
            )


def _check_value(key: str, value: Any, schemas: Sequence[type]) -> None:
    """Refuse ``value`` when no schema that has ``key`` accepts it (OmegaConf's own rules)."""
    field_name = key.rpartition(".")[2]
    problems = []
    for schema in schemas:
        node = OmegaConf.structured(schema)
        if field_name not in node:
            continue
        try:
            node[field_name] = value
            return
        except OmegaConfBaseException as error:
            problems.append(error)
    if problems:
        raise refused_value(key, value, problems[0])


def _chosen_options(overrides: Sequence[Override]) -> dict[str, list[str]]:
    """section -> the options chosen for it on the command line (scheduler=step,cosine)."""
    chosen: dict[str, list[str]] = {}
    for override in overrides:
        if override.key_or_group in CHOSEN and override.package is None:
            chosen[override.key_or_group] = [str(v) for v in _values(override)]
    return chosen


def _composed_options(
    group_overrides: Sequence[Override], compose: Callable[[Sequence[str]], Any]
) -> dict[str, set[str]] | None:
    """section -> the options ``compose`` composes for it from the command line's group choices
    alone (each combination of a sweep's), read from the composed config's names; None when
    they cannot be enumerated (a glob) or composed (Hydra reports why when it composes)."""
    choices = []
    for override in group_overrides:
        if not override.is_sweep_override():
            choices.append([override.input_line])
        elif values := _values(override):
            choices.append([f"{override.key_or_group}={value}" for value in values])
        else:
            return None
    options: dict[str, set[str]] = {section: set() for section in CHOSEN}
    for combination in itertools.product(*choices):
        try:
            cfg = compose(combination)
            names = {section: str(cfg[section].name) for section in CHOSEN}
        except (HydraException, ConfigError, OmegaConfBaseException):
            return None
        for section, name in names.items():
            options[section].add(name)
    return options


def _check_key(
    override: Override,
    chosen: dict[str, list[str]],
    composed: Callable[[], dict[str, set[str]] | None],
) -> None:
    key = override.key_or_group
    if key in TOP_LEVEL_KEYS:
        for value in _values(override):
            _check_value(key, value, [root_schema()])
        return
    section, _, rest = key.partition(".")
    field_key = f"{section}.{rest.split('.')[0].split('[')[0]}"
    if field_key not in known_keys():
        raise ConfigError(unknown_key_message(key, known_keys()))
    options: list[str | None] = [None]  # any option: a key every option of the section has
    if section in chosen:
        options = list(chosen[section])
    elif any(field_key not in schema_keys(section, o) for o in section_options(section)):
        composed_options = composed()  # the preset's or the default's option
        options = sorted(composed_options[section]) if composed_options else [None]
    for option in options:
        if field_key not in schema_keys(section, option):
            raise ConfigError(
                f"unknown key {key} for {section}={option}: its keys are "
                f"{', '.join(k.partition('.')[2] for k in schema_keys(section, option))}"
            )
    schemas = [schema for option in options for schema in section_schemas(section, option)]
    if field_key == key:  # a whole field, not an element of a list field
        for value in _values(override):
            if not _is_interpolation(value):
                _check_value(key, value, schemas)


def check_single_run(arguments: Sequence[str]) -> None:
    """Raise ConfigError for an override that sweeps (``scheduler=autodrop,step``, ``range()``,
    ``glob()``) on a command line without ``-m``, where Hydra's own message offers a list, a
    quoted string and --multirun over six lines."""
    for override in _parse(arguments):
        if override.is_sweep_override():
            raise ConfigError(
                f"{override.input_line} sweeps over several values, which needs -m: add -m "
                "(--multirun) to the command line to run one job per value"
            )


def _parse(arguments: Sequence[str]) -> list[Override]:
    try:
        return OverridesParser.create().parse_overrides(list(arguments))
    except HydraException as error:
        raise ConfigError(str(error).splitlines()[0]) from error


def check_overrides(
    arguments: Sequence[str], compose: Callable[[Sequence[str]], Any] | None = None
) -> None:
    """Raise ConfigError for the first override that names an unknown key or group option
    (``hydra/launcher`` included), or gives a value its field cannot hold. ``hydra.*`` keys are
    left to Hydra. ``compose``: how to compose a config from overrides when a key needs it
    (``experiments.config.compose_config`` by default)."""
    overrides = _parse(arguments)
    chosen = _chosen_options(overrides)
    # Group choices first: a key is checked against the options chosen, which must exist.
    keys, groups = [], []
    for override in overrides:
        group = override.key_or_group
        if override.package is not None:
            continue
        if group.startswith("hydra/"):
            options = hydra_group_options(group)
            if options:  # a group Hydra does not know is Hydra's to report
                _check_group(group, _values(override), options)
        elif override.is_hydra_override():
            continue
        elif group in CHECKED_GROUPS:
            _check_group(group, _values(override), group_options(group))
            groups.append(override)
        elif not group.endswith("_preset"):
            keys.append(override)
    # A key only some options of its section have, the section not chosen here, is checked
    # against the option the preset or the defaults choose: composed once, when one needs it.
    composed = functools.cache(lambda: _composed_options(groups, compose or compose_config))
    for override in keys:
        _check_key(override, chosen, composed)
