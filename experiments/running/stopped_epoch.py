"""What a mid-epoch checkpoint adds to an epoch-end one, and the provenance of a resume.

A signal stops training between two optimizer steps (``experiments.running.preemption``); the
checkpoint then also holds ``stopped_epoch``: the epoch, every rank's place in it (batches
trained, running sums, lr sum, seconds) and the schedule's measurement records of its first part.
A resume appends one ``resume_record`` to summary.json's ``resumes``.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from experiments import rundir as rd
from experiments.loop import PartialEpoch
from experiments.running.processes import DistContext, gather_objects

log = logging.getLogger(__name__)


@dataclass
class StoppedEpoch:
    """An epoch stopped between two optimizer steps: this rank's place in it and the
    schedule's measurement records of its first part, written with the epoch's records."""

    epoch: int
    position: PartialEpoch
    measurements: list[dict[str, Any]] = field(default_factory=list)


def checkpoint_entry(stopped: StoppedEpoch | None, ctx: DistContext) -> dict[str, Any] | None:
    """The checkpoint's ``stopped_epoch`` (None at an epoch's end). A collective when set: every
    rank calls it, rank 0's result is the one saved."""
    if stopped is None:
        return None
    return {
        "epoch": stopped.epoch,
        "ranks": gather_objects(stopped.position.state_dict(), ctx),
        "measurements": stopped.measurements,
    }


def restore(saved: dict[str, Any] | None, ctx: DistContext) -> StoppedEpoch | None:
    """This rank's part of a checkpoint's ``stopped_epoch``.

    Resumed by another number of processes, rank 0 carries the summed running sums (only their
    sum over ranks is ever used; its rounding may then differ in the last bits).
    """
    if saved is None:
        return None
    positions = [PartialEpoch.from_state(rank) for rank in saved["ranks"]]
    if len(positions) == ctx.world_size:
        position = positions[ctx.rank]
    else:
        log.warning(
            "mid-epoch checkpoint of %d ranks resumed by %d: the epoch's running sums are "
            "kept, their summation order changes",
            len(positions),
            ctx.world_size,
        )
        sums = [sum(p.sums[i] for p in positions) for i in range(3)]
        first = positions[0]
        position = PartialEpoch(
            first.batch, sums if ctx.is_main else [0.0, 0.0, 0.0], first.lr_sum, first.seconds
        )
    return StoppedEpoch(int(saved["epoch"]), position, list(saved["measurements"]))


def resume_reason(previous: dict[str, Any]) -> str:
    """Why the previous process stopped: its signal, ``stale`` when it died without saying
    (its summary still said running), else its status."""
    status = previous.get("status")
    interruption = previous.get("interruption") or {}
    if status in (rd.INTERRUPTED, rd.REQUEUED) and interruption.get("signal"):
        return str(interruption["signal"])
    if status == rd.RUNNING:
        return rd.STALE
    return str(status or "unknown")


def resume_record(
    previous: dict[str, Any] | None,
    *,
    epochs_done: int,
    step: int,
    stopped: StoppedEpoch | None,
    world_size: int,
) -> dict[str, Any]:
    """One entry of summary.json's ``resumes``: where this launch continues (the global step,
    the epoch and its batch), why the previous process stopped, and on what."""
    previous = previous or {}
    batch = stopped.position.batch if stopped is not None else 0
    return {
        "step": step + batch,
        "epoch": epochs_done + 1,
        "batch": batch,
        "reason": resume_reason(previous),
        "previous_status": previous.get("status"),
        "host": socket.gethostname(),
        "world_size": world_size,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
