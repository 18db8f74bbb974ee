"""Tests of experiments.data: readers, both loader paths, sharding, ImageNet folders, digits."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import pickletools
import tarfile
import urllib.request
from collections import Counter
from dataclasses import replace
from enum import StrEnum
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from PIL import Image, ImageFile
from torchvision import datasets, transforms

from experiments.config import compose_config
from experiments.data import (
    DataBundle,
    DatasetUnavailableError,
    Loading,
    archive_download,
    cifar,
)
from experiments.data.arrays import ArraySplits, ImageArrays
from experiments.data.augment import crop_flip_batch
from experiments.data.build import build_array_bundle
from experiments.data.digits import load_digits_splits
from experiments.data.imagenet import check_imagenet_layout
from experiments.data.normalization import CIFAR_MEAN, CIFAR_STD, channel_tensor, normalize_uint8
from experiments.data.sharding import plan_epoch, rank_sample_count, train_steps_per_epoch
from experiments.data.worker_loader import ArrayImageDataset, PlannedSample
from experiments.runtime import with_device_defaults
from experiments.settings import RunSettings
from tests.conftest import data_bundle
from tests.fake_datasets import (
    FakeCifar,
    py2_pickle,
    write_fake_cifar,
    write_fake_cifar_archive,
    write_fake_imagenet,
)
from tests.fault_campaign import MkdirOnLoad

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tests must not touch the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def synthetic_splits(n_train: int = 40, n_test: int = 13, seed: int = 0) -> ArraySplits:
    """Random CIFAR-sized images whose labels are their sample ids (to track coverage)."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n_train + n_test, 3, 32, 32), generator=gen, dtype=torch.uint8)
    ids = torch.arange(n_train + n_test)
    return ArraySplits(
        train=ImageArrays(images[:n_train], ids[:n_train]),
        test=ImageArrays(images[n_train:], ids[n_train:] - n_train),
        num_classes=n_train + n_test,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        padding=4,
    )


def array_bundle(splits: ArraySplits, **overrides) -> DataBundle:
    fields = {
        "loader": "device",
        "batch_size": 8,
        "eval_batch_size": 5,
        "device": CPU,
        "seed": 3,
        "num_workers": 0,
    }
    return build_array_bundle(splits, Loading(**{**fields, **overrides}), name="synthetic")


def epoch(loader, number: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(number)
    return [(images.clone(), labels.clone()) for images, labels in loader]


def same_batches(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True)
    )


# ---------------------------------------------------------------- CIFAR reader and download


def trust(monkeypatch, kind: str, fake: FakeCifar, **changes) -> None:
    """Make the fake release's md5s the official ones (plus ``changes``) for this test."""
    release = replace(cifar.CIFAR_RELEASES[kind], file_md5=fake.file_md5, **changes)
    monkeypatch.setitem(cifar.CIFAR_RELEASES, kind, release)


def trusted_fake_cifar(monkeypatch, root, kind: str, **kwargs) -> FakeCifar:
    fake = write_fake_cifar(root, kind, **kwargs)
    trust(monkeypatch, kind, fake)
    return fake


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_reader_returns_exactly_the_written_arrays(tmp_path, monkeypatch, kind):
    fake = trusted_fake_cifar(monkeypatch, tmp_path, kind, n_train=23, n_test=7, seed=1)
    splits = cifar.load_cifar(tmp_path, kind)
    assert splits.num_classes == (10 if kind == "cifar10" else 100)
    assert splits.train.images.dtype == torch.uint8
    np.testing.assert_array_equal(splits.train.images.numpy(), fake.train_images)
    np.testing.assert_array_equal(splits.train.labels.numpy(), fake.train_labels)
    np.testing.assert_array_equal(splits.test.images.numpy(), fake.test_images)
    np.testing.assert_array_equal(splits.test.labels.numpy(), fake.test_labels)
    assert cifar.read_cifar_label_names(tmp_path, kind) == fake.label_names


def test_missing_cifar_error_names_the_expected_files_and_how_to_get_them(tmp_path):
    with pytest.raises(DatasetUnavailableError) as info:
        cifar.load_cifar(tmp_path, "cifar10")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for expected in (
        str(tmp_path / "cifar-10-batches-py"),
        "data_batch_1",
        "data_batch_5",
        "test_batch",
        "batches.meta",
        "download=True",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    ):
        assert expected in message


def test_incomplete_cifar_folder_names_the_missing_file(tmp_path):
    fake = write_fake_cifar(tmp_path, "cifar10")
    (fake.folder / "data_batch_3").unlink()
    with pytest.raises(DatasetUnavailableError, match="lacks data_batch_3"):
        cifar.load_cifar(tmp_path, "cifar10", download=True)


def test_corrupt_cifar_pickle_is_reported_with_its_path(tmp_path):
    fake = write_fake_cifar(tmp_path, "cifar100")
    (fake.folder / "test").write_bytes(b"\x80\x02 definitely not a pickle")
    with pytest.raises(DatasetUnavailableError, match="not a readable CIFAR pickle") as info:
        cifar.load_cifar(tmp_path, "cifar100", verify=False)
    assert str(fake.folder / "test") in str(info.value)


