"""AutoDropV1 (2021 official-code variant) against the reference, scripted cases, state."""

from __future__ import annotations

import io

import pytest
import torch

from autodrop import AutoDropV1
from autodrop.angles import angle_from_dots, dots64
from tests.autodrop_reference import reference_autodrop_v1
from tests.trajectories import DIM, drive, from_angles, make_params, noisy_quadratic, write

DEFAULTS = dict(
    theta=0.01,
    drop_factor=0.2,
    extra_epochs=20,
    auto_theta=True,
    max_theta=1.0,
    min_lr=1e-4,
    average_weights=True,
)


def run_both(trajectory, steps_per_epoch, lr=0.1, **options):
    settings = {**DEFAULTS, **options}
    params, opt = make_params(lr)
    ours = drive(AutoDropV1(opt, steps_per_epoch, **settings), params, trajectory)
    ref = reference_autodrop_v1(trajectory, lr, steps_per_epoch, **settings)
    return ours, ref


def per_epoch(angles, steps_per_epoch):
    """A path whose per-epoch snapshots (1st step of each epoch) turn by the given angles."""
    points = from_angles(angles)
    return [
        points[min(t // steps_per_epoch, len(points) - 1)]
        for t in range(len(points) * steps_per_epoch)
    ]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("steps_per_epoch,extra_epochs,theta", [(2, 3, 1.0), (5, 4, 3.0)])
def test_matches_reference_on_random_trajectories(seed, steps_per_epoch, extra_epochs, theta):
    trajectory = noisy_quadratic(steps=steps_per_epoch * 150, seed=seed)
    ours, ref = run_both(
        trajectory, steps_per_epoch, extra_epochs=extra_epochs, theta=theta, max_theta=10.0
    )
    assert ref["drops"], "the trajectory should make AutoDropV1 act at least once"
    assert ours["drops"] == ref["drops"]
    assert ours["lrs"] == pytest.approx(ref["lrs"], rel=1e-12)
    for step, average in ref["averages"].items():
        assert torch.allclose(ours["params_after"][step], average, atol=1e-5)


def test_earliest_first_drop_is_epoch_23_with_official_settings():
    steps_per_epoch = 3
    angles = [90.0] * 40  # flat from the start: arms at the first possible epoch
    ours, ref = run_both(per_epoch(angles, steps_per_epoch), steps_per_epoch)
    assert ours["drops"] == ref["drops"]
    first_epoch = (ours["drops"][0] - 1) // steps_per_epoch + 1
    assert first_epoch == 23
    assert ours["drops"][0] % steps_per_epoch == 2  # decided after the epoch's 2nd step


def test_drops_are_at_least_extra_epochs_apart_and_theta_grows_to_its_cap():
    steps_per_epoch, extra = 2, 3
    params, opt = make_params(0.1)
    scheduler = AutoDropV1(
        opt, steps_per_epoch, extra_epochs=extra, theta=0.01, drop_factor=0.2, max_theta=1.0
    )
    trajectory = per_epoch([90.0] * 60, steps_per_epoch)
    thetas = []
    for x in trajectory:
        write(params, x)
        scheduler.step()
        thetas.append(scheduler.theta)
    drops = scheduler.drop_steps
    gaps = [(b - a) // steps_per_epoch for a, b in zip(drops, drops[1:], strict=False)]
    assert len(drops) >= 4 and min(gaps) >= extra
    assert sorted(set(thetas)) == pytest.approx([0.01, 0.05, 0.25, 1.0])
    assert scheduler.theta == 1.0


def test_changing_angles_never_arm():
    steps_per_epoch = 2
    angles = [90.0 + (5.0 if i % 2 else -5.0) for i in range(60)]  # diff is always 10 degrees
    ours, _ = run_both(
        per_epoch(angles, steps_per_epoch),
        steps_per_epoch,
        extra_epochs=2,
        theta=1.0,
        auto_theta=False,
    )
    assert ours["drops"] == []


def test_lr_floor():
    steps_per_epoch = 2
    ours, ref = run_both(
        per_epoch([90.0] * 80, steps_per_epoch),
        steps_per_epoch,
        lr=0.1,
        extra_epochs=2,
        min_lr=0.01,
        average_weights=False,
    )
    assert min(ours["lrs"]) == pytest.approx(0.01)
    assert ours["lrs"] == pytest.approx(ref["lrs"])


def test_weighted_average_written_into_the_parameters():
    steps_per_epoch = 4
    trajectory = noisy_quadratic(steps=steps_per_epoch * 40, seed=11)
    ours, ref = run_both(trajectory, steps_per_epoch, extra_epochs=3, theta=20.0, auto_theta=False)
    assert ref["averages"]
    for step, average in ref["averages"].items():
        assert torch.allclose(ours["params_after"][step], average, atol=1e-5)
        assert not torch.allclose(trajectory[step - 1], average, atol=1e-5)


@pytest.mark.parametrize(
    "option,value",
    [
        ("steps_per_epoch", 1),
        ("drop_factor", 0.0),
        ("drop_factor", 1.0),
        ("theta", -0.01),
        ("min_lr", -1.0),
        ("extra_epochs", 0),
        ("drop_factor", True),
        ("theta", True),
    ],
)
def test_bad_settings_name_the_value(option, value):
    _, opt = make_params(0.1)
    settings = {"steps_per_epoch": 10, option: value}
    with pytest.raises(ValueError, match=f"{option}={value!r}"):
        AutoDropV1(opt, **settings)


def test_state_dict_round_trip_mid_run_is_bit_identical():
    steps_per_epoch = 3
    trajectory = noisy_quadratic(steps=steps_per_epoch * 120, seed=5)
    settings = dict(extra_epochs=3, theta=3.0, auto_theta=True, max_theta=10.0)
    params, opt = make_params(0.1)
    uninterrupted = drive(AutoDropV1(opt, steps_per_epoch, **settings), params, trajectory)
    assert len(uninterrupted["drops"]) >= 2

    cut = uninterrupted["drops"][0] + 4  # mid-epoch, while armed again or counting
    params, opt = make_params(0.1)
    first = AutoDropV1(opt, steps_per_epoch, **settings)
    drive(first, params, trajectory[:cut])
    blob = io.BytesIO()
    torch.save(first.state_dict(), blob)
    blob.seek(0)
    params2, opt2 = make_params(0.1)
    opt2.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
    second = AutoDropV1(opt2, steps_per_epoch, **settings)
    second.load_state_dict(torch.load(blob, weights_only=True))
    rest = drive(second, params2, trajectory[cut:])
    assert uninterrupted["lrs"][cut:] == rest["lrs"]
    assert uninterrupted["drops"] == rest["drops"]
    for step, after in rest["params_after"].items():
        assert torch.equal(after, uninterrupted["params_after"][step + cut])


def test_the_authors_epsilon_arms_on_tiny_displacements_where_raw_angles_never_would():
    # Per-epoch displacements of length 3e-6 turning by 30 and 150 degrees in turn: raw angles
    # differ by 120 degrees (never within theta), but |p1| |p2| = 9e-12 is tiny against the
    # 1e-8 in the denominator, so every cosine reads ~0 and every angle ~90 degrees.
    steps_per_epoch, theta, length = 2, 0.5, 3e-6
    points = from_angles([30.0 if i % 2 else 150.0 for i in range(30)], step_length=length)
    trajectory = [
        points[min(t // steps_per_epoch, len(points) - 1)]
        for t in range(len(points) * steps_per_epoch)
    ]
    ours, ref = run_both(
        trajectory,
        steps_per_epoch,
        extra_epochs=3,
        theta=theta,
        auto_theta=False,
        average_weights=False,
    )
    assert ours["drops"] == ref["drops"] and ours["lrs"] == pytest.approx(ref["lrs"])
    assert ref["drops"], "with the authors' epsilon the flat ~90 degree angles must arm"
    raw = [
        angle_from_dots(*dots64([a - b], [b - c]))
        for a, b, c in zip(points[2:], points[1:], points, strict=False)
    ]
    assert all(abs(x - y) >= theta for x, y in zip(raw[1:], raw, strict=False)), (
        "without the epsilon the same path never arms"
    )


def test_a_zero_displacement_is_90_degrees_and_enters_the_history():
    steps_per_epoch = 2
    still = [torch.zeros(DIM, dtype=torch.float64)] * (4 * steps_per_epoch)
    params, opt = make_params(0.1)
    scheduler = AutoDropV1(opt, steps_per_epoch, theta=0.01)
    drive(scheduler, params, still)
    assert scheduler.history == [90.0, 90.0]  # epochs 3 and 4: zero displacements
    assert scheduler.armed  # two equal angles: diff 0 < theta


def test_max_theta_zero_means_no_cap():
    steps_per_epoch, extra = 2, 2
    params, opt = make_params(0.1)
    scheduler = AutoDropV1(
        opt,
        steps_per_epoch,
        theta=0.01,
        drop_factor=0.2,
        extra_epochs=extra,
        auto_theta=True,
        max_theta=0.0,
        min_lr=0.0,
    )
    ours = drive(scheduler, params, per_epoch([90.0] * 40, steps_per_epoch))
    ref = reference_autodrop_v1(
        per_epoch([90.0] * 40, steps_per_epoch),
        0.1,
        steps_per_epoch,
        theta=0.01,
        drop_factor=0.2,
        extra_epochs=extra,
        auto_theta=True,
        max_theta=0.0,
        min_lr=0.0,
        average_weights=True,
    )
    assert len(ours["drops"]) >= 4 and ours["drops"] == ref["drops"]
    assert scheduler.theta == pytest.approx(0.01 / 0.2 ** len(ours["drops"]))
    assert scheduler.theta > 1.0 and scheduler.theta == pytest.approx(ref["theta"])


def test_a_drop_never_raises_a_group_held_at_zero():
    steps_per_epoch = 2
    params, opt = make_params(0.1, groups=2)
    opt.param_groups[0]["lr"] = 0.0  # frozen group
    scheduler = AutoDropV1(opt, steps_per_epoch, extra_epochs=2, min_lr=1e-3, average_weights=False)
    drive(scheduler, params, per_epoch([90.0] * 30, steps_per_epoch))
    assert scheduler.drop_steps
    assert opt.param_groups[0]["lr"] == 0.0
    expected = max(1e-3, 1.0 * 0.2 ** len(scheduler.drop_steps))
    assert opt.param_groups[1]["lr"] == pytest.approx(expected)


def test_epoch_fields_count_drops_and_read_the_last_omega_of_the_stream():
    steps_per_epoch = 2
    params, opt = make_params(0.1)
    scheduler = AutoDropV1(opt, steps_per_epoch, extra_epochs=2, average_weights=False)
    assert scheduler.record_stream == "autodrop"
    assert scheduler.epoch_fields([], 0.1) == {"autodrop/drops": 0, "autodrop/omega": None}
    drive(scheduler, params, per_epoch([90.0] * 30, steps_per_epoch))
    records = scheduler.pop_measurements()
    omegas = [r["omega"] for r in records if r["omega"] is not None]
    assert scheduler.drop_steps and omegas
    assert scheduler.epoch_fields([*records, {"omega": None}], 0.1) == {
        "autodrop/drops": len(scheduler.drop_steps),
        "autodrop/omega": omegas[-1],
    }
