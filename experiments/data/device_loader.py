"""Device-resident loaders: a whole split as a uint8 tensor on the training device, batches
gathered, augmented and normalised there (the airbench approach; no worker processes)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from experiments.data.arrays import ImageArrays
from experiments.data.augment import crop_flip_batch
from experiments.data.normalization import channel_tensor, normalize_uint8
from experiments.data.sharding import EpochPlanner, ceil_div, check_start_batch, eval_shard

Batch = tuple[torch.Tensor, torch.Tensor]


class _DeviceSplit:
    """A split moved to ``device`` once, plus the normalisation to apply to each batch."""

    def __init__(
        self,
        data: ImageArrays,
        *,
        device: torch.device,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        channels_last: bool,
    ) -> None:
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)
        self.device = torch.device(device)
        self.mean = channel_tensor(mean, self.device)
        self.std = channel_tensor(std, self.device)
        self.channels_last = channels_last

    def select(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # index_select: much faster than advanced indexing for whole-image rows on CPU
        return self.images.index_select(0, indices), self.labels.index_select(0, indices)

    def finish(self, images: torch.Tensor) -> torch.Tensor:
        normalised = normalize_uint8(images, self.mean, self.std)
        if self.channels_last:
            return normalised.contiguous(memory_format=torch.channels_last)
        return normalised


class DeviceTrainLoader:
    """Shuffled, augmented, sharded train batches; see ``sharding`` for the remainder policy.

    The batches of epoch e depend only on (seed, e): iterating an epoch twice repeats it exactly.
    ``set_epoch(e, start_batch=b)`` starts the epoch at batch b (a resumed epoch) without
    touching the b batches before it.
    """

    def __init__(
        self,
        data: ImageArrays,
        *,
        batch_size: int,
        device: torch.device,
        seed: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        padding: int,
        rank: int = 0,
        world_size: int = 1,
        augment: bool = True,
        drop_last: bool = False,
        channels_last: bool = False,
    ) -> None:
        self._split = _DeviceSplit(
            data, device=device, mean=mean, std=std, channels_last=channels_last
        )
        self.planner = EpochPlanner(len(data), seed, rank, world_size, drop_last, 2 * padding)
        self.batch_size = batch_size
        self.padding = padding
        self.augment = augment
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = check_start_batch(start_batch, len(self))

    def __len__(self) -> int:
        return self.planner.steps(self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        plan = self.planner.plan(self.epoch)
        device = self._split.device
        indices = plan.indices.to(device)
        offsets = plan.offsets.to(device)
        flips = plan.flips.to(device)
        for step in range(self.start_batch, len(self)):
            window = slice(step * self.batch_size, (step + 1) * self.batch_size)
            images, labels = self._split.select(indices[window])
            if self.augment:
                images = crop_flip_batch(images, offsets[window], flips[window], self.padding)
            yield self._split.finish(images), labels


class DeviceEvalLoader:
    """Unaugmented eval batches of this rank's shard ``rank::world_size`` (no padding)."""

    def __init__(
        self,
        data: ImageArrays,
        *,
        batch_size: int,
        device: torch.device,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
    ) -> None:
        self._split = _DeviceSplit(
            data, device=device, mean=mean, std=std, channels_last=channels_last
        )
        self.batch_size = batch_size
        self._indices = eval_shard(len(data), rank, world_size).to(self._split.device)

    def __len__(self) -> int:
        return ceil_div(len(self._indices), self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        for start in range(0, len(self._indices), self.batch_size):
            images, labels = self._split.select(self._indices[start : start + self.batch_size])
            yield self._split.finish(images), labels
