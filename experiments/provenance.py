"""Where a run ran: package versions, hardware, git commit (for summary.json)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

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
    import torch

    versions["cuda"] = torch.version.cuda
    return versions


def hardware_description(device: Any, world_size: int) -> str:
    """E.g. ``8 x NVIDIA H100 80GB HBM3`` or ``cpu: x86_64, 2 threads``."""
    import torch

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
        result = subprocess.run(
            ["git", *args], cwd=where, capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.decode(errors="replace") if result.returncode == 0 else None


# The code a training run runs: the packages it imports and the config tree it composes (the
# runner never imports scripts/ or tests/), and within them only source and config files.
CODE_PATHS = ("autodrop", "models", "experiments", "conf")
CODE_SUFFIXES = (".py", ".yaml", ".yml")
SHOWN_FILES = 5  # changed files a message names


def _is_code(name: str, root: Path, excluded: tuple[Path, ...]) -> bool:
    """A source or config file of the code paths, outside hidden folders (a run's ``.hydra/``,
    ``.ipynb_checkpoints/``) and outside ``excluded`` folders (results and data kept in the
    tree): results, checkpoints, notebooks and data never count as code."""
    path = Path(name)
    if path.suffix not in CODE_SUFFIXES or any(part.startswith(".") for part in path.parts):
        return False
    real = (root / path).resolve()
    return not any(real == folder or folder in real.parents for folder in excluded)


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except FileNotFoundError:
        return "deleted"
    except OSError as error:
        return f"unreadable ({error.strerror})"


def code_version(
    repo: Path | None = None, exclude: tuple[str | Path, ...] = ()
) -> dict[str, object]:
    """The code a run ran: the commit, and the source and config files of ``CODE_PATHS`` that
    differ from it (edited, added or deleted tracked files and untracked ones), each with a
    digest of its content (``files``), summed up in ``changes``. ``exclude``: folders never
    counted (the run's results and data directories, wherever they lie). Two launches from the
    same tree agree, and any edit of the code in between is seen and can be named. Outside git
    all are None."""
    where = repo or Path(__file__).resolve().parent
    commit = git_commit(where)
    if commit is None:
        return {"commit": None, "dirty": None, "changes": None, "files": None}
    root = Path((_git(["rev-parse", "--show-toplevel"], where) or str(where)).strip())
    listed = [
        _git(["diff", "HEAD", "--name-only", "--no-renames", "-z", "--", *CODE_PATHS], root),
        _git(["ls-files", "--others", "--exclude-standard", "-z", "--", *CODE_PATHS], root),
    ]
    excluded = tuple(Path(folder).resolve() for folder in exclude)
    names = sorted({name for text in listed for name in (text or "").split("\0") if name})
    files = {name: _file_digest(root / name) for name in names if _is_code(name, root, excluded)}
    changes = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return {
        "commit": commit,
        "dirty": bool(files),
        "changes": changes if files else None,
        "files": files,
    }


def describe_code_version(code: dict[str, object]) -> str:
    """``<commit>`` or ``<commit> + uncommitted changes in a.py, b.yaml``."""
    commit = str(code.get("commit") or "no git")[:12]
    files = code.get("files")
    if code.get("dirty") and isinstance(files, dict) and files:
        return f"{commit} + uncommitted changes in {_first_files(sorted(files))}"
    if code.get("dirty"):
        return f"{commit} + uncommitted changes {str(code.get('changes'))[:12]}"
    return commit


def code_changes(
    saved: dict[str, object], current: dict[str, object], repo: Path | None = None
) -> str:
    """What differs between two code versions, naming the first few changed files: those
    committed in between (when git still knows the older commit) and those edited since."""
    parts = []
    old, new = saved.get("commit"), current.get("commit")
    if old != new:
        parts.append(f"commit {str(old)[:12]} -> {str(new)[:12]}")
        where = repo or Path(__file__).resolve().parent
        between = _git(["diff", "--name-only", "-z", f"{old}", f"{new}", "--", *CODE_PATHS], where)
        if old and new and between:
            parts.append(f"committed in between: {_first_files(between.split(chr(0)))}")
    saved_files = saved.get("files") if isinstance(saved.get("files"), dict) else {}
    current_files = current.get("files") if isinstance(current.get("files"), dict) else {}
    edited = sorted(
        name
        for name in set(saved_files) | set(current_files)
        if saved_files.get(name) != current_files.get(name)
    )
    if edited:
        parts.append(f"files that differ: {_first_files(edited)}")
    elif saved.get("changes") != current.get("changes"):
        parts.append("uncommitted changes differ")
    return "; ".join(parts) or "the code versions differ"


def _first_files(names: list[str]) -> str:
    names = [name for name in names if name]
    shown = ", ".join(names[:SHOWN_FILES])
    return f"{shown}, ... ({len(names)} files)" if len(names) > SHOWN_FILES else shown
