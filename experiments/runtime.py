"""Process-level settings of a run: device, precision, determinism, seeds."""

from __future__ import annotations

import contextlib
import os
import random
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace

import numpy as np
import torch

from experiments.settings import RunSettings

# cuBLAS needs this before its first use to be deterministic (CUDA docs, "Reproducibility").
CUBLAS_WORKSPACE = ":4096:8"
INDUCTOR_DETERMINISTIC_ENV = "TORCHINDUCTOR_DETERMINISTIC"
# The time rule of checkpoints on CUDA (trainer.checkpoint_every_minutes null): a kill loses at
# most this much training; a stop signal and the end of the run always checkpoint.
GPU_CHECKPOINT_MINUTES = 10.0


def select_device(accelerator: str, local_rank: int) -> torch.device:
    """``auto``: the rank's GPU when CUDA is available, else the CPU."""
    if accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(
            f"trainer.accelerator={accelerator!r} but CUDA is not available here: "
            "use trainer.accelerator=auto or cpu"
        )
    visible = torch.cuda.device_count()
    # One visible GPU per process (srun --gpus-per-task, CUDA_VISIBLE_DEVICES per task): cuda:0.
    index = 0 if visible == 1 else local_rank
    if index >= visible:
        raise ValueError(
            f"local rank {local_rank} has no GPU: only {visible} visible "
            "(trainer.devices is more than the GPUs of this node?)"
        )
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def launch_device_type(accelerator: str) -> str:
    """``cpu`` or ``cuda``: the type of device ``select_device`` will pick for ``accelerator``,
    known before any process picks it (a launch resolves the run's settings with it)."""
    if accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
        return "cpu"
    return "cuda"


