"""``build_data``: check the settings against the dataset, load it, wrap it in the loaders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from autodrop.checks import check_choice
from experiments.data.arrays import ArraySplits, ImageArrays
from experiments.data.bundle import DataBundle, EvalLoader
from experiments.data.cifar import CIFAR_SIDE, load_cifar
from experiments.data.device_loader import DeviceEvalLoader, DeviceTrainLoader
from experiments.data.digits import load_digits_splits
from experiments.data.fingerprint import DataFingerprint, arrays_fingerprint, samples_fingerprint
from experiments.data.gpu_decode import check_decode
from experiments.data.imagenet import FolderOptions, ImageNetSamples, build_imagenet
from experiments.data.settings import LOADER_NAMES, DataSettings
from experiments.data.sharding import EpochPlanner, train_steps_per_epoch
from experiments.data.validation_split import ValidationSplit, split_validation
from experiments.data.worker_loader import (
    ArrayImageDataset,
    PlannedEpochSampler,
    WorkerEvalLoader,
    WorkerTrainLoader,
    make_eval_dataloader,
    make_train_dataloader,
)

__all__ = [
    "DATASET_NAMES",
    "LOADER_NAMES",
    "build_array_bundle",
    "build_data",
    "fingerprint_data",
]

DATASET_NAMES = ("cifar10", "cifar100", "imagenet", "digits")
DEVICE_LOADER_DATASETS = ("cifar10", "cifar100", "digits")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _check_dataset(name: str, settings: DataSettings) -> None:
    """What ``DataSettings`` cannot check alone: the dataset and the settings it needs."""
    check_choice("dataset", name, DATASET_NAMES)
    _require(
        settings.loader != "device" or name in DEVICE_LOADER_DATASETS,
        f"loader='device' does not support {name!r} (it does {', '.join(DEVICE_LOADER_DATASETS)}); "
        "use loader='classic'",
    )
    if name == "digits":
        _require(
            settings.image_size >= 8,
            f"image_size must be >= 8 for digits, got {settings.image_size}",
        )
    if name.startswith("cifar"):
        _require(
            settings.image_size == CIFAR_SIDE,
            f"image_size must be {CIFAR_SIDE} for {name} (its native size), "
            f"got {settings.image_size}",
        )
    check_decode(settings.decode, name, settings.device)


def build_data(name: str, settings: DataSettings) -> DataBundle:
    """Train and test loaders for dataset ``name`` as ``settings`` describes for one rank."""
    _check_dataset(name, settings)
    if name == "imagenet":
        bundle = build_imagenet(settings)
    else:
        bundle = build_array_bundle(_load_arrays(name, settings), settings, name=name)
    batch, world = settings.batch_size, settings.world_size
    steps = train_steps_per_epoch(bundle.num_train, batch, world, settings.drop_last)
    _require(
        steps >= 1,
        f"batch_size={batch} x world_size={world} with drop_last=True leaves no full "
        f"batch of the {bundle.num_train} train samples",
    )
    return bundle


def _load_arrays(name: str, settings: DataSettings) -> ArraySplits:
    if name == "digits":
        return load_digits_splits(settings.image_size)
    return load_cifar(settings.root, name, settings.download, settings.verify)


@dataclass(frozen=True)
class HeldOut:
    """In-memory splits with the validation split taken out of ``splits.train``: ``val`` holds
    it (None without one, the paper's protocol)."""

    splits: ArraySplits
    val: ImageArrays | None
    validation: ValidationSplit | None

    @classmethod
    def of(cls, splits: ArraySplits, val_size: int) -> HeldOut:
        validation = split_validation(splits.train.labels, val_size, like=splits.test.labels)
        if validation is None:
            return cls(splits, None, None)
        kept = replace(splits, train=splits.train.select(validation.train))
        return cls(kept, splits.train.select(validation.val), validation)

    def by_role(self) -> dict[str, ImageArrays]:
        """train, val (when held out) and test, in the order a fingerprint reads them."""
        val = {} if self.val is None else {"val": self.val}
        return {"train": self.splits.train, **val, "test": self.splits.test}


def fingerprint_data(name: str, settings: DataSettings) -> DataFingerprint:
    """The fingerprint of the data ``build_data(name, settings)`` trains and evaluates on, read
    the same way without building loaders: the split arrays of an in-memory dataset (CIFAR
    downloaded and verified as ``settings`` say), or ImageNet's scanned sample lists (one
    directory scan, no image decoded); the validation split held out as the build holds it."""
    check_choice("dataset", name, DATASET_NAMES)
    if name != "imagenet":
        held = HeldOut.of(_load_arrays(name, settings), settings.val_size)
        return arrays_fingerprint(held.by_role())
    root = Path(settings.root).expanduser()
    samples = ImageNetSamples.scan(root, FolderOptions.of(settings), settings.val_size)
    return samples_fingerprint(
        root,
        {
            role: [(sample.shown, sample.label) for sample in split]
            for role, split in samples.by_role().items()
        },
    )


def build_array_bundle(splits: ArraySplits, settings: DataSettings, *, name: str) -> DataBundle:
    """Loaders over in-memory splits (CIFAR, digits, or synthetic arrays in benchmarks), by
    ``settings.loader``; ``settings.val_size`` training samples are held out as the validation
    split (``experiments.data.validation_split``)."""
    held = HeldOut.of(splits, settings.val_size)
    splits = held.splits
    make = _device_loaders if settings.loader == "device" else _classic_loaders
    train, eval_loader = make(splits, settings)
    return DataBundle(
        train=train,
        test=eval_loader(splits.test),
        num_classes=splits.num_classes,
        num_train=len(splits.train),
        num_test=len(splits.test),
        name=name,
        val=None if held.val is None else eval_loader(held.val),
        validation=held.validation,
    )


EvalLoaderMaker = Callable[[ImageArrays], EvalLoader]


def _device_loaders(
    splits: ArraySplits, settings: DataSettings
) -> tuple[DeviceTrainLoader, EvalLoaderMaker]:
    """The device-resident train loader and a maker of eval loaders (test, validation)."""
    norm = {"mean": splits.mean, "std": splits.std}
    shard = {"rank": settings.rank, "world_size": settings.world_size}
    train = DeviceTrainLoader(
        splits.train,
        batch_size=settings.batch_size,
        device=settings.device,
        seed=settings.seed,
        padding=splits.padding,
        augment=settings.augment,
        drop_last=settings.drop_last,
        channels_last=settings.channels_last,
        **norm,
        **shard,
    )

    def eval_loader(arrays: ImageArrays) -> DeviceEvalLoader:
        return DeviceEvalLoader(
            arrays,
            batch_size=settings.eval_batch_size,
            device=settings.device,
            channels_last=settings.channels_last,
            **norm,
            **shard,
        )

    return train, eval_loader


def _classic_loaders(
    splits: ArraySplits, settings: DataSettings
) -> tuple[WorkerTrainLoader, EvalLoaderMaker]:
    """The DataLoader-worker train loader and a maker of eval loaders (test, validation)."""
    norm = {"mean": splits.mean, "std": splits.std, "padding": splits.padding}
    sampler = PlannedEpochSampler(
        EpochPlanner(
            len(splits.train),
            settings.seed,
            settings.rank,
            settings.world_size,
            settings.drop_last,
            2 * splits.padding,
        )
    )
    train_loader = make_train_dataloader(
        settings, ArrayImageDataset(splits.train, augment=settings.augment, **norm), sampler
    )
    device, channels_last = settings.device, settings.channels_last

    def eval_loader(arrays: ImageArrays) -> WorkerEvalLoader:
        dataset = ArrayImageDataset(arrays, augment=False, **norm)
        return WorkerEvalLoader(make_eval_dataloader(settings, dataset), device, channels_last)

    return WorkerTrainLoader(train_loader, sampler, device, channels_last), eval_loader
