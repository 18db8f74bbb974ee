"""The studies beyond the paper as files: the horizon and tuning studies' tables (CSV, Markdown,
LaTeX), one figure per task and study, and a README.md that states, from the numbers, what they
show and how uncertain they are (``python -m scripts.studies`` writes them; ``make study-quick``
for the CPU-sized studies on digits)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from autodrop.registry import schedule_needs_budget
from scripts.analysis import horizons, statistics, tables, tuning
from scripts.analysis.display import display_name
from scripts.analysis.figures.common import save_figure
from scripts.analysis.figures.studies import horizon_figure, tuning_figure
from scripts.analysis.report import warn_unfinished, write_table
from scripts.analysis.runs import RunSet
from scripts.analysis.tables import Table

FORMATS = ("csv", "md", "tex")


def _stem(task: str) -> str:
    return task.replace("/", "-")


def study_tables(runs: RunSet) -> list[Table]:
    """Both studies' tables of the finished runs."""
    listed = [tables.failed_runs(runs)] if not runs.unfinished().empty else []
    return horizons.horizon_tables(runs.finished()) + tuning.tuning_tables(runs) + listed


def study_figures(runs: RunSet, out_dir: Path) -> list[Path]:
    """One horizon figure and one tuning figure per task that has such runs."""
    finished = runs.finished()
    paths: list[Path] = []
    reads = horizons.horizon_reads(finished)
    for task, group in reads.groupby("task", sort=True):
        title = f"{task}: test error within each budget (horizon study)"
        paths += save_figure(horizon_figure(group, title), out_dir, f"fig_horizons_{_stem(task)}")
    trials, defaults = tuning.study_frames(runs)
    curve = tuning.curves(trials)
    for task, group in curve.groupby("task", sort=True):
        title = f"{task}: test error of the validation-best of K trials (tuning study)"
        figure = tuning_figure(group, defaults[defaults["task"] == task], title)
        paths += save_figure(figure, out_dir, f"fig_tuning_{_stem(task)}")
    return paths


def write_studies(runs: RunSet, out_dir: str | Path) -> list[Path]:
    """Tables into ``<out>/tables``, figures into ``<out>/figures``, ``<out>/README.md``."""
    out = Path(out_dir)
    warn_unfinished(runs)
    built = study_tables(runs)
    written: list[Path] = []
    for table in built:
        written += write_table(table, out / "tables", FORMATS)
    written += study_figures(runs, out / "figures")
    readme = out / "README.md"
    readme.parent.mkdir(parents=True, exist_ok=True)
    readme.write_text(summary_text(runs, built))
    return [*written, readme]


# ----------------------------------------------------------------------------- README
def summary_text(runs: RunSet, built: list[Table]) -> str:
    """The README: what each study's numbers show and how uncertain they are, from the tables."""
    by_name = {table.name: table for table in built}
    finished = runs.finished()
    lines = [
        "# Beyond the paper: unknown budgets and the cost of tuning",
        "",
        "Written from the runs by `python -m scripts.studies` (scripts/analysis/study_report.py; "
        "`make study-quick-update` for these CPU-sized studies on digits); every number below "
        "is in the tables beside it. Both studies follow the honest protocol: choices on the "
        "validation split, the test error reported at the chosen epoch.",
    ]
    if "horizons" in by_name:
        lines += ["", *_horizon_summary(finished, by_name)]
    if "tuning" in by_name:
        lines += ["", *_tuning_summary(by_name["tuning"])]
    return "\n".join(lines) + "\n"


def _horizon_summary(runs: RunSet, by_name: dict[str, Table]) -> list[str]:
    reads = horizons.horizon_reads(runs)
    versus = horizons.comparisons(reads)
    stats = by_name["horizons"].values
    standard_epochs = horizons.study_runs(runs).groupby("task")["standard_epochs"].first()
    lines = ["## Horizon study (`horizons*.md`, `fig_horizons_*`)", ""]
    for task, group in stats.groupby("task", sort=True):
        seeds = int(group["n"].max())
        standard = int(standard_epochs[task])
        lines.append(
            f"{task}, T = {standard} epochs, {seeds} seeds. Lowest mean test error at each "
            "budget, the best schedule that needs the budget (the reference) and the best that "
            "does not, with the paired difference (best anytime - reference):"
        )
        for budget, at in group.groupby("budget", sort=True):
            lines.append("- " + _budget_line(task, float(budget), at, versus))
        lines.append("")
    marked = versus[versus["significant"]]
    worse = int((marked["mean_diff"] > 0).sum())
    lines.append(
        f"Of {len(versus)} comparisons with the budget's reference, {len(marked)} are "
        f"significant (paired t, Holm over each budget's pairs, p < {statistics.ALPHA:.2g}): "
        f"{worse} worse, {len(marked) - worse} better. "
        + _half_width_phrase(versus)
        + " Time to the validation target within each budget: `horizons_time_to_target.md`; "
        "the runs the single long runs saved: `horizons_runs.md`."
    )
    return lines


