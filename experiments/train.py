"""Hydra entry point: ``python -m experiments.train [-m] experiment=... scheduler=... seed=...``
(installed as ``autodrop-train``).

One Hydra job trains one run into its deterministic run directory. A finished run is skipped,
an unfinished one resumes from its checkpoint; ``trainer.devices=N`` spawns N processes, and a
torchrun or SLURM launch is joined instead (see ``experiments.distributed``).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch.multiprocessing import ProcessExitedException, ProcessRaisedException

from experiments import cli
from experiments import rundir as rd
from experiments.cli import TrainingFailed
from experiments.config import CONF_DIR, ConfigError, compose_config, register_configs
from experiments.console import configure_logging, detach_log_file
from experiments.distributed import (
    LaunchPlan,
    backend_for,
    destroy_process_group,
    free_port,
    init_process_group,
    plan_launch,
    spawn,
)
from experiments.gpu_slots import SLOT_DIR_NAME, SlotPool, claim_slot, visible_gpus
from experiments.identity import (
    DATA_FINGERPRINT_KEY,
    label_settings,
    name_suffix,
    rounding_values,
    run_directory,
    run_setup,
)
from experiments.launch import RunIdentity, decide
from experiments.loop import TrainingDiverged
from experiments.preemption import StopSignals, TrainingInterrupted
from experiments.provenance import code_version
from experiments.refused_launch import directories_to_make, removed_if_refused
from experiments.runtime import (
    configure_cpu_threads,
    configure_determinism,
    launch_device_type,
    processes_per_node,
    select_device,
    with_device_defaults,
)
from experiments.studies import with_trial
from experiments.validation import check_batch_fits, validate_config

log = logging.getLogger("experiments.train")

register_configs()


def _worker(
    plan: LaunchPlan,
    rank: int,
    local_rank: int,
    config: dict[str, Any],
    run_root: str,
    identity: RunIdentity,
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
            run_training(cfg, run_dir, ctx, device, identity)
        finally:
            destroy_process_group(plan)
    except TrainingInterrupted:
        if plan.kind == "spawn":
            return  # the parent reports it: it holds the lock and any scheduler's handler
        raise
    except SystemExit:  # a scheduler's handler requeued the job after our checkpoint
        raise
    except KeyboardInterrupt:  # Ctrl-C twice: the run is marked failed; the entry says so
        if rank == 0:
            log.error("stopped at once by a second Ctrl-C: the run is marked failed")
        raise
    except TrainingDiverged as error:
        if rank == 0:
            log.error("training diverged: %s", error)
        raise
    except cli.USER_ERRORS:
        raise  # the entry point prints it in one line
    except BaseException:
        if rank == 0:
            log.exception("training failed")
        raise
    finally:
        detach_log_file(run_dir.log_path)


def _importable_worker() -> Any:
    """``_worker`` as the spawned processes can import it: under ``python -m experiments.train``
    this module is ``__main__``, and in a joblib (loky) worker that name means another module."""
    return importlib.import_module("experiments.train")._worker


def _worker_refusal(error: ProcessRaisedException) -> Exception | None:
    """The user error (``cli.USER_ERRORS``) a spawned worker raised, rebuilt from the traceback
    text that is all torch passes back; None for any other error."""
    name, sep, message = cli.error_message(error).partition(": ")
    for kind in cli.USER_ERRORS:
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


def _spawn_workers(plan: LaunchPlan, args: tuple[Any, ...], run_dir: rd.RunDir) -> None:
    """Run the ``plan.world_size`` workers; signals to this process are passed on to them."""
    pids: list[int] = []
    with StopSignals(forward_to=lambda: pids) as signals:

        def started(worker_pids: list[int]) -> None:
            pids.extend(worker_pids)
            signals.forward_received()

        try:
            spawn(plan, _importable_worker(), args, started=started)
        except ProcessRaisedException as error:
            refusal = _worker_refusal(error)
            if refusal is not None and run_dir.read_summary() is None:
                raise refusal from error  # refused before training, as a single process is
            _raise_from_summary(run_dir, error)
        except ProcessExitedException as error:
            _mark_failed_if_running(run_dir, f"a worker process died: {error}")
            raise TrainingFailed(f"{error} (details in {run_dir.log_path})") from error
        _report_interruption(run_dir, signals)


@dataclass(frozen=True)
class LaunchResult:
    action: str  # skip | resume | fresh
    run_dir: Path
    note: str | None = None  # what the result line adds (a skip's other rounding values)


def resolve_for_launch(cfg: DictConfig, world_size: int) -> DictConfig:
    """``cfg`` with its device-dependent values resolved as this launch trains them (precision,
    channels_last, threads, ...: ``experiments.runtime.with_device_defaults`` on the device type
    ``trainer.accelerator`` picks). The workers train this config; the run records it."""
    device = torch.device(launch_device_type(str(cfg.trainer.accelerator)))
    jobs_on_node = cfg.trainer.gpu_slots // cfg.trainer.devices
    return with_device_defaults(cfg, device, processes_per_node(world_size, jobs_on_node))


def run_suffix(
    cfg: DictConfig, choices: Mapping[str, str | None], world_size: int | None = None
) -> tuple[str, dict[str, Any]]:
    """The identity suffix of ``cfg``'s run directory and the changes it names, for a launch of
    ``world_size`` processes (by default the one ``trainer.devices`` plans)."""
    world = world_size or plan_launch(cfg.trainer.devices).world_size
    return name_suffix(cfg, choices, compose_config, _setup_for(world))


def _setup_for(world_size: int) -> Any:
    def setup_of(config: DictConfig) -> dict[str, Any]:
        return run_setup(resolve_for_launch(config, world_size), world_size)

    return setup_of


def identify_run(
    cfg: DictConfig,
    choices: Mapping[str, str | None],
    world_size: int | None = None,
    *,
    read_data: bool = True,
) -> tuple[Path, RunIdentity]:
    """The run directory and identity of ``cfg`` (composed from the Hydra ``choices``) for a
    launch of ``world_size`` processes (by default the one ``trainer.devices`` plans).

    With ``read_data`` the setup holds the fingerprint of the data the run trains on, and the
    batch size is checked against the training set on the way (both before anything is
    written). Reading the data here costs one more load of an in-memory dataset, or one more
    directory scan of ImageNet, per launch (the workers read it again): the price of refusing a
    skip or resume into a run trained on other data. Without it (ranks > 0 of torchrun/SLURM,
    which take rank 0's identity, and callers that only want the name), the setup has none."""
    world = world_size or plan_launch(cfg.trainer.devices).world_size
    resolved = resolve_for_launch(cfg, world)
    suffix, changes = run_suffix(cfg, choices, world)
    setup = _setup_for(world)(cfg)
    if read_data:
        setup = dict(sorted({**setup, DATA_FINGERPRINT_KEY: _data_fingerprint(resolved)}.items()))
    identity = RunIdentity(
        label=f"{cfg.scheduler.label}{suffix}",
        changes=changes,
        setup=setup,
        label_settings=label_settings(cfg),
        code_version=code_version(exclude=(cfg.paths.results_dir, cfg.data.root)),
        numerics=rounding_values(resolved),
    )
    return run_directory(cfg.paths.results_dir, cfg, suffix).absolute(), identity


def _data_fingerprint(resolved: DictConfig) -> str:
    """The setup's ``data.fingerprint`` of the data ``resolved`` trains on, after checking the
    batch against its training set."""
    from experiments.data import DataSettings, fingerprint_data
    from experiments.data.validation_split import ValidationSplitError

    settings = DataSettings.for_rank(resolved, torch.device("cpu"), 0, 1)
    try:
        fingerprint = fingerprint_data(resolved.data.name, settings)
    except ValidationSplitError as error:  # a config value that only the data can refuse
        raise ConfigError(str(error)) from None
    check_batch_fits(resolved, fingerprint.num_train)
    return fingerprint.value()


def _write_hydra_files(
    run_dir: rd.RunDir, cfg: DictConfig, overrides: Sequence[str], hydra_cfg: Any
) -> None:
    folder = run_dir.root / rd.HYDRA_DIR
    files = {
        "config.yaml": OmegaConf.to_yaml(cfg, resolve=True),
        "overrides.yaml": OmegaConf.to_yaml(OmegaConf.create(list(overrides))),
    }
    if hydra_cfg is not None:
        files["hydra.yaml"] = OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg}))
    for name, text in files.items():
        rd.write_atomically(folder / name, lambda handle, text=text: handle.write(text))


