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
import dataclasses
import itertools
import multiprocessing
import os
import pickle
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from experiments import answer_cache
from experiments.config import CONF_DIR, compose_config, invalid_choice
from experiments.run_identity import run_suffix
from experiments.settings import RunSettings
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
    is returned as it is, read-only: the planning only reads it.

    It is also the ``Presets`` the run names are relative to
    (``experiments.run_identity.run_suffix``), their settings made once per preset."""

    def __init__(self) -> None:
        # group choices -> (the composition with its hydra node, the task config without it)
        self._composed: dict[tuple[str, ...], tuple[DictConfig, DictConfig]] = {}
        self._parsed: dict[str, Any] = {}  # one override -> Hydra's parse of it
        self._settings: dict[tuple[str, ...], RunSettings] = {}
        self._choices: dict[tuple[str, ...], dict[str, Any]] = {}
        self._parser = OverridesParser.create()

    def _groups(self, groups: tuple[str, ...]) -> tuple[DictConfig, DictConfig]:
        if groups not in self._composed:
            full = compose_config(groups, with_hydra=True)
            task = copy.copy(full)  # a shallow copy shares the nodes: drop hydra, copy the rest
            with open_dict(task):
                del task["hydra"]
            task = copy.deepcopy(task)
            for cfg in (full, task):
                OmegaConf.set_readonly(cfg, True)
            self._composed[groups] = (full, task)
        return self._composed[groups]

    def _split(self, overrides: Sequence[str]) -> tuple[tuple[str, ...], list[Any]]:
        """The group overrides (as written) and the parsed value overrides."""
        for text in overrides:
            if text not in self._parsed:
                self._parsed[text] = self._parser.parse_override(text)
        parsed = [self._parsed[text] for text in overrides]
        groups = tuple(o.input_line for o in parsed if _is_group(o.key_or_group))
        return groups, [o for o in parsed if not _is_group(o.key_or_group)]

    def __call__(self, overrides: Sequence[str] = (), *, with_hydra: bool = False) -> DictConfig:
        groups, values = self._split(overrides)
        composed = self._groups(groups)[0 if with_hydra else 1]
        if not values:
            return composed
        cfg = copy.deepcopy(composed)
        OmegaConf.set_readonly(cfg, False)
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        return cfg

    def choices(self, overrides: Sequence[str]) -> dict[str, Any]:
        """Hydra's group choices of the composition of ``overrides`` (a copy)."""
        groups = self._split(overrides)[0]
        if groups not in self._choices:
            full = self._groups(groups)[0]
            self._choices[groups] = OmegaConf.to_container(full.hydra.runtime.choices)
        return dict(self._choices[groups])

    def settings(self, overrides: Sequence[str]) -> RunSettings:
        """The ``RunSettings`` of the composition of ``overrides``, made once."""
        key = tuple(overrides)
        if key not in self._settings:
            self._settings[key] = RunSettings.from_config(self(overrides))
        return self._settings[key]

    def with_choices(self, overrides: Sequence[str]) -> tuple[DictConfig, dict[str, Any]]:
        """As ``experiments.config.compose_with_choices``: the task config (read-only when no
        value is overridden) and Hydra's group choices."""
        return self(overrides), self.choices(overrides)


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
    grid_sweep = parse_sweep(grid)
    # The preset's own sweep and seed, read from a composition the grid's first cell reuses
    # (only the experiment preset sets them, whatever the other groups choose).
    first_groups = [f"{key}={values[0]}" for key, values in grid_sweep.items() if _is_group(key)]
    preset = compose([f"experiment={experiment}", *first_groups], with_hydra=True)
    preset_sweep = preset.hydra.sweeper.params or {}
    sweep = {key: str(value).split(",") for key, value in preset_sweep.items()}
    sweep |= grid_sweep
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
        settings = RunSettings.from_config(cfg)
        suffix = run_suffix(cfg, choices, presets=compose, settings=settings)[0]
        runs += [
            PlannedRun(
                experiment=settings.experiment_name,
                dataset=settings.data.name,
                model=settings.model.name,
                scheduler=f"{settings.scheduler.label}{suffix}",
                seed=seed,
                epochs=int(settings.trainer.epochs),
                serves=served_horizons(cfg),
                data_root=str(settings.data.root),
            )
            for seed in seed_values
        ]
    return runs