def test_the_md5_table_covers_every_file_of_each_release():
    for release in cifar.CIFAR_RELEASES.values():
        assert sorted(release.file_md5) == sorted(release.files)
        assert all(len(md5) == 32 and int(md5, 16) >= 0 for md5 in release.file_md5.values())


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_fake_files_are_python2_pickles(tmp_path, kind):
    fake = write_fake_cifar(tmp_path, kind, n_train=5, n_test=3)
    for name in fake.file_md5:
        ops = list(pickletools.genops((fake.folder / name).read_bytes()))
        names = {op.name for op, _, _ in ops}
        assert names.isdisjoint({"BINUNICODE", "SHORT_BINUNICODE", "BINBYTES", "SHORT_BINBYTES"})
        strings = {arg for op, arg, _ in ops if op.name == "SHORT_BINSTRING"}
        globals_ = {arg for op, arg, _ in ops if op.name == "GLOBAL"}
        if name not in ("batches.meta", "meta"):
            assert "data" in strings and "batch_label" in strings and "filenames" in strings
            assert globals_ == {
                "numpy.core.multiarray _reconstruct",
                "numpy ndarray",
                "numpy dtype",
            }
        else:
            assert globals_ == set()


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_python2_release_reads_the_same_as_torchvision(tmp_path, monkeypatch, kind):
    fake = trusted_fake_cifar(monkeypatch, tmp_path, kind, n_train=17, n_test=6, seed=2)
    ours = cifar.load_cifar(tmp_path, kind)
    # torchvision checks the official md5s, which tiny fake files cannot have; its parsing is
    # what is compared here.
    monkeypatch.setattr(datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    reference_class = datasets.CIFAR10 if kind == "cifar10" else datasets.CIFAR100
    for split, arrays in (("train", ours.train), ("test", ours.test)):
        reference = reference_class(str(tmp_path), train=split == "train", download=False)
        np.testing.assert_array_equal(arrays.images.permute(0, 2, 3, 1).numpy(), reference.data)
        assert arrays.labels.tolist() == reference.targets
    assert cifar.read_cifar_label_names(tmp_path, kind) == reference.classes == fake.label_names


def test_python3_pickles_are_not_the_release_format_and_are_refused(tmp_path):
    fake = write_fake_cifar(tmp_path, "cifar10", n_train=5, n_test=3)
    content = pickle.loads((fake.folder / "test_batch").read_bytes(), encoding="bytes")
    (fake.folder / "test_batch").write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(DatasetUnavailableError, match=r"global _codecs\.encode"):
        cifar.load_cifar(tmp_path, "cifar10", verify=False)


def plant_code(path: Path, marker: Path) -> None:
    """Add an object to the dict in ``path`` whose unpickling creates ``marker``."""
    content = pickle.loads(path.read_bytes(), encoding="bytes")
    content[b"payload"] = MkdirOnLoad(marker)
    path.write_bytes(py2_pickle(content))
    pickle.loads(path.read_bytes(), encoding="bytes")  # a plain unpickler runs it...
    assert marker.is_dir()
    marker.rmdir()  # ...so the planted file is live


@pytest.mark.parametrize("verify", [False, True])
@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("cifar10", "data_batch_2"),
        ("cifar10", "test_batch"),
        ("cifar10", "batches.meta"),
        ("cifar100", "train"),
        ("cifar100", "test"),
        ("cifar100", "meta"),
    ],
)
def test_code_carrying_pickles_are_refused_and_never_run(tmp_path, monkeypatch, kind, name, verify):
    fake = trusted_fake_cifar(monkeypatch, tmp_path / "data", kind, n_train=5, n_test=3)
    marker = tmp_path / "code-ran"
    plant_code(fake.folder / name, marker)
    match = r"has md5 [0-9a-f]{32}, but" if verify else r"global posix\.mkdir, which no official"
    for load in (cifar.load_cifar, cifar.read_cifar_label_names):
        with pytest.raises(DatasetUnavailableError, match=match) as info:
            load(tmp_path / "data", kind, verify=verify)
        assert str(fake.folder / name) in str(info.value)
        assert not marker.exists()
        if name not in ("batches.meta", "meta"):
            break  # reading the label names does not open the batches


def flip_a_pixel_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the pixel bytes: still a valid pickle
    path.write_bytes(bytes(data))


def test_a_tampered_byte_is_refused_by_the_md5_check(tmp_path, monkeypatch):
    fake = trusted_fake_cifar(monkeypatch, tmp_path, "cifar10", n_train=20, n_test=5)
    flip_a_pixel_byte(fake.folder / "data_batch_2")
    with pytest.raises(DatasetUnavailableError) as info:
        cifar.load_cifar(tmp_path, "cifar10")
    message = str(info.value)
    for expected in (
        str(fake.folder / "data_batch_2"),
        fake.file_md5["data_batch_2"],
        "data.download=true",
        f"paths.data_dir={tmp_path}",
        "data.verify=false",
    ):
        assert expected in message
    modified = cifar.load_cifar(tmp_path, "cifar10", verify=False)  # deliberately modified copy
    assert not np.array_equal(modified.train.images.numpy(), fake.train_images)


def _fetch_failing(url, destination):
    Path(destination).write_bytes(b"partial")
    raise ConnectionError("network unreachable")


def _fetch_wrong_bytes(url, destination):
    Path(destination).write_bytes(b"<html>captive portal</html>")


@pytest.mark.parametrize(
    ("fetch", "match"), [(_fetch_failing, "Downloading .* failed"), (_fetch_wrong_bytes, "md5")]
)
def test_failed_download_leaves_no_files(tmp_path, monkeypatch, fetch, match):
    monkeypatch.setattr(archive_download, "fetch_url", fetch)
    with pytest.raises(DatasetUnavailableError, match=match) as info:
        cifar.load_cifar(tmp_path, "cifar10", download=True)
    assert "cifar-10-batches-py" in str(info.value)
    assert os.listdir(tmp_path) == []


def _serve_archive(monkeypatch, archive: Path, kind: str, fake: FakeCifar | None = None) -> None:
    def fetch(url, destination):
        assert url == cifar.CIFAR_RELEASES[kind].url
        Path(destination).write_bytes(archive.read_bytes())

    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(archive_download, "fetch_url", fetch)
    file_md5 = fake.file_md5 if fake else cifar.CIFAR_RELEASES[kind].file_md5
    release = replace(cifar.CIFAR_RELEASES[kind], md5=md5, file_md5=file_md5)
    monkeypatch.setitem(cifar.CIFAR_RELEASES, kind, release)


