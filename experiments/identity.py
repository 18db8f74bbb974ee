"""Run identity: which config values define a run, and the directory name that carries them.

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
setting can split runs apart but never merge two different ones.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments import rundir as rd
from experiments.config import compact_number

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


def is_execution_key(key: str) -> bool:
    return _listed(key, EXECUTION_KEYS)


def is_rounding_key(key: str) -> bool:
    return _listed(key, ROUNDING_KEYS)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, sub in value.items():
            flat.update(flatten(sub, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: value}


def _flat_values(cfg: DictConfig) -> dict[str, Any]:
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    resolved.pop("hydra", None)
    return flatten(resolved)


def bn_processes(sync_bn: bool, world_size: int) -> int:
    """Processes whose BatchNorm statistics are separate: 1 when BatchNorm is synchronised or
    there is one process, else the world size (each normalises over batch / world size)."""
    return 1 if sync_bn or world_size == 1 else world_size


def run_setup(resolved: DictConfig, world_size: int) -> dict[str, Any]:
    """The run-defining values of a config resolved for its launch (``with_device_defaults``),
    flat (plain JSON data), with the BatchNorm split of ``world_size`` processes; the data
    fingerprint is added once the data is read."""
    values = _flat_values(resolved)
    setup = {k: v for k, v in values.items() if not (is_execution_key(k) or is_rounding_key(k))}
    setup[BN_PROCESSES_KEY] = bn_processes(bool(values["trainer.sync_bn"]), world_size)
    return dict(sorted(setup.items()))


def rounding_values(resolved: DictConfig) -> dict[str, Any]:
    """The resolved values of the ``ROUNDING_KEYS`` a launch trains with."""
    values = _flat_values(resolved)
    return {key: values.get(key) for key in sorted(ROUNDING_KEYS)}


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
    """``key: old -> new`` for every key whose value differs (missing reads as absent)."""
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


SetupOf = Callable[[DictConfig], dict[str, Any]]


def preset_changes(
    cfg: DictConfig, choices: Mapping[str, str], compose: Any, setup_of: SetupOf
) -> tuple[dict[str, str], dict[str, Any]]:
    """What this run changes relative to its experiment preset: the config groups chosen
    differently, and the run-defining values that differ (those in the path or the label
    excluded). ``compose(overrides, with_hydra=...)`` composes the config tree
    (``experiments.config.compose_config``); ``setup_of`` gives a composed config's setup as
    this launch resolves it (``run_setup`` of the resolved config), so the preset's values are
    resolved on the same device and world size as the run's."""
    base = [f"{g}={choices[g]}" for g in ("experiment", "scheduler") if choices.get(g)]
    preset_choices = compose(base, with_hydra=True).hydra.runtime.choices
    changed_groups = {
        g: choices[g]
        for g in (*IDENTITY_GROUPS, "data", "model")
        if choices.get(g) and choices[g] != preset_choices.get(g)
    }
    preset = compose(base + [f"{g}={c}" for g, c in changed_groups.items()], with_hydra=False)
    ours, theirs = setup_of(cfg), setup_of(preset)
    skip = set(IN_PATH_KEYS) | label_references(cfg)
    value_changes = {
        key: ours.get(key)
        for key in set(ours) | set(theirs)
        if key not in skip and ours.get(key) != theirs.get(key)
    }
    group_changes = {g: c for g, c in changed_groups.items() if g in IDENTITY_GROUPS}
    return group_changes, value_changes


def name_suffix(
    cfg: DictConfig, choices: Mapping[str, str | None], compose: Any, setup_of: SetupOf
) -> tuple[str, dict[str, Any]]:
    """The directory-name suffix of ``cfg`` and the changes it names (groups and values)."""
    known = {group: choice for group, choice in choices.items() if choice}
    groups, values = preset_changes(cfg, known, compose, setup_of)
    return identity_suffix(groups, values), {**groups, **values}


def run_directory(results_dir: str | Path, cfg: DictConfig, suffix: str) -> Path:
    """``<results>/runs/<experiment>/<dataset>-<model>/<label><suffix>/seed=<n>``."""
    label = f"{cfg.scheduler.label}{suffix}"
    where = rd.run_path(cfg.experiment_name, cfg.data.name, cfg.model.name, label, cfg.seed)
    return Path(results_dir) / "runs" / where
