"""Figures of the studies beyond the paper: the horizon study's error against budget and the
tuning study's error against the number of trials, one figure per task, schedules in their
registry colours."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from autodrop.registry import schedule_needs_budget
from scripts.analysis.display import display_name
from scripts.analysis.figures.common import (
    integer_ticks,
    schedule_color,
    shared_legend,
    style_entry,
)
from scripts.analysis.tables import order_labels

BAND_ALPHA = 0.1
DODGE = 0.025  # log2 units between neighbouring schedules at one budget
_ANYTIME = {"linestyle": "-", "marker": "o"}
_PER_BUDGET = {"linestyle": "--", "marker": "s", "markerfacecolor": "white"}


def horizon_figure(reads: pd.DataFrame, title: str) -> Figure:
    """Test error at the best validation epoch within each budget (x, epochs, log scale):
    mean over seeds with a ± std bar, one line per schedule; solid for a schedule read from its
    one long run, dashed for one trained per budget."""
    stats = reads.groupby(["schedule", "horizon_epochs"])["test_err"].agg(["mean", "std"])
    stats = stats.reset_index()
    fig, ax = plt.subplots(figsize=(6.5, 4.6), layout="constrained")
    schedules = order_labels(set(stats["schedule"]))
    for index, schedule in enumerate(schedules):
        line = stats[stats["schedule"] == schedule].sort_values("horizon_epochs")
        style = _PER_BUDGET if schedule_needs_budget(schedule) else _ANYTIME
        # Side by side around each budget (log2 x), so the bars do not hide each other.
        dodge = 2.0 ** (DODGE * (index - (len(schedules) - 1) / 2))
        ax.errorbar(
            line["horizon_epochs"] * dodge,
            line["mean"],
            yerr=line["std"].fillna(0.0),
            color=schedule_color(schedule),
            label=display_name(schedule),
            capsize=3,
            linewidth=1.4,
            **style,
        )
    epochs = sorted(set(stats["horizon_epochs"]))
    ax.set_xscale("log", base=2)
    ax.set_xticks(epochs, [str(e) for e in epochs])
    ax.minorticks_off()
    ax.set_xlabel("budget (epochs)")
    ax.set_ylabel("test error at the best validation epoch (%)")
    ax.grid(alpha=0.3)
    extra = [
        style_entry("trained per budget", linestyle="--", marker="s", markerfacecolor="white"),
        style_entry("one run, read at every budget", linestyle="-", marker="o"),
    ]
    shared_legend(fig, title="schedule (mean ± std over seeds)", extra=extra)
    fig.suptitle(title)
    return fig


def tuning_figure(curve: pd.DataFrame, defaults: pd.DataFrame, title: str) -> Figure:
    """Expected test error of the validation-selected trial against K (trials), a bootstrap
    band per schedule, and each schedule's defaults as a cross at K = 1."""
    fig, ax = plt.subplots(figsize=(6.5, 4.6), layout="constrained")
    for schedule in order_labels(set(curve["schedule"])):
        line = curve[curve["schedule"] == schedule].sort_values("k")
        color = schedule_color(schedule)
        ax.plot(
            line["k"], line["test_err"], color=color, label=display_name(schedule), linewidth=1.6
        )
        ax.fill_between(line["k"], line["low"], line["high"], color=color, alpha=BAND_ALPHA)
        default = defaults[defaults["schedule"] == schedule]["test_err"].dropna()
        if len(default):
            ax.plot([1], [default.mean()], marker="x", color=color, markersize=8, linestyle="")
    ax.set_xlabel("K: trials tuned (the validation-best of K drawn from the pool)")
    ax.set_ylabel("expected test error (%)")
    ax.set_xlim(left=0.8)
    integer_ticks([ax])
    ax.grid(alpha=0.3)
    extra = [
        style_entry("95% bootstrap band over the pool", linewidth=6, alpha=0.3),
        style_entry("defaults, one run", marker="x", linestyle=""),
    ]
    shared_legend(fig, title="schedule", extra=extra)
    fig.suptitle(title)
    return fig
