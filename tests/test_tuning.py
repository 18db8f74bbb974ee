"""The tuning study: search spaces declared with the schedules, the Halton pool, a trial as a run
of its own, and the exact expected best-of-K (with its bootstrap band) the analysis computes."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from autodrop import AutoDrop, registry
from autodrop.registry import SCHEDULE_CLASSES, check_declarations
from autodrop.search_space import (
    INITIAL_LR,
    Choice,
    IntUniform,
    LogUniform,
    Uniform,
    declared_search_space,
    space,
)
from experiments.config import ConfigError, compose_config, compose_with_choices
from experiments.run_identity import identify_run
from experiments.studies import with_trial
from experiments.trials import halton_points, pool
from experiments.validation import validate_config
from scripts.analysis import tuning
from scripts.analysis.runs import load_runs
from tests.conftest import TINY_RUN
from tests.fake_runs import write_fake_run

STUDY = "study/tuning/digits"


# --- search spaces ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", SCHEDULE_CLASSES, ids=lambda cls: cls.name)
def test_every_schedule_declares_a_search_space_over_keys_its_config_has(cls):
    space_ = declared_search_space(cls)
    cfg = compose_config([f"experiment={STUDY}", f"scheduler={cls.name}"])
    options = registry.schedule_options(cls.name)
    for key in space_:
        section, _, option = key.partition(".")
        assert option in (options if section == "scheduler" else cfg.optimizer), key
        assert OmegaConf.select(cfg, key) is not None, key  # the value a relative knob scales
    lr_knob = "optimizer.lr_multiplier" if cls.name == "schedulefree" else INITIAL_LR
    assert lr_knob in space_  # every space searches the lr (schedule-free: its multiplier)


def test_a_schedule_without_a_search_space_is_refused(monkeypatch):
    monkeypatch.delattr(AutoDrop, "search_space")
    with pytest.raises(TypeError, match="must declare `search_space`"):
        check_declarations(AutoDrop)
    cfg, _ = compose_with_choices([f"experiment={STUDY}", "scheduler=autodrop", "tuning.trial=1"])
    with pytest.raises(ConfigError, match="the tuning study refuses scheduler=autodrop"):
        with_trial(cfg)


def test_a_search_space_naming_an_option_the_schedule_lacks_is_refused(monkeypatch):
    monkeypatch.setattr(AutoDrop, "search_space", space(scheduler__gamma=Uniform(0.1, 0.5)))
    with pytest.raises(TypeError, match="searches 'scheduler.gamma', which is not one of"):
        check_declarations(AutoDrop)


@pytest.mark.parametrize(
    ("distribution", "low", "high"),
    [
        (LogUniform(1e-3, 1e-1), 1e-3, 1e-1),
        (Uniform(0.5, 0.99), 0.5, 0.99),
        (IntUniform(1, 10), 1, 10),
        (Choice(("a", "b", "c")), "a", "c"),
    ],
)
def test_distributions_map_the_unit_interval_onto_their_range(distribution, low, high):
    assert distribution.value(0.0) == low
    end = distribution.value(1.0)
    assert end == pytest.approx(high) if isinstance(high, float) else end == high
    values = [distribution.value(u) for u in np.linspace(0, 1, 101)]
    assert values == sorted(values, key=lambda v: str(v) if isinstance(v, str) else v)


def test_integer_and_choice_draws_give_each_value_its_share():
    draws = [IntUniform(1, 4).value(u) for u in (np.arange(4000) + 0.5) / 4000]
    assert {v: draws.count(v) for v in range(1, 5)} == dict.fromkeys(range(1, 5), 1000)
    log = LogUniform(0.01, 1.0)
    assert log.value(0.5) == pytest.approx(0.1)  # the geometric middle


def test_a_relative_distribution_scales_the_configured_value():
    lr = LogUniform(0.1, 10.0, relative=True)
    assert lr.value(0.5, base=0.05) == pytest.approx(0.05)
    assert lr.value(0.0, base=0.05) == pytest.approx(0.005)
    with pytest.raises(ValueError, match="needs the configured value"):
        lr.value(0.5)


# --- the Halton pool -------------------------------------------------------------------------


def test_the_pool_is_identical_for_a_seed_and_differs_for_another():
    bases = {INITIAL_LR: 0.05}
    assert pool("step", 0, 12, bases) == pool("step", 0, 12, bases)
    assert pool("step", 0, 12, bases) != pool("step", 1, 12, bases)
    np.testing.assert_array_equal(halton_points(2, 7, 16), halton_points(2, 7, 16))
    assert not np.array_equal(halton_points(2, 7, 16), halton_points(2, 8, 16))


def test_a_trial_does_not_depend_on_the_pool_size_and_stays_in_its_ranges():
    bases = {INITIAL_LR: 0.05}
    assert pool("plateau", 3, 5, bases) == pool("plateau", 3, 20, bases)[:5]
    for trial in pool("plateau", 3, 64, bases):
        assert 0.005 <= trial[INITIAL_LR] <= 0.5
        assert 0.05 <= trial["scheduler.factor"] <= 0.5
        assert trial["scheduler.patience"] in range(1, 11)
    points = halton_points(3, 3, 64)  # quasi-random: the bins of each coordinate filled evenly
    counts = [np.bincount((column * 8).astype(int), minlength=8) for column in points.T]
    assert counts[0].tolist() == [8] * 8  # base 2: exactly
    assert all(6 <= c <= 10 for column in counts[1:] for c in column)  # bases 3 and 5: nearly


def test_a_trial_is_a_run_of_its_own_recording_what_it_drew():
    directories, drawn = set(), []
    for trial in ("null", "0", "1", "2"):
        cfg, choices = compose_with_choices(
            [f"experiment={STUDY}", "scheduler=step", f"tuning.trial={trial}"]
        )
        cfg = with_trial(cfg)
        validate_config(cfg)
        root, identity = identify_run(cfg, choices)
        directories.add(root)
        assert identity.label == ("step" if trial == "null" else f"step-trial={trial}")
        assert identity.label_settings == {"tuning.trial": None if trial == "null" else int(trial)}
        assert identity.changes == {}  # the drawn values are derived from the trial
        drawn.append({key: identity.setup[key] for key in ("optimizer.lr", "scheduler.gamma")})
    assert len(directories) == 4
    assert drawn[0] == {"optimizer.lr": 0.05, "scheduler.gamma": 0.2}  # the defaults
    expected = pool("step", 0, 3, {INITIAL_LR: 0.05})
    assert drawn[1:] == [{k: t[k] for k in ("optimizer.lr", "scheduler.gamma")} for t in expected]


def test_a_trial_refuses_an_override_of_a_knob_it_draws():
    overrides = [f"experiment={STUDY}", "scheduler=step", "tuning.trial=2", "scheduler.gamma=0.5"]
    cfg, _ = compose_with_choices(overrides)
    refused = r"scheduler.gamma='0.5' is invalid: tuning.trial=2 draws scheduler.gamma from the "
    with pytest.raises(ConfigError, match=refused + "search space of scheduler=step"):
        with_trial(cfg, overrides)
    cfg, _ = compose_with_choices([*overrides[:2], "tuning.trial=-1"])
    with pytest.raises(ConfigError, match=r"tuning.trial=-1 is invalid: must be >= 0"):
        validate_config(cfg)


@pytest.mark.slow
def test_a_trial_trains_with_its_values_and_the_analysis_reads_them(train_in_process):
    run_dir = train_in_process([*TINY_RUN, f"experiment={STUDY}", "scheduler=hd", "tuning.trial=4"])
    summary = json.loads((run_dir / "summary.json").read_text())
    (expected,) = pool("hd", 0, 5, {INITIAL_LR: 0.05})[4:]
    assert summary["label_settings"] == {"tuning.trial": 4}
    assert summary["scheduler_options"]["beta"] == expected["optimizer.beta"]
    assert summary["setup"]["optimizer.lr"] == expected["optimizer.lr"]
    trials, defaults = tuning.study_frames(load_runs(run_dir.parents[3]))
    assert defaults.empty and trials.iloc[0]["trial"] == 4
    assert trials.iloc[0]["optimizer.beta"] == expected["optimizer.beta"]


# --- expected best of K ----------------------------------------------------------------------


def _brute_force(val, test, tie) -> list[tuple[float, float]]:
    """Mean over every K-subset of the validation-best trial's (val, test), for K = 1..N."""
    n = len(val)
    curve = []
    for k in range(1, n + 1):
        kept = [
            min(subset, key=lambda i: (val[i], tie[i]))
            for subset in itertools.combinations(range(n), k)
        ]
        curve.append((np.mean([val[i] for i in kept]), np.mean([test[i] for i in kept])))
    return curve


