"""Figures over seeds and tasks: the performance profile (fraction of tasks on which each schedule's
interquartile mean is within x points of the best) and the lr-sensitivity study (minimum test error
vs initial lr, one line per schedule). :func:`make_summary_figures` draws what the runs allow; the
figures command (scripts.figures.curves) calls it, and so does this module's own command:

    python -m scripts.figures.summary --runs results/runs --experiment ablation/lr_sensitivity \
        --out results/quick/lr_sensitivity/figures
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from scripts import seed_statistics, tables
from scripts.display import display_name
from scripts.figures.common import save_figure, schedule_color, shared_legend
from scripts.runs import NoRunsError, RunSet, load_runs

PROFILE_POINTS = 200


def profile_thresholds(scores: pd.DataFrame, score: str = "iqm") -> np.ndarray:
    """x values from 0 to a little past the largest gap to a task's best score."""
    gaps = scores[score] - scores.groupby("row")[score].transform("min")
    largest = float(gaps.max()) if gaps.notna().any() else 0.0
    return np.linspace(0.0, 1.05 * largest if largest > 0 else 1.0, PROFILE_POINTS)


def performance_profile_figure(scores: pd.DataFrame, title: str) -> Figure:
    """One step line per schedule: fraction of task rows within x points of the row's best."""
    profile = seed_statistics.performance_profile(scores, profile_thresholds(scores))
    fig, ax = plt.subplots(figsize=(6.5, 4.6), layout="constrained")
    for label in tables.order_labels(profile["scheduler"]):
        line = profile[profile["scheduler"] == label]
        ax.step(
            line["x"],
            line["fraction"],
            where="post",
            color=schedule_color(label),
            label=display_name(label),
            linewidth=1.6,
        )
    tasks = scores["row"].nunique()
    ax.set_xlabel("x: points of minimum test error above the task's best (IQM over seeds)")
    ax.set_ylabel(f"fraction of tasks within x (of {tasks})")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    shared_legend(fig, title="schedule")
    fig.suptitle(title)
    return fig


def lr_sensitivity_figure(values: pd.DataFrame, title: str) -> Figure:
    """Minimum test error (mean over seeds, ± std bars) vs initial lr on a log axis, one line
    per schedule; ``values`` is one task row of :func:`scripts.tables.lr_sensitivity`'s."""
    fig, ax = plt.subplots(figsize=(6.5, 4.6), layout="constrained")
    for label in tables.order_labels(values["scheduler"]):
        line = values[values["scheduler"] == label].sort_values("lr")
        ax.errorbar(
            line["lr"],
            line["mean"],
            yerr=line["std"].fillna(0.0),
            color=schedule_color(label),
            label=display_name(label),
            marker="o",
            capsize=3,
            linewidth=1.4,
        )
    lrs = sorted(set(values["lr"]))
    ax.set_xscale("log")
    ax.set_xticks(lrs, [f"{lr:g}" for lr in lrs])
    ax.minorticks_off()
    ax.set_xlabel("initial learning rate (optimizer.lr)")
    ax.set_ylabel("minimum test error (%)")
    ax.grid(alpha=0.3)
    shared_legend(fig, title="schedule; bars: ± std over seeds")
    fig.suptitle(title)
    return fig


def _stem(row: str) -> str:
    """A file-name-safe form of a task row key ('digits/resnet8' -> 'digits-resnet8')."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", row.replace("/", "-")).strip("-")


def make_summary_figures(runs: RunSet, out_dir: str | Path) -> list[Path]:
    """Save the performance profile (when plain-labelled runs exist) and one lr-sensitivity
    figure per task of the lr study; return the files."""
    paths: list[Path] = []
    if runs.runs["setting_key"].isna().any():
        scores = seed_statistics.interquartile_means(tables.plain_runs(runs))
        if not scores.empty:
            tasks = scores["row"].nunique()
            fig = performance_profile_figure(scores, f"Performance profile over {tasks} task(s)")
            paths += save_figure(fig, out_dir, "fig_performance_profile")
    study = tables.lr_sensitivity(runs)
    if study is not None:
        for row, values in study.values.groupby("row", sort=True):
            fig = lr_sensitivity_figure(values, f"{row}: learning-rate sensitivity")
            paths += save_figure(fig, out_dir, f"fig_lr_sensitivity_{_stem(str(row))}")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Performance profile and lr-sensitivity figures.")
    parser.add_argument("--runs", type=Path, default=Path("results/runs"), help="runs directory")
    parser.add_argument("--out", type=Path, required=True, help="e.g. results/quick/figures")
    parser.add_argument("--experiment", default=None, help="only experiments under this prefix")
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.runs, experiment=args.experiment).finished()
        paths = make_summary_figures(runs, args.out) if not runs.runs.empty else []
    except (NoRunsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(paths)} files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
