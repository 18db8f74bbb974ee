"""Paired statistics, the interquartile mean, performance profiles and the lr-sensitivity table,
on run sets with a known true difference."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

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
    differences = [runs["autodrop", s] - runs["step", s] for s in range(8)]
    assert row["n_pairs"] == 8
    assert row["mean_diff"] == pytest.approx(np.mean(differences), abs=1e-12)
    assert row["mean_diff"] == pytest.approx(-2.0, abs=0.1)
    assert row["ci_low"] < row["mean_diff"] < row["ci_high"] < 0
    assert row["p_value"] < 1e-6 and row["significant"]
    assert row["p_improve"] == 1.0


def test_no_effect_has_an_interval_covering_zero(comparisons):
    row = pick(comparisons, "step", "cosine")  # cosine comes first in Table 2's order
    assert row["n_pairs"] == 8
    assert row["ci_low"] < 0 < row["ci_high"]
    assert row["p_value"] > 0.05 and not row["significant"]
    assert 0.2 < row["p_improve"] < 0.8


def test_a_seed_missing_for_one_schedule_drops_that_pair(comparisons):
    row = pick(comparisons, "step", "onecycle")
    assert row["n_pairs"] == 7
    assert row["mean_diff"] == pytest.approx(-0.5)
    # every difference is exactly -0.5: no spread, no interval; the exact sign-flip p value
    assert math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])
    assert row["p_value"] == pytest.approx(2 * 0.5**7)


def test_each_pair_once_later_schedule_minus_earlier(comparisons):
    order = ["onecycle", "cosine", "step", "autodrop"]  # Table 2's column order
    pairs = list(zip(comparisons["schedule"], comparisons["baseline"], strict=True))
    assert pairs == [(order[j], order[i]) for i in range(4) for j in range(i + 1, 4)]
    assert "autodrop" not in set(comparisons["baseline"])  # listed last: always the schedule
    assert list(comparisons.columns) == list(statistics.COMPARISON_COLUMNS)
    assert set(comparisons["task"]) == {TASK}


def test_t_interval_and_p_value_are_students_on_the_paired_differences():
    differences = np.array([-1.0, -0.4, 0.3, -0.8, -0.2])
    test = statistics.paired_t_test(differences)
    reference = stats.ttest_1samp(differences, 0.0)
    interval = reference.confidence_interval(0.95)
    assert (test.low, test.high) == pytest.approx((interval.low, interval.high), rel=1e-10)
    assert test.p_value == pytest.approx(reference.pvalue, rel=1e-10)
    assert test.n == 5 and test.mean == pytest.approx(differences.mean())
    # vectorised over leading axes; NaN is a seed without a pair
    batch = np.array([differences, [*differences[:3], np.nan, np.nan]])
    both = statistics.paired_t_test(batch)
    assert both.n.tolist() == [5, 3]
    assert both.p_value[0] == pytest.approx(reference.pvalue, rel=1e-10)
    assert both.p_value[1] == pytest.approx(stats.ttest_1samp(differences[:3], 0).pvalue)


def test_resolution_is_the_lattice_step_of_the_values():
    one_example = 100 / 360
    errors = np.array([4, 5, 7, 3, np.nan]) * one_example  # as stored: float noise included
    assert statistics.resolution(errors) == pytest.approx(one_example)
    assert statistics.resolution(np.array([4, 6, 10]) * one_example) == pytest.approx(
        2 * one_example
    )  # no two values one example apart: a coarser step, a more cautious test
    assert statistics.resolution(np.random.default_rng(0).normal(size=10)) == 0.0
    assert statistics.resolution(np.array([1.5, 1.5])) == 0.0
    batch = statistics.resolution(np.array([[0.0, 0.25, 1.0], [0.0, 0.3, 1.0]]))
    assert batch.tolist() == [0.25, 0.0]


def test_continuity_correction_shrinks_the_mean_by_half_a_step_over_n():
    differences = np.array([0.5, 1.0, 0.0, 0.5, 1.5, 0.5])
    step, n = 0.5, 6
    corrected = statistics.paired_t_test(differences, step)
    shrunk = differences - np.sign(differences.mean()) * step / (2 * n)
    reference = stats.ttest_1samp(shrunk, 0.0)
    assert corrected.p_value == pytest.approx(reference.pvalue, rel=1e-10)
    assert corrected.mean == pytest.approx(differences.mean())
    half = reference.confidence_interval(0.95).high - shrunk.mean() + step / (2 * n)
    assert (corrected.low, corrected.high) == pytest.approx(
        (differences.mean() - half, differences.mean() + half)
    )
    # the interval excludes 0 exactly when p < 0.05, on a lattice as without one
    rng = np.random.default_rng(0)
    samples = rng.integers(-2, 4, size=(4000, 6)) * step
    test = statistics.paired_t_test(samples, step)
    defined = ~np.isnan(test.low)
    excludes = (test.low > 0) | (test.high < 0)
    assert (excludes == (test.p_value < 0.05))[defined].all()
    assert 0 < excludes[defined].mean() < 1


def test_equal_differences_have_no_interval_and_the_exact_sign_flip_p_value():
    one_example = 100 / 360  # one digits test example, in points of error
    for n in (3, 5, 6, 10):
        test = statistics.paired_t_test(np.full(n, one_example))
        assert math.isnan(test.low) and math.isnan(test.high)  # never a zero-width interval
        assert test.p_value == pytest.approx(2 * 0.5**n)
    zeros = statistics.paired_t_test(np.zeros(5))
    assert zeros.mean == 0 and zeros.p_value == 1.0
    # float noise is not spread: these are the same difference of one example, as minimum test
    # errors stored by two runs give it (1.6666666666666714 - 1.3888888888888857 and so on)
    noisy = np.array([6, 5, 4, 7, 5]) * one_example - np.array([5, 4, 3, 6, 4]) * one_example
    assert np.ptp(noisy) > 0
    assert statistics.paired_t_test(noisy).p_value == pytest.approx(2 * 0.5**5)


def test_one_pair_has_no_interval_and_no_crash():
    frame = pd.DataFrame(
        {"row": "t", "scheduler": ["a", "b"], "seed": [0, 0], "min_test_err": [1.0, 3.0]}
    )
    row = statistics.compare(frame, "t", "a", "b")
    assert row["n_pairs"] == 1 and row["mean_diff"] == -2.0
    assert math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])
    assert math.isnan(row["p_value"]) and not row["significant"]
    assert row["p_improve"] == 1.0
    empty = statistics.compare(frame.assign(seed=[0, 1]), "t", "a", "b")
    assert empty["n_pairs"] == 0 and math.isnan(empty["mean_diff"])
    assert math.isnan(empty["p_improve"])


def test_several_runs_of_one_seed_are_an_error():
    frame = pd.DataFrame(
        {"row": "t", "scheduler": ["a", "a", "b"], "seed": [0, 0, 0], "min_test_err": 1.0}
    )
    with pytest.raises(ValueError, match="t: schedule 'a' has several runs of one seed"):
        statistics.comparisons(frame)


def test_no_finished_value_gives_empty_frames():
    empty = pd.DataFrame(columns=["row", "scheduler", "seed", "min_test_err"])
    for frame in (statistics.comparisons(empty), statistics.versus_best(empty)):
        assert frame.empty and list(frame.columns) == list(statistics.COMPARISON_COLUMNS)


def test_holm_adjusts_step_down_and_leaves_out_nan():
    adjusted = statistics.holm(np.array([0.01, 0.04, np.nan, 0.03]))
    # sorted 0.01 x 3, 0.03 x 2, 0.04 x 1, each at least the one before
    np.testing.assert_allclose(adjusted, [0.03, 0.06, np.nan, 0.06])
    np.testing.assert_allclose(statistics.holm(np.array([[0.2], [0.01]])), [[0.2], [0.01]])


def test_p_improve_counts_all_seed_pairs_and_ties_half():
    # schedule (1, 2) vs baseline (1.5, 2): pairs 1<1.5, 1<2, 2>1.5, 2=2 -> (1 + 1 + 0 + 0.5) / 4
    value = statistics.probability_of_improvement(np.array([1.0, 2.0]), np.array([1.5, 2.0]))
    assert value == pytest.approx(2.5 / 4)


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match=r"lacks columns \['seed'\]"):
        statistics.comparisons(pd.DataFrame(columns=["row", "scheduler", "min_test_err"]))


def test_table2_marks_entries_worse_than_the_rows_best(runs_dir):
    table = tables.table2(load_runs(runs_dir).finished())
    cells = table.display.loc[TASK]
    assert not cells["AutoDrop"].endswith(tables.SIGNIFICANT_MARK)  # the best
    assert cells["Step"].endswith(tables.SIGNIFICANT_MARK)  # 2 points worse, 8 seeds
    assert cells["One-cycle"].endswith(tables.SIGNIFICANT_MARK)
    assert tables.SIGNIFICANT_MARK.strip() in table.note and "Holm" in table.note
    beside = tables.table2_vs_paper(table, tables.load_paper_table2()).display.loc[TASK]
    assert beside["Step (ours)"].endswith(tables.SIGNIFICANT_MARK)
    assert not beside["AutoDrop (ours)"].endswith(tables.SIGNIFICANT_MARK)


def test_table2_marks_agree_with_the_comparisons_table(runs_dir, comparisons):
    versus = statistics.versus_best(tables.plain_runs(load_runs(runs_dir).finished()))
    for row in versus.itertuples(index=False):  # the best is autodrop, listed last
        paired = pick(comparisons, row.baseline, row.schedule)
        assert row.significant == paired["significant"]
        assert row.mean_diff == pytest.approx(-paired["mean_diff"])
        assert (row.ci_low, row.ci_high) == pytest.approx((-paired["ci_high"], -paired["ci_low"]))


def test_table2_marks_nothing_when_no_difference_is_clear(tmp_path):
    for seed, (a, b) in enumerate([(5.0, 5.5), (6.0, 5.0), (5.5, 5.6), (5.2, 5.1), (5.9, 6.0)]):
        add_run(tmp_path, "autodrop", seed, a)
        add_run(tmp_path, "step", seed, b)
    table = tables.table2(load_runs(tmp_path).finished())
    assert not any(cell.endswith(tables.SIGNIFICANT_MARK) for cell in table.display.loc[TASK])
    assert table.note == ""


def test_table2_marks_nothing_below_5_seeds(tmp_path):
    """Three seeds, step a whole point worse on each: the percentile bootstrap marked this; a
    t interval over 3 seeds would exclude 0 too, but 3 seeds are too few to mark."""
    for seed, error in enumerate([5.0, 5.4, 5.2]):
        add_run(tmp_path, "autodrop", seed, error)
        add_run(tmp_path, "step", seed, error + 1.0 + 0.1 * seed)
    table = tables.table2(load_runs(tmp_path).finished())
    assert not table.display.loc[TASK, "Step"].endswith(tables.SIGNIFICANT_MARK)
    assert "takes >= 5 seeds" in table.note


def test_table2_never_marks_from_equal_differences_of_5_seeds(tmp_path):
    """Step one test example worse than AutoDrop on each of 5 seeds: no spread, so no t interval
    (the bootstrap's was that point and marked it); the sign-flip p value is 2/32 > 0.05."""
    one_example = 100 / 360
    for seed in range(5):
        add_run(tmp_path, "autodrop", seed, (4 + seed % 2) * one_example)
        add_run(tmp_path, "step", seed, (5 + seed % 2) * one_example)
    table = tables.table2(load_runs(tmp_path).finished())
    assert not table.display.loc[TASK, "Step"].endswith(tables.SIGNIFICANT_MARK)
    add_run(tmp_path, "autodrop", 5, 4 * one_example)  # a sixth equal difference: 2/64 < 0.05
    add_run(tmp_path, "step", 5, 5 * one_example)
    table = tables.table2(load_runs(tmp_path).finished())
    assert table.display.loc[TASK, "Step"].endswith(tables.SIGNIFICANT_MARK)


def test_aggregate_writes_comparisons_with_the_same_columns_in_every_format(runs_dir, tmp_path):
    report.aggregate(load_runs(runs_dir), tmp_path)
    folder = tmp_path / "tables"
    columns = list(statistics.COMPARISON_COLUMNS)
    assert list(pd.read_csv(folder / "comparisons.csv").columns) == columns
    markdown = (folder / "comparisons.md").read_text()
    caption, header = markdown.splitlines()[0], markdown.splitlines()[2]
    assert caption.startswith("Table: ") and "schedule - baseline" in caption
    assert [cell.strip() for cell in header.strip("|").split("|")] == columns
    latex = (folder / "comparisons.tex").read_text()
    assert " & ".join(c.replace("_", r"\_") for c in columns) in latex
    assert r"\caption{" in latex
    assert r"$\dagger$" in (folder / "table2.tex").read_text()
    assert (folder / "iqm.md").is_file()


def test_comparisons_table_names_schedules_by_display_name(runs_dir):
    table = tables.comparisons(load_runs(runs_dir).finished())
    shown = set(table.display["schedule"]) | set(table.display["baseline"])
    assert shown == {"One-cycle", "Cosine", "Step", "AutoDrop"}
    assert len(table.display) == 6  # 4 schedules: each of the 6 pairs once
    row = table.display[
        (table.display["schedule"] == "AutoDrop") & (table.display["baseline"] == "Step")
    ]
    assert row["significant"].tolist() == ["yes"]
    assert "Holm" in table.note and "seeds" in table.caption


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
    assert table.caption and table.note == ""  # every cell has >= 4 seeds


def test_iqm_needs_4_seeds_and_says_why(tmp_path):
    for seed in range(3):
        add_run(tmp_path, "step", seed, 5.0 + seed)
        add_run(tmp_path, "autodrop", seed, 4.0 + seed)
    assert tables.iqm_table(load_runs(tmp_path).finished()) is None  # it would be the mean
    assert "iqm" not in [table.name for table in report.build_tables(load_runs(tmp_path))]
    add_run(tmp_path, "autodrop", 3, 100.0)  # 4 seeds: the outlier and the best are trimmed
    table = tables.iqm_table(load_runs(tmp_path).finished())
    assert table.display.loc[TASK, "AutoDrop"] == "5.50 (4)"
    assert table.display.loc[TASK, "Step"] == ""
    assert "fewer than 4 seeds are left empty" in table.note and "mean" in table.note


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


# Calibration of the marking method (statistics.family_marks; Table 2's dagger and the
# comparisons' ``significant``) on synthetic paired seeds, seeded so the rates are fixed numbers.
# Each family returns (schedule, baseline) values of shape ``shape`` (samples x seeds); with
# ``shift`` = 0 the two are exchangeable: no true difference.
ONE_EXAMPLE = 100 / 360  # one digits test example, in points of error
SAMPLES = 50_000
# A rate measured on SAMPLES samples is within 3 standard errors of its true value but for
# 0.3 % of seeds: a true 5 % rate reads at most NOMINAL + this.
MONTE_CARLO = 3 * math.sqrt(statistics.ALPHA * (1 - statistics.ALPHA) / SAMPLES)


def on_grid(values: np.ndarray) -> np.ndarray:
    return np.round(values / ONE_EXAMPLE) * ONE_EXAMPLE


def gaussian(rng, shape, shift=0.0):
    """A per-seed effect both share plus independent normal noise (continuous)."""
    seed = rng.normal(size=shape)
    return seed + rng.normal(size=shape) + shift, seed + rng.normal(size=shape)


def test_counts(rng, shape, shift=0.0):
    """Errors on a 360-example test set: Binomial(360, p) with p about 1.5 % per seed (about 5
    errors: multiples of 1/360, ties and zero differences common, as on digits)."""
    p = np.clip(0.015 + 0.004 * rng.normal(size=shape), 0.001, 1.0)
    shifted = np.clip(p + shift / 100, 0.0, 1.0)
    return rng.binomial(360, shifted) * ONE_EXAMPLE, rng.binomial(360, p) * ONE_EXAMPLE


def heavy_tails(rng, shape, shift=0.0):
    """A shared per-seed effect plus Student t(3) noise (heavy tails), on the 1/360 grid."""
    seed = rng.normal(size=shape)
    noise = lambda: 0.5 * rng.standard_t(3, size=shape)  # noqa: E731
    return on_grid(seed + noise() + shift), on_grid(seed + noise())


def coarse(rng, shape, shift=0.0):
    """4, 5 or 6 errors of 360, equally likely: differences of -2..2 examples, often all equal
    over 3 seeds."""
    draw = lambda: rng.integers(4, 7, size=shape) * ONE_EXAMPLE  # noqa: E731
    return draw() + shift, draw()


def one_example_apart(rng, shape, shift=0.0):
    """Every seed differs by exactly one example, either way: all differences equal (zero
    spread) with probability 2 * 2^-n; a zero-width interval would mark 2/32 at n = 5."""
    baseline = (4 + rng.integers(0, 3, size=shape)) * ONE_EXAMPLE
    return baseline + rng.choice([-1.0, 1.0], size=shape) * ONE_EXAMPLE + shift, baseline


FAMILIES = (gaussian, test_counts, heavy_tails, coarse, one_example_apart)
# test_counts is a family, not a test: pytest must not collect it
test_counts.__test__ = False


def marking_rate(family, n: int, shift: float = 0.0, seed: int = 0) -> float:
    """Fraction of SAMPLES synthetic pairs of n seeds the method marks (a family of one
    comparison each)."""
    schedule, baseline = family(np.random.default_rng(seed), (SAMPLES, n), shift)
    step = statistics.resolution(np.concatenate([schedule, baseline], axis=1))
    _, _, significant = statistics.family_marks((schedule - baseline)[:, None, :], step)
    return float(significant.mean())


@pytest.mark.parametrize("family", FAMILIES, ids=lambda family: family.__name__)
def test_no_true_difference_is_marked_at_most_the_nominal_rate(family):
    rates = {n: marking_rate(family, n, seed=n) for n in (3, 5, 10)}
    assert rates[3] == 0.0  # nothing below 5 paired seeds
    for n in (5, 10):
        assert rates[n] <= statistics.ALPHA + MONTE_CARLO, (n, rates)


@pytest.mark.parametrize(
    ("family", "shift"),
    [(gaussian, -1.0), (test_counts, -0.5), (heavy_tails, -1.0), (coarse, -ONE_EXAMPLE)],
    ids=["gaussian-1", "counts-0.5pt", "heavy-1pt", "coarse-1example"],
)
def test_a_true_difference_is_marked_more_often_with_more_seeds(family, shift):
    rates = [marking_rate(family, n, shift, seed=n) for n in (3, 5, 10)]
    assert rates[0] == 0.0 < rates[1] < rates[2], rates
    assert rates[2] > 0.3, rates


def exact_marking_rate(values: np.ndarray, probabilities: np.ndarray, n: int) -> float:
    """The exact rate at which the method marks n paired seeds of runs whose values are drawn
    independently from ``values`` with ``probabilities`` (no true difference): a sum over
    every multiset of n differences."""
    differences = (values[:, None] - values[None, :]).ravel()
    chances = (probabilities[:, None] * probabilities[None, :]).ravel()
    support = np.unique(np.round(differences / ONE_EXAMPLE)) * ONE_EXAMPLE
    p = np.array([chances[np.isclose(differences, d)].sum() for d in support])
    counts = np.array(
        [c for c in itertools.product(range(n + 1), repeat=len(support)) if sum(c) == n]
    )
    samples = np.stack([np.repeat(support, c) for c in counts])
    _, _, significant = statistics.family_marks(samples[:, None, :], statistics.resolution(values))
    return float(np.sum(stats.multinomial.pmf(counts, n, p) * significant[:, 0]))


@pytest.mark.parametrize("n", [5, 6, 7, 8, 10])
def test_coarse_errors_are_marked_at_most_the_nominal_rate_exactly(n):
    """4, 5 or 6 errors of 360: without the continuity correction the t-test marks 6.1 %, 6.4 %
    and 6.4 % of these at n = 6, 7, 8."""
    values = np.array([4.0, 5.0, 6.0]) * ONE_EXAMPLE
    assert exact_marking_rate(values, np.full(3, 1 / 3), n) <= statistics.ALPHA


def table_runs(rows: int, seeds: int, worse_by: float = 0.0, schedules: int = 5) -> pd.DataFrame:
    """``rows`` synthetic task rows of test_counts runs: ``schedules`` schedules that share a
    per-seed difficulty; the first is ``worse_by`` points worse."""
    rng = np.random.default_rng(seeds)
    p = np.clip(0.015 + 0.004 * rng.normal(size=(rows, 1, seeds)), 0.001, 1.0)
    p = np.repeat(p, schedules, axis=1)
    p[:, 0] += worse_by / 100
    errors = rng.binomial(360, p) * ONE_EXAMPLE
    row, label, seed = np.meshgrid(
        np.arange(rows), np.arange(schedules), np.arange(seeds), indexing="ij"
    )
    return pd.DataFrame(
        {
            "row": row.ravel(),
            "scheduler": [f"s{i}" for i in label.ravel()],
            "seed": seed.ravel(),
            "min_test_err": errors.ravel(),
        }
    )


TABLE_ROWS = 1_000


@pytest.mark.parametrize(
    ("seeds", "rows"), [(3, TABLE_ROWS // 5), (5, TABLE_ROWS), (10, TABLE_ROWS)]
)
def test_table2_marks_a_row_of_equal_schedules_at_most_the_nominal_rate(seeds, rows):
    """Five schedules that do not differ: the best is picked from the data, so marking each
    schedule against it at p < 0.05 would put a dagger in about a quarter of the rows (the
    bootstrap rule this replaces: about half); Holm over all pairs keeps it under 5 % (the
    bound here: 3 Monte-Carlo standard errors)."""
    versus = statistics.versus_best(table_runs(rows, seeds))
    assert len(versus) == 4 * rows
    any_mark = versus.groupby("task")["significant"].any().mean()
    if seeds < statistics.MIN_PAIRS_TO_FLAG:
        assert any_mark == 0.0
    else:
        bound = statistics.ALPHA + 3 * math.sqrt(0.05 * 0.95 / rows)
        assert any_mark <= bound, any_mark


def test_table2_marks_a_worse_schedule_more_often_with_more_seeds():
    rates = []
    for seeds in (3, 5, 10):
        versus = statistics.versus_best(table_runs(TABLE_ROWS // 3, seeds, worse_by=1.0))
        rates.append(versus.loc[versus["schedule"] == "s0", "significant"].mean())
    assert rates[0] == 0.0 < rates[1] < rates[2], rates
