"""Schedule-free SGD (Defazio et al. 2024) in the runner, through the pinned ``schedulefree``.

The runner's side only: building the optimizer from the task's SGD settings, and the batches of
the BatchNorm pass. The mode contract lives in the library's schedule
(``autodrop.schedules.optimizer_lr.ScheduleFreeLR``, BASELINES.md sections 3.4-3.5):
``train_mode`` before every training epoch (parameters <- y), ``eval_mode`` after it (parameters
<- x, BatchNorm recomputed at x, ``model.eval()``). The BatchNorm pass must not consume the
training stream: feed it ``reserved_epoch_batches(train_loader, ...)``, batches of an epoch id
training never reaches.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from schedulefree import SGDScheduleFree
from torch import Tensor

from autodrop.batchnorm import BN_PASS_BATCHES
from autodrop.checks import check_float, check_int

if TYPE_CHECKING:
    from experiments.data.bundle import TrainLoader

#: The epoch id of the BatchNorm pass's batches: far beyond any training epoch.
BN_PASS_EPOCH = 1_000_000


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
