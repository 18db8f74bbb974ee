"""CIFAR-10/100 from the official python-pickle release (``cifar-10-batches-py/``,
``cifar-100-python/``), read with our own pickle reader and optionally downloaded."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from experiments.data.archive_download import install_tar_archive, missing_files
from experiments.data.arrays import ArraySplits, ImageArrays
from experiments.data.errors import DatasetUnavailableError
from experiments.data.normalization import CIFAR_MEAN, CIFAR_STD

CIFAR_SIDE = 32
CIFAR_PADDING = 4
_ROW_BYTES = 3 * CIFAR_SIDE * CIFAR_SIDE


@dataclass(frozen=True)
class CifarRelease:
    """Where one official CIFAR release lives and how its pickles are keyed."""

    title: str
    folder: str
    url: str
    md5: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: bytes
    label_names_key: bytes
    num_classes: int

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train_files, self.test_file, self.meta_file)


CIFAR_RELEASES: dict[str, CifarRelease] = {
    "cifar10": CifarRelease(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_file="test_batch",
        meta_file="batches.meta",
        label_key=b"labels",
        label_names_key=b"label_names",
        num_classes=10,
    ),
    "cifar100": CifarRelease(
        title="CIFAR-100",
        folder="cifar-100-python",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        train_files=("train",),
        test_file="test",
        meta_file="meta",
        label_key=b"fine_labels",
        label_names_key=b"fine_label_names",
        num_classes=100,
    ),
}


def _release(kind: str) -> CifarRelease:
    if kind not in CIFAR_RELEASES:
        raise ValueError(f"Unknown CIFAR kind {kind!r}; valid: {sorted(CIFAR_RELEASES)}")
    return CIFAR_RELEASES[kind]


def _how_to_get(release: CifarRelease, root: Path) -> str:
    return (
        f"Run with data.download=true (download=True in Python) to fetch it, or download "
        f"{release.url} (md5 {release.md5}) yourself and extract it into {root}."
    )


def _expected_layout(release: CifarRelease, root: Path) -> str:
    return f"{release.title} is expected as {root / release.folder}/{{{', '.join(release.files)}}}"


def ensure_cifar_files(root: str | Path, kind: str, download: bool = False) -> Path:
    """The release folder under ``root``, downloaded first when absent and ``download``."""
    release = _release(kind)
    root = Path(root).expanduser()
    folder = root / release.folder
    lacking = missing_files(folder, release.files)
    if not lacking:
        return folder
    layout = _expected_layout(release, root)
    if download and not folder.exists():
        return install_tar_archive(
            url=release.url,
            md5=release.md5,
            root=root,
            folder=release.folder,
            required=release.files,
            hint=(
                f"{layout}. Without network access here, download {release.url} "
                f"(md5 {release.md5}) elsewhere and extract it into {root}."
            ),
        )
    if folder.exists():
        raise DatasetUnavailableError(
            f"{layout}, but {folder} lacks {', '.join(lacking)}. Delete {folder} and run with "
            f"data.download=true, or extract {release.url} (md5 {release.md5}) into {root} again."
        )
    raise DatasetUnavailableError(
        f"{layout}, and {folder} does not exist. {_how_to_get(release, root)}"
    )


def _unpickle(path: Path, release: CifarRelease) -> dict:
    corrupt = (
        f"Delete {path.parent} and run with data.download=true, or extract {release.url} "
        f"(md5 {release.md5}) again."
    )
    try:
        with open(path, "rb") as handle:
            content = pickle.load(handle, encoding="bytes")
    except Exception as exc:  # a corrupt pickle can raise almost any exception type
        raise DatasetUnavailableError(
            f"{path} is not a readable CIFAR pickle ({exc!r}). {corrupt}"
        ) from exc
    if not isinstance(content, dict):
        raise DatasetUnavailableError(f"{path} does not hold a CIFAR dict. {corrupt}")
    return content


def _read_batch(path: Path, release: CifarRelease) -> tuple[np.ndarray, np.ndarray]:
    content = _unpickle(path, release)
    data = content.get(b"data")
    labels = content.get(release.label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DatasetUnavailableError(f"{path}: b'data' is not a uint8 [N, {_ROW_BYTES}] array")
    if data.shape[1] != _ROW_BYTES or labels is None or len(labels) != data.shape[0]:
        raise DatasetUnavailableError(
            f"{path}: expected b'data' [N, {_ROW_BYTES}] and {release.label_key!r} of length N, "
            f"got data {data.shape} and {'no labels' if labels is None else len(labels)} labels"
        )
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= release.num_classes):
        raise DatasetUnavailableError(
            f"{path}: labels outside 0..{release.num_classes - 1} for {release.title}"
        )
    return data, labels


def _read_split(folder: Path, names: tuple[str, ...], release: CifarRelease) -> ImageArrays:
    batches = [_read_batch(folder / name, release) for name in names]
    data = np.concatenate([data for data, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    images = torch.from_numpy(data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE))
    return ImageArrays(images, torch.from_numpy(labels))


def load_cifar(root: str | Path, kind: str, download: bool = False) -> ArraySplits:
    """Both splits of CIFAR-10 (``kind="cifar10"``) or CIFAR-100 as uint8 [N, 3, 32, 32]."""
    release = _release(kind)
    folder = ensure_cifar_files(root, kind, download)
    return ArraySplits(
        train=_read_split(folder, release.train_files, release),
        test=_read_split(folder, (release.test_file,), release),
        num_classes=release.num_classes,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        padding=CIFAR_PADDING,
    )


def read_cifar_label_names(root: str | Path, kind: str) -> list[str]:
    """Class names from the release's meta file, in label order."""
    release = _release(kind)
    folder = ensure_cifar_files(root, kind)
    path = folder / release.meta_file
    names = _unpickle(path, release).get(release.label_names_key)
    if not isinstance(names, list) or len(names) != release.num_classes:
        raise DatasetUnavailableError(
            f"{path}: expected {release.num_classes} names under {release.label_names_key!r}"
        )
    return [name.decode() if isinstance(name, bytes) else str(name) for name in names]
