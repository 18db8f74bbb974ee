"""Tiny datasets written in the real on-disk formats, for tests of anything that reads data.

CIFAR: the official python-pickle releases, written byte for byte the way Python 2's cPickle
(protocol 2) and Python 2's numpy wrote them: dicts keyed by py2 ``str`` (SHORT_BINSTRING),
b"data" a uint8 [N, 3072] row-major CHW array reduced through
``numpy.core.multiarray._reconstruct``, labels as lists of ints. ImageNet: JPEG files in class
folders.

Hostile CIFAR files are composed from the same writer: ``Global``, ``Reduce`` and ``Build`` spell
out the pickle operations a planted file uses, and ``hostile_cifar_pickle`` puts them in a batch.
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
class Global:
    """A reference to ``module.name``, written as the GLOBAL opcode (a class or a function)."""

    module: str
    name: str


@dataclass(frozen=True)
class Reduce:
    """``function(*args)`` as a pickle spells it: the function, the argument tuple, REDUCE."""

    function: Global
    args: tuple


@dataclass(frozen=True)
class Build:
    """``obj`` whose state is then set to ``state`` (BUILD: ``obj.__setstate__(state)``)."""

    obj: object
    state: object


@dataclass(frozen=True)
class Raw:
    """Opcodes written as they are (for structures the writer would recurse too deep on)."""

    opcodes: bytes


def nested_list_opcodes(depth: int, innermost: int = 7) -> Raw:
    """``[[...[innermost]...]]``, ``depth`` lists deep, without memo stores."""
    opens = (pickle.EMPTY_LIST + pickle.MARK) * depth
    return Raw(opens + pickle.BININT1 + bytes([innermost]) + pickle.APPENDS * depth)


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
    Dicts, lists, globals, REDUCE results and strings of 2 or more characters are stored in the
    memo (BINPUT) as cPickle stored them, numbered from 1 (cPickle kept memo keys positive).
    """

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")
        self.memo_size = 0

    def _put(self) -> None:
        self.memo_size += 1
        if self.memo_size < 256:
            self.out += pickle.BINPUT + bytes([self.memo_size])
        else:
            self.out += pickle.LONG_BINPUT + struct.pack("<I", self.memo_size)

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
        elif isinstance(obj, float):
            self.out += pickle.BINFLOAT + struct.pack(">d", obj)
        elif isinstance(obj, Raw):
            self.out += obj.opcodes
        elif isinstance(obj, Global):
            self._global(obj.module, obj.name)
        elif isinstance(obj, Reduce):
            self._call(obj.function.module, obj.function.name, obj.args)
        elif isinstance(obj, Build):
            self.write(obj.obj)
            self.write(obj.state)
            self.out += pickle.BUILD
        else:
            function, args = obj.__reduce__()[:2]
            self._call(function.__module__, function.__qualname__, args)

    def _int(self, value: int) -> None:
        if 0 <= value < 256:
            self.out += pickle.BININT1 + bytes([value])
        elif 0 <= value < 65536:
            self.out += pickle.BININT2 + struct.pack("<H", value)
        elif -(2**31) <= value < 2**31:
            self.out += pickle.BININT + struct.pack("<i", value)
        else:  # a py2 long
            encoded = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            if len(encoded) < 256:
                self.out += pickle.LONG1 + bytes([len(encoded)]) + encoded
            else:
                self.out += pickle.LONG4 + struct.pack("<i", len(encoded)) + encoded

    def _py2_str(self, raw: bytes) -> None:
        if len(raw) < 256:
            self.out += pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw
        else:
            self.out += pickle.BINSTRING + struct.pack("<i", len(raw)) + raw
        if len(raw) >= 2:
            self._put()

    def _global(self, module: str, name: str) -> None:
        self.out += pickle.GLOBAL + f"{module}\n{name}\n".encode()
        self._put()

    def _call(self, module: str, name: str, args: tuple) -> None:
        self._global(module, name)
        self.write(tuple(args))
        self.out += pickle.REDUCE
        self._put()

    def _tuple(self, items: tuple) -> None:
        opcodes = {0: pickle.EMPTY_TUPLE, 1: pickle.TUPLE1, 2: pickle.TUPLE2, 3: pickle.TUPLE3}
        if len(items) not in opcodes:
            self.out += pickle.MARK
        for item in items:
            self.write(item)
        self.out += opcodes.get(len(items), pickle.TUPLE)

    def _list(self, items: list) -> None:
        self.out += pickle.EMPTY_LIST
        self._put()
        if items:
            self.out += pickle.MARK
            for item in items:
                self.write(item)
            self.out += pickle.APPENDS

    def _dict(self, content: dict) -> None:
        self.out += pickle.EMPTY_DICT
        self._put()
        if content:
            self.out += pickle.MARK
            for key, value in content.items():
                self.write(key)
                self.write(value)
            self.out += pickle.SETITEMS

    def _dtype(self, dtype: np.dtype) -> None:
        code = f"{dtype.kind}{dtype.itemsize}"
        self._call("numpy", "dtype", (code, 0, 1))
        self.write((3, dtype.byteorder, None, None, None, -1, -1, 63 if dtype.hasobject else 0))
        self.out += pickle.BUILD

    def _ndarray(self, array: np.ndarray) -> None:
        self._global("numpy.core.multiarray", "_reconstruct")
        self._global("numpy", "ndarray")  # the arguments (ndarray, (0,), 'b')
        self.write((0,))
        self.write("b")
        self.out += pickle.TUPLE3 + pickle.REDUCE
        self._put()
        contiguous = np.ascontiguousarray(array)
        self.write((1, contiguous.shape, contiguous.dtype, False, contiguous.tobytes()))
        self.out += pickle.BUILD


