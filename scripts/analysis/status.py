"""Grid status and cost: what a launch's grid has finished, what still runs, what is left, and how
long the rest will take (``python -m scripts.status`` prints it).

The grid comes from :mod:`scripts.analysis.grid`; the runs from each run directory's summary.json
fields (never from directory names) and its ``.lock``. A run is finished, running (another
process holds its flock), stale (its summary says running but nobody holds the lock), failed,
diverged, any other status the runner records (its own column) or missing. Runs found outside
the grid (a user's own runs, other presets') are counted per experiment and task beside it.

Remaining compute = remaining epochs x device-seconds per epoch of the task (dataset/model): the
mean of time_per_iter_s x steps_per_epoch x world_size over finished runs of the task, else
ESTIMATED_EPOCH_S below; wall time = compute / the number of devices (ideal scaling).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments import rundir as rd
from experiments.data.presence import missing_data
from experiments.rundir import DAMAGED, FINISHED, RUNNING, SUMMARY_FILE
from scripts.analysis.grid import PlannedRun
from scripts.analysis.text_table import Table

MISSING, STALE = "missing", rd.STALE
COLUMNS = ("finished", "running", STALE, "failed", "diverged")  # then other statuses, missing
# Device-seconds per epoch when no run of the task has finished: the README's per-run estimates
# for one modern GPU (from the paper's Table 3 and typical throughput, not measured here) divided
# by the preset's epochs; digits is measured on this project's CPU (one torch thread).
ESTIMATED_EPOCH_S = {
    "cifar10/resnet18": 1.0 * 3600 / 200,
    "cifar10/wrn28_10": 3.5 * 3600 / 200,
    "cifar100/resnet34": 1.5 * 3600 / 200,
    "cifar100/wrn40_10": 5.5 * 3600 / 200,
    "imagenet/resnet18_imagenet": 24.0 * 3600 / 100,
    "imagenet/resnet50_imagenet": 60.0 * 3600 / 100,
    "digits/resnet8": 1.2,
}
ESTIMATE_SOURCE = "estimated (scripts/analysis/status.py ESTIMATED_EPOCH_S; no finished run)"
_IDENTITY = ("experiment", "dataset", "model", "scheduler", "seed")
# A scanned run (scan_runs) and a row of the grid (grid_status): plain dicts of these fields.
Run = dict[str, Any]
GridRow = dict[str, Any]


def run_state(summary: dict, held: bool) -> str:
    """The status column of one run."""
    status = str(summary.get("status") or RUNNING)
    if status == FINISHED:
        return FINISHED
    if held:
        return RUNNING
    return STALE if status == RUNNING else status


def scan_runs(runs_dir: str | Path) -> list[Run]:
    """One record per run directory holding a summary.json: identity, state and timing fields.
    A run whose summary is unreadable, or that says finished without complete records, is
    ``damaged`` (its identity then read from its path): one bad file never stops the listing."""
    records = []
    for path in sorted(Path(runs_dir).rglob(SUMMARY_FILE)):
        run_dir = path.parent
        summary = rd.read_summary(path)
        if summary is None or any(summary.get(key) is None for key in _IDENTITY):
            named = rd.run_path_fields(run_dir.relative_to(runs_dir))
            summary, state = {**(summary or {}), **named}, DAMAGED
        elif summary.get("status") == FINISHED and rd.completeness_problem(run_dir):
            state = DAMAGED
        else:
            state = run_state(summary, rd.lock_is_held(run_dir))
        record = {key: summary[key] for key in _IDENTITY}
        record["seed"] = int(record["seed"])
        for key in ("epochs_planned", "epochs_done", "steps_per_epoch", "time_per_iter_s"):
            record[key] = summary.get(key)
        record["world_size"] = summary.get("world_size") or 1
        record["state"] = state
        record["run_dir"] = str(run_dir)
        records.append(record)
    return records


def _number(value: Any) -> float | None:
    """A summary's number, None when it is missing or not one."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def epoch_seconds(runs: Sequence[Run]) -> dict[str, tuple[float, str]]:
    """Per task: device-seconds per epoch and where the number comes from."""
    estimates = {task: (s, ESTIMATE_SOURCE) for task, s in ESTIMATED_EPOCH_S.items()}
    measured: dict[str, list[float]] = {}
    for run in runs:
        per_iter, steps = _number(run["time_per_iter_s"]), _number(run["steps_per_epoch"])
        if run["state"] == FINISHED and per_iter is not None and steps is not None:
            task = f"{run['dataset']}/{run['model']}"
            measured.setdefault(task, []).append(per_iter * steps * float(run["world_size"]))
    for task, seconds in sorted(measured.items()):
        estimates[task] = (statistics.fmean(seconds), f"measured ({len(seconds)} runs)")
    return estimates


