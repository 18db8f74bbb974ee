"""The entry point: ``python -m experiments.train [-m] experiment=... scheduler=... seed=...``
(installed as ``autodrop-train``).

The plain path, top to bottom: the command line is checked (``experiments.cli``), Hydra
composes the config, ``run_job`` turns it into typed settings once (``experiments.validation``)
and names the run (``experiments.run_identity``); a finished run is skipped, an unfinished one
resumes, and ``experiments.job.train_rank`` trains it, one epoch at a time
(``experiments.loop``). Several processes (``trainer.devices=N``, GPU slots) are spawned by
``experiments.running.launch``; a torchrun or SLURM launch is joined instead.

Nothing heavy is imported before a run starts: a mistake on the command line, ``--help`` and
tab completion answer without torch.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from experiments import cli
from experiments import rundir as rd
from experiments.config import CONF_DIR, register_configs
from experiments.errors import USER_ERRORS
from experiments.settings import RunSettings

log = logging.getLogger("experiments.train")


@dataclass(frozen=True)
class LaunchResult:
    action: str  # skip | resume | fresh
    run_dir: Path
    note: str | None = None  # what the result line adds (a skip's other rounding values)


def run_job(
    cfg: DictConfig,
    choices: Mapping[str, str | None],
    overrides: Sequence[str] = (),
    hydra_cfg: Any = None,
) -> LaunchResult:
    """Validate, name the run, then skip, resume or start it; return what was done and where.

    Nothing is written before the config is valid, the run directory named and locked, and the
    stored setup (if any) found equal to the requested one; a launch refused before training
    removes the run directory it made (``experiments.running.refused_launch``).
    """
    from experiments import job
    from experiments.run_identity import decide, identify_run, resolve_for_launch
    from experiments.running import launch
    from experiments.running.processes import plan_launch
    from experiments.running.refused_launch import directories_to_make, removed_if_refused
    from experiments.studies import with_trial
    from experiments.validation import validate_config

    cfg = with_trial(cfg, overrides)  # a tuning-study trial's values (experiments.studies)
    settings = validate_config(cfg)
    plan = plan_launch(settings.trainer.devices)
    launch.check_plan(settings, plan)
    # Other ranks of torchrun/SLURM take rank 0's identity (experiments.job).
    root, identity = identify_run(cfg, choices, plan.world_size, read_data=plan.rank == 0)
    resolved = resolve_for_launch(settings, plan.world_size)
    run_dir = rd.RunDir(root)
    made = directories_to_make(root) if plan.rank == 0 else []
    # One launch per run directory: rank 0 holds its lock (other ranks of torchrun/SLURM join).
    with (
        run_dir.lock() if plan.rank == 0 else contextlib.nullcontext(),
        removed_if_refused(made, USER_ERRORS),
    ):
        action, identity = decide(run_dir, identity, plan.world_size, settings)
        if action is rd.LaunchAction.SKIP:
            note = f"; {identity.note}" if identity.note else ""
            log.info("already finished, nothing to do: results in %s%s", run_dir.root, note)
            return LaunchResult(action.value, run_dir.root, identity.note)
        if plan.rank == 0:
            run_dir.record_lock_owner()
            _write_hydra_files(run_dir, resolved, overrides, hydra_cfg)
        args = (resolved, str(run_dir.root), identity)
        if launch.needs_processes(settings, plan):
            launch.train_in_processes(plan, job.train_rank, args, settings, run_dir)
        else:
            job.train_rank(plan, plan.rank, plan.local_rank, *args)
        return LaunchResult(action.value, run_dir.root)


def _write_hydra_files(
    run_dir: rd.RunDir, settings: RunSettings, overrides: Sequence[str], hydra_cfg: Any
) -> None:
    """The run's ``.hydra/``: the settings it trains (resolved), the overrides, Hydra's own."""
    folder = run_dir.root / rd.HYDRA_DIR
    files = {
        "config.yaml": OmegaConf.to_yaml(settings.as_dict()),
        "overrides.yaml": OmegaConf.to_yaml(list(overrides)),
    }
    if hydra_cfg is not None:
        files["hydra.yaml"] = OmegaConf.to_yaml({"hydra": hydra_cfg})
    for name, text in files.items():
        rd.write_atomically(folder / name, lambda handle, text=text: handle.write(text))


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> dict[str, Any]:
    """One Hydra job: run it, print its result line, and return its outcome to the sweep."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    choices = OmegaConf.to_container(hydra_cfg.runtime.choices)
    overrides = OmegaConf.to_container(hydra_cfg.overrides.task)
    try:
        result = run_job(cfg, choices, overrides, hydra_cfg)
    except BaseException as error:  # noqa: BLE001 - cli decides: exit, re-raise or report
        return cli.failed_job(error)
    return cli.finished_job(result)


def main() -> None:
    """``python -m experiments.train`` and ``autodrop-train``: the command line checked (one
    line and exit 2 for a mistake), then Hydra; exit 1 after a sweep with an unfinished job."""
    arguments = sys.argv[1:]
    cli.check_command_line(arguments)
    if cli.is_completion_query(arguments):
        cli.answer_completion(arguments, _run_hydra)
        return
    _run_hydra()
    cli.exit_after_sweep()


def _run_hydra() -> None:
    register_configs()  # the schemas Hydra composes with (not needed to refuse a mistake)
    hydra_main()


if __name__ == "__main__":
    main()
