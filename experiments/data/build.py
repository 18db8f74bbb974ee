"""``build_data``: validate the arguments, load a dataset, wrap it in the requested loaders."""

from __future__ import annotations

import torch

from experiments.data.arrays import ArraySplits
from experiments.data.bundle import DataBundle
from experiments.data.cifar import CIFAR_SIDE, load_cifar
from experiments.data.device_loader import DeviceEvalLoader, DeviceTrainLoader
from experiments.data.digits import load_digits_splits
from experiments.data.gpu_decode import check_decode
from experiments.data.imagenet import FolderOptions, build_imagenet
from experiments.data.sharding import EpochPlanner, eval_shard, train_steps_per_epoch
from experiments.data.worker_loader import (
    ArrayImageDataset,
    PlannedEpochSampler,
    WorkerEvalLoader,
    WorkerTrainLoader,
    make_dataloader,
)

DATASET_NAMES = ("cifar10", "cifar100", "imagenet", "digits")
LOADER_NAMES = ("device", "classic")
DEVICE_LOADER_DATASETS = ("cifar10", "cifar100", "digits")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _validate(
    name: str,
    *,
    loader: str,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    rank: int,
    world_size: int,
    num_workers: int,
    image_size: int,
    crop_size: int,
    resize_size: int,
    max_image_pixels: int,
) -> None:
    _require(name in DATASET_NAMES, f"Unknown dataset {name!r}; valid: {', '.join(DATASET_NAMES)}")
    _require(loader in LOADER_NAMES, f"Unknown loader {loader!r}; valid: {', '.join(LOADER_NAMES)}")
    _require(
        loader != "device" or name in DEVICE_LOADER_DATASETS,
        f"loader='device' does not support {name!r} (it does {', '.join(DEVICE_LOADER_DATASETS)}); "
        "use loader='classic'",
    )
    for label, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
        _require(value >= 1, f"{label} must be >= 1, got {value}")
    _require(world_size >= 1, f"world_size must be >= 1, got {world_size}")
    _require(0 <= rank < world_size, f"rank must be in 0..{world_size - 1}, got {rank}")
    _require(seed >= 0, f"seed must be >= 0, got {seed}")
    _require(num_workers >= 0, f"num_workers must be >= 0, got {num_workers}")
    if name == "digits":
        _require(image_size >= 8, f"image_size must be >= 8 for digits, got {image_size}")
    if name.startswith("cifar"):
        _require(
            image_size == CIFAR_SIDE,
            f"image_size must be {CIFAR_SIDE} for {name} (its native size), got {image_size}",
        )
    if name == "imagenet":
        _require(crop_size >= 1, f"crop_size must be >= 1, got {crop_size}")
        _require(
            resize_size >= crop_size,
            f"resize_size must be >= crop_size ({crop_size}), got {resize_size}",
        )
        _require(max_image_pixels >= 1, f"max_image_pixels must be >= 1, got {max_image_pixels}")


