"""Statistics over seeds: paired comparisons, the interquartile mean and performance profiles.
Pure functions on long DataFrames, one row per run, with the columns ``row`` (the task's table
row), ``scheduler`` (the label), ``seed`` and a value column (``min_test_err`` by default);
:mod:`scripts.analysis.tables` formats what they return.

Method (README, "Statistics and grid status"):
- Pairing: two schedules are compared over the seeds both finished; a seed that only one of them
  finished is dropped, and ``n_pairs`` says how many pairs are left. ``mean_diff`` is the mean
  over pairs of (schedule - baseline), in points; negative means the schedule is better.
- Interval and test: Student's t on the paired differences, continuity corrected for discrete
  values. ``ci_low``/``ci_high`` = mean_diff -/+ (t(0.975, n - 1) * s / sqrt(n) + c) and
  ``p_value`` = the two-sided paired t-test of (|mean_diff| - c) / (s / sqrt(n)), where
  c = step / (2 n) and step is the lattice the row's values lie on (:func:`resolution`: each
  digits error is a multiple of 100/360 points; 0 for continuous values), the correction normal
  approximations to discrete tests use. Without c the t-test marks up to 6.4 % of
  no-difference pairs of coarse errors (3 to 5 possible values per run, n = 6 to 8, computed
  exactly); with it at most 5.0 % (n = 5 to 10). A percentile bootstrap is not used: over 3
  seeds it has at most 10 distinct resamples and its interval is about the range of the
  differences (the bootstrap rule this replaces marked 8 to 27 % of no-difference pairs of 3
  seeds, and put a dagger in 43 to 68 % of rows of 5 equal schedules at n = 3 to 10).
- No spread: when every difference is the same (within TIE_TOLERANCE, which absorbs float
  noise), s = 0 and the t interval would have zero width, claiming certainty from, e.g., five
  seeds that each differ by one test example. Then the interval is NaN and ``p_value`` is the
  exact sign-flip p value 2 * 2^-n (under no difference each difference is as likely positive
  as negative, and n equal signs is the most extreme outcome): it takes 6 equal differences to
  reach p < 0.05. All differences 0: mean 0, p = 1.
- Multiplicity: a task row compares every pair of its k schedules, and Table 2 marks a schedule
  against the row's best, which is itself picked by the data (with 5 equal schedules, marking
  each against the best at p < 0.05 puts a dagger in about a quarter of the rows). ``p_holm``
  is Holm's step-down adjustment of the row's p values (pairs with >= MIN_PAIRS_TO_FLAG pairs
  of seeds), and ``significant`` = p_holm < ALPHA with >= MIN_PAIRS_TO_FLAG pairs: Holm holds
  the chance of any significant pair among schedules that do not differ at ALPHA, whichever
  schedule is the best.
- Nothing is significant below MIN_PAIRS_TO_FLAG = 5 paired seeds: with 3 a t interval is valid
  but wide (t(0.975, 2) = 4.3) and rests on normality alone, and a distribution-free test cannot
  reach p < 0.05 at all (the sign-flip test's smallest two-sided p is 2/8 at n = 3, 2/32 at 5).
- Calibration (tests/test_statistics.py): on synthetic seeds with no true difference (normal,
  binomial test-error counts, heavy-tailed and coarse errors on the 1/360 grid, differences of
  one example either way) the method marks at most 5 % at n = 3 (never), 5 and 10, and a true
  difference more often as n grows. Its limit: the t-test is exact for normal differences
  only; discrete differences that independent runs cannot produce (ties rarer than
  independence allows) can be marked up to about 7.5 % (n = 5, computed exactly).
- ``p_improve``: the probability that the schedule beats the baseline on a random pair of seeds
  (i, j), i and j drawn independently from the paired seeds: the fraction of the
  n_pairs x n_pairs pairs with schedule(i) < baseline(j), ties counted half (the Mann-Whitney U
  statistic divided by n_pairs^2). Descriptive; no test.
- Interquartile mean: scipy.stats.trim_mean(values, 0.25), the mean of the middle half. It trims
  floor(n / 4) values at each end, so below MIN_SEEDS_FOR_IQM = 4 seeds it is the plain mean.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special, stats

#: Performance profiles (over IQMs or times to target) are drawn from this many tasks on: with
#: fewer, a profile is one or two steps that say no more than the per-task table.
MIN_PROFILE_TASKS = 3

CONFIDENCE = 0.95
ALPHA = 1.0 - CONFIDENCE
# Mark (``significant``) nothing below this many paired seeds.
MIN_PAIRS_TO_FLAG = 5
# Differences closer than this (points of error) are equal: float noise, not spread.
TIE_TOLERANCE = 1e-9
# A value is on a lattice when it is this close (in steps) to a whole number of steps.
LATTICE_TOLERANCE = 1e-6
METHOD = "Student t on the paired differences, continuity corrected"
IQM_TRIM = 0.25
MIN_SEEDS_FOR_IQM = 4  # the first n with floor(n * IQM_TRIM) >= 1: fewer seeds, IQM = mean
VALUE = "min_test_err"
COMPARISON_COLUMNS = (
    "task",
    "schedule",
    "baseline",
    "n_pairs",
    "mean_diff",
    "ci_low",
    "ci_high",
    "p_value",
    "p_holm",
    "significant",
    "p_improve",
)
_NEEDED = ("row", "scheduler", "seed")


@dataclass(frozen=True)
class PairedTest:
    """Per comparison (arrays over the leading axes of the differences): the number of pairs,
    the mean difference, the t interval and the two-sided p value (see the module notes)."""

    n: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    p_value: np.ndarray


def resolution(values: np.ndarray) -> np.ndarray:
    """The step of the lattice ``values`` lie on, along the last axis (NaN = no value): the
    smallest gap between two distinct values when every value is the smallest value plus a
    whole number of such gaps (errors on a test set of N examples: 100/N points, if two values
    one example apart occur; a coarser step if not, which only makes the test more cautious);
    0 for values that lie on no such lattice (continuous) or are all equal."""
    v = np.sort(np.asarray(values, dtype=float), axis=-1)  # NaN last
    gaps = np.diff(v, axis=-1)
    positive = np.where(gaps > TIE_TOLERANCE, gaps, np.inf)
    step = positive.min(axis=-1, initial=np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        multiples = (v - v[..., :1]) / step[..., None]
        off = np.abs(multiples - np.round(multiples))
    on_lattice = np.all(np.isnan(v) | (off <= LATTICE_TOLERANCE), axis=-1)
    return np.where(np.isfinite(step) & on_lattice, step, 0.0)


def paired_t_test(
    differences: np.ndarray, step: np.ndarray | float = 0.0, confidence: float = CONFIDENCE
) -> PairedTest:
    """Student t interval and paired t-test of the mean of ``differences`` along the last axis
    (NaN = a seed without a pair; leading axes are independent comparisons), continuity
    corrected for values on a lattice of ``step`` (:func:`resolution`; 0: continuous): the
    interval widened and |mean| reduced by step / (2 n). One pair: mean only; no spread: NaN
    interval and the exact sign-flip p value 2 * 2^-n (module notes)."""
    d = np.asarray(differences, dtype=float)
    n = np.sum(~np.isnan(d), axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.nansum(d, axis=-1)
        mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
        squares = np.nansum((d - mean[..., None]) ** 2, axis=-1)
        sd = np.sqrt(squares / (n - 1))
        spread = np.nanmax(d, axis=-1, initial=-np.inf) - np.nanmin(d, axis=-1, initial=np.inf)
        has_spread = (n >= 2) & (spread > TIE_TOLERANCE)
        se = np.where(has_spread, sd / np.sqrt(n), np.nan)
        df = np.maximum(n - 1, 1)
        correction = np.asarray(step, dtype=float) / (2 * n)
        half = special.stdtrit(df, 0.5 + confidence / 2) * se + correction  # t quantile
        shrunk = np.maximum(np.abs(mean) - correction, 0.0)
        p_t = 2.0 * special.stdtr(df, -shrunk / se)  # two-sided t tail
    no_spread = (n >= 2) & ~has_spread
    p_sign = np.where(np.abs(mean) > TIE_TOLERANCE, np.minimum(1.0, 2.0 ** (1.0 - n)), 1.0)
    p_value = np.where(has_spread, p_t, np.where(no_spread, p_sign, np.nan))
    mean = np.where(no_spread & (np.abs(mean) <= TIE_TOLERANCE), 0.0, mean)
    return PairedTest(n, mean, mean - half, mean + half, p_value)


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p values along the last axis; NaN entries are not in the family
    (and stay NaN)."""
    p = np.asarray(p_values, dtype=float)
    in_family = ~np.isnan(p)
    m = in_family.sum(axis=-1, keepdims=True)
    order = np.argsort(np.where(in_family, p, np.inf), axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1)
    factor = m - np.arange(p.shape[-1])  # m, m - 1, ... for the 1st, 2nd, ... smallest
    stepped = np.minimum(1.0, np.where(np.isnan(ranked), 0.0, ranked) * factor)
    stepped = np.maximum.accumulate(stepped, axis=-1)
    adjusted = np.empty_like(stepped)
    np.put_along_axis(adjusted, order, stepped, axis=-1)
    return np.where(in_family, adjusted, np.nan)


