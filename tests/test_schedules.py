"""The baseline schedules and their registry, checked against torch's schedulers as oracles."""

from __future__ import annotations

import io
import math
import re

import pytest
import torch
from torch.optim import lr_scheduler as torch_sched

from autodrop import AutoDrop, AutoDropV1
from autodrop.base import ScheduleHooks
from autodrop.checks import check_choice, check_float, check_int, closest_choice
from autodrop.registry import (
    SCHEDULE_CLASSES,
    SCHEDULE_NAMES,
    build,
    schedule_class,
    schedule_options,
)
from autodrop.schedules import PerStepSchedule
from autodrop.schedules.multistep import default_milestones

pytestmark = pytest.mark.filterwarnings("error")

SPE = 7  # steps per epoch: odd, so epoch boundaries never line up with round numbers
EPOCHS = 12
TOTAL = SPE * EPOCHS
GROUP_LRS = (0.1, 0.05, 0.001)
# Plateaus, small improvements and a late rebound: enough to trigger several plateau cuts.
METRICS = [5.0, 4.0, 4.0, 4.0, 3.9999, 3.9, 3.9, 3.9, 3.9, 3.0, 3.5, 3.5]
EXTRA = 3  # steps run past the budget: training loops may step once more

# Every non-AutoDrop schedule, with options that exercise its less common paths.
CASES = {
    "step": {},
    "cosine": {"warmup_epochs": 1.5, "warmup_start_factor": 1e-3, "eta_min": 1e-4},
    "onecycle": {"three_phase": True, "anneal_strategy": "linear"},
    "clr": {"step_size_epochs": 1.5},
    "exp": {"gamma": 0.8},
    "plateau": {"patience": 1, "cooldown": 1, "min_lr": 2e-3},
    "constant": {},
}


def make_optimizer(lrs=GROUP_LRS[:1], kind: str = "sgd") -> torch.optim.Optimizer:
    groups = [{"params": [torch.zeros(2, requires_grad=True)], "lr": lr} for lr in lrs]
    if kind == "adam":
        return torch.optim.Adam(groups, lr=lrs[0])
    if kind == "adagrad":
        return torch.optim.Adagrad(groups, lr=lrs[0])
    return torch.optim.SGD(groups, lr=lrs[0], momentum=0.9)


