"""Stopping on the scheduler's signals without losing more than the step in flight.

SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 only set a flag (``StopSignals``); the training loop polls
it between optimizer steps (``StopPoll``: under several processes the ranks agree through one
all-reduce every ``trainer.stop_check_every`` steps, so they all stop after the same step),
saves a mid-epoch checkpoint and raises ``TrainingInterrupted``. Only then does the handler that
was installed before ours get the signal (``StopSignals.hand_over``): under submitit that is its
SIGUSR2 handler, which dumps the job for a restart, runs ``scontrol requeue`` and exits; the run's
summary then says ``requeued`` instead of ``interrupted``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

from experiments import rundir as rd
from experiments.errors import TrainingInterrupted
from experiments.running.processes import DistContext

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)

Handler = Callable[[int, FrameType | None], Any] | int | None


@dataclass(frozen=True)
class HandOver:
    """What the previously installed handler did with the signal: requeued the job (submitit
    raises SystemExit after ``scontrol requeue``: ``error`` holds it, to re-raise once the
    summary is written), refused (``error``, e.g. submitit's UncompletedJobError), or nothing."""

    requeued: bool = False
    error: BaseException | None = None


def _is_python_handler(handler: Handler) -> bool:
    return callable(handler) and handler is not signal.default_int_handler


class StopSignals:
    """Catches ``STOP_SIGNALS`` in this process while installed; the first one received wins
    (a second SIGINT, Ctrl-C twice, raises KeyboardInterrupt at once).

    ``forward_to`` (a function returning pids) passes every signal on to child processes, as the
    parent of spawned workers must: a scheduler may signal only the process it started.
    """

    def __init__(self, forward_to: Callable[[], Iterable[int]] | None = None) -> None:
        self.received: int | None = None
        self.previous: dict[int, Handler] = {}
        self.forward_to = forward_to

    @property
    def requested(self) -> bool:
        return self.received is not None

    @property
    def signal_name(self) -> str | None:
        return None if self.received is None else signal.Signals(self.received).name

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of the main thread: set the flag, nothing that takes locks.
        self._forward(signum)
        if self.received is None:
            self.received = signum
        elif signum == signal.SIGINT:  # Ctrl-C twice: the user will not wait for the step
            raise KeyboardInterrupt

    def _forward(self, signum: int) -> None:
        for pid in self.forward_to() if self.forward_to is not None else ():
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def forward_received(self) -> None:
        """Pass a signal that came before the children existed on to them now."""
        if self.received is not None:
            self._forward(self.received)

    def install(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            log.warning("not in the main thread: stop signals are not caught by this run")
            return self
        for signum in STOP_SIGNALS:
            self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        """Put the previous handlers back (a signal received meanwhile stays recorded)."""
        for signum, handler in self.previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self.previous = {}

    def __enter__(self) -> StopSignals:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def hand_over(self) -> HandOver:
        """Give the received signal to the handler installed before ours (submitit's requeue),
        once our checkpoint is safe. Restores the previous handlers first."""
        signum, previous = self.received, dict(self.previous)
        self.restore()
        handler = previous.get(signum) if signum is not None else None
        if not _is_python_handler(handler):
            return HandOver()
        try:
            handler(signum, None)
        except SystemExit as exit_request:  # submitit requeued the job and asks us to exit
            return HandOver(requeued=True, error=exit_request)
        except Exception as error:  # e.g. submitit's UncompletedJobError: not requeued
            return HandOver(error=error)
        return HandOver()


class StopPoll:
    """``poll(batch)``: whether every rank stops before training batch ``batch`` of the epoch.

    One process reads its flag every step. Several processes all-reduce (max) their received
    signal numbers when ``batch % every == 0`` (one tiny collective every ``every`` steps), so all
    ranks take the same decision at the same step and know the signal even when only one rank
    got it; ``at_epoch_end`` agrees unconditionally. ``signal_name`` is the agreed signal.
    """

    def __init__(
        self, signals: StopSignals, ctx: DistContext, device: torch.device, every: int
    ) -> None:
        if every < 1:
            raise ValueError(f"trainer.stop_check_every must be >= 1, got {every}")
        self.signals, self.ctx, self.device, self.every = signals, ctx, device, every
        self.agreed: int | None = None

    def _agree(self) -> bool:
        if not self.ctx.is_distributed:
            self.agreed = self.signals.received
            return self.agreed is not None
        received = torch.tensor([self.signals.received or 0], device=self.device)
        dist.all_reduce(received, op=dist.ReduceOp.MAX)
        self.agreed = int(received.item()) or None
        return self.agreed is not None

    def __call__(self, batch: int) -> bool:
        if self.ctx.is_distributed and batch % self.every:
            return False
        return self._agree()

    def at_epoch_end(self) -> bool:
        return self._agree()

    @property
    def signal_name(self) -> str:
        if self.agreed is None:
            raise RuntimeError("no stop was agreed")
        return signal.Signals(self.agreed).name


def hand_over(signals: StopSignals, stop: TrainingInterrupted) -> tuple[str, str, BaseException]:
    """(status, message, exception to raise) of a run stopped by ``stop``, once its checkpoint
    is saved: the signal goes to the handler installed before ours, which may requeue the job."""
    outcome = signals.hand_over()
    if outcome.requeued:
        return rd.REQUEUED, f"{stop}; the scheduler requeued the job", outcome.error or stop
    if outcome.error is not None:
        return rd.INTERRUPTED, f"{stop}; not requeued: {outcome.error}", outcome.error
    return rd.INTERRUPTED, str(stop), stop
