"""Training-curve figures, checked through their matplotlib objects."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex

from scripts import figures as figures_command
from scripts.analysis.display import display_name
from scripts.analysis.figures import curves, summary, theory
from scripts.analysis.figures.common import save_figure, schedule_color
from scripts.analysis.runs import load_runs
from tests.fake_runs import write_fake_run

EPOCHS = 8
COMMON = {"dataset": "cifar10", "model": "resnet18"}


def trace(drop_steps: set[int]) -> list[dict]:
    """AutoDrop measurements every 10 steps; the lr falls by 0.5 at each drop step."""
    records, lr = [], 0.1
    for index in range(12):
        step = 10 * (index + 1)
        dropped = step in drop_steps
        lr = lr * 0.5 if dropped else lr
        omega = None if index < 2 else 60.0 + 2 * index
        smoothed = None if index < 4 else 58.0 + 2 * index
        records.append(
            {"step": step, "omega": omega, "smoothed": smoothed, "lr": lr, "dropped": dropped}
        )
    return records


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results") / "runs"
    experiment = "paper/resnet18_cifar10"
    for seed, offset in enumerate([0.0, 2.0]):  # step: two seeds -> band from min to max
        errs = [30.0 - 2 * e + offset for e in range(EPOCHS)]
        lrs = [0.1] * 4 + [0.02] * 4
        write_fake_run(
            root,
            experiment=experiment,
            scheduler="step",
            seed=seed,
            test_errs=errs,
            lrs=lrs,
            **COMMON,
        )
    for seed in range(2):
        write_fake_run(
            root, experiment=experiment, scheduler="autodrop", seed=seed,
            test_errs=[29.0 - 2.5 * e - seed for e in range(EPOCHS)],
            lrs=[0.1 * 0.9**e for e in range(EPOCHS)], trace=trace({40, 80}), **COMMON,
        )  # fmt: skip
    write_fake_run(
        root, experiment=experiment, scheduler="cosine", seed=0,
        test_errs=[31.0 - 2 * e for e in range(EPOCHS)], **COMMON,
    )  # fmt: skip
    write_fake_run(
        root, experiment=experiment, scheduler="step", seed=5, status="diverged",
        test_errs=[90.0] * 3, **COMMON,
    )  # fmt: skip
    for lr, angles in (
        (0.1, [None, None, 70.0, 80.0, 85.0]),
        (0.01, [None, None, 20.0, 35.0, 45.0]),
    ):
        write_fake_run(
            root, experiment="paper/fixed_lr", scheduler="constant", seed=0,
            settings={"optimizer.lr": lr},
            test_errs=[50.0, 40.0, 35.0, 33.0, 32.0], lrs=[lr] * 5,
            extra_metrics={"angle/epoch": angles}, **COMMON,
        )  # fmt: skip
    return root


@pytest.fixture(scope="module")
def task_runs(runs_dir):
    runs = load_runs(runs_dir, experiment="paper/resnet18_cifar10").finished()
    yield runs
    plt.close("all")


def axes_by_title(fig) -> dict:
    return {ax.get_title(): ax for ax in fig.axes}


def legend_entries(fig) -> dict:
    """label -> handle of the figure's one legend (no panel has a legend of its own)."""
    (legend,) = fig.legends
    assert all(ax.get_legend() is None for ax in fig.axes)
    texts = [text.get_text() for text in legend.get_texts()]
    pairs = zip(texts, legend.legend_handles, strict=True)
    return {text: handle for text, handle in pairs if text}  # "" pads a group's last column


