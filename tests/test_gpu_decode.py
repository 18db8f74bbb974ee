"""``data.decode=gpu`` on the CPU: the same loader, with torchvision's CPU JPEG decoder standing
in for nvJPEG (``GPU_DECODE_ON_CPU_ENV``). Worker batches pickle under the default sharing
strategy (they used to hang the first batch), epochs start at a batch, the crops touch no CUDA
generator, decoding is ordered against the compute stream, and a run resumes mid-epoch."""

from __future__ import annotations

import json
import multiprocessing.reduction
import pickle
from pathlib import Path

import pytest
import torch

from experiments.data import gpu_decode as gd
from experiments.device_seam import GPU_DECODE_ON_CPU_ENV
from experiments.errors import TrainingInterrupted
from tests.conftest import data_bundle, expected_run_dir
from tests.fake_datasets import write_fake_imagenet
from tests.signal_injection import Injection, inject
from tests.test_resume import _without_times

LOADER_TIMEOUT_S = 60  # a batch lost in a worker fails the test instead of hanging it


@pytest.fixture(autouse=True)
def _decode_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GPU_DECODE_ON_CPU_ENV, "1")


@pytest.fixture
def imagenet(tmp_path: Path) -> Path:
    write_fake_imagenet(tmp_path, classes=2, per_class=5, size=40, val_per_class=3)
    return tmp_path


def gpu_decoded(root: Path, workers: int, **overrides):
    bundle = data_bundle(
        "imagenet",
        root=str(root),
        batch_size=3,
        eval_batch_size=4,
        device="cpu",
        seed=5,
        loader="classic",
        num_workers=workers,
        crop_size=16,
        resize_size=20,
        decode="gpu",
        **overrides,
    )
    for loader in (bundle.train.loader, bundle.test.loader):
        loader.timeout = LOADER_TIMEOUT_S if workers else 0
    return bundle


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(images.clone(), labels.clone()) for images, labels in loader]


def assert_same_batches(mine, theirs) -> None:
    assert len(mine) == len(theirs)
    for (a, y), (b, z) in zip(mine, theirs, strict=True):
        assert torch.equal(a, b) and torch.equal(y, z)


def test_a_batch_of_files_pickles_under_the_file_descriptor_strategy(imagenet) -> None:
    """What a worker sends: one packed tensor through shared memory (torch's reducer), read back
    intact; ``torchvision.io.read_file`` tensors failed here with EBADF."""
    assert torch.multiprocessing.get_sharing_strategy() == "file_descriptor"
    files = sorted((imagenet / "train").rglob("*.JPEG"))[:3]
    items = [(f.read_bytes(), 7 + i, i % 2, f.name) for i, f in enumerate(files)]
    batch = gd.collate_encoded(items)
    sent = multiprocessing.reduction.ForkingPickler.dumps(batch)
    received = pickle.loads(sent)
    assert [bytes(t.numpy()) for t in received.files()] == [f.read_bytes() for f in files]
    assert received.seeds == [7, 8, 9] and received.labels.tolist() == [0, 1, 0]
    assert received.names == [f.name for f in files]


def test_with_a_worker_every_batch_arrives_and_equals_the_in_process_ones(imagenet) -> None:
    in_process, with_worker = gpu_decoded(imagenet, 0), gpu_decoded(imagenet, 1)
    for bundle in (in_process, with_worker):
        bundle.train.set_epoch(1)
    expected = batches(in_process.train)
    assert len(expected) == len(in_process.train) == 4  # 10 images, batch 3
    images, labels = expected[0]
    assert images.shape == (3, 3, 16, 16) and images.dtype == torch.float32
    assert_same_batches(batches(with_worker.train), expected)
    assert_same_batches(batches(with_worker.test), batches(in_process.test))


def test_an_epoch_starts_at_a_batch_without_the_earlier_ones(imagenet) -> None:
    bundle = gpu_decoded(imagenet, 1)
    bundle.train.set_epoch(2)
    whole = batches(bundle.train)
    bundle.train.set_epoch(2, start_batch=2)
    assert len(bundle.train) == len(whole) == 4  # the whole epoch's steps
    assert_same_batches(batches(bundle.train), whole[2:])
    with pytest.raises(ValueError, match="start_batch must be in 0..4"):
        bundle.train.set_epoch(2, start_batch=5)


def test_the_crops_touch_only_the_cpu_generator(imagenet, monkeypatch) -> None:
    """A stand-in for every way torch writes a CUDA generator records the writes: decoding an
    epoch makes none, and the CPU generator is left as it was."""
    writes: list[str] = []
    for name in ("manual_seed", "manual_seed_all", "set_rng_state", "set_rng_state_all"):
        monkeypatch.setattr(
            torch.cuda, name, lambda *args, name=name, **kwargs: writes.append(name)
        )
    torch.manual_seed(0)  # the stand-in sees this one: the check can fail
    assert writes == ["manual_seed_all"]
    writes.clear()
    bundle = gpu_decoded(imagenet, 0)
    bundle.train.set_epoch(0)
    before = torch.get_rng_state()
    assert len(batches(bundle.train)) == 4
    assert writes == []
    assert torch.equal(torch.get_rng_state(), before)