def run_job(
    cfg: DictConfig,
    choices: Mapping[str, str | None],
    overrides: Sequence[str] = (),
    hydra_cfg: Any = None,
) -> LaunchResult:
    """Validate, name the run, then skip, resume or start it; return what was done and where.

    Nothing is written before the config is valid, the run directory named and locked, and the
    stored setup (if any) found equal to the requested one; a launch refused before training
    removes the run directory it made (``experiments.refused_launch``).
    """
    cfg = with_trial(cfg, overrides)  # a tuning-study trial's values (experiments.studies)
    validate_config(cfg)
    plan = plan_launch(cfg.trainer.devices)
    if cfg.trainer.gpu_slots and plan.kind not in ("single", "spawn"):
        raise ConfigError(
            f"trainer.gpu_slots={cfg.trainer.gpu_slots} is invalid under a {plan.kind} launch, "
            "which assigns the GPUs itself: use it with hydra/launcher=gpus (or basic/joblib)"
        )
    if cfg.trainer.batch_size % plan.world_size:
        raise ConfigError(
            f"trainer.batch_size={cfg.trainer.batch_size} is invalid: the global batch must be "
            f"divisible by the {plan.world_size} processes of this {plan.kind} launch"
        )
    spawned = plan.kind == "spawn" and not cfg.trainer.gpu_slots  # slots: checked by the pool
    if spawned and cfg.trainer.accelerator != "cpu" and torch.cuda.is_available():
        if plan.world_size > torch.cuda.device_count():
            raise ConfigError(
                f"trainer.devices={plan.world_size} is invalid: only "
                f"{torch.cuda.device_count()} GPUs are visible here"
            )
    # Other ranks of torchrun/SLURM take rank 0's identity (experiments.job).
    root, identity = identify_run(cfg, choices, plan.world_size, read_data=plan.rank == 0)
    resolved = resolve_for_launch(cfg, plan.world_size)
    run_dir = rd.RunDir(root)
    made = directories_to_make(root) if plan.rank == 0 else []
    # One launch per run directory: rank 0 holds its lock (other ranks of torchrun/SLURM join).
    with (
        run_dir.lock() if plan.rank == 0 else contextlib.nullcontext(),
        removed_if_refused(made, cli.USER_ERRORS),
    ):
        action, identity = decide(run_dir, identity, plan.world_size, cfg)
        if action is rd.LaunchAction.SKIP:
            note = f"; {identity.note}" if identity.note else ""
            log.info("already finished, nothing to do: results in %s%s", run_dir.root, note)
            return LaunchResult(action.value, run_dir.root, identity.note)
        if plan.rank == 0:
            run_dir.record_lock_owner()
            _write_hydra_files(run_dir, resolved, overrides, hydra_cfg)
        config = OmegaConf.to_container(resolved, resolve=True, enum_to_str=True)
        args = (config, str(run_dir.root), identity)
        with _gpu_slot(cfg) as slot_plan:
            plan = slot_plan or plan
            if plan.kind == "spawn":
                _spawn_workers(plan, args, run_dir)
            else:
                _worker(plan, plan.rank, plan.local_rank, *args)
        return LaunchResult(action.value, run_dir.root)


