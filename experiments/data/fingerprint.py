"""What data a run trains and evaluates on, as one comparable value: its fingerprint.

A run's setup (``experiments.run_identity``) holds ``data.fingerprint`` so that a launch into a run
trained on other data (another CIFAR copy read with ``data.verify=false``, an ImageNet folder
with images added, removed, renamed or relabelled) is refused instead of skipped or resumed.
The value names the split sizes and a sha256 over every split in order:

- in-memory datasets (digits, CIFAR): each split's images and labels, bytes as trained on;
- image folders (ImageNet): each split's samples in the order the loader uses them, as
  (path relative to the dataset root, label). File contents are not read (that would mean
  reading the whole dataset at every launch); an image that turns out unreadable under
  ``data.skip_bad_images=true`` is counted in summary.json (``data_skipped_images``).

The splits are those the run uses, by role: ``train`` (less the validation split), ``val`` (the
honest protocol's held-out split, absent without one) and ``test``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments.data.arrays import ImageArrays


@dataclass(frozen=True)
class DataFingerprint:
    """Split sizes (in training order: train first) and the sha256 of their content."""

    sizes: dict[str, int]
    sha256: str

    @property
    def num_train(self) -> int:
        return self.sizes["train"]

    def value(self) -> str:
        """The setup's ``data.fingerprint``: 'train 1437, test 360, sha256 <hex>'."""
        sizes = ", ".join(f"{name} {count}" for name, count in self.sizes.items())
        return f"{sizes}, sha256 {self.sha256}"


def _update(digest: hashlib._Hash, *parts: str) -> None:
    for part in parts:
        encoded = part.encode()
        digest.update(len(encoded).to_bytes(8, "little") + encoded)


def arrays_fingerprint(splits: Mapping[str, ImageArrays]) -> DataFingerprint:
    """The fingerprint of in-memory splits by role, in order: shapes, image bytes and labels."""
    digest = hashlib.sha256()
    sizes = {}
    for name, split in splits.items():
        images, labels = split.images.contiguous().numpy(), split.labels.numpy()
        _update(digest, name, str(images.shape), str(images.dtype), str(labels.dtype))
        digest.update(images.tobytes())
        digest.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
        sizes[name] = len(split)
    return DataFingerprint(sizes, digest.hexdigest())


def samples_fingerprint(
    root: str | Path, splits: Mapping[str, Iterable[tuple[str, int]]]
) -> DataFingerprint:
    """The fingerprint of class-folder splits: ``splits[name]`` yields (path, label) in the
    loader's order; paths are taken relative to ``root``, so a moved dataset keeps its value."""
    digest = hashlib.sha256()
    sizes = {}
    for name, samples in splits.items():
        _update(digest, name)
        count = 0
        for path, label in samples:
            _update(digest, os.path.relpath(path, root), str(int(label)))
            count += 1
        sizes[name] = count
    return DataFingerprint(sizes, digest.hexdigest())
