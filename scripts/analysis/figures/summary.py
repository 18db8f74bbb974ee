"""Figures over seeds and tasks: the performance profile (fraction of tasks on which each
schedule's interquartile mean is within x points of the best), the performance profile over time
to target (AlgoPerf's) and the lr-sensitivity study (minimum test error vs initial lr, one line
per schedule). Profiles are drawn from ``statistics.MIN_PROFILE_TASKS`` tasks on.
:func:`make_summary_figures` draws what the runs allow;
:func:`scripts.analysis.figures.curves.make_all_figures` calls it, and so does
``python -m scripts.figures summary``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TextIO

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from scripts.analysis import statistics, tables
from scripts.analysis import time_to_target as ttt
from scripts.analysis.display import display_name
from scripts.analysis.figures.common import save_figure, schedule_color, shared_legend
from scripts.analysis.runs import RunSet

PROFILE_POINTS = 200


def profile_thresholds(scores: pd.DataFrame, score: str = "iqm") -> np.ndarray:
    """x values from 0 to a little past the largest gap to a task's best score."""
    gaps = scores[score] - scores.groupby("row")[score].transform("min")
    largest = float(gaps.max()) if gaps.notna().any() else 0.0
    return np.linspace(0.0, 1.05 * largest if largest > 0 else 1.0, PROFILE_POINTS)


def _legend_names(frame: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """Label -> (schedule name, display name): from the frame's ``scheduler_name`` and
    ``display`` columns where it has them, else the label is a schedule name."""
    labels = frame["scheduler"]
    names = frame["scheduler_name"] if "scheduler_name" in frame else labels
    shown = frame["display"] if "display" in frame else labels.map(display_name)
    return {label: (name, text) for label, name, text in zip(labels, names, shown, strict=True)}


def performance_profile_figure(
    scores: pd.DataFrame, title: str, runs: pd.DataFrame | None = None
) -> Figure:
    """One step line per schedule: fraction of task rows within x points of the row's best.
    ``runs`` (the runs the scores come from) names and colours the labels."""
    profile = statistics.performance_profile(scores, profile_thresholds(scores))
    legend = _legend_names(runs if runs is not None else profile)
    fig, ax = plt.subplots(figsize=(6.5, 4.6), layout="constrained")
    for label in tables.order_labels(profile["scheduler"], runs):
        name, shown = legend.get(label, (label, display_name(label)))
        line = profile[profile["scheduler"] == label]
        ax.step(
            line["x"],
            line["fraction"],
            where="post",
            color=schedule_color(name),
            label=shown,
            linewidth=1.6,
        )
    tasks = scores["row"].nunique()
    ax.set_xlabel(
        "x: points of minimum test error above the task's best "
        f"(IQM over seeds; the mean below {statistics.MIN_SEEDS_FOR_IQM})"
    )
    ax.set_ylabel(f"fraction of tasks within x (of {tasks})")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    shared_legend(fig, title="schedule")
    fig.suptitle(title)
    return fig


def time_to_target_profile_figure(
    task_times: pd.DataFrame, title: str, runs: pd.DataFrame | None = None
) -> Figure:
    """AlgoPerf's performance profile over time to target (``ttt.per_task`` rows): per schedule,
    the fraction of tasks on which it reached the target within r times the fastest schedule's
    time, for r from 1 to ``ttt.MAX_RATIO``; one panel in optimizer steps, one in training
    seconds. ``runs`` (the runs the times come from) names and colours the labels."""
    ratios = np.linspace(1.0, ttt.MAX_RATIO, PROFILE_POINTS)
    legend = _legend_names(runs if runs is not None else task_times)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True, layout="constrained")
    tasks = task_times["row"].nunique()
    for ax, measure in zip(axes, ("steps", "train_s"), strict=True):
        profile = ttt.profile(task_times, measure, ratios)
        for label in tables.order_labels(profile["scheduler"], runs):
            name, shown = legend.get(label, (label, display_name(label)))
            line = profile[profile["scheduler"] == label]
            ax.step(
                line["ratio"], line["fraction"], where="post", color=schedule_color(name),
                label=shown, linewidth=1.6,
            )  # fmt: skip
        ax.set_xlabel(f"r: {ttt.MEASURES[measure]} to the target / the task's fastest")
        ax.set_xlim(1.0, ttt.MAX_RATIO)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"fraction of tasks within r (of {tasks}; a miss is never within)")
    shared_legend(fig, title="schedule (median over seeds per task)")
    fig.suptitle(title)
    return fig


def lr_sensitivity_figure(values: pd.DataFrame, title: str) -> Figure:
    """Minimum test error (mean over seeds, ± std bars) vs initial lr on a log axis, one line
    per schedule (labelled by schedule name); ``values`` is one task row of
    :func:`scripts.analysis.tables.lr_sensitivity`'s."""
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


def make_summary_figures(
    runs: RunSet,
    out_dir: str | Path,
    *,
    targets: list[ttt.Target] | None = None,
    stream: TextIO | None = None,
) -> list[Path]:
    """Save the performance profile and the performance profile over time to target (each
    from ``statistics.MIN_PROFILE_TASKS`` tasks on; with fewer, one line on ``stream``, stderr by
    default, says why there is none) and one lr-sensitivity figure per task of the lr study;
    return the files. ``targets``: default the committed ``ttt.TARGETS_FILE``."""
    targets = ttt.load_targets() if targets is None else targets
    paths: list[Path] = []
    if runs.runs["setting_key"].isna().any():
        honest = tables.plain_runs(runs, select_on="min_val_err")
        task_times = ttt.times_to_target(honest, runs.metrics, targets)
        if not task_times.empty and task_times["row"].nunique() >= statistics.MIN_PROFILE_TASKS:
            per_task = ttt.per_task(task_times)
            title = f"Time to the validation target over {per_task['row'].nunique()} tasks"
            fig = time_to_target_profile_figure(per_task, title, honest)
            paths += save_figure(fig, out_dir, "fig_time_to_target_profile")
        plain = tables.plain_runs(runs)
        scores = statistics.interquartile_means(plain)
        tasks = scores["row"].nunique()
        if tasks >= statistics.MIN_PROFILE_TASKS:
            title = f"Performance profile over {tasks} tasks"
            fig = performance_profile_figure(scores, title, plain)
            paths += save_figure(fig, out_dir, "fig_performance_profile")
        elif tasks:
            print(
                f"note: no performance profile: the runs cover {tasks} task(s), it needs "
                f">= {statistics.MIN_PROFILE_TASKS} (with fewer, Table 2 says the same)",
                file=stream or sys.stderr,
            )
    study = tables.lr_sensitivity(runs)
    if study is not None:
        for row, values in study.values.groupby("row", sort=True):
            fig = lr_sensitivity_figure(values, f"{row}: learning-rate sensitivity")
            paths += save_figure(fig, out_dir, f"fig_lr_sensitivity_{_stem(str(row))}")
    return paths
