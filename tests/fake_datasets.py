"""Tiny datasets written in the real on-disk formats, for tests of anything that reads data.

CIFAR: the official python-pickle releases, written byte for byte the way Python 2's cPickle
(protocol 2) and Python 2's numpy wrote them: dicts keyed by py2 ``str`` (SHORT_BINSTRING),
b"data" a uint8 [N, 3072] row-major CHW array reduced through
``numpy.core.multiarray._reconstruct``, labels as lists of ints. ImageNet: JPEG files in class
folders.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import struct
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

_CIFAR_LAYOUT = {
    # kind: (folder, train files, test file, meta file, label key, number of classes)
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        "test_batch",
        "batches.meta",
        b"labels",
        10,
    ),
    "cifar100": ("cifar-100-python", ["train"], "test", "meta", b"fine_labels", 100),
}


@dataclass(frozen=True)
class FakeCifar:
    """What ``write_fake_cifar`` wrote: the release folder, images uint8 [N, 3, 32, 32] and
    labels int64 [N] per split, the class names of the meta file, and each file's md5."""

    folder: Path
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    label_names: list[str]
    file_md5: dict[str, str]


class Py2Pickler:
    """Serialises the types found in CIFAR's python release with Python 2's protocol-2 opcodes.

    ``bytes`` and ``str`` both become py2 ``str`` (SHORT_BINSTRING/BINSTRING, latin-1), numpy
    arrays are reduced as py2 numpy did, and any other object is written through its
    ``__reduce__`` (GLOBAL + REDUCE), which is how the tests plant code-carrying objects.
    """

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")

    def dumps(self, obj: object) -> bytes:
        self.write(obj)
        return bytes(self.out + pickle.STOP)

    def write(self, obj: object) -> None:
        if obj is None:
            self.out += pickle.NONE
        elif isinstance(obj, bool):
            self.out += pickle.NEWTRUE if obj else pickle.NEWFALSE
        elif isinstance(obj, int):
            self._int(obj)
        elif isinstance(obj, (bytes, str)):
            self._py2_str(obj.encode("latin-1") if isinstance(obj, str) else obj)
        elif isinstance(obj, np.ndarray):
            self._ndarray(obj)
        elif isinstance(obj, np.dtype):
            self._dtype(obj)
        elif isinstance(obj, tuple):
            self._tuple(obj)
        elif isinstance(obj, list):
            self._list(obj)
        elif isinstance(obj, dict):
            self._dict(obj)
        else:
            function, args = obj.__reduce__()[:2]
            self._call(function.__module__, function.__qualname__, args)

    def _int(self, value: int) -> None:
        if 0 <= value < 256:
            self.out += pickle.BININT1 + bytes([value])
        elif 0 <= value < 65536:
            self.out += pickle.BININT2 + struct.pack("<H", value)
        else:
            self.out += pickle.BININT + struct.pack("<i", value)

    def _py2_str(self, raw: bytes) -> None:
        if len(raw) < 256:
            self.out += pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw
        else:
            self.out += pickle.BINSTRING + struct.pack("<i", len(raw)) + raw

    def _global(self, module: str, name: str) -> None:
        self.out += pickle.GLOBAL + f"{module}\n{name}\n".encode()

    def _call(self, module: str, name: str, args: tuple) -> None:
        self._global(module, name)
        self.write(tuple(args))
        self.out += pickle.REDUCE

    def _tuple(self, items: tuple) -> None:
        opcodes = {0: pickle.EMPTY_TUPLE, 1: pickle.TUPLE1, 2: pickle.TUPLE2, 3: pickle.TUPLE3}
        if len(items) not in opcodes:
            self.out += pickle.MARK
        for item in items:
            self.write(item)
        self.out += opcodes.get(len(items), pickle.TUPLE)

    def _list(self, items: list) -> None:
        self.out += pickle.EMPTY_LIST
        if items:
            self.out += pickle.MARK
            for item in items:
                self.write(item)
            self.out += pickle.APPENDS

    def _dict(self, content: dict) -> None:
        self.out += pickle.EMPTY_DICT
        if content:
            self.out += pickle.MARK
            for key, value in content.items():
                self.write(key)
                self.write(value)
            self.out += pickle.SETITEMS

    def _dtype(self, dtype: np.dtype) -> None:
        code = f"{dtype.kind}{dtype.itemsize}"
        self._call("numpy", "dtype", (code, 0, 1))
        self.write((3, dtype.byteorder, None, None, None, -1, -1, 0))
        self.out += pickle.BUILD

    def _ndarray(self, array: np.ndarray) -> None:
        self._global("numpy.core.multiarray", "_reconstruct")
        self._global("numpy", "ndarray")  # the arguments (ndarray, (0,), 'b')
        self.write((0,))
        self.write("b")
        self.out += pickle.TUPLE3 + pickle.REDUCE
        contiguous = np.ascontiguousarray(array)
        self.write((1, contiguous.shape, contiguous.dtype, False, contiguous.tobytes()))
        self.out += pickle.BUILD


