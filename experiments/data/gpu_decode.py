"""``data.decode=gpu``: ImageNet JPEGs decoded on the CUDA device (nvJPEG through
``torchvision.io.decode_jpeg(device="cuda")``), cropped, resized, flipped and normalised there.
The DataLoader workers only read file bytes, so a few CPU cores feed a fast GPU.

The random crop and flip of every sample are drawn exactly as the CPU path draws them
(RandomResizedCrop.get_params, then the flip coin, from the CPU torch RNG seeded with the sample's
seed and restored afterwards; no other generator is touched, so the CUDA RNG state a checkpoint
saves is the training's own), so both paths crop the same boxes; pixels differ slightly (another
JPEG decoder and resize kernel). A file nvJPEG cannot decode (CMYK, PNG in disguise) is decoded
on the CPU.

The workers check what the CPU path checks before anything is decoded: each file's header must
name an image of at most ``data.max_image_pixels`` (a decompression bomb never reaches a decoder),
and an unreadable file fails naming it or, with ``data.skip_bad_images=true``, is replaced by the
next good one and counted (``CheckedImageFolder.first_good``). A file whose header is sound but
whose compressed data no decoder accepts is found only when the batch is decoded: it stops the
run naming the file (no replacement is possible at that point).

A worker ships a batch as one packed uint8 tensor of the files' bytes (plus their lengths): an
ordinary tensor, which torch moves through shared memory under any sharing strategy (the
tensors of ``torchvision.io.read_file`` cannot be: under the default ``file_descriptor``
strategy pickling them fails in the worker's feeder thread and the batch never arrives).

Decoding runs on a stream of its own, ordered against the compute stream: torchvision's CUDA
decoder allocates its output buffers on the current stream and writes them from a private
stream that does not wait for the current stream, and nvJPEG's hardware engine may write before
work queued ahead of it has run. On the compute stream the caching allocator hands out memory
freed by the previous step while that step's kernels may still be reading it, so decoding there
could overwrite live tensors. On the decode stream the allocator only reuses memory once the
work of every stream that used it has run (``SideStream.hand_over`` records the compute stream's
use), and the host waits for the decode stream's own previous work before the next decode.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import io
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from experiments.data.bundle import DataBundle
from experiments.data.image_folder import (
    BadImageError,
    CheckedImageFolder,
    Sample,
    read_checked_bytes,
)
from experiments.data.loading import Loading
from experiments.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from experiments.data.staging import OnDeviceNormalize
from experiments.data.validation_split import ValidationSplit
from experiments.data.worker_loader import (
    EpochStart,
    SampleSeedSampler,
    cpu_rng_seeded,
    make_eval_dataloader,
    make_split_loaders,
    seeded_train_sampler,
)
from experiments.device_seam import (
    GPU_DECODE_ON_CPU_ENV,
    SideStream,
    decode_jpegs,
    gpu_decode_possible,
)

_SCALE, _RATIO = (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0)  # RandomResizedCrop's defaults


def check_gpu_decode(device: torch.device) -> None:
    """Refuse ``data.decode=gpu`` where this run cannot use it (no CUDA device)."""
    if not gpu_decode_possible(device):
        raise ValueError(
            f"decode='gpu' is invalid here: it needs a CUDA device (torchvision.io.decode_jpeg "
            f"on the GPU), but this run trains on {torch.device(device).type}: use "
            f"data.decode=cpu (tests set {GPU_DECODE_ON_CPU_ENV}=1 to run this path with the "
            "CPU decoder)"
        )


class EncodedImages(Dataset):
    """(file bytes, sample seed, label, file name) for keys ``index`` or ``(index, sample seed)``;
    each file's header checked first, a bad file replaced when the folder skips bad images."""

    def __init__(self, folder: CheckedImageFolder) -> None:
        self.folder = folder  # its samples: inside the dataset root, no duplicates

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[bytes, int, int, str]:
        index, seed = key if isinstance(key, tuple) else (key, -1)
        data, sample = self.folder.first_good(index, self._read)
        return data, seed, sample.label, sample.shown

    def _read(self, index: int) -> tuple[bytes, Sample]:
        sample = self.folder.samples[index]
        return read_checked_bytes(sample, self.folder.max_pixels), sample


class EncodedBatch(NamedTuple):
    """A batch of files as one uint8 tensor (their bytes back to back), the files' lengths,
    the samples' seeds, their labels and the files' names (for errors)."""

    data: torch.Tensor
    lengths: list[int]
    seeds: list[int]
    labels: torch.Tensor
    names: list[str]

    def files(self) -> list[torch.Tensor]:
        """Each file's bytes: views of ``data``, no copy."""
        return list(torch.split(self.data, self.lengths))


def collate_encoded(items: list[tuple[bytes, int, int, str]]) -> EncodedBatch:
    blobs, seeds, labels, names = zip(*items, strict=True)
    lengths = [len(blob) for blob in blobs]
    packed = torch.empty(sum(lengths), dtype=torch.uint8)
    view, offset = packed.numpy(), 0
    for blob, length in zip(blobs, lengths, strict=True):
        view[offset : offset + length] = np.frombuffer(blob, dtype=np.uint8)
        offset += length
    return EncodedBatch(packed, lengths, list(seeds), torch.tensor(labels), list(names))


