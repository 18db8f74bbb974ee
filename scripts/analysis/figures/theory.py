"""Theory figures of the paper: NQM runs (Figs. 1-2) and the angular velocity model (Figs. 4-5).

The NQM takes seconds, so the figures call the simulator in :mod:`scripts.analysis.nqm` directly.

Angular velocity model (paper Fig. 4):
    v(t) = (pi/2)(1 + eps lr)(1 - 1/(gamma lr (t + 1/(gamma lr))))
         = (pi/2)(1 + eps lr) * gamma lr t / (gamma lr t + 1),
zero at t = 0, half-way at t = 1/(gamma lr), limit (pi/2)(1 + eps lr). The paper gives no
values for eps and gamma; we tie both to the NQM:
- eps = K / pi with K = sum(a^3 s^2) / sum(a^2 s^2), the small-lr slope of Theorem 3.2
  (C* ~ -(lr/2) K, so the limiting angle is ~ pi/2 + lr K/2 radians); K = 13.37, eps = 4.25;
- gamma = 2.6 per iteration: the NQM runs of Fig. 1 reach half their limiting angle after
  about 1/(2.6 lr) iterations (measured: 2.56, 2.63, 2.72 for lr 0.03, 0.01, 0.001).
Idealised algorithm (Fig. 5): v restarts from zero at every drop, and the lr is multiplied by
``factor`` once the angular acceleration dv/dt falls below ``acceleration_threshold``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from scripts.analysis.figures.common import (
    save_figure,
    schedule_color,
    shared_legend,
    style_entry,
)
from scripts.analysis.nqm import (
    DROP_RULE_ITERATIONS,
    FIG1_LRS,
    DropRuleTrace,
    FixedLRTrace,
    nqm_curvatures,
    nqm_noise_var,
    predicted_limit_angle,
    simulate_drop_rule,
    simulate_fixed_lr,
)

VELOCITY_GAMMA = 2.6
SMOOTHING_WINDOW = 50
# The plotted loss is the expected loss minus its irreducible part 1/2 tr(A Sigma) = 100, so
# the stationary differences between learning rates stay visible on a log axis.
EXCESS_LOSS_LABEL = "excess loss  $\\frac{1}{2} x^T A x$"


def velocity_model_eps() -> float:
    """eps matching Theorem 3.2's small-lr slope on the NQM (Sigma = A^-1)."""
    curvatures = nqm_curvatures()
    noise_var = nqm_noise_var(curvatures)
    slope = float((curvatures**3 * noise_var).sum() / (curvatures**2 * noise_var).sum())
    return slope / math.pi


VELOCITY_EPS = velocity_model_eps()


def angular_velocity_model(
    t: np.ndarray | float,
    lr: float,
    eps: float = VELOCITY_EPS,
    gamma: float = VELOCITY_GAMMA,
) -> np.ndarray:
    """The paper's v(t) in radians, for iterations t >= 0 since the last (re)start."""
    if lr <= 0 or gamma <= 0:
        raise ValueError(f"lr ({lr!r}) and gamma ({gamma!r}) must be positive")
    rate = gamma * lr
    return (math.pi / 2) * (1 + eps * lr) * (1 - 1 / (rate * (np.asarray(t, float) + 1 / rate)))


@dataclass(frozen=True)
class IdealisedRun:
    """Schematic run of the idealised algorithm: v (degrees) and lr on a common time grid,
    the drop times and each phase's limiting v (degrees)."""

    t: np.ndarray
    velocity_deg: np.ndarray
    lr: np.ndarray
    drop_times: np.ndarray
    limits_deg: np.ndarray


