"""The horizon study: the needs_budget declaration, the anytime equivalence the study relies on
(a 2T run's first T epochs are the T run, for every schedule that declares it needs no budget),
budget-aware schedules ending at their budget, the study's configs and refusals, the runs its
long runs save, and its analysis (reads within a budget, paired comparisons, time to target)."""

from __future__ import annotations

import inspect
import json
import math
import re
import subprocess

import pytest
import torch
from omegaconf import OmegaConf

from autodrop import AutoDrop, registry
from autodrop.base import ScheduleHooks, declared_needs_budget
from autodrop.registry import SCHEDULE_CLASSES, SCHEDULE_NAMES, check_declarations
from autodrop.schedules.per_step import PerStepSchedule
from autodrop.search_space import space
from experiments import rundir as rd
from experiments.config import ConfigError, compose_config
from experiments.optimizers import build_optimizer, build_schedule
from experiments.schema import HORIZON_BUDGETS
from experiments.settings import RunSettings
from experiments.studies import served_horizons
from experiments.validation import validate_config
from scripts.analysis import horizons
from scripts.analysis.grid import planned_runs
from scripts.analysis.runs import load_runs
from scripts.analysis.status import saving_lines, scan_runs
from tests.conftest import REPO_ROOT, TINY_RUN
from tests.fake_runs import write_fake_run

ANYTIME = [name for name in SCHEDULE_NAMES if not registry.schedule_needs_budget(name)]
AWARE = [name for name in SCHEDULE_NAMES if registry.schedule_needs_budget(name)]
STUDY_PRESETS = sorted(
    str(p.relative_to(REPO_ROOT / "conf" / "experiment").with_suffix(""))
    for p in (REPO_ROOT / "conf" / "experiment" / "study" / "horizons").glob("*.yaml")
)
DIGITS = "study/horizons/digits"


def without_times(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]


# --- the declaration -------------------------------------------------------------------------


@pytest.mark.parametrize("cls", SCHEDULE_CLASSES, ids=lambda cls: cls.name)
def test_a_schedule_needs_the_budget_exactly_when_its_constructor_takes_it(cls):
    takes_epochs = "epochs" in inspect.signature(cls).parameters
    assert declared_needs_budget(cls) is takes_epochs


def test_the_budget_aware_and_anytime_schedules_are_the_expected_ones():
    assert set(AWARE) == {"step", "cosine", "onecycle"}
    assert {"autodrop", "autodrop_v1", "hd", "schedulefree", "plateau"} <= set(ANYTIME)


class _Fake(PerStepSchedule):
    name = "fake"
    display_name = "Fake"
    colour = "#000000"
    reads = frozenset()
    search_space = space()

    def lrs_at(self, step: int) -> list[float]:
        return list(self.base_lrs)


def _fake(needs: object, takes_epochs: bool) -> type:
    def with_epochs(self, optimizer, steps_per_epoch: int, epochs: int) -> None:
        PerStepSchedule.__init__(self, optimizer, steps_per_epoch)

    def without(self, optimizer, steps_per_epoch: int) -> None:
        PerStepSchedule.__init__(self, optimizer, steps_per_epoch)

    attributes = {"__init__": with_epochs if takes_epochs else without}
    if needs is not None:
        attributes["needs_budget"] = needs
    return type("Fake", (_Fake,), attributes)


@pytest.mark.parametrize(
    ("needs", "takes_epochs", "text"),
    [
        (None, False, "must declare `needs_budget`, a bool"),
        (1, True, "must declare `needs_budget`, a bool"),
        (True, False, "declares needs_budget=True but its constructor does not take `epochs`"),
        (False, True, "declares needs_budget=False but its constructor takes `epochs`"),
    ],
)
def test_the_registry_refuses_a_missing_or_contradicted_declaration(needs, takes_epochs, text):
    with pytest.raises(TypeError, match=re.escape(text)):
        check_declarations(_fake(needs, takes_epochs))
    check_declarations(_fake(takes_epochs, takes_epochs))  # agreeing: accepted


def test_the_contract_has_no_default_for_it():
    assert "needs_budget" not in vars(ScheduleHooks)
    with pytest.raises(TypeError, match="must declare `needs_budget`"):
        declared_needs_budget(type("Bare", (ScheduleHooks,), {}))


