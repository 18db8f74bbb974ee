"""CIFAR-10/100 from the official python-pickle release (``cifar-10-batches-py/``,
``cifar-100-python/``), optionally downloaded.

Each file is checked against the official release's md5 (kept here) on every load, and
unpickled by ``cifar_pickle``, which admits only the types a release contains; images must be a
non-empty uint8 [N, 3072] array and labels a list of N plain ints in range. ``verify=False``
skips the md5 check for a deliberately modified copy; every other check applies either way.

No record of an earlier verification is kept: a record beside the files can be forged by
whoever can write the files (a planted copy with a record matching its size, times and inode),
and hashing costs little: CIFAR-10's 186 MB of files (its archive is 163 MiB) take 0.24 s of
CPU to hash (measured on the project's 2-core VM; a whole load takes 0.45 s of CPU).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from autodrop.checks import check_choice
from experiments.data.archive_download import install_tar_archive, missing_files
from experiments.data.arrays import ArraySplits, ImageArrays
from experiments.data.cifar_pickle import (
    ADMITTED_GLOBALS,
    RefusedContent,
    RefusedGlobal,
    brief_repr,
    load_cifar_pickle,
)
from experiments.data.cifar_release import CIFAR_RELEASES, CifarRelease, expected_layout
from experiments.data.normalization import CIFAR_MEAN, CIFAR_STD
from experiments.errors import DatasetUnavailableError

log = logging.getLogger(__name__)

CIFAR_SIDE = 32
CIFAR_PADDING = 4
_ROW_BYTES = 3 * CIFAR_SIDE * CIFAR_SIDE


def _release(kind: str) -> CifarRelease:
    return CIFAR_RELEASES[check_choice("kind", kind, sorted(CIFAR_RELEASES))]


def _how_to_get(release: CifarRelease, root: Path) -> str:
    return (
        f"Run with data.download=true (download=True in Python) to fetch it, or download "
        f"{release.url} (md5 {release.md5}) yourself and extract it into {root}."
    )


def ensure_cifar_files(root: str | Path, kind: str, download: bool = False) -> Path:
    """The release folder under ``root``, downloaded first when absent and ``download``."""
    release = _release(kind)
    root = Path(root).expanduser()
    folder = root / release.folder
    lacking = missing_files(folder, release.files)
    if not lacking:
        return folder
    layout = expected_layout(release, root)
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
        self.folder, self.release, self.verify = folder, release, verify
        if not verify:
            log.warning(
                "data.verify=false: %s is used without checking it against the official %s md5s",
                folder,
                release.title,
            )

    def read(self, name: str) -> bytes:
        path = self.folder / name
        content = path.read_bytes()
        if self.verify:
            self._check_md5(path, content)
        return content

    def _check_md5(self, path: Path, content: bytes) -> None:
        expected = self.release.file_md5[path.name]
        actual = hashlib.md5(content, usedforsecurity=False).hexdigest()
        if actual != expected:
            raise DatasetUnavailableError(
                f"{path} has md5 {actual}, but the official {self.release.title} release's "
                f"{path.name} has md5 {expected}: this copy is modified or is not the official "
                f"release. {_redownload(self.release, self.folder)} To train on a deliberately "
                "modified copy, run with data.verify=false."
            )

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
        except RefusedContent as refused:
            raise DatasetUnavailableError(
                f"{path} {refused}: refused before building it (no official "
                f"{self.release.title} file does this). {_redownload(self.release, self.folder)}"
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


def _checked_labels(path: Path, release: CifarRelease, labels: object) -> np.ndarray:
    """The labels of one batch as int64, after checking they are a list of plain ints (no
    floats, strings, bools or nested lists) in 0..num_classes-1."""
    key, valid = release.label_key, f"ints in 0..{release.num_classes - 1}"
    if labels is None:
        raise DatasetUnavailableError(f"{path} has no {key!r} (a list of {valid})")
    if not isinstance(labels, list):
        kind = type(labels).__name__
        raise DatasetUnavailableError(f"{path}: {key!r} is a {kind}, not a list of {valid}")
    for index, label in enumerate(labels):
        if type(label) is not int or not 0 <= label < release.num_classes:
            raise DatasetUnavailableError(
                f"{path}: {key!r}[{index}] is {brief_repr(label, 40)} ({type(label).__name__}); "
                f"{release.title} labels must be {valid}"
            )
    return np.array(labels, dtype=np.int64)


def _read_batch(reader: ReleaseReader, name: str) -> tuple[np.ndarray, np.ndarray]:
    path, release = reader.folder / name, reader.release
    content = reader.unpickle(name)
    data = content.get(b"data")
    labels = content.get(release.label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DatasetUnavailableError(f"{path}: b'data' is not a uint8 [N, {_ROW_BYTES}] array")
    if data.shape[0] == 0:
        raise DatasetUnavailableError(f"{path} holds no images (b'data' is {data.shape})")
    labels = _checked_labels(path, release, labels)
    if data.shape[1] != _ROW_BYTES or len(labels) != len(data):
        raise DatasetUnavailableError(
            f"{path}: expected b'data' [N, {_ROW_BYTES}] and {release.label_key!r} of length N, "
            f"got data {data.shape} and {len(labels)} labels"
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
    if not isinstance(names, list) or len(names) != release.num_classes:
        raise DatasetUnavailableError(
            f"{path}: expected {release.num_classes} names under {release.label_names_key!r}"
        )
    return [name.decode() if isinstance(name, bytes) else str(name) for name in names]
