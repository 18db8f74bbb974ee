"""Class-folder image datasets read without trusting the tree: every file and folder is resolved
and must stay inside the dataset root (unless links out are allowed), a link back to a folder
that contains it (a loop) is skipped, a file reached twice is read once, a file reached from two
class folders is refused (it would have two labels), a file in both splits is refused, and each
image is checked before decoding.

"The same file" means the same (st_dev, st_ino): a symbolic link and a hard link are both caught.
That costs one ``stat`` per image while scanning (a directory listing's inode numbers are not
reliable on every file system, e.g. overlayfs, and carry no device): measured on the project's
2-core VM with the inodes cached, 5-7 us per file on top of the ~22 us per file the scan takes
anyway, i.e. about 8 s more for ImageNet's 1.33M images (more on a cold network file system).

Samples are ordered like torchvision's ImageFolder: classes sorted, then by folder and file name.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

import torch
from PIL import Image
from torch.utils.data import Dataset

from experiments.errors import DatasetUnavailableError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Sample:
    shown: str  # the path as found under the split folder (what messages name)
    real: str  # the resolved file that is read
    label: int


# A file's identity: (st_dev, st_ino), or its real path where it cannot be stat'ed (a dangling
# link: it fails, or is skipped, when read, as any unreadable image).
FileKey = tuple[int, int] | str


def file_key(entry: os.DirEntry, real: str) -> FileKey:
    """The identity of the file ``entry`` leads to (``real``: where it resolves)."""
    try:
        status = entry.stat()  # follows a link, as ``real`` was resolved
    except OSError:
        return real
    return status.st_dev, status.st_ino


@dataclass
class FolderScan:
    """What scanning one split found: its samples and what was left out."""

    samples: list[Sample] = field(default_factory=list)
    files: dict[FileKey, Sample] = field(default_factory=dict)  # each sample by its file
    duplicates: int = 0  # files reached a second time within their class (read once)
    loops: list[str] = field(default_factory=list)  # links to a folder containing them


def _contains(folder: str, path: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class _SplitScanner:
    def __init__(self, root: Path, follow_links: bool) -> None:
        self.root = os.path.realpath(root)
        self.follow_links = follow_links
        self.scan = FolderScan()

    def resolve(self, shown: Path) -> str:
        """The real path of ``shown``; a link leaving the dataset root is refused unless links
        may be followed."""
        real = os.path.realpath(shown)
        if not self.follow_links and not _contains(self.root, real):
            raise DatasetUnavailableError(
                f"{shown} leads to {real}, outside the dataset root {self.root}: refused. Keep "
                "the dataset's files and class folders inside its root, or run with "
                "data.follow_links=true to read linked data outside it."
            )
        return real

    def add_class(self, split_real: str, class_dir: Path, label: int) -> None:
        real = self.resolve(class_dir)
        if _contains(real, split_real):
            raise DatasetUnavailableError(
                f"class folder {class_dir} leads to {real}, which contains the split folder "
                "itself (a link loop): make it a real class folder or remove it."
            )
        found: list[tuple[Path, str, FileKey]] = []
        self._walk(class_dir, real, found, visited=set())
        for shown, file_real, key in sorted(
            found, key=lambda item: (str(item[0].parent), item[0].name)
        ):
            self._add(Sample(str(shown), file_real, label), key)

    def _walk(
        self,
        shown_dir: Path,
        real_dir: str,
        found: list[tuple[Path, str, FileKey]],
        visited: set[str],
    ) -> None:
        visited.add(real_dir)
        with os.scandir(real_dir) as entries:
            listing = sorted(entries, key=lambda entry: entry.name)
        for entry in listing:
            shown = shown_dir / entry.name
            is_dir = entry.is_dir()  # follows a link: where it leads is checked below
            if not is_dir and not entry.name.lower().endswith(IMAGE_EXTENSIONS):
                continue  # neither read nor descended into, wherever it leads
            real = self.resolve(shown) if entry.is_symlink() else os.path.join(real_dir, entry.name)
            if not is_dir:
                found.append((shown, real, file_key(entry, real)))
            elif _contains(real, real_dir):
                self.scan.loops.append(str(shown))
                log.warning("%s leads back to %s, a folder containing it: skipped", shown, real)
            elif real not in visited:
                self._walk(shown, real, found, visited)

    def _add(self, sample: Sample, key: FileKey) -> None:
        earlier = self.scan.files.get(key)
        if earlier is None:
            self.scan.files[key] = sample
            self.scan.samples.append(sample)
        elif earlier.label == sample.label:
            self.scan.duplicates += 1
        else:
            raise DatasetUnavailableError(
                f"{sample.shown} and {earlier.shown} are the same file{_where(earlier, sample)}, "
                "found in two class folders: an image cannot have two labels. Remove the link "
                "(symbolic or hard) that puts it in the wrong class."
            )


def _where(first: Sample, second: Sample) -> str:
    """Where two samples of one file lead (both real paths for a hard link)."""
    reals = dict.fromkeys((first.real, second.real))
    return f" ({' = '.join(reals)})"


def scan_split(
    root: Path, split_dir: Path, classes: list[str], follow_links: bool = False
) -> FolderScan:
    """The samples of ``split_dir/<class>/...`` (labels = positions in ``classes``)."""
    scanner = _SplitScanner(root, follow_links)
    split_real = scanner.resolve(split_dir)
    for label, name in enumerate(classes):
        scanner.add_class(split_real, split_dir / name, label)
    scan = scanner.scan
    if scan.duplicates or scan.loops:
        log.warning(
            "%s: %d files reached twice read once, %d looping links skipped",
            split_dir,
            scan.duplicates,
            len(scan.loops),
        )
    return scan


def refuse_shared_files(train: FolderScan, val: FolderScan) -> None:
    """Refuse splits that share a file (a link or a hard link from one into the other): the
    model would be evaluated on images it trained on. The message names one pair and the count."""
    shared = [key for key in val.files if key in train.files]
    if shared:
        first_train, first_val = train.files[shared[0]], val.files[shared[0]]
        raise DatasetUnavailableError(
            f"train and val share {len(shared)} image file{'s' if len(shared) > 1 else ''} "
            f"(e.g. {first_train.shown} and {first_val.shown} are the same file"
            f"{_where(first_train, first_val)}): a model would be evaluated on images it was "
            "trained on. Remove the links (symbolic or hard) that put the images of one split "
            "into the other."
        )


class BadImageError(DatasetUnavailableError):
    """An image file that cannot be decoded, is truncated, or is larger than allowed."""


@contextlib.contextmanager
def _checked_image(
    sample: Sample, max_pixels: int, source: BinaryIO | None = None
) -> Iterator[Image.Image]:
    """``sample`` (or ``source``, its bytes) opened as an image whose header says at most
    ``max_pixels``: nothing is decoded until the caller asks; whatever fails, here or in the
    caller's block, is a BadImageError naming the file."""
    try:
        if source is None:
            fd = os.open(sample.real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            source = os.fdopen(fd, "rb")
        with source, Image.open(source) as image:
            pixels = image.width * image.height
            if pixels > max_pixels:
                raise BadImageError(
                    f"{sample.shown} is {image.width}x{image.height} = {pixels} pixels, above "
                    f"data.max_image_pixels={max_pixels}: refused before decoding. Raise "
                    "data.max_image_pixels if such images are expected."
                )
            yield image
    except BadImageError:
        raise
    except Exception as exc:  # Pillow raises many types for damaged files
        raise BadImageError(f"{sample.shown} cannot be read as an image ({exc})") from exc


def open_checked_image(sample: Sample, max_pixels: int) -> Image.Image:
    """The RGB image of ``sample``; its size is checked from the header before decoding."""
    with _checked_image(sample, max_pixels) as image:
        return image.convert("RGB")


def read_checked_bytes(sample: Sample, max_pixels: int) -> bytes:
    """The bytes of ``sample``'s file once its header names an image of at most ``max_pixels``
    (nothing decoded: for a decoder elsewhere, e.g. on the GPU)."""
    try:
        fd = os.open(sample.real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise BadImageError(f"{sample.shown} cannot be read as an image ({exc})") from exc
    with _checked_image(sample, max_pixels, io.BytesIO(data)):
        return data


Loaded = TypeVar("Loaded")


class CheckedImageFolder(Dataset):
    """(transformed image, label) per sample. A bad image raises ``BadImageError`` naming it,
    or, with ``skip_bad``, is recorded and replaced by the next good sample (image and label),
    so batches keep their size; ``skipped()`` counts the distinct files replaced so far, over
    all DataLoader workers (the flags live in shared memory)."""

    def __init__(
        self,
        samples: list[Sample],
        transform: Callable[[Image.Image], torch.Tensor],
        *,
        max_pixels: int,
        skip_bad: bool,
    ) -> None:
        self.samples = samples
        self.transform = transform
        self.max_pixels = max_pixels
        self.bad = torch.zeros(len(samples), dtype=torch.bool).share_memory_() if skip_bad else None

    def __len__(self) -> int:
        return len(self.samples)

    def skipped(self) -> int:
        return 0 if self.bad is None else int(self.bad.sum())

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.first_good(index, self._load)

    def first_good(self, index: int, load: Callable[[int], Loaded]) -> Loaded:
        """``load(index)``; without ``skip_bad`` a BadImageError propagates, with it the sample
        is recorded as bad and the next good one is loaded instead (the loader of
        ``data.decode=gpu`` reads file bytes through this too)."""
        if self.bad is None:
            return load(index)
        for offset in range(len(self.samples)):
            candidate = (index + offset) % len(self.samples)
            if self.bad[candidate]:
                continue
            try:
                return load(candidate)
            except BadImageError as error:
                self.bad[candidate] = True
                log.warning("skipping a bad image (data.skip_bad_images=true): %s", error)
        raise DatasetUnavailableError(
            f"every one of the {len(self.samples)} images is unreadable or too large "
            f"(first: {self.samples[0].shown})"
        )

    def _load(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        return self.transform(open_checked_image(sample, self.max_pixels)), sample.label