def run(schedule, optimizer, steps: int, start: int = 0, metrics=None) -> list[list[float]]:
    """Group lrs during optimizer steps start..start+steps-1, stepping as a training loop does;
    with ``metrics``, epoch_end(metric of the epoch) after each epoch's last step."""
    lrs = []
    for step in range(start, start + steps):
        current = [group["lr"] for group in optimizer.param_groups]
        assert schedule.get_last_lr() == current
        assert schedule.lr == current[0]
        lrs.append(current)
        optimizer.step()
        schedule.step()
        if metrics is not None and (step + 1) % SPE == 0 and (step + 1) // SPE <= len(metrics):
            schedule.epoch_end(metrics[(step + 1) // SPE - 1])
    return lrs


def momenta(optimizer) -> list[float]:
    return [
        group["betas"][0] if "betas" in group else group["momentum"]
        for group in optimizer.param_groups
    ]


def torch_lrs_per_epoch(scheduler_factory, lrs, epochs: int, metrics=None) -> list[list[float]]:
    """Group lrs of a torch per-epoch scheduler during each epoch."""
    optimizer = make_optimizer(lrs)
    scheduler = scheduler_factory(optimizer)
    per_epoch = []
    for epoch in range(epochs):
        per_epoch.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step(*([metrics[epoch]] if metrics is not None else []))
    return per_epoch


def assert_close(actual, expected, rel: float = 1e-12, abs_: float = 1e-15) -> None:
    assert actual == pytest.approx(expected, rel=rel, abs=abs_)


# --- registry -------------------------------------------------------------------------------


def test_the_oracle_cases_are_registered_schedules():
    assert set(CASES) <= set(SCHEDULE_NAMES) and "optimizer" not in SCHEDULE_NAMES


def test_registry_order_is_the_table_order():
    """Results show schedules in the order of ``SCHEDULE_CLASSES`` (its columns)."""
    assert SCHEDULE_NAMES == tuple(cls.name for cls in SCHEDULE_CLASSES)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_every_registered_schedule_carries_its_metadata(name):
    cls = schedule_class(name)
    assert issubclass(cls, ScheduleHooks) and issubclass(cls, torch_sched.LRScheduler)
    assert cls.name == name
    assert isinstance(cls.display_name, str) and cls.display_name
    assert re.fullmatch(r"#[0-9a-f]{6}", cls.colour)
    for attribute in ("paper_name", "tuned_setting", "record_stream"):
        assert getattr(cls, attribute) is None or isinstance(getattr(cls, attribute), str)
    for field, shown in cls.console_fields:
        assert isinstance(field, str) and isinstance(shown, str)


def test_registry_names_display_names_and_colours_are_unique():
    for attribute in ("name", "display_name", "colour"):
        values = [getattr(cls, attribute) for cls in SCHEDULE_CLASSES]
        assert len(set(values)) == len(values), attribute


@pytest.mark.parametrize("name", list(CASES))
def test_build_returns_the_contract(name):
    schedule = build(name, make_optimizer(), steps_per_epoch=SPE, epochs=EPOCHS)
    assert isinstance(schedule, torch_sched.LRScheduler)
    assert isinstance(schedule, ScheduleHooks)
    assert isinstance(schedule, PerStepSchedule)
    assert schedule.needs_metric is (name == "plateau")
    assert schedule.pop_measurements() == []


@pytest.mark.parametrize("name", [*CASES, "tlr", "autodrop", "autodrop_v1"])
def test_default_epoch_hooks_leave_the_optimizer_alone(name):
    """train_mode is model.train(); eval_mode does nothing, returns False and never makes the
    BatchNorm batches; step_lr is lr (a float)."""
    optimizer = make_optimizer()
    schedule = build(name, optimizer, steps_per_epoch=SPE, epochs=EPOCHS)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    model.eval()
    schedule.train_mode(model)
    assert all(m.training for m in model.modules())
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def bn_batches():
        raise AssertionError("bn_batches must not be called")

    assert schedule.eval_mode(model, bn_batches) is False
    assert schedule.eval_mode(model, bn_batches, autocast=None) is False
    assert model.training and optimizer.param_groups[0]["lr"] == schedule.lr
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    step_lr = schedule.step_lr()
    assert isinstance(step_lr, float) and step_lr == schedule.lr
    if name not in ("autodrop", "autodrop_v1"):
        assert schedule.epoch_fields([{"omega": 3.0}], 0.5) == {}
        assert schedule.record_stream == ("tlr" if name == "tlr" else None)


def test_schedule_options_come_from_the_signature():
    assert schedule_options("step") == ("milestones", "gamma")
    assert schedule_options("constant") == ()
    assert "step_size_epochs" in schedule_options("clr")


def test_unknown_name_lists_every_name():
    with pytest.raises(ValueError, match="'cosin'") as error:
        build("cosin", make_optimizer(), steps_per_epoch=SPE, epochs=EPOCHS)
    assert all(name in str(error.value) for name in SCHEDULE_NAMES)


def test_unknown_option_lists_accepted_options():
    with pytest.raises(ValueError, match=r"\['gama'\].*'milestones', 'gamma'"):
        build("step", make_optimizer(), steps_per_epoch=SPE, epochs=EPOCHS, gama=0.1)


@pytest.mark.parametrize(
    ("budget", "text"),
    [
        ({"steps_per_epoch": 0}, "steps_per_epoch=0"),
        ({"epochs": 0}, "epochs=0"),
        ({"epochs": 2.5}, "epochs=2.5"),
        ({"steps_per_epoch": True}, "steps_per_epoch=True"),
    ],
)
@pytest.mark.parametrize("name", ["constant", "autodrop"])
def test_bad_budget(name, budget, text):
    arguments = {"steps_per_epoch": SPE, "epochs": EPOCHS, **budget}
    with pytest.raises(ValueError, match=re.escape(text)):
        build(name, make_optimizer(), **arguments)


def test_autodrop_entries_pass_options_and_only_the_budget_they_take():
    optimizer = make_optimizer()
    v2 = build("autodrop", optimizer, steps_per_epoch=SPE, epochs=EPOCHS, window=8)
    v1 = build("autodrop_v1", make_optimizer(), steps_per_epoch=SPE, epochs=EPOCHS, extra_epochs=3)
    assert isinstance(v2, AutoDrop) and (v2.window, v2.rho, v2.buffer_size) == (8, 0.95, 10)
    assert isinstance(v1, AutoDropV1) and (v1.steps_per_epoch, v1.extra_epochs) == (SPE, 3)
    for schedule in (v1, v2):
        assert isinstance(schedule, torch_sched.LRScheduler)
        assert isinstance(schedule, ScheduleHooks)
    with pytest.raises(ValueError, match=r"\['windw'\].*'window', 'rho'"):
        build("autodrop", optimizer, steps_per_epoch=SPE, epochs=EPOCHS, windw=8)


# --- step (multistep) -----------------------------------------------------------------------


def test_default_milestones_are_fractions_of_the_budget():
    assert default_milestones(200) == [60, 120, 160]
    assert default_milestones(20) == [6, 12, 16]
    assert default_milestones(3) == [1, 2]
    assert default_milestones(1) == []


def test_multistep_lr_around_every_milestone():
    epochs, gamma, base = 20, 0.2, 0.05
    optimizer = make_optimizer((base,))
    schedule = build("step", optimizer, steps_per_epoch=SPE, epochs=epochs)
    lrs = [group[0] for group in run(schedule, optimizer, SPE * epochs)]
    for drops, milestone in enumerate([6, 12, 16]):
        for epoch, expected_drops in [
            (milestone - 1, drops),
            (milestone, drops + 1),
            (milestone + 1, drops + 1),
        ]:
            first, last = epoch * SPE, (epoch + 1) * SPE - 1
            assert_close(lrs[first], base * gamma**expected_drops)
            assert_close(lrs[last], base * gamma**expected_drops)


def test_multistep_equals_torch_multisteplr_every_step():
    milestones, epochs = [2, 5, 9], EPOCHS
    optimizer = make_optimizer(GROUP_LRS)
    schedule = build(
        "step", optimizer, steps_per_epoch=SPE, epochs=epochs, milestones=milestones, gamma=0.1
    )
    lrs = run(schedule, optimizer, TOTAL)
    oracle = torch_lrs_per_epoch(
        lambda o: torch_sched.MultiStepLR(o, milestones=milestones, gamma=0.1), GROUP_LRS, epochs
    )
    for step, groups in enumerate(lrs):
        assert_close(groups, oracle[step // SPE])


# --- cosine ---------------------------------------------------------------------------------


def test_cosine_end_points_and_torch_oracle():
    base = 0.1
    optimizer = make_optimizer((base,))
    schedule = build("cosine", optimizer, steps_per_epoch=SPE, epochs=EPOCHS)
    lrs = [group[0] for group in run(schedule, optimizer, TOTAL + EXTRA)]
    assert lrs[0] == base
    assert lrs[TOTAL - 1] == pytest.approx(0.0, abs=1e-15)
    assert lrs[TOTAL:] == [lrs[TOTAL - 1]] * EXTRA
    assert all(later <= earlier for earlier, later in zip(lrs, lrs[1:], strict=False))
    for step in range(TOTAL):  # a half cosine is point-symmetric about its midpoint
        assert lrs[step] + lrs[TOTAL - 1 - step] == pytest.approx(base, rel=1e-12)
    oracle_optimizer = make_optimizer((base,))
    oracle = torch_sched.CosineAnnealingLR(oracle_optimizer, T_max=TOTAL - 1)
    for step in range(TOTAL):
        assert lrs[step] == pytest.approx(oracle_optimizer.param_groups[0]["lr"], abs=1e-12)
        oracle_optimizer.step()
        oracle.step()


def test_cosine_warmup_end_points():
    base, start_factor, eta_min = 0.1, 1e-3, 1e-4
    optimizer = make_optimizer((base,))
    schedule = build(
        "cosine",
        optimizer,
        steps_per_epoch=SPE,
        epochs=EPOCHS,
        eta_min=eta_min,
        warmup_epochs=1.5,
        warmup_start_factor=start_factor,
    )
    warmup = round(1.5 * SPE)
    lrs = [group[0] for group in run(schedule, optimizer, TOTAL + EXTRA)]
    assert lrs[0] == base * start_factor
    assert_close(
        lrs[warmup - 1], base * (start_factor + (1 - start_factor) * (warmup - 1) / warmup)
    )
    assert lrs[warmup] == base
    assert lrs[warmup + 1] < base
    assert all(b > a for a, b in zip(lrs[:warmup], lrs[1 : warmup + 1], strict=True))
    assert_close(lrs[TOTAL - 1], eta_min)
    assert lrs[TOTAL:] == [lrs[TOTAL - 1]] * EXTRA


# --- onecycle -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "kind"),
    [
        ({}, "sgd"),
        ({"three_phase": True, "anneal_strategy": "linear", "max_lr": 0.4}, "sgd"),
        ({"pct_start": 0.25, "div_factor": 10.0, "final_div_factor": 100.0}, "adam"),
        ({"cycle_momentum": False, "max_lr": 0.3}, "sgd"),
    ],
)
def test_onecycle_equals_torch_every_step(options, kind):
    lrs = GROUP_LRS[:2]
    optimizer = make_optimizer(lrs, kind)
    schedule = build("onecycle", optimizer, steps_per_epoch=SPE, epochs=EPOCHS, **options)
    oracle_optimizer = make_optimizer(lrs, kind)
    peak = options.get("max_lr", lrs[0])
    oracle_options = {k: v for k, v in options.items() if k != "max_lr"}
    oracle = torch_sched.OneCycleLR(
        oracle_optimizer, max_lr=[peak, peak * lrs[1] / lrs[0]], total_steps=TOTAL, **oracle_options
    )
    for _ in range(TOTAL):
        assert_close(momenta(optimizer), momenta(oracle_optimizer))
        assert_close(
            run(schedule, optimizer, 1)[0], [group["lr"] for group in oracle_optimizer.param_groups]
        )
        oracle_optimizer.step()
        oracle.step()


def test_onecycle_peak_position_and_hold_after_budget():
    epochs, base = 10, 0.1
    total = SPE * epochs  # 70 steps, pct_start 0.3: peak at step 0.3 * 70 - 1 = 20
    optimizer = make_optimizer((base,))
    schedule = build("onecycle", optimizer, steps_per_epoch=SPE, epochs=epochs)
    lrs = [group[0] for group in run(schedule, optimizer, total + EXTRA)]
    assert max(lrs) == lrs[20] == pytest.approx(base)
    assert lrs.index(max(lrs)) == 20
    assert lrs[0] == pytest.approx(base / 25)
    assert lrs[total - 1] == pytest.approx(base / 25 / 1e4)
    assert lrs[total:] == [lrs[total - 1]] * EXTRA
    assert momenta(optimizer) == pytest.approx([0.95])


def test_onecycle_needs_momentum_to_cycle_it():
    with pytest.raises(ValueError, match="cycle_momentum=True"):
        build("onecycle", make_optimizer(kind="adagrad"), steps_per_epoch=SPE, epochs=EPOCHS)
    build(
        "onecycle",
        make_optimizer(kind="adagrad"),
        steps_per_epoch=SPE,
        epochs=EPOCHS,
        cycle_momentum=False,
    )


# --- clr ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "low", "high", "step_size"),
    [
        ({}, 0.01, 0.1, 2 * SPE),
        ({"step_size_epochs": 1.5, "max_lr": 0.2}, 0.02, 0.2, round(1.5 * SPE)),
        (
            {"step_size_up": 5, "step_size_epochs": 3.0, "base_lr": 0.03, "max_lr": 0.08},
            0.03,
            0.08,
            5,
        ),
    ],
)
def test_clr_equals_torch_triangular2(options, low, high, step_size):
    lrs = GROUP_LRS[:2]
    ratio = lrs[1] / lrs[0]
    optimizer = make_optimizer(lrs)
    schedule = build("clr", optimizer, steps_per_epoch=SPE, epochs=EPOCHS, **options)
    oracle_optimizer = make_optimizer(lrs)
    oracle = torch_sched.CyclicLR(
        oracle_optimizer,
        base_lr=[low, low * ratio],
        max_lr=[high, high * ratio],
        step_size_up=step_size,
        mode="triangular2",
        cycle_momentum=False,
    )
    steps = 5 * 2 * step_size  # five cycles, amplitude halving each time
    ours = run(schedule, optimizer, steps)
    assert ours[step_size][0] == pytest.approx(high)
    assert ours[3 * step_size][0] == pytest.approx(low + (high - low) / 2)
    for step in range(steps):
        assert_close(ours[step], [group["lr"] for group in oracle_optimizer.param_groups])
        oracle_optimizer.step()
        oracle.step()


# --- exp ------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.8, 0.95, 0.999])
def test_exp_equals_torch_exponentiallr(gamma):
    optimizer = make_optimizer(GROUP_LRS)
    schedule = build("exp", optimizer, steps_per_epoch=SPE, epochs=EPOCHS, gamma=gamma)
    lrs = run(schedule, optimizer, TOTAL)
    oracle = torch_lrs_per_epoch(lambda o: torch_sched.ExponentialLR(o, gamma), GROUP_LRS, EPOCHS)
    for step, groups in enumerate(lrs):
        assert_close(groups, oracle[step // SPE])


# --- plateau --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"patience": 1},
        {"patience": 0, "cooldown": 2, "factor": 0.5, "min_lr": 0.03},
        {"mode": "max", "patience": 1, "threshold_mode": "abs", "threshold": 0.05},
        {"patience": 2, "threshold_mode": "abs", "threshold": 0.2, "min_lr": 1e-3},
    ],
)
def test_plateau_equals_torch_reducelronplateau(options):
    lrs = GROUP_LRS[:2]
    metrics = [-m for m in METRICS] if options.get("mode") == "max" else METRICS
    optimizer = make_optimizer(lrs)
    schedule = build("plateau", optimizer, steps_per_epoch=SPE, epochs=EPOCHS, **options)
    ours = run(schedule, optimizer, TOTAL + 1, metrics=metrics)
    min_lr = options.get("min_lr", 0.0)
    oracle_options = {**options, "min_lr": [min_lr, min_lr * lrs[1] / lrs[0]]}
    oracle = torch_lrs_per_epoch(
        lambda o: torch_sched.ReduceLROnPlateau(o, **oracle_options),
        lrs,
        EPOCHS + 1,
        metrics + [0.0],
    )
    for step, groups in enumerate(ours):
        assert groups == oracle[step // SPE]
    assert len({tuple(groups) for groups in ours}) > 2, "the metrics should cause cuts"


def test_plateau_requires_the_metric():
    schedule = build("plateau", make_optimizer(), steps_per_epoch=SPE, epochs=EPOCHS)
    with pytest.raises(ValueError, match="metric=None"):
        schedule.epoch_end()


def test_plateau_cut_never_raises_a_group_held_at_zero():
    optimizer = make_optimizer([0.1, 0.1])
    schedule = build(
        "plateau", optimizer, steps_per_epoch=SPE, epochs=EPOCHS, patience=0, min_lr=1e-3
    )
    optimizer.param_groups[0]["lr"] = 0.0  # frozen after construction (its floor is 1e-3)
    for _ in range(6):
        schedule.epoch_end(1.0)  # no improvement after the first epoch: a cut every epoch
    assert [g["lr"] for g in optimizer.param_groups] == [0.0, pytest.approx(1e-3)]


# --- every schedule -------------------------------------------------------------------------


def test_constant_never_changes():
    optimizer = make_optimizer(GROUP_LRS)
    schedule = build("constant", optimizer, steps_per_epoch=SPE, epochs=EPOCHS)
    assert run(schedule, optimizer, TOTAL + EXTRA) == [list(GROUP_LRS)] * (TOTAL + EXTRA)


@pytest.mark.parametrize("name", list(CASES))
def test_param_groups_keep_their_lr_ratios(name):
    optimizer = make_optimizer(GROUP_LRS)
    schedule = build(name, optimizer, steps_per_epoch=SPE, epochs=EPOCHS, **CASES[name])
    lrs = run(schedule, optimizer, TOTAL + EXTRA, metrics=METRICS)
    assert len({groups[0] for groups in lrs}) >= (1 if name == "constant" else 3)
    for groups in lrs:
        for index, lr in enumerate(groups):
            assert lr == pytest.approx(groups[0] * GROUP_LRS[index] / GROUP_LRS[0], rel=1e-12)


def _through_a_file(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("stop", [3 * SPE + 4, 7 * SPE])  # mid-epoch and on an epoch boundary
@pytest.mark.parametrize("name", list(CASES))
def test_state_dict_round_trip_continues_bit_identically(name, stop):
    def fresh():
        optimizer = make_optimizer(GROUP_LRS[:2])
        return optimizer, build(name, optimizer, steps_per_epoch=SPE, epochs=EPOCHS, **CASES[name])

    optimizer, schedule = fresh()
    run(schedule, optimizer, stop, metrics=METRICS)
    saved_optimizer = _through_a_file(optimizer.state_dict())
    saved_schedule = _through_a_file(schedule.state_dict())
    rest = TOTAL + EXTRA - stop

    def continue_run(optimizer, schedule):
        lrs, moms = [], []
        for step in range(stop, stop + rest):
            lrs += run(schedule, optimizer, 1, start=step, metrics=METRICS)
            moms.append(momenta(optimizer))
        return lrs, moms

    expected = continue_run(optimizer, schedule)
    optimizer, schedule = fresh()
    optimizer.load_state_dict(saved_optimizer)
    schedule.load_state_dict(saved_schedule)
    assert continue_run(optimizer, schedule) == expected


@pytest.mark.parametrize("name", list(CASES))
def test_loading_the_schedule_alone_restores_the_optimizer(name):
    optimizer = make_optimizer(GROUP_LRS[:2])
    schedule = build(name, optimizer, steps_per_epoch=SPE, epochs=EPOCHS, **CASES[name])
    run(schedule, optimizer, 5 * SPE + 2, metrics=METRICS)
    fresh_optimizer = make_optimizer(GROUP_LRS[:2])
    fresh = build(name, fresh_optimizer, steps_per_epoch=SPE, epochs=EPOCHS, **CASES[name])
    fresh.load_state_dict(_through_a_file(schedule.state_dict()))
    assert [g["lr"] for g in fresh_optimizer.param_groups] == schedule.get_last_lr()
    assert momenta(fresh_optimizer) == momenta(optimizer)


def test_state_dict_for_other_param_groups_is_rejected():
    schedule = build("exp", make_optimizer(GROUP_LRS[:2]), steps_per_epoch=SPE, epochs=EPOCHS)
    other = build("exp", make_optimizer(GROUP_LRS), steps_per_epoch=SPE, epochs=EPOCHS)
    with pytest.raises(ValueError, match="2 param groups"):
        other.load_state_dict(schedule.state_dict())


# --- bad input ------------------------------------------------------------------------------

BAD_OPTIONS = [
    ("step", {"milestones": [6, 6]}, "milestones=[6, 6]"),
    ("step", {"milestones": [0, 5]}, "milestones=[0, 5]"),
    ("step", {"milestones": [5, 12]}, "milestones=[5, 12]"),  # past the 12-epoch budget
    ("step", {"milestones": [5.0]}, "milestones=[5.0]"),
    ("step", {"milestones": [True]}, "milestones=[True]"),
    ("step", {"milestones": "60"}, "milestones='60'"),
    ("step", {"gamma": 0.0}, "gamma=0.0"),
    ("step", {"gamma": 1.5}, "gamma=1.5"),
    ("cosine", {"warmup_epochs": -1}, "warmup_epochs=-1"),
    ("cosine", {"warmup_epochs": 12}, "warmup_epochs=12"),
    ("cosine", {"warmup_start_factor": 2.0}, "warmup_start_factor=2.0"),
    ("cosine", {"eta_min": -0.1}, "eta_min=-0.1"),
    ("cosine", {"eta_min": 0.5}, "eta_min=0.5"),  # above the initial lr
    ("onecycle", {"pct_start": 0.0}, "pct_start=0.0"),
    ("onecycle", {"pct_start": 1.0}, "pct_start=1.0"),
    ("onecycle", {"pct_start": 0.6, "three_phase": True}, "pct_start=0.6"),
    ("onecycle", {"pct_start": 0.01}, "pct_start=0.01"),  # under one warm-up step
    ("onecycle", {"anneal_strategy": "cosine"}, "anneal_strategy='cosine'"),
    ("onecycle", {"div_factor": 0}, "div_factor=0"),
    ("onecycle", {"final_div_factor": -1.0}, "final_div_factor=-1.0"),
    ("onecycle", {"max_lr": 0.0}, "max_lr=0.0"),
    ("onecycle", {"base_momentum": 1.5}, "base_momentum=1.5"),
    ("onecycle", {"max_momentum": 0.5}, "max_momentum=0.5"),
    ("onecycle", {"three_phase": "yes"}, "three_phase='yes'"),
    ("clr", {"step_size_up": 0}, "step_size_up=0"),
    ("clr", {"step_size_epochs": 0.0}, "step_size_epochs=0.0"),
    ("clr", {"step_size_epochs": None}, "step_size_epochs=None"),
    ("clr", {"base_lr": 0.5}, "base_lr=0.5"),
    ("clr", {"max_lr": -1.0}, "max_lr=-1.0"),
    ("exp", {"gamma": 1.01}, "gamma=1.01"),
    ("exp", {"gamma": "0.9"}, "gamma='0.9'"),
    ("plateau", {"mode": "minimum"}, "mode='minimum'"),
    ("plateau", {"factor": 1.0}, "factor=1.0"),
    ("plateau", {"patience": -1}, "patience=-1"),
    ("plateau", {"threshold": math.nan}, "threshold=nan"),
    ("plateau", {"threshold_mode": "relative"}, "threshold_mode='relative'"),
    ("plateau", {"cooldown": 1.5}, "cooldown=1.5"),
    ("plateau", {"min_lr": -1e-3}, "min_lr=-0.001"),
]


@pytest.mark.parametrize(("name", "options", "text"), BAD_OPTIONS)
def test_bad_options_raise_value_error_naming_the_value(name, options, text):
    with pytest.raises(ValueError, match=re.escape(text)):
        build(name, make_optimizer(), steps_per_epoch=SPE, epochs=EPOCHS, **options)


def test_every_schedule_has_a_bad_option_case():
    assert {name for name, _, _ in BAD_OPTIONS} == set(CASES) - {"constant"}


# A range printed as [low, high] or low <= x <= high with low > high says nothing about what is
# wrong: every range message is checked for one.
EMPTY_RANGE = re.compile(r"\[(-?[\d.]+), (-?[\d.]+)[\])]|(-?[\d.]+) <=? \w+ <=? (-?[\d.]+)")


def _shows_an_empty_range(message: str) -> bool:
    for match in EMPTY_RANGE.finditer(message):
        low, high = (float(x) for x in match.groups() if x is not None)
        if low > high:
            return True
    return False


@pytest.mark.parametrize(
    ("name", "options", "epochs", "spe", "says"),
    [
        ("step", {"milestones": [5, 10]}, 1, SPE, "within the 1-epoch budget, which has no"),
        ("step", {"milestones": [1]}, 1, SPE, "use [] or more epochs"),
        ("step", {"milestones": [5, 10]}, 2, SPE, "within the 2-epoch budget: expected"),
        ("cosine", {"warmup_epochs": 1.0}, 1, 1, "the 1-step budget"),
        ("cosine", {"warmup_epochs": 1.0}, 1, 2, "the 2-step budget"),
        ("cosine", {"warmup_epochs": 1.0}, 1, 3, "must leave at least one step of decay"),
    ],
)
def test_a_budget_too_short_for_an_option_is_named_never_shown_as_an_empty_range(
    name, options, epochs, spe, says
):
    with pytest.raises(ValueError) as caught:
        build(name, make_optimizer(), steps_per_epoch=spe, epochs=epochs, **options)
    message = str(caught.value)
    assert says in message and not _shows_an_empty_range(message), message


def test_the_empty_range_detector_detects():
    assert _shows_an_empty_range("expected strictly increasing ints in [1, 0] (epochs=1)")
    assert _shows_an_empty_range("expected an int with 3 <= rank <= 2")
    assert not _shows_an_empty_range("expected an int with 1 <= rank <= 1 in [0, 1)")


@pytest.mark.parametrize(
    ("check", "kwargs"),
    [
        (check_int, {"low": 0, "high": -1}),
        (check_float, {"low": 1.0, "high": 0.5}),
        (check_float, {"low": 0.5, "high": 0.5, "low_open": True}),
    ],
)
def test_bounds_that_exclude_each_other_are_named_as_such(check, kwargs):
    with pytest.raises(ValueError) as caught:
        check("x", 0, **kwargs)
    message = str(caught.value)
    assert "which no number satisfies" in message and not _shows_an_empty_range(message)


def test_a_choice_gets_a_did_you_mean_only_when_one_is_close():
    with pytest.raises(
        ValueError, match=r"expected one of \['min', 'max'\]; did you mean mode='min'\?"
    ):
        check_choice("mode", "mn", ("min", "max"))
    with pytest.raises(ValueError, match=r"did you mean schedule='cosine'\?"):
        schedule_class("cosin")
    assert closest_choice("cosin", SCHEDULE_NAMES) == "cosine"  # the only name it begins
    assert closest_choice("sdg", ("sgd", "adam")) == "sgd"  # two letters swapped
    assert closest_choice("BF16", ("bf16", "fp32")) == "bf16"
    assert closest_choice("gpu", ("auto", "cpu", "cuda")) is None  # cpu would mislead
    assert closest_choice("", ("a", "b")) is None


@pytest.mark.parametrize("name", list(CASES))
def test_bad_param_group_lr_is_rejected(name):
    optimizer = make_optimizer(GROUP_LRS[:2])
    optimizer.param_groups[1]["lr"] = -0.1
    with pytest.raises(ValueError, match=re.escape("lr=-0.1")):
        build(name, optimizer, steps_per_epoch=SPE, epochs=EPOCHS)


# --- layers ---------------------------------------------------------------------------------
# The library's import floors: no chain of imports between its modules is more than four
# modules long (checks and the contract at the bottom, the registry at the top).
MAX_FLOORS = 4


def library_imports() -> dict[str, set[str]]:
    """Every library module (package __init__ files aside) and the library modules it imports."""
    import ast
    from pathlib import Path

    import autodrop

    root = Path(autodrop.__file__).parent
    imports = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            continue
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        assert "schedulefree" not in {m.split(".")[0] for m in found}, path  # duck typing only
        imports[".".join(parts)] = {m for m in found if m.split(".")[0] == "autodrop"}
    return imports


def test_the_library_has_four_floors():
    imports = library_imports()

    def depth(module: str) -> int:
        return 1 + max((depth(other) for other in imports[module]), default=0)

    floors = {module: depth(module) for module in imports}  # a circle would never return
    assert max(floors.values()) <= MAX_FLOORS
    assert floors["autodrop.checks"] == floors["autodrop.base"] == 1
    assert floors["autodrop.registry"] == max(floors.values())
    assert imports["autodrop.hd"] <= {"autodrop.angles", "autodrop.checks"}


def test_the_schedules_package_imports_only_its_own_modules():
    import ast
    from pathlib import Path

    import autodrop.schedules

    tree = ast.parse(Path(autodrop.schedules.__file__).read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert modules and all(m.startswith("autodrop.schedules.") for m in modules)
