"""The horizon study's results (experiment=study/horizons/<task>; ``experiments.studies`` runs
it): per task, every schedule's honest test error within each budget of HORIZON_BUDGETS x T,
paired comparisons with the best schedule that needs the budget, the time to a validation target
within each budget, and the runs its single long runs saved.

Reading a budget B. A schedule that needs the budget (``needs_budget``) has a run per budget;
its value at B is that run's test error at its best validation epoch. One that does not has one
run per seed, at the longest budget, and its value at B is read from that run's first B epochs:
the best validation epoch among them (``experiments.rundir.best_validation``'s rule) and the test
error there, exactly what a run of B epochs would record, because its first B epochs are such a
run (tests/test_horizons.py proves the equivalence for every such schedule).

Comparisons. At each budget, every schedule against the best (lowest mean) schedule that needs
the budget, paired by seed (``statistics.versus``: paired t with the lattice continuity
correction, Holm over every pair of the budget's schedules because the reference is picked from
the data, nothing marked below ``statistics.MIN_PAIRS_TO_FLAG`` seeds).

Target. Per task the median over seeds of the minimum validation error of the reference
schedule (``time_to_target.REFERENCE``) at the standard budget T: AlgoPerf's rule applied to the
study's own runs (targets.yaml's targets belong to other experiments and budgets). Time to
target within B: the first epoch <= B whose validation error reaches it; a miss is infinite.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from autodrop.registry import schedule_needs_budget
from experiments import rundir as rd
from experiments.schema import HORIZON_BUDGETS
from scripts.analysis import statistics
from scripts.analysis import time_to_target as ttt
from scripts.analysis.display import display_name
from scripts.analysis.runs import RunSet, task_keys
from scripts.analysis.tables import Table, format_cell, order_labels, seeds_phrase

BUDGET_KEY = "horizon.budget"  # the label setting of a horizon-study run
VALUE = "test_err"
WORSE_MARK, BETTER_MARK, REFERENCE_MARK = " †", " ‡", " (ref)"
PROTOCOL = "Honest protocol (every choice made on the validation split)"
READS_COLUMNS = (
    "run_id", "experiment", "task", "schedule", "seed", "needs_budget", "budget",
    "horizon_epochs", "run_budget", "val_err", "test_err", "best_epoch",
)  # fmt: skip


def study_runs(runs: RunSet) -> pd.DataFrame:
    """The finished horizon-study runs (those whose label names ``horizon.budget``): run_id,
    experiment, task, schedule (registry name), seed, needs_budget, run_budget (x T),
    epochs and standard_epochs (T)."""
    frame = runs.finished().runs
    budgets = frame["settings"].map(lambda text: json.loads(text).get(BUDGET_KEY))
    frame = frame.assign(run_budget=budgets)[budgets.notna()]
    if frame.empty:
        return pd.DataFrame(
            columns=["run_id", "experiment", "task", "schedule", "seed", "needs_budget",
                     "run_budget", "epochs", "standard_epochs"]
        )  # fmt: skip
    epochs = frame["epochs_planned"].astype(int)
    return pd.DataFrame(
        {
            "run_id": frame["run_id"],
            "experiment": frame["experiment"],
            "task": task_keys(frame),  # with the experiment where a task has several
            "schedule": frame["scheduler_name"],
            "seed": frame["seed"].astype(int),
            "needs_budget": frame["scheduler_name"].map(schedule_needs_budget),
            "run_budget": frame["run_budget"].astype(float),
            "epochs": epochs,
            "standard_epochs": (epochs / frame["run_budget"].astype(float)).round().astype(int),
        }
    ).reset_index(drop=True)


def _read_at(records: list[dict], horizon: int) -> dict:
    """The honest numbers of a run cut to its first ``horizon`` epochs."""
    derived = rd.summarize_metrics([r for r in records if r["epoch"] <= horizon])
    return {
        "val_err": derived["min_val_err"],
        "test_err": derived["test_err_at_best_val"],
        "best_epoch": derived["best_val_epoch"],
    }


def horizon_reads(runs: RunSet) -> pd.DataFrame:
    """One row per (run, budget it is read at): a schedule that needs the budget at its own
    budget; one that does not, from its longest run per seed, at every budget up to that run's.
    Columns READS_COLUMNS (budget: x T; horizon_epochs: B in epochs)."""
    study = study_runs(runs)
    if study.empty:
        return pd.DataFrame(columns=list(READS_COLUMNS))
    keys = ["experiment", "task", "schedule", "seed"]
    anytime = study[~study["needs_budget"]].sort_values("run_budget")
    longest = anytime.drop_duplicates(keys, keep="last")
    rows = []
    for run in pd.concat([study[study["needs_budget"]], longest]).itertuples(index=False):
        records = _records(runs, run.run_id)
        budgets = (
            [run.run_budget]
            if run.needs_budget
            else [b for b in HORIZON_BUDGETS if b <= run.run_budget]
        )
        for budget in budgets:
            horizon = round(budget * run.standard_epochs)
            rows.append(
                {
                    **{key: getattr(run, key) for key in ("run_id", *keys, "needs_budget")},
                    "budget": float(budget),
                    "horizon_epochs": horizon,
                    "run_budget": run.run_budget,
                    **_read_at(records, horizon),
                }
            )
    return pd.DataFrame.from_records(rows, columns=list(READS_COLUMNS))


def _records(runs: RunSet, run_id: str) -> list[dict]:
    frame = runs.metrics[runs.metrics["run_id"] == run_id].drop(columns="run_id")
    return [
        {key: value for key, value in record.items() if pd.notna(value)}
        for record in frame.sort_values("epoch").to_dict("records")
    ]


def budget_row(task: str, budget: float, epochs: int) -> str:
    """The statistics row of a task at a budget: 'digits/resnet8 @ 0.25T (4 ep)'."""
    return f"{task} @ {budget:g}T ({epochs} ep)"


def comparisons(reads: pd.DataFrame) -> pd.DataFrame:
    """At every task and budget, each schedule against the best schedule that needs the budget
    (``statistics.versus``; module notes), with the task and budget beside the comparison."""
    long = _long(reads)
    aware = sorted(set(reads.loc[reads["needs_budget"], "schedule"]))
    baselines = statistics.best_per_row(long, VALUE, among=aware)
    versus = statistics.versus(long, baselines, VALUE).rename(columns={"task": "row"})
    versus["mean_diff"] = versus["mean_diff"] + 0.0  # a reversed tie reads -0.0
    where = long.drop_duplicates("row").set_index("row")[["task", "budget", "horizon_epochs"]]
    return versus.join(where, on="row")


def _long(reads: pd.DataFrame) -> pd.DataFrame:
    rows = [
        budget_row(t, b, e)
        for t, b, e in zip(reads["task"], reads["budget"], reads["horizon_epochs"], strict=True)
    ]
    return reads.assign(row=rows, scheduler=reads["schedule"])


def _budget_column(budget: float, epochs: int) -> str:
    return f"{budget:g}T ({epochs} ep)"


def _ordered(reads: pd.DataFrame) -> list[str]:
    return order_labels(set(reads["schedule"]))


def error_table(reads: pd.DataFrame) -> Table:
    """Per task and schedule (rows) and budget (columns): the test error at the best validation
    epoch within the budget, mean ± std over seeds, marked against the budget's reference."""
    versus = comparisons(reads)
    marks = {}
    for record in versus.itertuples(index=False):
        if record.significant:
            marks[(record.row, record.schedule)] = (
                WORSE_MARK if record.mean_diff > 0 else BETTER_MARK
            )
        marks.setdefault((record.row, record.baseline), REFERENCE_MARK)
    long = _long(reads)
    stats = long.groupby(["task", "row", "budget", "horizon_epochs", "schedule"])[VALUE]
    stats = stats.agg(mean="mean", std="std", n="count").reset_index()
    stats["cell"] = [
        format_cell(m, s, int(n)) + marks.get((row, schedule), "")
        for m, s, n, row, schedule in stats[["mean", "std", "n", "row", "schedule"]].itertuples(
            index=False
        )
    ]
    stats["column"] = [
        _budget_column(b, e) for b, e in zip(stats["budget"], stats["horizon_epochs"], strict=True)
    ]
    display = stats.pivot(index=["task", "schedule"], columns="column", values="cell")
    order = stats.sort_values("budget").drop_duplicates("column")["column"]
    display = display.reindex(columns=list(order)).fillna("")
    display = _sorted_rows(display, reads)
    display.insert(0, "needs budget", [_needs(s) for _, s in display.index])
    display = _shown_schedules(display)
    least = statistics.MIN_PAIRS_TO_FLAG
    n_seeds = seeds_phrase(stats["n"])
    caption = (
        f"{PROTOCOL}: test error (%) at the epoch of lowest validation error within each budget "
        f"(multiples of the task's standard epochs T), mean ± sample std over seeds; {n_seeds}. "
        "A schedule that needs the budget is trained for each budget; one that does not is "
        "trained once, for 2T, and read at every budget from that run's first epochs."
    )
    note = (
        f"{REFERENCE_MARK.strip()}: the budget's best schedule that needs the budget (lowest "
        f"mean), the reference; {WORSE_MARK.strip()} / {BETTER_MARK.strip()}: worse / better "
        f"than it, paired t-test ({statistics.METHOD}), Holm-adjusted over every pair of the "
        f"budget's schedules, p < {statistics.ALPHA:.2g}, over >= {least} seeds both finished "
        "(horizons_comparisons.md)"
    )
    if stats["n"].max() < least:
        note += f"; no cell can be marked: that takes >= {least} seeds"
    return Table("horizons", display, stats.drop(columns="cell"), note, caption)


