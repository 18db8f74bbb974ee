"""Run identity: which settings define a run, the directory name that carries them, and what a
launch does with that directory (skip, resume, repair, start or refuse).

Two launches share a run directory if and only if they would train the same thing. The directory
is ``<experiment>/<dataset>-<model>/<label><suffix>/seed=<n>`` where the suffix lists, in sorted
order, every config group and every run-defining value that differs from the experiment preset
(``step,optimizer.lr=0.1``); values the label already shows (``autodrop-window=32``) are not
repeated.

What defines a run is everything that changes what is trained (data, model, optimizer, schedule,
epochs, batch, seed, ...), taken as RESOLVED for the launch (``experiments.runtime``
``with_device_defaults``): the run's setup (summary.json ``setup``, compared on every skip and
resume) holds the precision actually used (``trainer.precision``: bf16 or fp32, never auto),
the BatchNorm split (``trainer.bn_processes``) and a fingerprint of the data actually used
(``data.fingerprint``, ``experiments.data.fingerprint``). The suffix compares the resolved
values with the preset's resolved on the same launch, so ``auto`` and the precision it means
name the same run. Two other kinds of keys are left out of the setup and the name:

- ``ROUNDING_KEYS`` change only how floats round (other kernels, layouts, reduction orders for
  the same arithmetic). Their resolved values are recorded per training segment (summary.json
  ``numerics``, and each entry of ``resumes``); a resume that changes one is refused unless
  ``trainer.allow_numerics_change=true`` (recorded with the resume), and a launch into a
  finished run with other values skips it and says which differ.
- ``EXECUTION_KEYS`` change only where and how a run executes, never a number it computes.

A key added to the config later defines runs until it is listed in one of the two, so a new
setting can split runs apart but never merge two different ones. The one exception is a
component option (a builder's keyword parameter, ``experiments.specs``): a run recorded before
the option existed trained with the behaviour its default keeps, so its setup reads as holding
the default (``legacy_setup``, which also reads the older spellings of component settings).

A launch (``decide``) compares the setup it was asked for with the one stored in the run
(summary.json, or the checkpoint when the summary is unreadable): equal -> skip a finished run
or resume an unfinished one; different -> refuse before writing anything, naming every
differing key. A resume also needs the same world size, unless ``trainer.allow_code_change=true``
the same code version (the refusal names the files that differ), and unless
``trainer.allow_numerics_change=true`` the same rounding values as the segment it continues; a
skip says which rounding values differ. A finished run whose records are damaged is repaired
from its checkpoint.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from omegaconf import DictConfig, OmegaConf

from experiments import rundir as rd
from experiments import specs
from experiments.config import ConfigError, compact_number
from experiments.provenance import code_changes, describe_code_version
from experiments.settings import RunSettings, flatten

log = logging.getLogger(__name__)

# Keys (or key prefixes ending in '.') that change how or where a run executes, not its numbers.
EXECUTION_KEYS: dict[str, str] = {
    "paths.": "where results and data live",
    "logger.": "where metrics are sent",
    "data.root": "where the data lives (what it holds is data.fingerprint)",
    "data.download": "whether missing files are fetched (what is read is data.fingerprint)",
    "data.verify": "whether CIFAR's md5s are checked (what is read is data.fingerprint)",
    "data.follow_links": "whether links out of the root are read or refused (data.fingerprint)",
    "data.num_workers": "loader processes",
    "trainer.devices": "the processes: their BatchNorm split is trainer.bn_processes, and a "
    "resume across world sizes is refused",
    "trainer.num_workers": "loader processes",
    "trainer.progress": "how progress is shown",
    "trainer.nan_check_every": "how often a diverged loss is looked for",
    "trainer.track_angle": "an extra record, computed beside training",
    "trainer.allow_code_change": "a permission, recorded with the resume",
    "trainer.allow_numerics_change": "a permission, recorded with the resume",
    "trainer.checkpoint_every_epochs": "checkpoints resume bit-exactly",
    "trainer.checkpoint_every_minutes": "checkpoints resume bit-exactly",
    "trainer.gpu_slots": "which GPUs of the node",
    "trainer.stop_check_every": "how often ranks agree on a stop signal",
    "scheduler.label": "the name itself",
}
# Keys that change only how floats round; their resolved values are recorded per segment.
ROUNDING_KEYS: dict[str, str] = {
    "trainer.accelerator": "resolved to the device type: other kernels for the same arithmetic",
    "trainer.cpu_threads": "resolved to the threads used: reductions split differently",
    "trainer.channels_last": "resolved (null: on for CUDA): another memory layout and kernels",
    "trainer.compile": "fused kernels round differently",
    "trainer.deterministic": "deterministic kernels instead of the fastest ones",
    "trainer.cudnn_benchmark": "cuDNN picks its algorithm per shape",
    "trainer.eval_batch_size": "evaluation sums over other batches (BatchNorm in eval mode)",
    "data.decode": "JPEG decoders differ in the last bit of some pixels",
}
# Setup values that are not config keys: resolved or measured for the launch.
BN_PROCESSES_KEY = "trainer.bn_processes"  # processes BatchNorm statistics are split over
DATA_FINGERPRINT_KEY = "data.fingerprint"  # experiments.data.fingerprint
# Defining, but already spelled in the directory path itself.
IN_PATH_KEYS = ("experiment_name", "seed", "data.name", "model.name", "scheduler.name")
# Config groups whose choice may differ from the preset's; data and model show in the path.
IDENTITY_GROUPS = ("optimizer", "trainer", "protocol")
PATH_GROUPS = ("experiment", "scheduler", "data", "model")
# Longer suffixes are replaced by a digest of the differences (which summary.json lists).
MAX_SUFFIX_CHARS = 120
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.+\-\[\],=]*$")
_REFERENCE = re.compile(r"\$\{([^${}:]*:)?([^${}:,]+)")


def _listed(key: str, keys: Mapping[str, str]) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in keys)


@functools.cache
def is_execution_key(key: str) -> bool:
    return _listed(key, EXECUTION_KEYS)


@functools.cache
def is_rounding_key(key: str) -> bool:
    return _listed(key, ROUNDING_KEYS)


def _flat_values(settings: RunSettings) -> dict[str, Any]:
    return flatten(settings.as_dict())


def bn_processes(sync_bn: bool, world_size: int) -> int:
    """Processes whose BatchNorm statistics are separate: 1 when BatchNorm is synchronised or
    there is one process, else the world size (each normalises over batch / world size)."""
    return 1 if sync_bn or world_size == 1 else world_size


def run_setup(resolved: RunSettings, world_size: int) -> dict[str, Any]:
    """The run-defining values of settings resolved for its launch (``with_device_defaults``),
    flat (plain JSON data), with the BatchNorm split of ``world_size`` processes; the data
    fingerprint is added once the data is read."""
    values = _flat_values(resolved)
    setup = {k: v for k, v in values.items() if not (is_execution_key(k) or is_rounding_key(k))}
    setup[BN_PROCESSES_KEY] = bn_processes(bool(values["trainer.sync_bn"]), world_size)
    return dict(sorted(setup.items()))


def rounding_values(resolved: RunSettings) -> dict[str, Any]:
    """The resolved values of the ``ROUNDING_KEYS`` a launch trains with (those its settings
    have: ``data.decode`` is an option of image-folder datasets only)."""
    values = _flat_values(resolved)
    return {key: values[key] for key in sorted(ROUNDING_KEYS) if key in values}


def rounding_differences(
    recorded: list[Mapping[str, Any]], current: Mapping[str, Any]
) -> list[str]:
    """``key: old -> new`` for each rounding key whose value differs from a recorded segment's
    (the recorded values listed together); ``recorded`` is empty for a run recorded before the
    rounding values were, whose every value reads ``<not recorded>``."""
    differences = []
    for key in sorted(current):
        old = [repr(segment.get(key, "<absent>")) for segment in recorded] or ["<not recorded>"]
        old = [value for i, value in enumerate(old) if value not in old[:i]]
        if old != [repr(current[key])]:
            differences.append(f"{key}: {', '.join(old)} -> {current[key]!r}")
    return differences


def _references(raw: Any, owner: str) -> set[str]:
    """The keys an interpolation string refers to (``${.name}`` is relative to ``owner``)."""
    keys = set()
    for _, key in _REFERENCE.findall(str(raw)):
        key = key.strip()
        keys.add(f"{owner}{key}" if key.startswith(".") else key)
    return keys


def label_references(cfg: DictConfig) -> set[str]:
    """The keys the scheduler label shows: those it interpolates (``${scheduler.window}``) and
    every key whose value is derived from one of them (an lr computed from a multiplier)."""
    raw = {
        k: v
        for k, v in flatten(OmegaConf.to_container(cfg, resolve=False)).items()
        if isinstance(v, str) and "${" in v
    }
    shown = _references(raw.get("scheduler.label", ""), "scheduler")
    grew = True
    while grew:
        derived = {k for k, v in raw.items() if _references(v, k.rpartition(".")[0]) & shown}
        grew = not derived <= shown
        shown |= derived
    return shown


def label_settings(cfg: DictConfig) -> dict[str, Any]:
    """The settings the scheduler label names, by dotted key with their resolved values
    (``autodrop-window=32`` -> ``{"scheduler.window": 32}``; ``autodrop-lrx=0.25`` ->
    ``{"lr_sweep.multiplier": 0.25}``): what summary.json records so that analysis never
    parses a label."""
    values = flatten(OmegaConf.to_container(cfg, resolve=False))
    # Resolver names (``compact`` of ``${compact:...}``) match the pattern too: keep real keys.
    keys = (_references(values.get("scheduler.label", ""), "scheduler") & set(values)) - {
        "scheduler.name"
    }
    resolved = flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    return {key: resolved[key] for key in sorted(keys)}


def setup_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for every key whose value differs (missing reads as absent);
    ``saved`` is read in today's terms first (``legacy_setup``)."""
    saved = legacy_setup(saved, current)
    missing = "<absent>"
    return [
        f"{key}: {saved.get(key, missing)!r} -> {current.get(key, missing)!r}"
        for key in sorted(set(saved) | set(current))
        if saved.get(key, missing) != current.get(key, missing)
    ]