@contextlib.contextmanager
def _gpu_slot(cfg: DictConfig) -> Iterator[LaunchPlan | None]:
    """With ``trainer.gpu_slots``: hold a slot of the node's GPUs and yield a plan that trains
    in fresh processes seeing only the slot's GPUs; otherwise yield None."""
    if not cfg.trainer.gpu_slots:
        yield None
        return
    devices = cfg.trainer.devices
    pool = SlotPool(Path(cfg.paths.results_dir) / SLOT_DIR_NAME, cfg.trainer.gpu_slots, devices)
    with claim_slot(pool) as gpus, visible_gpus(gpus):
        log.info("GPU slot: CUDA_VISIBLE_DEVICES=%s", ",".join(map(str, gpus)))
        # A fresh process even for one device: this one may have initialised CUDA already.
        yield LaunchPlan(kind="spawn", world_size=devices, master_port=free_port())


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> dict[str, Any]:
    hydra_cfg = HydraConfig.get()
    choices = OmegaConf.to_container(hydra_cfg.runtime.choices)
    overrides = OmegaConf.to_container(hydra_cfg.overrides.task)
    return cli.job_outcome(lambda: run_job(cfg, choices, overrides, hydra_cfg))


def main() -> None:
    """``python -m experiments.train`` and ``autodrop-train``: see ``experiments.cli``."""
    cli.main(hydra_main)


if __name__ == "__main__":
    main()
