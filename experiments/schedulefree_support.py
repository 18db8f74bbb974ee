"""Schedule-free SGD (Defazio et al. 2024) in the runner, through the pinned ``schedulefree``.

The optimizer keeps z (plain SGD iterates), trains at y and evaluates at x, the average of the
z's. Its contract, and how the runner meets it (BASELINES.md sections 3.4-3.5):

- ``start_training(model, optimizer)`` wherever ``model.train()`` is called: parameters <- y.
  ``step()`` in eval mode raises.
- ``prepare_evaluation(model, optimizer, bn_batches)`` before every evaluation and before
  exporting weights: parameters <- x, BatchNorm statistics recomputed at x, ``model.eval()``.
  The BatchNorm pass must not consume the training stream: feed it
  ``reserved_epoch_batches(train_loader, ...)``, batches of an epoch id training never reaches.
- Checkpoints: the routine one right after the epoch's evaluation, still in eval mode, so a
  resumed run toggles modes exactly where the uninterrupted run does (each toggle is a
  floating-point lerp) and continues bit for bit. A preemption checkpoint taken mid-epoch is
  saved in the current mode, untoggled; the mode flag travels in the optimizer's state_dict.
- ``group['lr']`` never changes; log ``current_lr`` (the warmup-scaled lr of the last step).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from schedulefree import SGDScheduleFree
from torch import Tensor, nn
from torch.optim import Optimizer

from autodrop.checks import check_float, check_int
from autodrop.distributed import is_multi_process

if TYPE_CHECKING:
    from experiments.data.bundle import TrainLoader

#: The epoch id of the BatchNorm pass's batches: far beyond any training epoch.
BN_PASS_EPOCH = 1_000_000
#: Batches of the BatchNorm pass (the schedulefree README's recommendation).
BN_PASS_BATCHES = 50


def build_schedulefree_sgd(
    params: Iterable[Tensor] | Iterable[dict[str, Any]],
    *,
    base_lr: float,
    steps_per_epoch: int,
    lr_multiplier: float = 10.0,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    warmup_epochs: float = 0.0,
    r: float = 0.0,
    weight_lr_power: float = 2.0,
) -> SGDScheduleFree:
    """``SGDScheduleFree`` with lr = ``base_lr * lr_multiplier`` (the README asks 10-50x the
    classical SGD lr) and a linear warmup of ``round(warmup_epochs * steps_per_epoch)`` steps.

    ``momentum`` is the interpolation beta between z and x, not an SGD momentum;
    ``weight_decay`` is coupled L2 added to the gradient at y.
    """
    base_lr = check_float("base_lr", base_lr, low=0.0, low_open=True)
    lr_multiplier = check_float("lr_multiplier", lr_multiplier, low=0.0, low_open=True)
    steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, low=1)
    warmup_epochs = check_float("warmup_epochs", warmup_epochs, low=0.0)
    return SGDScheduleFree(
        params,
        lr=base_lr * lr_multiplier,
        momentum=check_float(
            "momentum", momentum, low=0.0, high=1.0, low_open=True, high_open=True
        ),
        weight_decay=check_float("weight_decay", weight_decay, low=0.0),
        warmup_steps=round(warmup_epochs * steps_per_epoch),
        r=check_float("r", r, low=0.0),
        weight_lr_power=check_float("weight_lr_power", weight_lr_power, low=0.0),
    )


def is_schedule_free(optimizer: Optimizer) -> bool:
    """True for the schedulefree optimizers that have train and eval modes."""
    return callable(getattr(optimizer, "train", None)) and all(
        "train_mode" in group for group in optimizer.param_groups
    )


def in_train_mode(optimizer: Optimizer) -> bool:
    """Whether the parameters hold y (train mode); always True for other optimizers."""
    return not is_schedule_free(optimizer) or bool(optimizer.param_groups[0]["train_mode"])


def current_lr(optimizer: Optimizer) -> float:
    """The lr to log: schedule-free's warmup-scaled lr of the last step (0 before the first),
    otherwise group 0's lr."""
    group = optimizer.param_groups[0]
    return float(group["scheduled_lr"] if is_schedule_free(optimizer) else group["lr"])


def start_training(model: nn.Module, optimizer: Optimizer) -> None:
    """``model.train()`` and, for schedule-free, ``optimizer.train()`` (parameters <- y)."""
    model.train()
    if is_schedule_free(optimizer):
        optimizer.train()