def assert_camera_ready(fig, series: list[str]) -> None:
    """One legend, outside every panel; whole-number epoch ticks; a distinct colour for each
    of ``series`` (legend labels)."""
    entries = legend_entries(fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend_box = fig.legends[0].get_window_extent(renderer)
    for ax in fig.axes:
        assert not legend_box.overlaps(ax.get_window_extent(renderer)), ax.get_title()
        if ax.get_xlabel() == "epoch":
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
    colors = [to_hex(entries[label].get_color()) for label in series]
    assert len(set(colors)) == len(colors), dict(zip(series, colors, strict=True))


def test_seed_band_is_mean_min_max_over_seeds(task_runs):
    ids = task_runs.runs.loc[task_runs.runs["scheduler"] == "step", "run_id"]
    band = curves.seed_band(task_runs, ids, "test/err")
    assert band.loc[1].tolist() == [31.0, 30.0, 32.0, 2]
    assert band.loc[EPOCHS].tolist() == [17.0, 16.0, 18.0, 2]


def test_zoom_range_covers_the_last_fraction():
    assert curves.zoom_range(200) == (150, 200)
    assert curves.zoom_range(10) == (7, 10)  # ceil(2.5) = 3 epochs
    with pytest.raises(ValueError, match=r"zoom fraction 0 .*\(0, 1\]"):
        curves.zoom_range(10, fraction=0)


def test_task_figure_panels_lines_colours_and_bands(task_runs):
    fig = curves.task_figure(task_runs, title="cifar10/resnet18")
    panels = axes_by_title(fig)
    assert set(panels) == {
        "learning rate", "test loss", "test error", "training loss",
        "test loss, last 25 %", "test error, last 25 %",
    }  # fmt: skip
    assert all(ax.get_xlabel() == "epoch" for ax in fig.axes)
    assert panels["test error"].get_ylabel() == "error (%)"
    entries = legend_entries(fig)  # the diverged step run draws nothing
    assert list(entries) == [
        "Cosine", "Step", "AutoDrop", "line: mean over seeds", "band: min-max over seeds",
    ]  # fmt: skip
    for label in ("cosine", "step", "autodrop"):
        assert to_hex(entries[display_name(label)].get_color()) == schedule_color(label)
    assert_camera_ready(fig, ["Cosine", "Step", "AutoDrop"])
    for ax in fig.axes:  # one mean line per schedule, a band only where there are 2 seeds
        assert len(ax.get_lines()) == 3
        assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 2
    step_line = panels["test error"].get_lines()[1]
    np.testing.assert_allclose(step_line.get_ydata(), [31.0 - 2 * e for e in range(EPOCHS)])
    band = panels["test error"].collections[0]  # step's band spans min..max of its two seeds
    extent = band.get_paths()[0].get_extents()
    assert (extent.y0, extent.y1) == (16.0, 32.0)
    plt.close(fig)


def test_zoom_panels_show_the_last_quarter_of_training(task_runs):
    fig = curves.task_figure(task_runs, title="cifar10/resnet18")
    zoom = axes_by_title(fig)["test error, last 25 %"]
    assert zoom.get_xlim() == (6.0, 8.0)
    low, high = zoom.get_ylim()
    # values within epochs 6..8: autodrop seed 1 reaches 29 - 17.5 - 1 = 10.5, step max is 22
    assert low < 10.5 < 22.0 < high and high - low < 13.0
    plt.close(fig)


def test_fixed_lr_angle_figure_one_line_per_lr(runs_dir):
    runs = load_runs(runs_dir, experiment="paper/fixed_lr").finished()
    fig = curves.fixed_lr_angle_figure(runs, title="fixed lr")
    loss_ax, angle_ax = fig.axes
    assert loss_ax.get_ylabel() == "training loss" and loss_ax.get_yscale() == "log"
    assert angle_ax.get_ylabel() == "angular velocity (degrees)"
    assert angle_ax.get_legend_handles_labels()[1] == ["lr=0.1", "lr=0.01"]
    assert_camera_ready(fig, ["lr=0.1", "lr=0.01"])
    lines = angle_ax.get_lines()
    np.testing.assert_allclose(lines[0].get_xdata(), [3, 4, 5])  # null for the first two epochs
    np.testing.assert_allclose(lines[1].get_ydata(), [20.0, 35.0, 45.0])
    assert to_hex(lines[0].get_color()) != to_hex(lines[1].get_color())
    plt.close(fig)


def test_autodrop_trace_figure_omega_smoothed_lr_and_drop_lines(task_runs):
    autodrop = task_runs.runs.loc[task_runs.runs["scheduler"] == "autodrop", "run_id"]
    fig = curves.autodrop_trace_figure(task_runs.subset(autodrop[:1]), title="trace")
    omega_ax, lr_ax = fig.axes
    assert omega_ax.get_legend_handles_labels()[1] == [
        "AutoDrop seed=0: omega",
        "AutoDrop seed=0: smoothed",
    ]
    smoothed = omega_ax.get_lines()[1]  # one line: windows without a value are left out
    np.testing.assert_allclose(smoothed.get_xdata(), [50 + 10 * i for i in range(8)])
    assert not np.isnan(np.asarray(smoothed.get_ydata(), dtype=float)).any()
    assert list(legend_entries(fig)) == [  # what each colour and each line style is
        "AutoDrop, seed 0",
        "thin: omega, the angle of each measurement",
        "thick: AutoDrop's smoothed omega",
        "steps: learning rate (bottom panel)",
        "lr drop",
    ]
    assert lr_ax.get_yscale() == "log" and lr_ax.get_xlabel() == "optimizer step"
    for ax in (omega_ax, lr_ax):  # axvline: a line with constant x = the drop step
        verticals = [line for line in ax.get_lines() if len(set(line.get_xdata())) == 1]
        assert sorted(line.get_xdata()[0] for line in verticals) == [40, 80]
    lr_line = lr_ax.get_lines()[0]
    assert lr_line.get_ydata()[-1] == pytest.approx(0.025)
    plt.close(fig)


EXPECTED_FIGURES = {  # one task: no performance profile
    "fig_task_cifar10-resnet18": 6,
    "fig3_fixed_lr_angle": 2,
    "fig_autodrop_trace_cifar10-resnet18": 2,
}


def test_make_all_figures_draws_each_figure_under_its_name(runs_dir, tmp_path, monkeypatch, capsys):
    drawn = {}

    def record(fig, out_dir, name):  # stands in for save_figure: rendering files is slow
        drawn[name] = len(fig.axes)
        plt.close(fig)
        return [Path(out_dir) / f"{name}.png"]

    monkeypatch.setattr(curves, "save_figure", record)
    monkeypatch.setattr(summary, "save_figure", record)
    paths = curves.make_all_figures(runs_dir, tmp_path)
    assert drawn == EXPECTED_FIGURES
    assert sorted(path.stem for path in paths) == sorted(EXPECTED_FIGURES)
    assert plt.get_fignums() == []
    assert "no performance profile: the runs cover 1 task(s), it needs >= 3" in (
        capsys.readouterr().err
    )


@pytest.mark.slow
def test_make_all_figures_writes_png_and_pdf(runs_dir, tmp_path):
    paths = curves.make_all_figures(runs_dir, tmp_path)
    assert sorted(path.name for path in paths) == sorted(
        f"{stem}.{ext}" for stem in EXPECTED_FIGURES for ext in ("png", "pdf")
    )
    assert all(path.stat().st_size > 1000 for path in paths)
    assert plt.get_fignums() == []  # saved figures are closed


def test_cli_reports_missing_runs(tmp_path, capsys):
    for figures in ("curves", "summary"):
        argv = [figures, "--runs", str(tmp_path / "none"), "--out", str(tmp_path)]
        assert figures_command.main(argv) == 2
        assert "experiments.train" in capsys.readouterr().err


def scores_frame() -> pd.DataFrame:
    """IQMs of two schedules on two tasks: a is best on t1, b 1 point better on t2."""
    return pd.DataFrame(
        {
            "row": ["t1", "t1", "t2", "t2"],
            "scheduler": ["autodrop", "step", "autodrop", "step"],
            "iqm": [1.0, 3.0, 5.0, 4.0],
        }
    )


def test_performance_profile_figure_one_step_line_per_schedule():
    fig = summary.performance_profile_figure(scores_frame(), "profile")
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"AutoDrop", "Step"}
    assert to_hex(lines["AutoDrop"].get_color()) == schedule_color("autodrop")
    x, y = (np.asarray(v) for v in lines["AutoDrop"].get_data())
    assert y[0] == 0.5 and y[-1] == 1.0  # best on one of two tasks; 1 point behind on t2
    assert x[np.argmax(y == 1.0)] >= 1.0
    assert lines["Step"].get_data()[1][0] == 0.5
    assert_camera_ready(fig, ["AutoDrop", "Step"])
    plt.close(fig)


