"""TLR (reconstruction): BASELINES.md section 2.5, in float64 where exactness matters."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from autodrop.tlr import PAPER_BOUND, PAPER_GAP_EPOCHS, TrainableLR, gap_steps

pytestmark = pytest.mark.filterwarnings("error")

DIM = 4
# A fixed SPD Hessian with eigenvalues 1 .. 2 in a rotated basis.
_Q, _ = torch.linalg.qr(
    torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
)
HESSIAN = _Q @ torch.diag(torch.tensor([1.0, 1.3, 1.6, 2.0], dtype=torch.float64)) @ _Q.T
START = torch.tensor([1.0, -2.0, 0.5, 1.5], dtype=torch.float64)


def vector_param(value: torch.Tensor = START) -> nn.Parameter:
    return nn.Parameter(value.clone())


def set_quadratic_grad(theta: nn.Parameter, noise: torch.Tensor | None = None) -> None:
    grad = HESSIAN @ theta.detach()  # f = theta^T H theta / 2, full batch
    theta.grad = grad if noise is None else grad + noise


def make(lr: float = 0.1, spe: int = 1, gap: float = 1.0, bound: float = 0.99, **sgd):
    theta = vector_param()
    optimizer = torch.optim.SGD([theta], lr=lr, **sgd)
    return (
        theta,
        optimizer,
        TrainableLR(optimizer, steps_per_epoch=spe, gap_epochs=gap, bound=bound),
    )


def quadratic_run(theta, optimizer, schedule, steps: int, noise_seed: int | None = None):
    """Full-batch (or noisy) SGD on the quadratic: the lr after every step and the pairs
    (theta before, gradient incl. weight decay, lr used) of every step."""
    g = torch.Generator().manual_seed(noise_seed) if noise_seed is not None else None
    lrs, steps_taken = [], []
    for _ in range(steps):
        noise = None if g is None else torch.randn(DIM, generator=g, dtype=torch.float64)
        set_quadratic_grad(theta, noise)
        before = theta.detach().clone()
        used = optimizer.param_groups[0]["lr"]
        wd = optimizer.param_groups[0]["weight_decay"]
        steps_taken.append((before, theta.grad + wd * before, used))
        optimizer.step()
        schedule.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs, steps_taken


def test_paper_settings_and_label():
    assert (PAPER_GAP_EPOCHS, PAPER_BOUND) == (0.33, 0.25)
    _, _, schedule = make(spe=391, gap=PAPER_GAP_EPOCHS, bound=PAPER_BOUND)
    assert schedule.gap_steps == 129
    assert TrainableLR.label == "TLR (reconstruction)"
    assert schedule.description == "TLR (reconstruction; p = 0.33 ep, c = 1/4)"


def test_gap_steps():
    assert gap_steps(391, 0.33) == 129
    assert gap_steps(10, 0.33) == 3
    assert gap_steps(10, 0.01) == 1


def test_zero_bound_freezes_the_lr():
    theta, optimizer, schedule = make(bound=0.0, momentum=0.9)
    lrs, _ = quadratic_run(theta, optimizer, schedule, 300, noise_seed=1)
    assert lrs == [0.1] * 300


def test_the_lr_changes_only_at_gap_ends():
    theta, optimizer, schedule = make(lr=0.05, spe=10, gap=0.33, bound=0.25, momentum=0.9)
    lrs, _ = quadratic_run(theta, optimizer, schedule, 30, noise_seed=2)
    trace = [0.05, *lrs]
    changed = [t for t in range(1, 31) if trace[t] != trace[t - 1]]
    assert changed and set(changed) <= {3, 6, 9, 12, 15, 18, 21, 24, 27, 30}
    records = schedule.pop_measurements()
    assert [r["step"] for r in records] == [3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
    assert schedule.pop_measurements() == []


def test_updates_stay_within_the_bound_under_wild_gradients():
    theta = vector_param()
    optimizer = torch.optim.SGD([theta], lr=0.1, momentum=0.9, nesterov=True)
    schedule = TrainableLR(optimizer, steps_per_epoch=3, gap_epochs=1.0, bound=0.25)
    g = torch.Generator().manual_seed(3)
    lrs = [0.1]
    for _ in range(1000):
        scale = 10.0 ** (6 * torch.rand((), generator=g, dtype=torch.float64) - 3)
        theta.grad = scale * torch.randn(DIM, generator=g, dtype=torch.float64)
        optimizer.step()
        schedule.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    ratios = [new / old for old, new in zip(lrs, lrs[1:], strict=False)]
    assert all(0.75 - 1e-12 <= r <= 1.25 + 1e-12 for r in ratios)
    assert all(lr > 0 and math.isfinite(lr) for lr in lrs)
    assert min(ratios) < 0.76 and max(ratios) > 1.24  # both ends of the bound are reached


def line_search_lr(
    before: torch.Tensor, after: torch.Tensor, grad: torch.Tensor, lr: float
) -> float:
    omega = (before - after) / lr
    return (torch.dot(grad, omega) / (omega @ HESSIAN @ omega)).item()


@pytest.mark.parametrize(
    "sgd", [{}, {"momentum": 0.5}, {"momentum": 0.5, "nesterov": True}, {"weight_decay": 0.1}]
)
def test_every_update_is_the_exact_line_search_clipped_to_the_bound(sgd):
    bound = 0.99
    theta, optimizer, schedule = make(lr=0.4, bound=bound, **sgd)
    lrs, taken = quadratic_run(theta, optimizer, schedule, 8)
    assert lrs[0] == 0.4  # the first gap holds no pair
    hessian = HESSIAN + sgd.get("weight_decay", 0.0) * torch.eye(DIM, dtype=torch.float64)
    unclipped = 0
    for t in range(1, 8):
        (before, grad, used), (after, _, _) = taken[t - 1], taken[t]
        omega = (before - after) / used  # the real step of step t, momentum included
        exact = (torch.dot(grad, omega) / (omega @ hessian @ omega)).item()
        current = lrs[t - 1]
        if abs(exact / current - 1) < bound:
            unclipped += 1
            assert abs(lrs[t] - exact) < 1e-10 * exact
        else:
            expected = current * (1 + math.copysign(bound, exact / current - 1))
            assert abs(lrs[t] - expected) < 1e-12 * expected
    assert unclipped >= 4


def test_first_update_for_plain_sgd_is_gtg_over_gthg():
    theta, optimizer, schedule = make(lr=0.4)
    lrs, _ = quadratic_run(theta, optimizer, schedule, 2)
    g = HESSIAN @ START
    assert abs(lrs[1] - (g @ g / (g @ HESSIAN @ g)).item()) < 1e-12


def test_weight_decay_enters_gradient_and_direction():
    # Zero data loss: the objective is wd |theta|^2 / 2, whose exact line-search lr is 1 / wd.
    theta = vector_param()
    optimizer = torch.optim.SGD([theta], lr=1.7, weight_decay=0.5, momentum=0.5)
    schedule = TrainableLR(optimizer, steps_per_epoch=1, gap_epochs=1.0, bound=0.5)
    for _ in range(2):
        theta.grad = torch.zeros(DIM, dtype=torch.float64)
        optimizer.step()
        schedule.step()
    assert abs(optimizer.param_groups[0]["lr"] - 2.0) < 1e-12


def test_far_below_the_line_search_lr_grows_by_the_bound_and_above_it_shrinks():
    theta, optimizer, schedule = make(lr=1e-3, bound=0.25)
    lrs, _ = quadratic_run(theta, optimizer, schedule, 2)
    assert lrs[1] == 1e-3 * 1.25
    theta, optimizer, schedule = make(lr=0.6, bound=0.25)  # stable (< 2/3) but past alpha*
    lrs, taken = quadratic_run(theta, optimizer, schedule, 2)
    assert line_search_lr(taken[0][0], taken[1][0], taken[0][1], 0.6) < 0.6
    assert lrs[1] < 0.6


def test_no_positive_curvature_moves_by_the_bound_without_nan():
    # Concave f = -theta^2 / 2: the steps keep descending (A > 0), so alpha grows by c.
    theta = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    optimizer = torch.optim.SGD([theta], lr=0.1)
    schedule = TrainableLR(optimizer, steps_per_epoch=1, gap_epochs=1.0, bound=0.25)
    for _ in range(3):
        theta.grad = -theta.detach().clone()
        optimizer.step()
        schedule.step()
    assert [r["factor"] for r in schedule.pop_measurements()] == [1.0, 1.25, 1.25]
    # Momentum against the new gradients: A < 0 and B < 0, so alpha shrinks by c.
    point = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    optimizer = torch.optim.SGD([point], lr=0.1, momentum=0.9)
    schedule = TrainableLR(optimizer, steps_per_epoch=1, gap_epochs=1.0, bound=0.25)
    for g in ((1.0, 0.0), (-0.5, 0.0), (-0.1, 0.0)):
        point.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
        schedule.step()
    records = schedule.pop_measurements()
    assert records[2]["line_search_lr"] is None and records[2]["factor"] == 0.75
    assert all(math.isfinite(r["lr"]) for r in records)


def test_a_skipped_optimizer_step_is_not_counted():
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    schedule = TrainableLR(optimizer, steps_per_epoch=2, gap_epochs=1.0)
    scaler = torch.amp.GradScaler("cpu")
    for step in range(3):
        optimizer.zero_grad()
        scaler.scale(model(torch.ones(4, 3)).sum()).backward()
        if step == 1:
            model.bias.grad.fill_(math.inf)
            state = schedule.state_dict()
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        if step == 1:
            after = schedule.state_dict()
            assert after["num_steps"] == state["num_steps"] == 1
            assert torch.equal(after["gap_sums"], state["gap_sums"])
            for old, new in zip(state["direction"], after["direction"], strict=True):
                assert torch.equal(old, new)
    assert schedule.num_steps == 2


def test_parameters_without_gradient_and_groups():
    theta, idle = vector_param(), vector_param()
    frozen = nn.Parameter(torch.ones(3), requires_grad=False)
    optimizer = torch.optim.SGD(
        [{"params": [theta, frozen]}, {"params": [idle], "lr": 0.01}], lr=0.1
    )
    schedule = TrainableLR(optimizer, steps_per_epoch=1, gap_epochs=1.0)
    alone, alone_optimizer, alone_schedule = make(lr=0.1, bound=PAPER_BOUND)
    for _ in range(5):
        set_quadratic_grad(theta)
        set_quadratic_grad(alone)
        for opt, sched in ((optimizer, schedule), (alone_optimizer, alone_schedule)):
            opt.step()
            sched.step()
        first, second = (group["lr"] for group in optimizer.param_groups)
        assert first == alone_optimizer.param_groups[0]["lr"]
        assert second == pytest.approx(first / 10, rel=1e-12)
    assert first != 0.1


def test_resume_mid_gap_is_bit_identical():
    options = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def build(value=START):
        theta = vector_param(value)
        optimizer = torch.optim.SGD([theta], **options)
        return (
            theta,
            optimizer,
            TrainableLR(optimizer, steps_per_epoch=5, gap_epochs=1.0, bound=0.25),
        )

    whole = build()
    whole_lrs, _ = quadratic_run(*whole, 20, noise_seed=4)

    theta, optimizer, schedule = build()
    g = torch.Generator().manual_seed(4)
    noises = [torch.randn(DIM, generator=g, dtype=torch.float64) for _ in range(20)]
    lrs = []
    for t in range(20):
        if t == 7:
            buffer = io.BytesIO()
            torch.save(
                {
                    "theta": theta.detach(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                },
                buffer,
            )
            buffer.seek(0)
            saved = torch.load(buffer, weights_only=True)
            theta, optimizer, schedule = build(torch.zeros(DIM, dtype=torch.float64))
            with torch.no_grad():
                theta.copy_(saved["theta"])
            optimizer.load_state_dict(saved["optimizer"])
            schedule.load_state_dict(saved["schedule"])
        set_quadratic_grad(theta, noises[t])
        optimizer.step()
        schedule.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == whole_lrs
    assert torch.equal(theta, whole[0])
    assert len(set(lrs)) > 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(steps_per_epoch=0), r"steps_per_epoch=0 is invalid: expected an int with 1 <="),
        (dict(steps_per_epoch=10, gap_epochs=0.0), r"gap_epochs=0.0 is invalid: .*0.0 <"),
        (dict(steps_per_epoch=10, bound=1.0), r"bound=1.0 is invalid: .*0.0 <= bound < 1.0"),
        (dict(steps_per_epoch=10, bound=-0.1), r"bound=-0.1 is invalid"),
        (dict(steps_per_epoch=10, gamma=0.0), r"gamma=0.0 is invalid: .*0.0 < gamma <= 1.0"),
    ],
)
def test_bad_input_names_the_value_and_range(options, message):
    optimizer = torch.optim.SGD([vector_param()], lr=0.1)
    with pytest.raises(ValueError, match=message):
        TrainableLR(optimizer, **options)


def test_a_zero_lr_is_rejected():
    optimizer = torch.optim.SGD([vector_param()], lr=0.0)
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['lr'\]=0.0 is invalid"):
        TrainableLR(optimizer, steps_per_epoch=10)


# ------------------------------------------------------------------------ two gloo processes
DDP_STEPS = 40


def traced_lrs(noise_seed: int) -> list[float]:
    theta = vector_param()
    optimizer = torch.optim.SGD([theta], lr=0.05, momentum=0.9)
    schedule = TrainableLR(optimizer, steps_per_epoch=4, gap_epochs=1.0, bound=0.25)
    return quadratic_run(theta, optimizer, schedule, DDP_STEPS, noise_seed=noise_seed)[0]


def rank_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        # Different gradient noise on each rank and no all-reduce: only the broadcast of rank
        # 0's factor keeps the lrs equal.
        torch.save(traced_lrs(noise_seed=20 + rank), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes: about 10-20 s on two cores
def test_ranks_hold_rank_zeros_lr(tmp_path):
    mp.spawn(rank_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert traced_lrs(20) != traced_lrs(21), "left alone, the ranks' lrs must differ"
    assert rank0 == rank1 == traced_lrs(20)


@pytest.mark.parametrize("pairs", [1, 7, 130])
def test_folded_gap_sums_are_the_per_step_sums_bit_for_bit(pairs) -> None:
    """The pairs kept between folds add up exactly as adding each at its step did:
    S += slope_{t-1}, K += (slope_{t-1} - a_t) / alpha_{t-1}, A += a_t, in order."""
    g = torch.Generator().manual_seed(pairs)
    _, optimizer, tlr = make()
    start = torch.randn(3, dtype=torch.float64, generator=g)
    tlr.gap_sums = start.clone()
    expected = start.clone()
    for _ in range(pairs):
        slope, a = (torch.randn((), dtype=torch.float64, generator=g) * 1e3 for _ in range(2))
        lr = float(torch.rand((), dtype=torch.float64, generator=g)) * 0.1 + 1e-4
        tlr._pairs.append((slope, a, lr))
        expected = expected + torch.stack([slope, (slope - a) / lr, a])
    tlr._fold_pairs()
    assert torch.equal(tlr.gap_sums, expected) and tlr._pairs == []
