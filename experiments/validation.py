"""Checks of a composed config, run before anything is built: a ConfigError names the key, the
bad value and what is allowed.

Types and fixed choices (``trainer.accelerator``, ...) are enforced by the schemas at
composition; here are the checks that need values together, the registries (datasets, models,
schedules) or the library's own constructors, which a trial build on a one-weight model runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from omegaconf import DictConfig, OmegaConf

from autodrop import registry
from experiments.config import ConfigError, check_relative_path, invalid, invalid_choice
from experiments.identity import flatten
from experiments.lr_method import build_optimizer, build_schedule
from experiments.schema import (
    CHOSEN_SCHEMAS,
    FIXED_SCHEMAS,
    LOGGER_SCHEMAS,
    OPTIMIZER_OWNED_LR,
    OPTIMIZER_SCHEMAS,
    TOP_LEVEL_KEYS,
    known_keys,
    schema_keys,
    unknown_key_message,
)
from experiments.studies import check_study

CIFAR_IMAGE_SIZE = 32
# Steps per epoch of the trial build: the real value needs the data, so take a large one (a
# check that depends on it may still refuse at the real build, also before any training).
PROBE_STEPS_PER_EPOCH = 1000
# The longest run the suite accepts (the paper's longest budget is 200 epochs): beyond it a
# mistyped budget would train for ever rather than fail.
MAX_EPOCHS = 100_000
# Folders that must name a place: an empty value would write into the current directory.
PATH_KEYS = ("paths.results_dir", "paths.data_dir", "data.root")


def _check_choice(key: str, value: object, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise invalid_choice(key, value, choices)


def _check_at_least(key: str, value: float, low: float) -> None:
    if value < low:
        raise invalid(key, value, f"must be >= {low}")


def _check_finite(cfg: DictConfig) -> None:
    """Every float of the config (lists and free-form options included) is finite: an lr of
    nan or inf passes every range check and trains until it diverges."""
    values = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    values.pop("hydra", None)
    for key, value in flatten(values).items():
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            if isinstance(item, float) and not math.isfinite(item):
                where = f"{key}[{index}]" if isinstance(value, list) else key
                raise invalid(where, item, "must be a finite number")


def _check_paths(cfg: DictConfig) -> None:
    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, str) or not value.strip():
            raise invalid(
                key,
                value,
                "must name a folder (an empty value would write into the current directory)",
            )


def check_batch_fits(cfg: DictConfig, num_train: int) -> None:
    """The global batch is at most the training set (read before anything is written)."""
    if cfg.trainer.batch_size > num_train:
        raise invalid(
            "trainer.batch_size",
            cfg.trainer.batch_size,
            f"must be <= the training set's {num_train} samples ({cfg.data.name}): a larger "
            "batch would train one partial batch per epoch",
        )


def _check_known_keys(cfg: DictConfig) -> None:
    """Keys added with '+' pass Hydra's composition: refuse those no schema has."""
    sections = (*FIXED_SCHEMAS, *CHOSEN_SCHEMAS)
    for key in cfg:
        if key not in (*TOP_LEVEL_KEYS, *sections):
            raise ConfigError(unknown_key_message(str(key), known_keys()))
    for section in sections:
        if not isinstance(cfg[section], DictConfig):
            continue
        chosen = cfg[section].get("name") if section in CHOSEN_SCHEMAS else None
        allowed = schema_keys(section, chosen)
        for key in cfg[section]:
            dotted = f"{section}.{key}"
            if dotted not in allowed:
                if section == "scheduler":
                    raise invalid(
                        dotted,
                        cfg[section][key],
                        f"schedule {chosen!r} has no such option; its options are "
                        f"{', '.join(registry.schedule_options(chosen))}",
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


def _check_optimizer_pairing(optimizer_name: str, scheduler_name: str) -> None:
    """An optimizer that sets its own lr goes with its method's scheduler, and only with it."""
    needed = OPTIMIZER_OWNED_LR.get(scheduler_name)
    if needed is not None and optimizer_name != needed:
        raise invalid(
            "optimizer.name",
            optimizer_name,
            f"scheduler.name={scheduler_name!r} needs optimizer.name={needed!r} "
            f"(scheduler={scheduler_name} selects it; drop the optimizer override)",
        )
    owners = {optimizer: method for method, optimizer in OPTIMIZER_OWNED_LR.items()}
    if optimizer_name in owners and scheduler_name != owners[optimizer_name]:
        raise invalid(
            "scheduler.name",
            scheduler_name,
            f"optimizer.name={optimizer_name!r} sets its own learning rate: the allowed value "
            f"is {owners[optimizer_name]!r} (use scheduler={owners[optimizer_name]})",
        )


def _check_dataset_name(cfg: DictConfig) -> None:
    # First: other values (protocol=honest's data.val_size) are resolved from the name.
    from experiments.data import DATASET_NAMES

    _check_choice("data.name", cfg.data.name, DATASET_NAMES)


def _check_data_and_model(cfg: DictConfig) -> None:
    from models import MODEL_NAMES

    _check_at_least("data.image_size", cfg.data.image_size, 8)
    _check_at_least("data.max_image_pixels", cfg.data.max_image_pixels, 1)
    _check_at_least("data.val_size", cfg.data.val_size, 0)
    if cfg.data.name.startswith("cifar") and cfg.data.image_size != CIFAR_IMAGE_SIZE:
        raise invalid(
            "data.image_size",
            cfg.data.image_size,
            f"{cfg.data.name} images are {CIFAR_IMAGE_SIZE}x{CIFAR_IMAGE_SIZE}: set "
            f"data.image_size={CIFAR_IMAGE_SIZE} (quick presets shrink it for digits)",
        )
    _check_choice("model.name", cfg.model.name, MODEL_NAMES)


def _check_trainer(cfg: DictConfig) -> None:
    trainer = cfg.trainer
    for key in (
        "epochs",
        "batch_size",
        "eval_batch_size",
        "devices",
        "stop_check_every",
    ):
        _check_at_least(f"trainer.{key}", trainer[key], 1)
    if trainer.epochs > MAX_EPOCHS:
        raise invalid("trainer.epochs", trainer.epochs, f"must be <= {MAX_EPOCHS}")
    for key in ("gpu_slots", "cpu_threads", "nan_check_every"):
        _check_at_least(f"trainer.{key}", trainer[key], 0)
    for key in ("checkpoint_every_epochs", "checkpoint_every_minutes"):  # None: auto
        if trainer[key] is not None:
            _check_at_least(f"trainer.{key}", trainer[key], 0)
    _check_at_least("trainer.num_workers", trainer.num_workers, -1)
    if trainer.batch_size % trainer.devices:
        raise invalid(
            "trainer.batch_size",
            trainer.batch_size,
            f"the global batch must be divisible by trainer.devices={trainer.devices}",
        )
    if trainer.gpu_slots and trainer.gpu_slots % trainer.devices:
        raise invalid(
            "trainer.gpu_slots",
            trainer.gpu_slots,
            f"must be a multiple of trainer.devices={trainer.devices} (each job claims that many)",
        )
    if trainer.loader == "device" and cfg.data.name == "imagenet":
        raise invalid("trainer.loader", trainer.loader, "imagenet needs trainer.loader=classic")


def _check_optimizer_values(optimizer: DictConfig) -> None:
    """What the optimizers' constructors accept but the suite refuses."""
    if optimizer.lr <= 0:
        raise invalid("optimizer.lr", optimizer.lr, "must be > 0")
    _check_at_least("optimizer.weight_decay", optimizer.weight_decay, 0.0)
    if optimizer.name in ("sgd", "sgd_hd") and not 0.0 <= optimizer.momentum < 1.0:
        raise invalid("optimizer.momentum", optimizer.momentum, "must be in [0, 1)")
    if optimizer.name in ("sgd", "sgd_hd") and optimizer.nesterov and not optimizer.momentum > 0:
        raise invalid(
            "optimizer.nesterov",
            True,
            f"needs optimizer.momentum > 0 (optimizer.momentum={optimizer.momentum!r})",
        )
    if optimizer.name == "sgd_hd":
        _check_at_least("optimizer.beta", optimizer.beta, 0.0)
    if optimizer.name == "schedulefree_sgd":
        if optimizer.lr_multiplier <= 0:
            raise invalid("optimizer.lr_multiplier", optimizer.lr_multiplier, "must be > 0")
        _check_at_least("optimizer.warmup_epochs", optimizer.warmup_epochs, 0.0)
        if not 0.0 < optimizer.momentum < 1.0:
            raise invalid(
                "optimizer.momentum",
                optimizer.momentum,
                "schedule-free's interpolation must be in (0, 1)",
            )
    if optimizer.name == "adam":
        if len(optimizer.betas) != 2:
            raise invalid("optimizer.betas", list(optimizer.betas), "must be two numbers in [0, 1)")
        for index, beta in enumerate(optimizer.betas):
            if not 0.0 <= beta < 1.0:
                raise invalid(f"optimizer.betas[{index}]", beta, "must be in [0, 1)")
        _check_at_least("optimizer.eps", optimizer.eps, 0.0)


def _trial_build(cfg: DictConfig) -> None:
    """Build the optimizer and the schedule on a one-weight model, so a value their
    constructors reject is refused here, before any data, model or run directory exists."""
    probe = torch.nn.Linear(1, 1)
    try:
        optimizer = build_optimizer(cfg.optimizer, probe, steps_per_epoch=PROBE_STEPS_PER_EPOCH)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"optimizer ({cfg.optimizer.name}): {error}") from error
    try:
        build_schedule(
            cfg.scheduler,
            optimizer,
            steps_per_epoch=PROBE_STEPS_PER_EPOCH,
            epochs=cfg.trainer.epochs,
        )
    except (ValueError, TypeError) as error:
        raise ConfigError(f"scheduler.{error} (schedule {cfg.scheduler.name!r})") from error


def validate_config(cfg: DictConfig) -> None:
    """Check values and names of a composed config; raise ConfigError naming key and value."""
    _check_choice("scheduler.name", cfg.scheduler.name, registry.SCHEDULE_NAMES)
    _check_choice("optimizer.name", cfg.optimizer.name, OPTIMIZER_SCHEMAS)
    _check_choice("logger.name", cfg.logger.name, LOGGER_SCHEMAS)
    _check_dataset_name(cfg)
    _check_known_keys(cfg)
    check_study(cfg)  # before trainer.epochs is read: the horizon study derives it
    _check_finite(cfg)
    _check_paths(cfg)
    check_relative_path("experiment_name", cfg.experiment_name)
    _check_at_least("seed", cfg.seed, 0)
    _check_data_and_model(cfg)
    _check_trainer(cfg)
    _check_optimizer_values(cfg.optimizer)
    _check_optimizer_pairing(cfg.optimizer.name, cfg.scheduler.name)
    _check_label(cfg)
    _trial_build(cfg)
