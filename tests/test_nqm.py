"""NQM simulator, Theorem 3.2 check, toy drop rule and the theory figures (Figs. 1, 2, 4, 5)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from matplotlib.lines import Line2D

from scripts import nqm as nqm_command
from scripts.analysis import nqm
from scripts.analysis.figures import theory

TAIL_FRACTION = nqm.LIMIT_TAIL_FRACTION


@pytest.fixture(scope="module")
def fixed_runs() -> nqm.FixedLRTrace:
    """Fig. 1 learning rates, 4 noise streams, long enough for lr 0.001 to saturate."""
    return nqm.simulate_fixed_lr(list(nqm.FIG1_LRS), iterations=6000, seed=0, replicas=4)


def half_rise_iteration(trace: nqm.FixedLRTrace, index: int) -> int:
    """First iteration at which the replica-mean angle reaches half of Theorem 3.2's limit."""
    mean_angle = trace.angle[index, :, 1:].mean(axis=0)
    half = nqm.predicted_limit_angle(float(trace.lrs[index])) / 2
    return int(np.argmax(mean_angle >= half)) + 2


# --- simulator basics -------------------------------------------------------------------------


def test_nqm_problem_definition() -> None:
    curvatures = nqm.nqm_curvatures()
    assert curvatures.dtype == torch.float64 and curvatures.shape == (200,)
    assert curvatures[0].item() == pytest.approx(0.1) and curvatures[-1].item() == pytest.approx(20)
    # Sigma = A^-1: the gradient noise covariance A Sigma A equals A.
    noise_cov = curvatures * nqm.nqm_noise_var(curvatures) * curvatures
    torch.testing.assert_close(noise_cov, curvatures)
    assert nqm.max_stable_lr() == pytest.approx(0.1)


def test_fixed_lr_trace_shapes_and_determinism() -> None:
    first = nqm.simulate_fixed_lr([0.03, 0.01], iterations=50, seed=3, replicas=2)
    again = nqm.simulate_fixed_lr([0.03, 0.01], iterations=50, seed=3, replicas=2)
    other = nqm.simulate_fixed_lr([0.03, 0.01], iterations=50, seed=4, replicas=2)
    assert first.loss.shape == first.angle.shape == (2, 2, 50)
    assert first.loss.dtype == np.float64
    assert np.isnan(first.angle[..., 0]).all() and np.isfinite(first.angle[..., 1:]).all()
    np.testing.assert_array_equal(first.loss, again.loss)
    assert not np.allclose(first.loss, other.loss)
    # A scalar lr runs the same noise stream as the same lr inside a batch of lrs.
    single = nqm.simulate_fixed_lr(0.03, iterations=50, seed=3, replicas=2)
    np.testing.assert_allclose(single.loss[0], first.loss[0])
    # The expected loss never goes below its irreducible part 1/2 tr(A Sigma) = dim / 2.
    assert first.noise_floor == 100.0 and (first.loss > first.noise_floor).all()


def test_first_step_matches_hand_computation() -> None:
    trace = nqm.simulate_fixed_lr(0.05, iterations=2, seed=7, dim=3, start=2.0)
    curvatures = nqm.nqm_curvatures(3)
    generator = torch.Generator().manual_seed(7)
    c = torch.randn(1, 3, generator=generator, dtype=torch.float64) * curvatures.rsqrt()
    x1 = 2.0 - 0.05 * curvatures * (2.0 - c[0])
    expected = 0.5 * float((curvatures * x1**2).sum()) + 1.5
    assert trace.loss[0, 0, 0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"lr": 0.1, "iterations": 10},
            "lr=0.1 is invalid: expected a finite number with 0.0 < lr < 0.1",
        ),
        (
            {"lr": -0.01, "iterations": 10},
            "lr=-0.01 is invalid: expected a finite number with 0.0 < lr",
        ),
        ({"lr": [], "iterations": 10}, "non-empty"),
        (
            {"lr": 0.01, "iterations": 1},
            "iterations=1 is invalid: expected an int with 2 <= iterations",
        ),
        (
            {"lr": 0.01, "iterations": 10, "replicas": 0},
            "replicas=0 is invalid: expected an int with 1 <= replicas",
        ),
    ],
)
def test_fixed_lr_rejects_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        nqm.simulate_fixed_lr(**kwargs)


# --- Theorem 3.2 ------------------------------------------------------------------------------


