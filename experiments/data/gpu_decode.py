"""``data.decode=gpu``: ImageNet JPEGs decoded on the CUDA device (nvJPEG through
``torchvision.io.decode_jpeg(device="cuda")``), cropped, resized, flipped and normalised there.
The DataLoader workers only read file bytes, so a few CPU cores feed a fast GPU.

The random crop and flip of every sample are drawn exactly as the CPU path draws them
(RandomResizedCrop.get_params, then the flip coin, from a torch RNG seeded with the sample's
seed), so both paths crop the same boxes; pixels differ slightly (another JPEG decoder and
resize kernel). A file nvJPEG cannot decode (CMYK, PNG in disguise) is decoded on the CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import io
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from autodrop.checks import check_choice
from experiments.data.bundle import DataBundle
from experiments.data.image_folder import CheckedImageFolder
from experiments.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from experiments.data.settings import DECODERS, DataSettings
from experiments.data.staging import OnDeviceNormalize
from experiments.data.worker_loader import (
    SampleSeedSampler,
    make_split_loaders,
    seeded_train_sampler,
)

_SCALE, _RATIO = (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0)  # RandomResizedCrop's defaults


def check_decode(decode: str, dataset: str, device: torch.device) -> None:
    """Refuse a ``data.decode`` this run cannot use, naming the key and the valid choices."""
    check_choice("data.decode", decode, DECODERS)
    if decode == "gpu" and dataset != "imagenet":
        raise ValueError(f"data.decode='gpu' applies to imagenet only, not {dataset!r}")
    if decode == "gpu" and device.type != "cuda":
        raise ValueError(
            f"data.decode='gpu' needs a CUDA device (torchvision.io.decode_jpeg on the GPU), "
            f"but this run trains on {device.type}: use data.decode=cpu "
            f"(valid: {', '.join(DECODERS)})"
        )


class EncodedImages(Dataset):
    """(file bytes as a uint8 tensor, sample seed, label) for keys ``index`` or
    ``(index, sample seed)``."""

    def __init__(self, folder: CheckedImageFolder) -> None:
        self.samples = folder.samples  # checked: inside the dataset root, no duplicates

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        index, seed = key if isinstance(key, tuple) else (key, -1)
        sample = self.samples[index]
        return io.read_file(sample.real), seed, sample.label


def collate_encoded(items: list[tuple[torch.Tensor, int, int]]) -> tuple[list, list, torch.Tensor]:
    data, seeds, labels = zip(*items, strict=True)
    return list(data), list(seeds), torch.tensor(labels)


def _decode(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    try:
        return io.decode_jpeg(data, mode=io.ImageReadMode.RGB, device=device)
    except RuntimeError:  # one undecodable file fails the batch: decode one by one
        return [_decode_one(d, device) for d in data]


def _decode_one(data: torch.Tensor, device: torch.device) -> torch.Tensor:
    try:
        return io.decode_jpeg(data, mode=io.ImageReadMode.RGB, device=device)
    except RuntimeError:
        return io.decode_image(data, mode=io.ImageReadMode.RGB).to(device)


def _train_view(image: torch.Tensor, seed: int, size: int) -> torch.Tensor:
    """RandomResizedCrop(size) + RandomHorizontalFlip with the CPU path's draws for ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        top, left, height, width = RandomResizedCrop.get_params(image, list(_SCALE), list(_RATIO))
        flip = bool(torch.rand(1) < 0.5)
    view = TF.resized_crop(image, top, left, height, width, [size, size], antialias=True)
    return view.flip(-1) if flip else view


def _eval_view(image: torch.Tensor, resize: int, size: int) -> torch.Tensor:
    return TF.center_crop(TF.resize(image, [resize], antialias=True), [size, size])


class GpuDecodedLoader:
    """Batches of file bytes from the workers -> normalised float32 images on the device."""

    def __init__(
        self,
        loader: Any,
        device: torch.device,
        *,
        train: bool,
        crop_size: int,
        resize_size: int,
        channels_last: bool,
        sampler: SampleSeedSampler | None = None,
    ) -> None:
        self.loader, self.device, self.train = loader, device, train
        self.crop_size, self.resize_size = crop_size, resize_size
        self.channels_last = channels_last
        self.sampler = sampler
        self.normalize = OnDeviceNormalize(IMAGENET_MEAN, IMAGENET_STD, device)

    def set_epoch(self, epoch: int) -> None:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for data, seeds, labels in self.loader:
            decoded = _decode(data, self.device)
            if self.train:
                views = [
                    _train_view(im, s, self.crop_size) for im, s in zip(decoded, seeds, strict=True)
                ]
            else:
                views = [_eval_view(im, self.resize_size, self.crop_size) for im in decoded]
            images = self.normalize(torch.stack(views))
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, labels.to(self.device, non_blocking=True)


def build_gpu_decoded_imagenet(
    train_folder: CheckedImageFolder,
    val_folder: CheckedImageFolder,
    *,
    num_classes: int,
    settings: DataSettings,
) -> DataBundle:
    device = settings.device
    check_decode("gpu", "imagenet", device)
    train_set, val_set = EncodedImages(train_folder), EncodedImages(val_folder)
    sampler = seeded_train_sampler(train_set, settings)
    train_loader, val_loader = make_split_loaders(
        settings, train_set, sampler, val_set, collate_fn=collate_encoded
    )
    sizes = dict(
        crop_size=settings.crop_size,
        resize_size=settings.resize_size,
        channels_last=settings.channels_last,
    )
    return DataBundle(
        train=GpuDecodedLoader(
            train_loader, device, train=settings.augment, sampler=sampler, **sizes
        ),
        test=GpuDecodedLoader(val_loader, device, train=False, **sizes),
        num_classes=num_classes,
        num_train=len(train_set),
        num_test=len(val_set),
        name="imagenet",
    )
