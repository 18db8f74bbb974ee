"""Run identity: which config values define a run, and the directory name that carries them.

Two launches share a run directory if and only if they would train the same thing. The directory
is ``<experiment>/<dataset>-<model>/<label><suffix>/seed=<n>`` where the suffix lists, in sorted
order, every config group and every run-defining value that differs from the experiment preset
(``step,optimizer.lr=0.1``); values the label already shows (``autodrop-window=32``) are not
repeated.

What defines a run is everything that changes what is trained (data, model, optimizer, schedule,
epochs, batch, precision, seed, ...). What does not is how and where it runs: the keys and
prefixes in ``EXECUTION_KEYS``. A key added to the config later defines runs until it is listed
there, so a new setting can split runs apart but never merge two different ones.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments import rundir as rd

# Keys (or key prefixes ending in '.') that change how or where a run executes, not its result.
EXECUTION_KEYS = (
    "paths.",
    "logger.",
    "data.root",
    "data.download",
    "data.verify",
    "data.follow_links",
    "data.skip_bad_images",
    "data.max_image_pixels",
    "data.decode",
    "data.num_workers",
    "trainer.devices",
    "trainer.accelerator",
    "trainer.num_workers",
    "trainer.cpu_threads",
    "trainer.progress",
    "trainer.compile",
    "trainer.cudnn_benchmark",
    "trainer.deterministic",
    "trainer.channels_last",
    "trainer.eval_batch_size",
    "trainer.nan_check_every",
    "trainer.track_angle",
    "trainer.allow_code_change",
    "trainer.checkpoint_every_epochs",
    "trainer.checkpoint_every_minutes",
    "trainer.gpu_slots",
    "trainer.stop_check_every",
    "scheduler.label",
)
# Defining, but already spelled in the directory path itself.
IN_PATH_KEYS = ("experiment_name", "seed", "data.name", "model.name", "scheduler.name")
# Config groups whose choice may differ from the preset's; data and model show in the path.
IDENTITY_GROUPS = ("optimizer", "trainer", "protocol")
PATH_GROUPS = ("experiment", "scheduler", "data", "model")
# Longer suffixes are replaced by a digest of the differences (which summary.json lists).
MAX_SUFFIX_CHARS = 120
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.+\-\[\],=]*$")
_REFERENCE = re.compile(r"\$\{([^${}:]*:)?([^${}:,]+)")


def is_execution_key(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in EXECUTION_KEYS)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, sub in value.items():
            flat.update(flatten(sub, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: value}


def run_setup(cfg: DictConfig) -> dict[str, Any]:
    """The run-defining values of a composed config, flat and resolved (plain JSON data)."""
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    resolved.pop("hydra", None)
    return {k: v for k, v in sorted(flatten(resolved).items()) if not is_execution_key(k)}


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
        return f"{value:g}"
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


def preset_changes(
    cfg: DictConfig, choices: Mapping[str, str], compose: Any
) -> tuple[dict[str, str], dict[str, Any]]:
    """What this run changes relative to its experiment preset: the config groups chosen
    differently, and the run-defining values that differ (those in the path or the label
    excluded). ``compose(overrides, with_hydra=...)`` composes the config tree
    (``experiments.config.compose_config``)."""
    base = [f"{g}={choices[g]}" for g in ("experiment", "scheduler") if choices.get(g)]
    preset_choices = compose(base, with_hydra=True).hydra.runtime.choices
    changed_groups = {
        g: choices[g]
        for g in (*IDENTITY_GROUPS, "data", "model")
        if choices.get(g) and choices[g] != preset_choices.get(g)
    }
    preset = compose(base + [f"{g}={c}" for g, c in changed_groups.items()], with_hydra=False)
    ours, theirs = run_setup(cfg), run_setup(preset)
    skip = set(IN_PATH_KEYS) | label_references(cfg)
    value_changes = {
        key: ours.get(key)
        for key in set(ours) | set(theirs)
        if key not in skip and ours.get(key) != theirs.get(key)
    }
    group_changes = {g: c for g, c in changed_groups.items() if g in IDENTITY_GROUPS}
    return group_changes, value_changes


def name_suffix(
    cfg: DictConfig, choices: Mapping[str, str | None], compose: Any
) -> tuple[str, dict[str, Any]]:
    """The directory-name suffix of ``cfg`` and the changes it names (groups and values)."""
    known = {group: choice for group, choice in choices.items() if choice}
    groups, values = preset_changes(cfg, known, compose)
    return identity_suffix(groups, values), {**groups, **values}


def run_directory(results_dir: str | Path, cfg: DictConfig, suffix: str) -> Path:
    """``<results>/runs/<experiment>/<dataset>-<model>/<label><suffix>/seed=<n>``."""
    label = f"{cfg.scheduler.label}{suffix}"
    where = rd.run_path(cfg.experiment_name, cfg.data.name, cfg.model.name, label, cfg.seed)
    return Path(results_dir) / "runs" / where
