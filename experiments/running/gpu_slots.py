"""One GPU (or a few) per job when a sweep's jobs share a node: a pool of slots claimed with
``flock``.

A node's ``gpus`` GPUs form ``gpus // per_job`` slots (GPUs 0..per_job-1, then the next
per_job, ...). A job claims a free slot by taking an exclusive, non-blocking ``flock`` on the
slot's file in a directory every job of the node shares, waits while every slot is taken,
and restricts itself to the slot's GPUs through ``CUDA_VISIBLE_DEVICES`` before anything
initialises CUDA (the training then runs in a fresh process that inherits it). The lock is
the claim: the kernel drops it when its holder exits or is killed, so a crashed job frees its
GPUs and no stale claim survives.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
SLOT_DIR_NAME = ".gpu_slots"


@dataclass(frozen=True)
class SlotPool:
    """``gpus`` GPUs of one node in slots of ``per_job``, claimed through files in ``directory``."""

    directory: Path
    gpus: int
    per_job: int = 1

    def __post_init__(self) -> None:
        if self.per_job < 1 or self.gpus < self.per_job or self.gpus % self.per_job:
            raise ValueError(
                f"cannot split {self.gpus} GPUs into slots of {self.per_job}: the GPU count "
                "must be a positive multiple of the GPUs per job"
            )

    @property
    def slots(self) -> int:
        return self.gpus // self.per_job

    def gpus_of(self, slot: int) -> list[int]:
        return list(range(slot * self.per_job, (slot + 1) * self.per_job))

    def lock_path(self, slot: int) -> Path:
        gpus = self.gpus_of(slot)
        first, last = gpus[0], gpus[-1]
        return self.directory / f"gpus-{first}-{last}.lock"


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on ``path``, or None if another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError as error:
        os.close(fd)
        if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP):
            raise OSError(
                error.errno,
                f"the GPU slot directory {path.parent} is on a filesystem without flock "
                "support: put it on a local disk (trainer.gpu_slots needs working locks)",
            ) from error
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


@contextlib.contextmanager
def claim_slot(pool: SlotPool, poll_s: float = 0.5) -> Iterator[list[int]]:
    """Block until a slot of ``pool`` is free, hold it for the ``with`` block, and yield its
    GPU indices. Released on exit, on an exception and (by the kernel) on a kill."""
    pool.directory.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for slot in range(pool.slots):
            fd = _try_lock(pool.lock_path(slot))
            if fd is not None:
                break
        else:
            if not waited:
                log.info("all %d GPU slots in %s are taken: waiting", pool.slots, pool.directory)
                waited = True
            time.sleep(poll_s)
            continue
        break
    try:
        yield pool.gpus_of(slot)
    finally:
        os.close(fd)  # closing the only fd drops the flock


@contextlib.contextmanager
def visible_gpus(gpus: list[int]) -> Iterator[None]:
    """``CUDA_VISIBLE_DEVICES`` set to ``gpus`` for processes started inside the block."""
    before = os.environ.get(VISIBLE_DEVICES)
    os.environ[VISIBLE_DEVICES] = ",".join(str(g) for g in gpus)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(VISIBLE_DEVICES, None)
        else:
            os.environ[VISIBLE_DEVICES] = before


def recorded_gpus(device_type: str, device_count: int) -> list[str]:
    """The GPUs a run used, as summary.json records them: the node's GPU ids this process was
    given (``CUDA_VISIBLE_DEVICES``), else 0..count-1; [] on the CPU."""
    if device_type != "cuda":
        return []
    visible = os.environ.get(VISIBLE_DEVICES)
    if visible:
        return [g.strip() for g in visible.split(",") if g.strip()]
    return [str(i) for i in range(device_count)]