errors = st.lists(st.integers(0, 8).map(lambda v: v * 100 / 360), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(errors, st.randoms(use_true_random=False))
def test_best_of_k_is_exact_and_its_validation_error_never_grows(val, random):
    test = [v + random.choice([-1.0, 0.0, 2.5]) for v in val]  # test disagrees with val
    tie = list(range(len(val)))
    random.shuffle(tie)
    curve = tuning.expected_best(val, test, tie)
    # Exact up to rounding: a mean of the same errors summed in another order can be 1e-17, not 0.
    np.testing.assert_allclose(
        curve[["val_err", "test_err"]], _brute_force(val, test, tie), rtol=1e-9, atol=1e-9
    )
    assert curve["val_err"].iloc[0] == pytest.approx(np.mean(val))  # K = 1: the pool's mean
    assert curve["test_err"].iloc[0] == pytest.approx(np.mean(test))
    best = min(range(len(val)), key=lambda i: (val[i], tie[i]))
    assert curve["test_err"].iloc[-1] == pytest.approx(test[best])  # K = N: the val-best's
    assert (np.diff(curve["val_err"]) <= 1e-12).all()


def test_the_test_error_of_the_selected_trial_can_rise_with_k():
    # The validation-best trial is the test-worst: tuning more selects it more often.
    val, test = [1.0, 2.0, 3.0], [9.0, 1.0, 2.0]
    curve = tuning.expected_best(val, test)
    assert list(curve["val_err"]) == pytest.approx([2.0, 4 / 3, 1.0])
    assert list(curve["test_err"]) == pytest.approx([4.0, 19 / 3, 9.0])


def test_ties_in_validation_are_broken_by_the_trial_index():
    curve = tuning.expected_best([1.0, 1.0], [5.0, 3.0], tie=[1, 0])
    assert curve["test_err"].iloc[-1] == 3.0  # trial 0 is kept, the first of equals
    assert tuning.selection_probabilities(4).sum(axis=1) == pytest.approx([1.0] * 4)


def test_the_bootstrap_band_is_seeded_and_collapses_on_a_constant_pool():
    val, test = [3.0, 1.0, 2.0, 5.0, 4.0], [2.0, 3.0, 1.0, 4.0, 6.0]
    first = tuning.bootstrap_band(val, test, resamples=500, seed=3)
    np.testing.assert_array_equal(first, tuning.bootstrap_band(val, test, resamples=500, seed=3))
    assert (first["low"] <= first["high"]).all()
    curve = tuning.expected_best(val, test)
    inside = (first["low"] <= curve["test_err"] + 1e-12) & (curve["test_err"] <= first["high"])
    assert inside.all()
    flat = tuning.bootstrap_band([1.0] * 4, [2.0] * 4, resamples=50)
    assert (flat["low"] == 2.0).all() and (flat["high"] == 2.0).all()


def test_the_tables_read_trials_and_defaults_from_the_runs(tmp_path):
    runs_dir = tmp_path / "runs"
    for trial, (val, test) in enumerate([(5.0, 6.0), (2.0, 3.0), (4.0, 1.0)]):
        write_fake_run(
            runs_dir, experiment=STUDY, dataset="digits", model="resnet8", scheduler="cosine",
            seed=0, test_errs=[test], val_errs=[val], settings={"tuning.trial": trial},
        )  # fmt: skip
    write_fake_run(
        runs_dir, experiment=STUDY, dataset="digits", model="resnet8", scheduler="cosine",
        seed=0, test_errs=[7.0], val_errs=[7.0], settings={"tuning.trial": None},
    )  # fmt: skip
    write_fake_run(  # another experiment's run is no trial
        runs_dir, experiment="quick/digits", dataset="digits", model="resnet8",
        scheduler="cosine", seed=0, test_errs=[1.0], val_errs=[1.0],
    )  # fmt: skip
    runs = load_runs(runs_dir)
    trials, defaults = tuning.study_frames(runs)
    assert sorted(trials["trial"]) == [0, 1, 2] and list(defaults["test_err"]) == [7.0]
    (table, pool_table) = tuning.tuning_tables(runs)
    row = table.display.loc[("digits/resnet8", "Cosine")]
    assert row["defaults (1 run)"] == "7.00"
    assert row["K = 1"].startswith(f"{np.mean([6.0, 3.0, 1.0]):.2f} [")
    assert row["K = 3 (N)"].startswith("3.00 [")  # trial 1 has the lowest validation error
    assert list(pool_table.display["trial"]) == ["1", "2", "0", "defaults"]
    assert math.isclose(table.values["test_err"].iloc[-1], 3.0)


def test_a_diverged_trial_stays_in_the_pool_scored_by_the_epochs_it_recorded(tmp_path):
    runs_dir = tmp_path / "runs"
    trials = {0: ([4.0, 3.0], [5.0, 2.0], "finished"), 1: ([6.0], [7.0], "diverged"),
              2: ([], [], "diverged"), 3: ([1.0], [1.0], "failed")}  # fmt: skip
    for trial, (vals, tests, status) in trials.items():
        write_fake_run(
            runs_dir, experiment=STUDY, dataset="digits", model="resnet8", scheduler="hd",
            seed=0, test_errs=tests, val_errs=vals, settings={"tuning.trial": trial},
            status=status, epochs_planned=2,
        )  # fmt: skip
    trials_frame, _ = tuning.study_frames(load_runs(runs_dir))
    scored = trials_frame.set_index("trial")[["val_err", "test_err", "diverged"]]
    assert scored.to_dict("index") == {
        0: {"val_err": 3.0, "test_err": 2.0, "diverged": False},
        1: {"val_err": 6.0, "test_err": 7.0, "diverged": True},
        2: {"val_err": tuning.DIVERGED_ERROR, "test_err": tuning.DIVERGED_ERROR, "diverged": True},
    }  # a failed run is no trial: it is listed, never scored
    (table, pool_table) = tuning.tuning_tables(load_runs(runs_dir))
    assert "diverged trials (HD 2) stay in their pools" in table.note
    assert list(pool_table.display["diverged"]) == ["", "diverged", "diverged"]