def _needs(schedule: str) -> str:
    return "yes" if schedule_needs_budget(schedule) else "no (anytime)"


def _sorted_rows(display: pd.DataFrame, reads: pd.DataFrame) -> pd.DataFrame:
    rank = {name: i for i, name in enumerate(_ordered(reads))}
    return display.sort_index(key=lambda ix: ix.map(rank) if ix.name == "schedule" else ix)


def _shown_schedules(display: pd.DataFrame) -> pd.DataFrame:
    return display.rename(index=lambda name: display_name(name), level="schedule")


def comparisons_table(reads: pd.DataFrame) -> Table:
    """Every comparison of :func:`comparisons`, schedules by display name."""
    values = comparisons(reads)
    shown = values.assign(
        schedule=values["schedule"].map(display_name),
        baseline=values["baseline"].map(display_name),
        significant=values["significant"].map({True: "yes", False: ""}),
    )
    columns = ["row", "schedule", "baseline", *statistics.COMPARISON_COLUMNS[3:]]
    display = shown[columns].round(4).set_index("row")
    display.index.name = "task @ budget"
    caption = (
        f"{PROTOCOL}: at each budget, paired differences schedule - reference (the budget's "
        "best schedule that needs the budget) of the test error at the best validation epoch "
        "within the budget, in points over the seeds both have (negative: the schedule is "
        "better); n_pairs = the seeds both have."
    )
    note = (
        f"ci_low, ci_high: {statistics.CONFIDENCE:.0%} interval, {statistics.METHOD}; p_holm: "
        "Holm over every pair of the budget's schedules (the reference is picked from the "
        f"data); significant: p_holm < {statistics.ALPHA:.2g} over >= "
        f"{statistics.MIN_PAIRS_TO_FLAG} seeds; p_improve = P(schedule(i) < reference(j)) over "
        "seed pairs, ties count half"
    )
    return Table("horizons_comparisons", display, values, note, caption)