def py2_pickle(obj: object) -> bytes:
    """``obj`` pickled as Python 2 pickled the CIFAR release (see ``Py2Pickler``)."""
    return Py2Pickler().dumps(obj)


# What a py2 numpy array is made of, for spelling out hostile ones.
RECONSTRUCT = Global("numpy.core.multiarray", "_reconstruct")
NDARRAY = Global("numpy", "ndarray")
SCALAR = Global("numpy.core.multiarray", "scalar")


def declared_array(shape: tuple, dtype: np.dtype, raw: object) -> Build:
    """An array as py2 numpy pickled one, but declaring ``shape`` and ``dtype`` whatever ``raw``
    (the data: bytes, or a list for an object array) holds."""
    return Build(Reduce(RECONSTRUCT, (NDARRAY, (0,), "b")), (1, shape, dtype, False, raw))


# The 150-byte file of the issue: an array of 2^31 - 1 objects declared straight to numpy's
# _reconstruct, which allocates 8 bytes per element (set to None) before anything can look.
OBJECT_ARRAY_BOMB = Reduce(RECONSTRUCT, (NDARRAY, (2**31 - 1,), np.dtype(object)))


def memo_bomb(index: int = 2**31 - 1) -> bytes:
    """A 9-byte pickle storing an empty list at memo slot ``index``: Python's unpickler grows
    its memo table to 2 x ``index`` zeroed pointers (16 GiB for 2^30) before anything else."""
    return b"\x80\x02" + pickle.EMPTY_LIST + pickle.LONG_BINPUT + struct.pack("<I", index) + b"."


def hostile_cifar_pickle(path: Path, **changes: object) -> None:
    """Rewrite the CIFAR file at ``path`` with its dict entries replaced by ``changes`` (keys
    without the b prefix; the values may be ``Reduce``/``Build`` constructs)."""
    content = pickle.loads(path.read_bytes(), encoding="bytes")  # the tests' own file
    content.update({key.encode(): value for key, value in changes.items()})
    _dump(path, content)


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