def _decode(batch: EncodedBatch, device: torch.device) -> list[torch.Tensor]:
    data = batch.files()
    try:
        return decode_jpegs(data, device)
    except RuntimeError:  # one undecodable file fails the batch: decode one by one
        return [_decode_one(d, name, device) for d, name in zip(data, batch.names, strict=True)]


def _decode_one(data: torch.Tensor, name: str, device: torch.device) -> torch.Tensor:
    try:
        return decode_jpegs([data], device)[0]
    except RuntimeError:
        pass
    try:  # not a JPEG nvJPEG takes (CMYK, a PNG under a .JPEG name): the CPU decoder
        return io.decode_image(data, mode=io.ImageReadMode.RGB).to(device)
    except RuntimeError as error:
        raise BadImageError(
            f"{name} cannot be decoded ({error}); its header was sound, so the workers could "
            "not replace it (data.skip_bad_images); remove the file or use data.decode=cpu"
        ) from error


def _train_view(image: torch.Tensor, seed: int, size: int) -> torch.Tensor:
    """RandomResizedCrop(size) + RandomHorizontalFlip with the CPU path's draws for ``seed``."""
    with cpu_rng_seeded(seed):
        top, left, height, width = RandomResizedCrop.get_params(image, list(_SCALE), list(_RATIO))
        flip = bool(torch.rand(1) < 0.5)
    view = TF.resized_crop(image, top, left, height, width, [size, size], antialias=True)
    return view.flip(-1) if flip else view


def _eval_view(image: torch.Tensor, resize: int, size: int) -> torch.Tensor:
    return TF.center_crop(TF.resize(image, [resize], antialias=True), [size, size])


class GpuDecodedLoader:
    """Batches of file bytes from the workers -> normalised float32 images on the device,
    decoded on a side stream (module docstring). As a train loader (with ``sampler``),
    ``set_epoch(epoch, start_batch=b)`` starts the epoch at its batch b without reading the
    earlier files."""

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
        self.loader, self.device, self.train = loader, torch.device(device), train
        self.crop_size, self.resize_size = crop_size, resize_size
        self.channels_last = channels_last
        self.epochs = EpochStart(loader, sampler) if sampler is not None else None
        self.normalize = OnDeviceNormalize(IMAGENET_MEAN, IMAGENET_STD, self.device)
        self.stream = SideStream(self.device)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if self.epochs is None:
            raise TypeError("set_epoch is for the train loader (this one evaluates)")
        self.epochs.set_epoch(epoch, start_batch)

    def __len__(self) -> int:
        return len(self.epochs) if self.epochs is not None else len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.loader:
            # The previous batch's crops, queued on the decode stream, must have read their
            # decoded images before the decoder may be handed that memory again.
            self.stream.synchronize()
            with self.stream.active():
                images, labels = self._prepare(batch)
            self.stream.hand_over(images, labels)
            yield images, labels

    def _prepare(self, batch: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        decoded = _decode(batch, self.device)
        if self.train:
            views = [
                _train_view(im, s, self.crop_size)
                for im, s in zip(decoded, batch.seeds, strict=True)
            ]
        else:
            views = [_eval_view(im, self.resize_size, self.crop_size) for im in decoded]
        images = self.normalize(torch.stack(views))
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, batch.labels.to(self.device, non_blocking=True)


def build_gpu_decoded_imagenet(
    train_folder: CheckedImageFolder,
    val_folder: CheckedImageFolder,
    *,
    num_classes: int,
    folders: Any,
    loading: Loading,
    held_out: CheckedImageFolder | None = None,
    validation: ValidationSplit | None = None,
) -> DataBundle:
    """``val_folder``: the test split (ImageNet's val/); ``held_out``: the validation split
    drawn from train/ (``validation`` describes it), None without one. ``folders``: the
    dataset's ``ImageFolders`` (its crop sizes)."""
    device = loading.device
    check_gpu_decode(device)
    train_set, val_set = EncodedImages(train_folder), EncodedImages(val_folder)
    sampler = seeded_train_sampler(train_set, loading)
    train_loader, val_loader = make_split_loaders(
        loading, train_set, sampler, val_set, collate_fn=collate_encoded
    )
    sizes = dict(
        crop_size=folders.crop_size,
        resize_size=folders.resize_size,
        channels_last=loading.channels_last,
    )
    held_out_loader = None
    if held_out is not None:
        loader = make_eval_dataloader(loading, EncodedImages(held_out), collate_fn=collate_encoded)
        held_out_loader = GpuDecodedLoader(loader, device, train=False, **sizes)
    return DataBundle(
        train=GpuDecodedLoader(
            train_loader, device, train=loading.augment, sampler=sampler, **sizes
        ),
        test=GpuDecodedLoader(val_loader, device, train=False, **sizes),
        num_classes=num_classes,
        num_train=len(train_set),
        num_test=len(val_set),
        name="imagenet",
        skipped_images=lambda: sum(
            folder.skipped() for folder in (train_folder, val_folder, held_out) if folder
        ),
        val=held_out_loader,
        validation=validation,
    )
