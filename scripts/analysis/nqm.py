"""Noisy quadratic model (NQM) of the paper's Figures 1-2 and its Theorem 3.2 check.

Model: x in R^dim (dim = 200), A = diag(1/10, 2/10, ..., dim/10), per-step loss
1/2 (x - c)^T A (x - c) with c ~ N(0, Sigma) drawn afresh each step. The paper does not state
Sigma; we use Sigma = A^-1, so the stochastic gradient A (x - c) has noise covariance
A Sigma A = A. Plain GD: x <- x - lr * A (x - c). Everything is torch float64 on the CPU.

Conventions (chosen here, the paper leaves them open):
- start point x0 = 10 * ones (deterministic; the seed only drives the noise c);
- the recorded loss is the *expected* loss E_c[loss(x)] = 1/2 x^T A x + 1/2 tr(A Sigma), whose
  irreducible part 1/2 tr(A Sigma) = dim / 2 is ``noise_floor``;
- iterations are counted from 1 (iteration t is the step x_{t-1} -> x_t); entry i of a trace
  belongs to iteration i + 1: the loss at x_{i+1} and the angle between the displacements
  d_{i+1} = x_{i+1} - x_i and d_i (NaN for iteration 1, which has no previous displacement);
- runs of several learning rates share the noise draws (common random numbers), so their
  differences are due to the learning rate, not to luck.

Theorem 3.2 check. Per coordinate, x_{t+1} = (1 - lr a) x_t + lr a c_t. At stationarity
Var x = lr a s^2 / (2 - lr a), hence for the displacement d_t = -lr a (x_t - c_t):
    E[d_t^2]         =  2 lr^2 a^2 s^2 / (2 - lr a),
    E[d_t d_{t-1}]   = -  lr^3 a^3 s^2 / (2 - lr a).
The ratio of their sums over coordinates is exactly the theorem's
C* = -(lr/2) sum(a^3 s^2 / (2 - lr a)) / sum(a^2 s^2 / (2 - lr a)).
It is a ratio of expectations; the expected cosine E[<d_t, d_{t-1}> / (|d_t| |d_{t-1}|)],
which a run measures, differs by norm fluctuations of order 1 / effective dimension
(``stationary_angle_monte_carlo`` samples it exactly). With dim = 200 the difference is tiny:
for lr 0.06 / 0.03 / 0.01 / 0.001 the theorem gives 115.60 / 101.92 / 93.87 / 90.38 degrees,
the exact stationary law 115.59 / 101.94 / 93.90 / 90.42, and the last third of 6000-iteration
runs (4 replicas, seed 0) 115.50 / 101.88 / 93.87 / 90.34.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from autodrop.checks import check_float, check_int

DIM = 200
START_VALUE = 10.0
FIG1_LRS = (0.06, 0.03, 0.01, 0.001)
DROP_RULE_ITERATIONS = 600  # all drops of the default rule happen within ~450 iterations
LIMIT_TAIL_FRACTION = 1 / 3  # lr 0.001 needs ~3000 iterations to saturate from x0 = 10


def nqm_curvatures(dim: int = DIM) -> torch.Tensor:
    """Diagonal of A: (1/10, 2/10, ..., dim/10) in float64."""
    if dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    return torch.arange(1, dim + 1, dtype=torch.float64) / 10.0


def nqm_noise_var(curvatures: torch.Tensor) -> torch.Tensor:
    """Diagonal of Sigma = A^-1 (so the gradient noise covariance is A)."""
    return 1.0 / curvatures


def max_stable_lr(dim: int = DIM) -> float:
    """GD on the NQM is stable iff lr * max(a) < 2."""
    return 2.0 / float(nqm_curvatures(dim).max())


@dataclass(frozen=True)
class FixedLRTrace:
    """Traces of fixed-lr runs; loss and angle have shape (len(lrs), replicas, iterations)."""

    lrs: np.ndarray
    loss: np.ndarray
    angle: np.ndarray
    noise_floor: float


@dataclass(frozen=True)
class DropRuleTrace:
    """Trace of one drop-rule run: lr, loss and angle per iteration, plus drop iterations.

    ``drop_iterations`` holds the iterations (1-based) at whose end the lr was lowered, so
    ``lr[d - 1]`` is the rate before drop d and ``lr[d]`` (when it exists) the rate after it.
    """

    lr: np.ndarray
    loss: np.ndarray
    angle: np.ndarray
    drop_iterations: np.ndarray
    noise_floor: float


def _check_lr(name: str, lr: float, dim: int) -> None:
    """``lr`` must lie in GD's stable range (0, max_stable_lr(dim))."""
    check_float(name, lr, low=0.0, high=max_stable_lr(dim), low_open=True, high_open=True)


