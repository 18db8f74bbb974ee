"""Recomputing BatchNorm running statistics at the current weights (schedule-free's x)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import update_bn

from autodrop.checks import check_int
from autodrop.distributed import is_multi_process

#: Batches of the BatchNorm pass (the schedulefree README's recommendation).
BN_PASS_BATCHES = 50


def tracked_batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@torch.no_grad()
def recompute_batchnorm(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    num_batches: int = BN_PASS_BATCHES,
    autocast: Callable[[], AbstractContextManager[object]] | None = None,
) -> int:
    """Replace every BatchNorm layer's running statistics by their average over the first
    ``num_batches`` of ``batches``, forwarded in train mode at the current weights.

    The pass is ``torch.optim.swa_utils.update_bn`` over ``itertools.islice(batches,
    num_batches)``. The average is cumulative (batch k enters with momentum 1/k), the same with
    torch's BatchNorm, SyncBatchNorm and the suite's GlobalBatchNorm: update_bn asks for it with
    ``momentum=None``, which torch's layers read as 1/k but a layer of its own may not (the
    suite's GlobalBatchNorm reads None as 0.1), so every layer is also given momentum 1/k right
    before batch k. Module modes (each module's own: update_bn restores the top module's mode
    on all of them), BN momenta (also on an error) and every torch RNG (dropout) are restored
    afterwards, so training continues exactly as without the pass. ``batches`` is consumed
    inside the forked RNG and the ``autocast`` context, and closed afterwards (a generator's
    cleanup runs). Under torch.distributed the statistics are averaged over the ranks (every
    rank must call this with the same number of batches). Pass the bare model, not a DDP
    wrapper. A batch is a tensor or a tuple whose first item is the input. Returns the batches
    used (0, with ``batches`` untouched, if the model has no BatchNorm with running
    statistics); a ``batches`` that yields nothing is a ValueError and leaves the statistics
    as they were.
    """
    num_batches = check_int("num_batches", num_batches, low=1)
    norms = tracked_batchnorms(model)
    if not norms:
        return 0
    modes = [(m, m.training) for m in model.modules()]
    all_norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [(m, m.momentum) for m in all_norms]
    cuda_devices = sorted(
        {
            t.device.index or 0
            for t in itertools.chain(model.parameters(), model.buffers())
            if t.device.type == "cuda"
        }
    )
    iterator = iter(batches)
    used = 0

    def counted(first: Any) -> Iterator[Any]:
        nonlocal used
        for batch in itertools.chain([first], itertools.islice(iterator, num_batches - 1)):
            used += 1
            for m in all_norms:
                m.momentum = 1.0 / used
            yield batch

    try:
        with torch.random.fork_rng(devices=cuda_devices), (autocast or nullcontext)():
            first = next(iterator, _NOTHING)
            if first is _NOTHING:
                raise ValueError(
                    "bn batches yielded no batch: the BatchNorm pass needs at least one"
                )
            update_bn(counted(first), model)
    finally:
        for m, momentum in momenta:
            m.momentum = momentum
        for m, training in modes:
            m.training = training
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
    if is_multi_process():
        world_size = dist.get_world_size()
        for m in norms:
            for statistic in (m.running_mean, m.running_var):
                dist.all_reduce(statistic)
                statistic.div_(world_size)
    return used


_NOTHING = object()