def test_lr_sensitivity_figure_log_x_one_line_per_schedule():
    values = pd.DataFrame(
        {
            "row": "digits/resnet8",
            "scheduler": ["step", "step", "autodrop", "autodrop"],
            "lr": [0.0125, 0.2, 0.0125, 0.2],
            "mean": [4.0, 2.0, 3.0, 2.5],
            "std": [0.5, float("nan"), 0.1, 0.2],
            "n": [3, 1, 3, 3],
        }
    )
    fig = summary.lr_sensitivity_figure(values, "lr")
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    lines = {bars.get_label(): bars.lines[0] for bars in ax.containers}
    assert set(lines) == {"Step", "AutoDrop"}
    assert list(lines["Step"].get_data()[0]) == [0.0125, 0.2]
    assert list(lines["Step"].get_data()[1]) == [4.0, 2.0]
    plt.close(fig)


def test_the_same_figure_is_the_same_file(tmp_path):
    def draw():
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([1, 2, 3], [3, 1, 2])
        return fig

    first = save_figure(draw(), tmp_path / "a", "fig")
    second = save_figure(draw(), tmp_path / "b", "fig")
    for one, other in zip(first, second, strict=True):
        assert one.read_bytes() == other.read_bytes(), one.name
    assert b"CreationDate" not in first[1].read_bytes()


