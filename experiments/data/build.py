"""``build_data``: check the settings against the dataset, load it, wrap it in the loaders."""

from __future__ import annotations

from pathlib import Path

from experiments.data.arrays import ArraySplits
from experiments.data.bundle import DataBundle
from experiments.data.cifar import CIFAR_SIDE, load_cifar
from experiments.data.device_loader import DeviceEvalLoader, DeviceTrainLoader
from experiments.data.digits import load_digits_splits
from experiments.data.fingerprint import DataFingerprint, arrays_fingerprint, samples_fingerprint
from experiments.data.gpu_decode import check_decode
from experiments.data.image_folder import scan_split
from experiments.data.imagenet import build_imagenet, check_imagenet_layout
from experiments.data.settings import LOADER_NAMES, DataSettings
from experiments.data.sharding import EpochPlanner, train_steps_per_epoch
from experiments.data.worker_loader import (
    ArrayImageDataset,
    PlannedEpochSampler,
    WorkerEvalLoader,
    WorkerTrainLoader,
    make_split_loaders,
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
    _require(name in DATASET_NAMES, f"Unknown dataset {name!r}; valid: {', '.join(DATASET_NAMES)}")
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


IMAGENET_SPLITS = {"train": "train", "test": "val"}  # role -> folder


def fingerprint_data(name: str, settings: DataSettings) -> DataFingerprint:
    """The fingerprint of the data ``build_data(name, settings)`` trains and evaluates on,
    read the same way without building loaders: the arrays of an in-memory dataset (CIFAR
    downloaded and verified as ``settings`` say), or ImageNet's scanned sample lists (one
    directory scan, no image decoded)."""
    _require(name in DATASET_NAMES, f"Unknown dataset {name!r}; valid: {', '.join(DATASET_NAMES)}")
    if name != "imagenet":
        return arrays_fingerprint(_load_arrays(name, settings))
    root = Path(settings.root).expanduser()
    classes = check_imagenet_layout(root)
    samples = {
        role: [
            (sample.shown, sample.label)
            for sample in scan_split(root, root / folder, classes, settings.follow_links).samples
        ]
        for role, folder in IMAGENET_SPLITS.items()
    }
    return samples_fingerprint(root, samples)


def build_array_bundle(splits: ArraySplits, settings: DataSettings, *, name: str) -> DataBundle:
    """Loaders over in-memory splits (CIFAR, digits, or synthetic arrays in benchmarks), by
    ``settings.loader``."""
    norm = {"mean": splits.mean, "std": splits.std}
    shard = {"rank": settings.rank, "world_size": settings.world_size}
    if settings.loader == "device":
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
        test = DeviceEvalLoader(
            splits.test,
            batch_size=settings.eval_batch_size,
            device=settings.device,
            channels_last=settings.channels_last,
            **norm,
            **shard,
        )
    else:
        train, test = _classic_loaders(splits, settings)
    return DataBundle(
        train=train,
        test=test,
        num_classes=splits.num_classes,
        num_train=len(splits.train),
        num_test=len(splits.test),
        name=name,
    )


def _classic_loaders(
    splits: ArraySplits, settings: DataSettings
) -> tuple[WorkerTrainLoader, WorkerEvalLoader]:
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
    train_loader, test_loader = make_split_loaders(
        settings,
        ArrayImageDataset(splits.train, augment=settings.augment, **norm),
        sampler,
        ArrayImageDataset(splits.test, augment=False, **norm),
    )
    device, channels_last = settings.device, settings.channels_last
    return (
        WorkerTrainLoader(train_loader, sampler, device, channels_last),
        WorkerEvalLoader(test_loader, device, channels_last),
    )
