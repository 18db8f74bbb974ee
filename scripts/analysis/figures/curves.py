"""Training-curve figures: one per task (paper Figures 6-11), the fixed-lr angle study (Figure 3)
and AutoDrop's measurement trace; :func:`make_all_figures` adds the performance profile and the
lr-sensitivity figures (:mod:`scripts.analysis.figures.summary`); ``python -m scripts.figures
curves`` draws them.

Each figure function takes a RunSet of finished runs and returns the Figure unsaved;
:func:`make_all_figures` selects the runs, draws and saves everything.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from scripts.analysis import time_to_target as ttt
from scripts.analysis.figures import summary
from scripts.analysis.figures.common import (
    integer_ticks,
    label_colors,
    save_figure,
    shared_legend,
    style_entry,
)
from scripts.analysis.runs import RunSet, load_runs, task_keys
from scripts.analysis.tables import display_names, order_labels

ZOOM_FRACTION = 0.25
ANGLE_KEY = "angle/epoch"
LR_KEY = "optimizer.lr"  # the setting of a fixed-lr sweep's labels ('constant-lr=0.1')
BAND_ALPHA = 0.2
_VARIANT_STYLES = ("--", ":", "-.", (0, (5, 1)), (0, (1, 3)))
# Panels of the per-task figure: (key in the mosaic, metric, title, y label).
_TASK_PANELS = (
    ("lr", "lr", "learning rate", "lr"),
    ("test_loss", "test/loss", "test loss", "loss"),
    ("test_err", "test/err", "test error", "error (%)"),
    ("train_loss", "train/loss", "training loss", "loss"),
    ("test_loss_zoom", "test/loss", "test loss, last {pct} %", "loss"),
    ("test_err_zoom", "test/err", "test error, last {pct} %", "error (%)"),
)
# With a validation split, its curves stand beside the test curves.
_VALIDATION_PANELS = (
    ("val_loss", "val/loss", "validation loss", "loss"),
    ("val_err", "val/err", "validation error", "error (%)"),
)
_LAYOUT = [["lr", "test_loss", "test_err"], ["train_loss", "test_loss_zoom", "test_err_zoom"]]
_LAYOUT_WITH_VALIDATION = [
    ["lr", "val_loss", "test_loss", "test_loss_zoom"],
    ["train_loss", "val_err", "test_err", "test_err_zoom"],
]


def seed_band(runs: RunSet, run_ids: Sequence[str], key: str) -> pd.DataFrame:
    """Per epoch: mean, min and max of ``key`` over the given runs (seeds), and their count."""
    rows = runs.metrics[runs.metrics["run_id"].isin(set(run_ids))]
    if key not in rows:
        return pd.DataFrame(columns=["mean", "min", "max", "n"])
    band = rows.groupby("epoch")[key].agg(["mean", "min", "max", "count"])
    return band.rename(columns={"count": "n"}).dropna(subset=["mean"])


def zoom_range(last_epoch: int, fraction: float = ZOOM_FRACTION) -> tuple[int, int]:
    """Epoch range of the last ``fraction`` of training: (last - ceil(fraction * last), last)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"zoom fraction {fraction!r} is invalid: must be in (0, 1]")
    return last_epoch - math.ceil(fraction * last_epoch), last_epoch


def _line_styles(labels: Sequence[str], names: Mapping[str, str]) -> dict[str, object]:
    """Solid for the first label of a schedule; labels of one schedule (``names``: label ->
    schedule name), which share its colour, get distinct dashes."""
    styles: dict[str, object] = {}
    used: dict[str, int] = {}
    for label in labels:
        name = names[label]
        index = used.get(name, 0)
        styles[label] = "-" if index == 0 else _VARIANT_STYLES[(index - 1) % len(_VARIANT_STYLES)]
        used[name] = index + 1
    return styles


def _draw_band(ax: Axes, band: pd.DataFrame, label: str, color: str, style: object) -> None:
    ax.plot(band.index, band["mean"], color=color, linestyle=style, label=label, linewidth=1.4)
    if (band["n"] > 1).any():
        ax.fill_between(
            band.index, band["min"], band["max"], color=color, alpha=BAND_ALPHA, linewidth=0
        )


