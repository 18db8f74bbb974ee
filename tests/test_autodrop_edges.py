"""The exact edges of the AutoDrop core, on inputs whose floating-point values are exact.

Variant A (``AutoDrop``, PAPER.md step 4) drops when ``C_i - C_{i-1} < threshold``: a smoothed
difference exactly equal to the threshold does NOT drop (growth of exactly the threshold still
counts as growth). Variant B (``AutoDropV1``) arms only strictly inside ``-theta < diff < theta``:
a difference of exactly +-theta does not arm. The authors' angle divides by
``|a| |b| + 1e-8`` and clamps the cosine to +-(1 - 1e-16); variant A's angle clamps to +-1, so
rounding can never push ``acos`` out of its domain. Each test here fails if its boundary moves.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import autodrop.autodrop as variant_a
from autodrop import AutoDrop, AutoDropV1
from autodrop.angles import authors_angle_from_dots, dots64
from tests.trajectories import DIM, drive, make_params, write

# The authors' angle of two equal unit vectors, and of two collinear vectors so long that the
# 1e-8 vanishes beside |a| |b| (the cosine rounds to 1 and the clamp sets 1 - 1e-16).
EQUAL_UNIT_VECTORS_DEG = math.degrees(math.acos(1 / (1 + 1e-8)))
CLAMPED_COLLINEAR_DEG = math.degrees(math.acos(1 - 1e-16))


def point(x: float, y: float) -> torch.Tensor:
    """A parameter vector (padded to DIM) with (x, y) in its first two coordinates."""
    flat = torch.zeros(DIM, dtype=torch.float64)
    flat[0], flat[1] = x, y
    return flat


def path(*steps: tuple[float, float]) -> list[torch.Tensor]:
    """Positions from the origin along ``steps`` (each exactly representable in float32)."""
    positions, x, y = [point(0.0, 0.0)], 0.0, 0.0
    for dx, dy in steps:
        x, y = x + dx, y + dy
        positions.append(point(x, y))
    return positions


# ------------------------------------------------------------------------- variant A (paper)


def smoothed_values(threshold: float, trajectory: list[torch.Tensor]) -> tuple[list, list]:
    """(smoothed values, drop steps) of AutoDrop at window 1 and buffer 1, where C_i = omega_i
    exactly (the Gaussian filter of one value is that value)."""
    params, opt = make_params(0.1)
    scheduler = AutoDrop(opt, window=1, buffer_size=1, threshold=threshold, rho=0.5)
    drive(scheduler, params, trajectory)
    smoothed = [r["smoothed"] for r in scheduler.pop_measurements() if r["smoothed"] is not None]
    return smoothed, scheduler.drop_steps


def test_a_smoothed_rise_of_exactly_the_threshold_does_not_drop():
    # Steps east, east, north: omega is 0 then exactly 90 degrees, so C_i - C_{i-1} = 90.0.
    trajectory = path((1.0, 0.0), (1.0, 0.0), (0.0, 1.0))
    smoothed, drops = smoothed_values(90.0, trajectory)
    assert smoothed == [0.0, 90.0]
    assert drops == [], "C_i - C_{i-1} == threshold is growth: the paper drops only below it"
    _, drops = smoothed_values(math.nextafter(90.0, math.inf), trajectory)
    assert drops == [4], "one ulp above the difference, the same path drops"


def test_the_default_threshold_is_compared_exactly(monkeypatch):
    # omegas scripted through the paper's default threshold 0.1: 0.1 - 0.0 == 0.1 (no drop),
    # 0.3 - 0.2 == 0.09999999999999998 < 0.1 (drop).
    for omegas, dropped in (([0.0, 0.1], False), ([0.2, 0.3], True)):
        script = iter(omegas)
        monkeypatch.setattr(variant_a, "angle_degrees", lambda a, b, s=script: next(s))
        params, opt = make_params(0.1)
        scheduler = AutoDrop(opt, window=1, buffer_size=1, threshold=0.1)
        drive(scheduler, params, path((1.0, 0.0), (1.0, 0.0), (1.0, 0.0)))  # two omegas
        assert bool(scheduler.drop_steps) is dropped, (omegas, omegas[1] - omegas[0])


def rounding_out_of_range_steps(factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Exactly collinear float32 steps a and ``factor`` * a whose float64 cosine
    <a, b> / sqrt(|a|^2 |b|^2) rounds beyond +-1 (found by a seeded search; few are needed)."""
    rng = np.random.default_rng(0)
    params, _ = make_params(0.1)
    for _ in range(100_000):
        mantissas = rng.integers(2**21, 2**22, 2) * rng.choice([-1, 1], 2)
        step = point(*np.ldexp(mantissas.astype(np.float64), rng.integers(-30, -10, 2)))
        if not all(torch.equal(v.float().double(), v) for v in (step, step * factor)):
            continue  # a and factor * a must both be float32 values
        write(params, step)
        a = [p.detach().clone() for p in params]
        write(params, step * factor)
        b = [p.detach().clone() for p in params]
        ab, aa, bb = dots64(b, a)
        if abs(ab / math.sqrt(aa * bb)) > 1.0:
            return step, step * factor
    raise AssertionError("no rounding-out-of-range pair found")


