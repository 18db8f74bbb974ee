"""Process-level settings of a run: device, precision, determinism, seeds."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
import torch

# cuBLAS needs this before its first use to be deterministic (CUDA docs, "Reproducibility").
CUBLAS_WORKSPACE = ":4096:8"


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


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: plain fp32). ``auto`` is bf16 on GPU and fp32 on CPU."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def autocast_factory(
    precision: str, device: torch.device
) -> Callable[[], AbstractContextManager[object]]:
    """A zero-argument callable returning the forward pass's autocast context."""
    dtype = autocast_dtype(precision, device)
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def configure_determinism(deterministic: bool, cudnn_benchmark: bool) -> None:
    """Deterministic kernels on request (opt-in: slower); otherwise cuDNN autotuning as asked."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = cudnn_benchmark


def configure_cpu_threads(requested: int, processes: int) -> None:
    """Intra-op threads: ``requested`` if > 0, else torch's default shared by the processes.

    Several processes each using every core oversubscribe the CPU and slow down many-fold.
    """
    if requested > 0:
        torch.set_num_threads(requested)
    elif processes > 1:
        torch.set_num_threads(max(1, torch.get_num_threads() // processes))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - libraries may draw from the global RNG
    torch.manual_seed(seed)  # seeds every CUDA device too
