"""The paper's tables from a RunSet of finished runs: pure functions returning :class:`Table`.

Two protocols stand side by side (README, "Two protocols"): Table 2 and the tables built on it
follow the paper's (the minimum test error over the epochs: the epoch is chosen on the test
set); ``table2_honest`` the honest one (the test error at the epoch of the lowest validation
error, for runs with a validation split) and ``time_to_target`` AlgoPerf's time to a validation
target. Every caption names its protocol.

Cells read "mean ± std (n)" over seeds (sample std, ddof=1; a single seed shows no std).
Tables 2, 3 and 16 use runs whose label names no setting; runs whose label names one (their
summary.json's ``label_settings``, e.g. {"scheduler.window": 32} for 'autodrop-window=32') feed
the ablation tables instead. The grid-searched baselines (HD's beta,
schedule-free's lr multiplier) are the exception: Tables 2, 3 and 16 show, per task, the setting
with the lowest mean minimum test error (the paper's selection for HD: a choice made on the
test set; the honest tables choose it by the lowest mean minimum validation error), and Table
2's cell names it, e.g. "6.78 ± 0.23 (4) [beta=0.0001]"; every setting also has its
ablation-style table.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from autodrop.registry import SCHEDULE_NAMES, schedule_class
from scripts.analysis import statistics
from scripts.analysis import time_to_target as ttt
from scripts.analysis.display import display_name, paper_display_name, schedule_rank, short_key
from scripts.analysis.runs import RunSet, task_keys

PAPER_TABLE2 = Path(__file__).with_name("paper_table2.csv")
# Grid-searched baselines (the registry's ``tuned_setting``): schedule name -> the setting whose
# best value Tables 2, 3 and 16 show (a label setting whose key ends in it: optimizer.beta).
TUNED_SETTINGS = {
    name: schedule_class(name).tuned_setting
    for name in SCHEDULE_NAMES
    if schedule_class(name).tuned_setting
}
BUDGET_PERCENTS = (25, 50, 75, 100)
# The paper's AutoDrop defaults (ablation Tables 1, 7-14) are the library's: the defaults of
# AutoDrop's constructor, by the config key a label names.
_AUTODROP_DEFAULTS = inspect.signature(schedule_class("autodrop")).parameters
PAPER_DEFAULTS = {
    ("autodrop", f"scheduler.{option}"): _AUTODROP_DEFAULTS[option].default
    for option in ("window", "buffer_size", "rho")
}


def _imagenet_window() -> int:
    """The ImageNet presets' AutoDrop window (the paper's ImageNet ablation), read from
    conf/scheduler_preset/paper/*imagenet*/autodrop.yaml so the value is written once."""
    from omegaconf import OmegaConf

    from experiments.config import CONF_DIR

    presets = sorted((CONF_DIR / "scheduler_preset" / "paper").glob("*imagenet*/autodrop.yaml"))
    windows = {OmegaConf.load(preset).window for preset in presets}
    if len(windows) != 1:
        raise ValueError(f"the ImageNet presets {presets} set several AutoDrop windows: {windows}")
    return windows.pop()


IMAGENET_WINDOW = _imagenet_window()
DEFAULT_MARK = " *"
# Table 2 marks a schedule whose paired difference to its row's best has a CI excluding 0.
SIGNIFICANT_MARK = " †"
# The paper's methods; every other schedule is a baseline of the comparisons table.
METHODS = ("autodrop", "autodrop_v1")
# The label setting of experiment=ablation/lr_sensitivity ('autodrop-lrx=0.25' records
# {"lr_sweep.multiplier": 0.25}): its runs feed the lr-sensitivity table (which reads each run's
# lr from its recorded config), not an ablation table.
LR_SWEEP_KEY = "lr_sweep.multiplier"


@dataclass
class Table:
    """A table as displayed (formatted strings, index = row key) and as numbers (long form)."""

    name: str
    display: pd.DataFrame
    values: pd.DataFrame
    note: str = ""
    caption: str = ""  # what the cells are: metric, unit, statistic and n


# Every caption starts with the protocol its numbers follow.
PAPER_PROTOCOL = "Paper's protocol (the epoch chosen on the test set)"
HONEST_PROTOCOL = "Honest protocol (every choice made on the validation split)"
MIN_ERR = f"{PAPER_PROTOCOL}: minimum test error (%) over the epochs of each run"
SEED_STATISTIC = "mean ± sample std over seeds"
HONEST_ERR = "Test error (%) at the epoch of each run's lowest validation error"
# The value each protocol reports per run, and what it picks a tuned setting by.
PAPER_VALUE, HONEST_VALUE = "min_test_err", "test_err_at_best_val"
SELECTED_ON = {PAPER_VALUE: "min_test_err", HONEST_VALUE: "min_val_err"}


def seeds_phrase(counts) -> str:
    """'n = 3 seeds per cell', or the range when cells differ; n is also in parentheses."""
    counts = sorted({int(n) for n in counts if n > 0})
    if not counts:
        return "no finished runs"
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"n = {n} seeds per cell (in parentheses)"


def format_cell(mean: float, std: float, n: int, digits: int = 2) -> str:
    """'mean ± std (n)'; no std for a single value; '' when there is no value."""
    if n == 0 or math.isnan(mean):
        return ""
    if n == 1 or math.isnan(std):
        return f"{mean:.{digits}f} ({n})"
    return f"{mean:.{digits}f} ± {std:.{digits}f} ({n})"


def order_labels(labels: Iterable[str], runs: pd.DataFrame | None = None) -> list[str]:
    """Schedule labels in table order: registry schedules in the registry's order, unknown ones
    last, varied settings by value. ``runs`` (rows with ``scheduler``, ``scheduler_name``,
    ``setting_key`` and ``setting_value``) says what each label is; a label it lacks is taken
    for a schedule name."""
    known: dict[str, tuple] = {}
    if runs is not None:
        columns = ["scheduler", "scheduler_name", "setting_key", "setting_value"]
        for label, name, key, value in runs[columns].itertuples(index=False):
            known.setdefault(label, (name, key, value))

    def sort_key(label: str):
        name, key, value = known.get(label, (label, None, None))
        key = key if isinstance(key, str) else ""
        value = value if isinstance(value, str) else ""
        return (schedule_rank(name), name, key, *_value_sort_key(value), label)

    return sorted(set(labels), key=sort_key)


def display_names(runs: pd.DataFrame) -> dict[str, str]:
    """Label -> display name, from the runs' ``display`` column."""
    return dict(zip(runs["scheduler"], runs["display"], strict=True))


