"""The runner's side of the two studies beyond the paper (``conf/experiment/study/``).

Horizon study (``horizon.*``; experiment=study/horizons/<task>). A run's budget is
``horizon.budget`` x the task's standard epochs ``horizon.standard_epochs`` (T), the budget one
of ``HORIZON_BUDGETS``; the preset sets ``trainer.epochs`` to that product (the
``horizon_epochs`` resolver, ``experiments.schema``) and the label to ``<schedule>-budget=<b>``.
A schedule that needs the budget (``needs_budget``, part of the schedule contract) is built for
each budget: milestones, cosine and one-cycle spans scale with it. One that does not is anytime:
its first k epochs are the same run whatever the length (tests/test_horizons.py proves it for
every such schedule), so it is trained once, at the largest budget, and read at every shorter
one; a launch at a shorter budget is refused, and so is a schedule that does not declare
``needs_budget``. Its settings are those of the task's standard budget T at every length:
nothing a preset sets for it may depend on ``trainer.epochs`` (the study's presets set fixed
numbers; tests/test_horizons.py composes each at every budget).

Tuning study (``tuning.*``; experiment=study/tuning/<task>). Trial n of a schedule sets each knob
of its search space (``search_space``, declared with the schedule) to the n-th point of a
scrambled Halton sequence (``experiments.trials``, seeded with ``tuning.pool_seed``, as AlgoPerf
draws its trials) mapped through the knob's distribution; ``tuning.trial=null`` trains the
defaults. :func:`with_trial` writes each knob as an interpolation of the trial (the
``tuning_draw`` resolver), so the drawn values are resolved into the run's config and
summary.json's ``setup``, the label ``<schedule>-trial=<n>`` (``tuning_label``) names the
directory and ``label_settings`` records the trial: every trial has its own run directory, and
the analysis reads the values the run recorded, never its label.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments import specs
from experiments.config import ConfigError, invalid, invalid_choice
from experiments.schema import HORIZON_BUDGETS, horizon_epochs

_ABSENT = object()


# ----------------------------------------------------------------------------- horizons
def is_horizon_run(cfg: DictConfig) -> bool:
    return OmegaConf.select(cfg, "horizon.budget") is not None


def longest_budget() -> float:
    return max(HORIZON_BUDGETS)


def needs_budget(name: str, study: str) -> bool:
    """The schedule's ``needs_budget``, or a ConfigError when it declares none (a study built on
    the declaration refuses a schedule without it). Asked of the class when the schedules are
    imported already, else read from its source where it is a literal (``experiments.specs``:
    planning a grid imports no torch)."""
    spec = specs.spec("scheduler", name)
    declared = None if spec is None else spec.attributes.get("needs_budget")
    if isinstance(declared, bool) and "autodrop.registry" not in sys.modules:
        return declared
    from autodrop import registry

    try:
        return registry.schedule_needs_budget(name)
    except TypeError as error:
        raise ConfigError(f"the {study} study refuses scheduler={name}: {error}") from None


def check_horizon(cfg: DictConfig) -> None:
    """ConfigError unless a horizon-study run is one the study plans (see the module notes)."""
    horizon = cfg.horizon
    if horizon.budget is None and horizon.standard_epochs is None:
        return
    if horizon.standard_epochs is None:
        raise invalid("horizon.standard_epochs", None, "a horizon.budget needs the task's T")
    smallest = min(HORIZON_BUDGETS)
    if horizon.standard_epochs < 1 or not (horizon.standard_epochs * smallest).is_integer():
        raise invalid(
            "horizon.standard_epochs",
            horizon.standard_epochs,
            f"every budget ({', '.join(f'{b:g}' for b in HORIZON_BUDGETS)} x T) must be a "
            f"whole number of epochs: use a multiple of {round(1 / smallest)}",
        )
    if horizon.budget not in HORIZON_BUDGETS:
        raise invalid_choice("horizon.budget", horizon.budget, [f"{b:g}" for b in HORIZON_BUDGETS])
    planned = horizon_epochs(horizon.standard_epochs, horizon.budget)
    if cfg.trainer.epochs != planned:
        raise invalid(
            "trainer.epochs",
            cfg.trainer.epochs,
            f"the horizon study trains horizon.budget x horizon.standard_epochs = {planned} "
            "epochs: choose the length with horizon.budget",
        )
    name = cfg.scheduler.name
    if not needs_budget(name, "horizon") and horizon.budget != longest_budget():
        raise invalid(
            "horizon.budget",
            horizon.budget,
            f"scheduler={name} does not need the budget (needs_budget=False): the study trains "
            f"it once, at horizon.budget={longest_budget():g}, and reads every shorter budget "
            "from that run's records",
        )


def served_horizons(cfg: DictConfig) -> tuple[int, ...]:
    """The shorter budgets (in epochs) the run of ``cfg`` is read at besides its own: those of
    HORIZON_BUDGETS below its budget for a schedule that does not need the budget, none for
    one that does or outside the study. What the study's single long runs save."""
    if not is_horizon_run(cfg) or needs_budget(cfg.scheduler.name, "horizon"):
        return ()
    own = float(cfg.horizon.budget)
    return tuple(horizon_epochs(cfg.horizon.standard_epochs, b) for b in HORIZON_BUDGETS if b < own)