def band_entries(fig: Figure) -> list[tuple[object, str]]:
    """Legend entries explaining the lines and (if any is drawn) the seed bands."""
    entries: list[tuple[object, str]] = [
        (Line2D([], [], color="grey", linewidth=1.4), "line: mean over seeds")
    ]
    if any(isinstance(c, PolyCollection) for ax in fig.axes for c in ax.collections):
        band = Patch(color="grey", alpha=BAND_ALPHA, linewidth=0)
        entries.append((band, "band: min-max over seeds"))
    return entries


def _zoom(ax: Axes, bands: list[pd.DataFrame], epochs: tuple[int, int]) -> None:
    start, end = epochs
    inside = [band.loc[start:end, ["min", "max", "mean"]] for band in bands]
    values = np.concatenate(
        [part.to_numpy(dtype=float).ravel() for part in inside] or [np.zeros(0)]
    )
    values = values[np.isfinite(values)]
    ax.set_xlim(start, end)
    if values.size:
        low, high = float(values.min()), float(values.max())
        pad = 0.05 * (high - low) or 0.05 * abs(high) or 0.05
        ax.set_ylim(low - pad, high + pad)


def has_validation(runs: RunSet) -> bool:
    """Whether any run's records carry a validation error."""
    return "val/err" in runs.metrics and runs.metrics["val/err"].notna().any()


def task_figure(
    runs: RunSet,
    title: str,
    zoom_fraction: float = ZOOM_FRACTION,
    target: float | None = None,
) -> Figure:
    """lr, test loss, test error and training loss vs epoch, one line per schedule (mean over
    seeds, min-max band), plus the last ``zoom_fraction`` of test loss and test error. Runs with
    a validation split add their validation loss and error beside the test panels, with the
    task's validation ``target`` (time to target) as a dotted line when given."""
    validation = has_validation(runs)
    fig, axes = plt.subplot_mosaic(
        _LAYOUT_WITH_VALIDATION if validation else _LAYOUT,
        figsize=(19, 8.6) if validation else (15, 8.6),
        layout="constrained",
    )
    labels = order_labels(runs.runs["scheduler"], runs.runs)
    names = dict(zip(runs.runs["scheduler"], runs.runs["scheduler_name"], strict=True))
    shown = display_names(runs.runs)  # "TLR (reconstruction)" for tlr
    styles = _line_styles(labels, names)
    colors = label_colors(labels, names)
    last_epoch = int(runs.metrics["epoch"].max())
    epochs = zoom_range(last_epoch, zoom_fraction)
    panels = (*_TASK_PANELS, *(_VALIDATION_PANELS if validation else ()))
    for name, key, panel_title, ylabel in panels:
        ax = axes[name]
        bands = []
        for label in labels:
            ids = runs.runs.loc[runs.runs["scheduler"] == label, "run_id"]
            band = seed_band(runs, ids, key)
            if not band.empty:
                _draw_band(ax, band, shown[label], colors[label], styles[label])
                bands.append(band)
        ax.set_title(panel_title.format(pct=round(100 * zoom_fraction)))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if name.endswith("_zoom"):
            _zoom(ax, bands, epochs)
        if name == "train_loss" and bands:
            ax.set_yscale("log")
    extra = band_entries(fig)
    if validation and target is not None:
        axes["val_err"].axhline(target, color="black", linestyle=":", linewidth=1.0)
        extra.append((Line2D([], [], color="black", linestyle=":"), TARGET_LABEL))
    integer_ticks(fig.axes)
    shared_legend(fig, title="schedule", extra=extra)
    fig.suptitle(title)
    return fig


TARGET_LABEL = "validation target (time to target)"


def _run_lr(runs: RunSet, run: pd.Series) -> float:
    """The fixed lr of a sweep run: the optimizer.lr its label names (label_settings), else its
    first epoch's lr."""
    if run["setting_key"] == LR_KEY:
        return float(json.loads(run["settings"])[LR_KEY])
    first = runs.metrics[runs.metrics["run_id"] == run["run_id"]].sort_values("epoch")
    return float(first["lr"].iloc[0])


