"""What ``build_data`` returns: the two loaders and the dataset's sizes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

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
    """Yields (images, labels) of this rank's disjoint shard; over all ranks, each test image
    exactly once. ``len()`` is the number of batches on this rank."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Batch]: ...


@dataclass(frozen=True)
class DataBundle:
    train: TrainLoader
    test: EvalLoader
    num_classes: int
    num_train: int  # samples in the whole train split (all ranks)
    num_test: int
    name: str
    # Distinct bad image files replaced so far (data.skip_bad_images=true, imagenet).
    skipped_images: Callable[[], int] = lambda: 0
