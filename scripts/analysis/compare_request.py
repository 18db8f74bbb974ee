"""A comparison request: the task, the schedules, the seeds and the extra overrides, checked,
and the runs it asks for, named exactly as the runner names them.

A comparison is ``-m experiment=<task> scheduler=<a,b,...> seed=<seeds> <overrides>`` as the
runner trains it (``python -m scripts.compare`` launches it). :func:`plan_comparison` refuses a
bad request in one line (the value, the valid choices, the likely one) before anything runs,
then composes each schedule's config through Hydra with the overrides and takes its label
suffix from the runner's own ``run_suffix``: the comparison reads exactly the requested runs
and never guesses from directory names. The checks of names come first and import nothing
heavy; composing and naming import the runner.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig

from autodrop.checks import closest_choice
from experiments import rundir as rd
from experiments.config import ConfigError, compose_config, compose_with_choices
from experiments.overrides import check_overrides, group_options

if TYPE_CHECKING:
    from scripts.analysis.grid import PlannedRun

# Keys the comparison sets itself (--task, --schedules, --seeds, --runs): not extra overrides.
OWN_KEYS = ("experiment", "scheduler", "seed", "paths.results_dir")
# Swept by the comparison; a preset that sweeps anything else must have it pinned.
COMPARED_KEYS = ("scheduler", "seed")
_SEEDS = re.compile(r"^(\d+)(?:-(\d+))?$")


def _refused(what: str, value: str, choices: Sequence[str]) -> ConfigError:
    """'<what> is invalid: allowed values are ...; did you mean <the likely one>?'"""
    close = closest_choice(value, choices)
    hint = "" if close is None else f"; did you mean {close}?"
    return ConfigError(f"{what} is invalid: allowed values are {', '.join(choices)}{hint}")


def check_task(task: str) -> str:
    """``task`` if it is an experiment preset (quick/digits, paper/resnet18_cifar10, ...)."""
    if task not in (options := group_options("experiment")):
        raise _refused(f"--task {task!r}", task, options)
    return task


def parse_schedules(text: str) -> tuple[str, ...]:
    """'autodrop,step,cosine' -> the schedule names, each a ``scheduler=`` choice, once."""
    names = tuple(name.strip() for name in text.split(","))
    options = group_options("scheduler")
    for name in names:
        if name not in options:
            raise _refused(f"schedule {name!r} in --schedules {text}", name, options)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"--schedules {text!r} names {', '.join(repeated)} more than once")
    if len(names) < 2:
        raise ConfigError(f"--schedules {text!r} is invalid: name at least two schedules")
    return names


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0-4' -> (0, 1, 2, 3, 4); '0,1,5' and '0-2,7' as written; each seed once."""
    seeds: list[int] = []
    for part in text.replace(" ", "").split(","):
        match = _SEEDS.match(part)
        if match is None or (match[2] is not None and int(match[2]) < int(match[1])):
            raise ConfigError(
                f"--seeds {text!r} is invalid: expected seeds like 0-4 or 0,1,2 "
                "(non-negative whole numbers, ranges low-high)"
            )
        seeds += range(int(match[1]), int(match[2] or match[1]) + 1)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r} names a seed more than once")
    return tuple(seeds)


def check_extra_overrides(overrides: Sequence[str]) -> None:
    """Refuse an extra override that is not a plain ``key=value`` for every run: a flag, a sweep
    (the comparison sweeps schedules and seeds only) or a key the comparison sets itself."""
    for text in overrides:
        if text.startswith("-"):
            raise ConfigError(f"extra override {text!r} is invalid: expected key=value")
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as error:
        raise ConfigError(str(error).splitlines()[0]) from error
    for override in parsed:
        if override.is_sweep_override():
            raise ConfigError(
                f"extra override {override.input_line!r} sweeps over several values: a "
                "comparison sweeps --schedules and --seeds only; give one value"
            )
        if override.key_or_group in OWN_KEYS:
            raise ConfigError(
                f"extra override {override.input_line!r} is invalid: {override.key_or_group} "
                "is set by --task, --schedules, --seeds or --runs"
            )


