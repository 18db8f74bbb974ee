"""From a run's data settings to its loaders: the registered dataset built with its options
(``experiments.data.datasets``), its validation split held out, its fingerprint, and the
loaders one rank trains and evaluates with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from experiments.data.arrays import ArraySplits, ImageArrays
from experiments.data.bundle import DataBundle, EvalLoader
from experiments.data.device_loader import DeviceEvalLoader, DeviceTrainLoader
from experiments.data.fingerprint import DataFingerprint, arrays_fingerprint, samples_fingerprint
from experiments.data.imagenet import ImageFolders, build_imagenet
from experiments.data.loading import LOADER_NAMES, Loading
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
from experiments.settings import DEFAULT_IMAGE_SIZE

__all__ = [
    "LOADER_NAMES",
    "build_array_bundle",
    "build_data",
    "fingerprint_data",
    "load_data",
    "make_dataset",
]

Dataset = ArraySplits | ImageFolders


def make_dataset(
    name: str, root: str = "data", image_size: int = DEFAULT_IMAGE_SIZE, **options: Any
) -> Dataset:
    """Dataset ``name``: its registered builder (``experiments.data.datasets``) called with
    ``options`` (and ``root`` and ``image_size``, when it takes them). A value the builder
    refuses raises ValueError naming the option; a run passes ``data.name``, ``data.root``,
    ``data.image_size`` and ``data``'s options."""
    from autodrop.checks import call_with_options, check_choice
    from experiments.data.datasets import DATASETS

    builders = {builder.__name__: builder for builder in DATASETS}
    builder = builders[check_choice("data.name", name, tuple(builders))]
    context = {"root": str(root), "image_size": image_size}
    return call_with_options("dataset", name, builder, context, options)


def load_data(name: str, loading: Loading, *, root: str = "data", **options: Any) -> DataBundle:
    """Dataset ``name``, built with ``root``, ``image_size`` and its ``options``
    (``make_dataset``), as one rank loads it."""
    return build_data(make_dataset(name, root, **options), loading, name=name)


def build_data(dataset: Dataset, loading: Loading, *, name: str) -> DataBundle:
    """Train, test (and validation) loaders of ``dataset`` for one rank as ``loading``
    describes; ``name`` is the dataset's (the bundle and the messages say it)."""
    if loading.loader == "device" and not isinstance(dataset, ArraySplits):
        raise ValueError(
            f"loader='device' does not support {name!r}: it reads image folders, which only "
            "loader workers serve; use loader='classic'"
        )
    if isinstance(dataset, ImageFolders):
        bundle = build_imagenet(dataset, loading)
    else:
        bundle = build_array_bundle(dataset, loading, name=name)
    batch, world = loading.batch_size, loading.world_size
    steps = train_steps_per_epoch(bundle.num_train, batch, world, loading.drop_last)
    if steps < 1:
        raise ValueError(
            f"batch_size={batch} x world_size={world} with drop_last=True leaves no full "
            f"batch of the {bundle.num_train} train samples"
        )
    return bundle


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


def fingerprint_data(dataset: Dataset, val_size: int) -> DataFingerprint:
    """The fingerprint of the data ``build_data`` trains and evaluates on, read the same way
    without building loaders: the split arrays of an in-memory dataset, or an image-folder
    dataset's scanned sample lists (one directory scan, no image decoded); ``val_size``
    training samples held out as the build holds them out."""
    if isinstance(dataset, ArraySplits):
        return arrays_fingerprint(HeldOut.of(dataset, val_size).by_role())
    samples = dataset.samples(val_size)
    return samples_fingerprint(
        dataset.path,
        {
            role: [(sample.shown, sample.label) for sample in split]
            for role, split in samples.by_role().items()
        },
    )


def build_array_bundle(splits: ArraySplits, settings: Loading, *, name: str) -> DataBundle:
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
    splits: ArraySplits, settings: Loading
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
    splits: ArraySplits, settings: Loading
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