def prepare_evaluation(
    model: nn.Module,
    optimizer: Optimizer,
    bn_batches: Iterable[Any],
    *,
    num_batches: int = BN_PASS_BATCHES,
    autocast: Callable[[], AbstractContextManager[object]] | None = None,
) -> bool:
    """Schedule-free only (else nothing happens and False is returned): parameters <- x,
    BatchNorm statistics recomputed at x over ``bn_batches``, then ``model.eval()``.

    ``bn_batches`` is not touched for other optimizers, so a lazy ``reserved_epoch_batches``
    generator can be passed unconditionally.
    """
    if not is_schedule_free(optimizer):
        return False
    optimizer.eval()
    recompute_batchnorm(model, bn_batches, num_batches=num_batches, autocast=autocast)
    model.eval()
    return True


def require_eval_mode(optimizer: Optimizer, purpose: str = "exported weights") -> None:
    """ValueError unless the parameters hold x (always fine for other optimizers)."""
    if is_schedule_free(optimizer) and optimizer.param_groups[0]["train_mode"]:
        raise ValueError(
            f"{purpose} must be schedule-free's averaged weights x, but the optimizer is in "
            "train mode (parameters = y): call prepare_evaluation() first"
        )


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

    The average is cumulative (batch k enters with momentum 1/k), the same with torch's
    BatchNorm, SyncBatchNorm and the suite's GlobalBatchNorm. Module modes, BN momenta and every
    torch RNG (dropout) are restored afterwards, so training continues exactly as without the
    pass. Under torch.distributed the statistics are averaged over the ranks (every rank must
    call this with the same number of batches). Pass the bare model, not a DDP wrapper. A
    batch is a tensor or a tuple whose first item is the input. Returns the batches used (0 if
    the model has no BatchNorm with running statistics).
    """
    num_batches = check_int("num_batches", num_batches, low=1)
    norms = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not norms:
        return 0
    modes = [(m, m.training) for m in model.modules()]
    momenta = [m.momentum for m in norms]
    cuda_devices = sorted(
        {
            t.device.index or 0
            for t in itertools.chain(model.parameters(), model.buffers())
            if t.device.type == "cuda"
        }
    )
    iterator = iter(batches)
    used = 0
    try:
        with torch.random.fork_rng(devices=cuda_devices), (autocast or nullcontext)():
            model.train()
            for batch in itertools.islice(iterator, num_batches):
                if used == 0:
                    for m in norms:
                        m.reset_running_stats()
                used += 1
                for m in norms:
                    m.momentum = 1.0 / used
                model(batch[0] if isinstance(batch, tuple | list) else batch)
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        for m, training in modes:
            m.training = training
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
    if used == 0:
        raise ValueError("bn batches yielded no batch: the BatchNorm pass needs at least one")
    if is_multi_process():
        world_size = dist.get_world_size()
        for m in norms:
            for statistic in (m.running_mean, m.running_var):
                dist.all_reduce(statistic)
                statistic.div_(world_size)
    return used


def reserved_epoch_batches(
    loader: TrainLoader,
    *,
    restore_epoch: int,
    num_batches: int = BN_PASS_BATCHES,
    epoch: int = BN_PASS_EPOCH,
) -> Iterator[Any]:
    """Up to ``num_batches`` batches of the train loader's plan for ``epoch`` (a fixed subset
    with training augmentation, this rank's shard), then ``loader.set_epoch(restore_epoch)``.

    The suite's train loaders are pure functions of (seed, epoch), so this leaves the training
    stream untouched. Nothing happens until the result is iterated; iterate it between epochs
    (a classic DataLoader has one live iterator).
    """
    num_batches = check_int("num_batches", num_batches, low=1)
    check_int("restore_epoch", restore_epoch, low=0)
    check_int("epoch", epoch, low=0)
    return _batches_of_epoch(loader, epoch, num_batches, restore_epoch)


def _batches_of_epoch(
    loader: TrainLoader, epoch: int, num_batches: int, restore_epoch: int
) -> Iterator[Any]:
    loader.set_epoch(epoch)
    try:
        yield from itertools.islice(loader, num_batches)
    finally:
        loader.set_epoch(restore_epoch)
