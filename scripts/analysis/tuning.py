"""The tuning study's results (experiment=study/tuning/<task>; ``experiments.studies`` runs it):
per task and schedule, what tuning with K trials buys, for every K from 1 to the pool's N.

Pool. A schedule's trials are its runs with ``tuning.trial`` set (summary.json's
``label_settings``); what each trial drew is read from the run's recorded setup, never from its
label. Each trial is one run (one seed), scored by the honest protocol: its minimum validation
error selects, its test error at that epoch is reported. The run with ``tuning.trial`` null is
the schedule's defaults: the "defaults, one shot" point.

Expected best of K, exactly. Draw K of the N trials at random without replacement and keep the
one with the lowest validation error. With the pool sorted by validation error (ties broken by
the trial index, as a tuner that keeps the first of equal trials), trial i is kept when it is
drawn and none before it is: P_K(i) = C(N - 1 - i, K - 1) / C(N, K), summed over all C(N, K)
subsets, no sampling. The expected test error of the kept trial is sum_i P_K(i) test_i: the
pool's mean at K = 1, the validation-best trial's test error at K = N. The expected validation
error of the kept trial never grows with K; its test error can, where validation and test
disagree: that is the price of selecting on a finite validation split, shown, not smoothed.

Band. The bootstrap over the pool: ``RESAMPLES`` resamples of N trials with replacement (a fixed
seed), each's exact curve; the central ``BAND`` of them per K. It says how much the curve
depends on which N trials were drawn; a trial's seed-to-seed noise (one seed each) is not in it.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from autodrop.registry import schedule_search_space
from experiments.rundir import DIVERGED, FINISHED
from scripts.analysis.display import display_name
from scripts.analysis.runs import RunSet, task_keys
from scripts.analysis.tables import Table, order_labels

TRIAL_KEY = "tuning.trial"  # the label setting of a tuning-study run
RESAMPLES = 2000
BAND = 0.95
BOOTSTRAP_SEED = 0
TABLE_KS = (1, 4)  # and N
PROTOCOL = "Honest protocol (every choice made on the validation split)"
POOL_COLUMNS = (
    "run_id", "experiment", "task", "schedule", "trial", "seed", "val_err", "test_err", "diverged",
)  # fmt: skip
# The error of a diverged trial that recorded no epoch: the worst possible, so that a tuner keeps
# it only when every trial it drew diverged.
DIVERGED_ERROR = 100.0


def selection_probabilities(n: int) -> np.ndarray:
    """P[K - 1, i]: the probability that the i-th best of ``n`` trials (by validation error) is
    the best of a uniformly random K-subset, for K = 1..n (module notes)."""
    if n < 1:
        raise ValueError(f"n={n!r} is invalid: a pool needs at least one trial")
    table = np.zeros((n, n))
    for k in range(1, n + 1):
        subsets = math.comb(n, k)
        for i in range(n - k + 1):
            table[k - 1, i] = math.comb(n - 1 - i, k - 1) / subsets
    return table


def _ranked(val: np.ndarray, tie: np.ndarray) -> np.ndarray:
    """Indices sorting trials by validation error, ties by ``tie`` (the trial index)."""
    return np.lexsort((tie, val))


def expected_best(val, test, tie=None) -> pd.DataFrame:
    """Per K = 1..N: the expected validation and test error of the validation-best of K trials
    drawn without replacement from the pool (``val``, ``test`` per trial; ``tie`` breaks equal
    validation errors, lower first, default the trial's position)."""
    val, test = np.asarray(val, dtype=float), np.asarray(test, dtype=float)
    tie = np.arange(len(val)) if tie is None else np.asarray(tie)
    order = _ranked(val, tie)
    weights = selection_probabilities(len(val))
    return pd.DataFrame(
        {
            "k": np.arange(1, len(val) + 1),
            "val_err": weights @ val[order],
            "test_err": weights @ test[order],
        }
    )


def bootstrap_band(
    val, test, tie=None, resamples: int = RESAMPLES, level: float = BAND, seed: int = BOOTSTRAP_SEED
) -> pd.DataFrame:
    """Per K: the central ``level`` of the expected test error over ``resamples`` bootstrap
    resamples of the pool (module notes); columns k, low, high."""
    val, test = np.asarray(val, dtype=float), np.asarray(test, dtype=float)
    tie = np.arange(len(val)) if tie is None else np.asarray(tie)
    n = len(val)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(resamples, n))
    weights = selection_probabilities(n)
    curves = np.empty((resamples, n))
    for b, pick in enumerate(picks):
        order = pick[_ranked(val[pick], tie[pick])]
        curves[b] = weights @ test[order]
    tail = (1.0 - level) / 2
    low, high = np.quantile(curves, [tail, 1.0 - tail], axis=0)
    return pd.DataFrame({"k": np.arange(1, n + 1), "low": low, "high": high})


