"""AutoDrop (UAI 2024 variant) against the reference, scripted cases, validation, state."""

from __future__ import annotations

import io

import pytest
import torch

from autodrop import AutoDrop
from autodrop.autodrop import gaussian_smoothed
from tests.autodrop_reference import reference_autodrop
from tests.trajectories import drive, from_angles, make_params, noisy_quadratic

DEFAULTS = dict(window=64, rho=0.95, buffer_size=10, threshold=0.1, min_lr=0.0)


def run_both(trajectory, lr=0.1, **options):
    settings = {**DEFAULTS, **options}
    params, opt = make_params(lr)
    ours = drive(AutoDrop(opt, **settings), params, trajectory)
    ref = reference_autodrop(trajectory, lr, **settings)
    return ours, ref


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("window,buffer_size,threshold", [(1, 3, 0.1), (4, 5, 0.5), (7, 10, 2.0)])
def test_matches_reference_on_random_trajectories(seed, window, buffer_size, threshold):
    trajectory = noisy_quadratic(steps=600, seed=seed)
    ours, ref = run_both(
        trajectory,
        window=window,
        buffer_size=buffer_size,
        threshold=threshold,
        rho=0.7,
        min_lr=1e-3,
    )
    assert ours["drops"] == ref["drops"]
    assert ours["lrs"] == pytest.approx(ref["lrs"], rel=1e-12)
    assert ref["drops"], "the trajectory should make AutoDrop act at least once"


def test_measurements_match_reference_omegas():
    trajectory = noisy_quadratic(steps=300, seed=7)
    params, opt = make_params(0.1)
    scheduler = AutoDrop(opt, window=5, buffer_size=4)
    drive(scheduler, params, trajectory)
    records = scheduler.pop_measurements()
    ref = reference_autodrop(
        trajectory, 0.1, window=5, rho=0.95, buffer_size=4, threshold=0.1, min_lr=0.0
    )
    assert [r["step"] for r in records] == list(range(5, 301, 5))
    measured = [r["omega"] for r in records if r["omega"] is not None]
    assert measured == pytest.approx(ref["omegas"], abs=1e-3)
    assert [r["step"] for r in records if r["dropped"]] == scheduler.drop_steps
    assert scheduler.pop_measurements() == []


def test_rising_then_flat_angles_drop_only_once_flat():
    rising = [5.0 * i for i in range(1, 21)]  # +5 degrees a window: C keeps growing
    flat = [100.0] * 6
    ours, ref = run_both(from_angles(rising + flat), window=1, buffer_size=5)
    assert ours["drops"] == ref["drops"]
    # omega_i exists from the 3rd position (step 3); positions 1..21 carry the rising angles.
    assert ours["drops"], "a flat angle after a rise must cause a drop"
    assert min(ours["drops"]) > len(rising) + 1


def test_steadily_rising_angles_never_drop():
    ours, _ = run_both(from_angles([0.5 * i for i in range(1, 300)]), window=1, buffer_size=5)
    assert ours["drops"] == []


def test_no_drop_before_the_buffer_has_refilled():
    m = 6
    ours, ref = run_both(from_angles([90.0] * 120), window=1, buffer_size=m)
    assert ours["drops"] == ref["drops"]
    gaps = [b - a for a, b in zip(ours["drops"], ours["drops"][1:], strict=False)]
    assert gaps and min(gaps) >= m + 1
    # A constant angle means C never grows: drop exactly when the refilled buffer allows.
    assert set(gaps) == {m + 1}


def test_lr_floor_is_respected():
    ours, ref = run_both(
        from_angles([90.0] * 300), lr=0.1, window=1, buffer_size=2, rho=0.5, min_lr=0.01
    )
    assert min(ours["lrs"]) == pytest.approx(0.01)
    assert ours["lrs"] == pytest.approx(ref["lrs"])


def test_every_param_group_scaled_keeping_ratios():
    params, opt = make_params(0.1, groups=2)
    scheduler = AutoDrop(opt, window=1, buffer_size=2, rho=0.5)
    drive(scheduler, params, from_angles([90.0] * 20))
    assert scheduler.drop_steps
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs[1] / lrs[0] == pytest.approx(10.0)
    assert scheduler.get_last_lr() == lrs


def test_gaussian_smoothing_weights_follow_the_newest_value():
    assert gaussian_smoothed([3.0, 3.0, 3.0], 5.0) == 3.0
    value = gaussian_smoothed([0.0, 10.0, 10.0], 5.0)
    assert 20 / 3 < value < 10.0  # pulled towards the newest value, away from the plain mean