def test_autodrop_v1_change_of_angle_has_its_own_axis(runs_dir, tmp_path):
    v1_trace = [
        {"step": 10 * e, "omega": 88.0 + e % 2, "smoothed": None if e < 2 else 0.1 * (-1) ** e,
         "lr": 0.1, "dropped": False}
        for e in range(1, 7)
    ]  # fmt: skip
    write_fake_run(
        tmp_path, experiment="x", scheduler="autodrop_v1", seed=0, test_errs=[30.0] * 6,
        trace=v1_trace, **COMMON,
    )  # fmt: skip
    runs = load_runs(tmp_path).finished()
    fig = curves.autodrop_trace_figure(runs, title="trace")
    omega_ax, diff_ax, lr_ax = fig.axes
    assert "angle change" in diff_ax.get_ylabel() and lr_ax.get_yscale() == "log"
    (diff_line,) = [line for line in diff_ax.get_lines() if line.get_label()[0] != "_"]
    np.testing.assert_allclose(diff_line.get_ydata(), [0.1, -0.1, 0.1, -0.1, 0.1])
    assert [line.get_label() for line in omega_ax.get_lines()] == [
        "AutoDrop (2021 code) seed=0: omega"
    ]
    plt.close(fig)


def test_theory_figures_are_camera_ready():
    from scripts.analysis import nqm

    fixed = nqm.simulate_fixed_lr(list(nqm.FIG1_LRS), iterations=100, seed=0)
    fig1 = theory.fig1_nqm_fixed_lr(fixed, window=10)
    assert_camera_ready(fig1, [f"lr = {lr:g}" for lr in nqm.FIG1_LRS])
    assert "limiting angle (Theorem 3.2)" in legend_entries(fig1)
    references = nqm.simulate_fixed_lr([0.06, 0.001], 100, seed=0)
    drop_rule = nqm.simulate_drop_rule(iterations=100, seed=0)
    fig2 = theory.fig2_nqm_drop_rule(drop_rule, references)
    assert_camera_ready(fig2, ["drop rule", "fixed lr = 0.06", "fixed lr = 0.001"])
    fig4 = theory.fig4_velocity_model(iterations=200)
    assert_camera_ready(fig4, [f"lr = {lr:g}" for lr in nqm.FIG1_LRS])
    fig5 = theory.fig5_idealised_algorithm(theory.idealised_run(num_drops=2))
    assert_camera_ready(fig5, ["v(t)"])
    assert {"limit of v(t) at the current lr", "lr drop"} <= set(legend_entries(fig5))
    for fig in (fig1, fig2, fig4, fig5):
        plt.close(fig)