def format_value(value: Any) -> str:
    """A value as the directory name shows it: 0.1, 1e-05, true, null, [60,120]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return compact_number(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def identity_suffix(group_changes: Mapping[str, str], value_changes: Mapping[str, Any]) -> str:
    """``,optimizer=adam,optimizer.lr=0.1`` (sorted), or a digest when long or unsafe."""
    parts = [f"{group}={choice}" for group, choice in sorted(group_changes.items())]
    parts += [f"{key}={format_value(value)}" for key, value in sorted(value_changes.items())]
    if not parts:
        return ""
    suffix = "," + ",".join(parts)
    if len(suffix) > MAX_SUFFIX_CHARS or not _SAFE_VALUE.match(suffix):
        blob = json.dumps(
            [sorted(group_changes.items()), sorted(value_changes.items())],
            sort_keys=True,
            default=str,
        )
        suffix = ",setup=" + hashlib.sha256(blob.encode()).hexdigest()[:12]
    return suffix


def legacy_setup(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """A setup recorded by an older runner, in today's terms, for comparing with ``current``:

    - a model's options were ``model.options.<key>``; they are ``model.<key>``;
    - a component option the record lacks (it did not exist yet, or the component had no
      options of its own) reads as its builder's default, when the builder has one;
    - ``data.*`` keys of the dataset settings every dataset once shared, which the recorded
      dataset's builder does not take (``data.crop_size`` of a digits run), are dropped.

    A setup that reads the same either way is returned as it was."""
    values = {
        f"model.{key.removeprefix('model.options.')}"
        if key.startswith("model.options.")
        else key: v
        for key, v in saved.items()
    }
    for section in specs.KINDS:
        name = values.get(f"{section}.name")
        spec = specs.spec(section, name) if name == current.get(f"{section}.name") else None
        if spec is None:
            continue
        own = {f"{section}.{key}" for key in specs.KINDS[section].common}
        options = {f"{section}.{option.name}": option for option in spec.options}
        for key, option in options.items():
            if key not in values and key in current and not option.required:
                values[key] = (
                    option.default
                    if not isinstance(option.default, tuple)
                    else list(option.default)
                )
        if section == "data":
            for key in [k for k in values if k.startswith("data.")]:
                if key not in own and key not in options and key not in current:
                    del values[key]
    return values


def _differences(ours: Mapping[str, Any], theirs: Mapping[str, Any], skip: set[str]) -> dict:
    return {
        key: ours.get(key)
        for key in set(ours) | set(theirs)
        if key not in skip and ours.get(key) != theirs.get(key)
    }


def value_changes(
    ours: RunSettings, theirs: RunSettings, world_size: int, skip: set[str]
) -> dict[str, Any]:
    """The run-defining values of ``ours`` that differ from ``theirs`` (keys in ``skip``
    aside), both resolved for a launch of ``world_size`` processes.

    Resolving maps each value on its own (``with_device_defaults``: a value's resolution reads
    that value, the device type and the process count), so values equal as configured are
    equal as resolved: the device is probed, which imports torch, only when some value differs
    as configured (a planning pass over hundreds of runs names most of them without it)."""
    if not _differences(run_setup(ours, world_size), run_setup(theirs, world_size), skip):
        return {}
    return _differences(
        run_setup(resolve_for_launch(ours, world_size), world_size),
        run_setup(resolve_for_launch(theirs, world_size), world_size),
        skip,
    )


class Presets(Protocol):
    """The experiment presets a run's name is relative to, composed from overrides such as
    ``["experiment=quick/digits", "scheduler=step"]``: Hydra's group choices and the settings.
    ``ComposedPresets`` composes each time; a grid's planning caches them
    (``scripts.analysis.grid.Composer``)."""

    def choices(self, overrides: Sequence[str]) -> Mapping[str, Any]: ...

    def settings(self, overrides: Sequence[str]) -> RunSettings: ...


class ComposedPresets:
    """``Presets`` composed by ``experiments.config.compose_config`` on every call."""

    def choices(self, overrides: Sequence[str]) -> Mapping[str, Any]:
        from experiments.config import compose_config

        return compose_config(overrides, with_hydra=True).hydra.runtime.choices

    def settings(self, overrides: Sequence[str]) -> RunSettings:
        from experiments.config import compose_config

        return RunSettings.from_config(compose_config(overrides))


def preset_changes(
    cfg: DictConfig,
    settings: RunSettings,
    choices: Mapping[str, str],
    presets: Presets,
    world_size: int,
) -> tuple[dict[str, str], dict[str, Any]]:
    """What the run of ``cfg`` (its ``settings``) changes relative to its experiment preset:
    the config groups chosen differently, and the run-defining values that differ (those in the
    path or the label excluded), both sides resolved for a launch of ``world_size``
    processes."""
    base = [f"{g}={choices[g]}" for g in ("experiment", "scheduler") if choices.get(g)]
    preset_choices = presets.choices(base)
    changed_groups = {
        g: choices[g]
        for g in (*IDENTITY_GROUPS, "data", "model")
        if choices.get(g) and choices[g] != preset_choices.get(g)
    }
    preset = presets.settings(base + [f"{g}={c}" for g, c in changed_groups.items()])
    skip = set(IN_PATH_KEYS) | label_references(cfg)
    values = value_changes(settings, preset, world_size, skip)
    group_changes = {g: c for g, c in changed_groups.items() if g in IDENTITY_GROUPS}
    return group_changes, values


def resolve_for_launch(settings: RunSettings, world_size: int) -> RunSettings:
    """``settings`` with their device-dependent values resolved as this launch trains them
    (precision, channels_last, threads, ...: ``experiments.runtime.with_device_defaults`` on
    the device type ``trainer.accelerator`` picks). The workers train these settings; the run
    records them."""
    import torch

    from experiments.runtime import launch_device_type, processes_per_node, with_device_defaults

    trainer = settings.trainer
    device = torch.device(launch_device_type(str(trainer.accelerator)))
    jobs_on_node = trainer.gpu_slots // trainer.devices
    return with_device_defaults(settings, device, processes_per_node(world_size, jobs_on_node))


def _world(settings: RunSettings, world_size: int | None) -> int:
    from experiments.running.processes import plan_launch

    return world_size or plan_launch(settings.trainer.devices).world_size


def run_suffix(
    cfg: DictConfig,
    choices: Mapping[str, str | None],
    world_size: int | None = None,
    presets: Presets | None = None,
    settings: RunSettings | None = None,
) -> tuple[str, dict[str, Any]]:
    """The identity suffix of ``cfg``'s run directory and the changes it names (groups and
    values), for a launch of ``world_size`` processes (by default the one ``trainer.devices``
    plans), relative to the presets ``presets`` composes (``ComposedPresets`` by default);
    ``settings``: ``cfg``'s, when the caller has made them."""
    settings = settings or RunSettings.from_config(cfg)
    world = _world(settings, world_size)
    known = {group: choice for group, choice in choices.items() if choice}
    groups, values = preset_changes(cfg, settings, known, presets or ComposedPresets(), world)
    return identity_suffix(groups, values), {**groups, **values}


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
    from experiments.provenance import code_version

    settings = RunSettings.from_config(cfg)
    world = _world(settings, world_size)
    resolved = resolve_for_launch(settings, world)
    suffix, changes = run_suffix(cfg, choices, world)
    setup = run_setup(resolved, world)
    if read_data:
        setup = dict(sorted({**setup, DATA_FINGERPRINT_KEY: _data_fingerprint(resolved)}.items()))
    identity = RunIdentity(
        label=f"{settings.scheduler.label}{suffix}",
        changes=changes,
        setup=setup,
        label_settings=label_settings(cfg),
        code_version=code_version(exclude=(settings.paths.results_dir, settings.data.root)),
        numerics=rounding_values(resolved),
    )
    return run_directory(settings, suffix).absolute(), identity