@pytest.mark.parametrize(
    "option,value",
    [
        ("window", 0),
        ("window", 2.5),
        ("rho", 0.0),
        ("rho", 1.0),
        ("rho", 1.5),
        ("buffer_size", 0),
        ("threshold", -0.1),
        ("min_lr", -1e-4),
        ("rho", True),
        ("threshold", True),
    ],
)
def test_bad_settings_name_the_value(option, value):
    _, opt = make_params(0.1)
    with pytest.raises(ValueError, match=f"{option}={value!r}"):
        AutoDrop(opt, **{option: value})


def test_frozen_parameters_are_not_watched():
    frozen = torch.nn.Parameter(torch.zeros(3), requires_grad=False)
    live = torch.nn.Parameter(torch.zeros(2))
    scheduler = AutoDrop(torch.optim.SGD([frozen, live], lr=0.1))
    assert len(scheduler.params) == 1 and scheduler.params[0] is live


def test_state_dict_round_trip_mid_run_is_bit_identical():
    trajectory = noisy_quadratic(steps=800, seed=3)
    settings = dict(window=3, buffer_size=4, threshold=0.3, rho=0.8, min_lr=0.0)
    params, opt = make_params(0.1)
    uninterrupted = drive(AutoDrop(opt, **settings), params, trajectory)

    params, opt = make_params(0.1)
    first = AutoDrop(opt, **settings)
    drive(first, params, trajectory[:401])  # stop mid-window
    blob = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": first.state_dict()}, blob)
    blob.seek(0)
    saved = torch.load(blob, weights_only=True)

    params2, opt2 = make_params(0.1)
    second = AutoDrop(opt2, **settings)
    opt2.load_state_dict(saved["opt"])
    second.load_state_dict(saved["sched"])
    rest = drive(second, params2, trajectory[401:])
    assert uninterrupted["lrs"][401:] == rest["lrs"]
    assert uninterrupted["drops"] == rest["drops"]


def test_works_in_a_real_training_loop():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    scheduler = AutoDrop(opt, window=8, buffer_size=4)
    x, y = torch.randn(256, 8), torch.randint(0, 2, (256,))
    for i in range(600):
        batch = slice((i * 32) % 256, (i * 32) % 256 + 32)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        opt.step()
        scheduler.step()
    assert scheduler.drop_steps and scheduler.lr < 0.2
    assert scheduler.lr == pytest.approx(0.2 * 0.95 ** len(scheduler.drop_steps))


def test_a_drop_never_raises_a_group_held_at_zero():
    rising = [5.0 * i for i in range(1, 21)]
    params, opt = make_params(0.1, groups=2)
    opt.param_groups[0]["lr"] = 0.0  # frozen group
    scheduler = AutoDrop(opt, window=1, buffer_size=5, rho=0.5, min_lr=1e-3)
    drive(scheduler, params, from_angles(rising + [100.0] * 30))
    assert scheduler.drop_steps
    assert opt.param_groups[0]["lr"] == 0.0
    expected = max(1e-3, 1.0 * 0.5 ** len(scheduler.drop_steps))
    assert opt.param_groups[1]["lr"] == pytest.approx(expected)


def test_epoch_fields_count_drops_and_read_the_last_omega_of_the_stream():
    params, opt = make_params(0.1)
    scheduler = AutoDrop(opt, window=1, buffer_size=5)
    assert scheduler.record_stream == "autodrop"
    assert scheduler.epoch_fields([], 0.1) == {"autodrop/drops": 0, "autodrop/omega": None}
    rising = [5.0 * i for i in range(1, 21)]
    drive(scheduler, params, from_angles(rising + [100.0] * 6))
    records = scheduler.pop_measurements()
    assert scheduler.drop_steps and records[0]["omega"] is None
    fields = scheduler.epoch_fields(records, 0.1)
    assert fields == {
        "autodrop/drops": len(scheduler.drop_steps),
        "autodrop/omega": records[-1]["omega"],
    }
    # A record without an omega (an epoch of no full window) keeps the last measured one.
    later = [*records, {"step": 99, "omega": None, "smoothed": None, "lr": 0.1, "dropped": False}]
    assert scheduler.epoch_fields(later, 0.1)["autodrop/omega"] == records[-1]["omega"]
