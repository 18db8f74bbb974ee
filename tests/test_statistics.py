"""Paired statistics, the interquartile mean, performance profiles and the lr-sensitivity table,
on run sets with a known true difference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scripts.analysis import report, statistics, tables
from scripts.analysis.runs import load_runs
from tests.fake_runs import write_fake_run

EXP = "paper/resnet18_cifar10"
TASK = "cifar10/resnet18"


def add_run(root: Path, scheduler: str, seed: int, minimum: float, **kwargs) -> Path:
    """A finished 3-epoch run whose minimum test error is ``minimum``."""
    settings = {"experiment": EXP, "dataset": "cifar10", "model": "resnet18"} | kwargs
    errors = [minimum + 2.0, minimum + 1.0, minimum]
    return write_fake_run(root, scheduler=scheduler, seed=seed, test_errs=errors, **settings)


def noise(seed: int, n: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.3, size=n)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    """8 seeds: autodrop is 2 points better than step (a large effect), cosine equals step in
    distribution (no effect; independent noise); onecycle lacks seed 7."""
    root = tmp_path_factory.mktemp("stats") / "runs"
    step = 10.0 + noise(1)
    for seed in range(8):
        add_run(root, "step", seed, step[seed])
        add_run(root, "autodrop", seed, step[seed] - 2.0 + noise(2)[seed] / 10)
        add_run(root, "cosine", seed, 10.0 + noise(3)[seed])
        if seed < 7:
            add_run(root, "onecycle", seed, step[seed] + 0.5)
    add_run(root, "onecycle", 7, 0.0, status="failed")  # never paired
    return root


@pytest.fixture(scope="module")
def comparisons(runs_dir) -> pd.DataFrame:
    return tables.comparisons(load_runs(runs_dir).finished()).values


def pick(frame: pd.DataFrame, schedule: str, baseline: str) -> pd.Series:
    chosen = frame[(frame["schedule"] == schedule) & (frame["baseline"] == baseline)]
    assert len(chosen) == 1, chosen
    return chosen.iloc[0]


def test_large_effect_has_an_interval_excluding_zero_and_the_exact_mean(runs_dir, comparisons):
    row = pick(comparisons, "autodrop", "step")
    runs = load_runs(runs_dir).runs.set_index(["scheduler", "seed"])["min_test_err"]
    expected = np.mean([runs["autodrop", s] - runs["step", s] for s in range(8)])
    assert row["n_pairs"] == 8
    assert row["mean_diff"] == pytest.approx(expected, abs=1e-12)
    assert row["mean_diff"] == pytest.approx(-2.0, abs=0.1)
    assert row["ci_low"] < row["mean_diff"] < row["ci_high"] < 0
    assert row["p_improve"] == 1.0


def test_no_effect_has_an_interval_covering_zero(comparisons):
    row = pick(comparisons, "cosine", "step")
    assert row["n_pairs"] == 8
    assert row["ci_low"] < 0 < row["ci_high"]
    assert 0.2 < row["p_improve"] < 0.8


def test_a_seed_missing_for_one_schedule_drops_that_pair(comparisons):
    row = pick(comparisons, "onecycle", "step")
    assert row["n_pairs"] == 7
    assert row["mean_diff"] == pytest.approx(0.5)
    # every difference is exactly 0.5: the bootstrap interval is that point
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.5, 0.5))


def test_every_schedule_meets_every_baseline_but_not_itself(comparisons):
    pairs = set(zip(comparisons["schedule"], comparisons["baseline"], strict=True))
    baselines = {"step", "cosine", "onecycle"}  # autodrop is a method, never a baseline
    schedules = baselines | {"autodrop"}
    assert pairs == {(s, b) for s in schedules for b in baselines if s != b}
    assert list(comparisons.columns) == list(statistics.COMPARISON_COLUMNS)
    assert set(comparisons["task"]) == {TASK}


def test_bootstrap_is_seeded_and_percentile():
    differences = np.array([-1.0, -0.4, 0.3, -0.8, -0.2])
    first = statistics.bootstrap_mean_ci(differences)
    assert first == statistics.bootstrap_mean_ci(differences)
    # the percentile interval lies within the range of the differences
    assert differences.min() <= first[0] < differences.mean() < first[1] <= differences.max()


def test_one_pair_has_no_interval_and_no_crash():
    frame = pd.DataFrame(
        {"row": "t", "scheduler": ["a", "b"], "seed": [0, 0], "min_test_err": [1.0, 3.0]}
    )
    row = statistics.compare(frame, "t", "a", "b")
    assert row["n_pairs"] == 1 and row["mean_diff"] == -2.0
    assert math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])
    assert row["p_improve"] == 1.0
    empty = statistics.compare(frame.assign(seed=[0, 1]), "t", "a", "b")
    assert empty["n_pairs"] == 0 and math.isnan(empty["mean_diff"])
    assert math.isnan(empty["p_improve"])


def test_p_improve_counts_all_seed_pairs_and_ties_half():
    # schedule (1, 2) vs baseline (1.5, 2): pairs 1<1.5, 1<2, 2>1.5, 2=2 -> (1 + 1 + 0 + 0.5) / 4
    value = statistics.probability_of_improvement(np.array([1.0, 2.0]), np.array([1.5, 2.0]))
    assert value == pytest.approx(2.5 / 4)


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match=r"lacks columns \['seed'\]"):
        statistics.comparisons(pd.DataFrame(columns=["row", "scheduler", "min_test_err"]), [])


def test_table2_marks_entries_worse_than_the_rows_best(runs_dir):
    table = tables.table2(load_runs(runs_dir).finished())
    cells = table.display.loc[TASK]
    assert not cells["AutoDrop"].endswith(tables.SIGNIFICANT_MARK)  # the best
    assert cells["Step"].endswith(tables.SIGNIFICANT_MARK)  # 2 points worse, 8 seeds
    assert cells["One-cycle"].endswith(tables.SIGNIFICANT_MARK)
    assert tables.SIGNIFICANT_MARK.strip() in table.note and "excludes 0" in table.note
    beside = tables.table2_vs_paper(table, tables.load_paper_table2()).display.loc[TASK]
    assert beside["Step (ours)"].endswith(tables.SIGNIFICANT_MARK)
    assert not beside["AutoDrop (ours)"].endswith(tables.SIGNIFICANT_MARK)


def test_table2_marks_nothing_when_no_difference_is_clear(tmp_path):
    for seed, (a, b) in enumerate([(5.0, 5.5), (6.0, 5.0), (5.5, 5.6)]):
        add_run(tmp_path, "autodrop", seed, a)
        add_run(tmp_path, "step", seed, b)
    table = tables.table2(load_runs(tmp_path).finished())
    assert not any(cell.endswith(tables.SIGNIFICANT_MARK) for cell in table.display.loc[TASK])
    assert "excludes 0" not in table.note


def test_aggregate_writes_comparisons_with_the_same_columns_in_every_format(runs_dir, tmp_path):
    report.aggregate(load_runs(runs_dir), tmp_path)
    folder = tmp_path / "tables"
    columns = list(statistics.COMPARISON_COLUMNS)
    assert list(pd.read_csv(folder / "comparisons.csv").columns) == columns
    header = (folder / "comparisons.md").read_text().splitlines()[0]
    assert [cell.strip() for cell in header.strip("|").split("|")] == columns
    latex = (folder / "comparisons.tex").read_text()
    assert " & ".join(c.replace("_", r"\_") for c in columns) in latex
    assert r"$\dagger$" in (folder / "table2.tex").read_text()
    assert (folder / "iqm.md").is_file()


def test_interquartile_mean_trims_a_quarter_at_each_end():
    frame = pd.DataFrame(
        {
            "row": "t",
            "scheduler": ["a"] * 4 + ["b"] * 3,
            "seed": [0, 1, 2, 3, 0, 1, 2],
            "min_test_err": [1.0, 2.0, 3.0, 100.0, 1.0, 2.0, 6.0],
        }
    )
    iqm = statistics.interquartile_means(frame).set_index("scheduler")
    assert iqm.loc["a", "iqm"] == 2.5 and iqm.loc["a", "n"] == 4  # mean of 2 and 3
    assert iqm.loc["b", "iqm"] == 3.0  # 3 seeds: nothing trimmed


def test_iqm_table_has_one_cell_per_task_and_schedule(runs_dir):
    table = tables.iqm_table(load_runs(runs_dir).finished())
    assert table.display.loc[TASK, "One-cycle"].endswith("(7)")
    assert set(table.values["scheduler"]) == {"autodrop", "step", "cosine", "onecycle"}


def test_performance_profile_counts_tasks_within_x_of_the_best():
    scores = pd.DataFrame(
        {
            "row": ["t1", "t1", "t2", "t2", "t3"],
            "scheduler": ["a", "b", "a", "b", "a"],
            "iqm": [1.0, 1.5, 3.0, 2.0, 4.0],
        }
    )
    profile = statistics.performance_profile(scores, [0.0, 0.5, 1.0])
    fraction = profile.set_index(["scheduler", "x"])["fraction"]
    assert fraction["a", 0.0] == pytest.approx(2 / 3)  # best on t1 and t3
    assert fraction["a", 1.0] == 1.0
    assert fraction["b", 0.0] == pytest.approx(1 / 3)
    assert fraction["b", 1.0] == pytest.approx(2 / 3)  # no score on t3: never within


def test_lr_sensitivity_table_reads_the_lr_from_the_recorded_config(tmp_path):
    config = {
        "lr_sweep": {"base_lr": 0.05, "multiplier": 1.0},
        "optimizer": {"lr": "${mul:${lr_sweep.base_lr},${lr_sweep.multiplier}}"},
    }
    for multiplier in (0.25, 4.0):
        for seed in (0, 1):
            add_run(
                tmp_path,
                "step",
                seed,
                5.0 * multiplier + seed,
                experiment="ablation/lr_sensitivity",
                settings={"lr_sweep.multiplier": multiplier},
                config=config | {"lr_sweep": {"base_lr": 0.05, "multiplier": multiplier}},
            )
    runs = load_runs(tmp_path).finished()
    assert sorted(set(runs.runs["optimizer_lr"])) == [0.0125, 0.2]
    table = tables.lr_sensitivity(runs)
    assert list(table.display.columns) == ["lr=0.0125", "lr=0.2"]
    assert table.display.loc[(TASK, "Step"), "lr=0.2"] == "20.50 ± 0.71 (2)"
    assert not tables.ablation_tables(runs)  # the lr study is not an ablation table


def test_lr_sensitivity_runs_without_a_recorded_lr_are_an_error(tmp_path):
    add_run(tmp_path, "step", 0, 5.0, settings={"lr_sweep.multiplier": 2})
    with pytest.raises(ValueError, match="record no optimizer.lr"):
        tables.lr_sensitivity(load_runs(tmp_path).finished())