def _data_fingerprint(resolved: RunSettings) -> str:
    """The setup's ``data.fingerprint`` of the data ``resolved`` trains on, after checking the
    batch against its training set (a value only the data can refuse is a ConfigError)."""
    from experiments.data import fingerprint_data, make_dataset
    from experiments.data.validation_split import ValidationSplitError
    from experiments.validation import check_batch_fits, refusal

    try:
        data = resolved.data
        dataset = make_dataset(data.name, data.root, data.image_size, **data.options)
    except (ValueError, TypeError) as error:  # an option the dataset's builder refuses
        raise refusal("data", resolved.data.name, error) from error
    try:
        fingerprint = fingerprint_data(dataset, resolved.data.val_size)
    except ValidationSplitError as error:  # a config value that only the data can refuse
        raise ConfigError(str(error)) from None
    check_batch_fits(resolved, fingerprint.num_train)
    return fingerprint.value()


def run_directory(settings: RunSettings, suffix: str) -> Path:
    """``<results>/runs/<experiment>/<dataset>-<model>/<label><suffix>/seed=<n>``."""
    label = f"{settings.scheduler.label}{suffix}"
    where = rd.run_path(
        settings.experiment_name, settings.data.name, settings.model.name, label, settings.seed
    )
    return Path(settings.paths.results_dir) / "runs" / where


