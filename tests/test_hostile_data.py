"""Hostile dataset files: what a writer of the dataset folder can plant, refused before training.

CIFAR: a forged verification stamp, pickles declaring object arrays or arrays larger than the
file (refused before numpy allocates them), a memo-table bomb, labels that are not plain ints in
range, empty splits. ImageNet: train and val sharing files (linked or hard-linked). Every refusal
is one line naming the file, with ``data.verify`` on and off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pickle
import re
import resource
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from experiments.data import DatasetUnavailableError, cifar
from experiments.data.cifar_pickle import RefusedContent, check_memo_indices, load_cifar_pickle
from tests.fake_datasets import (
    NDARRAY,
    OBJECT_ARRAY_BOMB,
    RECONSTRUCT,
    SCALAR,
    Build,
    Global,
    Reduce,
    declared_array,
    hostile_cifar_pickle,
    memo_bomb,
    nested_list_opcodes,
    py2_pickle,
    write_fake_cifar,
    write_fake_imagenet,
)
from tests.test_data import epoch, flip_a_pixel_byte, imagenet_bundle, trust, trusted_fake_cifar

LEGACY_STAMP = ".autodrop-verified.json"  # the stamp earlier versions trusted; now ignored


def trust_as_written(monkeypatch, fake) -> None:
    """Take the files of ``fake``'s folder as they are now as the official release, so the md5
    check passes and what the restricted reader does is what is tested."""
    files = {name: (fake.folder / name).read_bytes() for name in fake.file_md5}
    md5 = {name: hashlib.md5(content).hexdigest() for name, content in files.items()}
    trust(monkeypatch, "cifar10", dataclasses.replace(fake, file_md5=md5))


def refusal(root: Path, verify: bool) -> str:
    """The one-line message with which loading CIFAR-10 from ``root`` is refused."""
    with pytest.raises(DatasetUnavailableError) as info:
        cifar.load_cifar(root, "cifar10", verify=verify)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# ------------------------------------------------------------------ CIFAR: no stamp is trusted


def test_a_forged_stamp_beside_a_planted_copy_is_ignored(tmp_path, monkeypatch):
    fake = trusted_fake_cifar(monkeypatch, tmp_path, "cifar10", n_train=10, n_test=5)
    flip_a_pixel_byte(fake.folder / "data_batch_2")  # the planted copy
    stamp = {}
    for name, md5 in fake.file_md5.items():  # what the writer of the folder can stat and write
        status = (fake.folder / name).stat()
        stamp[name] = {
            "size": status.st_size,
            "mtime_ns": status.st_mtime_ns,
            "ctime_ns": status.st_ctime_ns,
            "inode": status.st_ino,
            "md5": md5,
        }
    (fake.folder / LEGACY_STAMP).write_text(json.dumps(stamp))
    message = refusal(tmp_path, verify=True)
    assert f"{fake.folder / 'data_batch_2'} has md5" in message
    assert fake.file_md5["data_batch_2"] in message


def test_every_load_hashes_every_file_and_writes_nothing_into_the_dataset(tmp_path, monkeypatch):
    fake = trusted_fake_cifar(monkeypatch, tmp_path, "cifar10", n_train=10, n_test=5)
    before = sorted(os.listdir(fake.folder))
    hashed = []
    real_md5 = hashlib.md5

    def counting_md5(data, **kwargs):
        hashed.append(len(data))
        return real_md5(data, **kwargs)

    monkeypatch.setattr(cifar.hashlib, "md5", counting_md5)
    for _ in range(2):
        cifar.load_cifar(tmp_path, "cifar10")
    sizes = [(fake.folder / name).stat().st_size for name in cifar.CIFAR_RELEASES["cifar10"].files]
    assert sorted(hashed) == sorted(sizes * 2)
    assert sorted(os.listdir(fake.folder)) == before


# ------------------------------------------------------ CIFAR: pickles that would allocate


@contextlib.contextmanager
def bounded_memory(headroom: int = 1 << 30):
    """Cap this process's address space at what it maps now plus ``headroom`` and trace Python
    and numpy allocations: a reader that allocates what a file declares fails with MemoryError
    here instead of exhausting the machine. Yields a function returning the peak traced bytes."""
    status = Path("/proc/self/status").read_text()
    mapped = int(re.search(r"VmSize:\s+(\d+) kB", status).group(1)) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (mapped + headroom, hard))
    tracemalloc.start()
    try:
        yield lambda: tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


OBJECT = np.dtype(object)
UINT8 = np.dtype(np.uint8)
# b"data" replaced by: (construct, text the refusal must contain)
ALLOCATING_CONSTRUCTS = {
    "object array declared to _reconstruct (the issue's bomb)": (OBJECT_ARRAY_BOMB, "'O8'"),
    "object array of 2^24 declared to _reconstruct": (
        Reduce(RECONSTRUCT, (NDARRAY, (2**24,), OBJECT)),
        "'O8'",
    ),
    "object array in the array state": (declared_array((2**24,), OBJECT, [None] * 3), "'O8'"),
    "object scalar": (Reduce(SCALAR, (OBJECT, b"\0" * 8)), "'O8'"),
    "uint8 array larger than the file in the array state": (
        declared_array((2**30, 3072), UINT8, b"\0" * 16),
        "more than the",
    ),
    "uint8 array larger than the file declared to _reconstruct": (
        Reduce(RECONSTRUCT, (NDARRAY, (2**40,), "b")),
        "more than the",
    ),
    "numpy.ndarray called directly": (
        Reduce(NDARRAY, ((2**27,), UINT8)),
        "calls numpy.ndarray directly",
    ),
    "a dtype whose state makes it a 1 GiB subarray": (
        declared_array(
            (4,),
            Build(
                Reduce(Global("numpy", "dtype"), ("u1", 0, 1)),
                (3, "|", (UINT8, (2**30,)), None, None, -1, -1, 0),
            ),
            b"\0" * 4,
        ),
        "plain number",
    ),
}


@pytest.mark.parametrize("verify", [False, True])
@pytest.mark.parametrize("case", list(ALLOCATING_CONSTRUCTS))
def test_arrays_the_file_cannot_hold_are_refused_before_allocating(
    tmp_path, monkeypatch, case, verify
):
    construct, expected = ALLOCATING_CONSTRUCTS[case]
    fake = write_fake_cifar(tmp_path, "cifar10", n_train=10, n_test=5)
    path = fake.folder / "test_batch"
    hostile_cifar_pickle(path, data=construct)
    assert path.stat().st_size < 2000
    trust_as_written(monkeypatch, fake)
    with bounded_memory() as peak:
        message = refusal(tmp_path, verify)
    assert str(path) in message and expected in message, message
    assert peak() < 4 << 20, (
        f"{peak()} bytes allocated while reading a {path.stat().st_size}-byte file"
    )


@pytest.mark.parametrize("verify", [False, True])
@pytest.mark.parametrize("index", [2**24, 2**31 - 1])
def test_a_memo_bomb_is_refused_before_the_memo_grows(tmp_path, monkeypatch, index, verify):
    fake = write_fake_cifar(tmp_path, "cifar10", n_train=10, n_test=5)
    path = fake.folder / "batches.meta"
    path.write_bytes(memo_bomb(index))
    trust_as_written(monkeypatch, fake)
    with bounded_memory() as peak:
        message = refusal(tmp_path, verify)
    assert str(path) in message and f"memo slot {index}" in message, message
    assert peak() < 4 << 20


def test_a_genuine_array_is_read_exactly_as_numpy_reads_it(tmp_path, monkeypatch):
    # The checked reconstruction hands numpy the same state numpy's own unpickling would.
    fake = trusted_fake_cifar(monkeypatch, tmp_path, "cifar10", n_train=7, n_test=3)
    splits = cifar.load_cifar(tmp_path, "cifar10")
    reference = pickle.loads((fake.folder / "test_batch").read_bytes(), encoding="bytes")
    ours = splits.test.images.numpy().reshape(3, -1)
    np.testing.assert_array_equal(ours, reference[b"data"])
    assert splits.test.images.numpy().flags.writeable


# ------------------------------------------------------------------- CIFAR: labels, empty splits


def nested(depth: int) -> list:
    value: list = [7]
    for _ in range(depth - 1):
        value = [value]
    return value


BAD_LABELS = {
    "float": (9.9, "9.9 (float)"),
    "bytes": (b"7", "b'7' (bytes)"),
    "bool": (True, "True (bool)"),
    "nested 100 deep": (nested(100), "[... 1 item] (list)"),
    "nested a million deep": (nested_list_opcodes(10**6), "[... 1 item] (list)"),
    "a million-digit int": (10**10**6, "an int of 3321929 bits (int)"),
    "out of range": (10, "10 (int)"),
    "negative": (-1, "-1 (int)"),
    "beyond int64": (2**70, "(int)"),
}


@pytest.mark.parametrize("verify", [False, True])
@pytest.mark.parametrize("case", list(BAD_LABELS))
def test_labels_must_be_plain_ints_in_range(tmp_path, monkeypatch, case, verify):
    bad, shown = BAD_LABELS[case]
    fake = write_fake_cifar(tmp_path, "cifar10", n_train=10, n_test=5)
    path = fake.folder / "test_batch"
    labels = fake.test_labels.tolist()
    labels[3] = bad
    hostile_cifar_pickle(path, labels=labels)
    trust_as_written(monkeypatch, fake)
    message = refusal(tmp_path, verify)
    assert str(path) in message and "b'labels'[3] is " in message and shown in message, message
    assert "ints in 0..9" in message


def test_labels_that_are_not_a_list_are_refused(tmp_path, monkeypatch):
    fake = write_fake_cifar(tmp_path, "cifar10", n_train=10, n_test=5)
    path = fake.folder / "data_batch_4"
    hostile_cifar_pickle(path, labels=np.arange(2, dtype=np.int64))
    message = refusal(tmp_path, verify=False)
    assert str(path) in message and "b'labels' is a ndarray, not a list of ints" in message


@pytest.mark.parametrize("verify", [False, True])
@pytest.mark.parametrize("name", ["test_batch", "data_batch_3"])
def test_an_empty_split_file_is_refused(tmp_path, monkeypatch, name, verify):
    fake = write_fake_cifar(tmp_path, "cifar10", n_train=10, n_test=5)
    path = fake.folder / name
    hostile_cifar_pickle(path, data=np.zeros((0, 3072), dtype=np.uint8), labels=[], filenames=[])
    trust_as_written(monkeypatch, fake)
    message = refusal(tmp_path, verify)
    assert str(path) in message and "holds no images" in message, message


# ---------------------------------------------------------------- ImageNet: train/val overlap


def link_class_to_val(root: Path, classes: list[str]) -> int:
    """train/<class> made a relative link to ../val/<class> (inside the root)."""
    folder = root / "train" / classes[1]
    for image in folder.iterdir():
        image.unlink()
    folder.rmdir()
    folder.symlink_to(Path("..") / "val" / classes[1])
    return len(os.listdir(root / "val" / classes[1]))


def link_file_to_val(root: Path, classes: list[str]) -> int:
    val_image = sorted((root / "val" / classes[0]).iterdir())[0]
    (root / "train" / classes[0] / "borrowed.JPEG").symlink_to(val_image)
    return 1


def hard_link_val_files(root: Path, classes: list[str]) -> int:
    val_images = sorted((root / "val" / classes[0]).iterdir())
    for number, image in enumerate(val_images):
        os.link(image, root / "train" / classes[0] / f"copy{number}.JPEG")
    return len(val_images)


@pytest.mark.parametrize("plant", [link_class_to_val, link_file_to_val, hard_link_val_files])
def test_train_and_val_sharing_files_is_refused(tmp_path, plant):
    fake = write_fake_imagenet(tmp_path, classes=2, per_class=2, size=16, val_per_class=3)
    shared = plant(tmp_path, fake.classes)
    with pytest.raises(DatasetUnavailableError) as info:
        imagenet_bundle(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert f"train and val share {shared} image file" in message, message
    train_path, val_path = re.search(r"\(e\.g\. (\S+) and (\S+) are", message).groups()
    assert Path(train_path).is_relative_to(tmp_path / "train")
    assert Path(val_path).is_relative_to(tmp_path / "val")
    assert os.path.samefile(train_path, val_path)
    with pytest.raises(DatasetUnavailableError, match="train and val share"):
        imagenet_bundle(tmp_path, follow_links=True)  # allowing links out allows no overlap


def test_a_hard_link_in_two_train_classes_is_refused(tmp_path):
    fake = write_fake_imagenet(tmp_path, classes=2, per_class=2, size=16)
    second = tmp_path / "train" / fake.classes[1] / "second_label.JPEG"
    os.link(fake.train_files[0], second)
    with pytest.raises(DatasetUnavailableError, match="two labels") as info:
        imagenet_bundle(tmp_path)
    assert str(second) in str(info.value) and str(fake.train_files[0]) in str(info.value)


def test_a_hard_link_within_a_class_is_read_once(tmp_path):
    fake = write_fake_imagenet(tmp_path, classes=2, per_class=2, size=16)
    os.link(fake.train_files[0], tmp_path / "train" / fake.classes[0] / "again.JPEG")
    bundle = imagenet_bundle(tmp_path)
    assert bundle.num_train == 4
    assert len(np.concatenate([y.numpy() for _, y in epoch(bundle.train)])) == 4


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_memo_numbering_of_every_pickle_writer_is_accepted(protocol):
    shared = [b"shared", "text", 3.5]
    content = {b"a": shared, b"b": shared, b"c": [shared, (1, 2, shared)], b"n": 10**30}
    data = pickle.dumps(content, protocol=protocol)
    check_memo_indices(data)  # Python's picklers number from 0; cPickle's (the fakes') from 1
    check_memo_indices(py2_pickle(content))
    for cut in (len(data) // 3, len(data) - 1):
        with pytest.raises(pickle.UnpicklingError):
            load_cifar_pickle(data[:cut])


def test_a_memo_index_skipping_ahead_is_refused():
    ahead = b"\x80\x02]q\x01]q\x03."  # slots 1 then 3: no writer skips one
    with pytest.raises(RefusedContent, match="memo slot 3 after 1 stores"):
        check_memo_indices(ahead)
    check_memo_indices(ahead.replace(b"q\x03", b"q\x02"))


def test_a_dangling_image_link_is_an_unreadable_image_not_a_scan_error(tmp_path):
    fake = write_fake_imagenet(tmp_path, classes=2, per_class=2, size=16)
    (tmp_path / "train" / fake.classes[0] / "gone.JPEG").symlink_to("missing.JPEG")
    bundle = imagenet_bundle(tmp_path, skip_bad_images=True)
    assert bundle.num_train == 5
    epoch(bundle.train)
    assert bundle.skipped_images() == 1