# --- anytime: a 2T run's first T epochs are the T run -------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ANYTIME)
def test_a_schedule_that_needs_no_budget_runs_the_same_first_epochs_at_any_length(
    name, train_in_process
):
    short = train_in_process([*TINY_RUN, f"scheduler={name}", "trainer.epochs=2"])
    long = train_in_process([*TINY_RUN, f"scheduler={name}", "trainer.epochs=4"])
    short_records = rd.read_records(short / rd.METRICS_FILE)
    long_records = rd.read_records(long / rd.METRICS_FILE)
    assert [r["epoch"] for r in long_records] == [1, 2, 3, 4]
    assert without_times(long_records[:2]) == without_times(short_records)
    stream = registry.schedule_class(name).record_stream
    if stream is not None:  # the schedule's own records, up to the end of the short run
        last_step = short_records[-1]["step"]
        short_stream = rd.read_records(short / rd.records_file(stream))
        long_stream = rd.read_records(long / rd.records_file(stream))
        assert short_stream, "the short run recorded no measurement to compare"
        assert [r for r in long_stream if r["step"] <= last_step] == short_stream
    assert long_records[-1]["step"] == 2 * short_records[-1]["step"]


# --- budget-aware: built at 0.5T, the schedule ends at 0.5T --------------------------------------


def _lrs(cfg, steps_per_epoch: int = 17) -> tuple[list[float], object]:
    """The lr of every optimizer step of the config's schedule, over its budget and one epoch
    past it."""
    model = torch.nn.Linear(2, 2)
    settings = RunSettings.from_config(cfg)
    optimizer = build_optimizer(settings.optimizer, model, steps_per_epoch=steps_per_epoch)
    schedule = build_schedule(
        settings.scheduler, optimizer, steps_per_epoch=steps_per_epoch, epochs=cfg.trainer.epochs
    )
    lrs = []
    for _ in range((cfg.trainer.epochs + 1) * steps_per_epoch):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return lrs, schedule


@pytest.mark.parametrize("name", AWARE)
def test_a_budget_aware_schedule_built_for_half_the_budget_ends_there(name):
    half = compose_config([f"experiment={DIGITS}", f"scheduler={name}", "horizon.budget=0.5"])
    whole = compose_config([f"experiment={DIGITS}", f"scheduler={name}", "horizon.budget=1"])
    assert half.trainer.epochs * 2 == whole.trainer.epochs == half.horizon.standard_epochs
    spe = 17
    lrs, schedule = _lrs(half, spe)
    last = half.trainer.epochs * spe - 1  # the last step of the 0.5T budget
    assert lrs[0] > lrs[last]
    assert set(lrs[last:]) == {lrs[last]}  # ended: held after its last step
    whole_lrs, _ = _lrs(whole, spe)
    assert whole_lrs[last] != whole_lrs[-1]  # the T schedule has not ended at 0.5T
    base = half.optimizer.lr
    if name == "cosine":
        assert lrs[last] == schedule.eta_mins[0] == 0.0  # its floor at its last step
    elif name == "onecycle":
        assert lrs[last] == pytest.approx(base / 25.0 / 1e4)  # start / final_div_factor
    elif name == "step":
        assert max(schedule.milestones) < half.trainer.epochs  # every drop within 0.5T
        assert lrs[last] == pytest.approx(base * 0.2 ** len(schedule.milestones))


# --- the study's configs ---------------------------------------------------------------------


def _composed(preset: str, name: str, budget: float):
    return compose_config([f"experiment={preset}", f"scheduler={name}", f"horizon.budget={budget}"])


@pytest.mark.parametrize("preset", STUDY_PRESETS)
def test_every_budget_is_whole_epochs_and_anytime_settings_never_follow_the_budget(preset):
    for name in SCHEDULE_NAMES:
        # Anytime schedules at the extremes only (the study composes them at the longest).
        budgets = HORIZON_BUDGETS if name in AWARE else (min(HORIZON_BUDGETS), 2.0)
        configs = {b: _composed(preset, name, b) for b in budgets}
        standard = next(iter(configs.values())).horizon.standard_epochs
        for budget, cfg in configs.items():
            assert cfg.trainer.epochs == budget * standard
            assert cfg.scheduler.label == f"{name}-budget={budget:g}"
        if name in ANYTIME:  # held at the standard budget's settings at every length
            sections = {
                json.dumps(
                    OmegaConf.to_container(cfg[section], resolve=True), sort_keys=True
                ).replace(cfg.scheduler.label, "<label>")
                for cfg in configs.values()
                for section in ("scheduler", "optimizer")
            }
            assert len(sections) == 2, (preset, name)


@pytest.mark.parametrize("preset", [p for p in STUDY_PRESETS if p != DIGITS])
def test_the_paper_size_studies_take_the_paper_presets_budget_as_t(preset):
    task = preset.rpartition("/")[2]
    paper = compose_config([f"experiment=paper/{task}"])
    study = compose_config([f"experiment={preset}"])
    assert study.horizon.standard_epochs == paper.trainer.epochs
    tuning = compose_config([f"experiment=study/tuning/{task}"])
    assert tuning.trainer.epochs == paper.trainer.epochs