# ------------------------------------------------------------------ launch decisions


@dataclass(frozen=True)
class RunIdentity:
    """What names and defines a run; travels to the worker processes with the config."""

    label: str  # scheduler label + identity suffix: the run's name in tables and wandb
    changes: dict[str, Any]  # groups and values that differ from the experiment preset
    setup: dict[str, Any]  # every run-defining value, flat
    label_settings: dict[str, Any]  # the settings the label names (identity.label_settings)
    code_version: dict[str, Any]
    # The resolved ROUNDING_KEYS this launch trains with (experiments.run_identity).
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


def check_resumed_setup(
    run_dir: rd.RunDir, state: Mapping[str, Any], identity: RunIdentity, allow_numerics: bool
) -> list[str]:
    """Refuse a checkpoint (``state``) of another setup, or one written with other rounding
    values unless ``allow_numerics`` (then return how they differ, recorded with the resume).
    Every rank checks the checkpoint it continues; a repair trains nothing, so it needs no
    rounding check."""
    differences = setup_differences(state.get("setup") or {}, identity.setup)
    if differences:
        raise ConfigError(
            f"{run_dir.root} holds a run with different settings "
            f"({'; '.join(differences)}): give this run another scheduler.label or "
            "experiment_name, or delete the old run"
        )
    if identity.repair:
        return []
    saved = state.get("numerics")
    differences = rounding_differences([saved] if saved else [], identity.numerics)
    if differences and not allow_numerics:
        raise ConfigError(
            f"{run_dir.root} holds a checkpoint written with other rounding values "
            f"({'; '.join(differences)}): this launch trains nothing; {numerics_remedy()}"
        )
    return differences


def numerics_remedy() -> str:
    return (
        "a resume never mixes them silently: relaunch with the run's values, or with "
        "trainer.allow_numerics_change=true to resume anyway (recorded with the resume in "
        "summary.json)"
    )


def decide(
    run_dir: rd.RunDir, identity: RunIdentity, world_size: int, settings: RunSettings
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
    trainer = settings.trainer
    crossed = _check_resumable(run_dir, stored, world_size, identity, trainer.allow_code_change)
    _check_same_numerics(run_dir, stored, identity, trainer.allow_numerics_change)
    if crossed is not None:
        log.warning(
            "resuming %s across code versions (%s -> %s): allowed by trainer.allow_code_change",
            run_dir.root,
            describe_code_version(crossed),
            describe_code_version(identity.code_version),
        )
    return action, replace(identity, code_change_from=crossed)
