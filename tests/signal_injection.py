"""Deliver a signal to a training process at a chosen point, as a scheduler would.

In the test process: ``with inject(Injection(...)):`` around an in-process run. For a
subprocess: ``python -m tests.signal_injection <overrides>`` (one run, like
``python -m experiments.train <overrides>`` without -m; exit status 128 + the signal's number
when interrupted) with
``AUTODROP_TEST_SIGNAL=<SIGNAL>:<point>:<n>[:<rank>|parent]`` in the environment, e.g.
``SIGTERM:step:37``, ``SIGUSR2:eval:2:1`` (rank 1 only) or ``SIGTERM:step:30:parent`` (the
parent of spawned workers gets it and passes it on); several, comma-separated, are all armed
(``SIGINT:step:30,SIGINT:checkpoint:2``: Ctrl-C twice, the second during the stop's
checkpoint). Spawned workers import this module as their ``__main__`` (multiprocessing's spawn
start method), so they install the same injection.

Points, counted from the start of the process (a relaunch counts afresh):
- ``step``: right after the n-th optimizer step of this process;
- ``eval``: as the n-th evaluation pass starts;
- ``checkpoint``: as the n-th checkpoint write starts (the write then goes on).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch.distributed as dist
from torch.optim.optimizer import register_optimizer_step_post_hook

ENV = "AUTODROP_TEST_SIGNAL"
POINTS = ("step", "eval", "checkpoint")


@dataclass(frozen=True)
class Injection:
    signal_name: str
    point: str
    count: int
    target: str = "any"  # "any", a rank number, or "parent"

    @classmethod
    def parse(cls, text: str) -> Injection:
        name, point, count, *target = text.split(":")
        if point not in POINTS or not hasattr(signal, name):
            raise ValueError(f"{ENV}={text!r}: expected <SIGNAL>:<{'|'.join(POINTS)}>:<n>[:t]")
        return cls(name, point, int(count), target[0] if target else "any")

    def __str__(self) -> str:
        return f"{self.signal_name}:{self.point}:{self.count}:{self.target}"


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class _Trigger:
    def __init__(self, injection: Injection) -> None:
        self.injection = injection
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        target = self.injection.target
        if self.calls != self.injection.count:
            return
        if target not in ("any", "parent") and int(target) != _rank():
            return
        pid = os.getppid() if target == "parent" else os.getpid()
        os.kill(pid, signal.Signals[self.injection.signal_name])


def _wrap(function: Callable[..., Any], before: Callable[[], None]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        before()
        return function(*args, **kwargs)

    return wrapped


@contextlib.contextmanager
def inject(injection: Injection) -> Iterator[_Trigger]:
    """Arm ``injection`` in this process until the block ends."""
    from experiments import checkpoint, job

    trigger = _Trigger(injection)
    # The evaluation is called from the job; a checkpoint is written by the checkpoint
    # module's writer (a background thread), which looks save_checkpoint up at each write.
    originals = [
        (job, "evaluate", job.evaluate),
        (checkpoint, "save_checkpoint", checkpoint.save_checkpoint),
    ]
    handle = None
    if injection.point == "step":
        handle = register_optimizer_step_post_hook(lambda *_: trigger())
    else:
        module, name, function = originals[0 if injection.point == "eval" else 1]
        setattr(module, name, _wrap(function, trigger))
    try:
        yield trigger
    finally:
        if handle is not None:
            handle.remove()
        for module, name, function in originals:
            setattr(module, name, function)


_ARMED: list[contextlib.AbstractContextManager[_Trigger]] = []  # kept for the process's life


def _arm_from_environment() -> None:
    for text in filter(None, os.environ.get(ENV, "").split(",")):
        armed = inject(Injection.parse(text))
        armed.__enter__()
        _ARMED.append(armed)


def main(overrides: list[str]) -> int:
    from experiments.config import compose_with_choices
    from experiments.errors import TrainingInterrupted
    from experiments.train import run_job

    try:
        run_job(*compose_with_choices(overrides), overrides)
    except TrainingInterrupted as stop:
        return stop.exit_code
    return 0


_arm_from_environment()

if __name__ == "__main__":
    import logging
    import sys

    logging.basicConfig(level=logging.INFO)
    sys.exit(main(sys.argv[1:]))
