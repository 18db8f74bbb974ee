"""CIFAR-10/100 from the official python-pickle release (``cifar-10-batches-py/``,
``cifar-100-python/``), optionally downloaded.

Each file is checked against the official release's md5 (kept here; remembered in a stamp so
later loads do not hash again) and unpickled by ``cifar_pickle``, which admits only the types
a release contains. ``verify=False`` skips the md5 check for a deliberately modified copy;
the restricted unpickler applies either way.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from autodrop.checks import check_choice
from experiments.data.archive_download import install_tar_archive, missing_files
from experiments.data.arrays import ArraySplits, ImageArrays
from experiments.data.cifar_pickle import ADMITTED_GLOBALS, RefusedGlobal, load_cifar_pickle
from experiments.data.errors import DatasetUnavailableError
from experiments.data.normalization import CIFAR_MEAN, CIFAR_STD
from experiments.data.verified_files import FileIdentity, VerificationStamp

log = logging.getLogger(__name__)

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
    file_md5: dict[str, str]  # every file of the extracted release -> its official md5

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
        file_md5={
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "test_batch": "40351d587109b95175f43aff81a1287e",
            "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
        },
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
        file_md5={
            "train": "16019d7e3df5f24257cddd939b257f8d",
            "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
            "meta": "7973b15100ade9c7d40fb424638fde48",
        },
    ),
}


def _release(kind: str) -> CifarRelease:
    return CIFAR_RELEASES[check_choice("kind", kind, sorted(CIFAR_RELEASES))]


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


def _redownload(release: CifarRelease, folder: Path) -> str:
    return (
        f"Delete {folder} and fetch the release again with data.download=true "
        f"(paths.data_dir={folder.parent}), or extract {release.url} (md5 {release.md5}) "
        f"into {folder.parent} yourself."
    )


class ReleaseReader:
    """Reads the files of one extracted release: md5-checked (unless ``verify`` is False, for a
    deliberately modified copy) and unpickled with the restricted CIFAR unpickler."""

    def __init__(self, folder: Path, release: CifarRelease, verify: bool) -> None:
        self.folder, self.release = folder, release
        self.stamp = VerificationStamp(folder) if verify else None
        if not verify:
            log.warning(
                "data.verify=false: %s is used without checking it against the official %s md5s",
                folder,
                release.title,
            )

    def read(self, name: str) -> bytes:
        path = self.folder / name
        with open(path, "rb") as handle:
            content = handle.read()
            identity = FileIdentity.of(os.fstat(handle.fileno()))
        if self.stamp is not None:
            self._check_md5(path, content, identity)
        return content

    def _check_md5(self, path: Path, content: bytes, identity: FileIdentity) -> None:
        expected = self.release.file_md5[path.name]
        if self.stamp.vouches_for(path.name, identity, expected):
            return
        actual = hashlib.md5(content, usedforsecurity=False).hexdigest()
        if actual != expected:
            raise DatasetUnavailableError(
                f"{path} has md5 {actual}, but the official {self.release.title} release's "
                f"{path.name} has md5 {expected}: this copy is modified or is not the official "
                f"release. {_redownload(self.release, self.folder)} To train on a deliberately "
                "modified copy, run with data.verify=false."
            )
        self.stamp.remember(path.name, identity, expected)

    def unpickle(self, name: str) -> dict:
        path = self.folder / name
        content = self.read(name)
        try:
            loaded = load_cifar_pickle(content)
        except RefusedGlobal as refused:
            admitted = ", ".join(sorted(f"{m}.{n}" for m, n in ADMITTED_GLOBALS))
            raise DatasetUnavailableError(
                f"{path} refers to the Python global {refused.qualified_name}, which no official "
                f"{self.release.title} file contains (they may name only {admitted}): refused "
                f"without running it. {_redownload(self.release, self.folder)}"
            ) from None
        except Exception as exc:  # a corrupt pickle can raise almost any exception type
            raise DatasetUnavailableError(
                f"{path} is not a readable CIFAR pickle ({exc!r}). "
                f"{_redownload(self.release, self.folder)}"
            ) from exc
        if not isinstance(loaded, dict):
            raise DatasetUnavailableError(
                f"{path} does not hold a CIFAR dict. {_redownload(self.release, self.folder)}"
            )
        return loaded

    def finish(self) -> None:
        """Remember what was verified (no-op when nothing new was hashed)."""
        if self.stamp is not None:
            self.stamp.save()


def _read_batch(reader: ReleaseReader, name: str) -> tuple[np.ndarray, np.ndarray]:
    path, release = reader.folder / name, reader.release
    content = reader.unpickle(name)
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


def _read_split(reader: ReleaseReader, names: tuple[str, ...]) -> ImageArrays:
    batches = [_read_batch(reader, name) for name in names]
    data = np.concatenate([data for data, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    images = torch.from_numpy(data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE))
    return ImageArrays(images, torch.from_numpy(labels))


def load_cifar(
    root: str | Path, kind: str, download: bool = False, verify: bool = True
) -> ArraySplits:
    """Both splits of CIFAR-10 (``kind="cifar10"``) or CIFAR-100 as uint8 [N, 3, 32, 32].

    ``verify``: check every file of the release (meta included) against its official md5."""
    release = _release(kind)
    reader = ReleaseReader(ensure_cifar_files(root, kind, download), release, verify)
    train = _read_split(reader, release.train_files)
    test = _read_split(reader, (release.test_file,))
    reader.unpickle(release.meta_file)  # refuses a bad meta file now, not when names are read
    reader.finish()
    return ArraySplits(
        train=train,
        test=test,
        num_classes=release.num_classes,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        padding=CIFAR_PADDING,
    )


def read_cifar_label_names(root: str | Path, kind: str, verify: bool = True) -> list[str]:
    """Class names from the release's meta file, in label order."""
    release = _release(kind)
    reader = ReleaseReader(ensure_cifar_files(root, kind), release, verify)
    path = reader.folder / release.meta_file
    names = reader.unpickle(release.meta_file).get(release.label_names_key)
    reader.finish()
    if not isinstance(names, list) or len(names) != release.num_classes:
        raise DatasetUnavailableError(
            f"{path}: expected {release.num_classes} names under {release.label_names_key!r}"
        )
    return [name.decode() if isinstance(name, bytes) else str(name) for name in names]
