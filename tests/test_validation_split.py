"""The honest protocol's validation split: stratified, fixed, disjoint from training and test,
the same for every seed, and counted exactly once over ranks by every loader."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.data import Loading
from experiments.data.arrays import ArraySplits, ImageArrays
from experiments.data.build import build_array_bundle
from experiments.data.datasets import imagenet
from experiments.data.digits import load_digits_splits
from experiments.data.validation_split import (
    SPLIT_SEED,
    split_validation,
    stratified_counts,
)
from experiments.schema import HONEST_VAL_SIZES
from tests.conftest import data_bundle
from tests.fake_datasets import write_fake_imagenet

CPU = torch.device("cpu")
N_TRAIN, N_TEST, CLASSES = 60, 11, 4


def id_splits() -> ArraySplits:
    """Images whose first pixel is their sample id (train 0..59, test 100..110), labels id % 4;
    mean 0 and std 1, so an evaluated pixel times 255 gives the id back."""
    ids = torch.cat([torch.arange(N_TRAIN), 100 + torch.arange(N_TEST)])
    images = torch.zeros(len(ids), 3, 8, 8, dtype=torch.uint8)
    images[:, 0, 0, 0] = ids.to(torch.uint8)
    labels = ids % CLASSES
    return ArraySplits(
        train=ImageArrays(images[:N_TRAIN], labels[:N_TRAIN]),
        test=ImageArrays(images[N_TRAIN:], labels[N_TRAIN:]),
        num_classes=CLASSES,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        padding=1,
    )


def bundle(**overrides):
    settings = {
        "loader": "device",
        "batch_size": 7,
        "eval_batch_size": 4,
        "device": CPU,
        "seed": 3,
        "num_workers": 0,
        "augment": False,
        "val_size": 14,
        **overrides,
    }
    return build_array_bundle(id_splits(), Loading(**settings), name="ids")


def ids_of(loader, epoch: int | None = None) -> list[int]:
    if epoch is not None:
        loader.set_epoch(epoch)
    return [round(float(v) * 255) for images, _ in loader for v in images[:, 0, 0, 0]]


# ---------------------------------------------------------------- the split itself


@given(
    st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=12),
    st.data(),
)
@settings(max_examples=200, deadline=None)
def test_stratified_counts_are_proportional_and_sum_to_the_size(class_sizes, data):
    size = data.draw(st.integers(min_value=0, max_value=sum(class_sizes)))
    counts = stratified_counts(class_sizes, size)
    assert sum(counts) == size
    total = sum(class_sizes)
    for n, k in zip(class_sizes, counts, strict=True):
        assert abs(k - size * n / total) < 1  # the class's share, rounded
        assert 0 <= k <= n


def test_the_split_is_stratified_disjoint_and_covers_the_training_split():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    split = split_validation(labels, 10)
    assert split is not None and len(split) == 10
    train, val = split.train.tolist(), split.val.tolist()
    assert not set(train) & set(val) and sorted(train + val) == list(range(100))
    assert train == sorted(train) and val == sorted(val)
    assert Counter(labels[split.val].tolist()) == {0: 5, 1: 3, 2: 2}
    assert split.record() == {
        "size": 10,
        "fingerprint": split.fingerprint,
        "split_seed": SPLIT_SEED,
    }


def test_the_split_depends_on_the_labels_and_size_only():
    labels = torch.arange(200) % 7
    first, again = split_validation(labels, 35), split_validation(labels.tolist(), 35)
    assert torch.equal(first.val, again.val) and first.fingerprint == again.fingerprint
    torch.manual_seed(123)  # no global RNG is involved
    assert torch.equal(split_validation(labels, 35).val, first.val)
    assert split_validation(labels, 36).fingerprint != first.fingerprint
    assert split_validation(labels, 0) is None


@pytest.mark.parametrize("size", [-1, 60, 61, True, 2.0])
def test_a_bad_size_is_refused_naming_the_key(size):
    with pytest.raises(ValueError, match=r"data\.val_size=.* is invalid: must be an integer"):
        split_validation(torch.arange(60) % 4, size)


def test_a_size_that_empties_a_class_is_refused():
    labels = torch.tensor([0] * 30 + [1])
    with pytest.raises(ValueError, match=r"data\.val_size=29 .*every training example of class"):
        split_validation(labels, 29)


def test_digits_default_split_has_the_test_splits_class_counts():
    splits = load_digits_splits(8)
    size = HONEST_VAL_SIZES["digits"]
    split = split_validation(splits.train.labels, size, like=splits.test.labels)
    held = torch.bincount(splits.train.labels[split.val], minlength=10)
    assert held.sum() == size == len(splits.test)
    assert torch.equal(held, torch.bincount(splits.test.labels, minlength=10))


# ---------------------------------------------------------------- the array loaders


@pytest.mark.parametrize("loader", ["device", "classic"])
def test_the_loaders_hold_out_the_split_from_training_and_keep_the_test_split(loader):
    data = bundle(loader=loader)
    split = split_validation(id_splits().train.labels, 14, like=id_splits().test.labels)
    assert (data.num_train, data.num_val, data.num_test) == (46, 14, 11)
    assert data.validation.fingerprint == split.fingerprint
    assert ids_of(data.val) == split.val.tolist()
    trained = ids_of(data.train, epoch=0)
    assert sorted(trained) == split.train.tolist()  # every kept sample once, nothing held out
    assert not set(trained) & set(ids_of(data.val))
    assert ids_of(data.test) == list(range(100, 100 + N_TEST))


@pytest.mark.parametrize("loader", ["device", "classic"])
def test_two_ranks_count_every_validation_sample_exactly_once(loader):
    shards = [bundle(loader=loader, rank=r, world_size=2, val_size=15).val for r in range(2)]
    seen = [ids_of(shard) for shard in shards]
    assert [len(ids) for ids in seen] == [8, 7]  # 15 samples: no padding, no repeat
    assert (
        sorted(seen[0] + seen[1])
        == split_validation(id_splits().train.labels, 15, like=id_splits().test.labels).val.tolist()
    )


def test_the_split_is_the_same_for_every_seed_and_loader():
    reference = bundle(seed=0)
    for other in (bundle(seed=9), bundle(seed=9, loader="classic")):
        assert other.validation.fingerprint == reference.validation.fingerprint
        assert ids_of(other.val) == ids_of(reference.val)
    assert ids_of(bundle(seed=0).train, 0) != ids_of(bundle(seed=9).train, 0)  # training is not


def test_without_a_split_the_training_arrays_are_the_loaded_ones():
    splits = id_splits()
    settings = Loading(batch_size=7, eval_batch_size=4, device=CPU, seed=3, augment=False)
    data = build_array_bundle(splits, settings, name="ids")
    assert data.val is None and data.validation is None and data.num_val == 0
    assert data.num_train == N_TRAIN and sorted(ids_of(data.train, 0)) == list(range(N_TRAIN))


def test_digits_honest_bundle_counts():
    data = data_bundle(
        "digits", batch_size=64, eval_batch_size=500, device=CPU, seed=0, image_size=8, val_size=360
    )
    assert (data.num_train, data.num_val, data.num_test, len(data.train)) == (1077, 360, 360, 17)
    assert sum(len(labels) for _, labels in data.val) == 360


# ---------------------------------------------------------------- imagenet


def test_imagenet_holds_out_training_images_not_test_images(tmp_path):
    fake = write_fake_imagenet(tmp_path, classes=3, per_class=4, size=24, val_per_class=2)
    samples = imagenet(str(tmp_path)).samples(val_size=3)
    held = {sample.real for sample in samples.held_out}
    kept = {sample.real for sample in samples.train}
    assert len(held) == 3 and len(kept) == 9 and not held & kept
    assert held <= {str(path.resolve()) for path in fake.train_files}
    assert not held & {str(path.resolve()) for path in fake.val_files}
    assert sorted(sample.label for sample in samples.held_out) == [0, 1, 2]  # stratified
    assert len(samples.test) == 6


# The loading settings of the tiny ImageNet tests (root aside).
IMAGENET_LOADING = {
    "batch_size": 2,
    "eval_batch_size": 2,
    "device": CPU,
    "seed": 0,
    "loader": "classic",
    "num_workers": 0,
    "crop_size": 16,
    "resize_size": 20,
    "val_size": 3,
}


def test_imagenet_validation_shards_count_each_image_once(tmp_path):
    write_fake_imagenet(tmp_path, classes=3, per_class=4, size=24, val_per_class=2)
    common = {"root": str(tmp_path), **IMAGENET_LOADING}
    shards = [data_bundle("imagenet", **common, rank=r, world_size=2) for r in (0, 1)]
    assert all((b.num_train, b.num_val, b.num_test) == (9, 3, 6) for b in shards)
    labels = [torch.cat([y for _, y in shard.val]).tolist() for shard in shards]
    assert [len(y) for y in labels] == [2, 1] and sorted(labels[0] + labels[1]) == [0, 1, 2]
    assert shards[0].validation.fingerprint == shards[1].validation.fingerprint


def test_the_gpu_decoding_path_holds_out_the_same_split(tmp_path, monkeypatch):
    # The decoder runs on the CPU here (the check that asks for CUDA is lifted: a device seam).
    from experiments.data import gpu_decode

    monkeypatch.setattr(gpu_decode, "check_gpu_decode", lambda *args: None)
    write_fake_imagenet(tmp_path, classes=3, per_class=4, size=24, val_per_class=2)
    common = {"root": str(tmp_path), **IMAGENET_LOADING}
    gpu = data_bundle("imagenet", **common, decode="gpu")
    cpu = data_bundle("imagenet", **common)
    assert gpu.validation.fingerprint == cpu.validation.fingerprint
    assert (gpu.num_train, gpu.num_val, gpu.num_test) == (9, 3, 6)
    labels = torch.cat([y for _, y in gpu.val]).tolist()
    assert labels == torch.cat([y for _, y in cpu.val]).tolist() == [0, 1, 2]
    images, _ = next(iter(gpu.val))
    assert images.shape == (2, 3, 16, 16)


def test_the_split_takes_the_test_splits_class_shares_when_given():
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)  # unbalanced training split
    balanced_test = torch.tensor([0, 1, 2] * 5)
    split = split_validation(labels, 9, like=balanced_test)
    assert Counter(labels[split.val].tolist()) == {0: 3, 1: 3, 2: 3}
    assert split.fingerprint != split_validation(labels, 9).fingerprint
    with pytest.raises(ValueError, match=r"every training example of class"):
        split_validation(labels, 30, like=balanced_test)  # 10 of class 2: all of them


def test_imagenet_holds_out_exactly_ten_images_per_class(tmp_path):
    from experiments.data.datasets import imagenet
    from tests.fake_datasets import write_fake_imagenet

    # Uneven classes, like ImageNet's 732..1300 training images; a balanced val/ folder.
    root = tmp_path / "imagenet"
    write_fake_imagenet(root, classes=3, per_class=12, size=8, val_per_class=2)
    extra = sorted((root / "train").iterdir())[0]
    for index, image in enumerate(sorted(extra.iterdir())[:4]):
        (extra / f"copy_{index}.JPEG").write_bytes(image.read_bytes() + bytes([index]))
    samples = imagenet(str(root), max_image_pixels=10**8).samples(30)
    held = Counter(sample.label for sample in samples.held_out)
    assert held == {0: 10, 1: 10, 2: 10}