@pytest.mark.parametrize(("factor", "expected"), [(3.0, 0.0), (-3.0, 180.0)])
def test_exactly_collinear_steps_give_0_or_180_degrees_never_a_domain_error(factor, expected):
    first, second = rounding_out_of_range_steps(factor)
    trajectory = [point(0.0, 0.0), first, first + second]
    assert torch.equal((first + second).float().double() - first, second)  # exact in float32
    params, opt = make_params(0.1)
    scheduler = AutoDrop(opt, window=1, buffer_size=5)
    drive(scheduler, params, trajectory)
    omegas = [r["omega"] for r in scheduler.pop_measurements() if r["omega"] is not None]
    assert omegas == [expected]
    assert not math.isnan(omegas[0])


# ------------------------------------------------------------------ variant B (2021 code)


def epochs(*snapshots: torch.Tensor, steps_per_epoch: int = 2) -> list[torch.Tensor]:
    """A trajectory whose per-epoch snapshots (after each epoch's 1st step) are ``snapshots``."""
    return [snapshot for snapshot in snapshots for _ in range(steps_per_epoch)]


def v1_after(trajectory: list[torch.Tensor], theta: float) -> AutoDropV1:
    params, opt = make_params(0.1)
    scheduler = AutoDropV1(opt, 2, theta=theta, extra_epochs=5, average_weights=False)
    drive(scheduler, params, trajectory)
    return scheduler


# Displacements east, east, north: history [EQUAL_UNIT_VECTORS_DEG, 90.0], diff > 0; and
# east, north, north: history [90.0, EQUAL_UNIT_VECTORS_DEG], diff < 0.
RISING = epochs(*path((1.0, 0.0), (1.0, 0.0), (0.0, 1.0)))
FALLING = epochs(*path((1.0, 0.0), (0.0, 1.0), (0.0, 1.0)))


@pytest.mark.parametrize("trajectory", [RISING, FALLING], ids=["diff=+theta", "diff=-theta"])
def test_an_angle_difference_of_exactly_theta_does_not_arm(trajectory):
    history = v1_after(trajectory, theta=1.0).history
    assert sorted(history) == [EQUAL_UNIT_VECTORS_DEG, 90.0]
    theta = abs(history[1] - history[0])  # the very double the scheduler compares
    assert not v1_after(trajectory, theta).armed, "armed on |diff| == theta: must be strict"
    assert v1_after(trajectory, math.nextafter(theta, math.inf)).armed


def test_theta_zero_never_arms_even_on_identical_angles():
    still = epochs(*path((1.0, 0.0), (1.0, 0.0), (1.0, 0.0)))
    assert v1_after(still, theta=0.0).history == [EQUAL_UNIT_VECTORS_DEG] * 2
    assert not v1_after(still, theta=0.0).armed  # diff 0.0 is not inside (-0, 0)
    assert v1_after(still, theta=5e-324).armed  # the smallest positive theta arms


def test_the_authors_epsilon_two_equal_unit_vectors():
    assert authors_angle_from_dots(1.0, 1.0, 1.0) == EQUAL_UNIT_VECTORS_DEG
    assert EQUAL_UNIT_VECTORS_DEG == pytest.approx(0.008102846782564083, rel=1e-12)
    # Through the scheduler: unit displacements east, east give exactly that angle.
    history = v1_after(epochs(*path((1.0, 0.0), (1.0, 0.0))), theta=1.0).history
    assert history == [EQUAL_UNIT_VECTORS_DEG]


@pytest.mark.parametrize("length", [2.0**-20, 2.0**-30])
def test_the_authors_epsilon_on_exactly_collinear_tiny_steps(length):
    # |a| |b| = length^2 is tiny beside 1e-8: the cosine is length^2 / (length^2 + 1e-8),
    # nowhere near 1, and two collinear steps read close to 90 degrees.
    history = v1_after(epochs(*path((length, 0.0), (length, 0.0))), theta=1.0).history
    expected = math.degrees(math.acos(length**2 / (length**2 + 1e-8)))
    assert history == [expected]
    assert 89.0 < expected < 90.0


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_the_authors_clamp_on_long_collinear_steps(direction):
    # Steps of length 2^20: 1e-8 is lost beside |a| |b| = 2^40, the cosine rounds to +-1 and
    # the clamp makes it +-(1 - 1e-16): the angle is never exactly 0 or 180 degrees.
    length = 2.0**20
    history = v1_after(epochs(*path((length, 0.0), (direction * length, 0.0))), 1.0).history
    assert history == [math.degrees(math.acos(direction * (1 - 1e-16)))]
    assert 0.0 < history[0] < 180.0
    assert CLAMPED_COLLINEAR_DEG == pytest.approx(8.537736462515939e-07, rel=1e-12)
    assert authors_angle_from_dots(2.0**40, 2.0**40, 2.0**40) == CLAMPED_COLLINEAR_DEG
