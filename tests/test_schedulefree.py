"""Schedule-free SGD: BASELINES.md section 3.8 (mode contract, x as the average of z,
BatchNorm recompute at x without touching the training stream, checkpoint policy, ranks).

The mode contract is the library's ``ScheduleFreeLR`` (train_mode / eval_mode, lr) with
``autodrop.batchnorm.recompute_batchnorm``; building the optimizer and the reserved BatchNorm
batches are the runner's (``experiments.optimizers``, ``experiments.data.bundle``)."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from schedulefree import SGDScheduleFree, SGDScheduleFreeReference
from torch import nn

from autodrop import registry
from autodrop.batchnorm import BN_PASS_BATCHES, recompute_batchnorm
from autodrop.schedules.optimizer_lr import (
    OptimizerSetsLR,
    ScheduleFreeLR,
    in_train_mode,
    is_schedule_free,
    require_eval_mode,
)
from experiments.data.arrays import ArraySplits, ImageArrays
from experiments.data.build import build_array_bundle
from experiments.data.bundle import RESERVED_EPOCH, reserved_epoch_batches
from experiments.data.loading import Loading
from experiments.optimizers import build_schedulefree_sgd
from experiments.running.sync_batchnorm import convert_to_global_batchnorm

CPU = torch.device("cpu")


def vector_params(seed: int = 0) -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [
        nn.Parameter(torch.randn(3, 2, generator=g, dtype=torch.float64)),
        nn.Parameter(torch.randn(4, generator=g, dtype=torch.float64)),
    ]


def random_grads(params, g: torch.Generator) -> None:
    for p in params:
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)


def mlp_bn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.3), nn.Linear(6, 3)
    ).double()


def conv_bn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


def image_bundle(loader: str = "device"):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (80, 3, 8, 8), generator=gen, dtype=torch.uint8)
    labels = torch.randint(0, 3, (80,), generator=gen)
    splits = ArraySplits(
        train=ImageArrays(images[:64], labels[:64]),
        test=ImageArrays(images[64:], labels[64:]),
        num_classes=3,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        padding=2,
    )
    settings = Loading(
        loader=loader, batch_size=8, eval_batch_size=16, device=CPU, seed=5, num_workers=0
    )
    return build_array_bundle(splits, settings, name="synthetic")


def train_steps(model, optimizer, batches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    seen = []
    for images, labels in batches:
        seen.append((images.clone(), labels.clone()))
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    return seen


def build(params, **options) -> SGDScheduleFree:
    return build_schedulefree_sgd(params, **{"base_lr": 0.05, "steps_per_epoch": 8, **options})


def schedule_of(optimizer, bn_pass_batches: int = BN_PASS_BATCHES) -> ScheduleFreeLR:
    schedule = ScheduleFreeLR(optimizer)
    schedule.bn_pass_batches = bn_pass_batches
    return schedule


def batches_of(batches):
    """``bn_batches`` for eval_mode: a callable making the batches."""
    return lambda: iter(batches)


# ----------------------------------------------------------------------------- building
def test_build_scales_the_lr_and_converts_warmup_epochs():
    optimizer = build(vector_params(), lr_multiplier=20.0, warmup_epochs=1.5, weight_decay=5e-4)
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, SGDScheduleFree) and is_schedule_free(optimizer)
    assert group["lr"] == pytest.approx(1.0) and group["warmup_steps"] == 12
    assert (group["momentum"], group["weight_decay"], group["r"]) == (0.9, 5e-4, 0.0)
    assert not is_schedule_free(torch.optim.SGD(vector_params(), lr=0.1))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(base_lr=0.0), r"base_lr=0.0 is invalid: expected a finite number with 0.0 <"),
        (dict(lr_multiplier=-10.0), r"lr_multiplier=-10.0 is invalid"),
        (dict(momentum=1.0), r"momentum=1.0 is invalid: .*0.0 < momentum < 1.0"),
        (dict(steps_per_epoch=0), r"steps_per_epoch=0 is invalid: expected an int with 1 <="),
        (dict(warmup_epochs=-1.0), r"warmup_epochs=-1.0 is invalid"),
        (dict(weight_decay=-1e-4), r"weight_decay=-0.0001 is invalid"),
    ],
)
def test_bad_input_names_the_value_and_range(options, message):
    with pytest.raises(ValueError, match=message):
        build(vector_params(), **options)


# ------------------------------------------------------------------------ mode contract
def test_step_needs_train_mode_and_train_mode_provides_it():
    params = vector_params()
    optimizer = build(params)
    schedule = ScheduleFreeLR(optimizer)
    random_grads(params, torch.Generator().manual_seed(1))
    assert not in_train_mode(optimizer)
    with pytest.raises(Exception, match="not in train mode"):
        optimizer.step()
    model = mlp_bn()
    model.eval()
    schedule.train_mode(model)
    assert model.training and in_train_mode(optimizer)
    for _ in range(2):
        optimizer.step()


def test_x_is_the_average_of_the_z_iterates():
    params = vector_params()
    optimizer = build(params, lr_multiplier=2.0)
    optimizer.train()
    g = torch.Generator().manual_seed(2)
    snapshots = []
    for _ in range(7):
        random_grads(params, g)
        optimizer.step()
        snapshots.append([optimizer.state[p]["z"].clone() for p in params])
    optimizer.eval()
    for index, p in enumerate(params):
        mean = torch.stack([s[index] for s in snapshots]).mean(dim=0)
        torch.testing.assert_close(p.detach(), mean, rtol=0, atol=1e-12)


def test_eval_train_round_trip_and_idempotent_eval():
    params = vector_params()
    optimizer = build(params)
    optimizer.train()
    g = torch.Generator().manual_seed(3)
    for _ in range(4):
        random_grads(params, g)
        optimizer.step()
    at_y = [p.detach().clone() for p in params]
    optimizer.eval()
    at_x = [p.detach().clone() for p in params]
    optimizer.eval()
    assert all(torch.equal(p, x) for p, x in zip(params, at_x, strict=True))
    optimizer.train()
    for p, y in zip(params, at_y, strict=True):
        torch.testing.assert_close(p.detach(), y, rtol=0, atol=1e-12)


def test_group_lr_never_changes_and_the_logged_lr_ramps_then_stays_flat():
    params = vector_params()
    optimizer = build(params, base_lr=0.1, lr_multiplier=10.0, steps_per_epoch=2, warmup_epochs=2.0)
    schedule = ScheduleFreeLR(optimizer)
    assert schedule.lr == 0.0  # before the first step
    optimizer.train()
    g = torch.Generator().manual_seed(4)
    logged = []
    for _ in range(7):
        random_grads(params, g)
        optimizer.step()
        schedule.step()
        logged.append(schedule.lr)
        assert schedule.step_lr() == schedule.lr
        assert optimizer.param_groups[0]["lr"] == 1.0
    assert logged == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0])
    assert OptimizerSetsLR(torch.optim.SGD(vector_params(), lr=0.3)).lr == 0.3


def test_fast_class_matches_the_reference_class():
    fast_params, reference_params = vector_params(), vector_params()
    options = dict(lr=0.5, momentum=0.9, weight_decay=1e-2, warmup_steps=3)
    fast = SGDScheduleFree(fast_params, **options)
    reference = SGDScheduleFreeReference(reference_params, **options)
    fast.train()
    g_fast, g_reference = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(10):
        random_grads(fast_params, g_fast)
        random_grads(reference_params, g_reference)
        fast.step()
        reference.step()
    fast.eval()
    reference.eval()
    for a, b in zip(fast_params, reference_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------- BatchNorm at x
def test_batchnorm_statistics_are_the_batch_average_at_x():
    model = mlp_bn()
    optimizer = build(model.parameters())
    g = torch.Generator().manual_seed(6)
    data = [
        (
            torch.randn(10, 4, generator=g, dtype=torch.float64),
            torch.randint(0, 3, (10,), generator=g),
        )
        for _ in range(6)
    ]
    schedule = schedule_of(optimizer, bn_pass_batches=2)
    schedule.train_mode(model)
    train_steps(model, optimizer, data[:4])
    bn_batches = [x for x, _ in data[3:]]
    assert schedule.eval_mode(model, batches_of(bn_batches))
    assert not model.training and not in_train_mode(optimizer)
    norm = model[1]
    with torch.no_grad():
        features = [model[0](x) for x in bn_batches[:2]]  # the weights are x now
    mean = torch.stack([f.mean(dim=0) for f in features]).mean(dim=0)
    var = torch.stack([f.var(dim=0, unbiased=True) for f in features]).mean(dim=0)
    torch.testing.assert_close(norm.running_mean, mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(norm.running_var, var, rtol=0, atol=1e-12)
    assert norm.num_batches_tracked.item() == 2 and norm.momentum == 0.1


@pytest.mark.parametrize("loader", ["device", "classic"])
def test_batchnorm_pass_leaves_training_exactly_as_without_it(loader):
    """Same training batches, same dropout masks, same weights: only the BN buffers differ."""

    def run(with_pass: bool):
        data = image_bundle(loader)
        model = conv_bn()
        optimizer = build(model.parameters(), lr_multiplier=5.0)
        schedule = ScheduleFreeLR(optimizer)
        batches = []
        torch.manual_seed(11)
        for epoch in range(2):
            schedule.train_mode(model)
            data.train.set_epoch(epoch)
            batches += train_steps(model, optimizer, data.train)
            if with_pass:
                rng = torch.get_rng_state()
                schedule.eval_mode(
                    model,
                    lambda e=epoch: reserved_epoch_batches(
                        data.train, restore_epoch=e, num_batches=3
                    ),
                )
                assert torch.equal(torch.get_rng_state(), rng)
                again = [(x.clone(), y.clone()) for x, y in data.train]  # epoch restored
                assert all(
                    torch.equal(a[0], b[0]) for a, b in zip(again, batches[-8:], strict=True)
                )
            else:
                optimizer.eval()
        return batches, model, optimizer

    batches, model, optimizer = run(with_pass=True)
    plain_batches, plain_model, _ = run(with_pass=False)
    assert len(batches) == len(plain_batches) == 16
    for (x, y), (px, py) in zip(batches, plain_batches, strict=True):
        assert torch.equal(x, px) and torch.equal(y, py)
    for name, p in model.named_parameters():
        assert torch.equal(p, dict(plain_model.named_parameters())[name])
    assert model[1].num_batches_tracked.item() == 3
    assert not torch.equal(model[1].running_mean, plain_model[1].running_mean)


def test_eval_mode_does_nothing_for_other_optimizers():
    model = mlp_bn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = OptimizerSetsLR(optimizer)  # the default hooks of every other schedule
    before = copy.deepcopy(model.state_dict())
    calls = []

    class SpyLoader:
        def set_epoch(self, epoch):
            calls.append(epoch)

        def __iter__(self):
            return iter([torch.ones(2, 4, dtype=torch.float64)])

    assert not schedule.eval_mode(
        model, lambda: reserved_epoch_batches(SpyLoader(), restore_epoch=3)
    )
    assert calls == [] and model.training
    model.eval()
    schedule.train_mode(model)
    assert model.training and in_train_mode(optimizer)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    require_eval_mode(optimizer)  # fine for plain SGD
    batches = reserved_epoch_batches(SpyLoader(), restore_epoch=3)
    assert len(list(batches)) == 1 and calls == [RESERVED_EPOCH, 3]


def test_recompute_checks_its_input():
    model = mlp_bn()
    with pytest.raises(ValueError, match=r"num_batches=0 is invalid: expected an int with 1 <="):
        recompute_batchnorm(model, [], num_batches=0)
    before = model[1].running_mean.clone()
    with pytest.raises(ValueError, match="yielded no batch"):
        recompute_batchnorm(model, [])
    assert torch.equal(model[1].running_mean, before)
    assert recompute_batchnorm(nn.Linear(2, 2), [torch.ones(1, 2)]) == 0
    with pytest.raises(ValueError, match=r"restore_epoch=-1 is invalid"):
        reserved_epoch_batches(object(), restore_epoch=-1)


def test_exported_weights_must_be_x():
    model = mlp_bn()
    optimizer = build(model.parameters())
    schedule = ScheduleFreeLR(optimizer)
    schedule.train_mode(model)
    with pytest.raises(ValueError, match="averaged weights x.*call eval_mode"):
        require_eval_mode(optimizer, "the best checkpoint")
    schedule.eval_mode(model, batches_of([torch.ones(3, 4, dtype=torch.float64)]))
    require_eval_mode(optimizer)


def test_the_schedule_needs_a_schedule_free_optimizer():
    sgd = torch.optim.SGD(vector_params(), lr=0.1)
    with pytest.raises(ValueError, match=r"needs a schedule-free optimizer.*torch.optim.sgd.SGD"):
        ScheduleFreeLR(sgd)
    schedule = registry.build("schedulefree", build(vector_params()), steps_per_epoch=8, epochs=2)
    assert isinstance(schedule, ScheduleFreeLR)
    assert (schedule.name, schedule.tuned_setting) == ("schedulefree", "lr_multiplier")
    assert schedule.bn_pass_batches == BN_PASS_BATCHES == 50
    assert schedule.epoch_fields([], 0.5) == {} and schedule.record_stream is None


def test_eval_mode_and_train_mode_move_the_parameters_between_x_and_y():
    model = mlp_bn()
    optimizer = build(model.parameters())
    schedule = ScheduleFreeLR(optimizer)
    g = torch.Generator().manual_seed(8)
    data = [
        (
            torch.randn(10, 4, generator=g, dtype=torch.float64),
            torch.randint(0, 3, (10,), generator=g),
        )
        for _ in range(3)
    ]
    schedule.train_mode(model)
    train_steps(model, optimizer, data)
    at_y = [p.detach().clone() for p in model.parameters()]
    made = []

    def bn_batches():
        made.append(True)
        return iter([x for x, _ in data])

    assert schedule.eval_mode(model, bn_batches, autocast=None) is True
    assert made == [True] and not model.training and not in_train_mode(optimizer)
    assert not all(torch.equal(p, y) for p, y in zip(model.parameters(), at_y, strict=True))
    schedule.train_mode(model)
    assert model.training and in_train_mode(optimizer)
    for p, y in zip(model.parameters(), at_y, strict=True):
        torch.testing.assert_close(p.detach(), y, rtol=0, atol=1e-12)


def test_eval_mode_runs_the_pass_under_autocast():
    model = mlp_bn()
    schedule = ScheduleFreeLR(build(model.parameters()))
    entered = []

    class Recording:
        def __enter__(self):
            entered.append(True)

        def __exit__(self, *exc):
            return False

    schedule.eval_mode(model, batches_of([torch.ones(3, 4, dtype=torch.float64)]), Recording)
    assert entered == [True]


def explicit_batch_averages(first_layer: nn.Module, batches) -> tuple[torch.Tensor, torch.Tensor]:
    """The statistics the pass must give: the mean over batches of each batch's mean and
    unbiased variance of the BatchNorm input."""
    with torch.no_grad():
        features = [first_layer(x) for x in batches]
    mean = torch.stack([f.mean(dim=0) for f in features]).mean(dim=0)
    var = torch.stack([f.var(dim=0, unbiased=True) for f in features]).mean(dim=0)
    return mean, var


@pytest.mark.parametrize("global_bn", [False, True], ids=["torch", "GlobalBatchNorm"])
def test_recompute_gives_the_cumulative_batch_average(global_bn):
    """torch's BatchNorm and the suite's GlobalBatchNorm (which reads momentum=None as 0.1, not
    as a cumulative average) both end with the plain average over the batches."""
    model = mlp_bn()
    if global_bn:
        model = convert_to_global_batchnorm(model).double()
    g = torch.Generator().manual_seed(9)
    batches = [torch.randn(10, 4, generator=g, dtype=torch.float64) for _ in range(4)]
    assert recompute_batchnorm(model, iter(batches), num_batches=3) == 3
    mean, var = explicit_batch_averages(model[0], batches[:3])
    torch.testing.assert_close(model[1].running_mean, mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(model[1].running_var, var, rtol=0, atol=1e-12)
    assert model[1].num_batches_tracked.item() == 3 and model[1].momentum == 0.1


def test_recompute_restores_every_module_mode_and_momentum_also_on_error():
    model = mlp_bn()
    model.train()
    model[3].eval()  # dropout held in eval mode by its owner: must stay so
    model[1].momentum = 0.3
    recompute_batchnorm(model, [torch.ones(3, 4, dtype=torch.float64)])
    assert model.training and not model[3].training and model[1].training
    assert model[1].momentum == 0.3
    model.eval()
    model[1].train()

    def failing():
        yield torch.randn(3, 4, dtype=torch.float64)
        raise RuntimeError("loader broke")

    with pytest.raises(RuntimeError, match="loader broke"):
        recompute_batchnorm(model, failing(), num_batches=2)
    assert [m.training for m in model.modules()] == [False, False, True, False, False, False]
    assert model[1].momentum == 0.3


# ------------------------------------------------------------------------- resume policy
def test_resume_after_the_epoch_checkpoint_is_bit_exact():
    """Train, recompute BN, evaluate, checkpoint in eval mode; a resume continues bit for bit."""
    epochs = 3

    def fresh():
        model = conv_bn(seed=1)
        return model, build(
            model.parameters(), lr_multiplier=5.0, warmup_epochs=0.5, weight_decay=5e-4
        )

    def run_epochs(model, optimizer, data, first, last, checkpoints):
        losses = []
        schedule = ScheduleFreeLR(optimizer)
        for epoch in range(first, last):
            schedule.train_mode(model)
            data.train.set_epoch(epoch)
            train_steps(model, optimizer, data.train)
            schedule.eval_mode(
                model, lambda e=epoch: reserved_epoch_batches(data.train, restore_epoch=e)
            )
            with torch.no_grad():
                losses += [nn.functional.cross_entropy(model(x), y).item() for x, y in data.test]
            buffer = io.BytesIO()
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng": torch.get_rng_state(),
                },
                buffer,
            )
            checkpoints.append(buffer.getvalue())
        return losses

    torch.manual_seed(12)
    model, optimizer = fresh()
    checkpoints: list[bytes] = []
    whole = run_epochs(model, optimizer, image_bundle(), 0, epochs, checkpoints)

    saved = torch.load(io.BytesIO(checkpoints[0]), weights_only=True)
    resumed_model, resumed_optimizer = fresh()
    resumed_model.load_state_dict(saved["model"])
    resumed_optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["rng"])
    assert not in_train_mode(resumed_optimizer)
    resumed = run_epochs(resumed_model, resumed_optimizer, image_bundle(), 1, epochs, [])
    assert resumed == whole[len(whole) // epochs :]
    for key, value in model.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key
    for p, q in zip(model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(optimizer.state[p]["z"], resumed_optimizer.state[q]["z"])


# ------------------------------------------------------------------------ two gloo processes
def rank_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        bare = mlp_bn()
        model = nn.parallel.DistributedDataParallel(bare)
        optimizer = build(bare.parameters(), warmup_epochs=1.0, steps_per_epoch=4)
        g = torch.Generator().manual_seed(30 + rank)  # each rank sees different batches
        data = [
            (
                torch.randn(10, 4, generator=g, dtype=torch.float64),
                torch.randint(0, 3, (10,), generator=g),
            )
            for _ in range(3)
        ]
        bn_batches = [torch.randn(10, 4, generator=g, dtype=torch.float64) for _ in range(2)]
        schedule = ScheduleFreeLR(optimizer)
        schedule.train_mode(bare)
        train_steps(model, optimizer, data)
        schedule.step()
        schedule.eval_mode(bare, batches_of(bn_batches))
        with torch.no_grad():
            features = [bare[0](x) for x in bn_batches]
        torch.save(
            {
                "lr": schedule.lr,
                "params": [p.detach().clone() for p in bare.parameters()],
                "running_mean": bare[1].running_mean.clone(),
                "local_mean": torch.stack([f.mean(dim=0) for f in features]).mean(dim=0),
            },
            f"{out_dir}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes: about 10-20 s on two cores
def test_ranks_agree_on_lr_weights_and_batchnorm(tmp_path):
    mp.spawn(rank_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0["lr"] == rank1["lr"] == pytest.approx(0.5 * 3 / 4)
    assert all(torch.equal(a, b) for a, b in zip(rank0["params"], rank1["params"], strict=True))
    assert not torch.allclose(rank0["local_mean"], rank1["local_mean"])
    assert torch.equal(rank0["running_mean"], rank1["running_mean"])
    expected = (rank0["local_mean"] + rank1["local_mean"]) / 2
    torch.testing.assert_close(rank0["running_mean"], expected, rtol=0, atol=1e-12)
