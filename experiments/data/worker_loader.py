"""The classic path: torchvision-style Datasets, ``DataLoader`` worker processes, batches moved to
the device in the main process. Used for CIFAR/digits with ``loader="classic"`` and for ImageNet.

Worker randomness never decides an epoch: for arrays, the sampler hands each worker the crop
offset and flip of every sample (drawn from (seed, epoch) exactly like the device path); for
ImageNet, each sample's transform runs under a torch RNG seeded from (seed, epoch, index). So
an epoch is identical for any ``num_workers``, with persistent workers, and after a resume.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from torchvision import transforms

from experiments.data.arrays import ImageArrays
from experiments.data.augment import crop_flip_image
from experiments.data.sharding import (
    SEED_MASK,
    EpochPlanner,
    check_start_batch,
    epoch_sample_seed_base,
    eval_shard,
)
from experiments.data.staging import OnDeviceNormalize, stage_batches

if TYPE_CHECKING:
    from experiments.data.loading import Loading

Batch = tuple[torch.Tensor, torch.Tensor]
PREFETCH_BATCHES = 4  # per worker (torch's default is 2): rides out slow JPEGs


class PlannedSample(NamedTuple):
    """A sampler key: the dataset index plus the sample's crop origin and flip."""

    index: int
    top: int
    left: int
    flip: bool


class ArrayImageDataset(Dataset):
    """Images held as uint8 HWC arrays (like torchvision's CIFAR10), served as PIL images through
    an explicit crop/flip and ToTensor + Normalize. Keys: ``int`` (no augmentation) or
    ``PlannedSample`` (augmented when ``augment``)."""

    def __init__(
        self,
        data: ImageArrays,
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        padding: int,
        augment: bool,
    ) -> None:
        self.images_hwc = data.images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = data.labels.tolist()
        self.padding = padding
        self.augment = augment
        self.to_normalised_tensor = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize(mean, std)]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | PlannedSample) -> tuple[torch.Tensor, int]:
        index = key.index if isinstance(key, PlannedSample) else key
        pixels = self.images_hwc[index]
        image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
        if self.augment and isinstance(key, PlannedSample):
            image = crop_flip_image(image, key.top, key.left, key.flip, self.padding)
        return self.to_normalised_tensor(image), self.labels[index]


class PlannedEpochSampler(Sampler[PlannedSample]):
    """This rank's ``EpochPlan`` as ``PlannedSample`` keys (a deterministic DistributedSampler
    that also carries the augmentation parameters). ``skip`` leaves out the epoch's first
    samples (a resumed epoch); ``len`` counts what is left."""

    def __init__(self, planner: EpochPlanner) -> None:
        self.planner = planner
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return max(self.planner.samples_per_rank() - self.skip, 0)

    def __iter__(self) -> Iterator[PlannedSample]:
        plan = self.planner.plan(self.epoch)
        window = slice(self.skip, None)
        rows = zip(
            plan.indices[window].tolist(),
            plan.offsets[window, 0].tolist(),
            plan.offsets[window, 1].tolist(),
            plan.flips[window].tolist(),
            strict=True,
        )
        return (PlannedSample(*row) for row in rows)


class SampleSeedSampler(Sampler[tuple[int, int]]):
    """Wraps a DistributedSampler: yields (index, seed of that sample's random transform) with
    the seed a function of (seed, epoch, index) only. ``skip`` leaves out the epoch's first
    samples (a resumed epoch): only their indices are computed, no image is read."""

    def __init__(self, base: DistributedSampler, seed: int) -> None:
        self.base = base
        self.seed = seed
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return max(len(self.base) - self.skip, 0)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        seed_base = epoch_sample_seed_base(self.seed, self.epoch)
        indices = itertools.islice(self.base, self.skip, None)
        return ((index, (seed_base + index) & SEED_MASK) for index in indices)


class PerSampleSeededDataset(Dataset):
    """Runs ``base[index]`` (whose transform draws from the global torch RNG) under a CPU RNG
    seeded with the key's sample seed, restoring the caller's RNG state afterwards."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]):
        index, sample_seed = key
        with cpu_rng_seeded(sample_seed):
            return self.base[index]


@contextlib.contextmanager
def cpu_rng_seeded(seed: int) -> Iterator[None]:
    """The global CPU torch RNG seeded with ``seed`` inside the block and restored after it.
    Only the CPU generator is touched (``torch.manual_seed`` would also reseed every CUDA
    generator, whose state the checkpoints save)."""
    saved = torch.get_rng_state()
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(saved)


class EpochSampler(Protocol):
    def set_epoch(self, epoch: int, skip: int = 0) -> None: ...


class EpochStart:
    """``set_epoch(epoch, start_batch)`` of a train loader over a DataLoader whose sampler has
    ``set_epoch(epoch, skip)``: the sampler skips the first ``start_batch`` batches' samples, so
    the DataLoader never loads them; ``len`` stays the whole epoch's batch count."""

    def __init__(self, loader: DataLoader, sampler: EpochSampler) -> None:
        self.loader, self.sampler = loader, sampler
        self.batches = len(loader)  # before any skip: the whole epoch
        self.start_batch = 0

    def __len__(self) -> int:
        return self.batches

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.start_batch = check_start_batch(start_batch, self.batches)
        self.sampler.set_epoch(epoch, skip=self.start_batch * self.loader.batch_size)


