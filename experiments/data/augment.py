"""Random crop with zero padding + horizontal flip, given explicit offsets and flips.

Two implementations of the same map, one per loader path: ``crop_flip_batch`` works on a uint8
batch on any device with index arithmetic (no per-image loop); ``crop_flip_image`` applies
torchvision's functional ops to one PIL image, as ``RandomCrop(size, padding)`` followed by
``RandomHorizontalFlip`` would. ``offsets`` are (top, left) inside the padded image, i.e. in
``0..2*padding``; pad pixels are 0 in uint8 space (before normalisation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image


def crop_flip_batch(
    images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int
) -> torch.Tensor:
    """Crop [B, C, H, W] images at ``offsets`` [B, 2] of their zero-padded copy, then mirror the
    rows where ``flips`` [B] is True. Returns a new [B, C, H, W] tensor of the same dtype."""
    batch, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    padded_width = width + 2 * padding
    device = images.device
    rows = offsets[:, 0, None] + torch.arange(height, device=device)  # [B, H]
    cols = torch.arange(width, device=device)
    # A flip is folded into the gather: output column x reads input column (W - 1 - x).
    cols = offsets[:, 1, None] + torch.where(flips[:, None], width - 1 - cols, cols)  # [B, W]
    flat_index = (rows[:, :, None] * padded_width + cols[:, None, :]).view(batch, 1, -1)
    gathered = padded.flatten(2).gather(2, flat_index.expand(batch, channels, -1))
    return gathered.view(batch, channels, height, width)


def crop_flip_image(
    image: Image.Image, top: int, left: int, flip: bool, padding: int
) -> Image.Image:
    """The same map for one PIL image, with torchvision's functional ops."""
    width, height = image.size
    padded = TF.pad(image, [padding], fill=0)
    cropped = TF.crop(padded, top, left, height, width)
    return TF.hflip(cropped) if flip else cropped
