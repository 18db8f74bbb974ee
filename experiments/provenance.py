"""Where a run ran: package versions, hardware, git commit (for summary.json)."""

from __future__ import annotations

import hashlib
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


def _git(args: list[str], where: Path) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=where, capture_output=True, timeout=30,
                                check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.decode(errors="replace") if result.returncode == 0 else None


def code_version(repo: Path | None = None) -> dict[str, object]:
    """The code a run ran: commit, whether the tree had changes, and a digest of those changes.

    ``changes`` hashes ``git diff HEAD`` and the untracked, not ignored files, so two launches
    from the same dirty tree agree and any edit in between is seen. Outside git all are None.
    """
    where = repo or Path(__file__).resolve().parent
    commit = git_commit(where)
    if commit is None:
        return {"commit": None, "dirty": None, "changes": None}
    root = Path((_git(["rev-parse", "--show-toplevel"], where) or str(where)).strip())
    digest = hashlib.sha256((_git(["diff", "HEAD", "--binary"], root) or "").encode())
    untracked = (_git(["ls-files", "--others", "--exclude-standard", "-z"], root) or "")
    for name in sorted(n for n in untracked.split("\0") if n):
        digest.update(name.encode())
        try:
            digest.update((root / name).read_bytes())
        except OSError:
            pass
    dirty = digest.hexdigest() != hashlib.sha256(b"").hexdigest()
    return {"commit": commit, "dirty": dirty, "changes": digest.hexdigest() if dirty else None}
