"""scikit-learn's bundled handwritten digits (1,797 real 8x8 images) as a CIFAR-like dataset.

Fixed stratified split (test_size=0.2, random_state=0): 1,437 train / 360 test. Pixels 0..16 are
scaled to uint8 0..255, resized bilinearly to ``image_size`` and replicated to 3 channels.
Normalisation uses the digits' own statistics, the pixel mean and std of the resized train split
(the same for all channels), not the CIFAR constants, whose mean would map the black background
to about -2. The crop padding is ``image_size // 8`` (4 at 32).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from experiments.data.arrays import ArraySplits, ImageArrays

DIGITS_SIDE = 8
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
_DIGITS_MAX = 16


def digits_padding(image_size: int) -> int:
    return max(1, image_size // DIGITS_SIDE)


def _to_images(pixels: np.ndarray, image_size: int) -> torch.Tensor:
    """[N, 64] values 0..16 -> uint8 [N, 3, S, S]."""
    scaled = torch.from_numpy(pixels).float().mul_(255 / _DIGITS_MAX)
    scaled = scaled.view(-1, 1, DIGITS_SIDE, DIGITS_SIDE)
    if image_size != DIGITS_SIDE:
        scaled = F.interpolate(
            scaled,
            size=(image_size, image_size),
            mode="bilinear",
            align_corners=False,
            antialias=False,
        )
    gray = scaled.round_().clamp_(0, 255).to(torch.uint8)
    return gray.expand(-1, 3, -1, -1).contiguous()


def load_digits_splits(image_size: int = 32) -> ArraySplits:
    """Both splits of the digits at ``image_size`` x ``image_size`` (``image_size >= 8``)."""
    if image_size < DIGITS_SIDE:
        raise ValueError(f"image_size must be >= {DIGITS_SIDE} for digits, got {image_size}")
    # Imported here: scikit-learn takes seconds to import and only digits needs it.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)),
        test_size=DIGITS_TEST_FRACTION,
        random_state=DIGITS_SPLIT_SEED,
        stratify=labels,
    )
    images = _to_images(bunch.data, image_size)
    targets = torch.from_numpy(labels)
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    train = ImageArrays(images[train_idx], targets[train_idx])
    test = ImageArrays(images[test_idx], targets[test_idx])
    pixels = train.images[:, 0].float().div_(255)
    mean, std = float(pixels.mean()), float(pixels.std(correction=0))
    return ArraySplits(
        train=train,
        test=test,
        num_classes=10,
        mean=(mean,) * 3,
        std=(std,) * 3,
        padding=digits_padding(image_size),
    )