def grid_status(planned: Sequence[PlannedRun], runs: Sequence[Run]) -> list[GridRow]:
    """One row per planned run: its state, epochs left and estimated device-seconds left."""
    found = {tuple(run[key] for key in _IDENTITY): run for run in runs}
    speeds = epoch_seconds(runs)
    rows = []
    for run in planned:
        row = found.get(run.key)
        state = MISSING if row is None else row["state"]
        done = 0 if row is None or _number(row["epochs_done"]) is None else int(row["epochs_done"])
        left = 0 if state == FINISHED else max(run.epochs - done, 0)
        seconds, source = speeds.get(run.task, (math.nan, "unknown"))
        rows.append(
            {
                "experiment": run.experiment,
                "task": run.task,
                "schedule": run.scheduler,
                "seed": run.seed,
                "state": state,
                "epochs_done": done,
                "epochs": run.epochs,
                "remaining_s": left * seconds,
                "estimate": source,
            }
        )
    return rows


def _sum_known(values: Sequence[float]) -> float:
    """The sum of the numbers that are known; NaN when none is."""
    known = [value for value in values if not math.isnan(value)]
    return math.fsum(known) if known else math.nan


def _hours(seconds: float) -> float:
    """Seconds as hours rounded to 2 decimals (as numpy rounds: half to even of x * 100)."""
    return seconds if math.isnan(seconds) else round(seconds / 3600 * 100) / 100


def count_table(status: Sequence[GridRow]) -> Table:
    """Per experiment, task and schedule: runs in each state and hours of compute left."""
    groups: dict[tuple[str, str, str], list[GridRow]] = {}
    for row in status:
        groups.setdefault((row["experiment"], row["task"], row["schedule"]), []).append(row)
    states = {row["state"] for row in status}
    others = sorted(states - {*COLUMNS, MISSING})
    counted = [*COLUMNS, *others, MISSING]
    rows = []
    for key, members in sorted(groups.items()):
        counts = Counter(row["state"] for row in members)
        hours = _hours(_sum_known([row["remaining_s"] for row in members]))
        rows.append((*key, *(counts[state] for state in counted), hours))
    return Table(("experiment", "task", "schedule", *counted, "remaining_h"), rows)


def outside_grid(planned: Sequence[PlannedRun], runs: Sequence[Run]) -> Table:
    """Per experiment and task, the runs that are not in ``planned``: their number in each state
    (the states that occur) and in all."""
    keys = {run.key for run in planned}
    others = [run for run in runs if tuple(run[key] for key in _IDENTITY) not in keys]
    if not others:
        return Table(("experiment", "task", "runs"))
    occurring = {run["state"] for run in others}
    states = [state for state in COLUMNS if state in occurring]
    states += sorted(occurring - set(states))
    groups: dict[tuple[str, str], Counter] = {}
    for run in others:
        key = (run["experiment"], f"{run['dataset']}/{run['model']}")
        groups.setdefault(key, Counter())[run["state"]] += 1
    rows = [
        (*key, *(counts[state] for state in states), sum(counts.values()))
        for key, counts in sorted(groups.items())
    ]
    return Table(("experiment", "task", *states, "runs"), rows)


def outside_grid_lines(planned: Sequence[PlannedRun], runs: Sequence[Run]) -> list[str]:
    """The table of ``outside_grid`` under a heading; nothing when every run is in the grid."""
    table = outside_grid(planned, runs)
    if table.empty:
        return []
    heading = f"{sum(table.column('runs'))} runs outside this grid, by experiment:"
    return ["", heading, table.to_string()]