def _shown(labels: Iterable[str], names: dict[str, str]) -> list[str]:
    """Display names of labels; a label the runs do not name is a schedule name."""
    return [names.get(label) or display_name(label) for label in labels]


def seed_stats(frame: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """mean, std (ddof=1) and n of ``value`` per group, as a long frame."""
    grouped = frame.groupby(by, sort=False)[value]
    stats = grouped.agg(mean="mean", std="std", n="count").reset_index()
    stats["n"] = stats["n"].astype("int64")
    return stats


def _with_cells(stats: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    cells = [
        format_cell(m, s, n, digits)
        for m, s, n in zip(stats["mean"], stats["std"], stats["n"], strict=True)
    ]
    return stats.assign(cell=cells)


def plain_runs(runs: RunSet, select_on: str = "min_test_err") -> pd.DataFrame:
    """Runs with plain labels, plus each task's best setting of every grid-searched baseline
    relabelled to its base name (column ``setting`` says which, e.g. 'beta=0.0001'): the one
    with the lowest mean ``select_on`` (the paper's protocol: minimum test error; the honest:
    ``min_val_err``)."""
    frame = runs.runs
    short = frame["setting_key"].map(lambda key: short_key(key) if isinstance(key, str) else None)
    tuned = frame["base"].isin(list(TUNED_SETTINGS)) & (
        frame["setting_key"].isna() | (short == frame["base"].map(TUNED_SETTINGS))
    )
    frame = frame[frame["setting_key"].isna() | tuned]
    frame = frame.assign(row=task_keys(frame), setting=None)
    tuned = tuned[frame.index]
    plain = frame[~tuned]
    chosen = []
    for (_, base), group in frame[tuned].groupby(["row", "base"], sort=True):
        means = group.groupby("scheduler")[select_on].mean()
        if means.notna().any():
            best = group[group["scheduler"] == means.idxmin()]
            key = best["setting_key"].iloc[0]
            setting = None if pd.isna(key) else f"{short_key(key)}={best['setting_value'].iloc[0]}"
            chosen.append(best.assign(scheduler=base, display=display_name(base), setting=setting))
    return pd.concat([plain, *chosen], ignore_index=True) if chosen else plain


def _with_setting(stats: pd.DataFrame, plain: pd.DataFrame) -> pd.DataFrame:
    """``stats`` (one row per row/scheduler) with the chosen setting of tuned baselines."""
    settings = plain.drop_duplicates(["row", "scheduler"])[["row", "scheduler", "setting"]]
    return stats.merge(settings, on=["row", "scheduler"], how="left")


def _setting_cells(stats: pd.DataFrame) -> pd.DataFrame:
    """Cells of a stats frame with a ``setting`` column: '<mean ± std (n)> [<setting>]'."""
    cells = _with_cells(stats)
    suffix = [
        f" [{s}]" if isinstance(s, str) and c else ""
        for s, c in zip(cells["setting"], cells["cell"], strict=True)
    ]
    return cells.assign(cell=cells["cell"] + suffix)


def _pivot(stats: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    table = stats.pivot(index="row", columns="scheduler", values="cell")
    table = table.reindex(index=sorted(table.index), columns=columns).fillna("")
    table.index.name = "task"
    table.columns.name = None
    return table


def table2(runs: RunSet) -> Table:
    """Minimum test error per task (rows) and schedule (columns): the paper's protocol."""
    return _error_table(runs, PAPER_VALUE, "table2")


def table2_honest(runs: RunSet) -> Table | None:
    """Table 2 under the honest protocol: the test error at each run's best validation epoch,
    over the runs with a validation split (None when no run has one)."""
    with_split = runs.runs[runs.runs["val_size"] > 0]
    if with_split.empty:
        return None
    return _error_table(runs.subset(with_split["run_id"]), HONEST_VALUE, "table2_honest")


def _error_table(runs: RunSet, value: str, name: str) -> Table:
    """Per task and schedule: ``value`` mean ± std over seeds, each cell marked where the paired
    comparison with the row's best schedule excludes no difference (statistics.versus_best)."""
    plain = plain_runs(runs, select_on=SELECTED_ON[value])
    stats = _with_setting(seed_stats(plain, ["row", "task", "scheduler"], value), plain)
    stats = _with_significance(_setting_cells(stats), plain, value)
    names = display_names(plain)
    stats = stats.assign(display=_shown(stats["scheduler"], names))
    display = _pivot(stats, order_labels(stats["scheduler"], plain))
    display.columns = _shown(display.columns, names)
    note = significance_note(stats)
    if stats["setting"].notna().any():
        selected = "test" if value == PAPER_VALUE else "validation"
        chosen_by = f"minimum {selected} error"
        tuned_note = (
            f"{', '.join(TUNED_SETTINGS)}: per task the setting with the lowest mean "
            f"{chosen_by}, in brackets (selected on the {selected} set"
            + (", as the paper selects HD's beta)" if value == PAPER_VALUE else ")")
        )
        note = "; ".join(filter(None, [note, tuned_note]))
    if "tlr" in set(stats["scheduler"]):
        note = "; ".join(filter(None, [note, "TLR: a reconstruction (p = 0.33 ep, c = 1/4)"]))
    note = "; ".join(filter(None, [note, metric_source_note(plain)]))
    if value == PAPER_VALUE:
        caption = f"{MIN_ERR}, {SEED_STATISTIC}; {seeds_phrase(stats['n'])}."
    else:
        caption = (
            f"{HONEST_PROTOCOL}: {HONEST_ERR} ({validation_phrase(plain)}), {SEED_STATISTIC}; "
            f"{seeds_phrase(stats['n'])}."
        )
    return Table(name, display, stats.drop(columns="cell"), note, caption)


def significance_note(stats: pd.DataFrame) -> str:
    """What SIGNIFICANT_MARK means, when a cell has it; else why no cell can have it (fewer
    than MIN_PAIRS_TO_FLAG seeds); '' when cells could be marked and none is."""
    least = statistics.MIN_PAIRS_TO_FLAG
    if stats["worse_than_best"].any():
        return (
            f"{SIGNIFICANT_MARK.strip()} worse than the row's best schedule (lowest mean): "
            f"paired t-test, Holm-adjusted over every pair of the row's schedules, "
            f"p < {statistics.ALPHA:.2g}, over >= {least} seeds both finished (comparisons.md)"
        )
    if stats["n"].max() < least:
        return (
            f"no cell is marked {SIGNIFICANT_MARK.strip()} (worse than the row's best): "
            f"that takes >= {least} seeds both finished"
        )
    return ""


def validation_phrase(runs: pd.DataFrame) -> str:
    """'validation split: 360 training images held out' (the sizes when tasks differ)."""
    sizes = sorted({int(size) for size in runs["val_size"] if size > 0})
    shown = " / ".join(f"{size:,}" for size in sizes) or "none"
    return f"validation split: {shown} training images held out"


def metric_source_note(runs: pd.DataFrame) -> str:
    """Which split each metric-driven schedule read (summary.json's ``metric_source``):
    'Plateau decided on the test loss (no validation split)'."""
    sources = runs.dropna(subset=["metric_source"])
    parts = []
    for _, group in sources.groupby("scheduler", sort=False):
        read = sorted(set(group["metric_source"]))
        shown = group["display"].iloc[0]
        words = {"val": "the validation loss", "test": "the test loss (no validation split)"}
        parts.append(f"{shown} decided its drops on {' / '.join(words.get(r, r) for r in read)}")
    return "; ".join(parts)


def _with_significance(
    stats: pd.DataFrame, plain: pd.DataFrame, value: str = PAPER_VALUE
) -> pd.DataFrame:
    """``stats`` with ``worse_than_best`` (see SIGNIFICANT_MARK) and the mark on the cell."""
    versus = statistics.versus_best(plain, value)
    worse = versus.loc[versus["significant"], ["task", "schedule"]]
    flagged = set(zip(worse["task"], worse["schedule"], strict=True))
    pairs = zip(stats["row"], stats["scheduler"], strict=True)
    stats = stats.assign(worse_than_best=[(row, label) in flagged for row, label in pairs])
    return _marked(stats)


def _marked(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells with SIGNIFICANT_MARK appended where ``worse_than_best`` holds."""
    marks = cells["worse_than_best"].fillna(False).astype(bool)
    return cells.assign(
        cell=[c + SIGNIFICANT_MARK if m else c for c, m in zip(cells["cell"], marks, strict=True)]
    )


def time_to_target(runs: RunSet, targets: list[ttt.Target]) -> Table | None:
    """Per task and schedule, the time to the task's validation target (honest protocol):
    runs that reached it, and the median over seeds of epochs, optimizer steps and training
    seconds (misses infinite: 'not reached'). None when no run has a target."""
    plain = plain_runs(runs, select_on=SELECTED_ON[HONEST_VALUE])
    times = ttt.times_to_target(plain, runs.metrics, targets)
    if times.empty:
        return None
    per_task = ttt.per_task(times)
    formats = {"epochs": "{:.0f}", "steps": "{:.0f}", "train_s": "{:.1f}"}
    columns = {"epochs": "epochs", "steps": "steps", "train_s": "training s"}
    display = pd.DataFrame(
        {
            "target val err (%)": [f"{t:.2f}" for t in per_task["target"]],
            "reached": [
                f"{r}/{n}" for r, n in zip(per_task["reached"], per_task["n"], strict=True)
            ],
            **{columns[m]: [_time_cell(v, formats[m]) for v in per_task[m]] for m in ttt.MEASURES},
        },
        index=pd.MultiIndex.from_frame(per_task[["row", "scheduler"]]),
    )
    order = {label: i for i, label in enumerate(order_labels(per_task["scheduler"], plain))}
    display = display.sort_index(key=lambda ix: ix.map(order) if ix.name == "scheduler" else ix)
    names = display_names(plain)
    display = display.rename(index=lambda label: _shown([label], names)[0], level="scheduler")
    display.index.names = ["task", "schedule"]
    tasks = per_task["row"].nunique()
    profile = (
        "its performance profile across tasks: fig_time_to_target_profile"
        if tasks >= statistics.MIN_PROFILE_TASKS
        else f"no performance profile: it needs >= {statistics.MIN_PROFILE_TASKS} tasks with a "
        f"target, here {tasks}"
    )
    note = (
        "target: per task the median over seeds of the minimum validation error of the "
        f"reference schedule's runs ({ttt.TARGETS_FILE.name}, written by python -m "
        f"scripts.targets); {profile}"
    )
    caption = (
        f"{HONEST_PROTOCOL}: time to the task's validation-error target (AlgoPerf's measure), "
        "the median over seeds of the epochs, optimizer steps and training seconds (evaluation "
        "excluded) until the validation error first reaches the target; a run that never "
        "reaches it is a miss, counted as infinite, so the median is 'not reached' when half "
        "the seeds or more missed; reached: the runs that reached it / the runs."
    )
    return Table("time_to_target", display, per_task, note, caption)


def _time_cell(value: float, fmt: str) -> str:
    if math.isinf(value):
        return "not reached"
    return "" if math.isnan(value) else fmt.format(value)


def comparisons(runs: RunSet) -> Table:
    """Every pair of schedules of each task once, paired by seed, as schedule - baseline with the
    baseline the schedule listed earlier in Table 2 (so AutoDrop, listed last, is never the
    baseline): n_pairs, mean_diff, t interval, p values and p_improve
    (scripts.analysis.statistics), schedules by display name."""
    plain = plain_runs(runs)
    values = statistics.comparisons(plain, order=order_labels(plain["scheduler"], plain))
    names = display_names(plain)
    display = values.assign(
        schedule=_shown(values["schedule"], names),
        baseline=_shown(values["baseline"], names),
        significant=values["significant"].map({True: "yes", False: ""}),
    )
    display = display.round(4).set_index("task")
    least = statistics.MIN_PAIRS_TO_FLAG
    caption = (
        f"{MIN_ERR}: paired differences schedule - baseline in points over the seeds both "
        "finished (negative: the schedule is better), each pair of schedules once, the "
        "baseline being the one listed earlier in Table 2; n_pairs = the seeds both finished."
    )
    note = (
        f"ci_low, ci_high: {statistics.CONFIDENCE:.0%} interval of the mean paired difference "
        f"and p_value the two-sided test of this pair alone, both {statistics.METHOD} (half "
        "the values' resolution on the sum; NaN with one pair, and when every difference is "
        "equal, where p_value is the exact sign-flip p = 2 * 2^-n); "
        f"p_holm: Holm-adjusted over the task's pairs with >= {least} seeds; significant: "
        f"p_holm < {statistics.ALPHA:.2g} over >= {least} seeds (Table 2's "
        f"{SIGNIFICANT_MARK.strip()}); p_improve = P(schedule(i) < baseline(j)) over seed "
        "pairs (i, j), ties count half"
    )
    return Table("comparisons", display, values, note, caption)


def iqm_table(runs: RunSet) -> Table | None:
    """Interquartile mean of the minimum test error over seeds per task and schedule, for cells
    with >= MIN_SEEDS_FOR_IQM seeds (with fewer it is the mean of Table 2); None when no cell
    has that many."""
    plain = plain_runs(runs)
    values = statistics.interquartile_means(plain)
    least = statistics.MIN_SEEDS_FOR_IQM
    if values.empty or values["n"].max() < least:
        return None
    cells = values.assign(
        cell=[
            f"{iqm:.2f} ({n})" if n >= least else ""
            for iqm, n in zip(values["iqm"], values["n"], strict=True)
        ]
    )
    display = _pivot(cells, order_labels(values["scheduler"], plain))
    display.columns = _shown(display.columns, display_names(plain))
    caption = (
        f"{MIN_ERR}: interquartile mean over seeds (the mean of the middle half, "
        f"scipy.stats.trim_mean with {statistics.IQM_TRIM}); {seeds_phrase(values['n'])}."
    )
    note = ""
    if (values["n"] < least).any():
        note = (
            f"cells with fewer than {least} seeds are left empty: the trim drops "
            f"floor(n / {round(1 / statistics.IQM_TRIM)}) = 0 seeds at each end, so their IQM "
            "is the mean of Table 2"
        )
    return Table("iqm", display, values, note, caption)


def lr_sensitivity(runs: RunSet) -> Table | None:
    """Minimum test error per task and schedule (rows) at each initial lr (columns) of the
    lr-sensitivity study (labels with LR_SWEEP_KEY); the lr is the run's recorded
    optimizer.lr. None when there is no such run."""
    frame = runs.runs[runs.runs["setting_key"] == LR_SWEEP_KEY]
    if frame.empty:
        return None
    unknown = frame.loc[frame["optimizer_lr"].isna(), "run_id"]
    if not unknown.empty:
        raise ValueError(
            f"runs {sorted(unknown)} record no optimizer.lr (.hydra/config.yaml or the W&B "
            "config): the lr-sensitivity table cannot place them"
        )
    frame = frame.assign(row=task_keys(frame), scheduler=frame["base"], lr=frame["optimizer_lr"])
    stats = _with_cells(seed_stats(frame, ["row", "scheduler", "lr"], "min_test_err"))
    display = stats.pivot(index=["row", "scheduler"], columns="lr", values="cell")
    display = display.reindex(columns=sorted(display.columns)).fillna("")
    display.columns = [f"lr={lr:g}" for lr in display.columns]
    order = {label: i for i, label in enumerate(order_labels(stats["scheduler"]))}
    display = display.sort_index(key=lambda ix: ix.map(order) if ix.name == "scheduler" else ix)
    display = display.rename(index=lambda name: display_name(name), level="scheduler")
    display.index.names = ["task", "schedule"]
    caption = (
        f"{PAPER_PROTOCOL}: minimum test error (%) at each initial learning rate (optimizer.lr), "
        f"{SEED_STATISTIC}; {seeds_phrase(stats['n'])}."
    )
    return Table("lr_sensitivity", display, stats.drop(columns="cell"), caption=caption)


def load_paper_table2(path: str | Path = PAPER_TABLE2) -> pd.DataFrame:
    """The paper's Table 2 as data: task, paper_task, schedule, mean, std, seeds."""
    paper = pd.read_csv(path)
    expected = {"task", "paper_task", "schedule", "mean", "std", "seeds"}
    if set(paper.columns) != expected:
        raise ValueError(f"{path}: columns {list(paper.columns)}, expected {sorted(expected)}")
    return paper


def table2_vs_paper(ours: Table, paper: pd.DataFrame) -> Table | None:
    """Table 2 with the paper's numbers beside ours where the task matches; None when no task
    of ours is one of the paper's."""
    if not set(ours.values["task"]) & set(paper["task"]):
        return None
    stats = ours.values
    rows = sorted(set(stats["row"]))
    row_task = dict(zip(stats["row"], stats["task"], strict=False))
    schedules = order_labels(set(stats["scheduler"]) | set(paper["schedule"]))
    ours_cells = _marked(_setting_cells(stats)).set_index(["row", "scheduler"])["cell"]
    names = display_names(stats)
    paper_cells = {
        (task, schedule): _paper_cell(mean, std, seeds)
        for task, schedule, mean, std, seeds in paper[
            ["task", "schedule", "mean", "std", "seeds"]
        ].itertuples(index=False)
    }
    columns: dict[str, list[str]] = {}
    for schedule in schedules:
        if schedule in set(stats["scheduler"]):
            columns[f"{names.get(schedule) or display_name(schedule)} (ours)"] = [
                ours_cells.get((row, schedule), "") for row in rows
            ]
        paper_column = [paper_cells.get((row_task[row], schedule), "") for row in rows]
        if any(paper_column):
            columns[f"{paper_display_name(schedule)} (paper)"] = paper_column
    display = pd.DataFrame(columns, index=pd.Index(rows, name="task"))
    matched = paper[paper["task"].isin(set(stats["task"]))]
    values = stats.merge(
        matched.rename(
            columns={
                "schedule": "scheduler",
                "mean": "paper_mean",
                "std": "paper_std",
                "seeds": "paper_n",
            }
        ),
        on=["task", "scheduler"],
        how="outer",
    )
    note = "; ".join(
        filter(
            None,
            [
                "paper: UAI 2024 Table 2 (mean ± std over 4 seeds; ImageNet single numbers)",
                ours.note,
            ],
        )
    )
    caption = (
        f"{MIN_ERR}: ours ({SEED_STATISTIC}; {seeds_phrase(stats['n'])}) beside the "
        "paper's Table 2 (mean ± std over 4 seeds; ImageNet: one number)."
    )
    return Table("table2_vs_paper", display, values, note, caption)


def _paper_cell(mean: float, std: float, seeds: float) -> str:
    if math.isnan(std):
        return f"{mean:.2f}"
    return format_cell(mean, std, int(seeds))


def table16(runs: RunSet) -> Table:
    """Minimum test error reached within 25/50/75/100 % of each run's planned epochs."""
    plain = plain_runs(runs)
    records = []
    for run in plain.itertuples(index=False):
        curve = runs.metrics[runs.metrics["run_id"] == run.run_id]
        planned = run.epochs_planned if not pd.isna(run.epochs_planned) else run.epochs_done
        for percent in BUDGET_PERCENTS:
            last_epoch = -(-percent * int(planned) // 100)  # ceil without float error
            reached = curve.loc[curve["epoch"] <= last_epoch, "test/err"]
            records.append(
                {
                    "row": run.row,
                    "scheduler": run.scheduler,
                    "epochs_planned": int(planned),
                    "percent": percent,
                    "min_test_err": reached.min() if reached.notna().any() else float("nan"),
                }
            )
    per_run = pd.DataFrame.from_records(
        records, columns=["row", "scheduler", "epochs_planned", "percent", "min_test_err"]
    )
    stats = _with_cells(seed_stats(per_run, ["row", "scheduler", "percent"], "min_test_err"))
    epochs = per_run.groupby(["row", "scheduler"])["epochs_planned"].agg(
        lambda planned: "/".join(str(e) for e in sorted(set(planned)))
    )
    display = stats.pivot(index=["row", "scheduler"], columns="percent", values="cell")
    display.columns = [f"{percent} %" for percent in display.columns]
    display.insert(0, "epochs", epochs.reindex(display.index))
    order = {label: i for i, label in enumerate(order_labels(stats["scheduler"], plain))}
    display = display.sort_index(key=lambda ix: ix.map(order) if ix.name == "scheduler" else ix)
    names = display_names(plain)
    display = display.rename(index=lambda label: _shown([label], names)[0], level="scheduler")
    display.index.names = ["task", "schedule"]
    caption = (
        f"{PAPER_PROTOCOL}: minimum test error (%) reached within 25, 50, 75 and 100 % of each "
        f"run's planned epochs, {SEED_STATISTIC}; {seeds_phrase(stats['n'])}."
    )
    return Table("table16", display.fillna(""), stats.drop(columns="cell"), caption=caption)


def table3(runs: RunSet, baseline: str = "step") -> Table:
    """Mean time per iteration (ms) and the AutoDrop variants' overhead relative to ``baseline``."""
    plain = plain_runs(runs)
    timed = plain.assign(ms_per_iter=plain["time_per_iter_s"] * 1000.0)
    stats = seed_stats(timed, ["row", "scheduler"], "ms_per_iter")
    means = stats.set_index(["row", "scheduler"])["mean"]
    overhead = []
    for row, scheduler in zip(stats["row"], stats["scheduler"], strict=True):
        reference = means.get((row, baseline), float("nan"))
        is_variant = scheduler in METHODS and scheduler != baseline
        overhead.append(
            100.0 * (means[(row, scheduler)] / reference - 1.0) if is_variant else float("nan")
        )
    stats["overhead_pct"] = overhead
    display = _pivot(_with_cells(stats), order_labels(stats["scheduler"], plain))
    display.columns = _shown(display.columns, display_names(plain))
    overhead_columns = []
    for variant in METHODS:
        chosen = stats[(stats["scheduler"] == variant) & stats["overhead_pct"].notna()]
        if not chosen.empty:
            pct = chosen.set_index("row")["overhead_pct"].reindex(display.index)
            column = f"{display_name(variant)} vs {display_name(baseline)}"
            display[column] = ["" if math.isnan(value) else f"{value:+.1f} %" for value in pct]
            overhead_columns.append(column)
    note = ""
    if overhead_columns:  # no footer about an overhead the table does not show
        note = (
            f"{', '.join(overhead_columns)}: mean time per step / mean time per step of "
            f"{display_name(baseline)} - 1"
        )
    caption = (
        f"Time per optimizer step (ms, training only), {SEED_STATISTIC}; "
        f"{seeds_phrase(stats['n'])}."
    )
    return Table("table3", display, stats, note, caption)


def ablation_tables(runs: RunSet) -> list[Table]:
    """One table per varied setting (e.g. scheduler.window of 'autodrop-window=32'): rows task,
    columns value."""
    frame = runs.runs
    varied = frame[frame["setting_key"].notna() & (frame["setting_key"] != LR_SWEEP_KEY)]
    tables = []
    for (base, key), group in varied.groupby(["base", "setting_key"], sort=True):
        plain = frame[frame["scheduler"] == base]
        tables.append(_ablation_table(str(base), str(key), group, plain))
    return tables


def _ablation_table(base: str, key: str, labelled: pd.DataFrame, plain: pd.DataFrame) -> Table:
    labelled = labelled.assign(row=task_keys(labelled))
    cells: dict[tuple[str, str], pd.Series] = {}
    default_columns: dict[str, str] = {}
    for row, group in labelled.groupby("row", sort=True):
        for value, runs_at_value in group.groupby("setting_value"):
            cells[(row, str(value))] = runs_at_value["min_test_err"]
        defaults = _default_runs(group, plain)
        default_value = _default_value(base, key, defaults, group["dataset"].iloc[0])
        if default_value is None:
            continue
        column = _matching_column(default_value, group["setting_value"])
        if (row, column) not in cells:
            if defaults.empty:
                continue  # no run has the default setting
            cells[(row, column)] = defaults["min_test_err"]
        default_columns[row] = column
    columns = sorted({column for _, column in cells}, key=_value_sort_key)
    records = []
    for (row, column), errors in cells.items():
        errors = errors.dropna()
        std = float(errors.std()) if len(errors) > 1 else float("nan")
        mean = float(errors.mean()) if len(errors) else float("nan")
        records.append(
            {
                "row": row,
                "value": column,
                "is_default": default_columns.get(row) == column,
                "mean": mean,
                "std": std,
                "n": len(errors),
            }
        )
    values = pd.DataFrame.from_records(records)
    values["cell"] = [
        format_cell(m, s, n) + (DEFAULT_MARK if d else "")
        for m, s, n, d in zip(
            values["mean"], values["std"], values["n"], values["is_default"], strict=True
        )
    ]
    display = values.pivot(index="row", columns="value", values="cell")
    display = display.reindex(index=sorted(display.index), columns=columns).fillna("")
    display.index.name = "task"
    display.columns = [f"{short_key(key)}={column}" for column in columns]
    notes = []
    if default_columns:
        notes.append(
            f"{DEFAULT_MARK.strip()} default setting (plain `{base}` runs of the task when no "
            f"labelled run has that value)"
        )
    if (base, key) in PAPER_DEFAULTS:
        paper_default = PAPER_DEFAULTS[(base, key)]
        imagenet = f" ({IMAGENET_WINDOW} on ImageNet)" if key == "scheduler.window" else ""
        notes.append(f"paper default {short_key(key)}={paper_default}{imagenet}")
    values = values.drop(columns="cell")
    caption = (
        f"{MIN_ERR} of {display_name(base)} by {short_key(key)}, {SEED_STATISTIC}; "
        f"{seeds_phrase(values['n'])}."
    )
    return Table(f"ablation_{base}_{short_key(key)}", display, values, "; ".join(notes), caption)


def _default_runs(labelled: pd.DataFrame, plain: pd.DataFrame) -> pd.DataFrame:
    """Plain runs serving as the default column of one ablation row."""
    task = labelled["task"].iloc[0]
    candidates = plain[plain["task"] == task]
    same_experiment = candidates[candidates["experiment"].isin(set(labelled["experiment"]))]
    if not same_experiment.empty:
        return same_experiment
    if candidates["experiment"].nunique() == 1:
        return candidates
    return candidates.iloc[:0]  # several other experiments: which one is the default is unclear


def _default_value(base: str, key: str, defaults: pd.DataFrame, dataset: str) -> object:
    """The default setting: as the default runs' options record it (``scheduler.<option>``),
    else the paper's."""
    option = key.removeprefix("scheduler.")
    recorded = {json.dumps(json.loads(options).get(option)) for options in defaults["options"]}
    if not key.startswith("scheduler."):
        recorded = {"null"}
    if len(recorded) == 1 and recorded != {"null"}:
        return json.loads(recorded.pop())
    if (base, key) == ("autodrop", "scheduler.window") and dataset == "imagenet":
        return IMAGENET_WINDOW
    return PAPER_DEFAULTS.get((base, key))


def _matching_column(value: object, labelled_values: pd.Series) -> str:
    """The labelled column equal to ``value`` (numerically if both are numbers), else a new one."""
    for column in labelled_values.astype(str):
        if _value_sort_key(column) == _value_sort_key(str(value)):
            return column
    return f"{value:g}" if isinstance(value, float) else str(value)


def _value_sort_key(value: str) -> tuple:
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def failed_runs(runs: RunSet) -> Table:
    """Runs that are failed, diverged or still running: listed, never averaged."""
    columns = ["run_id", "status", "epochs_done", "epochs_planned", "message", "source"]
    listed = runs.unfinished()[columns].set_index("run_id")
    caption = f"Runs left out of every table (failed, diverged or still running): {len(listed)}."
    return Table("failed_runs", listed, listed.reset_index(), caption=caption)