@dataclass(frozen=True)
class Comparison:
    """The runs a comparison asks for: every schedule at every seed of one task."""

    task: str  # the experiment preset
    experiment: str  # the experiment name its runs are filed under
    dataset: str
    model: str
    epochs: int
    schedules: tuple[str, ...]  # scheduler choices, the first the baseline
    labels: tuple[str, ...]  # each schedule's run label, identity suffix included
    seeds: tuple[int, ...]
    overrides: tuple[str, ...]

    @property
    def row(self) -> str:
        return f"{self.dataset}/{self.model}"

    @property
    def label_of(self) -> dict[str, str]:
        return dict(zip(self.schedules, self.labels, strict=True))

    def run_ids(self) -> dict[str, tuple[str, int]]:
        """run id (the run's path below the runs directory) -> (schedule, seed)."""
        ids = {}
        for schedule, label in self.label_of.items():
            for seed in self.seeds:
                path = rd.run_path(self.experiment, self.dataset, self.model, label, seed)
                ids[path.as_posix()] = (schedule, seed)
        return ids

    def planned_runs(self) -> list[PlannedRun]:
        """The runs as :mod:`scripts.analysis.status` lists a grid's."""
        from scripts.analysis.grid import PlannedRun

        return [
            PlannedRun(self.experiment, self.dataset, self.model, label, seed, self.epochs)
            for label in self.labels
            for seed in self.seeds
        ]

    def runner_overrides(self, results_dir: str | Path) -> list[str]:
        """The overrides of the runner's ``-m`` launch that trains exactly these runs."""
        return [
            f"experiment={self.task}",
            f"scheduler={','.join(self.schedules)}",
            f"seed={','.join(map(str, self.seeds))}",
            f"paths.results_dir={results_dir}",
            *self.overrides,
        ]


def _named_config(overrides: Sequence[str]) -> tuple[DictConfig, str]:
    """The validated config of one run of ``overrides`` and its label as the runner names its
    directory (``experiments.run_identity.run_suffix``); Hydra's own overrides (launcher, sweep
    directory) are left out: they never name a run."""
    from experiments.run_identity import run_suffix
    from experiments.validation import validate_config

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    hydras = [o for o in parsed if o.is_hydra_override() or o.key_or_group.startswith("hydra/")]
    own = [o.input_line for o in parsed if o not in hydras]
    cfg, choices = compose_with_choices(own)
    validate_config(cfg)
    return cfg, f"{cfg.scheduler.label}{run_suffix(cfg, choices)[0]}"


def _check_preset_sweep(task: str, overrides: Sequence[str]) -> None:
    """Refuse a preset whose own sweep varies more than schedule and seed, unless the overrides
    pin those keys (``-- scheduler.window=64`` for ablation/window)."""
    params = compose_config([f"experiment={task}"], with_hydra=True).hydra.sweeper.params or {}
    pinned = {o.key_or_group for o in OverridesParser.create().parse_overrides(list(overrides))}
    loose = [key for key in params if key not in COMPARED_KEYS and key not in pinned]
    if loose:
        swept = "; ".join(f"{key} over {params[key]}" for key in loose)
        raise ConfigError(
            f"--task {task} sweeps {swept}: a comparison trains one run per schedule and seed; "
            f"pin it with an extra override (e.g. -- {loose[0]}=<value>)"
        )


def plan_comparison(
    task: str,
    schedules: str,
    seeds: str,
    overrides: Sequence[str] = (),
    results_dir: str | Path = "results",
) -> Comparison:
    """Check the request and name its runs as the runner will (each schedule's config composed
    and validated, its label suffix from ``experiments.train.run_suffix``). Raises ConfigError
    with one line naming what is wrong, before anything is trained or written."""
    check_task(task)
    names = parse_schedules(schedules)
    seed_values = parse_seeds(seeds)
    check_extra_overrides(overrides)
    check_overrides([f"experiment={task}", f"scheduler={','.join(names)}", *overrides])
    try:
        _check_preset_sweep(task, overrides)
        labels, configs = [], []
        for name in names:
            run = [f"experiment={task}", f"scheduler={name}", f"seed={seed_values[0]}"]
            cfg, label = _named_config([*run, f"paths.results_dir={results_dir}", *overrides])
            labels.append(label)
            configs.append(cfg)
    except HydraException as error:  # what Hydra refuses that the checks above let through
        raise ConfigError(str(error).splitlines()[0]) from error
    first = configs[0]
    return Comparison(
        task=task,
        experiment=str(first.experiment_name),
        dataset=str(first.data.name),
        model=str(first.model.name),
        epochs=int(first.trainer.epochs),
        schedules=names,
        labels=tuple(labels),
        seeds=seed_values,
        overrides=tuple(overrides),
    )
