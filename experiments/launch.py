"""What a launch does with its run directory: skip, resume, repair or start, or refuse.

A launch compares the setup it was asked for with the one stored in the run (summary.json, or
the checkpoint when the summary is unreadable): equal -> skip a finished run or resume an
unfinished one; different -> refuse before writing anything, naming every differing key. A
resume also needs the same world size, unless ``trainer.allow_code_change=true`` the same code
version (the refusal names the files that differ), and unless
``trainer.allow_numerics_change=true`` the same rounding values as the segment it continues
(``experiments.identity.ROUNDING_KEYS``); a skip says which rounding values differ. A finished
run whose records are damaged is repaired from its checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments import rundir as rd
from experiments.config import ConfigError
from experiments.identity import DATA_FINGERPRINT_KEY, rounding_differences, setup_differences
from experiments.provenance import code_changes, describe_code_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunIdentity:
    """What names and defines a run; travels to the worker processes with the config."""

    label: str  # scheduler label + identity suffix: the run's name in tables and wandb
    changes: dict[str, Any]  # groups and values that differ from the experiment preset
    setup: dict[str, Any]  # every run-defining value, flat
    label_settings: dict[str, Any]  # the settings the label names (identity.label_settings)
    code_version: dict[str, Any]
    # The resolved ROUNDING_KEYS this launch trains with (experiments.identity).
    numerics: dict[str, Any] = field(default_factory=dict)
    code_change_from: dict[str, Any] | None = None  # set when a resume crosses code versions
    repair: str | None = None  # why a finished run is rebuilt from its checkpoint
    note: str | None = None  # what a skip adds to its line (other rounding values)


def _stored_run(run_dir: rd.RunDir) -> dict[str, Any] | None:
    """setup, world_size, code_version and epochs of the run on disk, from its summary or, when
    that is unreadable, its newest valid checkpoint; None when the directory holds no run."""
    summary = run_dir.read_summary()
    if summary is not None and "setup" in summary:
        return summary
    if run_dir.has_checkpoint():
        from experiments.checkpoint import load_latest_checkpoint

        found = load_latest_checkpoint(run_dir.checkpoint_path, map_location="cpu")
        if found is not None:
            state = found[1]
            return {
                "setup": state.get("setup"),
                "world_size": len(state["rng"]),
                "code_version": state.get("code_version"),
                "numerics": state.get("numerics"),
                "epochs_done": state["epoch"],
                "epochs_planned": (state.get("setup") or {}).get("trainer.epochs"),
            }
    return summary


def recorded_numerics(stored: dict[str, Any]) -> list[dict[str, Any]]:
    """The rounding values of each training segment of a stored run, oldest first (the first
    segment's, then each resume's; empty for a run recorded before they were)."""
    resumes = stored.get("resumes") if isinstance(stored.get("resumes"), list) else []
    segments = [stored.get("numerics")]
    segments += [entry.get("numerics") for entry in resumes if isinstance(entry, dict)]
    return [segment for segment in segments if isinstance(segment, dict)]


def _refuse(run_dir: rd.RunDir, reason: str, remedy: str) -> None:
    raise ConfigError(f"{run_dir.root} holds {reason}: this launch changes nothing; {remedy}")


def _check_same_setup(run_dir: rd.RunDir, stored: dict[str, Any], setup: dict[str, Any]) -> None:
    saved = stored.get("setup")
    if not isinstance(saved, dict):
        _refuse(
            run_dir,
            "a run without a recorded setup (written by an older runner)",
            "delete the run directory to train it afresh",
        )
    if DATA_FINGERPRINT_KEY not in setup:  # a rank > 0 of torchrun/SLURM: rank 0 reads the data
        saved = {k: v for k, v in saved.items() if k != DATA_FINGERPRINT_KEY}
    differences = setup_differences(saved, setup)
    if differences:
        _refuse(
            run_dir,
            f"a run with other settings ({'; '.join(differences)})",
            "a run directory holds exactly one setup: delete the old run, or change the "
            "preset back",
        )


def _check_resumable(
    run_dir: rd.RunDir,
    stored: dict[str, Any],
    world_size: int,
    identity: RunIdentity,
    allow_code_change: bool,
) -> dict[str, Any] | None:
    """Refuse a resume across world sizes or code versions; return the old code version when
    an allowed resume crosses code versions."""
    saved_world = stored.get("world_size")
    if saved_world is not None and saved_world != world_size:
        _refuse(
            run_dir,
            f"a run trained in {saved_world} processes; this launch has {world_size}",
            f"relaunch with trainer.devices={saved_world} (a resume never re-shards the "
            "data order or the RNG streams)",
        )
    saved_code = stored.get("code_version")
    if saved_code is not None and saved_code != identity.code_version:
        if not allow_code_change:
            _refuse(
                run_dir,
                f"a run trained by other code ({code_changes(saved_code, identity.code_version)})",
                "relaunch with trainer.allow_code_change=true to resume it anyway (the "
                "summary records it), or restore that code",
            )
        return saved_code
    return None


def _check_same_numerics(
    run_dir: rd.RunDir, stored: dict[str, Any], identity: RunIdentity, allowed: bool
) -> None:
    """Refuse a resume whose rounding values differ from the last recorded segment's (the
    worker checks again against the checkpoint it continues, see experiments.job)."""
    segments = recorded_numerics(stored)
    differences = rounding_differences(segments[-1:], identity.numerics)
    if differences and not allowed:
        _refuse(
            run_dir,
            f"a run trained with other rounding values ({'; '.join(differences)})",
            numerics_remedy(),
        )


def numerics_remedy() -> str:
    return (
        "a resume never mixes them silently: relaunch with the run's values, or with "
        "trainer.allow_numerics_change=true to resume anyway (recorded with the resume in "
        "summary.json)"
    )


def decide(
    run_dir: rd.RunDir, identity: RunIdentity, world_size: int, cfg: DictConfig
) -> tuple[rd.LaunchAction, RunIdentity]:
    """The launch's action; raises ConfigError (before anything is written) to refuse."""
    action = run_dir.launch_action()
    stored = _stored_run(run_dir)
    if stored is None:
        return action, identity
    _check_same_setup(run_dir, stored, identity.setup)
    if action is rd.LaunchAction.SKIP:
        differences = rounding_differences(recorded_numerics(stored), identity.numerics)
        if differences:
            note = f"trained with other rounding values: {'; '.join(differences)}"
            return action, replace(identity, note=note)
    if action is not rd.LaunchAction.RESUME:
        return action, identity
    summary = run_dir.read_summary()
    problem = rd.completeness_problem(run_dir.root)
    if summary is None or summary.get("status") == rd.FINISHED:
        # Nothing left to train: the checkpoint rebuilds the records and the summary.
        repair = problem or "summary.json is unreadable"
        log.warning("repairing %s from its checkpoint: %s", run_dir.root, repair)
        return action, replace(identity, repair=repair)
    allow = bool(OmegaConf.select(cfg, "trainer.allow_code_change", default=False))
    crossed = _check_resumable(run_dir, stored, world_size, identity, allow)
    allow_numerics = bool(OmegaConf.select(cfg, "trainer.allow_numerics_change", default=False))
    _check_same_numerics(run_dir, stored, identity, allow_numerics)
    if crossed is not None:
        log.warning(
            "resuming %s across code versions (%s -> %s): allowed by trainer.allow_code_change",
            run_dir.root,
            describe_code_version(crossed),
            describe_code_version(identity.code_version),
        )
    return action, replace(identity, code_change_from=crossed)
