"""A run's processes: the launch plan checked against the settings, spawned workers (signals
passed on to them, their failures reported like a single process's) and GPU slots.

The entry (``experiments.train``) trains in its own process when the plan is a single process
or a rank of torchrun/SLURM, and calls ``train_in_processes`` when it spawns (``trainer.devices
> 1``) or claims a GPU slot (``trainer.gpu_slots``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from experiments import rundir as rd
from experiments.errors import (
    USER_ERRORS,
    ConfigError,
    TrainingDiverged,
    TrainingFailed,
    TrainingInterrupted,
    error_message,
)
from experiments.running.gpu_slots import SLOT_DIR_NAME, SlotPool, claim_slot, visible_gpus
from experiments.running.preemption import StopSignals
from experiments.running.processes import LaunchPlan, free_port, spawn
from experiments.settings import RunSettings

log = logging.getLogger("experiments.train")


def check_plan(settings: RunSettings, plan: LaunchPlan) -> None:
    """Refuse settings this launch cannot run as planned."""
    trainer = settings.trainer
    if trainer.gpu_slots and plan.kind not in ("single", "spawn"):
        raise ConfigError(
            f"trainer.gpu_slots={trainer.gpu_slots} is invalid under a {plan.kind} launch, "
            "which assigns the GPUs itself: use it with hydra/launcher=gpus (or basic/joblib)"
        )
    if trainer.batch_size % plan.world_size:
        raise ConfigError(
            f"trainer.batch_size={trainer.batch_size} is invalid: the global batch must be "
            f"divisible by the {plan.world_size} processes of this {plan.kind} launch"
        )
    spawned = plan.kind == "spawn" and not trainer.gpu_slots  # slots: checked by the pool
    if spawned and trainer.accelerator != "cpu":
        import torch

        if torch.cuda.is_available() and plan.world_size > torch.cuda.device_count():
            raise ConfigError(
                f"trainer.devices={plan.world_size} is invalid: only "
                f"{torch.cuda.device_count()} GPUs are visible here"
            )


def needs_processes(settings: RunSettings, plan: LaunchPlan) -> bool:
    """Whether this launch trains in processes of its own (spawned ranks, a GPU slot)."""
    return plan.kind == "spawn" or bool(settings.trainer.gpu_slots)


def train_in_processes(
    plan: LaunchPlan,
    worker: Callable[..., Any],
    args: tuple[Any, ...],
    settings: RunSettings,
    run_dir: rd.RunDir,
) -> None:
    """Run ``worker(plan, rank, local_rank, *args)`` in ``plan.world_size`` spawned processes
    (in a GPU slot's processes with ``trainer.gpu_slots``); raise what a single process would."""
    with _gpu_slot(settings) as slot_plan:
        _spawn_workers(slot_plan or plan, worker, args, run_dir)


def _worker_refusal(error: BaseException) -> Exception | None:
    """The user error a spawned worker raised, rebuilt from the traceback text that is all
    torch passes back; None for any other error."""
    name, sep, message = error_message(error).partition(": ")
    for kind in USER_ERRORS:
        if sep and name == kind.__name__:
            return kind(message)
    return None


def _raise_from_summary(run_dir: rd.RunDir, error: BaseException) -> None:
    summary = run_dir.read_summary() or {}
    message = summary.get("message") or str(error)
    if summary.get("status") == rd.DIVERGED:
        raise TrainingDiverged(message) from error
    raise TrainingFailed(f"{message} (details in {run_dir.log_path})") from error


def _mark_failed_if_running(run_dir: rd.RunDir, message: str) -> None:
    # The parent holds the lock: a summary still "running" belongs to a worker that was killed.
    summary = run_dir.read_summary()
    if summary is not None and summary.get("status") == rd.RUNNING:
        run_dir.write_summary({**summary, "status": rd.FAILED, "message": message})


def _report_interruption(run_dir: rd.RunDir, signals: StopSignals) -> None:
    """Parent of spawned workers: if they stopped on a signal, hand it over (a scheduler may
    requeue the job) and raise like a worker would (SystemExit or TrainingInterrupted)."""
    summary = run_dir.read_summary() or {}
    if summary.get("status") != rd.INTERRUPTED or not summary.get("interruption"):
        return
    stop = TrainingInterrupted.from_record(summary["interruption"], summary["steps_per_epoch"])
    outcome = signals.hand_over()
    if outcome.requeued:
        message = f"{stop}; the scheduler requeued the job"
        run_dir.write_summary({**summary, "status": rd.REQUEUED, "message": message})
    elif outcome.error is not None:
        run_dir.write_summary({**summary, "message": f"{stop}; not requeued: {outcome.error}"})
    if outcome.error is not None:
        raise outcome.error from stop
    raise stop


def _spawn_workers(
    plan: LaunchPlan, worker: Callable[..., Any], args: tuple[Any, ...], run_dir: rd.RunDir
) -> None:
    """Run the ``plan.world_size`` workers; signals to this process are passed on to them."""
    from torch.multiprocessing import ProcessExitedException, ProcessRaisedException

    pids: list[int] = []
    with StopSignals(forward_to=lambda: pids) as signals:

        def started(worker_pids: list[int]) -> None:
            pids.extend(worker_pids)
            signals.forward_received()

        try:
            spawn(plan, worker, args, started=started)
        except ProcessRaisedException as error:
            refusal = _worker_refusal(error)
            if refusal is not None and run_dir.read_summary() is None:
                raise refusal from error  # refused before training, as a single process is
            _raise_from_summary(run_dir, error)
        except ProcessExitedException as error:
            _mark_failed_if_running(run_dir, f"a worker process died: {error}")
            raise TrainingFailed(f"{error} (details in {run_dir.log_path})") from error
        _report_interruption(run_dir, signals)


@contextlib.contextmanager
def _gpu_slot(settings: RunSettings) -> Iterator[LaunchPlan | None]:
    """With ``trainer.gpu_slots``: hold a slot of the node's GPUs and yield a plan that trains
    in fresh processes seeing only the slot's GPUs; otherwise yield None."""
    trainer = settings.trainer
    if not trainer.gpu_slots:
        yield None
        return
    folder = Path(settings.paths.results_dir) / SLOT_DIR_NAME
    pool = SlotPool(folder, trainer.gpu_slots, trainer.devices)
    with claim_slot(pool) as gpus, visible_gpus(gpus):
        log.info("GPU slot: CUDA_VISIBLE_DEVICES=%s", ",".join(map(str, gpus)))
        # A fresh process even for one device: this one may have initialised CUDA already.
        yield LaunchPlan(kind="spawn", world_size=trainer.devices, master_port=free_port())