def test_both_digits_studies_share_the_standard_budget():
    assert (
        compose_config(["experiment=study/tuning/digits"]).trainer.epochs
        == compose_config([f"experiment={DIGITS}"]).horizon.standard_epochs
    )


@pytest.mark.parametrize(
    ("overrides", "text"),
    [
        (["scheduler=autodrop", "horizon.budget=0.5"], "horizon.budget=0.5 is invalid: "
         "scheduler=autodrop does not need the budget (needs_budget=False): the study trains "
         "it once, at horizon.budget=2"),
        (["scheduler=step", "horizon.budget=3"], "horizon.budget=3.0 is invalid: allowed values "
         "are 0.25, 0.5, 1, 2"),
        (["scheduler=step", "trainer.epochs=5"], "trainer.epochs=5 is invalid: the horizon study "
         "trains horizon.budget x horizon.standard_epochs = 32 epochs"),
        (["scheduler=step", "horizon.standard_epochs=18"], "horizon.standard_epochs=18 is "
         "invalid: every budget (0.25, 0.5, 1, 2 x T) must be a whole number of epochs: use a "
         "multiple of 4"),
    ],
)  # fmt: skip
def test_the_study_refuses_what_it_does_not_plan_in_one_line(overrides, text):
    try:
        cfg = compose_config([f"experiment={DIGITS}", *overrides])
        validate_config(cfg)
    except ConfigError as error:
        message = str(error)
    else:
        pytest.fail("not refused")
    assert text in message and "\n" not in message


def test_the_study_refuses_a_schedule_that_does_not_declare_needs_budget(monkeypatch):
    monkeypatch.delattr(AutoDrop, "needs_budget")
    cfg = compose_config([f"experiment={DIGITS}", "scheduler=autodrop"])
    with pytest.raises(ConfigError, match=r"the horizon study refuses scheduler=autodrop: "
                       r"needs_budget: .*must declare `needs_budget`"):  # fmt: skip
        validate_config(cfg)
    with pytest.raises(TypeError, match="must declare `needs_budget`"):
        registry.schedule_needs_budget("autodrop")


def test_the_makefile_lists_follow_the_declarations_and_the_budgets():
    make = subprocess.run(
        ["make", "-pn", "help", "STAMP=/dev/null"], cwd=REPO_ROOT, capture_output=True,
        text=True, check=True,
    ).stdout  # fmt: skip

    def variable(name: str) -> list[str]:
        (value,) = re.findall(rf"^{name} :?= (.*)$", make, re.MULTILINE)
        return value.split(",")

    for aware, free in (("STUDY_QUICK_AWARE", "STUDY_QUICK_FREE"), ("STUDY_AWARE", "STUDY_FREE")):
        assert all(registry.schedule_needs_budget(name) for name in variable(aware))
        assert not any(registry.schedule_needs_budget(name) for name in variable(free))
    assert [float(b) for b in variable("HORIZON_BUDGETS")] == list(HORIZON_BUDGETS)


# --- what the single long runs save ---------------------------------------------------------


def test_planning_counts_the_runs_an_anytime_schedules_long_run_saves(tmp_path):
    free = planned_runs(DIGITS, "scheduler=autodrop,step", "0,1")
    serving = {run.scheduler: run.serves for run in free}
    assert serving == {"autodrop-budget=2": (4, 8, 16), "step-budget=2": ()}
    assert all(run.epochs == 32 for run in free)
    lines = saving_lines(free, scan_runs(tmp_path))
    assert lines == [
        f"{DIGITS}: 2 runs of schedules that need no budget are read at 6 shorter budgets: 6 "
        f"runs (56 epochs, {56 * 1.2 / 3600:.2f} device-hours) not trained"
    ]
    assert served_horizons(compose_config(["experiment=quick/digits"])) == ()


# --- the analysis ----------------------------------------------------------------------------

T = 4


def _study_run(runs_dir, name, seed, budget, vals, tests):
    write_fake_run(
        runs_dir, experiment=DIGITS, dataset="digits", model="resnet8", scheduler=name,
        seed=seed, test_errs=tests, val_errs=vals, settings={"horizon.budget": budget},
    )  # fmt: skip


@pytest.fixture
def study(tmp_path):
    runs_dir = tmp_path / "runs"
    for seed in range(5):
        # AutoDrop: one run of 2T = 8 epochs; its validation error is lowest at epoch 3 within
        # the first 4 and at epoch 7 within all 8.
        vals = [50, 40, 20 - seed, 30, 25, 15, 10, 12]
        tests = [51, 41, 21, 31, 26, 16, 11 + seed, 13]
        _study_run(runs_dir, "autodrop", seed, 2, vals, tests)
        for budget in HORIZON_BUDGETS:
            epochs = round(budget * T)
            step_vals = [40.0 - e for e in range(epochs)]
            step_tests = [60.0 - 2 * e - seed for e in range(epochs)]
            _study_run(runs_dir, "step", seed, budget, step_vals, step_tests)
    return load_runs(runs_dir)


