"""The suite's CUDA-only calls, each beside what the same code path does on the CPU.

Code that must also run where there is no GPU (the tests, ``make gpu-check --device cpu``) calls
these instead of ``torch.cuda``: on a CUDA device they are the CUDA calls; on the CPU a
synchronisation or a stream is nothing (the CPU has one implicit stream and every op has
finished when it returns), peak memory is unknown (None), and nvJPEG decoding becomes
torchvision's CPU JPEG decoder, but only where a test or the CPU gpu-check asks for it with
``GPU_DECODE_ON_CPU_ENV`` (a user asking for ``data.decode=gpu`` on the CPU is refused).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import Tensor

#: Set to 1 (tests, the CPU gpu-check): ``data.decode=gpu`` on a CPU device decodes with
#: torchvision's CPU decoder through the same loader instead of being refused.
GPU_DECODE_ON_CPU_ENV = "AUTODROP_GPU_DECODE_ON_CPU"


def is_cuda(device: torch.device | str) -> bool:
    return torch.device(device).type == "cuda"


def synchronize(device: torch.device | str) -> None:
    """Wait for every kernel queued on ``device`` (nothing to wait for on the CPU)."""
    if is_cuda(device):
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device | str) -> None:
    if is_cuda(device):
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device | str) -> float | None:
    """The most memory tensors held on ``device`` since the last reset (None on the CPU)."""
    if not is_cuda(device):
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def device_name(device: torch.device | str) -> str:
    if is_cuda(device):
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def gpu_decode_possible(device: torch.device | str) -> bool:
    """Whether ``data.decode=gpu`` can run on ``device``: CUDA, or the CPU stand-in when
    ``GPU_DECODE_ON_CPU_ENV`` asks for it."""
    return is_cuda(device) or os.environ.get(GPU_DECODE_ON_CPU_ENV) == "1"


def decode_jpegs(data: list[Tensor], device: torch.device) -> list[Tensor]:
    """RGB uint8 [3, H, W] images on ``device`` from JPEG bytes (CPU uint8 tensors): nvJPEG on
    CUDA, torchvision's CPU decoder on the CPU. Raises RuntimeError for a file it cannot
    decode."""
    from torchvision import io

    return io.decode_jpeg(data, mode=io.ImageReadMode.RGB, device=device)


class SideStream:
    """A CUDA stream of its own, for work done beside the compute stream (the current stream
    when the stream was made). On the CPU there is one implicit stream and every method does
    nothing."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(device=self.device) if is_cuda(self.device) else None
        self.compute = torch.cuda.current_stream(self.device) if self.stream else None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Queue the block's kernels (and allocate its tensors) on this stream."""
        if self.stream is None:
            yield
            return
        with torch.cuda.stream(self.stream):
            yield

    def synchronize(self) -> None:
        """Wait on the host until this stream's queued work has run."""
        if self.stream is not None:
            self.stream.synchronize()

    def hand_over(self, *tensors: Tensor) -> None:
        """Let the compute stream use ``tensors``, made on this stream: it waits for this
        stream's work so far, and the allocator keeps their memory until the compute stream's
        work queued so far has run."""
        if self.stream is None:
            return
        self.compute.wait_stream(self.stream)
        for tensor in tensors:
            tensor.record_stream(self.compute)
