"""Per-channel normalisation constants and the uint8 -> normalised float conversion."""

from __future__ import annotations

import torch

# PAPER.md: mean (125.3, 123.0, 113.9)/255, std (63.0, 62.1, 66.7)/255.
CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def channel_tensor(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """Constants shaped [C, 1, 1] (float32) for broadcasting over [B, C, H, W]."""
    return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1, 1)


def normalize_uint8(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 [B, C, H, W] -> normalised float32.

    Uses the arithmetic of torchvision's ToTensor (x / 255) followed by Normalize ((x - m) / s), so
    the device and the classic paths agree bit for bit.
    """
    return images.float().div_(255).sub_(mean).div_(std)