def test_decoding_is_ordered_against_the_compute_stream(imagenet, monkeypatch) -> None:
    """Each batch: wait for the decode stream's previous work, decode and crop on it, then hand
    the result to the compute stream (a stand-in stream records the order)."""
    events: list[str] = []

    class RecordingStream:
        def __init__(self, device) -> None:
            pass

        def synchronize(self) -> None:
            events.append("wait for the decode stream")

        def active(self):
            events.append("decode on it")
            return torch.autograd.profiler.record_function("decode")

        def hand_over(self, *tensors) -> None:
            assert len(tensors) == 2
            events.append("hand over")

    monkeypatch.setattr(gd, "SideStream", RecordingStream)
    real_decode = gd.decode_jpegs
    monkeypatch.setattr(
        gd,
        "decode_jpegs",
        lambda data, device: events.append("decode") or real_decode(data, device),
    )
    bundle = gpu_decoded(imagenet, 0)
    bundle.train.set_epoch(0)
    assert len(batches(bundle.train)) == 4
    per_batch = ["wait for the decode stream", "decode on it", "decode", "hand over"]
    assert events == per_batch * 4


# ------------------------------------------------------------------------ a run, resumed
def imagenet_run(root: Path, name: str) -> list[str]:
    return [
        "experiment=quick/digits",
        "data=imagenet",
        "protocol=paper",  # a 12-image fake cannot hold out ImageNet's 10,000
        "data.decode=gpu",
        f"paths.data_dir={root.parent}",
        f"data.root={root}",
        "data.crop_size=16",
        "data.resize_size=20",
        "trainer.loader=classic",
        "trainer.num_workers=1",
        "trainer.batch_size=4",
        "trainer.eval_batch_size=8",
        "trainer.epochs=2",
        "trainer.deterministic=true",
        "trainer.progress=plain",
        "scheduler=step",
        "logger=none",
        f"experiment_name={name}",
    ]


def test_a_gpu_decode_run_resumes_mid_epoch_like_an_uninterrupted_one(
    tmp_path, train_in_process, results_dir
) -> None:
    root = tmp_path / "imagenet"
    write_fake_imagenet(root, classes=2, per_class=6, size=40, val_per_class=3)
    whole = train_in_process(imagenet_run(root, "whole"))
    args = imagenet_run(root, "split")
    with inject(Injection("SIGTERM", "step", 5)), pytest.raises(TrainingInterrupted):
        train_in_process(args)  # 3 steps per epoch: stopped at batch 2 of epoch 2
    split = expected_run_dir(results_dir, args)
    train_in_process(args)
    summary = json.loads((split / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert (summary["resumes"][0]["epoch"], summary["resumes"][0]["batch"]) == (2, 2)

    def records(run: Path) -> list[dict]:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return _without_times([json.loads(line) for line in lines])

    assert len(records(whole)) == 2
    assert records(split) == records(whole)


# ------------------------------------------------------------------- bad and oversized files
def test_an_oversized_image_is_refused_before_any_decoder_sees_it(tmp_path, monkeypatch) -> None:
    import numpy as np
    from PIL import Image

    from experiments.errors import DatasetUnavailableError

    fake = write_fake_imagenet(tmp_path, classes=2, per_class=2, size=16, val_per_class=2)
    Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(fake.val_files[1], format="JPEG")
    decoded_sizes = []
    real_decode = gd.decode_jpegs
    monkeypatch.setattr(
        gd,
        "decode_jpegs",
        lambda data, device: decoded_sizes.append(len(data)) or real_decode(data, device),
    )
    bundle = gpu_decoded(tmp_path, 0, max_image_pixels=1000)
    with pytest.raises(DatasetUnavailableError) as info:
        batches(bundle.test)
    assert str(fake.val_files[1]) in str(info.value)
    assert "40x30 = 1200 pixels, above data.max_image_pixels=1000" in str(info.value)
    assert decoded_sizes == []  # refused in the worker, from the header
    skipping = gpu_decoded(tmp_path, 1, max_image_pixels=1000, skip_bad_images=True)
    assert [len(y) for _, y in batches(skipping.test)] == [4]
    assert skipping.skipped_images() == 1


def test_unreadable_files_are_skipped_and_counted_when_asked(tmp_path) -> None:
    from experiments.errors import DatasetUnavailableError

    fake = write_fake_imagenet(tmp_path, classes=2, per_class=3, size=16, val_per_class=2)
    fake.train_files[2].write_bytes(b"not an image at all")
    with pytest.raises(DatasetUnavailableError, match="cannot be read as an image") as info:
        bundle = gpu_decoded(tmp_path, 0)
        bundle.train.set_epoch(0)
        batches(bundle.train)
    assert str(fake.train_files[2]) in str(info.value)
    bundle = gpu_decoded(tmp_path, 1, skip_bad_images=True)
    bundle.train.set_epoch(0)
    assert [len(y) for _, y in batches(bundle.train)] == [3, 3]
    assert bundle.skipped_images() == 1


def test_a_file_only_the_decoder_finds_corrupt_is_named(tmp_path) -> None:
    from experiments.errors import DatasetUnavailableError

    fake = write_fake_imagenet(tmp_path, classes=2, per_class=2, size=16, val_per_class=2)
    data = bytearray(fake.val_files[2].read_bytes())
    body = len(data) // 2  # a valid header, then garbage where the scan data was
    data[body:-2] = bytes(len(data) - body - 2)
    fake.val_files[2].write_bytes(bytes(data))
    bundle = gpu_decoded(tmp_path, 0)
    with pytest.raises(DatasetUnavailableError, match="cannot be decoded") as info:
        batches(bundle.test)
    assert str(fake.val_files[2]) in str(info.value)