def study_targets(reads: pd.DataFrame, runs: RunSet) -> list[ttt.Target]:
    """Per experiment and task, the validation target of the study (module notes)."""
    reference = reads[(reads["schedule"] == ttt.REFERENCE) & (reads["budget"] == 1.0)]
    reference = reference.dropna(subset=["val_err"])
    splits = runs.runs.set_index("run_id")[["val_size", "val_fingerprint"]]
    targets = []
    for (experiment, task), group in reference.groupby(["experiment", "task"], sort=True):
        split = splits.loc[group["run_id"]].drop_duplicates()
        if len(split) != 1:
            raise ValueError(
                f"{experiment} {task}: the {ttt.REFERENCE} runs have different validation "
                "splits: the study's target needs one"
            )
        size, fingerprint = split.iloc[0]
        targets.append(
            ttt.Target(
                experiment=str(experiment),
                task=str(task),
                val_err=float(np.median(group["val_err"].to_numpy(dtype=float))),
                reference=f"{ttt.REFERENCE} at T",
                seeds=len(group),
                val_size=int(size),
                val_fingerprint=None if pd.isna(fingerprint) else str(fingerprint),
            )
        )
    return targets


def times_within_budgets(reads: pd.DataFrame, runs: RunSet, targets: list[ttt.Target]):
    """One row per read: the time to the task's target within the read's budget (the run's
    records cut to the budget; ``time_to_target.times_to_target``'s columns, misses infinite)
    with the read's schedule, budget and horizon_epochs."""
    if reads.empty or not targets:
        return pd.DataFrame(columns=[*ttt.TIME_COLUMNS, *ttt.MEASURES, "budget"])
    splits = runs.runs.set_index("run_id")[["val_size", "val_fingerprint"]]
    read_ids = [f"{r}#{h}" for r, h in zip(reads["run_id"], reads["horizon_epochs"], strict=True)]
    frame = reads.assign(
        run_id=read_ids,
        source=reads["run_id"],
        row=_long(reads)["row"],
        scheduler=reads["schedule"],
        val_size=splits.loc[reads["run_id"], "val_size"].to_numpy(),
        val_fingerprint=splits.loc[reads["run_id"], "val_fingerprint"].to_numpy(),
    )
    metrics = []
    for read in frame.itertuples(index=False):
        curve = runs.metrics[runs.metrics["run_id"] == read.source]
        metrics.append(curve[curve["epoch"] <= read.horizon_epochs].assign(run_id=read.run_id))
    times = ttt.times_to_target(frame, pd.concat(metrics, ignore_index=True), targets)
    extra = frame.set_index("run_id")[["budget", "horizon_epochs"]]
    return times.join(extra, on="run_id")