def resolved_precision(precision: str, device_type: str) -> str:
    """``bf16`` or ``fp32``: the precision ``trainer.precision`` trains in on a device of this
    type (``auto`` is bf16 on GPU and fp32 on CPU)."""
    if precision == "bf16" or (precision == "auto" and device_type == "cuda"):
        return "bf16"
    return "fp32"


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: plain fp32); see ``resolved_precision``."""
    return torch.bfloat16 if resolved_precision(precision, device.type) == "bf16" else None


def autocast_factory(
    precision: str, device: torch.device
) -> Callable[[], AbstractContextManager[object]]:
    """A zero-argument callable returning the forward pass's autocast context."""
    dtype = autocast_dtype(precision, device)
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def configure_determinism(deterministic: bool, cudnn_benchmark: bool) -> None:
    """Deterministic kernels on request (opt-in: slower); otherwise cuDNN autotuning as asked.

    Deterministic runs also make compiled code deterministic: inductor then skips the on-device
    benchmarking that picks among kernel configurations of different numerics (a reduction's
    block sizes decide its summation order), so a resumed process compiles the same kernels.
    That stays on for later jobs of a sweep run in the same process (slower, never wrong).
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        _inductor_deterministic()
        # warn_only: torch flags every CUDA adaptive_avg_pool2d backward as nondeterministic
        # (it uses atomicAdd) and would stop the run, yet the models' global pooling gives each
        # input exactly one contribution, which is deterministic; other flagged ops warn.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = cudnn_benchmark


def _inductor_deterministic() -> None:
    # Importing inductor's config takes seconds: set the attribute only where it is loaded
    # already, else the variable it reads when loaded.
    config = sys.modules.get("torch._inductor.config")
    if config is not None:
        config.deterministic = True
    else:
        os.environ[INDUCTOR_DETERMINISTIC_ENV] = "1"


def cpu_threads_for(requested: int, processes: int) -> int:
    """Intra-op threads per process: ``requested`` if > 0, else this process's torch default
    shared by the processes (several processes each using every core oversubscribe the CPU and
    slow down many-fold)."""
    if requested > 0:
        return requested
    return max(1, torch.get_num_threads() // max(1, processes))


def configure_cpu_threads(requested: int, processes: int) -> None:
    """Set the intra-op threads of this process (``cpu_threads_for``)."""
    torch.set_num_threads(cpu_threads_for(requested, processes))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - libraries may draw from the global RNG
    torch.manual_seed(seed)  # seeds every CUDA device too


# trainer.num_workers: this value asks for the CPUs available to the process minus two.
AUTO_WORKERS = -1


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a SLURM/cgroup allocation, taskset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def data_workers(requested: int, processes_sharing_cpus: int = 1) -> int:
    """DataLoader workers: ``requested``, or for ``AUTO_WORKERS`` this process's share of the
    available CPUs minus two (the training process and the pinning thread), at least one."""
    if requested != AUTO_WORKERS:
        return requested
    return max(1, available_cpus() // max(1, processes_sharing_cpus) - 2)


def processes_per_node(world_size: int, concurrent_jobs: int = 1) -> int:
    """Training processes sharing this node's CPUs: this job's ranks on the node (torchrun's
    LOCAL_WORLD_SIZE, SLURM's tasks per node, else the whole world) times the jobs running
    side by side (a sweep sharing the node's GPUs)."""
    local = os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("SLURM_NTASKS_PER_NODE")
    ranks = int(local) if local and local.isdigit() else world_size
    return max(1, ranks) * max(1, concurrent_jobs)


def use_channels_last(requested: bool | None, device: torch.device) -> bool:
    """``trainer.channels_last``: null (auto) is on for CUDA (bf16 convolutions in NHWC run on
    tensor cores without layout transposes) and off on the CPU."""
    return device.type == "cuda" if requested is None else bool(requested)


def use_compile(requested: bool | None, device: torch.device) -> bool:
    """``trainer.compile``: null (auto) is on for CUDA (fused kernels, fewer launches) and off on
    the CPU, where compiling costs minutes and a launch costs nothing."""
    return device.type == "cuda" if requested is None else bool(requested)


def use_fused_optimizer(device: torch.device) -> bool:
    """Whether SGD and Adam use torch's fused kernels (``fused=True``): on CUDA. torch also has
    them on the CPU, but the CPU keeps the single-tensor loop its recorded results came from."""
    return torch.device(device).type == "cuda"


def checkpoint_cadence(
    every_epochs: int | None, every_minutes: float | None, device: torch.device
) -> tuple[int, float]:
    """(epochs, minutes) between checkpoints, 0 meaning that rule is off; null (auto) is every
    epoch on the CPU and every ``GPU_CHECKPOINT_MINUTES`` on CUDA, where a CIFAR epoch takes
    seconds and each checkpoint copies hundreds of MB. The last epoch and a stop signal always
    checkpoint, whatever the cadence (experiments.job)."""
    cuda = device.type == "cuda"
    epochs = (0 if cuda else 1) if every_epochs is None else int(every_epochs)
    minutes = (GPU_CHECKPOINT_MINUTES if cuda else 0.0) if every_minutes is None else every_minutes
    return epochs, float(minutes)


def with_device_defaults(
    settings: RunSettings, device: torch.device, processes_sharing_cpus: int
) -> RunSettings:
    """``settings`` with their device-dependent trainer settings resolved for ``device``:
    ``accelerator`` (the device type), ``precision`` (bf16 or fp32), ``channels_last`` and
    ``compile`` (null: auto), ``cpu_threads`` (0: a share of the default), ``num_workers`` (-1:
    auto) and the checkpoint cadence (null: by device).

    A launch resolves its settings once with this (``experiments.train``), records the resolved
    values (``experiments.run_identity``: the setup and the rounding keys) and trains exactly them;
    resolving resolved settings changes nothing."""
    trainer = settings.trainer
    every_epochs, every_minutes = checkpoint_cadence(
        trainer.checkpoint_every_epochs, trainer.checkpoint_every_minutes, device
    )
    resolved = replace(
        trainer,
        accelerator=device.type,
        precision=resolved_precision(str(trainer.precision), device.type),
        channels_last=use_channels_last(trainer.channels_last, device),
        compile=use_compile(trainer.compile, device),
        cpu_threads=cpu_threads_for(trainer.cpu_threads, processes_sharing_cpus),
        num_workers=data_workers(trainer.num_workers, processes_sharing_cpus),
        checkpoint_every_epochs=every_epochs,
        checkpoint_every_minutes=every_minutes,
    )
    return replace(settings, trainer=resolved)