def test_corrupt_archive_with_matching_md5_leaves_no_files(tmp_path, monkeypatch):
    archive = tmp_path / "served" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    write_fake_cifar_archive(archive, "cifar10")
    archive.write_bytes(archive.read_bytes()[:200])
    _serve_archive(monkeypatch, archive, "cifar10")
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(DatasetUnavailableError, match="Extracting"):
        cifar.load_cifar(root, "cifar10", download=True)
    assert os.listdir(root) == []


def _add_evil_members(tar: tarfile.TarFile, evil: str, outside: Path, victim: Path) -> None:
    """Members that would write ``outside`` or into ``victim`` (or are no plain files)."""
    inner = "cifar-10-batches-py"
    tar.addfile(_tar_entry(inner, tarfile.DIRTYPE, mode=0o755))
    if evil == "parent":
        _add_text(tar, f"{inner}/../../../{outside.name}", "escaped")
    elif evil == "absolute":
        _add_text(tar, str(outside), "escaped")
    elif evil == "symlink":  # a folder link leading out, then a file written through it
        tar.addfile(_tar_entry(f"{inner}/out", tarfile.SYMTYPE, linkname="../../.."))
        _add_text(tar, f"{inner}/out/{outside.name}", "escaped")
    elif evil == "hardlink":  # a hard link to a file outside, then a file written over it
        tar.addfile(_tar_entry(f"{inner}/data_batch_1", tarfile.LNKTYPE, linkname=str(victim)))
        _add_text(tar, f"{inner}/data_batch_1", "overwritten")
    elif evil == "fifo":
        tar.addfile(_tar_entry(f"{inner}/pipe", tarfile.FIFOTYPE))
    elif evil == "setuid":
        _add_text(tar, f"{inner}/data_batch_1", "#!/bin/sh", mode=0o4755)


def _tar_entry(name: str, kind: bytes, mode: int = 0o644, **fields) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = kind, mode
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def _add_text(tar: tarfile.TarFile, name: str, text: str, mode: int = 0o644) -> None:
    data = text.encode()
    info = _tar_entry(name, tarfile.REGTYPE, mode=mode, size=len(data))
    tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("evil", ["parent", "absolute", "symlink", "hardlink", "fifo", "setuid"])
def test_archive_members_escaping_the_folder_are_refused(tmp_path, monkeypatch, evil):
    archive = tmp_path / "evil.tar.gz"
    outside = tmp_path / "deep" / "escaped.txt"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    with tarfile.open(archive, "w:gz") as tar:
        _add_evil_members(tar, evil, outside, victim)
    _serve_archive(monkeypatch, archive, "cifar10")
    root = tmp_path / "deep" / "data"
    root.mkdir(parents=True)
    with pytest.raises(
        DatasetUnavailableError, match=r"Extracting .* failed \(refusing to extract"
    ):
        cifar.load_cifar(root, "cifar10", download=True)
    assert os.listdir(root) == [] and not outside.exists()
    assert victim.read_text() == "keep me"


_REAL_URLOPEN = urllib.request.urlopen  # before the autouse fixture replaces it


def test_download_from_a_local_url_installs_the_archive_files(tmp_path, monkeypatch):
    """The real fetch (a file:// URL, no network), md5 check and extraction, end to end."""

    def local_only(url, *args, **kwargs):
        assert url.startswith("file://"), url
        return _REAL_URLOPEN(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", local_only)
    archive = tmp_path / "served" / "cifar-100-python.tar.gz"
    archive.parent.mkdir()
    write_fake_cifar_archive(archive, "cifar100", n_train=9, n_test=3)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    release = {"folder": "cifar-100-python", "required": ("train", "test", "meta"), "hint": "hint"}
    root = tmp_path / "data"
    installed = archive_download.install_tar_archive(
        url=archive.as_uri(), md5=md5, root=root, **release
    )
    assert installed == root / "cifar-100-python" and os.listdir(root) == ["cifar-100-python"]
    with tarfile.open(archive) as tar:
        expected = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    written = {p.relative_to(root).as_posix(): p for p in root.rglob("*")}
    assert {name for name, path in written.items() if path.is_dir()} == {"cifar-100-python"}
    files = {name: path.read_bytes() for name, path in written.items() if path.is_file()}
    assert files == expected and len(files) == 3

    tampered = bytearray(archive.read_bytes())
    tampered[len(tampered) // 2] ^= 0x01
    archive.write_bytes(bytes(tampered))
    tampered_md5 = hashlib.md5(bytes(tampered)).hexdigest()
    elsewhere = tmp_path / "elsewhere"
    with pytest.raises(
        DatasetUnavailableError, match=f"corrupt: md5 {tampered_md5}, expected {md5}"
    ):
        archive_download.install_tar_archive(
            url=archive.as_uri(), md5=md5, root=elsewhere, **release
        )
    assert os.listdir(elsewhere) == []


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_download_installs_the_release_folder_and_nothing_else(tmp_path, monkeypatch, kind):
    archive = tmp_path / "served.tar.gz"
    fake = write_fake_cifar_archive(archive, kind, n_train=11, n_test=4)
    _serve_archive(monkeypatch, archive, kind, fake)
    root = tmp_path / "data"
    splits = cifar.load_cifar(root, kind, download=True)
    np.testing.assert_array_equal(splits.train.images.numpy(), fake.train_images)
    np.testing.assert_array_equal(splits.test.labels.numpy(), fake.test_labels)
    assert os.listdir(root) == [cifar.CIFAR_RELEASES[kind].folder]
    monkeypatch.setattr(archive_download, "fetch_url", _fetch_failing)
    cifar.load_cifar(root, kind, download=True)  # present: no second download


# ---------------------------------------------------------------- augmentation


def reference_crop_flip(image: torch.Tensor, top: int, left: int, flip: bool, padding: int):
    """Obviously-correct single-image version: explicit zero canvas, slice, reverse columns."""
    channels, height, width = image.shape
    canvas = torch.zeros(channels, height + 2 * padding, width + 2 * padding, dtype=image.dtype)
    canvas[:, padding : padding + height, padding : padding + width] = image
    crop = canvas[:, top : top + height, left : left + width]
    return crop.flip(-1) if flip else crop


def test_vectorised_crop_flip_matches_the_reference_for_every_offset():
    gen = torch.Generator().manual_seed(0)
    offsets = torch.cartesian_prod(torch.arange(9), torch.arange(9)).repeat(2, 1)
    flips = torch.arange(len(offsets)) >= 81
    images = torch.randint(0, 256, (len(offsets), 3, 32, 32), generator=gen, dtype=torch.uint8)
    out = crop_flip_batch(images, offsets, flips, padding=4)
    for i in range(len(offsets)):
        top, left = offsets[i].tolist()
        assert torch.equal(out[i], reference_crop_flip(images[i], top, left, bool(flips[i]), 4))


def test_crop_pads_with_zero_in_pixel_space():
    white = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    out = crop_flip_batch(white, torch.tensor([[0, 8]]), torch.tensor([False]), padding=4)
    assert (out[0, :, :4, :] == 0).all() and (out[0, :, :, 28:] == 0).all()
    assert (out[0, :, 4:, :28] == 255).all()
    mean, std = channel_tensor(CIFAR_MEAN, CPU), channel_tensor(CIFAR_STD, CPU)
    corner = normalize_uint8(out, mean, std)[0, :, 0, 0]
    torch.testing.assert_close(corner, -(mean / std).flatten())


def test_classic_and_device_paths_give_identical_pixels_for_each_offset_and_flip():
    splits = synthetic_splits(n_train=1)
    dataset = ArrayImageDataset(
        splits.train, mean=CIFAR_MEAN, std=CIFAR_STD, padding=4, augment=True
    )
    mean, std = channel_tensor(CIFAR_MEAN, CPU), channel_tensor(CIFAR_STD, CPU)
    for top in range(9):
        for left in range(9):
            for flip in (False, True):
                classic, _ = dataset[PlannedSample(0, top, left, flip)]
                crop = crop_flip_batch(
                    splits.train.images, torch.tensor([[top, left]]), torch.tensor([flip]), 4
                )
                assert torch.equal(classic, normalize_uint8(crop, mean, std)[0])


@pytest.mark.parametrize("flip", [False, True])
def test_device_augmentation_equals_torchvision_random_crop_and_flip(monkeypatch, flip):
    top, left = 1, 7
    monkeypatch.setattr(
        transforms.RandomCrop, "get_params", staticmethod(lambda img, size: (top, left, *size))
    )
    pipeline = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(p=1.0 if flip else 0.0),
            transforms.ToTensor(),
            transforms.Normalize(CIFAR_MEAN, CIFAR_STD),
        ]
    )
    image = synthetic_splits(n_train=1).train.images
    expected = pipeline(Image.fromarray(image[0].permute(1, 2, 0).numpy()))
    crop = crop_flip_batch(image, torch.tensor([[top, left]]), torch.tensor([flip]), 4)
    mean, std = channel_tensor(CIFAR_MEAN, CPU), channel_tensor(CIFAR_STD, CPU)
    assert torch.equal(normalize_uint8(crop, mean, std)[0], expected)