def summary_lines(status: Sequence[GridRow], gpus: int) -> list[str]:
    """Totals, the estimate's sources and the wall time on ``gpus`` devices."""
    left = [row for row in status if row["state"] != FINISHED]
    finished = len(status) - len(left)
    lines = [f"{len(status)} runs in the grid: {finished} finished"]
    sources: dict[str, str] = {}
    for row in left:
        sources.setdefault(row["task"], row["estimate"])
    lines += [f"  {task}: time per epoch {source}" for task, source in sources.items()]
    if not left:
        lines.append("nothing left to run")
    elif any(math.isnan(row["remaining_s"]) for row in left):
        unknown = sorted({row["task"] for row in left if math.isnan(row["remaining_s"])})
        lines.append(f"remaining compute unknown: no finished run or estimate for {unknown}")
    else:
        total_h = _sum_known([row["remaining_s"] for row in left]) / 3600
        lines.append(
            f"remaining compute: {total_h:.2f} device-hours; wall time on {gpus} device(s) "
            f"working in parallel: {total_h / gpus:.2f} h"
        )
    return lines


def saving_lines(planned: Sequence[PlannedRun], runs: Sequence[Run]) -> list[str]:
    """What the horizon study's single long runs save: per experiment, the runs of schedules
    that need no budget, the shorter budgets read from them instead of trained (runs and
    epochs) and the device-hours those would have taken; nothing outside the study."""
    serving = [run for run in planned if run.serves]
    if not serving:
        return []
    speeds = epoch_seconds(runs)
    lines = []
    for experiment in sorted({run.experiment for run in serving}):
        mine = [run for run in serving if run.experiment == experiment]
        saved_runs = sum(len(run.serves) for run in mine)
        saved_epochs = sum(sum(run.serves) for run in mine)
        seconds = sum(sum(run.serves) * speeds.get(run.task, (math.nan, ""))[0] for run in mine)
        hours = (
            "unknown device-hours" if math.isnan(seconds) else f"{seconds / 3600:.2f} device-hours"
        )
        lines.append(
            f"{experiment}: {len(mine)} runs of schedules that need no budget are read at "
            f"{saved_runs} shorter budgets: {saved_runs} runs ({saved_epochs} epochs, {hours}) "
            "not trained"
        )
    return lines


def missing_data_lines(planned: Sequence[PlannedRun], status: Sequence[GridRow]) -> list[str]:
    """For each dataset the runs to launch need and do not find (``experiments.data.presence``):
    one line naming what is missing and how many runs it stops."""
    keys = {
        (row["experiment"], row["task"], row["schedule"], row["seed"])
        for row in status
        if row["state"] not in (FINISHED, RUNNING)
    }
    needed: dict[tuple[str, str], int] = {}
    for run in planned:
        if (run.experiment, run.task, run.scheduler, run.seed) in keys:
            where = (run.dataset, run.data_root)
            needed[where] = needed.get(where, 0) + 1
    lines = []
    for (dataset, root), count in sorted(needed.items()):
        problem = missing_data(dataset, root)
        if problem:
            lines.append(f"data missing for {count} runs of {dataset}: {problem}")
    return lines


def dry_run_lines(status: Sequence[GridRow]) -> list[str]:
    """What a launch would do with each unfinished run of the grid."""
    lines = []
    for run in status:
        if run["state"] == FINISHED:
            continue
        dataset, model = run["task"].split("/")
        where = rd.run_path(run["experiment"], dataset, model, run["schedule"], run["seed"])
        if run["state"] == MISSING:
            action = f"start ({run['epochs']} epochs)"
        elif run["state"] == RUNNING:
            action = "skip: another process trains it"
        else:
            action = f"relaunch ({run['state']}, epoch {run['epochs_done']}/{run['epochs']})"
        lines.append(f"would {action}: {where.as_posix()}")
    return lines or ["nothing to launch: every run of the grid finished"]
