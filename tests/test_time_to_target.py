"""The honest protocol's results: Table 2 at the best validation epoch, validation targets and
time to target (a miss counted as a miss), its performance profile, and the figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.rundir import best_validation, read_records
from scripts import aggregate as aggregate_cli
from scripts import targets as targets_cli
from scripts.analysis import report, tables
from scripts.analysis import time_to_target as ttt
from scripts.analysis.figures import curves, summary
from scripts.analysis.runs import load_runs
from tests.fake_runs import write_fake_run

EXPERIMENT, TASK = "honest/digits", "digits/resnet8"
STEPS, SECONDS = 10, 0.01  # per epoch: 10 steps, 0.1 training seconds
# Validation errors per seed. step reaches 3.0 at epochs 3, 3, 2, 4 and misses once; its
# minimum validation errors 2, 3, 2, 3, 4 have the median 3.0 (the target).
VAL = {
    "step": [[6, 4, 3, 2], [6, 5, 3, 3], [5, 3, 2, 2], [6, 5, 4, 3], [6, 5, 4, 4]],
    "cosine": [[5, 4, 3, 3], [5, 4, 4, 4], [5, 5, 5, 5], [5, 4, 4, 4], [6, 6, 6, 6]],
    "autodrop": [[3, 3, 3, 3]] * 5,
}
# Test errors: the minimum (the paper's number) and the test error at the best validation epoch
# (the honest one) rank step and cosine differently.
TEST = {
    "step": [[9, 8, 1, 7]] * 5,
    "cosine": [[3, 2, 2, 2]] * 5,
    "autodrop": [[7, 7, 7, 7]] * 5,
}


def target(val_err: float = 3.0, fingerprint: str = "fake") -> ttt.Target:
    return ttt.Target(EXPERIMENT, TASK, val_err, "step", 5, 360, fingerprint)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("honest") / "runs"
    for name, curves_per_seed in VAL.items():
        for seed, val_errs in enumerate(curves_per_seed):
            write_fake_run(
                root,
                experiment=EXPERIMENT,
                dataset="digits",
                model="resnet8",
                scheduler=name,
                seed=seed,
                test_errs=TEST[name][seed],
                val_errs=val_errs,
                steps_per_epoch=STEPS,
                time_per_iter_s=SECONDS,
            )
    write_fake_run(  # the paper's protocol: no split, so no honest number and no target
        root, experiment=EXPERIMENT, dataset="digits", model="resnet8", scheduler="step",
        seed=9, test_errs=[5.0, 4.0], changes={"protocol": "paper"},
    )  # fmt: skip
    return root


@pytest.fixture(scope="module")
def runs(runs_dir):
    return load_runs(runs_dir).finished()


def test_the_honest_number_is_the_test_error_at_the_best_validation_epoch(runs_dir, runs):
    row = runs.runs.set_index("run_id").loc[f"{EXPERIMENT}/{TASK.replace('/', '-')}/step/seed=0"]
    records = read_records(runs_dir / row.name / "metrics.jsonl")
    best = best_validation(records)
    assert (row["min_val_err"], row["best_val_epoch"]) == (2.0, 4) == (best["val/err"], 4)
    assert row["test_err_at_best_val"] == records[3]["test/err"] == 7.0
    assert row["min_test_err"] == 1.0  # the paper's protocol takes the test set's best epoch
    assert row["val_size"] == 360 and row["val_fingerprint"] == "fake"


def test_table2_honest_ranks_by_the_test_error_at_the_best_validation_epoch(runs):
    paper, honest = tables.table2(runs), tables.table2_honest(runs)
    assert paper.caption.startswith("Paper's protocol")
    assert honest.caption.startswith("Honest protocol") and "360 training images" in honest.caption
    # The paper's protocol ranks step (minimum test error 1.0) before cosine (2.0); the honest
    # one ranks cosine (2.4) before step (3.4): the test errors at each seed's best epoch.
    paper_cells = paper.display.loc[TASK]
    assert paper_cells["Step"].startswith("1.00 ± 0.00 (5)")
    assert paper_cells["Cosine"].startswith("2.00 ± 0.00 (5)")
    honest_cells = honest.display.loc[TASK]
    chosen = [7.0, 1.0, 1.0, 7.0, 1.0]  # best epochs 4, 3, 3, 4, 3 (ties: the earlier epoch)
    assert honest_cells["Step"].startswith(
        f"{np.mean(chosen):.2f} ± {np.std(chosen, ddof=1):.2f} (5)"
    )
    cosine = [2.0, 2.0, 3.0, 2.0, 3.0]  # best epochs 3, 2, 1, 2, 1
    assert honest_cells["Cosine"].startswith(
        f"{np.mean(cosine):.2f} ± {np.std(cosine, ddof=1):.2f}"
    )
    # The run without a split is a setup of its own in the paper's table, absent from the honest.
    assert any("protocol=paper" in column for column in paper.display.columns)
    assert not any("protocol=paper" in column for column in honest.display.columns)


def test_a_run_that_never_reaches_the_target_is_a_miss(runs):
    times = ttt.times_to_target(runs.runs, runs.metrics, [target()])
    step = times[times["scheduler"] == "step"].sort_values("seed")
    assert step["reached"].tolist() == [True, True, True, True, False]
    assert step["epochs"].tolist() == [3, 3, 2, 4, math.inf]
    assert step["steps"].tolist() == [30, 30, 20, 40, math.inf]
    np.testing.assert_allclose(step["train_s"].iloc[:4], [0.3, 0.3, 0.2, 0.4])
    assert math.isinf(step["train_s"].iloc[4])
    assert len(times) == 15  # the run without a validation split has no target


def test_the_median_over_seeds_counts_misses_as_infinite(runs):
    per_task = ttt.per_task(ttt.times_to_target(runs.runs, runs.metrics, [target()]))
    by_schedule = per_task.set_index("scheduler")
    assert by_schedule.loc["step", ["n", "reached", "epochs", "steps"]].tolist() == [5, 4, 3, 30]
    assert by_schedule.loc["cosine", "reached"] == 1 and math.isinf(
        by_schedule.loc["cosine", "steps"]
    )
    assert by_schedule.loc["autodrop", "steps"] == 10


def test_time_to_target_table_shows_misses_and_says_the_profile_needs_three_tasks(runs):
    table = tables.time_to_target(runs, [target()])
    assert table.caption.startswith("Honest protocol")
    cells = table.display.loc[TASK]
    assert cells.loc["Step"].tolist() == ["3.00", "4/5", "3", "30", "0.3"]
    assert cells.loc["Cosine"].tolist() == ["3.00", "1/5", *["not reached"] * 3]
    assert cells.loc["AutoDrop"].tolist()[1:4] == ["5/5", "1", "10"]
    assert "needs >= 3 tasks with a target, here 1" in table.note
    assert tables.time_to_target(runs, [target(fingerprint="another split")]) is None


def test_targets_are_the_median_of_the_reference_and_round_trip_through_the_file(
    runs_dir, tmp_path, capsys
):
    (computed,) = ttt.compute_targets(load_runs(runs_dir))
    assert computed == target()  # the median of step's minimum validation errors 2, 3, 2, 3, 4
    path = tmp_path / "targets.yaml"
    assert targets_cli.main(["--runs", str(runs_dir), "--write", "--targets", str(path)]) == 0
    assert "target validation error 3 %" in capsys.readouterr().out
    other = ttt.Target("other/x", "cifar10/resnet18", 7.5, "step", 4, 5000, "abc")
    ttt.write_targets([other], path)  # adds, keeps the earlier one
    assert ttt.load_targets(path) == [computed, other]
    assert targets_cli.main(["--runs", str(runs_dir), "--reference", "onecycle"]) == 2


def test_aggregate_writes_both_protocols_and_time_to_target(runs_dir, tmp_path):
    path = ttt.write_targets([target()], tmp_path / "targets.yaml")
    out = tmp_path / "out"
    assert (
        aggregate_cli.main(["--runs", str(runs_dir), "--out", str(out), "--targets", str(path)])
        == 0
    )
    written = {p.name for p in (out / "tables").iterdir()}
    assert {"table2.md", "table2_honest.md", "time_to_target.md"} <= written
    text = (out / "tables" / "time_to_target.md").read_text()
    assert "not reached" in text and "1/5" in text
    assert [t.name for t in report.build_tables(load_runs(runs_dir), targets=[])][:2] == [
        "table2",
        "table2_honest",
    ]


def test_aggregate_says_which_split_has_no_target_and_how_to_write_one(runs_dir, tmp_path, capsys):
    # A target set on another split of the task (the fingerprint differs) is never used.
    path = ttt.write_targets([target(fingerprint="another split")], tmp_path / "targets.yaml")
    out = tmp_path / "out"
    argv = ["--runs", str(runs_dir), "--out", str(out), "--targets", str(path)]
    assert aggregate_cli.main(argv) == 0
    assert not (out / "tables" / "time_to_target.md").exists()
    printed = capsys.readouterr().out
    assert (
        f"note: no time to target for {EXPERIMENT} {TASK} (validation split 360, fake)" in printed
    )
    assert (
        f"python -m scripts.targets --runs {runs_dir} --experiment {EXPERIMENT} --write" in printed
    )
    ttt.write_targets([target()], path)  # with its target: no note
    assert aggregate_cli.main(argv) == 0
    assert "note: no time to target" not in capsys.readouterr().out


def test_performance_profile_over_time_to_target():
    per_task = pd.DataFrame(
        {
            "row": ["a", "a", "b", "b", "c", "c"],
            "scheduler": ["step", "autodrop"] * 3,
            "steps": [10.0, 20.0, 30.0, 15.0, math.inf, 40.0],
        }
    )
    frame = ttt.profile(per_task, "steps", np.array([1.0, 2.0, 4.0]))
    fractions = frame.pivot(index="ratio", columns="scheduler", values="fraction")
    # step: fastest on a, 2x on b, missed c; autodrop: 2x on a, fastest on b and c
    assert fractions["step"].tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    assert fractions["autodrop"].tolist() == pytest.approx([2 / 3, 1.0, 1.0])


def test_the_time_to_target_profile_is_drawn_from_three_tasks_only(runs_dir, tmp_path):
    runs = load_runs(runs_dir).finished()
    assert not any(
        p.stem == "fig_time_to_target_profile"
        for p in summary.make_summary_figures(runs, tmp_path / "one", targets=[target()])
    )
    root = tmp_path / "three"
    tasks = [("digits", "resnet8"), ("digits", "resnet20"), ("cifar10", "resnet8")]
    for dataset, model in tasks:
        for name, curves_per_seed in VAL.items():
            write_fake_run(
                root, experiment=EXPERIMENT, dataset=dataset, model=model, scheduler=name,
                seed=0, test_errs=[5, 5, 5, 5], val_errs=curves_per_seed[0],
            )  # fmt: skip
    targets = [ttt.Target(EXPERIMENT, f"{d}/{m}", 3.0, "step", 1, 360, "fake") for d, m in tasks]
    paths = summary.make_summary_figures(
        load_runs(root).finished(), tmp_path / "out", targets=targets
    )
    assert {p.name for p in paths} >= {"fig_time_to_target_profile.png"}


def test_the_task_figure_shows_validation_beside_test_and_the_target(runs):
    fig = curves.task_figure(runs, title=TASK, target=3.0)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles.index("validation error") + 1 == titles.index("test error")
    assert titles.index("validation loss") + 1 == titles.index("test loss")
    (val_ax,) = [ax for ax in fig.axes if ax.get_title() == "validation error"]
    assert any(list(line.get_ydata()) == [3.0, 3.0] for line in val_ax.get_lines())
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert curves.TARGET_LABEL in legend


def test_tables_say_which_split_a_metric_driven_schedule_read(tmp_path):
    common = {"dataset": "digits", "model": "resnet8", "seed": 0, "test_errs": [4.0, 3.0]}
    write_fake_run(tmp_path, experiment="a", scheduler="plateau", metric_source="test", **common)
    write_fake_run(
        tmp_path, experiment="b", scheduler="plateau", metric_source="val",
        val_errs=[5.0, 4.0], **common,
    )  # fmt: skip
    runs = load_runs(tmp_path).finished()
    assert "Plateau decided its drops on the test loss (no validation split)" in (
        tables.table2(runs.subset(runs.runs.loc[runs.runs["experiment"] == "a", "run_id"])).note
    )
    honest = tables.table2_honest(runs)
    assert "Plateau decided its drops on the validation loss" in honest.note