def make_dataloader(
    dataset: Dataset,
    *,
    sampler: Iterable,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    seed: int,
    drop_last: bool = False,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> DataLoader:
    """A DataLoader with persistent workers, ``PREFETCH_BATCHES`` batches in flight per worker
    and pinned memory on CUDA.

    It gets its own generator so that creating an iterator never consumes the global torch RNG
    (which would shift the training process' random stream).
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.device(device).type == "cuda",
        persistent_workers=num_workers > 0,
        prefetch_factor=PREFETCH_BATCHES if num_workers > 0 else None,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=collate_fn,
    )


def make_split_loaders(
    settings: Loading,
    train_set: Dataset,
    train_sampler: Iterable,
    test_set: Dataset,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> tuple[DataLoader, DataLoader]:
    """This rank's (train, eval) DataLoaders from ``settings``: the train split in
    ``train_sampler``'s order (``drop_last`` as set), the eval split sharded by ``eval_shard``."""
    return (
        make_train_dataloader(settings, train_set, train_sampler, collate_fn),
        make_eval_dataloader(settings, test_set, collate_fn),
    )


def make_train_dataloader(
    settings: Loading,
    train_set: Dataset,
    train_sampler: Iterable,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> DataLoader:
    """This rank's DataLoader over the train split in ``train_sampler``'s order."""
    return make_dataloader(
        train_set,
        sampler=train_sampler,
        batch_size=settings.batch_size,
        drop_last=settings.drop_last,
        **_loader_options(settings, collate_fn),
    )


def _loader_options(
    settings: Loading, collate_fn: Callable[[list[Any]], Any] | None
) -> dict[str, Any]:
    return {
        "num_workers": settings.num_workers,
        "device": settings.device,
        "seed": settings.seed,
        "collate_fn": collate_fn,
    }


def make_eval_dataloader(
    settings: Loading,
    dataset: Dataset,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> DataLoader:
    """This rank's DataLoader over an evaluation split (test or validation): its shard
    ``eval_shard`` (no padding, so over all ranks each sample once), in order."""
    shard = eval_shard(len(dataset), settings.rank, settings.world_size).tolist()
    return make_dataloader(
        dataset,
        sampler=shard,
        batch_size=settings.eval_batch_size,
        **_loader_options(settings, collate_fn),
    )


def seeded_train_sampler(dataset: Dataset, settings: Loading) -> SampleSeedSampler:
    """A shuffling DistributedSampler over ``dataset`` for this rank, yielding each index with
    its sample seed (see ``SampleSeedSampler``)."""
    base = DistributedSampler(
        dataset,
        num_replicas=settings.world_size,
        rank=settings.rank,
        shuffle=True,
        seed=settings.seed,
        drop_last=settings.drop_last,
    )
    return SampleSeedSampler(base, settings.seed)


class _ToDevice:
    """Batches of a DataLoader moved to ``device`` (see ``experiments.data.staging``); uint8
    worker output is normalised there when ``normalize`` is given."""

    def __init__(
        self,
        loader: DataLoader,
        device: torch.device,
        channels_last: bool,
        normalize: OnDeviceNormalize | None = None,
    ) -> None:
        self.loader = loader
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.normalize = normalize

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        return stage_batches(
            self.loader,
            self.device,
            normalize=self.normalize,
            channels_last=self.channels_last,
            non_blocking=self.loader.pin_memory,
        )


class WorkerTrainLoader(_ToDevice):
    """TrainLoader over a DataLoader whose sampler has ``set_epoch(epoch, skip)``; epochs start
    at a batch as ``EpochStart`` describes."""

    def __init__(
        self,
        loader: DataLoader,
        sampler: EpochSampler,
        device: torch.device,
        channels_last: bool = False,
        normalize: OnDeviceNormalize | None = None,
    ) -> None:
        super().__init__(loader, device, channels_last, normalize)
        self.epochs = EpochStart(loader, sampler)

    def __len__(self) -> int:
        return len(self.epochs)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epochs.set_epoch(epoch, start_batch)


class WorkerEvalLoader(_ToDevice):
    """EvalLoader over a DataLoader (its sampler is this rank's fixed shard)."""
