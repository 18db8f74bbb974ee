"""Checkpoints: atomic writes, an integrity check, a fallback copy, ``weights_only`` loads, and
RNG states as plain tensors/lists.

A checkpoint holds only tensors, numbers, strings, None, lists and dicts, so
``torch.load(..., weights_only=True)`` can read it without unpickling arbitrary objects.

Two checkpoints are kept, ``last.pt`` and ``prev.pt``, each with a ``<name>.sha256`` sidecar. A
save writes the new file completely (as ``next.pt``) before it touches the others, and moves
every sidecar into place before its checkpoint, so a process killed at any moment (or a disk
that fills up) always leaves at least one checkpoint whose digest matches its sidecar.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.rundir import PREVIOUS_CHECKPOINT, fsync_directory, write_atomically

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
STAGING_NAME = "next.pt"
DIGEST_SUFFIX = ".sha256"


class CheckpointError(RuntimeError):
    """A checkpoint file that must not be resumed from (corrupt, unverifiable or unsafe)."""


def digest_path(path: Path) -> Path:
    """The sidecar holding the sha256 of ``path``."""
    return path.with_name(path.name + DIGEST_SUFFIX)


def previous_path(path: Path) -> Path:
    """The fallback checkpoint kept beside ``path``."""
    return path.with_name(PREVIOUS_CHECKPOINT)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checkpoint(path: Path) -> None:
    """Raise CheckpointError unless ``path`` exists and matches the digest in its sidecar."""
    sidecar = digest_path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not sidecar.is_file():
        raise CheckpointError(f"checkpoint {path} has no checksum file {sidecar.name}")
    expected = sidecar.read_text().strip()
    actual = file_sha256(path)
    if actual != expected:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated: its sha256 is {actual[:12]}..., "
            f"{sidecar.name} records {expected[:12]}..."
        )


def _is_verified(path: Path) -> bool:
    try:
        verify_checkpoint(path)
    except CheckpointError:
        return False
    return True


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` and keep the checkpoint it replaces as ``prev.pt``.

    A failure (a full disk, a kill) leaves ``path`` and ``prev.pt`` as they were, or with the
    previous checkpoint already moved to ``prev.pt``: never without a verified checkpoint.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    staging = path.with_name(STAGING_NAME)
    write_atomically(staging, lambda handle: handle.write(data), binary=True)
    previous = previous_path(path)
    if _is_verified(path):
        write_atomically(digest_path(previous), lambda f: f.write(digest_path(path).read_text()))
        os.replace(path, previous)
    new_digest = hashlib.sha256(data).hexdigest() + "\n"
    write_atomically(digest_path(path), lambda f: f.write(new_digest))
    os.replace(staging, path)
    fsync_directory(path.parent)


def load_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Read one checkpoint with ``weights_only=True``; CheckpointError if it is not safe data."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"checkpoint {path} was refused: it holds objects other than tensors and plain "
            "data, which could run code when loaded (torch.load with weights_only=True "
            f"rejected it: {str(error).splitlines()[0]})"
        ) from error
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"checkpoint {path} has format {found!r}; this runner reads format "
            f"{CHECKPOINT_FORMAT} (delete the run directory to start it afresh)"
        )
    return state


def load_latest_checkpoint(
    path: Path, map_location: torch.device | str = "cpu"
) -> tuple[Path, dict[str, Any]] | None:
    """The newest verified checkpoint among ``path`` and its ``prev.pt``, with its path.

    Every rejected file is logged as a warning; None (and an error line) when neither is usable.
    """
    rejected = []
    for candidate in (path, previous_path(path)):
        if not candidate.is_file():
            continue
        try:
            verify_checkpoint(candidate)
            return candidate, load_checkpoint(candidate, map_location=map_location)
        except CheckpointError as error:
            log.warning("not resuming from %s: %s", candidate.name, error)
            rejected.append(candidate.name)
    if rejected:
        log.error(
            "no usable checkpoint in %s (rejected: %s): this run restarts from scratch",
            path.parent,
            ", ".join(rejected),
        )
    return None


def capture_rng_state() -> dict[str, Any]:
    """Every RNG this process uses (torch CPU, CUDA, numpy, python) as tensors and lists."""
    numpy_state = np.random.get_state(legacy=False)  # noqa: NPY002 - the global RNG itself
    python_version, python_internal, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "python": {
            "version": python_version,
            "internal": list(python_internal),
            "gauss": python_gauss,
        },
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng_state``; CUDA states are restored for the devices present."""
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state["cuda"]
    if cuda_states and torch.cuda.is_available():
        for index, cuda_state in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)
    numpy_state = state["numpy"]
    np.random.set_state(  # noqa: NPY002 - the global RNG itself
        {
            "bit_generator": numpy_state["bit_generator"],
            "state": {
                "key": numpy_state["key"].numpy().astype(np.uint32),
                "pos": numpy_state["pos"],
            },
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    python_state = state["python"]
    random.setstate(
        (python_state["version"], tuple(python_state["internal"]), python_state["gauss"])
    )
