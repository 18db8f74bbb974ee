"""The GPU path's defaults and data path, tested on CPU: uint8 ImageNet worker output equals the
float path once normalised on the device; data.decode=gpu is refused without CUDA; the
device-dependent defaults (channels_last, num_workers) resolve; compiled models keep one graph
per batch shape; torch's SyncBatchNorm still refuses CPU tensors (why GlobalBatchNorm stays)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from experiments.checkpoint import CheckpointSchedule
from experiments.config import compose_config
from experiments.data import Loading
from experiments.data.datasets import imagenet
from experiments.data.imagenet import build_imagenet
from experiments.data.staging import OnDeviceNormalize, stage_batches
from experiments.job import compile_model
from experiments.optimizers import build_optimizer
from experiments.running.sync_batchnorm import GlobalBatchNorm
from experiments.runtime import (
    AUTO_WORKERS,
    GPU_CHECKPOINT_MINUTES,
    INDUCTOR_DETERMINISTIC_ENV,
    checkpoint_cadence,
    data_workers,
    use_channels_last,
    use_compile,
    use_fused_optimizer,
    with_device_defaults,
)
from experiments.settings import Component, RunSettings
from tests.conftest import data_bundle
from tests.fake_datasets import write_fake_imagenet


def _epoch(bundle, epoch: int = 0):
    bundle.train.set_epoch(epoch)
    return list(bundle.train), list(bundle.test)


@pytest.mark.parametrize("workers", [0, 2])
def test_uint8_worker_output_equals_the_float_path(tmp_path, workers) -> None:
    write_fake_imagenet(tmp_path, classes=2, per_class=5, size=48)
    folders = imagenet(str(tmp_path), crop_size=32, resize_size=36)
    loading = Loading(
        batch_size=4,
        eval_batch_size=3,
        device=torch.device("cpu"),
        seed=3,
        loader="classic",
        num_workers=workers,
    )
    as_uint8 = build_imagenet(folders, loading, output="uint8")
    as_float = build_imagenet(folders, loading, output="float32")
    for uint8_batches, float_batches in zip(_epoch(as_uint8), _epoch(as_float), strict=True):
        assert len(uint8_batches) == len(float_batches) > 1
        for (xu, yu), (xf, yf) in zip(uint8_batches, float_batches, strict=True):
            assert xu.dtype == xf.dtype == torch.float32
            assert torch.equal(xu, xf) and torch.equal(yu, yf)


TINY_LOADING = {"batch_size": 2, "eval_batch_size": 2, "device": "cpu", "seed": 0}
TINY_LOADING |= {"loader": "classic", "num_workers": 0}  # batches of two, read in this process


def test_the_workers_ship_uint8(tmp_path) -> None:
    write_fake_imagenet(tmp_path, classes=2, per_class=2, size=40)
    bundle = data_bundle(
        "imagenet", root=str(tmp_path), crop_size=32, resize_size=32, **TINY_LOADING
    )
    images, _ = next(iter(bundle.train.loader))  # what crosses from the workers
    assert images.dtype == torch.uint8 and images.shape == (2, 3, 32, 32)


def test_staging_normalises_and_converts_layout() -> None:
    batch = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8), torch.tensor([0, 1])
    norm = OnDeviceNormalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.device("cpu"))
    ((images, labels),) = list(
        stage_batches([batch], torch.device("cpu"), normalize=norm, channels_last=True)
    )
    expected = (batch[0].float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(images, expected)
    assert images.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(TypeError, match="expected uint8"):
        norm(expected)


def test_gpu_decoding_is_refused_without_cuda(tmp_path) -> None:
    write_fake_imagenet(tmp_path, classes=2, per_class=2)
    with pytest.raises(ValueError, match=r"decode='gpu' is invalid here: it needs a CUDA device"):
        data_bundle("imagenet", root=str(tmp_path), decode="gpu", **TINY_LOADING)
    with pytest.raises(ValueError, match=r"decode='nvjpeg' is invalid: .*\['cpu', 'gpu'\]"):
        imagenet(str(tmp_path), decode="nvjpeg")


def test_device_dependent_defaults(monkeypatch) -> None:
    assert use_channels_last(None, torch.device("cuda", 0)) is True
    assert use_channels_last(None, torch.device("cpu")) is False
    assert use_channels_last(False, torch.device("cuda", 0)) is False
    assert use_compile(None, torch.device("cuda", 0)) is True
    assert use_compile(None, torch.device("cpu")) is False
    assert use_compile(False, torch.device("cuda", 0)) is False
    assert use_compile(True, torch.device("cpu")) is True
    assert use_fused_optimizer(torch.device("cuda", 0)) and not use_fused_optimizer("cpu")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert data_workers(AUTO_WORKERS) == 14
    assert data_workers(AUTO_WORKERS, processes_sharing_cpus=8) == 1
    assert data_workers(3) == 3


def test_compiled_model_keeps_one_graph_per_batch_shape() -> None:
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(2, 3, 8, 8))  # materialise the lazy layer
    compiled = compile_model(model, backend="eager")
    graphs_after = []
    for _epoch_index in range(3):
        model.train()
        for batch in (8, 8, 5):  # a short last batch, as without drop_last
            compiled(torch.randn(batch, 3, 8, 8)).sum().backward()
        model.eval()
        with torch.no_grad():
            for batch in (16, 3):  # the eval set's short last batch
                compiled(torch.randn(batch, 3, 8, 8))
        graphs_after.append(counters["stats"]["unique_graphs"])
    assert graphs_after[0] == graphs_after[1] == graphs_after[2]  # nothing after epoch 1
    assert graphs_after[0] <= 4  # train full/short, eval full/short


def _sync_bn_on_cpu(rank: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(rank))
        try:
            nn.SyncBatchNorm(3)(x).sum().backward()
            results.put((rank, "torch ok"))
        except ValueError as error:
            results.put((rank, f"torch refused: {error}"))
        ours = GlobalBatchNorm(3)
        y = ours(x.requires_grad_())
        y.sum().backward()
        results.put((rank, f"ours ok {tuple(y.shape)}"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two gloo processes: ~10 s
def test_torch_sync_batchnorm_refuses_cpu_so_global_batchnorm_stays(tmp_path) -> None:
    context = mp.get_context("spawn")
    results = context.Queue()
    mp.start_processes(
        _sync_bn_on_cpu, args=(str(tmp_path / "init"), results), nprocs=2, start_method="spawn"
    )
    messages = sorted(results.get(timeout=60) for _ in range(4))
    torch_lines = [m for _, m in messages if m.startswith("torch")]
    # If this fails because torch accepts CPU tensors, GlobalBatchNorm can go (issue 14, item 3).
    assert all("expected input tensor to be on GPU" in m for m in torch_lines), torch_lines
    assert [m for _, m in messages if m.startswith("ours")] == ["ours ok (4, 3, 5, 5)"] * 2


def test_deterministic_mode_warns_on_flagged_cuda_ops_instead_of_stopping(monkeypatch) -> None:
    import sys

    from experiments.runtime import configure_determinism

    monkeypatch.delenv(INDUCTOR_DETERMINISTIC_ENV, raising=False)
    inductor = sys.modules.get("torch._inductor.config")
    # Saved and set back by assignment: undoing a patch of torch's config module can delete the
    # entry, which hides it from every later compile in this process.
    saved = inductor.deterministic if inductor is not None else None
    if inductor is not None:
        inductor.deterministic = False
    try:
        configure_determinism(True, cudnn_benchmark=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        # Compiled code too: inductor picks no kernel configuration by timing it.
        if inductor is not None:
            assert inductor.deterministic is True
        else:
            assert os.environ[INDUCTOR_DETERMINISTIC_ENV] == "1"
    finally:
        configure_determinism(False, cudnn_benchmark=True)
        if inductor is not None:
            inductor.deterministic = saved
    assert not torch.are_deterministic_algorithms_enabled()


def test_resolved_defaults_for_cuda_and_cpu() -> None:
    """What a run gets when it leaves the device-dependent settings at null (no GPU needed: the
    resolution reads only the device's type)."""
    cfg = RunSettings.from_config(
        compose_config(["experiment=quick/digits", "trainer.num_workers=2"])
    )
    cuda = with_device_defaults(cfg, torch.device("cuda", 0), 1).trainer
    cpu = with_device_defaults(cfg, torch.device("cpu"), 1).trainer
    assert (cuda.compile, cuda.channels_last) == (True, True)
    assert (cpu.compile, cpu.channels_last) == (False, False)
    assert (cuda.checkpoint_every_epochs, cuda.checkpoint_every_minutes) == (
        0,
        GPU_CHECKPOINT_MINUTES,
    )
    assert (cpu.checkpoint_every_epochs, cpu.checkpoint_every_minutes) == (1, 0.0)
    assert checkpoint_cadence(5, None, torch.device("cuda", 0)) == (5, GPU_CHECKPOINT_MINUTES)
    assert checkpoint_cadence(None, 0, torch.device("cuda", 0)) == (0, 0.0)


def test_time_cadence_checkpoints_on_time_and_after_the_last_epoch(monkeypatch) -> None:
    clock = [0.0]
    monkeypatch.setattr("experiments.checkpoint.time.monotonic", lambda: clock[0])
    when = CheckpointSchedule(0, 10.0, last_epoch=50)
    saved = []
    for epoch in range(1, 51):
        clock[0] += 110.0  # a 110 s epoch: the 10-minute rule fires every 6th epoch
        if when.due(epoch):
            saved.append(epoch)
            when.saved()
    assert saved == [6, 12, 18, 24, 30, 36, 42, 48, 50]
    assert [e for e in range(1, 5) if CheckpointSchedule(1, 0.0, 4).due(e)] == [1, 2, 3, 4]


def test_sgd_and_adam_are_fused_where_the_runner_asks(monkeypatch) -> None:
    """On the CPU the runner keeps torch's default (the single-tensor loop its recorded numbers
    came from); where ``use_fused_optimizer`` says so (CUDA), torch's fused kernels. torch has
    them on the CPU too, which lets this test step one."""
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    sgd = RunSettings.from_config(compose_config(["experiment=quick/digits"])).optimizer
    adam = Component("adam")
    assert build_optimizer(sgd, model, steps_per_epoch=1).param_groups[0]["fused"] is None
    monkeypatch.setattr("experiments.optimizers.use_fused_optimizer", lambda device: True)
    fused = build_optimizer(sgd, model, steps_per_epoch=1)
    assert fused.param_groups[0]["fused"] is True
    assert build_optimizer(adam, model, steps_per_epoch=1).param_groups[0]["fused"] is True
    reference = torch.optim.SGD(
        [p.detach().clone().requires_grad_() for p in model.parameters()],
        lr=sgd.options["lr"],
        momentum=sgd.options["momentum"],
        nesterov=sgd.options["nesterov"],
        weight_decay=sgd.options["weight_decay"],
    )
    inputs, labels = torch.randn(16, 4), torch.randint(0, 3, (16,))
    for _ in range(3):
        for optimizer, params in ((fused, list(model.parameters())), (reference, None)):
            weights = params or reference.param_groups[0]["params"]
            optimizer.zero_grad()
            out = torch.tanh(inputs @ weights[0].T + weights[1]) @ weights[2].T + weights[3]
            nn.functional.cross_entropy(out, labels).backward()
            optimizer.step()
    for mine, theirs in zip(model.parameters(), reference.param_groups[0]["params"], strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-7)
