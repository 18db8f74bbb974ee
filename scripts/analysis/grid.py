"""The runs a multirun launch would train, found by composing its configs (no run is started).

A launch is ``python -m experiments.train -m experiment=<preset> <grid> seed=<seeds>``, as the
Makefile's quick / reproduce targets run it (``launch_runs`` takes such a command line's
overrides): the preset's own sweep (``hydra.sweeper.params``) overridden by the grid's
``key=v1,v2`` values and the seeds. Every combination is composed through Hydra, so the run's
identity (label, dataset, model, epochs) is exactly the one the runner will record, whatever the
label rules are. Hydra composes each set of config-group choices once (``Composer``): the
combinations that differ only in values (``optimizer.beta=1e-3,1e-4``) and the seeds reuse it.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from experiments.config import CONF_DIR, compose_config, invalid_choice
from experiments.run_identity import run_suffix
from experiments.studies import served_horizons

SEED_KEY = "seed"
EXPERIMENT_KEY = "experiment"
_UNSUPPORTED = ("(", "[", "{", "*")  # Hydra's range(), glob(), choice() and list sweeps


@dataclass(frozen=True)
class PlannedRun:
    """One run of the grid, identified the way summary.json identifies it."""

    experiment: str
    dataset: str
    model: str
    scheduler: str
    seed: int
    epochs: int
    # The shorter budgets (epochs) of the horizon study read from this run besides its own: the
    # runs its single long run saves (experiments.studies.served_horizons).
    serves: tuple[int, ...] = ()
    data_root: str = ""  # the run's data.root, where a launch will look for its dataset

    @property
    def key(self) -> tuple[str, str, str, str, int]:
        return (self.experiment, self.dataset, self.model, self.scheduler, self.seed)

    @property
    def task(self) -> str:
        return f"{self.dataset}/{self.model}"


def parse_sweep(text: str) -> dict[str, list[str]]:
    """'scheduler=hd optimizer.beta=1e-3,1e-4' -> {'scheduler': ['hd'], 'optimizer.beta': [...]}."""
    params: dict[str, list[str]] = {}
    for token in text.split():
        key, sep, values = token.partition("=")
        if not sep or not key or not values:
            raise ValueError(f"grid entry {token!r} in {text!r} is not key=value[,value...]")
        if any(mark in values for mark in _UNSUPPORTED):
            raise ValueError(
                f"grid entry {token!r}: only comma-separated values are supported, not "
                "Hydra's range()/glob()/choice() or list values"
            )
        params[key] = values.split(",")
    return params


class Composer:
    """``compose_config`` for many overrides of one planning pass, each set of config-group
    choices (``experiment=...``, ``scheduler=hd``) composed by Hydra once: the value overrides
    (``optimizer.beta=1e-3``) are applied to a copy of that composition as Hydra applies
    command-line overrides after composing (``ConfigLoaderImpl._apply_overrides_to_config``),
    so the result is the config Hydra composes from all of them
    (tests/test_status.py compares both for a grid). A composition without value overrides
    is returned as it is, read-only (the run-name comparison only reads it)."""

    def __init__(self) -> None:
        self._composed: dict[tuple[tuple[str, ...], bool], DictConfig] = {}
        self._parser = OverridesParser.create()

    def _groups(self, groups: tuple[str, ...], with_hydra: bool) -> DictConfig:
        key = (groups, with_hydra)
        if key not in self._composed:
            if with_hydra:
                cfg = compose_config(groups, with_hydra=True)
            else:
                cfg = copy.deepcopy(self._groups(groups, with_hydra=True))
                OmegaConf.set_readonly(cfg, False)
                with open_dict(cfg):
                    del cfg["hydra"]
            OmegaConf.set_readonly(cfg, True)
            self._composed[key] = cfg
        return self._composed[key]

    def __call__(self, overrides: Sequence[str] = (), *, with_hydra: bool = False) -> DictConfig:
        parsed = self._parser.parse_overrides(list(overrides))
        groups = tuple(o.input_line for o in parsed if _is_group(o.key_or_group))
        values = [o for o in parsed if not _is_group(o.key_or_group)]
        if not values:
            return self._groups(groups, with_hydra)
        cfg = copy.deepcopy(self._groups(groups, with_hydra))
        OmegaConf.set_readonly(cfg, False)
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        return cfg

    def with_choices(self, overrides: Sequence[str]) -> tuple[DictConfig, dict[str, Any]]:
        """As ``experiments.config.compose_with_choices``: the task config (a copy the caller
        owns) and Hydra's group choices."""
        cfg = self(overrides, with_hydra=True)
        choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
        cfg = copy.deepcopy(cfg)
        OmegaConf.set_readonly(cfg, False)
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg, choices  # type: ignore[return-value]