def build_data(
    name: str,
    *,
    root: str,
    batch_size: int,
    eval_batch_size: int,
    device: torch.device | str,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    loader: str = "device",
    num_workers: int = 4,
    download: bool = False,
    verify: bool = True,
    image_size: int = 32,
    augment: bool = True,
    drop_last: bool = False,
    channels_last: bool = False,
    crop_size: int = 224,
    resize_size: int = 256,
    follow_links: bool = False,
    skip_bad_images: bool = False,
    max_image_pixels: int = FolderOptions.max_image_pixels,
    decode: str = "cpu",
) -> DataBundle:
    """Train and test loaders for ``name`` on ``device`` for this rank.

    ``batch_size``/``eval_batch_size`` are per rank. ``loader``: "device" (whole split on the
    device, cifar/digits) or "classic" (DataLoader workers; the only one for imagenet).
    ``download`` and ``verify`` (check the official md5s) apply to cifar, ``image_size`` to
    digits (cifar must be 32; imagenet ignores it), ``crop_size``/``resize_size`` and the
    folder safety options (``follow_links``, ``skip_bad_images``, ``max_image_pixels``; see
    ``experiments.data.image_folder``) to imagenet. Remainders: see
    ``experiments.data.sharding``.
    """
    _validate(
        name,
        loader=loader,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        seed=seed,
        rank=rank,
        world_size=world_size,
        num_workers=num_workers,
        image_size=image_size,
        crop_size=crop_size,
        resize_size=resize_size,
        max_image_pixels=max_image_pixels,
    )
    check_decode(decode, name, torch.device(device))
    common = dict(
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        device=torch.device(device),
        seed=seed,
        rank=rank,
        world_size=world_size,
        num_workers=num_workers,
        augment=augment,
        drop_last=drop_last,
        channels_last=channels_last,
    )
    if name == "imagenet":
        options = FolderOptions(follow_links, skip_bad_images, max_image_pixels)
        bundle = build_imagenet(
            root,
            crop_size=crop_size,
            resize_size=resize_size,
            folder_options=options,
            decode=decode,
            **common,
        )
    else:
        splits = (
            load_digits_splits(image_size)
            if name == "digits"
            else load_cifar(root, name, download, verify)
        )
        bundle = build_array_bundle(splits, name=name, loader=loader, **common)
    steps = train_steps_per_epoch(bundle.num_train, batch_size, world_size, drop_last)
    _require(
        steps >= 1,
        f"batch_size={batch_size} x world_size={world_size} with drop_last=True leaves no full "
        f"batch of the {bundle.num_train} train samples",
    )
    return bundle


def build_array_bundle(
    splits: ArraySplits,
    *,
    name: str,
    loader: str,
    batch_size: int,
    eval_batch_size: int,
    device: torch.device,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 4,
    augment: bool = True,
    drop_last: bool = False,
    channels_last: bool = False,
) -> DataBundle:
    """Loaders over in-memory splits (CIFAR, digits, or synthetic arrays in benchmarks)."""
    norm = {"mean": splits.mean, "std": splits.std}
    shard = {"rank": rank, "world_size": world_size}
    if loader == "device":
        train = DeviceTrainLoader(
            splits.train,
            batch_size=batch_size,
            device=device,
            seed=seed,
            padding=splits.padding,
            augment=augment,
            drop_last=drop_last,
            channels_last=channels_last,
            **norm,
            **shard,
        )
        test = DeviceEvalLoader(
            splits.test,
            batch_size=eval_batch_size,
            device=device,
            channels_last=channels_last,
            **norm,
            **shard,
        )
    else:
        train, test = _classic_loaders(
            splits,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            device=device,
            seed=seed,
            num_workers=num_workers,
            augment=augment,
            drop_last=drop_last,
            channels_last=channels_last,
            **shard,
        )
    return DataBundle(
        train=train,
        test=test,
        num_classes=splits.num_classes,
        num_train=len(splits.train),
        num_test=len(splits.test),
        name=name,
    )


def _classic_loaders(
    splits: ArraySplits,
    *,
    batch_size: int,
    eval_batch_size: int,
    device: torch.device,
    seed: int,
    rank: int,
    world_size: int,
    num_workers: int,
    augment: bool,
    drop_last: bool,
    channels_last: bool,
) -> tuple[WorkerTrainLoader, WorkerEvalLoader]:
    norm = {"mean": splits.mean, "std": splits.std, "padding": splits.padding}
    sampler = PlannedEpochSampler(
        EpochPlanner(len(splits.train), seed, rank, world_size, drop_last, 2 * splits.padding)
    )
    common = {"num_workers": num_workers, "device": device, "seed": seed}
    train_loader = make_dataloader(
        ArrayImageDataset(splits.train, augment=augment, **norm),
        sampler=sampler,
        batch_size=batch_size,
        drop_last=drop_last,
        **common,
    )
    test_loader = make_dataloader(
        ArrayImageDataset(splits.test, augment=False, **norm),
        sampler=eval_shard(len(splits.test), rank, world_size).tolist(),
        batch_size=eval_batch_size,
        **common,
    )
    return (
        WorkerTrainLoader(train_loader, sampler, device, channels_last),
        WorkerEvalLoader(test_loader, device, channels_last),
    )
