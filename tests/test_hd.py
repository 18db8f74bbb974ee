"""HD (SGD-HD, SGDN-HD, SGDM-HD): BASELINES.md section 1.8, in float64 where exactness matters."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from autodrop.angles import sum_of_dots
from autodrop.hd import BETA_GRID, SGDHD
from autodrop.schedules.optimizer_lr import HypergradientLR

pytestmark = pytest.mark.filterwarnings("error")

VARIANTS = {
    "sgd": dict(momentum=0.0),
    "nesterov": dict(momentum=0.9, nesterov=True),
    "heavy_ball": dict(momentum=0.9, dampening=0.1),
}


def tiny_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def batches(count: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(16, 4, generator=g, dtype=torch.float64),
            torch.randint(0, 3, (16,), generator=g),
        )
        for _ in range(count)
    ]


def train(model: nn.Module, optimizer: torch.optim.Optimizer, data) -> list[float]:
    lrs = []
    for inputs, labels in data:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(inputs), labels).backward()
        optimizer.step()
        lrs.append(float(optimizer.param_groups[0]["lr"]))
    return lrs


def scalar_param(value: float) -> nn.Parameter:
    return nn.Parameter(torch.tensor([value], dtype=torch.float64))


def test_beta_grid_is_the_papers():
    assert BETA_GRID == (1e-3, 1e-4, 1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_beta_zero_is_torch_sgd(variant):
    options = dict(VARIANTS[variant], weight_decay=5e-4)
    data = batches(20)
    ours, reference = tiny_mlp(), tiny_mlp()
    hd = SGDHD(ours.parameters(), lr=0.1, beta=0.0, **options)
    lrs = train(ours, hd, data)
    train(reference, torch.optim.SGD(reference.parameters(), lr=0.1, **options), data)
    assert lrs == [0.1] * 20
    for mine, theirs in zip(ours.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-15)


@pytest.mark.parametrize("variant", VARIANTS)
def test_first_step_keeps_the_initial_lr_and_lr_reads_as_a_float(variant):
    model = tiny_mlp()
    hd = SGDHD(model.parameters(), lr=0.05, beta=1e-3, **VARIANTS[variant])
    train(model, hd, batches(1))
    assert hd.lr == 0.05
    train(model, hd, batches(1, seed=2))
    assert hd.lr != 0.05
    # alpha stays on the parameters' device (no host sync per step); .lr reads it as a float.
    lr = hd.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and lr.dim() == 0 and lr.dtype == torch.float64
    assert type(hd.lr) is float and hd.lr == lr.item()


def test_second_step_lr_by_hand():
    a, alpha0, beta, theta1 = 3.0, 0.1, 0.02, 1.7
    theta = scalar_param(theta1)
    hd = SGDHD([theta], lr=alpha0, beta=beta)
    for _ in range(2):
        theta.grad = a * theta.detach().clone()  # f = a theta^2 / 2
        hd.step()
    theta2 = theta1 * (1 - alpha0 * a)
    assert abs(hd.lr - (alpha0 + beta * (a * theta2) * (a * theta1))) < 1e-12


def quadratic_lrs(alpha_times_a: float, a: float = 2.0, beta: float = 0.05) -> list[float]:
    theta = scalar_param(1.0)
    hd = SGDHD([theta], lr=alpha_times_a / a, beta=beta)
    out = []
    for _ in range(4):
        theta.grad = a * theta.detach().clone()
        hd.step()
        out.append(hd.lr * a)
    return out


def test_aligned_gradients_raise_the_lr():
    trace = quadratic_lrs(0.01)
    assert trace == pytest.approx([0.01, 0.406, 0.6389, 0.6888], abs=1e-4)
    assert all(later >= earlier for earlier, later in zip(trace, trace[1:], strict=False))


def test_overshoot_lowers_the_lr():
    trace = quadratic_lrs(1.5)
    assert trace == pytest.approx([1.5, 1.3, 1.27, 1.2676], abs=1e-4)
    assert trace[2] < trace[1] < trace[0]


@pytest.mark.parametrize("variant", ["nesterov", "heavy_ball"])
def test_the_previous_direction_enters_not_the_previous_gradient(variant):
    # <g3, g2> > 0 but <g3, d2> < 0 for both momentum rules (mu = 0.9): alpha must fall.
    grads = [(1.0, 0.0), (-0.5, 1.0), (-1.0, -0.2)]
    options = dict(momentum=0.9, nesterov=variant == "nesterov")
    point = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    hd = SGDHD([point], lr=0.1, beta=0.01, **options)
    plain_point = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    plain = SGDHD([plain_point], lr=0.1, beta=0.01)
    lrs, plain_lrs = [], []
    for g in grads:
        point.grad = torch.tensor(g, dtype=torch.float64)
        plain_point.grad = point.grad.clone()
        hd.step()
        plain.step()
        lrs.append(hd.lr)
        plain_lrs.append(plain.lr)
    v2 = torch.tensor([0.9 * 1.0 - 0.5, 1.0], dtype=torch.float64)
    d2 = torch.tensor(grads[1], dtype=torch.float64) + 0.9 * v2 if options["nesterov"] else v2
    g3 = torch.tensor(grads[2], dtype=torch.float64)
    assert torch.dot(g3, torch.tensor(grads[1], dtype=torch.float64)) > 0 > torch.dot(g3, d2)
    assert lrs[2] == pytest.approx(lrs[1] + 0.01 * torch.dot(g3, d2).item(), abs=1e-15)
    assert lrs[2] < lrs[1]
    assert plain_lrs[2] > plain_lrs[1]


def test_weight_decay_enters_the_hypergradient_and_grad_is_not_modified():
    point = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    hd = SGDHD([point], lr=0.1, beta=0.5, weight_decay=0.1, momentum=0.9)
    for _ in range(3):
        point.grad = torch.zeros(2, dtype=torch.float64)  # zero data loss: g = wd * theta
        hd.step()
        assert torch.equal(point.grad, torch.zeros(2, dtype=torch.float64))
    assert hd.lr > 0.1


def test_param_groups_share_one_lr():
    first, second = scalar_param(1.0), scalar_param(-1.0)
    hd = SGDHD([{"params": [first]}, {"params": [second], "weight_decay": 0.1}], lr=0.1, beta=0.1)
    for _ in range(3):
        first.grad = first.detach().clone()
        second.grad = torch.zeros(1, dtype=torch.float64)
        hd.step()
    assert hd.param_groups[0]["lr"] == hd.param_groups[1]["lr"] == hd.lr != 0.1
    with pytest.raises(ValueError, match=r"param group 1 has lr=0.2.*shared.*expected 0.1"):
        SGDHD([{"params": [scalar_param(1.0)]}, {"params": [scalar_param(1.0)], "lr": 0.2}], lr=0.1)
    hd.add_param_group({"params": [scalar_param(3.0)]})
    assert hd.param_groups[2]["lr"] == hd.lr and hd.param_groups[2]["hd_step"] == 3


def test_frozen_and_gradient_less_parameters():
    used, idle = scalar_param(1.0), scalar_param(5.0)
    frozen = nn.Parameter(torch.ones(2, 2, dtype=torch.float64), requires_grad=False)
    hd = SGDHD([used, idle, frozen], lr=0.1, beta=0.1)
    grads = {1: (1.0, 1.0), 2: (0.8, None), 3: (0.5, 2.0)}
    for step in (1, 2, 3):
        used.grad = torch.tensor([grads[step][0]], dtype=torch.float64)
        idle_grad = grads[step][1]
        idle.grad = None if idle_grad is None else torch.tensor([idle_grad], dtype=torch.float64)
        before = hd.lr
        hd.step()
    # Step 3: idle was not updated at step 2, so its stale direction must not count.
    assert hd.lr == pytest.approx(before + 0.1 * 0.5 * 0.8, abs=1e-15)
    assert torch.equal(frozen, torch.ones(2, 2, dtype=torch.float64))


@pytest.mark.parametrize("variant", VARIANTS)
def test_resume_mid_run_is_bit_identical(variant):
    data = batches(20, seed=3)
    options = dict(VARIANTS[variant], weight_decay=5e-4, beta=1e-3)
    whole = tiny_mlp()
    whole_opt = SGDHD(whole.parameters(), lr=0.05, **options)
    whole_lrs = train(whole, whole_opt, data)

    first = tiny_mlp()
    first_opt = SGDHD(first.parameters(), lr=0.05, **options)
    lrs = train(first, first_opt, data[:10])
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": first_opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert saved["optimizer"]["param_groups"][0]["lr"].dtype == torch.float64

    resumed = tiny_mlp(seed=99)
    resumed.load_state_dict(saved["model"])
    resumed_opt = SGDHD(resumed.parameters(), lr=0.05, **options)
    resumed_opt.load_state_dict(saved["optimizer"])
    lrs += train(resumed, resumed_opt, data[10:])
    assert lrs == whole_lrs
    for mine, theirs in zip(resumed.parameters(), whole.parameters(), strict=True):
        assert torch.equal(mine, theirs)


def test_negative_lr_and_nan_do_not_raise():
    theta = scalar_param(1.0)
    hd = SGDHD([theta], lr=0.9, beta=5.0)  # overshooting with a huge beta drives alpha below 0
    for _ in range(2):
        theta.grad = 2.0 * theta.detach().clone()
        hd.step()
    assert hd.lr == pytest.approx(0.9 + 5.0 * (2.0 * -0.8) * 2.0)
    theta.grad = 2.0 * theta.detach().clone()
    hd.step()  # a step with a negative lr runs
    hd.add_param_group({"params": [scalar_param(0.0)]})  # and a new group takes that lr
    assert hd.param_groups[1]["lr"] == hd.lr
    theta.grad = torch.tensor([math.nan], dtype=torch.float64)
    hd.step()
    assert math.isnan(hd.lr)


def test_hypergradient_lr_leaves_the_lr_to_the_optimizer():
    model = tiny_mlp()
    hd = SGDHD(model.parameters(), lr=0.05, beta=1e-2, momentum=0.9)
    schedule = HypergradientLR(hd)
    reference_model = tiny_mlp()
    reference = SGDHD(reference_model.parameters(), lr=0.05, beta=1e-2, momentum=0.9)
    for inputs, labels in batches(5):
        for net, opt in ((model, hd), (reference_model, reference)):
            opt.zero_grad()
            nn.functional.cross_entropy(net(inputs), labels).backward()
            opt.step()
        schedule.step()
        assert schedule.lr == hd.lr == reference.lr
    assert hd.lr != 0.05


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(lr=-0.1), r"lr=-0.1 is invalid: expected a finite number with 0.0 <= lr"),
        (dict(lr=0.1, beta=-1e-3), r"beta=-0.001 is invalid: .*0.0 <= beta"),
        (dict(lr=0.1, momentum=1.0), r"momentum=1.0 is invalid: .*0.0 <= momentum < 1.0"),
        (dict(lr=0.1, dampening=2.0), r"dampening=2.0 is invalid"),
        (dict(lr=0.1, weight_decay=math.inf), r"weight_decay=inf is invalid"),
        (dict(lr=0.1, nesterov=True), r"nesterov=True needs momentum > 0 and dampening == 0"),
        (dict(lr=0.1, nesterov=1), r"nesterov=1 is invalid: expected True or False"),
    ],
)
def test_bad_input_names_the_value_and_range(options, message):
    with pytest.raises(ValueError, match=message):
        SGDHD([scalar_param(1.0)], **options)


def test_sum_of_dots_matches_a_flat_dot():
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
    ys = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
    flat = torch.dot(
        torch.cat([x.reshape(-1) for x in xs]).double(),
        torch.cat([y.reshape(-1) for y in ys]).double(),
    )
    assert sum_of_dots(xs, ys).item() == pytest.approx(flat.item(), rel=1e-6)
    with pytest.raises(ValueError, match="differ in length"):
        sum_of_dots(xs, ys[:1])


# ------------------------------------------------------------------------ two gloo processes
DDP_STEPS = 6


def ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        data = batches(DDP_STEPS, seed=10 + rank)  # each rank sees different batches
        model = nn.parallel.DistributedDataParallel(tiny_mlp())
        hd = SGDHD(model.parameters(), lr=0.05, beta=1e-2, momentum=0.9, nesterov=True)
        lrs = train(model, hd, data)
        alone = tiny_mlp()
        alone_lrs = train(
            alone, SGDHD(alone.parameters(), lr=0.05, beta=1e-2, momentum=0.9, nesterov=True), data
        )
        torch.save({"lrs": lrs, "alone": alone_lrs}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes: about 10-20 s on two cores
def test_ranks_hold_the_same_lr_under_ddp(tmp_path):
    mp.spawn(ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0["alone"] != rank1["alone"], "without DDP the ranks' lrs must differ"
    assert rank0["lrs"] == rank1["lrs"]
    assert rank0["lrs"][-1] != 0.05


def test_a_group_without_gradients_is_skipped_under_weight_decay():
    from autodrop.hd import SGDHD

    used, unused = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    opt = SGDHD([{"params": [used]}, {"params": [unused]}], lr=0.1, weight_decay=1e-2, beta=1e-3)
    for _ in range(3):
        opt.zero_grad()
        (used**2).sum().backward()
        opt.step()
    assert torch.equal(unused.detach(), torch.ones(2))
    assert not torch.equal(used.detach(), torch.ones(3))


def test_the_hd_schedule_needs_sgdhd_and_records_the_epoch_mean_lr():
    from autodrop.registry import build

    with pytest.raises(ValueError, match=r"needs the optimizer autodrop.hd.SGDHD.*torch.optim"):
        HypergradientLR(torch.optim.SGD(tiny_mlp().parameters(), lr=0.1))
    hd = SGDHD(tiny_mlp().parameters(), lr=0.05, beta=1e-2)
    schedule = build("hd", hd, steps_per_epoch=3, epochs=2)
    assert isinstance(schedule, HypergradientLR)
    assert (schedule.name, schedule.display_name, schedule.tuned_setting) == ("hd", "HD", "beta")
    assert schedule.epoch_fields([], 0.0375) == {"lr/epoch_mean": 0.0375}
    assert schedule.record_stream is None
    step_lr = schedule.step_lr()
    assert isinstance(step_lr, torch.Tensor) and step_lr.item() == 0.05 == schedule.lr