def test_loader_crop_offsets_cover_every_value_and_flips_are_about_half():
    # Pixels code their own position (channel 0: row + 1, channel 1: column + 1), so each output
    # reveals the crop origin and flip that were applied to it.
    side = torch.arange(1, 33, dtype=torch.uint8)
    coded = torch.stack([side[:, None].expand(32, 32), side[None, :].expand(32, 32)] * 2)[:3]
    n = 3000
    splits = ArraySplits(
        ImageArrays(coded.expand(n, 3, 32, 32).contiguous(), torch.arange(n)),
        ImageArrays(coded[None], torch.zeros(1, dtype=torch.int64)),
        num_classes=n,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        padding=4,
    )
    batches = epoch(array_bundle(splits, batch_size=500).train)
    pixels = torch.cat([x for x, _ in batches]).mul(255).round().long()
    tops = pixels[:, 0, 4, 16] - 1  # output row 4 reads source row top - 4 + 4
    flips = pixels[:, 1, 16, 5] < pixels[:, 1, 16, 4]
    lefts = torch.where(flips, pixels[:, 1, 16, 4] - 24, pixels[:, 1, 16, 4] - 1)
    for offsets in (tops, lefts):
        counts = torch.bincount(offsets, minlength=9)
        assert len(counts) == 9 and (counts > n / 9 * 0.7).all()
    assert 0.46 < flips.float().mean().item() < 0.54
    plan = plan_epoch(n, seed=3, epoch=0, rank=0, world_size=1, drop_last=False, max_offset=8)
    assert torch.equal(tops, plan.offsets[:, 0]) and torch.equal(lefts, plan.offsets[:, 1])
    assert torch.equal(flips, plan.flips)


# ---------------------------------------------------------------- device loader


def test_device_loader_shapes_dtypes_and_lengths():
    bundle = array_bundle(synthetic_splits(n_train=40, n_test=13), batch_size=16)
    batches = epoch(bundle.train)
    assert len(bundle.train) == len(batches) == 3
    assert [len(labels) for _, labels in batches] == [16, 16, 8]
    images, labels = batches[0]
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and images.device == CPU
    assert len(bundle.test) == 3 and sum(len(y) for _, y in bundle.test) == 13
    assert (bundle.num_train, bundle.num_test) == (40, 13)


def test_device_loader_normalises_to_roughly_unit_scale():
    bundle = array_bundle(synthetic_splits(200), augment=False)
    images = torch.cat([x for x, _ in epoch(bundle.train)])
    # uniform random pixels: mean about (127.5 - m) / s, never the raw 0..255 range
    expected = (0.5 - torch.tensor(CIFAR_MEAN)) / torch.tensor(CIFAR_STD)
    torch.testing.assert_close(images.mean(dim=(0, 2, 3)), expected, atol=0.1, rtol=0)
    assert images.abs().max() < 5