def _is_group(key: str) -> bool:
    """Whether an override's key names a config group (``scheduler``, ``hydra/launcher``)
    rather than a value (``optimizer.beta``, ``seed``)."""
    return "/" in key or ("." not in key and (CONF_DIR / key).is_dir())


def check_preset(experiment: str) -> None:
    """Raise ValueError naming the valid presets when ``experiment`` is not one (the config's
    optional experiment entry would silently compose without it)."""
    folder = CONF_DIR / "experiment"
    presets = sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml"))
    if experiment not in presets:
        raise invalid_choice("experiment", experiment, presets)


def planned_runs(
    experiment: str, grid: str = "", seeds: str | None = None, compose: Composer | None = None
) -> list[PlannedRun]:
    """Every run of ``-m experiment=<experiment> <grid> [seed=<seeds>]`` (``compose``: the
    planning pass's ``Composer``, a new one by default)."""
    check_preset(experiment)
    compose = compose or Composer()
    preset = compose([f"experiment={experiment}"], with_hydra=True)
    preset_sweep = preset.hydra.sweeper.params or {}
    sweep = {key: str(value).split(",") for key, value in preset_sweep.items()}
    sweep |= parse_sweep(grid)
    if seeds is not None:
        sweep[SEED_KEY] = parse_sweep(f"{SEED_KEY}={seeds}")[SEED_KEY]
    seed_values = [int(seed) for seed in sweep.pop(SEED_KEY, [str(preset.seed)])]
    keys = list(sweep)
    runs = []
    for values in itertools.product(*(sweep[key] for key in keys)):
        overrides = [
            f"experiment={experiment}",
            *(f"{k}={v}" for k, v in zip(keys, values, strict=True)),
        ]
        cfg, choices = compose.with_choices(overrides)
        suffix = run_suffix(cfg, choices, compose=compose)[0]
        runs += [
            PlannedRun(
                experiment=cfg.experiment_name,
                dataset=cfg.data.name,
                model=cfg.model.name,
                scheduler=f"{cfg.scheduler.label}{suffix}",
                seed=seed,
                epochs=int(cfg.trainer.epochs),
                serves=served_horizons(cfg),
                data_root=str(cfg.data.root),
            )
            for seed in seed_values
        ]
    return runs


def launch_runs(launch: str, compose: Composer | None = None) -> list[PlannedRun]:
    """Every run of one launch written as its overrides, e.g.
    ``"experiment=quick/digits scheduler=autodrop,step seed=0,1 trainer.epochs=2"``."""
    params = parse_sweep(launch)
    experiment = params.pop(EXPERIMENT_KEY, None)
    if experiment is None or len(experiment) != 1:
        raise ValueError(f"launch {launch!r} must name one {EXPERIMENT_KEY}=<preset>")
    seeds = params.pop(SEED_KEY, None)
    grid = " ".join(f"{key}={','.join(values)}" for key, values in params.items())
    return planned_runs(
        experiment[0], grid, None if seeds is None else ",".join(seeds), compose=compose
    )


def plan(
    experiments: Sequence[str],
    grids: Sequence[str],
    seeds: str | None,
    launches: Sequence[str] = (),
) -> list[PlannedRun]:
    """The runs of every experiment x grid launch (as `make reproduce` loops) and of every
    launch in ``launches`` (see ``launch_runs``), without repeats."""
    found: dict[tuple, PlannedRun] = {}
    compose = Composer()
    for experiment in experiments:
        for grid in grids or [""]:
            for run in planned_runs(experiment, grid, seeds, compose=compose):
                found.setdefault(run.key, run)
    for launch in launches:
        for run in launch_runs(launch, compose=compose):
            found.setdefault(run.key, run)
    return list(found.values())