@pytest.mark.parametrize("lr", [0.06, 0.03, 0.01])
def test_theorem_3_2_predicts_the_simulated_limit_angle(
    fixed_runs: nqm.FixedLRTrace, lr: float
) -> None:
    index = list(fixed_runs.lrs).index(lr)
    simulated = nqm.saturated_angle(fixed_runs, TAIL_FRACTION)[index]
    assert simulated == pytest.approx(nqm.predicted_limit_angle(lr), abs=1.0)


def test_theorem_formula_is_the_ratio_of_stationary_moments() -> None:
    generator = torch.Generator().manual_seed(0)
    curvatures = torch.rand(50, generator=generator, dtype=torch.float64) * 5 + 0.1
    noise_var = torch.rand(50, generator=generator, dtype=torch.float64) + 0.5
    for lr in (0.01, 0.1, 0.3):
        variance, lag_one = nqm.stationary_displacement_moments(lr, curvatures, noise_var)
        cosine = float(lag_one.sum() / variance.sum())
        predicted = nqm.predicted_limit_angle(lr, curvatures, noise_var)
        assert math.degrees(math.acos(cosine)) == pytest.approx(predicted, abs=1e-9)


def test_exact_stationary_expected_angle_is_close_to_the_theorem() -> None:
    for lr in (0.06, 0.01):
        exact = nqm.stationary_angle_monte_carlo(lr, samples=4000)
        assert exact == pytest.approx(nqm.predicted_limit_angle(lr), abs=0.5)


def test_predicted_limit_angle_rejects_unstable_or_negative_lr() -> None:
    with pytest.raises(ValueError, match="unstable"):
        nqm.predicted_limit_angle(0.2)
    with pytest.raises(ValueError, match="positive"):
        nqm.predicted_limit_angle(0.0)


# --- Fig. 1 claims ----------------------------------------------------------------------------


def test_angles_saturate_between_90_and_120_lower_for_smaller_lr(
    fixed_runs: nqm.FixedLRTrace,
) -> None:
    limits = nqm.saturated_angle(fixed_runs, TAIL_FRACTION)
    assert list(fixed_runs.lrs) == sorted(fixed_runs.lrs, reverse=True)
    assert ((limits > 90.0) & (limits < 120.0)).all(), limits
    assert (np.diff(limits) < 0).all(), limits
    predicted = [nqm.predicted_limit_angle(float(lr)) for lr in fixed_runs.lrs]
    assert all(90.0 < value < 120.0 for value in predicted)


def test_smaller_lr_rises_slower(fixed_runs: nqm.FixedLRTrace) -> None:
    rise = [half_rise_iteration(fixed_runs, i) for i in range(len(fixed_runs.lrs))]
    assert rise == sorted(rise) and len(set(rise)) == len(rise), rise


# --- toy drop rule (Fig. 2) -------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_drop_rule_drops_and_respects_floor(seed: int) -> None:
    avg = 20
    trace = nqm.simulate_drop_rule(iterations=600, seed=seed, avg=avg)
    drops = trace.drop_iterations
    assert len(drops) >= 2
    assert (np.diff(trace.lr) <= 0).all() and trace.lr.min() >= 0.001
    assert trace.lr[0] == 0.06
    for drop in drops:
        assert trace.lr[drop] == pytest.approx(max(0.001, 0.5 * trace.lr[drop - 1]))
    # The lr changes exactly at the recorded drops.
    changes = np.flatnonzero(np.diff(trace.lr)) + 1
    np.testing.assert_array_equal(changes, drops[drops < len(trace.lr)])
    # Each drop compares two fresh 20-angle blocks (the first angle exists at iteration 2).
    assert drops[0] >= 2 * avg + 1 and (np.diff(drops) >= 2 * avg).all()


def test_drop_rule_beats_both_fixed_rates_on_excess_loss() -> None:
    iterations = 600
    trace = nqm.simulate_drop_rule(iterations=iterations, seed=0)
    fixed = nqm.simulate_fixed_lr([0.06, 0.001], iterations, seed=0)
    final_window = slice(-100, None)
    drop_rule_loss = trace.loss[final_window].mean()
    assert trace.lr[-1] == 0.001
    assert (drop_rule_loss < fixed.loss[:, 0, final_window].mean(axis=-1)).all()


