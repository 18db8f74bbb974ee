"""Where a run ran: package versions, hardware, git commit (for summary.json)."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

import torch

VERSIONED_PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "hydra-core",
    "omegaconf",
    "wandb",
    "autodrop",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["cuda"] = torch.version.cuda
    return versions


def hardware_description(device: torch.device, world_size: int) -> str:
    """E.g. ``8 x NVIDIA H100 80GB HBM3`` or ``cpu: x86_64, 2 threads``."""
    if device.type == "cuda":
        return f"{world_size} x {torch.cuda.get_device_name(device)}"
    processes = f"{world_size} processes x " if world_size > 1 else ""
    return f"cpu: {processes}{platform.machine()}, {torch.get_num_threads()} threads"


def git_commit(repo: Path | None = None) -> str | None:
    """HEAD of the repository holding this code (None outside git or without git)."""
    where = repo or Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None