def study_frames(runs: RunSet) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, defaults) of the tuning-study runs (label setting ``tuning.trial``) that
    finished or diverged: POOL_COLUMNS plus the values drawn, one ``<config key>`` column each
    (the defaults' own values for the defaults runs, whose trial is None). A diverged trial is a
    trial, scored by the epochs it recorded (DIVERGED_ERROR without any)."""
    frame = runs.runs[
        runs.runs["settings"].map(lambda text: TRIAL_KEY in json.loads(text))
        & runs.runs["status"].isin([FINISHED, DIVERGED])
    ]
    frame = frame.assign(task=task_keys(frame)) if not frame.empty else frame
    rows = []
    for run in frame.itertuples(index=False):
        settings = json.loads(run.settings)
        diverged = run.status == DIVERGED
        scored = not (pd.isna(run.min_val_err) or pd.isna(run.test_err_at_best_val))
        setup = json.loads(run.setup)
        drawn = {key: setup.get(key) for key in schedule_search_space(run.scheduler_name)}
        rows.append(
            {
                "run_id": run.run_id,
                "experiment": run.experiment,
                "task": run.task,
                "schedule": run.scheduler_name,
                "trial": settings[TRIAL_KEY],
                "seed": run.seed,
                "val_err": run.min_val_err if scored else DIVERGED_ERROR,
                "test_err": run.test_err_at_best_val if scored else DIVERGED_ERROR,
                "diverged": diverged,
                **drawn,
            }
        )
    study = pd.DataFrame.from_records(rows, columns=None if rows else list(POOL_COLUMNS))
    is_default = study["trial"].isna()
    return study[~is_default].astype({"trial": int}), study[is_default]


def curves(trials: pd.DataFrame) -> pd.DataFrame:
    """Per task and schedule, per K = 1..N: the expected validation and test error of the
    validation-selected trial and the bootstrap band; n = the pool's size."""
    parts = []
    for (task, schedule), pool in trials.groupby(["task", "schedule"], sort=True):
        pool = pool.dropna(subset=["val_err", "test_err"])
        if pool.empty:
            continue
        args = (pool["val_err"], pool["test_err"], pool["trial"])
        curve = expected_best(*args).merge(bootstrap_band(*args), on="k")
        parts.append(curve.assign(task=task, schedule=schedule, n=len(pool)))
    columns = ["task", "schedule", "n", "k", "val_err", "test_err", "low", "high"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def _cell(value: float, low: float | None = None, high: float | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    band = "" if low is None else f" [{low:.2f}, {high:.2f}]"
    return f"{value:.2f}{band}"


def tuning_table(trials: pd.DataFrame, defaults: pd.DataFrame) -> Table | None:
    """Per task and schedule: the defaults' test error, and the expected test error of the
    validation-selected trial at K = 1, 4 and N with its bootstrap band."""
    curve = curves(trials)
    if curve.empty:
        return None
    rows = []
    for (task, schedule), group in curve.groupby(["task", "schedule"], sort=True):
        n = int(group["n"].iloc[0])
        shown = {}
        for k in sorted({*[k for k in TABLE_KS if k <= n], n}):
            point = group[group["k"] == k].iloc[0]
            name = f"K = {k}" + (" (N)" if k == n else "")
            shown[name] = _cell(point["test_err"], point["low"], point["high"])
        default = defaults[(defaults["task"] == task) & (defaults["schedule"] == schedule)]
        rows.append(
            {
                "task": task,
                "schedule": schedule,
                "defaults (1 run)": _cell(default["test_err"].mean()) if len(default) else "",
                **shown,
                "N": n,
            }
        )
    display = pd.DataFrame.from_records(rows)
    rank = {name: i for i, name in enumerate(order_labels(set(display["schedule"])))}
    display = display.sort_values(["task", "schedule"], key=_rank_key(rank))
    display["schedule"] = display["schedule"].map(display_name)
    display = display.set_index(["task", "schedule"]).fillna("")
    caption = (
        f"{PROTOCOL}: tuning cost. Test error (%) of the trial with the lowest validation error "
        "among K trials drawn at random from each schedule's pool of N Halton trials (the "
        "expected value over all K-subsets, exact), with a 95% bootstrap band over the pool in "
        "brackets; defaults: one run of the schedule's default settings. One seed per trial; "
        "each trial's test error is at its own best validation epoch."
    )
    note = (
        "K = 1 is the pool's mean (one untuned random trial); K = N the validation-best "
        "trial; the band resamples the N trials, not the seeds; the expected validation error "
        "falls with K, the test error need not (tuning.csv has every K)"
    )
    diverged = trials[trials["diverged"].astype(bool)]
    if not diverged.empty:
        counts = diverged.groupby("schedule").size()
        shown = ", ".join(f"{display_name(s)} {n}" for s, n in counts.items())
        note += (
            f"; diverged trials ({shown}) stay in their pools, scored by the epochs before they "
            f"diverged ({DIVERGED_ERROR:g} % without any)"
        )
    return Table("tuning", display, curve, note, caption)


def _rank_key(rank: dict[str, int]):
    def key(column: pd.Series) -> pd.Series:
        return column.map(rank) if column.name == "schedule" else column

    return key


def pool_table(trials: pd.DataFrame, defaults: pd.DataFrame) -> Table | None:
    """Every trial (and the defaults) with the values it drew, its validation and test error."""
    if trials.empty and defaults.empty:
        return None
    frame = pd.concat([defaults, trials], ignore_index=True)
    frame["trial"] = [("defaults" if pd.isna(t) else str(int(t))) for t in frame["trial"]]
    settings = [c for c in frame.columns if "." in c]
    frame["settings"] = [
        ", ".join(
            f"{key.rpartition('.')[2]}={row[key]:.4g}"
            for key in settings
            if pd.notna(row.get(key)) and key in schedule_search_space(row["schedule"])
        )
        for _, row in frame.iterrows()
    ]
    rank = {name: i for i, name in enumerate(order_labels(set(frame["schedule"])))}
    frame = frame.sort_values(["task", "schedule", "val_err", "trial"], key=_rank_key(rank))
    shown = frame.assign(
        schedule=frame["schedule"].map(display_name),
        diverged=frame["diverged"].map({True: "diverged"}).fillna(""),
    )
    columns = ["task", "schedule", "trial", "settings", "val_err", "test_err", "diverged"]
    display = shown[columns].set_index(["task", "schedule"])
    display = display.rename(columns={"val_err": "min val err (%)", "test_err": "test err (%)"})
    caption = (
        f"{PROTOCOL}: every trial of the tuning study, best validation error first: the values "
        "it drew (read from the run's recorded setup), its minimum validation error and the test "
        "error at that epoch."
    )
    return Table("tuning_pool", display.round(3), frame, caption=caption)


def tuning_tables(runs: RunSet) -> list[Table]:
    """Every table of the tuning study's finished runs (none without such runs)."""
    trials, defaults = study_frames(runs)
    built = [tuning_table(trials, defaults), pool_table(trials, defaults)]
    return [table for table in built if table is not None]
