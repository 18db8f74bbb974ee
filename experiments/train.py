"""Hydra entry point: ``python -m experiments.train [-m] experiment=... scheduler=... seed=...``.

One Hydra job trains one run into its deterministic run directory. A finished run is skipped,
an unfinished one resumes from its checkpoint; ``trainer.devices=N`` spawns N processes, and a
torchrun or SLURM launch is joined instead (see ``experiments.distributed``).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch.multiprocessing import ProcessExitedException, ProcessRaisedException

from experiments import rundir as rd
from experiments.config import ConfigError, register_configs, validate_config
from experiments.console import configure_logging, detach_log_file
from experiments.distributed import (
    LaunchPlan,
    backend_for,
    destroy_process_group,
    init_process_group,
    plan_launch,
    spawn,
)
from experiments.loop import TrainingDiverged
from experiments.preemption import StopSignals, TrainingInterrupted
from experiments.runtime import configure_cpu_threads, configure_determinism, select_device

log = logging.getLogger("experiments.train")

register_configs()


class TrainingFailed(RuntimeError):
    """A worker process of a multi-process run failed (its traceback is in train.log)."""


def _worker(
    plan: LaunchPlan, rank: int, local_rank: int, config: dict[str, Any], run_root: str
) -> None:
    """One rank of the run: device, process group, training."""
    from experiments.job import run_training

    cfg = OmegaConf.create(config)
    run_dir = rd.RunDir(run_root)
    configure_logging(run_dir.log_path, rank)
    try:
        configure_determinism(cfg.trainer.deterministic, cfg.trainer.cudnn_benchmark)
        device = select_device(cfg.trainer.accelerator, local_rank)
        configure_cpu_threads(cfg.trainer.cpu_threads, plan.world_size)
        ctx = init_process_group(plan, rank, local_rank, backend_for(device.type))
        try:
            run_training(cfg, run_dir, ctx, device)
        finally:
            destroy_process_group()
    except TrainingInterrupted:
        if plan.kind == "spawn":
            return  # the parent reports it: it holds the lock and any scheduler's handler
        raise
    except SystemExit:  # a scheduler's handler requeued the job after our checkpoint
        raise
    except TrainingDiverged as error:
        if rank == 0:
            log.error("training diverged: %s", error)
        raise
    except BaseException:
        if rank == 0:
            log.exception("training failed")
        raise
    finally:
        detach_log_file(run_dir.log_path)


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


def _spawn_workers(plan: LaunchPlan, config: dict[str, Any], run_dir: rd.RunDir) -> None:
    """Run the ``plan.world_size`` workers; signals to this process are passed on to them."""
    pids: list[int] = []
    with StopSignals(forward_to=lambda: pids) as signals:

        def started(worker_pids: list[int]) -> None:
            pids.extend(worker_pids)
            signals.forward_received()

        try:
            spawn(plan, _worker, (config, str(run_dir.root)), started=started)
        except ProcessRaisedException as error:
            _raise_from_summary(run_dir, error)
        except ProcessExitedException as error:
            _mark_failed_if_running(run_dir, f"a worker process died: {error}")
            raise TrainingFailed(f"{error} (details in {run_dir.log_path})") from error
        _report_interruption(run_dir, signals)


def run_job(cfg: DictConfig, output_dir: Path) -> str:
    """Validate, then skip, resume or start the run in ``output_dir``; return what was done."""
    validate_config(cfg)
    plan = plan_launch(cfg.trainer.devices)
    if cfg.trainer.batch_size % plan.world_size:
        raise ConfigError(
            f"trainer.batch_size={cfg.trainer.batch_size} is invalid: the global batch must be "
            f"divisible by the {plan.world_size} processes of this {plan.kind} launch"
        )
    if plan.kind == "spawn" and cfg.trainer.accelerator != "cpu" and torch.cuda.is_available():
        if plan.world_size > torch.cuda.device_count():
            raise ConfigError(
                f"trainer.devices={plan.world_size} is invalid: only "
                f"{torch.cuda.device_count()} GPUs are visible here"
            )
    run_dir = rd.RunDir(output_dir)
    # One launch per run directory: rank 0 holds its lock (other ranks of torchrun/SLURM join).
    with run_dir.lock() if plan.rank == 0 else contextlib.nullcontext():
        action = run_dir.launch_action()
        if action is rd.LaunchAction.SKIP:
            log.info("already finished, nothing to do: results in %s", run_dir.root)
            return action.value
        config = OmegaConf.to_container(cfg, resolve=True)
        if plan.kind == "spawn":
            _spawn_workers(plan, config, run_dir)
        else:
            _worker(plan, plan.rank, plan.local_rank, config, str(run_dir.root))
        return action.value


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run_job(cfg, Path(HydraConfig.get().runtime.output_dir))
    except TrainingInterrupted as stop:
        # Saved and logged by the run; exit as a process ended by that signal would (128 + n).
        sys.exit(stop.exit_code)


if __name__ == "__main__":
    main()