def fixed_lr_angle_figure(runs: RunSet, title: str) -> Figure:
    """Figure 3: training loss and per-epoch angular velocity vs epoch, one line per fixed lr."""
    fig, (loss_ax, angle_ax) = plt.subplots(
        1, 2, figsize=(11, 4.6), sharex=True, layout="constrained"
    )
    lrs = pd.Series(
        [_run_lr(runs, run) for _, run in runs.runs.iterrows()], index=runs.runs["run_id"]
    )
    distinct = sorted(set(lrs), reverse=True)
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, max(len(distinct), 1)))
    for lr, color in zip(distinct, colors, strict=False):
        ids = list(lrs.index[lrs == lr])
        for ax, key in ((loss_ax, "train/loss"), (angle_ax, ANGLE_KEY)):
            band = seed_band(runs, ids, key)
            if not band.empty:
                _draw_band(ax, band, f"lr={lr:g}", color, "-")
    loss_ax.set_yscale("log")
    loss_ax.set_ylabel("training loss")
    angle_ax.set_ylabel("angular velocity (degrees)")
    for ax in (loss_ax, angle_ax):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    integer_ticks(fig.axes)
    shared_legend(fig, title="fixed learning rate", extra=band_entries(fig))
    fig.suptitle(title)
    return fig


def _is_v1(name: str) -> bool:
    """AutoDropV1 records the change of the angle between epochs as its smoothed value."""
    return name == "autodrop_v1"


def _run_entries(runs: pd.DataFrame) -> dict[str, str]:
    """Legend text per label of the traced runs: its display name and its seeds."""
    entries = {}
    for label, group in runs.groupby("scheduler", sort=False):
        seeds = sorted(int(seed) for seed in group["seed"])
        which = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {_seed_list(seeds)}"
        entries[label] = f"{group['display'].iloc[0]}, {which}"
    return entries


def _seed_list(seeds: Sequence[int]) -> str:
    """'0-3' for consecutive seeds, else '0, 2, 5'."""
    if seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def autodrop_trace_figure(runs: RunSet, title: str) -> Figure:
    """AutoDrop's measurements vs optimizer step, one colour per schedule label (its seeds share
    it; several labels of one schedule get shades of its colour): the angle omega of each
    measurement (thin) and AutoDrop's smoothed value (thick, over the windows that have one);
    AutoDropV1's change of the angle between epochs on its own axis (it is near 0 degrees); the
    lr on a log scale; every drop as a dotted vertical line. The legend names each colour once
    and each line style once, so it does not grow with the number of runs' lines."""
    trace_runs = runs.runs[runs.runs["run_id"].isin(set(runs.traces["run_id"]))]
    labels = order_labels(trace_runs["scheduler"], trace_runs)
    names = dict(zip(trace_runs["scheduler"], trace_runs["scheduler_name"], strict=True))
    colors = label_colors(labels, names)
    with_v1 = any(_is_v1(name) for name in trace_runs["scheduler_name"])
    panels = ["omega", "v1_diff", "lr"] if with_v1 else ["omega", "lr"]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(10, 2.6 * len(panels) + 1.2), sharex=True, layout="constrained"
    )
    ax_of = dict(zip(panels, axes, strict=True))
    smoothed_drawn = False
    for run in trace_runs.itertuples(index=False):
        color, name = colors[run.scheduler], f"{run.display} seed={run.seed}"
        trace = runs.traces[runs.traces["run_id"] == run.run_id].sort_values("step")
        ax_of["omega"].plot(
            trace["step"], trace["omega"], color=color, alpha=0.45, linewidth=0.8,
            label=f"{name}: omega",
        )  # fmt: skip
        smoothed = trace.dropna(subset=["smoothed"])
        if not smoothed.empty:
            v1 = _is_v1(run.scheduler_name)
            smoothed_drawn |= not v1
            ax = ax_of["v1_diff"] if v1 else ax_of["omega"]
            label = f"{name}: change since last epoch" if v1 else f"{name}: smoothed"
            ax.plot(smoothed["step"], smoothed["smoothed"], color=color, linewidth=1.8,
                    marker="." if v1 else None, label=label)  # fmt: skip
        ax_of["lr"].plot(
            trace["step"], trace["lr"], color=color, linewidth=1.4, label=f"{name}: lr",
            drawstyle="steps-post",
        )  # fmt: skip
        for ax in axes:
            for step in trace.loc[trace["dropped"], "step"]:
                ax.axvline(step, color=color, linestyle=":", alpha=0.6, linewidth=0.9)
    ax_of["omega"].set_ylabel("angle (degrees)")
    if with_v1:
        ax_of["v1_diff"].axhline(0.0, color="grey", linewidth=0.6)
        ax_of["v1_diff"].set_ylabel("V1: angle change (deg.)")
    ax_of["lr"].set_ylabel("learning rate")
    ax_of["lr"].set_yscale("log")
    ax_of["lr"].set_xlabel("optimizer step")
    for ax in axes:
        ax.grid(alpha=0.3)
    integer_ticks(axes)
    entries = _run_entries(trace_runs)
    runs_key = [
        (Line2D([], [], color=colors[label], linewidth=1.8), entries[label]) for label in labels
    ]
    styles = [style_entry("thin: omega, the angle of each measurement", alpha=0.45, linewidth=0.8)]
    if smoothed_drawn:
        styles.append(style_entry("thick: AutoDrop's smoothed omega", linewidth=1.8))
    if with_v1:
        styles.append(
            style_entry("dots: AutoDrop (2021 code)'s angle change", linewidth=1.8, marker=".")
        )
    styles += [
        style_entry("steps: learning rate (bottom panel)", linewidth=1.4, drawstyle="steps-post"),
        style_entry("lr drop", linestyle=":", linewidth=0.9),
    ]
    shared_legend(fig, title="colour: schedule and seeds; line style: what is drawn",
                  series=runs_key, extra=styles)  # fmt: skip
    fig.suptitle(title)
    return fig


