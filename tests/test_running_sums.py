"""The loop's running sums: folded every few steps, yet the very numbers of adding step by step
(the arithmetic the loop used before, written out here as the reference), with no op at all on
the steps in between."""

from __future__ import annotations

import random

import pytest
import torch

from experiments.loop import PartialEpoch, RunningSums
from experiments.running.processes import DistContext


def reference_step_by_step(steps, start: PartialEpoch):
    """One kernel per quantity per step: the loop's former ``_accumulate``."""
    sums = torch.tensor(start.sums, dtype=torch.float64)
    lr_sum = start.lr_sum
    for loss, logits, labels, scale, lr in steps:
        sums[0] += (loss * scale).detach().double()
        sums[1] += (logits.detach().argmax(dim=1) == labels).sum()
        sums[2] += labels.shape[0]
        lr_sum = lr_sum + lr
    return sums.tolist(), float(lr_sum)


def random_steps(seed: int, count: int, lr_on_device: bool):
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    steps = []
    for index in range(count):
        batch = 29 if index == count - 1 else 64  # an epoch's short last batch
        logits = torch.randn(batch, 10, generator=g) * rng.choice([1.0, 30.0])
        labels = torch.randint(0, 10, (batch,), generator=g)
        loss = torch.nn.functional.cross_entropy(logits, labels) * rng.uniform(0.1, 3.0)
        lr = rng.uniform(1e-4, 0.1)
        steps.append(
            (
                loss,
                logits,
                labels,
                batch,
                torch.tensor(lr, dtype=torch.float64) if lr_on_device else lr,
            )
        )
    return steps


@pytest.mark.parametrize("lr_on_device", [False, True])
@pytest.mark.parametrize("count", [1, 63, 64, 65, 150])
def test_folded_sums_equal_step_by_step_sums_bit_for_bit(count, lr_on_device) -> None:
    start = PartialEpoch(7, [12.345678, 300.0, 448.0], 0.0123, 1.0)
    steps = random_steps(count, count, lr_on_device)
    sums = RunningSums(start, torch.device("cpu"))
    for loss, logits, labels, scale, lr in steps:
        sums.add(loss, logits, labels, scale=scale)
        sums.add_lr(lr)
    expected_sums, expected_lr = reference_step_by_step(steps, start)
    values, lr_sum = sums.values()
    assert values == expected_sums and lr_sum == expected_lr
    totals = sums.totals(DistContext())
    assert [totals.loss_sum, totals.correct, totals.count] == expected_sums


def test_steps_between_folds_run_no_op() -> None:
    sums = RunningSums(PartialEpoch(), torch.device("cpu"))
    steps = random_steps(0, RunningSums.FOLD_EVERY + 1, lr_on_device=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for loss, logits, labels, scale, lr in steps[:-2]:
            sums.add(loss, logits, labels, scale=scale)
            sums.add_lr(lr)
    assert [e.name for e in prof.events() if e.name.startswith("aten::")] == []
