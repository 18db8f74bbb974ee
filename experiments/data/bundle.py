"""What ``build_data`` returns: the loaders (train, test and, under the honest protocol, the
validation split held out of the training set) and the dataset's sizes."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from autodrop.batchnorm import BN_PASS_BATCHES
from autodrop.checks import check_int
from experiments.data.validation_split import ValidationSplit

Batch = tuple[torch.Tensor, torch.Tensor]


class TrainLoader(Protocol):
    """Yields (normalised float32 images [B, 3, H, W], int64 labels) on the training device.

    ``len()`` is the number of optimizer steps per epoch on this rank (equal on every rank).
    Batches depend only on (seed, epoch): call ``set_epoch`` before iterating; with
    ``start_batch=b`` the epoch starts at its batch b (a resumed epoch) without computing or
    loading the earlier ones.
    """

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Batch]: ...


class EvalLoader(Protocol):
    """Yields (images, labels) of this rank's disjoint shard; over all ranks, each image of the
    split exactly once. ``len()`` is the number of batches on this rank."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Batch]: ...


@dataclass(frozen=True)
class DataBundle:
    """``train`` trains on the training split less the validation split; ``test`` evaluates the
    test split (ImageNet's official val folder); ``val`` the validation split, None without one
    (``data.val_size=0``, the paper's protocol)."""

    train: TrainLoader
    test: EvalLoader
    num_classes: int
    num_train: int  # samples in the whole train split (all ranks), the validation split excluded
    num_test: int
    name: str
    # Distinct bad image files replaced so far (data.skip_bad_images=true, imagenet).
    skipped_images: Callable[[], int] = lambda: 0
    val: EvalLoader | None = None
    validation: ValidationSplit | None = None

    @property
    def num_val(self) -> int:
        return 0 if self.validation is None else len(self.validation)


#: The epoch id of reserved batches (a BatchNorm pass's): far beyond any training epoch.
RESERVED_EPOCH = 1_000_000


def reserved_epoch_batches(
    loader: TrainLoader,
    *,
    restore_epoch: int,
    num_batches: int = BN_PASS_BATCHES,
    epoch: int = RESERVED_EPOCH,
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