# ----------------------------------------------------------------------------- tuning
def _literal(value: Any) -> str:
    """A value as an argument of an interpolation."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _key_value(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def with_trial(cfg: DictConfig, overrides: Sequence[str] = ()) -> DictConfig:
    """``cfg`` with the trial of ``tuning.trial`` applied (in place; nothing for the defaults
    or outside the study): every knob of the schedule's search space becomes
    ``${tuning_draw:<key>,${scheduler.name},${tuning.trial},${tuning.pool_seed},<configured>}``.
    ConfigError when ``overrides`` (the command line's) set one of those knobs."""
    trial = OmegaConf.select(cfg, "tuning.trial")
    if trial is None:
        return cfg
    from autodrop import registry  # the search spaces are objects: read by importing

    name = cfg.scheduler.name
    try:
        space = registry.schedule_search_space(name)
    except TypeError as error:
        raise ConfigError(f"the tuning study refuses scheduler={name}: {error}") from None
    given = dict(_key_value(override) for override in overrides)
    for key in space:
        if key in given:
            raise invalid(
                key,
                given[key],
                f"tuning.trial={trial} draws {key} from the search space of scheduler={name}: "
                "drop the override (or tuning.trial=null for the defaults)",
            )
        configured = OmegaConf.select(cfg, key, default=_ABSENT)
        if configured is _ABSENT:
            raise ConfigError(
                f"the search space of scheduler={name} names {key}, which this config lacks"
            )
        OmegaConf.update(
            cfg,
            key,
            f"${{tuning_draw:{key},${{scheduler.name}},${{tuning.trial}},${{tuning.pool_seed}},"
            f"{_literal(configured)}}}",
        )
    return cfg


def check_tuning(cfg: DictConfig) -> None:
    """ConfigError for a trial index or pool seed below 0, or a schedule without a search space
    in a tuning-study run."""
    tuning = cfg.tuning
    if tuning.pool_seed < 0:
        raise invalid("tuning.pool_seed", tuning.pool_seed, "must be >= 0")
    if tuning.trial is None:
        return
    if tuning.trial < 0:
        raise invalid("tuning.trial", tuning.trial, "must be >= 0 (null: the defaults)")
    from autodrop import registry

    try:
        registry.schedule_search_space(cfg.scheduler.name)
    except TypeError as error:
        raise ConfigError(
            f"the tuning study refuses scheduler={cfg.scheduler.name}: {error}"
        ) from None


def check_study(cfg: DictConfig) -> None:
    """Both studies' checks (``experiments.validation.validate_config`` runs them)."""
    check_horizon(cfg)
    check_tuning(cfg)
