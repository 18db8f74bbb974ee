"""Time to a validation target (AlgoPerf's measure) and its performance profile across tasks.

Targets. Per experiment and task, a validation error to reach, set from reference runs as
AlgoPerf sets targets from tuned baselines: the median over seeds of the minimum validation
error of the reference schedule (``REFERENCE``, the tuned multistep schedule). They are kept in
one file, ``TARGETS_FILE`` (committed for the quick task), and written for any other task by

    python -m scripts.targets --runs results/runs --experiment <experiment> --write

A target applies to the runs of its experiment and task whose validation split has the same
fingerprint (a target set on another split is never used).

Time to target, per run: the first epoch whose validation error is at most the target, the
optimizer steps done by then and the training seconds (the epochs' ``time/train_s``: training
and the schedule's preparation for evaluation, the device synchronised; evaluation excluded).
Validation is measured once per epoch, so times are at epoch resolution. A run that never
reaches the target is a miss: ``reached`` False and every time infinite, never a number.

Per task and schedule, the time is the median over seeds with misses counted as infinite (so it
is infinite when half of the seeds or more missed). The performance profile (AlgoPerf's score):
for each schedule and ratio r >= 1, the fraction of tasks on which its time is at most r times
the fastest schedule's on that task; a task the schedule missed or did not run counts as not
within any r. It means something only across several tasks: ``statistics.MIN_PROFILE_TASKS``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from scripts.analysis.runs import RunSet, task_keys

TARGETS_FILE = Path(__file__).with_name("targets.yaml")
REFERENCE = "step"
#: The performance profile is drawn from this many tasks with a target on.
#: AlgoPerf integrates its profile for ratios from 1 to 4.
MAX_RATIO = 4.0
#: What a time is counted in: per-run column -> how tables name it.
MEASURES = {"epochs": "epochs", "steps": "optimizer steps", "train_s": "training seconds"}
TIME_COLUMNS = ("run_id", "row", "experiment", "task", "scheduler", "seed", "target", "reached")
_TOLERANCE = 1e-9  # errors are ratios of counts: equal counts give equal floats, up to this


@dataclass(frozen=True)
class Target:
    """The validation error (%) that runs of ``experiment``'s ``task`` must reach."""

    experiment: str
    task: str
    val_err: float
    reference: str
    seeds: int
    val_size: int
    val_fingerprint: str | None