def flag(n_pairs: np.ndarray, p_adjusted: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """The marking rule: adjusted p < alpha over >= MIN_PAIRS_TO_FLAG paired seeds."""
    with np.errstate(invalid="ignore"):
        return (np.asarray(n_pairs) >= MIN_PAIRS_TO_FLAG) & (np.asarray(p_adjusted) < alpha)


def family_marks(
    differences: np.ndarray, step: np.ndarray | float = 0.0
) -> tuple[PairedTest, np.ndarray, np.ndarray]:
    """The marking method on a family of comparisons, ``differences`` shaped (..., comparisons,
    seeds) (NaN = a seed without a pair) of values on a lattice of ``step`` (shaped like the
    leading axes ..., or a number): each comparison's :func:`paired_t_test`, its Holm p value
    over the family's comparisons with >= MIN_PAIRS_TO_FLAG pairs, and whether it is
    significant (:func:`flag`). The single entry point of every mark the tables make."""
    step = np.asarray(step, dtype=float)[..., None]  # one step per family
    test = paired_t_test(differences, step)
    adjusted = holm(np.where(test.n >= MIN_PAIRS_TO_FLAG, test.p_value, np.nan))
    return test, adjusted, flag(test.n, adjusted)


def _check_columns(runs: pd.DataFrame, value: str) -> None:
    missing = [column for column in (*_NEEDED, value) if column not in runs]
    if missing:
        raise ValueError(f"runs frame lacks columns {missing}; it has {list(runs.columns)}")


def seed_matrices(runs: pd.DataFrame, value: str = VALUE):
    """Per task row (in order): the row key and its ``value`` per seed (index, in order) and
    schedule label (columns, those with a finished value); NaN where a schedule has no finished
    value for a seed."""
    _check_columns(runs, value)
    done = runs[["row", "scheduler", "seed", value]].dropna(subset=[value])
    repeated = done[done.duplicated(["row", "scheduler", "seed"])]
    if not repeated.empty:
        row, label = repeated[["row", "scheduler"]].iloc[0]
        raise ValueError(f"{row}: schedule {label!r} has several runs of one seed")
    wide = done.pivot(index=["row", "seed"], columns="scheduler", values=value).sort_index()
    rows = wide.index.get_level_values("row")
    if rows.empty:
        return
    values = wide.to_numpy(dtype=float)
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    for start, end in zip(starts, [*starts[1:], len(rows)], strict=True):
        block = values[start:end]
        present = ~np.isnan(block).all(axis=0)
        seeds = wide.index.get_level_values("seed")[start:end]
        yield (
            rows[start],
            pd.DataFrame(block[:, present], index=seeds, columns=wide.columns[present]),
        )


def seed_matrix(runs: pd.DataFrame, row: str, value: str = VALUE) -> pd.DataFrame:
    """One task row's matrix of :func:`seed_matrices` (empty when the row has no value)."""
    _check_columns(runs, value)
    for _, matrix in seed_matrices(runs[runs["row"] == row], value):
        return matrix
    return pd.DataFrame(dtype=float)


def paired_values(
    runs: pd.DataFrame, row: str, schedule: str, baseline: str, value: str = VALUE
) -> pd.DataFrame:
    """Per seed that both finished: the schedule's and the baseline's value (columns
    ``schedule`` and ``baseline``, index ``seed``), seeds in order."""
    matrix = seed_matrix(runs, row, value)
    pairs = pd.DataFrame(
        {
            "schedule": matrix.get(schedule, pd.Series(dtype=float)),
            "baseline": matrix.get(baseline, pd.Series(dtype=float)),
        }
    )
    return pairs.dropna().sort_index()


def probability_of_improvement(schedule: np.ndarray, baseline: np.ndarray) -> float:
    """P(schedule(i) < baseline(j)) over all seed pairs (i, j), ties counted half."""
    pair = (np.asarray(schedule, float)[None], np.asarray(baseline, float)[None])
    return float(_improvement(*pair)[0])


def _improvement(schedule: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """probability_of_improvement per comparison (rows; NaN = no value), over the seeds (columns)
    both have; NaN with none."""
    both = ~np.isnan(schedule) & ~np.isnan(baseline)
    s = np.where(both, schedule, np.nan)[:, :, None]
    b = np.where(both, baseline, np.nan)[:, None, :]
    wins = (s < b).sum(axis=(1, 2)) + 0.5 * (s == b).sum(axis=(1, 2))
    n = both.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, wins / n.astype(float) ** 2, np.nan)


def _pair_records(matrix: pd.DataFrame, row: str, pairs: Sequence[tuple[str, str]]) -> list[dict]:
    """Comparison records of (schedule, baseline) label pairs of one row's seed matrix, with
    ``p_holm`` and ``significant`` adjusted over exactly these pairs."""
    if not pairs:
        return []
    values = matrix.to_numpy(dtype=float)
    column = {label: i for i, label in enumerate(matrix.columns)}
    schedule = values[:, [column[s] for s, _ in pairs]].T  # (pairs, seeds)
    baseline = values[:, [column[b] for _, b in pairs]].T
    test, adjusted, significant = family_marks(schedule - baseline, resolution(values.ravel()))
    columns = zip(
        test.n.tolist(),
        test.mean.tolist(),
        test.low.tolist(),
        test.high.tolist(),
        test.p_value.tolist(),
        adjusted.tolist(),
        significant.tolist(),
        _improvement(schedule, baseline).tolist(),
        strict=True,
    )
    return [
        dict(zip(COMPARISON_COLUMNS, (row, s, b, *numbers), strict=True))
        for (s, b), numbers in zip(pairs, columns, strict=True)
    ]


def _frame(records: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records, columns=list(COMPARISON_COLUMNS))
    return frame.astype({"n_pairs": "int64", "significant": "bool"})


def compare(runs: pd.DataFrame, row: str, schedule: str, baseline: str, value: str = VALUE) -> dict:
    """One pair on its own, schedule against baseline on one task row (a family of one:
    ``p_holm`` = ``p_value`` from MIN_PAIRS_TO_FLAG pairs on, NaN below)."""
    matrix = seed_matrix(runs, row, value).reindex(columns=[schedule, baseline])
    return _pair_records(matrix, row, [(schedule, baseline)])[0]


def row_pairs(labels: Sequence[str]) -> list[tuple[str, str]]:
    """Each unordered pair of ``labels`` once, as (schedule, baseline) = (later, earlier)."""
    return [(later, earlier) for earlier, later in itertools.combinations(labels, 2)]


def comparisons(
    runs: pd.DataFrame, order: Sequence[str] | None = None, value: str = VALUE
) -> pd.DataFrame:
    """Every pair of schedules of each task row once, as schedule - baseline with the baseline
    the label earlier in ``order`` (default: name order); Holm over the row's pairs."""
    _check_columns(runs, value)
    records = []
    for row, matrix in seed_matrices(runs, value):
        labels = [label for label in (order or sorted(matrix.columns)) if label in matrix]
        records += _pair_records(matrix, row, row_pairs(labels))
    return _frame(records)


def versus_baseline(
    runs: pd.DataFrame, baseline: str, schedules: Sequence[str], value: str = VALUE
) -> pd.DataFrame:
    """Each of ``schedules`` against ``baseline`` on each task row, as schedule - baseline (in
    the order given): the comparisons columns, ``p_holm`` and ``significant`` adjusted over
    these comparisons of the row (the baseline is chosen before the data, so the family is the
    comparisons made). A schedule or baseline without a finished value has no record."""
    _check_columns(runs, value)
    records = []
    for row, matrix in seed_matrices(runs, value):
        if baseline in matrix:
            pairs = [(label, baseline) for label in schedules if label in matrix]
            records += _pair_records(matrix, row, [p for p in pairs if p[0] != baseline])
    return _frame(records)


def best_per_row(
    runs: pd.DataFrame, value: str = VALUE, among: Collection[str] | None = None
) -> pd.Series:
    """Per task row, the schedule with the lowest mean ``value`` (first in name order on a tie),
    of the labels ``among`` when given (a row with none of them has no best)."""
    _check_columns(runs, value)
    if among is not None:
        runs = runs[runs["scheduler"].isin(set(among))]
    means = runs.groupby(["row", "scheduler"])[value].mean().dropna().reset_index()
    means = means.sort_values(["row", value, "scheduler"], kind="stable")
    return means.drop_duplicates("row").set_index("row")["scheduler"]


def versus_best(runs: pd.DataFrame, value: str = VALUE) -> pd.DataFrame:
    """Each schedule against its row's best schedule (:func:`best_per_row`), as schedule - best:
    the comparisons columns, ``p_holm`` and ``significant`` adjusted over every pair of the
    row's schedules (the best is chosen from the data, so the family is all pairs)."""
    return versus(runs, best_per_row(runs, value), value)


def versus(runs: pd.DataFrame, baselines: pd.Series, value: str = VALUE) -> pd.DataFrame:
    """Each schedule of a row against the row's baseline (``baselines``: row -> label, e.g. the
    best of some schedules, picked from the data), as schedule - baseline: the comparisons
    columns, ``p_holm`` and ``significant`` adjusted over every pair of the row's schedules (a
    baseline chosen from the data makes the family all pairs). Rows without a baseline are
    left out."""
    records = []
    for row, matrix in seed_matrices(runs, value):
        if row not in baselines.index or baselines[row] not in matrix:
            continue
        best = baselines[row]
        pairs = row_pairs(list(matrix.columns))
        family = {(r["schedule"], r["baseline"]): r for r in _pair_records(matrix, row, pairs)}
        for schedule in sorted(set(matrix.columns) - {best}):
            if (schedule, best) in family:
                records.append(family[(schedule, best)])
            else:
                records.append(_reversed(family[(best, schedule)]))
    return _frame(records)


def _reversed(record: dict) -> dict:
    """A comparison record read the other way (baseline - schedule)."""
    return record | {
        "schedule": record["baseline"],
        "baseline": record["schedule"],
        "mean_diff": -record["mean_diff"],
        "ci_low": -record["ci_high"],
        "ci_high": -record["ci_low"],
        "p_improve": 1.0 - record["p_improve"],
    }


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