def time_table(reads: pd.DataFrame, runs: RunSet) -> Table | None:
    """Per task and schedule (rows) and budget (columns): the median over seeds of the epochs to
    the study's validation target within the budget, and how many seeds reached it."""
    targets = study_targets(reads, runs)
    times = times_within_budgets(reads, runs, targets)
    if times.empty:
        return None
    grouped = times.groupby(["task", "scheduler", "budget", "horizon_epochs"], sort=True)
    per = grouped.agg(
        n=("run_id", "count"),
        reached=("reached", "sum"),
        epochs=("epochs", lambda v: float(np.median(v))),
        target=("target", "first"),
    ).reset_index()
    per["cell"] = [
        f"{'not reached' if math.isinf(e) else f'{e:.0f}'} ({int(r)}/{int(n)})"
        for e, r, n in per[["epochs", "reached", "n"]].itertuples(index=False)
    ]
    per["column"] = [
        _budget_column(b, e) for b, e in zip(per["budget"], per["horizon_epochs"], strict=True)
    ]
    display = per.pivot(index=["task", "scheduler"], columns="column", values="cell")
    order = per.sort_values("budget").drop_duplicates("column")["column"]
    display = display.reindex(columns=list(order)).fillna("")
    display.index.names = ["task", "schedule"]
    display = _shown_schedules(_sorted_rows(display, reads))
    shown_targets = "; ".join(f"{t.task}: {t.val_err:.2f} %" for t in targets)
    caption = (
        f"{PROTOCOL}: epochs to the task's validation-error target within each budget (AlgoPerf's "
        "measure, at epoch resolution): the median over seeds, a seed that never reaches it "
        "within the budget counting as infinite ('not reached' when half or more missed); in "
        "parentheses the seeds that reached it / the seeds."
    )
    note = (
        f"target ({shown_targets}): the median over seeds of the minimum validation error of "
        f"{display_name(ttt.REFERENCE)} at the standard budget T, from the study's own runs"
    )
    return Table("horizons_time_to_target", display, per.drop(columns="cell"), note, caption)


def runs_table(runs: RunSet) -> Table | None:
    """Per task and schedule: the runs and epochs trained, those a run per budget would have
    trained, and the difference (the single long runs' saving)."""
    study = study_runs(runs)
    if study.empty:
        return None
    rows = []
    for (task, schedule), group in study.groupby(["task", "schedule"], sort=True):
        seeds = group["seed"].nunique()
        standard = int(group["standard_epochs"].iloc[0])
        per_budget = sum(round(b * standard) for b in HORIZON_BUDGETS)
        rows.append(
            {
                "task": task,
                "schedule": schedule,
                "needs budget": _needs(schedule),
                "runs": len(group),
                "epochs": int(group["epochs"].sum()),
                "runs, one per budget": seeds * len(HORIZON_BUDGETS),
                "epochs, one run per budget": seeds * per_budget,
            }
        )
    values = pd.DataFrame.from_records(rows)
    values["epochs saved"] = values["epochs, one run per budget"] - values["epochs"]
    display = values.set_index(["task", "schedule"])
    display = _shown_schedules(_sorted_rows(display, study))
    total = int(values["epochs saved"].sum())
    share = total / max(int(values["epochs, one run per budget"].sum()), 1)
    caption = (
        "The horizon study's runs: per schedule the runs and epochs trained (finished runs), and "
        "what training every schedule once per budget would take. A schedule that needs no "
        "budget is trained once per seed, at the longest budget."
    )
    note = f"epochs saved in all: {total} ({share:.0%} of a run per budget for every schedule)"
    return Table("horizons_runs", display, values, note, caption)


def horizon_tables(runs: RunSet) -> list[Table]:
    """Every table of the horizon study's finished runs (none without such runs)."""
    reads = horizon_reads(runs)
    if reads.empty:
        return []
    built = [error_table(reads), comparisons_table(reads), time_table(reads, runs)]
    built.append(runs_table(runs))
    return [table for table in built if table is not None]