def test_drop_rule_with_huge_threshold_drops_to_floor_and_stops() -> None:
    trace = nqm.simulate_drop_rule(iterations=400, threshold=1e9, factor=0.5, seed=0)
    assert trace.lr[-1] == 0.001
    assert len(trace.drop_iterations) == 6  # 0.06 / 2^6 < 0.001: the 6th drop hits the floor


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr0": 0.5}, "lr0=0.5 is invalid: expected a finite number with 0.0 < lr0 < 0.1"),
        ({"floor": 0.1}, "floor"),
        ({"factor": 1.0}, "factor"),
        ({"avg": 0}, "avg=0 is invalid: expected an int with 1 <= avg"),
    ],
)
def test_drop_rule_rejects_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        nqm.simulate_drop_rule(iterations=10, **kwargs)


# --- angular velocity model (Figs. 4-5) -------------------------------------------------------


def test_velocity_model_shape() -> None:
    lr, gamma = 0.02, theory.VELOCITY_GAMMA
    limit = (math.pi / 2) * (1 + theory.VELOCITY_EPS * lr)
    v = theory.angular_velocity_model(np.array([0.0, 1 / (gamma * lr), 1e9]), lr)
    np.testing.assert_allclose(v, [0.0, limit / 2, limit], rtol=1e-6, atol=1e-12)


def test_velocity_model_eps_matches_theorem_small_lr_slope() -> None:
    assert theory.VELOCITY_EPS == pytest.approx(401 / 30 / math.pi)
    for lr, tolerance in ((0.001, 0.01), (0.01, 0.1)):
        model_limit = 90.0 * (1 + theory.VELOCITY_EPS * lr)
        assert model_limit == pytest.approx(nqm.predicted_limit_angle(lr), abs=tolerance)


@pytest.mark.parametrize("lr", [0.03, 0.01, 0.001])
def test_velocity_model_gamma_matches_nqm_half_rise(
    fixed_runs: nqm.FixedLRTrace, lr: float
) -> None:
    measured = half_rise_iteration(fixed_runs, list(fixed_runs.lrs).index(lr))
    assert measured * theory.VELOCITY_GAMMA * lr == pytest.approx(1.0, abs=0.2)


def test_idealised_run_drops_when_acceleration_falls_below_threshold() -> None:
    run = theory.idealised_run(lr0=0.06, factor=0.5, num_drops=3, acceleration_threshold=0.05)
    assert len(run.drop_times) == 3 and (np.diff(run.drop_times) > 0).all()
    np.testing.assert_allclose(np.unique(run.lr), [0.0075, 0.015, 0.03, 0.06])
    # Just before each drop, v is rising at the threshold rate (degrees per iteration).
    for drop, lr in zip(run.drop_times, (0.06, 0.03, 0.015), strict=True):
        start = run.t[np.flatnonzero(run.lr == lr)[0]]
        local = drop - start
        slope = (
            np.degrees(theory.angular_velocity_model(local, lr))
            - np.degrees(theory.angular_velocity_model(local - 1e-4, lr))
        ) / 1e-4
        assert slope == pytest.approx(0.05, rel=1e-3)
    assert run.velocity_deg.min() == 0.0 and run.velocity_deg.max() < 120


def test_moving_average_matches_a_plain_loop() -> None:
    values = np.array([np.nan, 1.0, 2.0, 6.0, np.nan, 3.0, 5.0])
    window = 3
    expected = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
        chunk = chunk[np.isfinite(chunk)]
        expected.append(chunk.mean() if len(chunk) else np.nan)
    np.testing.assert_allclose(theory.moving_average(values, window), expected)
    with pytest.raises(ValueError, match="window"):
        theory.moving_average(values, 0)


# --- figures ----------------------------------------------------------------------------------


def _labelled_lines(ax) -> list[Line2D]:
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


def _dashed_horizontal_values(ax) -> list[float]:
    return [
        float(line.get_ydata()[0])
        for line in ax.get_lines()
        if line.get_linestyle() == "--" and len(set(np.asarray(line.get_ydata()))) == 1
    ]


def test_fig1_content() -> None:
    trace = nqm.simulate_fixed_lr(list(nqm.FIG1_LRS), iterations=200, seed=0)
    fig = theory.fig1_nqm_fixed_lr(trace)
    ax_loss, ax_angle = fig.axes
    assert ax_loss.get_yscale() == "log"
    assert ax_loss.get_xlabel() == ax_angle.get_xlabel() == "iteration"
    assert "loss" in ax_loss.get_ylabel() and "angle" in ax_angle.get_ylabel()
    labels = [f"lr = {lr:g}" for lr in nqm.FIG1_LRS]
    assert [line.get_label() for line in _labelled_lines(ax_loss)] == labels
    assert [line.get_label() for line in _labelled_lines(ax_angle)] == labels
    predicted = [nqm.predicted_limit_angle(lr) for lr in nqm.FIG1_LRS]
    np.testing.assert_allclose(_dashed_horizontal_values(ax_angle), predicted)
    # Raw angles (faint) plus smoothed angles, one of each per lr.
    solid = [line for line in ax_angle.get_lines() if line.get_linestyle() == "-"]
    assert len(solid) == 2 * len(labels)