def load_targets(path: str | Path = TARGETS_FILE) -> list[Target]:
    """The targets of a targets file (none when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    content = yaml.safe_load(path.read_text()) or {}
    targets = []
    for experiment, tasks in content.items():
        for task, entry in (tasks or {}).items():
            try:
                targets.append(
                    Target(
                        experiment=str(experiment),
                        task=str(task),
                        val_err=float(entry["val_err"]),
                        reference=str(entry["reference"]),
                        seeds=int(entry["seeds"]),
                        val_size=int(entry["validation"]["size"]),
                        val_fingerprint=entry["validation"].get("fingerprint"),
                    )
                )
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(
                    f"{path}: target {experiment}/{task} is malformed ({error!r}); expected "
                    "val_err, reference, seeds and validation: {size, fingerprint}"
                ) from None
    return targets


def compute_targets(runs: RunSet, reference: str = REFERENCE) -> list[Target]:
    """One target per experiment and task from the finished ``reference`` runs with a
    validation split: the median over seeds of their minimum validation error."""
    frame = runs.finished().runs
    frame = frame[(frame["scheduler"] == reference) & (frame["val_size"] > 0)]
    frame = frame.dropna(subset=["min_val_err"])
    targets = []
    for (experiment, task), group in frame.groupby(["experiment", "task"], sort=True):
        splits = set(zip(group["val_size"], group["val_fingerprint"], strict=True))
        if len(splits) > 1:
            raise ValueError(
                f"{experiment} {task}: the {reference} runs have different validation splits "
                f"{sorted(splits, key=str)}: a target needs one"
            )
        ((size, fingerprint),) = splits
        targets.append(
            Target(
                experiment=str(experiment),
                task=str(task),
                val_err=float(np.median(group["min_val_err"].to_numpy(dtype=float))),
                reference=reference,
                seeds=len(group),
                val_size=int(size),
                val_fingerprint=None if pd.isna(fingerprint) else str(fingerprint),
            )
        )
    return targets


def write_targets(targets: list[Target], path: str | Path = TARGETS_FILE) -> Path:
    """Add ``targets`` to the targets file (replacing those of the same experiment and task)."""
    path = Path(path)
    kept = [t for t in load_targets(path) if (t.experiment, t.task) not in _keys(targets)]
    content: dict[str, dict[str, dict]] = {}
    for target in sorted([*kept, *targets], key=lambda t: (t.experiment, t.task)):
        entry = asdict(target)
        content.setdefault(target.experiment, {})[target.task] = {
            "val_err": entry["val_err"],
            "reference": entry["reference"],
            "seeds": entry["seeds"],
            "validation": {"size": entry["val_size"], "fingerprint": entry["val_fingerprint"]},
        }
    header = (
        "# Validation-error targets (%) for time to target: per experiment and task, the median\n"
        "# over seeds of the reference schedule's minimum validation error.\n"
        "# Written by python -m scripts.targets (scripts/analysis/time_to_target.py).\n"
    )
    path.write_text(header + yaml.safe_dump(content, sort_keys=True))
    return path


def _keys(targets: list[Target]) -> set[tuple[str, str]]:
    return {(t.experiment, t.task) for t in targets}


def matching_target(run: pd.Series, targets: list[Target]) -> Target | None:
    """The target of a run: same experiment and task, same validation split."""
    for target in targets:
        if (target.experiment, target.task) != (run["experiment"], run["task"]):
            continue
        if run["val_size"] == target.val_size and run["val_fingerprint"] == target.val_fingerprint:
            return target
    return None


def untargeted_splits(runs: pd.DataFrame, targets: list[Target]) -> list[str]:
    """Each (experiment, task, validation split) of ``runs`` (finished, with a split) that no
    target matches, as ``"<experiment> <task> (validation split <size>, <fingerprint>)"``:
    the runs whose time to target cannot be reported."""
    held_out = runs[runs["val_size"].fillna(0) > 0]
    missing = {
        f"{run['experiment']} {run['task']} (validation split {run['val_size']}, "
        f"{run['val_fingerprint']})"
        for _, run in held_out.iterrows()
        if matching_target(run, targets) is None
    }
    return sorted(missing)


def times_to_target(
    runs: pd.DataFrame, metrics: pd.DataFrame, targets: list[Target]
) -> pd.DataFrame:
    """One row per run (a row of ``RunSet.runs``; its task row ``row`` when given) that has a
    target: the target, whether the run reached it and the epochs, steps and training seconds
    it took (infinite for a miss; training seconds NaN when a record lacks them)."""
    rows = []
    if "row" not in runs:
        runs = runs.assign(row=task_keys(runs)) if not runs.empty else runs.assign(row=None)
    for _, run in runs.iterrows():
        target = matching_target(run, targets)
        if target is None:
            continue
        curve = metrics[metrics["run_id"] == run["run_id"]].sort_values("epoch")
        rows.append(
            {
                **{key: run[key] for key in TIME_COLUMNS[:6]},
                "target": target.val_err,
                **_time_to(curve, target.val_err),
            }
        )
    return pd.DataFrame.from_records(rows, columns=[*TIME_COLUMNS, *MEASURES])


def _time_to(curve: pd.DataFrame, target: float) -> dict:
    if "val/err" not in curve:
        return {"reached": False, **dict.fromkeys(MEASURES, math.inf)}
    reached = curve.index[curve["val/err"] <= target + _TOLERANCE]
    if reached.empty:
        return {"reached": False, **dict.fromkeys(MEASURES, math.inf)}
    upto = curve.loc[: reached[0]]
    seconds = upto["time/train_s"] if "time/train_s" in upto else pd.Series([math.nan])
    return {
        "reached": True,
        "epochs": float(upto["epoch"].iloc[-1]),
        "steps": float(upto["step"].iloc[-1]),
        "train_s": float(seconds.sum()) if seconds.notna().all() else math.nan,
    }


def per_task(times: pd.DataFrame) -> pd.DataFrame:
    """Per task row and schedule: runs ``n``, runs that ``reached`` the target, the target, and
    the median over seeds of each measure (misses infinite)."""
    grouped = times.groupby(["row", "scheduler"], sort=True)
    frame = grouped.agg(
        n=("run_id", "count"), reached=("reached", "sum"), target=("target", "first")
    )
    for measure in MEASURES:
        frame[measure] = grouped[measure].agg(lambda values: float(np.median(values)))
    return frame.reset_index().astype({"n": "int64", "reached": "int64"})


def profile(task_times: pd.DataFrame, measure: str, ratios: np.ndarray) -> pd.DataFrame:
    """AlgoPerf's performance profile of ``measure``: per schedule and ratio r, the fraction of
    task rows on which the schedule's time is at most r times the row's fastest."""
    table = task_times.pivot(index="row", columns="scheduler", values=measure).astype(float)
    fastest = table.where(np.isfinite(table)).min(axis=1)
    relative = table.div(fastest, axis=0).where(np.isfinite(table), math.inf).fillna(math.inf)
    records = [
        {"scheduler": label, "ratio": float(r), "fraction": float((relative[label] <= r).mean())}
        for label in relative.columns
        for r in ratios
    ]
    return pd.DataFrame.from_records(records, columns=["scheduler", "ratio", "fraction"])
