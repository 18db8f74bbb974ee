"""Composing the runner's config: Hydra's ConfigStore gets the schemas, OmegaConf the suite's
resolvers, and ``compose_config`` returns what ``python -m experiments.train <overrides>`` runs.

The schemas are derived in ``experiments.schema`` (every default is the typed settings' or a
component builder's); the checks run on a composed config before anything is built are in
``experiments.validation``. Nothing here imports torch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, EnumNode, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException, ValidationError

from experiments import schema
from experiments.errors import (
    ConfigError,
    check_relative_path,
    did_you_mean,
    invalid,
    invalid_choice,
)

__all__ = [
    "CONF_DIR",
    "ConfigError",
    "check_relative_path",
    "compose_config",
    "compose_with_choices",
    "did_you_mean",
    "invalid",
    "invalid_choice",
    "register_configs",
]

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# How Hydra words a failure to merge a command-line override into the composed config.
MERGE_ERROR_PREFIX = "Error merging override "


def refused_value(key: str, value: Any, error: OmegaConfBaseException) -> ConfigError:
    """The error for a value a schema field refused (OmegaConf's ``error``): an enum field's
    choices with a did-you-mean, else the first line of OmegaConf's reason."""
    node = getattr(error, "child_node", None)
    if isinstance(node, EnumNode):
        return invalid_choice(key, value, [member.name for member in node.enum_type])
    return invalid(key, value, str(error).splitlines()[0])


def compact_number(value: Any) -> str:
    """A number as labels and run names show it, exactly: ``{:g}`` where that reads back as the
    same float (10.0 -> '10', 0.0001 -> '0.0001', 1e-05), else the shortest text that does
    (``repr``: 0.1234567 -> '0.1234567', where ``{:g}`` would give '0.123457' for 0.1234568
    too); None -> 'none'."""
    if value is None:
        return "none"
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    short = f"{value:g}"
    return short if float(short) == value or value != value else repr(value)


def multiply(*factors: Any) -> float:
    """The product of numbers (the ``mul`` resolver: ``${mul:0.05,4}`` -> 0.2)."""
    if not factors:
        raise ConfigError("${mul:...} needs at least one number")
    product = 1.0
    for factor in factors:
        if isinstance(factor, bool) or not isinstance(factor, int | float):
            raise ConfigError(f"${{mul:...}} factor {factor!r} is invalid: must be a number")
        product *= factor
    return product


def _tuning_draw(key: str, schedule: str, trial: int, pool_seed: int, base: Any) -> Any:
    """The ``tuning_draw`` resolver: a tuning-study trial's value (``experiments.trials``,
    imported when a config uses it: it needs the schedules' search spaces)."""
    from experiments.trials import trial_value

    return trial_value(key, schedule, trial, pool_seed, base)


@functools.cache
def register_configs() -> None:
    """Put the schemas into Hydra's ConfigStore and the resolvers into OmegaConf, once per
    process (storing the schemas costs a tenth of a composition)."""
    OmegaConf.register_new_resolver("compact", compact_number, replace=True)
    OmegaConf.register_new_resolver(
        "checked_path",
        lambda value: check_relative_path("experiment_name", str(value)),
        replace=True,
    )
    OmegaConf.register_new_resolver("mul", multiply, replace=True)
    OmegaConf.register_new_resolver("honest_val_size", schema.honest_val_size, replace=True)
    # The studies beyond the paper (experiments/studies.py).
    OmegaConf.register_new_resolver("horizon_epochs", schema.horizon_epochs, replace=True)
    OmegaConf.register_new_resolver("tuning_label", schema.tuning_label, replace=True)
    OmegaConf.register_new_resolver("tuning_draw", _tuning_draw, replace=True)
    # Hydra copies its config repository for every composition (CachingConfigRepository), and
    # with it the whole ConfigStore: a tenth of a composition. The store is one per process and
    # hands out a copy of a node on every load (ConfigStore.load), so its copy is itself.
    ConfigStore.__deepcopy__ = lambda store, memo: store
    store = ConfigStore.instance()
    store.store(name="config_schema", node=schema.root_schema())
    for section in schema.CHOSEN:
        for name, node in schema.chosen_schemas(section).items():
            # A config, not a group: help lists only the groups a user chooses from.
            store.store(name=f"schema_{section}_{name}", node=node)


def compose_config(overrides: Sequence[str] = (), *, with_hydra: bool = False) -> DictConfig:
    """The config ``python -m experiments.train <overrides>`` would run (no run is started)."""
    register_configs()
    try:
        if GlobalHydra.instance().is_initialized():  # inside a running Hydra app (this tree's)
            return compose("config", overrides=list(overrides), return_hydra_config=with_hydra)
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=list(overrides), return_hydra_config=with_hydra)
    except ConfigCompositionException as error:
        refused = _refused_override(error)
        if refused is None:
            raise
        raise refused from error


def _refused_override(error: ConfigCompositionException) -> ConfigError | None:
    """A schema's refusal of an override value (a choice outside an enum field, a string for
    an int) as a one-line ConfigError naming key, value and what is allowed."""
    override = str(error).removeprefix(MERGE_ERROR_PREFIX)
    if not isinstance(error.__cause__, ValidationError) or override == str(error):
        return None
    key, _, value = override.partition("=")
    return refused_value(key, value, error.__cause__)


def compose_with_choices(overrides: Sequence[str] = ()) -> tuple[DictConfig, dict[str, Any]]:
    """The task config of ``overrides`` (no ``hydra`` node) and Hydra's group choices: what the
    runner's task function receives."""
    cfg = compose_config(overrides, with_hydra=True)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices
