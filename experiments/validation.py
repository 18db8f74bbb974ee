"""Checks of a composed config, run before anything is built or written: a ConfigError names
the key, the bad value and what is allowed.

``check_config`` needs no torch: names against the registries (``experiments.specs``), keys
against the schemas, every value as the typed settings check it (``experiments.settings``),
and what needs several sections together. ``trial_build`` then builds the optimizer, the
schedule (on a one-weight model) and the model (on the meta device), so a value their builders
refuse is refused too; the data's own checks run when the launch reads it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from omegaconf import DictConfig, OmegaConf

from experiments import specs
from experiments.errors import ConfigError, invalid, invalid_choice
from experiments.schema import (
    CHOSEN,
    FIXED,
    TOP_LEVEL_KEYS,
    known_keys,
    schema_keys,
    unknown_key_message,
)
from experiments.settings import LOGGERS, RunSettings
from experiments.studies import check_study

# Steps per epoch of the trial build: the real value needs the data, so take a large one (a
# check that depends on it may still refuse at the real build, also before any training).
PROBE_STEPS_PER_EPOCH = 1000
PROBE_CLASSES = 10
# A builder's refusal that starts with the value it refuses ("window=0 is invalid: ...").
_NAMES_A_VALUE = re.compile(r"^[A-Za-z_][\w\[\]]*=")
# What a dataset builder returns when its whole splits are in memory (the device loader's).
IN_MEMORY = "ArraySplits"


def _check_choice(key: str, value: object, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise invalid_choice(key, value, choices)


def refusal(section: str, name: str, error: Exception) -> ConfigError:
    """A builder's ValueError as the config's: ``optimizer.lr=0.0 is invalid: ...`` when it
    names the value, else ``optimizer 'adam': <message>``."""
    message = str(error)
    if _NAMES_A_VALUE.match(message):
        return ConfigError(f"{section}.{message}")
    return ConfigError(f"{section} {name!r}: {message}")


def check_batch_fits(settings: RunSettings, num_train: int) -> None:
    """The global batch is at most the training set (read before anything is written)."""
    if settings.trainer.batch_size > num_train:
        raise invalid(
            "trainer.batch_size",
            settings.trainer.batch_size,
            f"must be <= the training set's {num_train} samples ({settings.data.name}): a larger "
            "batch would train one partial batch per epoch",
        )


def _check_known_keys(cfg: DictConfig) -> None:
    """Keys added with '+' pass Hydra's composition: refuse those no schema has."""
    sections = (*FIXED, *CHOSEN)
    for key in cfg:
        if key not in (*TOP_LEVEL_KEYS, *sections):
            raise ConfigError(unknown_key_message(str(key), known_keys()))
    for section in sections:
        if not isinstance(cfg[section], DictConfig):
            continue
        chosen = cfg[section].get("name") if section in CHOSEN else None
        allowed = schema_keys(section, chosen)
        for key in cfg[section]:
            dotted = f"{section}.{key}"
            if dotted not in allowed:
                if section in specs.KINDS:
                    options = specs.spec(section, chosen).option_names  # type: ignore[union-attr]
                    raise invalid(
                        dotted,
                        cfg[section][key],
                        f"{section} {chosen!r} has no such option; its options are "
                        f"{', '.join(options) or 'none'}",
                    )
                raise ConfigError(unknown_key_message(dotted, allowed))


def _without_interpolations(text: str) -> str:
    """``text`` with each ``${...}`` (nested ones included) replaced by one NUL character."""
    out, depth, index = [], 0, 0
    while index < len(text):
        if text.startswith("${", index):
            if depth == 0:
                out.append("\0")
            depth, index = depth + 1, index + 2
        elif text[index] == "}" and depth:
            depth, index = depth - 1, index + 1
        else:
            if depth == 0:
                out.append(text[index])
            index += 1
    return "".join(out)


def _check_label(cfg: DictConfig) -> None:
    """The label is the schedule's name, optionally '-<setting>', and every '<key>=<value>' it
    shows takes its value from the config: a written-out value could name a setting the run
    does not have and share the directory of the run that has it. (A label equal to another
    schedule's name fails the first rule.)"""
    label, name = cfg.scheduler.label, cfg.scheduler.name
    if "/" in label or label.split("-")[0] != name:
        raise invalid(
            "scheduler.label",
            label,
            f"must be the schedule name {name!r}, optionally followed by '-<setting>' "
            "(e.g. 'autodrop-window=32'), and contain no '/'",
        )
    raw = str(OmegaConf.to_container(cfg.scheduler, resolve=False).get("label", ""))
    shape = _without_interpolations(raw)
    if any(shape[i + 1 : i + 2] != "\0" for i, char in enumerate(shape) if char == "="):
        raise invalid(
            "scheduler.label",
            label,
            "a '<setting>=<value>' in a label must take its value from the config (e.g. "
            "'autodrop-window=${scheduler.window}'): a written-out value could name a setting "
            "this run does not have; use a label without '=' (e.g. 'autodrop-mine')",
        )


def _check_optimizer_pairing(settings: RunSettings) -> None:
    """An optimizer that sets its own lr goes with its method's scheduler, and only with it."""
    owners = specs.table_literal("optimizer", "SETS_ITS_OWN_LR")
    optimizer, scheduler = settings.optimizer.name, settings.scheduler.name
    needed = {method: owner for owner, method in owners.items()}.get(scheduler)
    if needed is not None and optimizer != needed:
        raise invalid(
            "optimizer.name",
            optimizer,
            f"scheduler.name={scheduler!r} needs optimizer.name={needed!r} "
            f"(scheduler={scheduler} selects it; drop the optimizer override)",
        )
    if optimizer in owners and scheduler != owners[optimizer]:
        raise invalid(
            "scheduler.name",
            scheduler,
            f"optimizer.name={optimizer!r} sets its own learning rate: the allowed value "
            f"is {owners[optimizer]!r} (use scheduler={owners[optimizer]})",
        )


def _check_loader(settings: RunSettings) -> None:
    """The device loader serves datasets held in memory; image folders need loader workers."""
    dataset = specs.spec("data", settings.data.name)
    if settings.trainer.loader == "device" and dataset.returns != IN_MEMORY:  # type: ignore[union-attr]
        raise invalid(
            "trainer.loader",
            settings.trainer.loader.value,
            f"{settings.data.name} needs trainer.loader=classic (it reads image folders, which "
            "only loader workers serve)",
        )


def check_config(cfg: DictConfig) -> RunSettings:
    """The typed settings of a composed config after every check that needs no torch; raises
    ConfigError naming key and value."""
    # Names first: other values (protocol=honest's data.val_size) are resolved from them.
    for section in specs.KINDS:
        _check_choice(f"{section}.name", cfg[section].name, specs.names(section))
    _check_choice("logger.name", cfg.logger.name, LOGGERS)
    _check_known_keys(cfg)
    check_study(cfg)  # before trainer.epochs is read: the horizon study derives it
    settings = RunSettings.from_config(cfg)
    _check_loader(settings)
    _check_optimizer_pairing(settings)
    _check_label(cfg)
    return settings


def trial_build(settings: RunSettings) -> None:
    """Build the optimizer and the schedule on a one-weight model and the model on the meta
    device, so a value their builders reject is refused before any data, model or run
    directory exists."""
    import torch

    from experiments.optimizers import build_optimizer, build_schedule
    from models import build_model

    probe = torch.nn.Linear(1, 1)
    optimizer, scheduler, model = settings.optimizer, settings.scheduler, settings.model
    try:
        built = build_optimizer(optimizer, probe, steps_per_epoch=PROBE_STEPS_PER_EPOCH)
    except (ValueError, TypeError) as error:
        raise refusal("optimizer", optimizer.name, error) from error
    try:
        build_schedule(
            scheduler, built, steps_per_epoch=PROBE_STEPS_PER_EPOCH, epochs=settings.trainer.epochs
        )
    except (ValueError, TypeError) as error:
        raise refusal("scheduler", scheduler.name, error) from error
    try:
        with torch.device("meta"):
            build_model(model.name, PROBE_CLASSES, **model.options)
    except (ValueError, TypeError) as error:
        raise refusal("model", model.name, error) from error


def validate_config(cfg: DictConfig) -> RunSettings:
    """Every check before a launch reads data: ``check_config``, then ``trial_build``."""
    settings = check_config(cfg)
    trial_build(settings)
    return settings


__all__ = [
    "PROBE_STEPS_PER_EPOCH",
    "check_batch_fits",
    "check_config",
    "refusal",
    "trial_build",
    "validate_config",
]
