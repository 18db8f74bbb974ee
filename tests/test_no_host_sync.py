"""HD and TLR step without host synchronisation, and their fused (foreach) arithmetic agrees with
the per-parameter loops it replaced; angles.sum_of_dots is the one dot-product helper of both
and of the angle maths."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from autodrop.angles import dots64, fused_dots, memory_order_flat, sum_of_dots
from autodrop.hd import SGDHD
from autodrop.schedules.optimizer_lr import HypergradientLR
from autodrop.tlr import TrainableLR

# Every way a tensor's value reaches Python: each one waits for the device.
SYNCING = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.__float__,
    torch.Tensor.__int__,
    torch.Tensor.__bool__,
    torch.Tensor.__index__,
    torch.Tensor.numpy,
    torch.Tensor.cpu,
}


class HostSyncForbidden(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in SYNCING:
            raise AssertionError(f"host synchronisation: {func.__name__}")
        return func(*args, **(kwargs or {}))


def model_and_batches(steps: int = 6):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    g = torch.Generator().manual_seed(1)
    data = [
        (torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g))
        for _ in range(steps)
    ]
    return model, data


def test_the_guard_catches_a_sync():
    with pytest.raises(AssertionError, match="host synchronisation: item"), HostSyncForbidden():
        torch.ones(()).item()


@pytest.mark.parametrize(
    "options",
    [
        dict(momentum=0.0),
        dict(momentum=0.9, nesterov=True),
        dict(momentum=0.9, dampening=0.1, weight_decay=5e-4),
    ],
)
def test_hd_steps_without_a_host_sync(options):
    model, data = model_and_batches()
    hd = SGDHD(model.parameters(), lr=0.05, beta=1e-3, **options)
    schedule = HypergradientLR(hd)
    for inputs, labels in data:
        hd.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(inputs), labels).backward()
        with HostSyncForbidden():
            hd.step()
            schedule.step()
            step_lr = schedule.step_lr()  # what the loop sums for lr/epoch_mean
        assert isinstance(step_lr, torch.Tensor) and not step_lr.requires_grad
        assert step_lr.item() == hd.lr
    assert isinstance(hd.param_groups[0]["lr"], torch.Tensor)
    assert hd.lr != 0.05 and isinstance(schedule.lr, float)


def test_tlr_syncs_only_at_the_end_of_a_gap():
    model, data = model_and_batches(steps=7)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    schedule = TrainableLR(optimizer, steps_per_epoch=4, gap_epochs=1.0)
    for step, (inputs, labels) in enumerate(data, start=1):
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(inputs), labels).backward()
        optimizer.step()
        if step % schedule.gap_steps:
            with HostSyncForbidden():
                schedule.step()
        else:
            schedule.step()  # the lr update reads the gap's sums once
    assert len(schedule.pop_measurements()) == 1


def per_parameter_sum_of_dots(xs, ys):
    """The loop sum_of_dots replaced: one dot kernel per tensor, summed in float64."""
    dots = [torch.dot(x.reshape(-1), y.reshape(-1)) for x, y in zip(xs, ys, strict=True)]
    return torch.stack(dots).sum(dtype=torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_dots_match_the_per_parameter_loop(dtype):
    g = torch.Generator().manual_seed(0)
    shapes = [(64, 3, 3, 3), (64,), (128, 64), (10,)]
    xs = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    ys = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    fused, looped = fused_dots(xs, ys), per_parameter_sum_of_dots(xs, ys)
    assert fused.dtype == torch.float64 and fused.shape == ()
    assert torch.equal(sum_of_dots(xs, ys), looped)  # the CPU keeps the per-tensor BLAS dots
    rel = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(fused, looped, rtol=rel, atol=0)


def test_hd_trajectory_matches_the_float_lr_reference():
    """SGD-HD written out per parameter with alpha a Python float (the previous implementation's
    arithmetic) gives the same lrs and parameters in float64."""
    model, data = model_and_batches(steps=10)
    model = model.double()
    reference = [p.detach().clone() for p in model.parameters()]
    hd = SGDHD(model.parameters(), lr=0.05, beta=1e-2, momentum=0.9, nesterov=True)
    alpha, buffers, previous = 0.05, [None] * len(reference), None
    for inputs, labels in data:
        inputs = inputs.double()
        hd.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(inputs), labels).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        # the reference sees the same gradients at its own (identical) parameters
        directions = []
        for i, g in enumerate(grads):
            buffers[i] = g.clone() if buffers[i] is None else buffers[i] * 0.9 + g
            directions.append(g + 0.9 * buffers[i])
        if previous is not None:
            alpha += 1e-2 * sum(
                torch.dot(g.reshape(-1), d.reshape(-1)).item()
                for g, d in zip(grads, previous, strict=True)
            )
        for ref, d in zip(reference, directions, strict=True):
            ref.add_(d, alpha=-alpha)
        previous = directions
        hd.step()
        assert hd.lr == pytest.approx(alpha, rel=1e-12, abs=0)
        for mine, ref in zip(model.parameters(), reference, strict=True):
            torch.testing.assert_close(mine.detach(), ref, rtol=1e-12, atol=1e-14)


def test_sum_of_dots_promoted_is_the_float64_loop_and_syncs_nothing():
    """promote=True (dots64, the angles) is the float64 loop dots64 used to be, bit for bit."""
    g = torch.Generator().manual_seed(3)
    shapes = [(16, 3, 3, 3), (16,), (32, 16)]
    xs = [torch.randn(s, generator=g) for s in shapes]
    ys = [torch.randn(s, generator=g) for s in shapes]
    expected = torch.zeros(3, dtype=torch.float64)
    for x, y in zip(xs, ys, strict=True):
        x64, y64 = x.reshape(-1).double(), y.reshape(-1).double()
        expected[0] += torch.dot(x64, y64)
        expected[1] += torch.dot(x64, x64)
        expected[2] += torch.dot(y64, y64)
    with HostSyncForbidden():
        promoted = sum_of_dots(xs, ys, promote=True)
    assert promoted.dtype == torch.float64 and promoted.shape == ()
    assert promoted.item() == expected[0].item()
    assert dots64(xs, ys) == tuple(expected.tolist())
    assert dots64([], []) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="differ in length"):
        dots64(xs, ys[:1])


def test_hd_casts_its_step_size_to_the_parameters_dtype_with_the_same_numbers(monkeypatch):
    """The float32 step size (once per step, so the foreach product can take its fused path)
    moves float32 parameters exactly as the float64 alpha did."""
    from autodrop import hd as hd_module

    step_size = hd_module._step_size
    alpha = torch.tensor(0.1, dtype=torch.float64)
    assert step_size(alpha, [torch.zeros(2)]).dtype == torch.float32
    assert step_size(alpha, [torch.zeros(2), torch.zeros(2, dtype=torch.float64)]).dtype == (
        torch.float64  # several dtypes: alpha stays float64
    )
    trajectories = []
    for cast in (True, False):
        model, data = model_and_batches(steps=8)
        optimizer = SGDHD(model.parameters(), lr=0.05, beta=1e-3, momentum=0.9, nesterov=True)
        if not cast:
            monkeypatch.setattr(hd_module, "_step_size", lambda alpha, params: -alpha)
        for inputs, labels in data:
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(inputs), labels).backward()
            optimizer.step()
        trajectories.append([p.detach().clone() for p in model.parameters()])
    for cast, kept in zip(*trajectories, strict=True):
        assert torch.equal(cast, kept)


def test_fused_dots_read_channels_last_tensors_in_place():
    g = torch.Generator().manual_seed(4)
    shapes = [(16, 3, 3, 3), (16,), (32, 16, 1, 1), (8, 16, 3, 3)]
    xs = [torch.randn(s, generator=g) for s in shapes]
    ys = [torch.randn(s, generator=g) for s in shapes]
    as_nhwc = [
        t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in xs + ys
    ]
    xs_cl, ys_cl = as_nhwc[: len(xs)], as_nhwc[len(xs) :]
    assert not xs_cl[0].is_contiguous()
    flat = memory_order_flat(xs_cl[0])
    assert flat.data_ptr() == xs_cl[0].data_ptr() and flat.shape == (16 * 27,)
    assert sorted(flat.tolist()) == sorted(xs_cl[0].reshape(-1).tolist())
    gappy = torch.randn(4, 6)[:, ::2]  # not dense: read through a copy in logical order
    assert torch.equal(memory_order_flat(gappy), gappy.reshape(-1))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fused = fused_dots(xs_cl, ys_cl)
    calls = {e.name for e in prof.events() if e.cpu_parent is None}
    # products, a view of each (no reshape copying them), one concatenation, one float64 sum
    assert calls == {
        "aten::_foreach_mul",
        "aten::as_strided",
        "aten::view",
        "aten::cat",
        "aten::sum",
    }
    torch.testing.assert_close(fused, per_parameter_sum_of_dots(xs, ys), rtol=1e-5, atol=0)
