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

import contextlib
import copy
import dataclasses
import itertools
import multiprocessing
import os
import pickle
import signal
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, ValueNode, open_dict

from experiments import answer_cache
from experiments.config import CONF_DIR, compose_config, invalid_choice
from experiments.overrides import check_overrides
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
    is returned as it is, read-only: the planning only reads it. ``applied`` lends the config
    of a grid's cell without copying.

    It is also the ``Presets`` the run names are relative to
    (``experiments.run_identity.run_suffix``), their settings made once per preset."""

    def __init__(self) -> None:
        # group choices -> (the composition with its hydra node, the task config without it)
        self._composed: dict[tuple[str, ...], tuple[DictConfig, DictConfig]] = {}
        self._parsed: dict[str, Any] = {}  # one override -> Hydra's parse of it
        self._settings: dict[tuple[str, ...], RunSettings] = {}
        self._choices: dict[tuple[str, ...], dict[str, Any]] = {}
        self._writable: dict[tuple[str, ...], DictConfig] = {}  # applied's copy per composition
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

    def _writable_copy(self, groups: tuple[str, ...]) -> DictConfig:
        if groups not in self._writable:
            self._writable[groups] = copy.deepcopy(self._groups(groups)[1])
            OmegaConf.set_readonly(self._writable[groups], False)
        return self._writable[groups]

    @contextlib.contextmanager
    def applied(self, overrides: Sequence[str]) -> Iterator[DictConfig]:
        """The task config of ``overrides``, as ``self(overrides)``, lent for the block: plain
        values (``optimizer.beta=1e-3``) are set on one writable copy of their composition and
        set back after the block, since copying the config for each cell of a grid would cost
        as much as planning the cell. Any other override (``+key=1``, ``~key``, a dict) gets its
        own copy."""
        groups, values = self._split(overrides)
        previous = [_plain_value(self._writable_copy(groups), override) for override in values]
        if not values or _NOT_PLAIN in previous:
            yield self(overrides)
            return
        work = self._writable_copy(groups)
        try:
            ConfigLoaderImpl._apply_overrides_to_config(values, work)
            yield work
        finally:
            for override, raw in zip(values, previous, strict=True):
                OmegaConf.update(work, override.key_or_group, raw, merge=False)


_NOT_PLAIN: Any = object()


def _plain_value(cfg: DictConfig, override: Any) -> Any:
    """The raw value (an interpolation as written) that a plain value override (``key=1``)
    replaces in ``cfg``, or ``_NOT_PLAIN`` when the override does more than set a value: it
    adds or deletes a key, or its value or the value it replaces is a dict or a list."""
    if override.is_delete() or override.is_add() or override.is_force_add():
        return _NOT_PLAIN
    if override.package is not None or isinstance(override.value(), dict | list):
        return _NOT_PLAIN
    node: Any = cfg
    for part in override.key_or_group.split("."):
        if not isinstance(node, DictConfig) or node._is_missing() or node._is_interpolation():
            return _NOT_PLAIN
        node = node._get_node(part, validate_access=False)
    return node._value() if isinstance(node, ValueNode) else _NOT_PLAIN


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
    cells = planned_cells(experiment, grid, seeds, compose or Composer())
    return [run for _, runs in cells for run in runs]


# A share of a launch's grid: for each config-group key of the grid (``scheduler=a,b``), the
# index of one of its values; its cells are those with these choices. () is the whole grid.
Share = tuple[int, ...]


def planned_cells(
    experiment: str, grid: str, seeds: str | None, compose: Composer, share: Share = ()
) -> list[tuple[int, list[PlannedRun]]]:
    """``planned_runs``'s runs cell by cell (a cell: one combination of the swept values, its
    runs one per seed), each with its place in the launch's order of cells; only the cells of
    ``share``."""
    check_preset(experiment)
    grid_sweep = parse_sweep(grid)
    if not any(share):  # the launch's first share: its overrides, as the runner checks them
        seed_sweep = [] if seeds is None else [f"{SEED_KEY}={seeds}"]
        check_overrides([f"{EXPERIMENT_KEY}={experiment}", *grid.split(), *seed_sweep], compose)
    picked = dict(zip([key for key in grid_sweep if _is_group(key)], share, strict=False))
    # The preset's own sweep and seed, read from a composition the share's first cell reuses
    # (only the experiment preset sets them, whatever the other groups choose).
    first_groups = [
        f"{key}={values[picked.get(key, 0)]}"
        for key, values in grid_sweep.items()
        if _is_group(key)
    ]
    preset = compose([f"experiment={experiment}", *first_groups], with_hydra=True)
    preset_sweep = preset.hydra.sweeper.params or {}
    sweep = {key: str(value).split(",") for key, value in preset_sweep.items()}
    sweep |= grid_sweep
    if seeds is not None:
        sweep[SEED_KEY] = parse_sweep(f"{SEED_KEY}={seeds}")[SEED_KEY]
    seed_values = [int(seed) for seed in sweep.pop(SEED_KEY, [str(preset.seed)])]
    keys = list(sweep)
    cells = []
    for place, indexes in enumerate(itertools.product(*(range(len(sweep[k])) for k in keys))):
        chosen = dict(zip(keys, indexes, strict=True))
        if any(chosen[key] != index for key, index in picked.items()):
            continue
        overrides = [
            f"experiment={experiment}",
            *(f"{key}={sweep[key][index]}" for key, index in chosen.items()),
        ]
        with compose.applied(overrides) as cfg:
            settings = RunSettings.from_config(cfg)
            suffix = run_suffix(cfg, compose.choices(overrides), presets=compose, settings=settings)
            serves = served_horizons(cfg)
        runs = [
            PlannedRun(
                experiment=settings.experiment_name,
                dataset=settings.data.name,
                model=settings.model.name,
                scheduler=f"{settings.scheduler.label}{suffix[0]}",
                seed=seed,
                epochs=int(settings.trainer.epochs),
                serves=serves,
                data_root=str(settings.data.root),
            )
            for seed in seed_values
        ]
        cells.append((place, runs))
    return cells


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
Task = tuple[Launch, Share]  # the unit of planning's work: one composition, with its cells
# What a launch's planning reads besides the source tree and the launch: the environment
# variables by which a torchrun or SLURM/submitit task finds its world size.
_LAUNCH_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
_LAUNCH_ENV_PREFIXES = ("SLURM_", "SUBMITIT_")
_worker_composer: Composer | None = None  # a planning worker's, for all its tasks


def _shares(launch: Launch) -> list[Share]:
    """The shares of a launch's grid, one per choice of its config groups (when the preset's
    sweep chooses none, one per composition); the whole grid when it does not parse, so that
    planning it reports why in its turn."""
    try:
        grid_sweep = parse_sweep(launch[1])
    except ValueError:
        return [()]
    counts = [len(values) for key, values in grid_sweep.items() if _is_group(key)]
    return list(itertools.product(*(range(count) for count in counts)))


def _plan_task(task: Task, compose: Composer | None = None) -> tuple[list, bool]:
    """The cells of one task, and whether they may be kept (``experiments.answer_cache``): not
    when naming a run probed the device, which imports torch. In a worker process, any refusal
    is re-raised as one the parent can unpickle."""
    (experiment, grid, seeds), share = task
    try:
        cells = planned_cells(experiment, grid, seeds, compose or _worker_composer, share)
    except Exception as error:  # noqa: BLE001 - re-raised, with its type when it pickles
        raise _portable(error) from None
    return cells, "torch" not in sys.modules


def _portable(error: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - e.g. an exception whose __init__ takes other arguments
        return ValueError(str(error))
    return error


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _start_worker() -> None:
    """A planning worker ignores Ctrl-C (the parent's, which stops the workers at once) and
    composes with one ``Composer`` for all its tasks."""
    global _worker_composer
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_composer = Composer()


def _in_parallel(tasks: list[Task]) -> list[tuple[list, bool]]:
    """``_plan_task`` of each task, in order, in forked processes over the CPUs (they inherit
    the imports). A task is one composition, so the CPUs finish together."""
    workers = min(len(tasks), _cpus())
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        compose = Composer()
        return [_plan_task(task, compose) for task in tasks]
    with multiprocessing.get_context("fork").Pool(workers, initializer=_start_worker) as pool:
        return list(pool.imap(_plan_task, tasks))


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
    (``experiments.answer_cache``); the others are planned a share at a time (one composition
    and its cells) in parallel over the CPUs."""
    all_launches: list[Launch] = [(e, grid, seeds) for e in experiments for grid in grids or [""]]
    all_launches += [launch_arguments(launch) for launch in launches]
    keys = [_cache_key(launch) for launch in all_launches]
    runs_of: dict[int, list[PlannedRun]] = {}
    tasks: list[Task] = []
    task_launches: list[int] = []
    for index, launch in enumerate(all_launches):
        stored = answer_cache.recall("plan", keys[index])
        if stored is answer_cache.MISSING:
            shares = _shares(launch)
            tasks += [(launch, share) for share in shares]
            task_launches += [index] * len(shares)
        else:
            runs_of[index] = [_from_json(run) for run in stored]
    cells_of: dict[int, list[tuple[int, list[PlannedRun]]]] = {}
    kept: dict[int, bool] = {}
    for index, (cells, keep) in zip(task_launches, _in_parallel(tasks), strict=True):
        cells_of.setdefault(index, []).extend(cells)
        kept[index] = kept.get(index, True) and keep
    for index, cells in cells_of.items():
        cells.sort(key=lambda cell: cell[0])  # the launch's order, across its shares
        runs_of[index] = [run for _, runs in cells for run in runs]
        if kept[index]:
            answer_cache.store("plan", keys[index], [dataclasses.asdict(r) for r in runs_of[index]])
    found: dict[tuple, PlannedRun] = {}
    for index in range(len(all_launches)):
        for run in runs_of[index]:
            found.setdefault(run.key, run)
    return list(found.values())


def _from_json(stored: dict[str, Any]) -> PlannedRun:
    return PlannedRun(**{**stored, "serves": tuple(stored["serves"])})
