"""In-memory image datasets: uint8 image tensors plus labels, the input of both array loaders."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ImageArrays:
    """One split held in memory: ``images`` uint8 [N, C, H, W], ``labels`` int64 [N] (CPU)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be a uint8 tensor [N, C, H, W], got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(
                f"labels must be an int64 tensor [{self.images.shape[0]}], got "
                f"{self.labels.dtype} {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def select(self, indices: torch.Tensor) -> ImageArrays:
        """The samples at ``indices`` (int64 positions), in that order."""
        return ImageArrays(
            self.images.index_select(0, indices), self.labels.index_select(0, indices)
        )


@dataclass(frozen=True)
class ArraySplits:
    """A dataset ready for the array loaders: both splits plus how to normalise and augment them.

    ``mean``/``std`` are per channel in [0, 1] pixel units; ``padding`` is the zero padding of the
    random crop (4 for 32x32 images).
    """

    train: ImageArrays
    test: ImageArrays
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    padding: int