def _budget_line(task: str, budget: float, at: pd.DataFrame, versus: pd.DataFrame) -> str:
    epochs = int(at["horizon_epochs"].iloc[0])
    ranked = at.sort_values(["mean", "schedule"])
    best = ranked.iloc[0]
    needs = ranked["schedule"].map(schedule_needs_budget).astype(bool)
    aware, anytime = ranked[needs], ranked[~needs]
    parts = [f"{budget:g}T ({epochs} ep): best {_named(best)}"]
    if not aware.empty:
        parts.append(f"reference {_named(aware.iloc[0])}")
    if not anytime.empty:
        free = anytime.iloc[0]
        parts.append(f"best anytime {_named(free)}")
        row = horizons.budget_row(task, budget, epochs)
        pair = versus[(versus["row"] == row) & (versus["schedule"] == free["schedule"])]
        if not pair.empty:
            parts.append(_difference(pair.iloc[0]))
    return "; ".join(parts)


def _named(stat: pd.Series) -> str:
    return f"{display_name(stat['schedule'])} {stat['mean']:.2f} %"


def _difference(pair: pd.Series) -> str:
    interval = (
        f", 95% CI [{pair['ci_low']:+.2f}, {pair['ci_high']:+.2f}]"
        if np.isfinite(pair["ci_low"])
        else ""
    )
    verdict = "significant" if pair["significant"] else "not significant"
    return f"difference {pair['mean_diff']:+.2f} points{interval}, {verdict}"


def _half_width_phrase(versus: pd.DataFrame) -> str:
    widths = ((versus["ci_high"] - versus["ci_low"]) / 2).dropna()
    if widths.empty:
        return ""
    return (
        f"How uncertain: the paired 95% intervals are ±{widths.median():.2f} points wide at the "
        f"median (from ±{widths.min():.2f} to ±{widths.max():.2f}), so differences smaller than "
        "that are not resolved by these seeds; a test error on the task's test split moves in "
        "steps of one image."
    )


def _tuning_summary(table: Table) -> list[str]:
    curve = table.values
    lines = ["## Tuning study (`tuning*.md`, `fig_tuning_*`)", ""]
    for task, group in curve.groupby("task", sort=True):
        n = int(group["n"].max())
        first = group[group["k"] == 1].sort_values(["test_err", "schedule"])
        last = group[group["k"] == group["n"]].sort_values(["test_err", "schedule"])
        widths = (group["high"] - group["low"]) / 2
        rising = [
            display_name(schedule)
            for schedule, line in group.groupby("schedule")
            if (np.diff(line.sort_values("k")["test_err"]) > 1e-9).any()
        ]
        lines.append(
            f"{task}, pools of {n} Halton trials per schedule, one seed each. With one random "
            f"trial (K = 1) the best schedule is {_curve_point(first.iloc[0])} and the worst "
            f"{_curve_point(first.iloc[-1])}; with the validation-best of all {n} (K = N) the "
            f"best is {_curve_point(last.iloc[0])} and the worst {_curve_point(last.iloc[-1])}. "
            f"The defaults' single runs are in `tuning.md`. How uncertain: the bootstrap bands "
            f"over the pool are ±{widths.median():.2f} points wide at the median (one seed per "
            "trial: seed noise comes on top)"
            + (
                f"; the expected test error rises with K somewhere for {', '.join(rising)}, "
                "where the validation split picks trials the test split rates worse."
                if rising
                else "."
            )
        )
        lines.append("")
    return lines[:-1]


def _curve_point(point: pd.Series) -> str:
    return f"{display_name(point['schedule'])} ({point['test_err']:.2f} %)"