def _file_stem(prefix: str, runs: pd.DataFrame, split: bool) -> str:
    first = runs.iloc[0]
    stem = f"{prefix}_{first['dataset']}-{first['model']}"
    return stem + ("__" + first["experiment"].replace("/", "_") if split else "")


def _groups_by_task(runs: pd.DataFrame):
    """(row key, runs, whether the task is split by experiment) per task row key."""
    keys = task_keys(runs)
    for key, group in runs.groupby(keys, sort=True):
        yield str(key), group, key != group["task"].iloc[0]


def make_all_figures(
    runs_dir: str | Path,
    out_dir: str | Path,
    experiment: str | None = None,
    targets: list[ttt.Target] | None = None,
) -> list[Path]:
    """Draw and save every figure the finished runs under ``runs_dir`` allow; return the files.
    ``targets``: the validation targets (default: the committed ``ttt.TARGETS_FILE``)."""
    targets = ttt.load_targets() if targets is None else targets
    runs = load_runs(runs_dir, experiment=experiment).finished()
    if runs.runs.empty:
        return []
    angle_ids = set()
    if ANGLE_KEY in runs.metrics:
        angle_ids = set(runs.metrics.loc[runs.metrics[ANGLE_KEY].notna(), "run_id"])
    paths: list[Path] = []
    with_metrics = runs.runs["run_id"].isin(set(runs.metrics["run_id"]))
    curve_runs = runs.runs[with_metrics & ~runs.runs["run_id"].isin(angle_ids)]
    for key, group, split in _groups_by_task(curve_runs):
        target = ttt.matching_target(group.iloc[0], targets)
        fig = task_figure(
            runs.subset(group["run_id"]),
            title=key,
            target=None if target is None else target.val_err,
        )
        paths += save_figure(fig, out_dir, _file_stem("fig_task", group, split))
    angle_groups = list(_groups_by_task(runs.runs[runs.runs["run_id"].isin(angle_ids)]))
    for key, group, _split in angle_groups:
        fig = fixed_lr_angle_figure(
            runs.subset(group["run_id"]), title=f"{key}: fixed learning rates"
        )
        name = (
            "fig3_fixed_lr_angle"
            if len(angle_groups) == 1
            else _file_stem("fig3_fixed_lr_angle", group, True)
        )
        paths += save_figure(fig, out_dir, name)
    traced = runs.runs[runs.runs["run_id"].isin(set(runs.traces["run_id"]))]
    for key, group, split in _groups_by_task(traced):
        first_seed = group.sort_values("seed").drop_duplicates("scheduler")
        fig = autodrop_trace_figure(
            runs.subset(first_seed["run_id"]), title=f"{key}: AutoDrop measurements"
        )
        paths += save_figure(fig, out_dir, _file_stem("fig_autodrop_trace", group, split))
    return paths + summary.make_summary_figures(runs, out_dir, targets=targets)