def _rowwise_angle_degrees(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Angle in degrees between matching vectors along the last axis (cosine clamped)."""
    cosine = (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))
    return torch.rad2deg(torch.arccos(cosine.clamp(-1.0, 1.0)))


def _expected_loss(x: torch.Tensor, curvatures: torch.Tensor, noise_floor: float) -> torch.Tensor:
    return 0.5 * (curvatures * x * x).sum(-1) + noise_floor


def simulate_fixed_lr(
    lr: float | Sequence[float],
    iterations: int,
    seed: int = 0,
    replicas: int = 1,
    dim: int = DIM,
    start: float = START_VALUE,
) -> FixedLRTrace:
    """Run GD on the NQM for each lr (and ``replicas`` independent noise streams) at once."""
    lrs = [float(v) for v in np.atleast_1d(np.asarray(lr, dtype=np.float64))]
    if not lrs:
        raise ValueError("lr must be a number or a non-empty sequence of numbers")
    for value in lrs:
        _check_lr("lr", value, dim)
    check_int("iterations", iterations, low=2)
    check_int("replicas", replicas, low=1)

    curvatures = nqm_curvatures(dim)
    noise_std = nqm_noise_var(curvatures).sqrt()
    noise_floor = 0.5 * dim  # 1/2 tr(A Sigma) = 1/2 tr(I)
    step_sizes = torch.tensor(lrs, dtype=torch.float64).view(-1, 1, 1) * curvatures
    generator = torch.Generator().manual_seed(seed)

    x = torch.full((len(lrs), replicas, dim), start, dtype=torch.float64)
    previous_step = None
    loss = torch.empty(len(lrs), replicas, iterations, dtype=torch.float64)
    angle = torch.full_like(loss, math.nan)
    for t in range(iterations):
        c = torch.randn(replicas, dim, generator=generator, dtype=torch.float64) * noise_std
        step = -step_sizes * (x - c)
        x = x + step
        loss[..., t] = _expected_loss(x, curvatures, noise_floor)
        if previous_step is not None:
            angle[..., t] = _rowwise_angle_degrees(step, previous_step)
        previous_step = step
    return FixedLRTrace(np.array(lrs), loss.numpy(), angle.numpy(), noise_floor)


def simulate_drop_rule(
    lr0: float = 0.06,
    floor: float = 0.001,
    factor: float = 0.5,
    avg: int = 20,
    threshold: float = 0.01,
    iterations: int = DROP_RULE_ITERATIONS,
    seed: int = 0,
    dim: int = DIM,
    start: float = START_VALUE,
) -> DropRuleTrace:
    """GD on the NQM with the toy drop rule of Fig. 2.

    The angles are grouped into consecutive blocks of ``avg`` iterations. When a block is
    complete and the block before it was completed under the same lr, the rule compares their
    means: if mean(new) - mean(old) < threshold (degrees, signed: the angle has stopped growing)
    the lr becomes max(floor, factor * lr) and the blocks start afresh, so a drop needs two fresh
    blocks after the previous one (the first angle after a drop, which pairs an old-rate step
    with a new-rate one, opens the first fresh block). A drop that would not change the lr
    (already at the floor) is not made. The comparison is signed because per-iteration angles
    scatter by ~5 degrees, so 20-iteration means differ by ~1.5 degrees at saturation and an
    absolute |change| < 0.01 test would almost never fire.
    """
    _check_lr("lr0", lr0, dim)
    check_float("floor", floor, low=0.0, high=lr0, low_open=True)
    check_float("factor", factor, low=0.0, high=1.0, low_open=True, high_open=True)
    check_int("avg", avg, low=1)
    check_int("iterations", iterations, low=2)

    curvatures = nqm_curvatures(dim)
    noise_std = nqm_noise_var(curvatures).sqrt()
    noise_floor = 0.5 * dim
    generator = torch.Generator().manual_seed(seed)

    x = torch.full((dim,), start, dtype=torch.float64)
    lr = lr0
    previous_step = None
    block: list[float] = []
    previous_block_mean: float | None = None
    drops: list[int] = []
    lr_trace = np.empty(iterations)
    loss = np.empty(iterations)
    angle = np.full(iterations, math.nan)
    for t in range(iterations):
        c = torch.randn(dim, generator=generator, dtype=torch.float64) * noise_std
        step = -lr * curvatures * (x - c)
        x = x + step
        lr_trace[t] = lr
        loss[t] = float(_expected_loss(x, curvatures, noise_floor))
        if previous_step is not None:
            angle[t] = float(_rowwise_angle_degrees(step, previous_step))
            block.append(angle[t])
        previous_step = step
        if len(block) < avg:
            continue
        block_mean = sum(block) / avg
        block = []
        growth_stopped = (
            previous_block_mean is not None and block_mean - previous_block_mean < threshold
        )
        if growth_stopped and lr > floor:
            lr = max(floor, factor * lr)
            drops.append(t + 1)
            previous_block_mean = None
        else:
            previous_block_mean = block_mean
    return DropRuleTrace(lr_trace, loss, angle, np.array(drops, dtype=np.int64), noise_floor)


def stationary_displacement_moments(
    lr: float, curvatures: torch.Tensor, noise_var: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-coordinate stationary E[d_t^2] and E[d_t d_{t-1}] of GD on a diagonal NQM."""
    damping = 2.0 - lr * curvatures
    if bool((damping <= 0).any()):
        raise ValueError(f"learning rate {lr!r} is unstable: needs lr * max(a) < 2")
    variance = 2.0 * lr**2 * curvatures**2 * noise_var / damping
    lag_one = -(lr**3) * curvatures**3 * noise_var / damping
    return variance, lag_one


def predicted_limit_angle(
    lr: float, curvatures: torch.Tensor | None = None, noise_var: torch.Tensor | None = None
) -> float:
    """Theorem 3.2's limiting angle in degrees (defaults: the NQM's A and Sigma = A^-1)."""
    if lr <= 0:
        raise ValueError(f"learning rate must be positive, got {lr!r}")
    curvatures = nqm_curvatures() if curvatures is None else curvatures.double()
    noise_var = nqm_noise_var(curvatures) if noise_var is None else noise_var.double()
    damping = 2.0 - lr * curvatures
    if bool((damping <= 0).any()):
        raise ValueError(f"learning rate {lr!r} is unstable: needs lr * max(a) < 2")
    weights = curvatures**2 * noise_var / damping
    cosine = -(lr / 2.0) * float((curvatures * weights).sum() / weights.sum())
    return math.degrees(math.acos(max(-1.0, min(1.0, cosine))))


def stationary_angle_monte_carlo(
    lr: float, samples: int = 20000, seed: int = 0, dim: int = DIM
) -> float:
    """Mean angle between consecutive displacements drawn from the exact stationary law.

    Coordinates are independent; each (d_t, d_{t-1}) pair is bivariate normal with the moments
    of ``stationary_displacement_moments``. This is the exact expected angle (up to sampling
    error) that a long fixed-lr run settles at, free of the transient.
    """
    _check_lr("lr", lr, dim)
    check_int("samples", samples, low=1)
    curvatures = nqm_curvatures(dim)
    variance, lag_one = stationary_displacement_moments(lr, curvatures, nqm_noise_var(curvatures))
    rho = lag_one / variance
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(2, samples, dim, generator=generator, dtype=torch.float64)
    previous = z[0] * variance.sqrt()
    current = (rho * z[0] + (1.0 - rho**2).sqrt() * z[1]) * variance.sqrt()
    return float(_rowwise_angle_degrees(current, previous).mean())


def saturated_angle(trace: FixedLRTrace, tail_fraction: float = LIMIT_TAIL_FRACTION) -> np.ndarray:
    """Mean angle over the last ``tail_fraction`` of the iterations, per lr (all replicas)."""
    if not 0.0 < tail_fraction <= 1.0:
        raise ValueError(f"tail_fraction {tail_fraction!r} must lie in (0, 1]")
    iterations = trace.angle.shape[-1]
    start = min(iterations - 1, max(1, int(iterations * (1.0 - tail_fraction))))
    return trace.angle[..., start:].mean(axis=(1, 2))


def write_results(
    out_dir: str | Path,
    iterations: int = 6000,
    seed: int = 0,
    replicas: int = 4,
    mc_samples: int = 20000,
) -> list[Path]:
    """Write the Fig. 1 and Fig. 2 traces to nqm.npz and the limit-angle check to nqm.json.

    The npz holds replica 0 of the fixed-lr runs; the json's simulated limit is the mean angle
    over the last third of the iterations of all replicas.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fixed = simulate_fixed_lr(list(FIG1_LRS), iterations, seed=seed, replicas=replicas)
    drop = simulate_drop_rule(iterations=min(iterations, DROP_RULE_ITERATIONS), seed=seed)
    npz_path = out / "nqm.npz"
    np.savez_compressed(
        npz_path,
        fixed_lrs=fixed.lrs,
        fixed_loss=fixed.loss[:, 0],
        fixed_angle=fixed.angle[:, 0],
        drop_lr=drop.lr,
        drop_loss=drop.loss,
        drop_angle=drop.angle,
        drop_iterations=drop.drop_iterations,
    )
    measured = saturated_angle(fixed, LIMIT_TAIL_FRACTION)
    summary = {
        "iterations": iterations,
        "replicas": replicas,
        "seed": seed,
        "dim": DIM,
        "start": START_VALUE,
        "sigma": "A^-1",
        "loss": "expected loss 1/2 x^T A x + 1/2 tr(A Sigma)",
        "noise_floor": fixed.noise_floor,
        "limit_angle": [
            {
                "lr": float(lr),
                "theorem_3_2_deg": predicted_limit_angle(float(lr)),
                "stationary_monte_carlo_deg": stationary_angle_monte_carlo(
                    float(lr), samples=mc_samples, seed=seed
                ),
                "simulated_last_third_deg": float(angle),
            }
            for lr, angle in zip(fixed.lrs, measured, strict=True)
        ],
        "drop_rule": {
            "iterations": len(drop.lr),
            "drop_iterations": drop.drop_iterations.tolist(),
            "lr_levels": sorted({float(v) for v in drop.lr}, reverse=True),
            "final_loss": float(drop.loss[-1]),
        },
    }
    json_path = out / "nqm.json"
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    return [npz_path, json_path]