def profile_runs(root: Path, tasks: int) -> Path:
    for index, model in enumerate(["resnet18", "resnet34", "wrn40_10"][:tasks]):
        for scheduler, offset in (("step", 1.0), ("autodrop", 0.0)):
            write_fake_run(
                root, experiment="paper/x", dataset="cifar10", model=model, seed=0,
                scheduler=scheduler, test_errs=[20.0, 10.0 + offset + index],
            )  # fmt: skip
    return root


def test_performance_profile_only_from_3_tasks(tmp_path, capsys):
    two = summary.make_summary_figures(
        load_runs(profile_runs(tmp_path / "two", 2)).finished(), tmp_path / "out2"
    )
    assert two == [] and not (tmp_path / "out2").exists()
    assert "no performance profile: the runs cover 2 task(s)" in capsys.readouterr().err
    three = summary.make_summary_figures(
        load_runs(profile_runs(tmp_path / "three", 3)).finished(), tmp_path / "out3"
    )
    assert sorted(path.name for path in three) == [
        "fig_performance_profile.pdf",
        "fig_performance_profile.png",
    ]
    assert capsys.readouterr().err == ""


def many_runs(root: Path) -> Path:
    """20 runs of one task: AutoDrop at 10 windows x 2 seeds, each with a trace."""
    for index, window in enumerate([2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]):
        for seed in range(2):
            write_fake_run(
                root, experiment="ablation/window", scheduler="autodrop", seed=seed,
                settings={"scheduler.window": window}, trace=trace({40, 80}),
                test_errs=[30.0 - 2 * e + 0.2 * index for e in range(EPOCHS)], **COMMON,
            )  # fmt: skip
    return root


@pytest.mark.parametrize("figure", ["task", "trace"])
def test_legends_stay_readable_at_20_runs(tmp_path, figure):
    """One entry per schedule label (not per run or per line), as many columns as the width
    holds, no entry twice, variants of one schedule in distinct shades of its colour."""
    runs = load_runs(many_runs(tmp_path)).finished()
    assert len(runs.runs) == 20
    if figure == "task":
        fig = curves.task_figure(runs, title="20 runs")
    else:
        fig = curves.autodrop_trace_figure(runs, title="20 runs")
    entries = legend_entries(fig)
    windows = [f"AutoDrop (window={w})" for w in (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)]
    if figure == "task":
        assert list(entries)[:10] == windows  # in the order of the values
    else:
        assert list(entries)[:10] == [f"{name}, seeds 0-1" for name in windows]
    assert len(entries) <= 10 + 5  # the labels, then the key to line styles and bands
    colors = [to_hex(entries[text].get_color()) for text in list(entries)[:10]]
    assert len(set(colors)) == 10
    assert_camera_ready(fig, list(entries)[:10])
    renderer = fig.canvas.get_renderer()
    legend_box = fig.legends[0].get_window_extent(renderer)
    figure_box = fig.get_window_extent(renderer)
    assert legend_box.width <= figure_box.width
    assert legend_box.height <= 0.25 * figure_box.height, (legend_box, figure_box)
    plt.close(fig)