def launch_arguments(launch: str) -> tuple[str, str, str | None]:
    """``planned_runs``'s (experiment, grid, seeds) of one launch written as its overrides."""
    params = parse_sweep(launch)
    experiment = params.pop(EXPERIMENT_KEY, None)
    if experiment is None or len(experiment) != 1:
        raise ValueError(f"launch {launch!r} must name one {EXPERIMENT_KEY}=<preset>")
    seeds = params.pop(SEED_KEY, None)
    grid = " ".join(f"{key}={','.join(values)}" for key, values in params.items())
    return experiment[0], grid, None if seeds is None else ",".join(seeds)


def launch_runs(launch: str, compose: Composer | None = None) -> list[PlannedRun]:
    """Every run of one launch written as its overrides, e.g.
    ``"experiment=quick/digits scheduler=autodrop,step seed=0,1 trainer.epochs=2"``."""
    return planned_runs(*launch_arguments(launch), compose=compose)


Launch = tuple[str, str, str | None]  # planned_runs's (experiment, grid, seeds)
# What a launch's planning reads besides the source tree and the launch: the environment
# variables by which a torchrun or SLURM/submitit task finds its world size.
_LAUNCH_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
_LAUNCH_ENV_PREFIXES = ("SLURM_", "SUBMITIT_")
_IGNORE_INTERRUPTS = (signal.SIGINT, signal.SIG_IGN)


def _plan_launches(launches: Sequence[Launch]) -> list[tuple[list[PlannedRun], bool]]:
    """The runs of each launch, composed by one ``Composer``, and whether they may be kept
    (``experiments.answer_cache``): not when naming a run probed the device, which imports
    torch. In a worker process, any refusal is re-raised as one the parent can unpickle."""
    compose = Composer()
    try:
        planned = [planned_runs(*launch, compose=compose) for launch in launches]
    except Exception as error:  # noqa: BLE001 - re-raised, with its type when it pickles
        raise _portable(error) from None
    return [(runs, "torch" not in sys.modules) for runs in planned]


def _portable(error: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - e.g. an exception whose __init__ takes other arguments
        return ValueError(str(error))
    return error


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _in_parallel(groups: list[list[Launch]]) -> list[list[tuple[list[PlannedRun], bool]]]:
    """``_plan_launches`` of each group, the groups in forked processes over the CPUs, in
    order. Ctrl-C is the parent's: it stops the workers at once (they ignore it themselves)."""
    workers = min(len(groups), _cpus())
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return [_plan_launches(group) for group in groups]
    context = multiprocessing.get_context("fork")
    with context.Pool(workers, initializer=signal.signal, initargs=_IGNORE_INTERRUPTS) as pool:
        return list(pool.imap(_plan_launches, groups))


def _cache_key(launch: Launch) -> list:
    env = {
        name: value
        for name, value in os.environ.items()
        if name in _LAUNCH_ENV or name.startswith(_LAUNCH_ENV_PREFIXES)
    }
    return [list(launch), sorted(env.items())]


def plan(
    experiments: Sequence[str],
    grids: Sequence[str],
    seeds: str | None,
    launches: Sequence[str] = (),
) -> list[PlannedRun]:
    """The runs of every experiment x grid launch (as `make reproduce` loops) and of every
    launch in ``launches`` (see ``launch_runs``), without repeats.

    Hydra's composition (about 0.1 s each, once per preset and schedule) is the planning's cost:
    a launch planned before with the same source tree is read back
    (``experiments.answer_cache``); the others are planned together per preset, the presets in
    parallel over the CPUs (forked processes, which inherit the imports)."""
    all_launches: list[Launch] = [(e, grid, seeds) for e in experiments for grid in grids or [""]]
    all_launches += [launch_arguments(launch) for launch in launches]
    keys = [_cache_key(launch) for launch in all_launches]
    runs_of: dict[int, list[PlannedRun]] = {}
    by_preset: dict[str, list[int]] = {}
    for index, launch in enumerate(all_launches):
        stored = answer_cache.recall("plan", keys[index])
        if stored is answer_cache.MISSING:
            by_preset.setdefault(launch[0], []).append(index)
        else:
            runs_of[index] = [_from_json(run) for run in stored]
    groups = [[all_launches[i] for i in indexes] for indexes in by_preset.values()]
    for indexes, planned in zip(by_preset.values(), _in_parallel(groups), strict=True):
        for index, (runs, keep) in zip(indexes, planned, strict=True):
            runs_of[index] = runs
            if keep:
                answer_cache.store("plan", keys[index], [dataclasses.asdict(run) for run in runs])
    found: dict[tuple, PlannedRun] = {}
    for index in range(len(all_launches)):
        for run in runs_of[index]:
            found.setdefault(run.key, run)
    return list(found.values())


def _from_json(stored: dict[str, Any]) -> PlannedRun:
    return PlannedRun(**{**stored, "serves": tuple(stored["serves"])})