def py2_pickle(obj: object) -> bytes:
    """``obj`` pickled as Python 2 pickled the CIFAR release (see ``Py2Pickler``)."""
    return Py2Pickler().dumps(obj)


def _dump(path: Path, content: dict) -> None:
    path.write_bytes(py2_pickle(content))


def _batch(kind: str, images: np.ndarray, labels: np.ndarray, batch_label: str) -> dict:
    content = {
        b"batch_label": batch_label.encode(),
        b"data": images.reshape(len(images), -1),
        b"filenames": [f"fake_{i:05d}.png".encode() for i in range(len(images))],
    }
    if kind == "cifar10":
        content[b"labels"] = labels.tolist()
    else:
        content[b"fine_labels"] = labels.tolist()
        content[b"coarse_labels"] = (labels // 5).tolist()
    return content


def write_fake_cifar(
    root: str | Path,
    kind: str = "cifar10",
    n_train: int = 50,
    n_test: int = 20,
    seed: int = 0,
) -> FakeCifar:
    """Write a random CIFAR-10/100 release with ``n_train``/``n_test`` images under ``root``.

    CIFAR-10's train split is spread over data_batch_1..5 like the real one.
    """
    folder_name, train_files, test_file, meta_file, _, num_classes = _CIFAR_LAYOUT[kind]
    rng = np.random.default_rng(seed)
    folder = Path(root) / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    train_images = rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8)
    train_labels = rng.integers(0, num_classes, n_train, dtype=np.int64)
    test_images = rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8)
    test_labels = rng.integers(0, num_classes, n_test, dtype=np.int64)
    chunks = np.array_split(np.arange(n_train), len(train_files))
    for number, (name, chunk) in enumerate(zip(train_files, chunks, strict=True), start=1):
        label = f"training batch {number} of {len(train_files)}"
        _dump(folder / name, _batch(kind, train_images[chunk], train_labels[chunk], label))
    _dump(folder / test_file, _batch(kind, test_images, test_labels, "testing batch 1 of 1"))
    label_names = [f"class_{i}" for i in range(num_classes)]
    encoded = [name.encode() for name in label_names]
    if kind == "cifar10":
        meta = {b"num_cases_per_batch": 10000, b"label_names": encoded, b"num_vis": 3072}
    else:
        coarse = [f"superclass_{i}".encode() for i in range(20)]
        meta = {b"fine_label_names": encoded, b"coarse_label_names": coarse}
    _dump(folder / meta_file, meta)
    names = [*train_files, test_file, meta_file]
    md5 = {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in names}
    return FakeCifar(folder, train_images, train_labels, test_images, test_labels, label_names, md5)


def write_fake_cifar_archive(
    path: str | Path, kind: str = "cifar10", n_train: int = 50, n_test: int = 20, seed: int = 0
) -> FakeCifar:
    """Write a fake release as a .tar.gz at ``path``, laid out like the official archive;
    the returned ``folder`` is the archive's path."""
    with tempfile.TemporaryDirectory() as staging:
        fake = write_fake_cifar(staging, kind, n_train, n_test, seed)
        with tarfile.open(path, "w:gz") as tar:
            tar.add(fake.folder, arcname=fake.folder.name)
    return dataclasses.replace(fake, folder=Path(path))


@dataclass(frozen=True)
class FakeImageNet:
    """What ``write_fake_imagenet`` wrote: class folder names (sorted) and the files per split."""

    root: Path
    classes: list[str]
    train_files: list[Path]
    val_files: list[Path]


def write_fake_imagenet(
    root: str | Path,
    classes: int = 3,
    per_class: int = 4,
    size: int = 40,
    seed: int = 0,
    val_per_class: int | None = None,
) -> FakeImageNet:
    """Write random ``size`` x ``size`` RGB JPEGs to ``root/{train,val}/<wnid>/``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    wnids = [f"n{1440764 + 1000 * k:08d}" for k in range(classes)]
    written: dict[str, list[Path]] = {"train": [], "val": []}
    counts = {"train": per_class, "val": per_class if val_per_class is None else val_per_class}
    serial = 0
    for split, count in counts.items():
        for wnid in wnids:
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(count):
                serial += 1
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                stem = f"{wnid}_{serial}" if split == "train" else f"ILSVRC2012_val_{serial:08d}"
                path = folder / f"{stem}.JPEG"
                Image.fromarray(pixels).save(path, format="JPEG", quality=90)
                written[split].append(path)
    return FakeImageNet(root, wnids, written["train"], written["val"])