def test_fig2_content() -> None:
    trace = nqm.simulate_drop_rule(iterations=300, seed=0)
    references = nqm.simulate_fixed_lr([0.06, 0.001], 300, seed=0)
    fig = theory.fig2_nqm_drop_rule(trace, references)
    ax_lr, ax_loss, ax_angle = fig.axes
    assert ax_lr.get_ylabel() == "learning rate" and ax_angle.get_xlabel() == "iteration"
    assert "loss" in ax_loss.get_ylabel() and "angle" in ax_angle.get_ylabel()
    markers = [line for line in ax_lr.get_lines() if line.get_label() == "drop (dotted lines)"]
    assert len(markers) == 1 and markers[0].get_marker() == "v"
    np.testing.assert_array_equal(markers[0].get_xdata(), trace.drop_iterations)
    for ax in fig.axes:
        dotted_x = [
            float(line.get_xdata()[0]) for line in ax.get_lines() if line.get_linestyle() == ":"
        ]
        assert sorted(dotted_x) == [float(d) for d in trace.drop_iterations]
    assert {line.get_label() for line in _labelled_lines(ax_loss)} == {
        "drop rule",
        "fixed lr = 0.06",
        "fixed lr = 0.001",
    }


def test_fig4_and_fig5_content() -> None:
    fig4 = theory.fig4_velocity_model(iterations=500)
    (ax,) = fig4.axes
    assert len(_labelled_lines(ax)) == len(nqm.FIG1_LRS)
    assert len(_dashed_horizontal_values(ax)) == len(nqm.FIG1_LRS)
    assert ax.get_xlabel() == "iteration t" and "v(t)" in ax.get_ylabel()

    run = theory.idealised_run(num_drops=2)
    fig5 = theory.fig5_idealised_algorithm(run)
    ax_v, ax_lr = fig5.axes
    assert ax_lr.get_ylabel() == "learning rate" and ax_lr.get_xlabel() == "iteration"
    assert "v(t)" in ax_v.get_ylabel()
    assert ax_v.get_shared_x_axes().joined(ax_v, ax_lr)
    lr_line = ax_lr.get_lines()[0]
    assert lr_line.get_drawstyle() == "steps-post"
    np.testing.assert_allclose(lr_line.get_ydata(), run.lr)
    assert len(_dashed_horizontal_values(ax_v)) == 3  # one limit per phase


@pytest.mark.slow
def test_make_theory_figures_writes_png_and_pdf(tmp_path) -> None:
    paths = theory.make_theory_figures(tmp_path, iterations=150, seed=1)
    names = {
        "fig1_nqm_fixed_lr",
        "fig2_nqm_drop_rule",
        "fig4_velocity_model",
        "fig5_idealised_algorithm",
    }
    assert {p.name for p in paths} == {f"{n}.{ext}" for n in names for ext in ("png", "pdf")}
    assert all(p.stat().st_size > 1000 for p in paths)


def test_nqm_cli_writes_traces_and_summary(tmp_path) -> None:
    argv = ["--out", str(tmp_path), "--iterations", "300", "--seed", "2", "--mc-samples", "500"]
    nqm_command.main(argv)
    with np.load(tmp_path / "nqm.npz") as data:
        assert data["fixed_angle"].shape == (len(nqm.FIG1_LRS), 300)
        assert data["drop_lr"].shape == (300,)
    summary = json.loads((tmp_path / "nqm.json").read_text())
    assert [row["lr"] for row in summary["limit_angle"]] == list(nqm.FIG1_LRS)
    assert summary["seed"] == 2 and summary["sigma"] == "A^-1"
    for row in summary["limit_angle"]:
        assert row["theorem_3_2_deg"] == pytest.approx(nqm.predicted_limit_angle(row["lr"]))
        assert 0 < row["simulated_last_third_deg"] < 180
    assert summary["drop_rule"]["lr_levels"][0] == 0.06
