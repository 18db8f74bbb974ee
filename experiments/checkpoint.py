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
import logging
import os
import pickle
import random
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from experiments.rundir import PREVIOUS_CHECKPOINT, fsync_directory, write_atomically

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
# The key of the schedule's record stream in checkpoints written before it was "stream_records".
LEGACY_RECORDS_KEY = "autodrop_records"
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


class _HashingFile:
    """A binary file that also feeds every byte written to a sha256, so a checkpoint is hashed
    as it is written, never read back."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.error: OSError | None = None

    def write(self, data: bytes | memoryview) -> int:
        self.digest.update(data)
        try:
            return self.handle.write(data)
        except OSError as error:  # torch's writer reports it as a bare RuntimeError: keep it
            self.error = error
            raise

    def flush(self) -> None:
        self.handle.flush()


def save_checkpoint(path: Path, state: dict[str, Any], *, current_digest: str | None = None) -> str:
    """Write ``state`` to ``path`` and keep the checkpoint it replaces as ``prev.pt``; return
    the new file's sha256 (hex).

    ``current_digest``: the sha256 of the ``path`` on disk, as this process wrote it. When
    given, that file becomes ``prev.pt`` without being read; otherwise (the first save of a
    process) it is verified against its sidecar first, so an unverified file never replaces a
    good ``prev.pt``. A failure (a full disk, a kill) leaves ``path`` and ``prev.pt`` as they
    were, or with the previous checkpoint already moved to ``prev.pt``: never without a
    verified checkpoint.
    """
    staging = path.with_name(STAGING_NAME)
    hashed: list[_HashingFile] = []

    def write(handle: BinaryIO) -> None:
        hashed.append(_HashingFile(handle))
        try:
            torch.save(state, hashed[0])
        except RuntimeError:
            if hashed[0].error is not None:  # a full disk stays an OSError (ENOSPC, EFBIG)
                raise hashed[0].error from None
            raise

    write_atomically(staging, write, binary=True)  # temp file, fsync, rename
    new_digest = hashed[0].digest.hexdigest()
    previous = previous_path(path)
    if path.is_file():
        if current_digest is not None:
            write_atomically(digest_path(previous), lambda f: f.write(current_digest + "\n"))
            os.replace(path, previous)
        elif _is_verified(path):
            sidecar = digest_path(path).read_text()
            write_atomically(digest_path(previous), lambda f: f.write(sidecar))
            os.replace(path, previous)
    write_atomically(digest_path(path), lambda f: f.write(new_digest + "\n"))
    os.replace(staging, path)
    fsync_directory(path.parent)
    return new_digest


class CheckpointSchedule:
    """When to checkpoint at the end of an epoch: every ``every_epochs`` epochs (0: no epoch
    rule), and also once ``every_minutes`` have passed since the last checkpoint (0: no time
    rule); always after the last epoch. (A stop signal checkpoints wherever it stops.)"""

    def __init__(self, every_epochs: int, every_minutes: float, last_epoch: int) -> None:
        self.every_epochs, self.every_minutes, self.last_epoch = (
            every_epochs,
            every_minutes,
            last_epoch,
        )
        self.last_save = time.monotonic()

    def due(self, epoch: int) -> bool:
        minutes = (time.monotonic() - self.last_save) / 60.0
        return (
            (self.every_epochs > 0 and epoch % self.every_epochs == 0)
            or epoch == self.last_epoch
            or (self.every_minutes > 0 and minutes >= self.every_minutes)
        )

    def saved(self) -> None:
        self.last_save = time.monotonic()


def host_copy(value: Any) -> Any:
    """``value`` with every tensor copied to (unshared) CPU memory and every list and dict
    rebuilt, so training can go on changing the originals while the copy is written."""
    if isinstance(value, torch.Tensor):
        value = value.detach()
        return value.clone() if value.device.type == "cpu" else value.to("cpu")
    if isinstance(value, dict):
        return {key: host_copy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(host_copy(item) for item in value)
    return value


class CheckpointWriter:
    """Saves the checkpoints of one run, each in a background thread once its tensors are in
    host memory, so the next epoch trains while the file is serialised, hashed and fsynced.

    At most one write is in flight: ``save`` waits for the previous one first. ``wait``
    re-raises what a background write raised (a full disk, say); call it (or ``close``) before
    the run counts as finished. The digest of the last file written stays in memory, so a save
    never re-reads the previous checkpoint.
    """

    def __init__(self, path: Path, *, background: bool = True) -> None:
        self.path = path
        self.background = background
        self.digest: str | None = None
        self.last_save_s: float | None = None  # wall seconds of the last completed write
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, state: dict[str, Any]) -> None:
        self.wait()
        snapshot = host_copy(state)
        if not self.background:
            self._write(snapshot)
            self._raise_pending()
            return
        self._thread = threading.Thread(
            target=self._write, args=(snapshot,), name="checkpoint-writer"
        )
        self._thread.start()

    def _write(self, snapshot: dict[str, Any]) -> None:
        start = time.perf_counter()
        try:
            self.digest = save_checkpoint(self.path, snapshot, current_digest=self.digest)
        except BaseException as error:  # handed to the training thread by wait()
            self._error = error
            return
        self.last_save_s = time.perf_counter() - start

    def wait(self) -> None:
        """Block until the write in flight (if any) is on disk; re-raise its error."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._raise_pending()

    def _raise_pending(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


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
    if LEGACY_RECORDS_KEY in state:  # written before the schedule contract named its stream
        state["stream_records"] = state.pop(LEGACY_RECORDS_KEY)
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
    """Every RNG this process uses (torch CPU, this process's CUDA device, numpy, python) as
    tensors and lists."""
    numpy_state = np.random.get_state(legacy=False)  # noqa: NPY002 - the global RNG itself
    python_version, python_internal, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        # One state per process: the device it trains on (each rank stores its own).
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_initialized() else [],
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


def rng_state_on_cpu(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with every tensor on the CPU: RNG states are host data wherever a checkpoint
    was mapped to (``torch.set_rng_state`` and numpy need CPU tensors)."""
    tensors_on = {t.device.type for t in _tensors(state)}
    if "meta" in tensors_on:
        raise CheckpointError(
            "RNG states were loaded to the meta device and hold no values: load checkpoints "
            "with map_location='cpu'"
        )
    return host_copy(state)


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _tensors(item)]
    if isinstance(value, list | tuple):
        return [t for item in value for t in _tensors(item)]
    return []


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng_state``. The CUDA state goes to this process's current device
    (a checkpoint of the older format, with every visible device's state, gives the state at
    the current device's index)."""
    state = rng_state_on_cpu(state)
    torch.set_rng_state(state["torch"])
    cuda_states = state["cuda"]
    if cuda_states and torch.cuda.is_available():
        device = torch.cuda.current_device()
        index = device if len(cuda_states) > 1 and device < len(cuda_states) else 0
        torch.cuda.set_rng_state(cuda_states[index], device)
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