def test_channels_last_output():
    bundle = array_bundle(synthetic_splits(), channels_last=True)
    images, _ = next(iter(bundle.train))
    assert images.is_contiguous(memory_format=torch.channels_last)


def test_epoch_is_a_function_of_seed_and_epoch_only():
    splits = synthetic_splits(n_train=30)
    first = array_bundle(splits, seed=5).train
    second = array_bundle(splits, seed=5).train
    epoch(first, 0)  # iterating some other epoch first must not matter
    assert same_batches(epoch(first, 2), epoch(second, 2))
    assert same_batches(epoch(first, 2), epoch(first, 2))
    assert not same_batches(epoch(first, 2), epoch(first, 3))
    assert not same_batches(epoch(first, 2), epoch(array_bundle(splits, seed=6).train, 2))


def test_iterating_loaders_leaves_the_global_rng_alone():
    splits = synthetic_splits()
    before = torch.get_rng_state()
    for loader in ("device", "classic"):
        bundle = array_bundle(splits, loader=loader)
        epoch(bundle.train)
        epoch(bundle.test)
    assert torch.equal(before, torch.get_rng_state())


# ---------------------------------------------------------------- sharding


def rank_epochs(splits, world_size, epoch_number=0, **overrides):
    return [
        epoch(
            array_bundle(splits, rank=rank, world_size=world_size, **overrides).train,
            epoch_number,
        )
        for rank in range(world_size)
    ]


@pytest.mark.parametrize("loader", ["device", "classic"])
def test_two_ranks_see_every_sample_exactly_once_per_epoch(loader):
    splits = synthetic_splits(n_train=36)
    for number in (0, 1):
        per_rank = rank_epochs(splits, 2, number, loader=loader, batch_size=5)
        assert len(per_rank[0]) == len(per_rank[1]) == 4
        ids = torch.cat([labels for batches in per_rank for _, labels in batches])
        assert sorted(ids.tolist()) == list(range(36))


def test_remainder_is_padded_without_drop_last_and_trimmed_with_it():
    splits = synthetic_splits(n_train=37)
    padded = rank_epochs(splits, 2, batch_size=5)
    assert len(padded[0]) == len(padded[1]) == 4
    counts = Counter(torch.cat([y for batches in padded for _, y in batches]).tolist())
    assert set(counts) == set(range(37)) and sorted(counts.values())[-2:] == [1, 2]
    trimmed = rank_epochs(splits, 2, batch_size=5, drop_last=True)
    assert len(trimmed[0]) == len(trimmed[1]) == 3
    assert all(len(y) == 5 for batches in trimmed for _, y in batches)
    ids = torch.cat([y for batches in trimmed for _, y in batches]).tolist()
    assert len(set(ids)) == len(ids) == 30


def test_global_batches_do_not_depend_on_the_world_size():
    splits = synthetic_splits(n_train=32)
    (single,) = rank_epochs(splits, 1, batch_size=8)
    pair = rank_epochs(splits, 2, batch_size=4)
    for step, (images, labels) in enumerate(single):
        merged_x = torch.cat([pair[r][step][0] for r in range(2)])
        merged_y = torch.cat([pair[r][step][1] for r in range(2)])
        order, merged_order = labels.argsort(), merged_y.argsort()
        assert torch.equal(labels[order], merged_y[merged_order])
        assert torch.equal(images[order], merged_x[merged_order])


