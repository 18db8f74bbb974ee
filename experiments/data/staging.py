"""Moving worker batches to the training device: pinned host memory, non_blocking copies on a
side CUDA stream one batch ahead of the compute, and (for uint8 batches) the conversion to
normalised float32 on the device, where it costs nothing next to the model.

uint8 worker output is a quarter of float32's bytes through the worker queues, the pinned
buffers and the host-to-device link; ``scripts/bench_data.py --imagenet`` measures both.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from experiments.data.normalization import channel_tensor, normalize_uint8

Batch = tuple[torch.Tensor, torch.Tensor]


class OnDeviceNormalize:
    """uint8 [B, C, H, W] on the device -> float32 normalised with ``mean``/``std`` (the exact
    arithmetic of torchvision's ToTensor + Normalize, see ``normalize_uint8``)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device):
        self.mean = channel_tensor(mean, device)
        self.std = channel_tensor(std, device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"expected uint8 images from the workers, got {images.dtype}")
        return normalize_uint8(images, self.mean, self.std)


def _copy_ahead(batches: Iterable[Batch], device: torch.device) -> Iterator[Batch]:
    """CUDA: copy batch i+1 on a side stream while the compute stream works on batch i."""
    side = torch.cuda.Stream(device=device)
    compute = torch.cuda.current_stream(device)
    pending: Batch | None = None
    for images, labels in batches:
        with torch.cuda.stream(side):
            staged = (
                images.to(device, non_blocking=True),
                labels.to(device, non_blocking=True),
            )
        if pending is not None:
            yield pending
        compute.wait_stream(side)
        for tensor in staged:
            tensor.record_stream(compute)  # the allocator must wait for the compute stream
        pending = staged
    if pending is not None:
        yield pending


def stage_batches(
    batches: Iterable[Batch],
    device: torch.device,
    *,
    normalize: OnDeviceNormalize | None = None,
    channels_last: bool = False,
    non_blocking: bool = False,
) -> Iterator[Batch]:
    """Worker batches on ``device``, normalised there if ``normalize``, NHWC if asked."""
    if device.type == "cuda":
        moved: Iterable[Batch] = _copy_ahead(batches, device)
    else:
        moved = (
            (images.to(device, non_blocking=non_blocking), labels.to(device))
            for images, labels in batches
        )
    for images, labels in moved:
        if normalize is not None:
            images = normalize(images)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        yield images, labels
