"""Statistics over seeds: paired comparisons with bootstrap intervals, the interquartile mean and
performance profiles. Pure functions on long DataFrames, one row per run, with the columns
``row`` (the task's table row), ``scheduler`` (the label), ``seed`` and a value column
(``min_test_err`` by default); :mod:`scripts.analysis.tables` formats what they return.

Method (README, "Statistics and grid status"):
- Pairing: schedule and baseline are compared over the seeds both finished; a seed that only
  one of them finished is dropped, and ``n_pairs`` says how many pairs are left.
- ``mean_diff``: mean over pairs of (schedule - baseline), in points of test error; negative
  means the schedule is better.
- ``ci_low`` / ``ci_high``: a seeded percentile bootstrap (scipy.stats.bootstrap) of the mean
  of the per-seed differences. Percentile, not BCa: BCa's acceleration is a jackknife estimate
  that is unstable or undefined with the 2-4 seeds these grids have (scipy warns and returns
  NaN on degenerate jackknife samples), while the percentile interval is defined for any
  n >= 2. With one pair there is no spread to resample: the interval is NaN. When every
  difference is equal, every resample has the same mean: the interval is that point.
- ``p_improve``: the probability that the schedule beats the baseline on a random pair of
  seeds (i, j), i and j drawn independently from the paired seeds: the fraction of the
  n_pairs x n_pairs pairs with schedule(i) < baseline(j), ties counted half (the Mann-Whitney
  U statistic divided by n_pairs^2, scipy.stats.mannwhitneyu).
- Interquartile mean: scipy.stats.trim_mean(values, 0.25), the mean of the middle half (it
  trims floor(n / 4) values at each end: with 3 seeds it is the plain mean).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
N_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
BOOTSTRAP_METHOD = "percentile"
IQM_TRIM = 0.25
# versus_best flags a difference only from this many pairs on: with two, the percentile interval
# is about the range of the two differences, so any two of one sign would "exclude 0".
MIN_PAIRS_TO_FLAG = 3
VALUE = "min_test_err"
COMPARISON_COLUMNS = (
    "task",
    "schedule",
    "baseline",
    "n_pairs",
    "mean_diff",
    "ci_low",
    "ci_high",
    "p_improve",
)
_NEEDED = ("row", "scheduler", "seed")


def _check_columns(runs: pd.DataFrame, value: str) -> None:
    missing = [column for column in (*_NEEDED, value) if column not in runs]
    if missing:
        raise ValueError(f"runs frame lacks columns {missing}; it has {list(runs.columns)}")


def paired_values(
    runs: pd.DataFrame, row: str, schedule: str, baseline: str, value: str = VALUE
) -> pd.DataFrame:
    """Per seed that both finished: the schedule's and the baseline's value (columns
    ``schedule`` and ``baseline``, index ``seed``), seeds in order."""
    _check_columns(runs, value)
    in_row = runs[runs["row"] == row]

    def by_seed(label: str) -> pd.Series:
        chosen = in_row[in_row["scheduler"] == label].dropna(subset=[value])
        if chosen["seed"].duplicated().any():
            raise ValueError(f"{row}: schedule {label!r} has several runs of one seed")
        return chosen.set_index("seed")[value]

    pairs = pd.concat({"schedule": by_seed(schedule), "baseline": by_seed(baseline)}, axis=1)
    return pairs.dropna().sort_index()


def bootstrap_mean_ci(
    differences: np.ndarray, confidence: float = CONFIDENCE, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``differences`` (see the module notes for
    one value (NaN) and all-equal values (the point))."""
    values = np.asarray(differences, dtype=float)
    if values.size < 2:
        return math.nan, math.nan
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0])
    result = stats.bootstrap(
        (values,),
        np.mean,
        n_resamples=N_RESAMPLES,
        confidence_level=confidence,
        method=BOOTSTRAP_METHOD,
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def probability_of_improvement(schedule: np.ndarray, baseline: np.ndarray) -> float:
    """P(schedule(i) < baseline(j)) over all seed pairs (i, j), ties counted half."""
    if len(schedule) == 0 or len(baseline) == 0:
        return math.nan
    u_baseline = stats.mannwhitneyu(baseline, schedule, alternative="two-sided").statistic
    return float(u_baseline) / (len(schedule) * len(baseline))


def compare(runs: pd.DataFrame, row: str, schedule: str, baseline: str, value: str = VALUE) -> dict:
    """One row of the comparisons frame: schedule against baseline on one task row."""
    pairs = paired_values(runs, row, schedule, baseline, value)
    differences = (pairs["schedule"] - pairs["baseline"]).to_numpy()
    low, high = bootstrap_mean_ci(differences)
    return {
        "task": row,
        "schedule": schedule,
        "baseline": baseline,
        "n_pairs": len(pairs),
        "mean_diff": float(differences.mean()) if len(pairs) else math.nan,
        "ci_low": low,
        "ci_high": high,
        "p_improve": probability_of_improvement(
            pairs["schedule"].to_numpy(), pairs["baseline"].to_numpy()
        ),
    }


def comparisons(
    runs: pd.DataFrame,
    baselines: Sequence[str],
    order: Sequence[str] | None = None,
    value: str = VALUE,
) -> pd.DataFrame:
    """Every schedule against every baseline present on each task row (never itself)."""
    _check_columns(runs, value)
    records = []
    for row in sorted(set(runs["row"])):
        present = set(runs.loc[runs["row"] == row, "scheduler"])
        labels = [label for label in (order or sorted(present)) if label in present]
        for baseline in [label for label in baselines if label in present]:
            for schedule in labels:
                if schedule != baseline:
                    records.append(compare(runs, row, schedule, baseline, value))
    return pd.DataFrame.from_records(records, columns=list(COMPARISON_COLUMNS))


def best_per_row(runs: pd.DataFrame, value: str = VALUE) -> pd.Series:
    """Per task row, the schedule with the lowest mean ``value`` (first in name order on a tie)."""
    _check_columns(runs, value)
    means = runs.groupby(["row", "scheduler"])[value].mean().dropna().reset_index()
    means = means.sort_values(["row", value, "scheduler"], kind="stable")
    return means.drop_duplicates("row").set_index("row")["scheduler"]


def versus_best(runs: pd.DataFrame, value: str = VALUE) -> pd.DataFrame:
    """Each schedule against its row's best schedule (:func:`best_per_row`): the comparisons
    columns plus ``excludes_zero`` (the interval lies entirely on one side of 0, from
    MIN_PAIRS_TO_FLAG pairs on)."""
    records = [
        compare(runs, row, schedule, best, value)
        for row, best in best_per_row(runs, value).items()
        for schedule in sorted(set(runs.loc[runs["row"] == row, "scheduler"]) - {best})
    ]
    frame = pd.DataFrame.from_records(records, columns=list(COMPARISON_COLUMNS))
    outside = (frame["ci_low"] > 0) | (frame["ci_high"] < 0)
    return frame.assign(excludes_zero=outside & (frame["n_pairs"] >= MIN_PAIRS_TO_FLAG))


def interquartile_means(runs: pd.DataFrame, value: str = VALUE) -> pd.DataFrame:
    """Per task row and schedule: ``iqm`` of ``value`` over seeds and the seed count ``n``."""
    _check_columns(runs, value)
    grouped = runs.dropna(subset=[value]).groupby(["row", "scheduler"], sort=True)[value]
    frame = grouped.agg(
        iqm=lambda values: float(stats.trim_mean(values.to_numpy(), IQM_TRIM)), n="count"
    )
    return frame.reset_index().astype({"n": "int64"})


def performance_profile(
    scores: pd.DataFrame, thresholds: Sequence[float], score: str = "iqm"
) -> pd.DataFrame:
    """For each schedule and threshold x: the fraction of task rows on which the schedule's
    ``score`` is within x points of the row's best score (a row the schedule has no score on
    counts as not within). Columns: scheduler, x, fraction."""
    missing = [column for column in ("row", "scheduler", score) if column not in scores]
    if missing:
        raise ValueError(f"scores frame lacks columns {missing}; it has {list(scores.columns)}")
    table = scores.pivot(index="row", columns="scheduler", values=score)
    gaps = table.sub(table.min(axis=1), axis=0).fillna(np.inf)
    records = [
        {"scheduler": label, "x": float(x), "fraction": float((gaps[label] <= x).mean())}
        for label in gaps.columns
        for x in thresholds
    ]
    return pd.DataFrame.from_records(records, columns=["scheduler", "x", "fraction"])