def test_an_anytime_run_is_read_at_every_budget_from_its_first_epochs(study):
    reads = horizons.horizon_reads(study)
    auto = reads[(reads["schedule"] == "autodrop") & (reads["seed"] == 1)].set_index("budget")
    assert list(auto["horizon_epochs"]) == [1, 2, 4, 8]
    assert auto.loc[1.0, "best_epoch"] == 3 and auto.loc[1.0, "test_err"] == 21
    assert auto.loc[2.0, "best_epoch"] == 7 and auto.loc[2.0, "test_err"] == 12
    assert auto.loc[0.25, "test_err"] == 51  # one epoch: its only record
    step = reads[reads["schedule"] == "step"]
    assert len(step) == 5 * len(HORIZON_BUDGETS) and set(step["run_budget"]) == set(step["budget"])


def test_comparisons_take_the_best_budget_aware_schedule_of_each_budget_as_reference(study):
    versus = horizons.comparisons(horizons.horizon_reads(study))
    assert set(versus["baseline"]) == {"step"} and set(versus["schedule"]) == {"autodrop"}
    at_t = versus[versus["budget"] == 1.0].iloc[0]
    step_at_t = [60.0 - 6 - seed for seed in range(5)]  # its last epoch is its best
    assert at_t["mean_diff"] == pytest.approx(21 - sum(step_at_t) / 5)
    assert at_t["n_pairs"] == 5
    table = horizons.error_table(horizons.horizon_reads(study))
    cells = table.display.loc[("digits/resnet8", "Step")]
    assert cells["1T (4 ep)"].endswith("(ref)") and cells["needs budget"] == "yes"
    assert table.display.loc[("digits/resnet8", "AutoDrop"), "needs budget"] == "no (anytime)"


def test_time_to_target_is_counted_within_each_budget(study):
    reads = horizons.horizon_reads(study)
    (target,) = horizons.study_targets(reads, study)
    assert target.val_err == 37.0  # step at T: its minimum validation error, every seed
    times = horizons.times_within_budgets(reads, study, [target])
    auto = times[(times["scheduler"] == "autodrop") & (times["seed"] == 0)].set_index("budget")
    assert math.isinf(auto.loc[0.25, "epochs"]) and not auto.loc[0.25, "reached"]
    assert auto.loc[1.0, "epochs"] == 3 and auto.loc[2.0, "epochs"] == 3


def test_the_runs_table_counts_the_saving(study):
    values = horizons.runs_table(study).values.set_index("schedule")
    assert values.loc["autodrop", "runs"] == 5 and values.loc["autodrop", "epochs"] == 40
    assert values.loc["autodrop", "epochs, one run per budget"] == 5 * (1 + 2 + 4 + 8)
    assert values.loc["autodrop", "epochs saved"] == 5 * 7
    assert values.loc["step", "epochs saved"] == 0


def test_status_totals_show_the_grid_and_the_saving_without_the_table(tmp_path, capsys):
    from scripts import status

    launch = f"experiment={DIGITS} scheduler=autodrop seed=0,1"
    assert status.main(["--runs", str(tmp_path), "--launch", launch, "--totals"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 runs in the grid: 0 finished")
    assert f"{DIGITS}: 2 runs of schedules that need no budget are read at 6 shorter" in out
    assert "autodrop-budget=2" not in out  # no table of runs


def test_the_studies_command_writes_tables_figures_and_a_readme_from_the_numbers(study, tmp_path):
    from scripts import studies

    runs_dir = tmp_path / "runs"
    out = tmp_path / "out"
    assert studies.main(["--runs", str(runs_dir), "--out", str(out)]) == 0
    names = {path.name for path in (out / "tables").iterdir()}
    assert {"horizons.md", "horizons_comparisons.csv", "horizons_time_to_target.tex"} <= names
    assert (out / "figures" / "fig_horizons_digits-resnet8.png").is_file()
    readme = (out / "README.md").read_text()
    assert "digits/resnet8, T = 4 epochs, 5 seeds." in readme
    reads = horizons.horizon_reads(study)
    at_t = reads[(reads["budget"] == 1.0)].groupby("schedule")["test_err"].mean()
    assert f"1T (4 ep): best AutoDrop {at_t['autodrop']:.2f} %; reference Step" in readme
    assert "## Tuning study" not in readme  # no tuning runs here
    assert studies.main(["--runs", str(runs_dir), "--experiments", "paper", "--out", str(out)]) == 2
