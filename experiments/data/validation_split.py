"""The validation split of the honest protocol: training examples held out of a task.

The split is a property of the task, not of the run: it depends only on the training labels and
``data.val_size``, never on the run's seed, so every schedule and seed of a task holds out the
same examples. It is

- stratified like the test split: class c gives ``val_size * m_c / M`` examples (m_c of the test
  split's M), rounded by the largest remainder (ties to the lower class), so selecting on the
  validation split weighs the classes as the reported test error does: ImageNet's val/ folder
  has 50 images per class, so its 10,000 held-out images are exactly 10 per class; CIFAR's
  5,000 are 500 per class; the digits' 360 have the class counts of their 360 test digits.
  Without test labels the training split's own shares are used;
- drawn with a fixed seed (``SPLIT_SEED``, one constant for the whole suite): class c's examples
  are a random subset of its training examples, drawn from a generator seeded with
  ``(SPLIT_SEED, c)``, so one class's draw never depends on another's size;
- fingerprinted: a sha256 of the training set's size and the held-out indices and labels, which
  summary.json records beside the size (``validation``).

``val_size=0`` (the paper's protocol) holds out nothing and leaves the training split as loaded.
Indices are positions in the training split as the dataset loads it (CIFAR's file order, the
digits' fixed train part, ImageNet's sorted class folders); the remaining training examples keep
their order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

#: The seed of every validation split of the suite (a constant, independent of the run's seed).
SPLIT_SEED = 2_023
FINGERPRINT_CHARS = 16


class ValidationSplitError(ValueError):
    """``data.val_size`` does not fit the training split (the message names the key)."""


@dataclass(frozen=True)
class ValidationSplit:
    """Positions in the loaded training split: ``train`` (kept for training) and ``val`` (held
    out), both ascending int64 CPU tensors, disjoint and together every position."""

    train: torch.Tensor
    val: torch.Tensor
    fingerprint: str

    def __len__(self) -> int:
        return int(self.val.shape[0])

    def record(self) -> dict[str, Any]:
        """What summary.json records of the split."""
        return {"size": len(self), "fingerprint": self.fingerprint, "split_seed": SPLIT_SEED}


def stratified_counts(class_sizes: Sequence[int], size: int) -> list[int]:
    """Per class, how many examples the split takes: proportional to ``class_sizes`` (the
    classes' counts in the reference split), rounded by the largest remainder (ties to the lower
    class index); they sum to ``size``."""
    total = sum(class_sizes)
    counts = [size * n // total for n in class_sizes]
    remainders = [size * n % total for n in class_sizes]
    by_remainder = sorted(range(len(class_sizes)), key=lambda c: (-remainders[c], c))
    for c in by_remainder[: size - sum(counts)]:
        counts[c] += 1
    return counts


def split_validation(
    labels: torch.Tensor | Sequence[int],
    size: int,
    like: torch.Tensor | Sequence[int] | None = None,
) -> ValidationSplit | None:
    """The validation split of a training split with these ``labels`` (None when ``size`` is 0),
    its classes in the shares of the labels ``like`` (the test split's; default: ``labels``).

    Raises ValidationSplitError naming ``data.val_size`` when ``size`` is negative, not smaller
    than the training split, or would take every training example of some class.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64).cpu()
    total = int(labels.shape[0])
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < total:
        raise ValidationSplitError(
            f"data.val_size={size!r} is invalid: must be an integer in 0..{total - 1} (the "
            f"training split holds {total} examples; 0 = no validation split)"
        )
    if size == 0:
        return None
    values = labels.numpy()
    classes = np.unique(values)
    members = [np.flatnonzero(values == c) for c in classes]
    reference = None if like is None else torch.as_tensor(like, dtype=torch.int64).cpu().numpy()
    shares = values if reference is None or not len(reference) else reference
    counts = stratified_counts([int((shares == c).sum()) for c in classes], size)
    emptied = [int(c) for c, m, k in zip(classes, members, counts, strict=True) if k >= len(m)]
    if emptied:
        raise ValidationSplitError(
            f"data.val_size={size} is invalid: it would hold out every training example of "
            f"class(es) {emptied[:5]}; choose a smaller size"
        )
    held = [
        m[np.random.default_rng([SPLIT_SEED, int(c)]).permutation(len(m))[:k]]
        for c, m, k in zip(classes, members, counts, strict=True)
    ]
    val = np.sort(np.concatenate(held))
    keep = np.ones(total, dtype=bool)
    keep[val] = False
    val_indices = torch.from_numpy(val.astype(np.int64))
    return ValidationSplit(
        train=torch.from_numpy(np.flatnonzero(keep).astype(np.int64)),
        val=val_indices,
        fingerprint=_fingerprint(total, val_indices, labels[val_indices]),
    )


def _fingerprint(total: int, val: torch.Tensor, val_labels: torch.Tensor) -> str:
    digest = hashlib.sha256()
    digest.update(np.int64(total).tobytes())
    digest.update(val.numpy().astype("<i8").tobytes())
    digest.update(val_labels.numpy().astype("<i8").tobytes())
    return digest.hexdigest()[:FINGERPRINT_CHARS]