def idealised_run(
    lr0: float = 0.06,
    factor: float = 0.5,
    num_drops: int = 3,
    acceleration_threshold: float = 0.05,
    eps: float = VELOCITY_EPS,
    gamma: float = VELOCITY_GAMMA,
    points_per_phase: int = 200,
) -> IdealisedRun:
    """Drop whenever dv/dt < acceleration_threshold (degrees per iteration); v restarts at 0."""
    if not 0.0 < factor < 1.0:
        raise ValueError(f"factor {factor!r} must lie in (0, 1)")
    if acceleration_threshold <= 0:
        raise ValueError(f"acceleration_threshold {acceleration_threshold!r} must be positive")
    if num_drops < 1:
        raise ValueError(f"num_drops must be >= 1, got {num_drops!r}")
    times, velocities, lrs, drops, limits = [], [], [], [], []
    start, lr = 0.0, lr0
    for phase in range(num_drops + 1):
        rate = gamma * lr
        limit_deg = 90.0 * (1 + eps * lr)
        limits.append(limit_deg)
        # dv/dt = limit * rate / (rate t + 1)^2 falls to the threshold at this t.
        duration = (math.sqrt(max(1.0, limit_deg * rate / acceleration_threshold)) - 1) / rate
        if phase == num_drops:
            duration *= 1.25  # show the last rate settle on its plateau
        local = np.linspace(0.0, duration, points_per_phase)
        times.append(start + local)
        velocities.append(np.degrees(angular_velocity_model(local, lr, eps, gamma)))
        lrs.append(np.full(points_per_phase, lr))
        start += duration
        if phase < num_drops:
            drops.append(start)
            lr *= factor
    return IdealisedRun(
        np.concatenate(times),
        np.concatenate(velocities),
        np.concatenate(lrs),
        np.array(drops),
        np.array(limits),
    )


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` finite values (shorter at the start; NaNs skipped)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window!r}")
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    upper = np.arange(1, len(values) + 1)
    lower = np.maximum(upper - window, 0)
    count = counts[upper] - counts[lower]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (sums[upper] - sums[lower]) / count, np.nan)


def _lr_colors(lrs: Sequence[float]) -> list:
    cmap = colormaps["viridis"]
    return [cmap(0.85 * i / max(1, len(lrs) - 1)) for i in range(len(lrs))]


def fig1_nqm_fixed_lr(trace: FixedLRTrace, window: int = SMOOTHING_WINDOW) -> Figure:
    """Loss (log y) and angle vs iteration per fixed lr; dashed lines: Theorem 3.2 limits."""
    fig, (ax_loss, ax_angle) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    iterations = np.arange(1, trace.loss.shape[-1] + 1)
    for lr, color, loss, angle in zip(
        trace.lrs, _lr_colors(trace.lrs), trace.loss[:, 0], trace.angle[:, 0], strict=True
    ):
        label = f"lr = {lr:g}"
        ax_loss.plot(iterations, loss - trace.noise_floor, color=color, label=label)
        ax_angle.plot(iterations, angle, color=color, alpha=0.15, linewidth=0.5)
        ax_angle.plot(iterations, moving_average(angle, window), color=color, label=label)
        ax_angle.axhline(predicted_limit_angle(float(lr)), color=color, linestyle="--")
    ax_loss.set(xscale="log", yscale="log", xlabel="iteration", ylabel=EXCESS_LOSS_LABEL)
    ax_angle.set(
        xscale="log", xlabel="iteration", ylabel="angle between steps (degrees)", ylim=(0, 130)
    )
    shared_legend(
        fig,
        extra=[
            style_entry("angle per iteration", alpha=0.3, linewidth=0.5),
            style_entry(f"angle, {window}-iteration mean"),
            style_entry("limiting angle (Theorem 3.2)", linestyle="--"),
        ],
        columns=len(trace.lrs) + 3,
    )
    fig.suptitle("NQM, fixed learning rates")
    return fig


def fig2_nqm_drop_rule(
    trace: DropRuleTrace, references: FixedLRTrace | None = None, window: int = 20
) -> Figure:
    """lr, loss and angle of the toy drop rule; drops marked by triangles and dotted lines."""
    fig, axes = plt.subplots(3, 1, figsize=(7, 7.5), sharex=True, constrained_layout=True)
    ax_lr, ax_loss, ax_angle = axes
    iterations = np.arange(1, len(trace.lr) + 1)
    color = schedule_color("autodrop")
    ax_lr.plot(iterations, trace.lr, color=color, drawstyle="steps-post", label="drop rule")
    drops = trace.drop_iterations
    ax_lr.plot(drops, trace.lr[drops - 1], "v", color="black", label="drop (dotted lines)")
    ax_loss.plot(iterations, trace.loss - trace.noise_floor, color=color, label="drop rule")
    if references is not None:
        reference_colors = _lr_colors(references.lrs)
        for i, (lr, loss) in enumerate(zip(references.lrs, references.loss[:, 0], strict=True)):
            ax_loss.plot(
                np.arange(1, len(loss) + 1),
                loss - references.noise_floor,
                color=reference_colors[i],
                linestyle=("--", "-.")[i % 2],
                label=f"fixed lr = {lr:g}",
            )
    ax_angle.plot(iterations, trace.angle, color=color, alpha=0.2, linewidth=0.5)
    ax_angle.plot(iterations, moving_average(trace.angle, window), color=color, label="drop rule")
    for ax in axes:
        for drop in drops:
            ax.axvline(drop, color="black", linestyle=":", linewidth=0.8)
    ax_lr.set(yscale="log", ylabel="learning rate")
    ax_loss.set(yscale="log", ylabel=EXCESS_LOSS_LABEL)
    ax_angle.set(xlabel="iteration", ylabel="angle between steps (degrees)", ylim=(0, 130))
    shared_legend(
        fig,
        extra=[
            style_entry("angle per iteration", color=color, alpha=0.2, linewidth=0.5),
        ],
    )
    fig.suptitle("NQM, toy drop rule: halve lr when the 20-iteration mean angle stops growing")
    return fig


def fig4_velocity_model(
    lrs: Sequence[float] = FIG1_LRS,
    iterations: int = 4000,
    eps: float = VELOCITY_EPS,
    gamma: float = VELOCITY_GAMMA,
) -> Figure:
    """v(t) of the angular velocity model for several lrs, with dashed limits."""
    fig, ax = plt.subplots(figsize=(6, 3.8), constrained_layout=True)
    t = np.linspace(0, iterations, 2000)
    for lr, color in zip(lrs, _lr_colors(lrs), strict=True):
        ax.plot(t, np.degrees(angular_velocity_model(t, lr, eps, gamma)), color=color,
                label=f"lr = {lr:g}")  # fmt: skip
        ax.axhline(90.0 * (1 + eps * lr), color=color, linestyle="--")
    ax.set(xlabel="iteration t", ylabel="angular velocity v(t) (degrees)", ylim=(0, 130))
    shared_legend(fig, extra=[style_entry("limit (pi/2)(1 + eps lr)", linestyle="--")])
    ax.set_title(f"v(t) model, eps = {eps:.2f}, gamma = {gamma:g}")
    return fig


def fig5_idealised_algorithm(run: IdealisedRun | None = None) -> Figure:
    """Two stacked axes: v(t) restarting at each drop, and the stepwise lr."""
    run = idealised_run() if run is None else run
    fig, (ax_v, ax_lr) = plt.subplots(
        2, 1, figsize=(6, 5), sharex=True, constrained_layout=True, height_ratios=(2, 1)
    )
    color = schedule_color("autodrop")
    ax_v.plot(run.t, run.velocity_deg, color=color, label="v(t)")
    for limit in run.limits_deg:
        ax_v.axhline(limit, color="grey", linestyle="--", linewidth=0.8)
    ax_lr.plot(run.t, run.lr, color=color, drawstyle="steps-post", label="learning rate")
    for drop in run.drop_times:
        for ax in (ax_v, ax_lr):
            ax.axvline(drop, color="black", linestyle=":", linewidth=0.8)
    ax_v.set(ylabel="angular velocity v(t) (degrees)", ylim=(0, 130))
    ax_lr.set(xlabel="iteration", ylabel="learning rate", yscale="log")
    shared_legend(
        fig,
        extra=[
            style_entry("limit of v(t) at the current lr", linestyle="--", linewidth=0.8),
            style_entry("lr drop", color="black", linestyle=":", linewidth=0.8),
        ],
    )
    ax_v.set_title("Idealised algorithm: drop once v(t) saturates")
    return fig


def make_theory_figures(out_dir: str | Path, iterations: int = 4000, seed: int = 0) -> list[Path]:
    """Draw Figures 1, 2, 4 and 5 into out_dir (PNG + PDF each)."""
    fixed = simulate_fixed_lr(list(FIG1_LRS), iterations, seed=seed)
    drop_iterations = min(iterations, DROP_RULE_ITERATIONS)
    drop_rule = simulate_drop_rule(iterations=drop_iterations, seed=seed)
    references = simulate_fixed_lr([0.06, 0.001], drop_iterations, seed=seed)
    paths = save_figure(fig1_nqm_fixed_lr(fixed), out_dir, "fig1_nqm_fixed_lr")
    paths += save_figure(fig2_nqm_drop_rule(drop_rule, references), out_dir, "fig2_nqm_drop_rule")
    paths += save_figure(fig4_velocity_model(iterations=iterations), out_dir, "fig4_velocity_model")
    paths += save_figure(fig5_idealised_algorithm(), out_dir, "fig5_idealised_algorithm")
    return paths