@settings(max_examples=60, deadline=None, database=None)
@given(
    num_samples=st.integers(1, 60),
    world_size=st.integers(1, 5),
    batch_size=st.integers(1, 9),
    drop_last=st.booleans(),
)
def test_plan_gives_equal_steps_on_every_rank(num_samples, world_size, batch_size, drop_last):
    plans = [
        plan_epoch(
            num_samples,
            seed=1,
            epoch=4,
            rank=r,
            world_size=world_size,
            drop_last=drop_last,
            max_offset=8,
        )
        for r in range(world_size)
    ]
    per_rank = rank_sample_count(num_samples, world_size, drop_last)
    assert all(len(plan) == per_rank for plan in plans)
    seen = Counter(torch.cat([plan.indices for plan in plans]).tolist())
    assert set(seen) <= set(range(num_samples))
    if drop_last:
        assert max(seen.values(), default=1) == 1
        assert len(seen) == num_samples - num_samples % world_size
    else:
        assert set(seen) == set(range(num_samples))
        assert sum(seen.values()) - num_samples == (-num_samples) % world_size
    steps = train_steps_per_epoch(num_samples, batch_size, world_size, drop_last)
    assert steps == (per_rank // batch_size if drop_last else -(-per_rank // batch_size))


@pytest.mark.parametrize("loader", ["device", "classic"])
def test_eval_shards_partition_the_test_set(loader):
    splits = synthetic_splits(n_test=13)
    shards = [array_bundle(splits, loader=loader, rank=r, world_size=3).test for r in range(3)]
    ids = [torch.cat([y for _, y in epoch(shard)]).tolist() for shard in shards]
    assert sorted(sum(ids, [])) == list(range(13))
    assert [len(shard) for shard in shards] == [1, 1, 1]  # 5, 4, 4 images, batch 5
    assert [len(i) for i in ids] == [5, 4, 4]


# ---------------------------------------------------------------- classic path


def test_classic_epoch_equals_device_epoch():
    splits = synthetic_splits(n_train=21, n_test=9)
    device = array_bundle(splits, loader="device", world_size=2, rank=1)
    classic = array_bundle(splits, loader="classic", world_size=2, rank=1)
    for number in (0, 1):
        assert same_batches(epoch(device.train, number), epoch(classic.train, number))
    assert same_batches(epoch(device.test), epoch(classic.test))


def test_classic_epoch_with_persistent_workers_is_repeatable():
    splits = synthetic_splits(n_train=24)
    device = array_bundle(splits, loader="device")
    classic = array_bundle(splits, loader="classic", num_workers=2)
    first = epoch(classic.train, 1)
    epoch(classic.train, 2)
    assert same_batches(first, epoch(classic.train, 1))
    assert same_batches(first, epoch(device.train, 1))


# ---------------------------------------------------------------- build_data on fake CIFAR


@pytest.mark.parametrize("loader", ["device", "classic"])
def test_build_data_reads_fake_cifar(tmp_path, monkeypatch, loader):
    fake = trusted_fake_cifar(monkeypatch, tmp_path, "cifar100", n_train=30, n_test=10)
    bundle = data_bundle(
        "cifar100",
        root=str(tmp_path),
        batch_size=8,
        eval_batch_size=4,
        device=CPU,
        seed=0,
        rank=1,
        world_size=2,
        loader=loader,
        num_workers=0,
    )
    assert (bundle.name, bundle.num_classes, bundle.num_train, bundle.num_test) == (
        "cifar100",
        100,
        30,
        10,
    )
    assert len(bundle.train) == 2 and len(bundle.test) == 2
    labels = torch.cat([y for _, y in bundle.test])
    np.testing.assert_array_equal(labels.numpy(), fake.test_labels[1::2])
    images, _ = next(iter(bundle.test))
    mean, std = channel_tensor(CIFAR_MEAN, CPU), channel_tensor(CIFAR_STD, CPU)
    first = torch.from_numpy(fake.test_images[1:2])
    assert torch.equal(images[0], normalize_uint8(first, mean, std)[0])


BASE_ARGS = {"root": "unused", "batch_size": 8, "eval_batch_size": 8, "device": CPU, "seed": 0}


@pytest.mark.parametrize(
    ("name", "overrides", "match"),
    [
        ("mnist", {}, r"data.name='mnist' is invalid: expected one of \['cifar10', 'cifar100'"),
        (
            "digits",
            {"loader": "dali"},
            r"loader='dali' is invalid: expected one of \['device', 'classic'\]",
        ),
        ("imagenet", {"loader": "device"}, r"does not support 'imagenet'.*classic"),
        ("digits", {"batch_size": 0}, r"^batch_size=0 is invalid: expected an int with 1 <= "),
        ("digits", {"eval_batch_size": -2}, r"eval_batch_size=-2 is invalid: .* 1 <= "),
        ("digits", {"rank": 2, "world_size": 2}, r"rank=2 is invalid: .* 0 <= rank <= 1"),
        ("digits", {"world_size": 0}, r"world_size=0 is invalid: .* 1 <= world_size"),
        ("digits", {"seed": -1}, r"seed=-1 is invalid: .* 0 <= seed"),
        ("digits", {"num_workers": -1}, r"num_workers=-1 is invalid: .* 0 <= num_workers"),
        ("digits", {"image_size": 4}, r"image_size=4 is invalid: expected an int with 8 <= "),
        ("cifar10", {"image_size": 64}, r"image_size=64 is invalid: cifar10 images are 32x32"),
        ("imagenet", {"loader": "classic", "resize_size": 100}, r"must be >= crop_size"),
        (
            "imagenet",
            {"loader": "classic", "max_image_pixels": 0},
            r"max_image_pixels=0 is invalid: .* 1 <= max_image_pixels",
        ),
        ("imagenet", {"loader": "classic", "decode": "nvjpeg"}, r"decode='nvjpeg' is invalid"),
        ("digits", {"batch_size": 2000, "drop_last": True}, r"leaves no full batch"),
    ],
)
def test_build_data_rejects_bad_arguments(name, overrides, match):
    arguments = {**BASE_ARGS, **overrides}
    if name == "digits":
        arguments.pop("root")
    with pytest.raises(ValueError, match=match):
        data_bundle(name, **arguments)


def test_loading_for_rank_takes_its_fields_from_the_settings():
    cfg = OmegaConf.merge(
        compose_config(["experiment=paper/resnet18_imagenet", "protocol=honest"]),
        {
            "seed": 7,
            "data": {"augment": False, "drop_last": True},
            "trainer": {"batch_size": 128, "eval_batch_size": 500, "num_workers": 3},
        },
    )
    settings = with_device_defaults(RunSettings.from_config(cfg), CPU, 1)
    loading = Loading.for_rank(settings, "cpu", rank=2, world_size=3)
    # per rank: the train batch rounded down, the eval batch up
    assert (loading.batch_size, loading.eval_batch_size) == (42, 167)
    assert (loading.rank, loading.world_size, loading.seed, loading.device) == (2, 3, 7, CPU)
    expected = {
        "loader": "classic",
        "num_workers": 3,
        "augment": False,
        "drop_last": True,
        "channels_last": False,
        "val_size": 10_000,
    }
    assert {key: getattr(loading, key) for key in expected} == expected
    one_each = Loading.for_rank(settings, CPU, 0, 128)
    assert (one_each.batch_size, one_each.eval_batch_size) == (1, 4)


def test_loading_is_checked_on_construction():
    arguments = {key: value for key, value in BASE_ARGS.items() if key != "root"}
    with pytest.raises(ValueError, match=r"augment='yes' is invalid: expected True or False"):
        Loading(**arguments, augment="yes")
    with pytest.raises(ValueError, match=r"batch_size=2.5 is invalid"):
        Loading(**{**arguments, "batch_size": 2.5})
    choice = StrEnum("Loader", ["device", "classic"])  # like the config's enums
    from_enum = Loading(**arguments, loader=choice.classic)
    assert type(from_enum.loader) is str and from_enum.loader == "classic"


# ---------------------------------------------------------------- digits


@pytest.mark.parametrize("image_size", [16, 32])
def test_digits_split_sizes_labels_channels(image_size):
    splits = load_digits_splits(image_size)
    assert (len(splits.train), len(splits.test)) == (1437, 360)
    assert splits.train.images.shape == (1437, 3, image_size, image_size)
    assert torch.equal(splits.train.images[:, 0], splits.train.images[:, 2])
    assert splits.train.images.max() == 255 and splits.train.images.min() == 0
    assert splits.padding == image_size // 8
    for labels in (splits.train.labels, splits.test.labels):
        assert labels.min() == 0 and labels.max() == 9
    train_counts = torch.bincount(splits.train.labels, minlength=10)
    test_counts = torch.bincount(splits.test.labels, minlength=10)
    # stratified: every class is split 80/20 up to rounding
    assert ((test_counts - 0.2 * (train_counts + test_counts)).abs() <= 1).all()


def test_digits_bundle_is_normalised_with_its_own_statistics():
    arguments = {key: value for key, value in BASE_ARGS.items() if key != "root"}
    bundle = data_bundle("digits", **arguments, image_size=16, augment=False)
    assert (bundle.num_train, bundle.num_test, bundle.num_classes) == (1437, 360, 10)
    images = torch.cat([x for x, _ in epoch(bundle.train)])
    assert images.shape == (1437, 3, 16, 16)
    assert abs(images.mean().item()) < 1e-3 and abs(images.std(correction=0).item() - 1) < 1e-3


def test_digits_split_is_fixed():
    a, b = load_digits_splits(8), load_digits_splits(8)
    assert torch.equal(a.test.images, b.test.images) and torch.equal(a.test.labels, b.test.labels)


# ---------------------------------------------------------------- imagenet


def imagenet_bundle(root, **overrides) -> DataBundle:
    args = {
        "root": str(root),
        "batch_size": 4,
        "eval_batch_size": 5,
        "device": CPU,
        "seed": 0,
        "loader": "classic",
        "num_workers": 0,
        "crop_size": 16,
        "resize_size": 20,
    }
    return data_bundle("imagenet", **{**args, **overrides})


def test_imagenet_folders_load_with_tiny_crops(tmp_path):
    fake = write_fake_imagenet(tmp_path, classes=3, per_class=4, size=40, val_per_class=3)
    bundle = imagenet_bundle(tmp_path)
    assert (bundle.num_classes, bundle.num_train, bundle.num_test) == (3, 12, 9)
    batches = epoch(bundle.train, 0)
    assert len(batches) == len(bundle.train) == 3
    assert batches[0][0].shape == (4, 3, 16, 16) and batches[0][0].dtype == torch.float32
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    assert same_batches(batches, epoch(bundle.train, 0))
    assert not same_batches(batches, epoch(bundle.train, 1))
    images, labels = next(iter(bundle.test))
    assert images.shape == (5, 3, 16, 16) and labels.tolist() == [0, 0, 0, 1, 1]
    assert check_imagenet_layout(tmp_path) == fake.classes


def test_imagenet_epoch_depends_only_on_seed_and_epoch(tmp_path):
    write_fake_imagenet(tmp_path, classes=2, per_class=3, size=24)
    before = torch.get_rng_state()
    first = epoch(imagenet_bundle(tmp_path, seed=4).train, 2)
    torch.manual_seed(123)  # the global RNG must not matter
    assert same_batches(first, epoch(imagenet_bundle(tmp_path, seed=4).train, 2))
    torch.set_rng_state(before)
    epoch(imagenet_bundle(tmp_path, seed=4).train, 3)
    assert torch.equal(before, torch.get_rng_state())


def test_imagenet_val_shards_count_each_image_once(tmp_path):
    write_fake_imagenet(tmp_path, classes=3, per_class=2, size=24, val_per_class=3)
    shards = [imagenet_bundle(tmp_path, rank=r, world_size=2).test for r in range(2)]
    labels = [torch.cat([y for _, y in epoch(shard)]) for shard in shards]
    assert [len(y) for y in labels] == [5, 4]
    assert sorted(torch.cat(labels).tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def _flatten_val(root: Path) -> None:
    for image in list((root / "val").rglob("*.JPEG")):
        image.rename(root / "val" / image.name)
    for folder in (root / "val").iterdir():
        if folder.is_dir():
            folder.rmdir()


@pytest.mark.parametrize(
    ("break_layout", "match"),
    [
        (lambda root: __import__("shutil").rmtree(root / "val"), r"val does not exist"),
        (_flatten_val, r"holds files but no class folders"),
        (lambda root: (root / "train" / "n99999999").mkdir(), r"only in train: n99999999"),
        (
            lambda root: [p.unlink() for p in (root / "val" / "n01440764").iterdir()],
            r"n01440764",
        ),
    ],
)
def test_imagenet_wrong_layouts_explain_the_expected_one(tmp_path, break_layout, match):
    write_fake_imagenet(tmp_path, classes=2, per_class=1, size=16)
    break_layout(tmp_path)
    with pytest.raises(DatasetUnavailableError, match=match) as info:
        imagenet_bundle(tmp_path)
    assert "train/<class>/<image>" in str(info.value)


# ---------------------------------------------------------------- imagenet: untrusted trees


def train_labels_by_file(bundle: DataBundle) -> Counter:
    """(real file, label) -> how many samples of the train split read that file as that label."""
    dataset = bundle.train.loader.dataset.base
    return Counter((Path(sample.real).resolve(), sample.label) for sample in dataset.samples)


def link_class_folder_out(root: Path, outside: Path) -> Path:
    link = root / "val" / "n01440764"
    os.rename(link, outside / "n01440764")
    link.symlink_to(outside / "n01440764")
    return link


def link_file_out(root: Path, outside: Path) -> Path:
    pixels = np.random.default_rng(1).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(outside / "secret.JPEG")
    link = root / "train" / "n01440764" / "extra.JPEG"
    link.symlink_to(outside / "secret.JPEG")
    return link


@pytest.mark.parametrize(("plant", "extra_train"), [(link_class_folder_out, 0), (link_file_out, 1)])
def test_imagenet_links_out_of_the_root_are_refused_unless_allowed(tmp_path, plant, extra_train):
    root, outside = tmp_path / "imagenet", tmp_path / "elsewhere"
    outside.mkdir()
    write_fake_imagenet(root, classes=2, per_class=2, size=24)
    link = plant(root, outside)
    with pytest.raises(DatasetUnavailableError) as info:
        imagenet_bundle(root)
    message = str(info.value)
    assert str(link) in message and str(root) in message and "data.follow_links=true" in message
    bundle = imagenet_bundle(root, follow_links=True)
    assert (bundle.num_train, bundle.num_test) == (4 + extra_train, 4)
    assert len(torch.cat([y for _, y in epoch(bundle.test)])) == 4


def test_imagenet_samples_are_ordered_and_labelled_as_torchvision_does(tmp_path):
    fake = write_fake_imagenet(tmp_path, classes=3, per_class=3, size=16)
    nested = tmp_path / "train" / fake.classes[1] / "a_nested"
    nested.mkdir()
    os.rename(fake.train_files[4], nested / "z.png")
    bundle = imagenet_bundle(tmp_path)
    ours = [(sample.shown, sample.label) for sample in bundle.train.loader.dataset.base.samples]
    assert ours == datasets.ImageFolder(str(tmp_path / "train")).samples


def test_imagenet_links_to_non_images_are_ignored_wherever_they_lead(tmp_path):
    root = tmp_path / "imagenet"
    write_fake_imagenet(root, classes=2, per_class=2, size=16)
    (tmp_path / "notes.txt").write_text("not an image")
    (root / "train" / "n01440764" / "notes.txt").symlink_to(tmp_path / "notes.txt")
    assert imagenet_bundle(root).num_train == 4


def test_imagenet_symlink_loops_neither_multiply_nor_relabel(tmp_path):
    fake = write_fake_imagenet(tmp_path, classes=2, per_class=8, size=16)
    (tmp_path / "train" / fake.classes[0] / "loop").symlink_to("..")
    (tmp_path / "train" / fake.classes[1] / "self").symlink_to(".")
    (tmp_path / "train" / fake.classes[1] / "deep").mkdir()
    (tmp_path / "train" / fake.classes[1] / "deep" / "up").symlink_to("../..")
    bundle = imagenet_bundle(tmp_path)
    assert bundle.num_train == 16
    expected = Counter(
        {(path.resolve(), fake.classes.index(path.parent.name)): 1 for path in fake.train_files}
    )
    assert train_labels_by_file(bundle) == expected
    labels = torch.cat([y for _, y in epoch(bundle.train)])
    assert sorted(labels.tolist()) == [0] * 8 + [1] * 8


def test_imagenet_files_reached_twice_are_read_once(tmp_path):
    fake = write_fake_imagenet(tmp_path, classes=2, per_class=3, size=16)
    first_class = tmp_path / "train" / fake.classes[0]
    (first_class / "copy.JPEG").symlink_to(fake.train_files[0].name)
    (first_class / "nested").mkdir()
    os.rename(fake.train_files[1], first_class / "nested" / fake.train_files[1].name)
    (first_class / "alias").symlink_to("nested")
    bundle = imagenet_bundle(tmp_path)
    assert bundle.num_train == 6
    assert sorted(label for _, label in train_labels_by_file(bundle)) == [0, 0, 0, 1, 1, 1]


def test_imagenet_file_in_two_class_folders_is_refused(tmp_path):
    fake = write_fake_imagenet(tmp_path, classes=2, per_class=2, size=16)
    stolen = tmp_path / "train" / fake.classes[1] / "stolen.JPEG"
    stolen.symlink_to(fake.train_files[0])
    with pytest.raises(DatasetUnavailableError, match="two labels") as info:
        imagenet_bundle(tmp_path)
    assert str(stolen) in str(info.value) and str(fake.train_files[0]) in str(info.value)


def truncate_jpeg(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_truncated_jpeg_fails_naming_its_path(tmp_path):
    fake = write_fake_imagenet(tmp_path, classes=2, per_class=2, size=32, val_per_class=3)
    truncate_jpeg(fake.val_files[4])
    bundle = imagenet_bundle(tmp_path)
    with pytest.raises(DatasetUnavailableError, match="cannot be read as an image") as info:
        epoch(bundle.test)
    assert str(fake.val_files[4]) in str(info.value) and "truncated" in str(info.value)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_bad_images_are_skipped_and_counted_when_asked(tmp_path, num_workers):
    fake = write_fake_imagenet(tmp_path, classes=2, per_class=4, size=32, val_per_class=3)
    truncate_jpeg(fake.val_files[1])
    truncate_jpeg(fake.train_files[2])
    fake.train_files[5].write_bytes(b"not an image at all")
    bundle = imagenet_bundle(tmp_path, skip_bad_images=True, num_workers=num_workers)
    assert bundle.skipped_images() == 0
    batches = epoch(bundle.train)
    assert [len(y) for _, y in batches] == [4, 4]
    assert [len(y) for _, y in epoch(bundle.test)] == [5, 1]
    assert bundle.skipped_images() == 3
    epoch(bundle.train, 1)
    assert bundle.skipped_images() == 3  # distinct files, not encounters


def test_an_oversized_image_is_refused_before_decoding(tmp_path, monkeypatch):
    fake = write_fake_imagenet(tmp_path, classes=2, per_class=2, size=16, val_per_class=1)
    big = np.zeros((30, 40, 3), dtype=np.uint8)
    Image.fromarray(big).save(fake.val_files[1], format="JPEG")
    bundle = imagenet_bundle(tmp_path, max_image_pixels=1000)
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(
        ImageFile.ImageFile, "load", lambda image: decoded.append(image.size) or real_load(image)
    )
    with pytest.raises(DatasetUnavailableError) as info:
        epoch(bundle.test)
    message = str(info.value)
    assert str(fake.val_files[1]) in message
    assert "40x30 = 1200 pixels, above data.max_image_pixels=1000" in message
    assert (40, 30) not in decoded and (16, 16) in decoded
    skipping = imagenet_bundle(tmp_path, max_image_pixels=1000, skip_bad_images=True)
    assert [len(y) for _, y in epoch(skipping.test)] == [2] and skipping.skipped_images() == 1
