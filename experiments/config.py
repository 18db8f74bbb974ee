"""Typed schemas of the Hydra config tree (registered in Hydra's ConfigStore) and the semantic
checks run on a composed config before anything is built.

The YAML files under ``conf/`` pull these schemas in through their defaults lists, so a misspelt
key or a wrong type fails at composition time; ``validate_config`` then checks values and names.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
PUBLIC_GROUPS = (
    "experiment",
    "data",
    "model",
    "optimizer",
    "scheduler",
    "trainer",
    "logger",
    "hydra/launcher",
)
PLUGIN_LAUNCHERS = ("basic", "joblib", "submitit_local", "submitit_slurm")

OPTIMIZER_NAMES = ("sgd", "adam", "sgd_hd", "schedulefree_sgd")
# Methods whose optimizer sets the learning rate itself: scheduler.name -> the optimizer it
# needs (scheduler=hd selects it through conf/scheduler/hd.yaml). Their schedule slot is the
# registry's "optimizer" schedule, which leaves the lr alone.
OPTIMIZER_OWNED_LR = {"hd": "sgd_hd", "schedulefree": "schedulefree_sgd"}
LOGGER_NAMES = ("wandb", "none")
ACCELERATORS = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp32")
LOADERS = ("device", "classic")
PROGRESS_MODES = ("auto", "bar", "plain")
DECODERS = ("cpu", "gpu")
WANDB_MODES = ("online", "offline", "disabled")
CIFAR_IMAGE_SIZE = 32


class ConfigError(ValueError):
    """A config value is outside what the runner accepts."""


@dataclass
class PathsConfig:
    results_dir: str = "results"
    data_dir: str = "data"


@dataclass
class DataConfig:
    name: str = MISSING
    root: str = "${paths.data_dir}"
    image_size: int = 32
    augment: bool = True
    download: bool = False
    verify: bool = True  # cifar: check the files against the official md5s
    drop_last: bool = False
    crop_size: int = 224  # imagenet: train crop / eval centre crop
    resize_size: int = 256  # imagenet: eval resize before the centre crop
    follow_links: bool = False  # imagenet: read links that leave the dataset root
    skip_bad_images: bool = False  # imagenet: replace unreadable images instead of failing
    max_image_pixels: int = 40_000_000  # imagenet: larger images are refused before decoding
    decode: str = "cpu"  # imagenet JPEG decoding: cpu (PIL in the workers) | gpu (nvjpeg)


@dataclass
class ModelConfig:
    name: str = MISSING
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class SGDConfig:
    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4


@dataclass
class SGDHDConfig:
    """SGD with hypergradient descent on the lr (``autodrop.hd.SGDHD``): the task's SGD
    settings, lr as the initial alpha, plus the hypergradient lr ``beta``."""

    name: str = "sgd_hd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    beta: float = 1e-4


@dataclass
class ScheduleFreeSGDConfig:
    """Schedule-free SGD: lr is the task's SGD lr, multiplied by ``lr_multiplier``; momentum is
    the interpolation between z and x (the task's SGD momentum carries over); ``nesterov`` is
    not used (schedule-free SGD has no momentum buffer) and exists so the task presets' SGD
    settings compose."""

    name: str = "schedulefree_sgd"
    lr: float = 0.1
    lr_multiplier: float = 10.0
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    warmup_epochs: float = 5.0


@dataclass
class AdamConfig:
    name: str = "adam"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass
class SchedulerConfig:
    """Fields every schedule has; ``label`` names the run directory (name plus a suffix)."""

    name: str = MISSING
    label: str = MISSING


@dataclass
class StepConfig(SchedulerConfig):
    milestones: list[int] | None = None
    gamma: float = 0.2


@dataclass
class CosineConfig(SchedulerConfig):
    eta_min: float = 0.0
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.0


@dataclass
class OneCycleConfig(SchedulerConfig):
    max_lr: float | None = None
    pct_start: float = 0.3
    anneal_strategy: str = "cos"
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    three_phase: bool = False
    cycle_momentum: bool = True
    base_momentum: float = 0.85
    max_momentum: float = 0.95


@dataclass
class CyclicConfig(SchedulerConfig):
    base_lr: float | None = None
    max_lr: float | None = None
    step_size_epochs: float = 2.0


@dataclass
class ExponentialConfig(SchedulerConfig):
    gamma: float = 0.95


@dataclass
class PlateauConfig(SchedulerConfig):
    mode: str = "min"
    factor: float = 0.1
    patience: int = 10
    threshold: float = 1e-4
    threshold_mode: str = "rel"
    cooldown: int = 0
    min_lr: float = 0.0


@dataclass
class ConstantConfig(SchedulerConfig):
    pass


@dataclass
class AutoDropConfig(SchedulerConfig):
    window: int = 64
    rho: float = 0.95
    buffer_size: int = 10
    threshold: float = 0.1
    min_lr: float = 1e-4


@dataclass
class TrainableLRConfig(SchedulerConfig):
    gap_epochs: float = 0.33
    bound: float = 0.25
    gamma: float = 1.0


@dataclass
class OptimizerOwnedLRConfig(SchedulerConfig):
    """hd, schedulefree: no schedule options; the method's settings live on ``optimizer``."""


@dataclass
class AutoDropV1Config(SchedulerConfig):
    theta: float = 0.01
    drop_factor: float = 0.2
    extra_epochs: int = 20
    auto_theta: bool = True
    max_theta: float = 1.0
    min_lr: float = 1e-4
    average_weights: bool = True


SCHEDULER_SCHEMAS: dict[str, type[SchedulerConfig]] = {
    "step": StepConfig,
    "cosine": CosineConfig,
    "onecycle": OneCycleConfig,
    "clr": CyclicConfig,
    "exp": ExponentialConfig,
    "plateau": PlateauConfig,
    "constant": ConstantConfig,
    "autodrop": AutoDropConfig,
    "autodrop_v1": AutoDropV1Config,
    "tlr": TrainableLRConfig,
    "hd": OptimizerOwnedLRConfig,
    "schedulefree": OptimizerOwnedLRConfig,
}


@dataclass
class TrainerConfig:
    epochs: int = 200
    batch_size: int = 128  # global: every rank gets batch_size / world_size
    eval_batch_size: int = 512  # global, split like batch_size
    devices: int = 1
    accelerator: str = "auto"
    precision: str = "auto"
    channels_last: bool | None = None  # None (auto): on for CUDA, off on the CPU
    compile: bool = False
    cudnn_benchmark: bool = True
    deterministic: bool = False
    num_workers: int = -1  # -1 (auto): the CPUs available to the process minus two
    cpu_threads: int = 0  # torch intra-op threads per process; 0: torch's default / processes
    loader: str = "device"
    track_angle: bool = False
    progress: str = "auto"
    sync_bn: bool = True  # BatchNorm over the global batch whenever world_size > 1
    nan_check_every: int = 200  # optimizer steps between loss checks; 0 = at epoch end only
    checkpoint_every_epochs: int = 1
    checkpoint_every_minutes: float = 0.0  # also once this long since the last one; 0: off
    gpu_slots: int = 0  # >0: share this many GPUs of the node among the jobs of a sweep
    allow_code_change: bool = False  # resume a run that other code started (recorded)
    stop_check_every: int = 10  # steps between the ranks' agreement to stop on a signal


@dataclass
class WandbConfig:
    name: str = "wandb"
    project: str = "autodrop-bench"
    entity: str | None = None
    mode: str | None = None  # None: WANDB_MODE from the environment, else online
    tags: list[str] = field(default_factory=list)
    init_timeout_s: float = 30.0


@dataclass
class NoLoggerConfig:
    name: str = "none"


OPTIMIZER_SCHEMAS: dict[str, type] = {
    "sgd": SGDConfig,
    "adam": AdamConfig,
    "sgd_hd": SGDHDConfig,
    "schedulefree_sgd": ScheduleFreeSGDConfig,
}
LOGGER_SCHEMAS: dict[str, type] = {"wandb": WandbConfig, "none": NoLoggerConfig}
@dataclass
class LRSweepConfig:
    """A sweep over the initial lr (experiment=ablation/lr_sensitivity): a preset sets
    ``optimizer.lr: ${mul:${lr_sweep.base_lr},${lr_sweep.multiplier}}`` and sweeps
    ``lr_sweep.multiplier``. Unused (and without effect) elsewhere."""

    base_lr: float | None = None
    multiplier: float = 1.0


TOP_LEVEL_KEYS = ("experiment_name", "seed")
FIXED_SCHEMAS: dict[str, type] = {
    "paths": PathsConfig,
    "data": DataConfig,
    "model": ModelConfig,
    "trainer": TrainerConfig,
    "lr_sweep": LRSweepConfig,
}
# Config sections whose schema depends on the chosen option (its ``name``).
CHOSEN_SCHEMAS: dict[str, dict[str, type]] = {
    "optimizer": OPTIMIZER_SCHEMAS,
    "scheduler": SCHEDULER_SCHEMAS,
    "logger": LOGGER_SCHEMAS,
}
# Keys below these hold free-form options (passed on as keyword arguments).
FREE_FORM_KEYS = ("model.options",)


@dataclass
class Config:
    experiment_name: str = "adhoc"
    seed: int = 0
    lr_sweep: LRSweepConfig = field(default_factory=LRSweepConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    trainer: TrainerConfig = MISSING
    logger: Any = MISSING


def section_schemas(section: str, chosen: str | None = None) -> list[type]:
    """The schemas a config section may follow: its one schema, or the chosen option's (all
    options' when ``chosen`` is None)."""
    if section in FIXED_SCHEMAS:
        return [FIXED_SCHEMAS[section]]
    options = CHOSEN_SCHEMAS.get(section, {})
    if chosen is None:
        return list(options.values())
    return [options[chosen]] if chosen in options else []


def schema_keys(section: str, chosen: str | None = None) -> list[str]:
    """Dotted keys of a section (``trainer.epochs``, ...), over ``section_schemas``."""
    names = {f.name for schema in section_schemas(section, chosen) for f in fields(schema)}
    return sorted(f"{section}.{name}" for name in names)


def known_keys() -> list[str]:
    """Every key some composition of the config tree can have (hydra.* aside)."""
    keys = [*TOP_LEVEL_KEYS]
    for section in (*FIXED_SCHEMAS, *CHOSEN_SCHEMAS):
        keys += schema_keys(section)
    return sorted(set(keys))


def unknown_key_message(key: str, candidates: Iterable[str]) -> str:
    """'unknown key trainer.epoch; did you mean trainer.epochs?' (difflib's closest match)."""
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.85)
    if close:
        return f"unknown key {key}; did you mean {close[0]}?"
    return f"unknown key {key} (--cfg job prints the config with every key)"


def public_config_groups() -> str:
    """One line per user-facing config group with its options (for ``--help``)."""
    lines = []
    for group in PUBLIC_GROUPS:
        folder = CONF_DIR / group
        options = sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml"))
        if group == "hydra/launcher":
            options = [*PLUGIN_LAUNCHERS, *options]
        lines.append(f"{group}: {', '.join(options)}")
    return "\n".join(lines)


def compact_number(value: Any) -> str:
    """A number as labels show it (10.0 -> '10', 0.0001 -> '0.0001'); None -> 'none'."""
    if value is None:
        return "none"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:g}"


def multiply(*factors: Any) -> float:
    """The product of numbers (the ``mul`` resolver: ``${mul:0.05,4}`` -> 0.2)."""
    if not factors:
        raise ConfigError("${mul:...} needs at least one number")
    product = 1.0
    for factor in factors:
        if isinstance(factor, bool) or not isinstance(factor, int | float):
            raise ConfigError(f"${{mul:...}} factor {factor!r} is invalid: must be a number")
        product *= factor
    return product


def register_configs() -> None:
    """Put the schemas into Hydra's ConfigStore and the help resolver in OmegaConf
    (idempotent)."""
    OmegaConf.register_new_resolver("public_config_groups", public_config_groups, replace=True)
    OmegaConf.register_new_resolver("compact", compact_number, replace=True)
    OmegaConf.register_new_resolver("checked_path", checked_relative_path, replace=True)
    OmegaConf.register_new_resolver("mul", multiply, replace=True)
    store = ConfigStore.instance()
    store.store(name="config_schema", node=Config)
    for section, schemas in CHOSEN_SCHEMAS.items():
        for name, schema in schemas.items():
            store.store(group=f"schema/{section}", name=name, node=schema)


def compose_config(overrides: Sequence[str] = (), *, with_hydra: bool = False) -> DictConfig:
    """The config ``python -m experiments.train <overrides>`` would run (no run is started)."""
    register_configs()
    if GlobalHydra.instance().is_initialized():  # inside a running Hydra app (this tree's)
        return compose("config", overrides=list(overrides), return_hydra_config=with_hydra)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=with_hydra)


def compose_with_choices(overrides: Sequence[str] = ()) -> tuple[DictConfig, dict[str, Any]]:
    """The task config of ``overrides`` (no ``hydra`` node) and Hydra's group choices: what the
    runner's task function receives."""
    cfg = compose_config(overrides, with_hydra=True)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def _check_choice(key: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        _fail(key, value, f"allowed values are {', '.join(choices)}")


def _check_at_least(key: str, value: float, low: float) -> None:
    if value < low:
        _fail(key, value, f"must be >= {low}")


def _check_positive(key: str, value: float) -> None:
    if not value > 0:
        _fail(key, value, "must be > 0")


def checked_relative_path(value: str) -> str:
    """``value`` if it is a safe relative path (Hydra's sweep directory is built from it)."""
    _check_relative_path("experiment_name", str(value))
    return str(value)


def _check_relative_path(key: str, value: str) -> None:
    parts = value.split("/")
    if not value or value.startswith("/") or any(p in ("", ".", "..") for p in parts):
        _fail(key, value, "must be a non-empty relative path without '.', '..' or empty parts")


def _check_label(label: str, name: str) -> None:
    if "/" in label or label.split("-")[0] != name:
        _fail(
            "scheduler.label",
            label,
            f"must be the schedule name {name!r}, optionally followed by '-<setting>' "
            "(e.g. 'autodrop-window=32'), and contain no '/'",
        )


def _check_known_keys(cfg: DictConfig) -> None:
    """Keys added with '+' pass Hydra's composition: refuse those no schema has (scheduler
    options are checked against the chosen schedule in validate_config)."""
    sections = (*FIXED_SCHEMAS, *CHOSEN_SCHEMAS)
    for key in cfg:
        if key not in (*TOP_LEVEL_KEYS, *sections):
            raise ConfigError(unknown_key_message(str(key), known_keys()))
    for section in sections:
        if section == "scheduler" or not isinstance(cfg[section], DictConfig):
            continue
        chosen = cfg[section].get("name") if section in CHOSEN_SCHEMAS else None
        allowed = schema_keys(section, chosen)
        for key in cfg[section]:
            dotted = f"{section}.{key}"
            if dotted not in allowed:
                raise ConfigError(unknown_key_message(dotted, allowed))


def registry_schedule_name(scheduler_name: str) -> str:
    """The schedule registry's name for ``scheduler.name`` (hd, schedulefree -> "optimizer")."""
    return "optimizer" if scheduler_name in OPTIMIZER_OWNED_LR else scheduler_name


def _check_method_optimizer(optimizer: DictConfig) -> None:
    if optimizer.name == "sgd_hd":
        _check_at_least("optimizer.beta", optimizer.beta, 0.0)
    if optimizer.name == "schedulefree_sgd":
        _check_positive("optimizer.lr_multiplier", optimizer.lr_multiplier)
        _check_at_least("optimizer.warmup_epochs", optimizer.warmup_epochs, 0.0)
        if not 0.0 < optimizer.momentum < 1.0:
            _fail(
                "optimizer.momentum",
                optimizer.momentum,
                "schedule-free's interpolation must be in (0, 1)",
            )


def _check_optimizer_pairing(optimizer_name: str, scheduler_name: str) -> None:
    """An optimizer that sets its own lr goes with its method's scheduler, and only with it."""
    needed = OPTIMIZER_OWNED_LR.get(scheduler_name)
    if needed is not None and optimizer_name != needed:
        _fail(
            "optimizer.name",
            optimizer_name,
            f"scheduler.name={scheduler_name!r} needs optimizer.name={needed!r} "
            f"(scheduler={scheduler_name} selects it; drop the optimizer override)",
        )
    owners = {optimizer: method for method, optimizer in OPTIMIZER_OWNED_LR.items()}
    if optimizer_name in owners and scheduler_name != owners[optimizer_name]:
        _fail(
            "scheduler.name",
            scheduler_name,
            f"optimizer.name={optimizer_name!r} sets its own learning rate: the allowed value "
            f"is {owners[optimizer_name]!r} (use scheduler={owners[optimizer_name]})",
        )


def validate_config(cfg: DictConfig) -> None:
    """Check values and names of a composed config; raise ConfigError naming key and value."""
    from autodrop.schedules import SCHEDULE_NAMES, schedule_options
    from experiments.data import DATASET_NAMES
    from models import MODEL_NAMES

    _check_known_keys(cfg)
    _check_relative_path("experiment_name", cfg.experiment_name)
    _check_at_least("seed", cfg.seed, 0)
    _check_choice("data.name", cfg.data.name, DATASET_NAMES)
    _check_at_least("data.image_size", cfg.data.image_size, 8)
    _check_at_least("data.max_image_pixels", cfg.data.max_image_pixels, 1)
    if cfg.data.name.startswith("cifar") and cfg.data.image_size != CIFAR_IMAGE_SIZE:
        _fail(
            "data.image_size",
            cfg.data.image_size,
            f"{cfg.data.name} images are {CIFAR_IMAGE_SIZE}x{CIFAR_IMAGE_SIZE}: set "
            f"data.image_size={CIFAR_IMAGE_SIZE} (quick presets shrink it for digits)",
        )
    _check_choice("model.name", cfg.model.name, MODEL_NAMES)

    _check_choice("optimizer.name", cfg.optimizer.name, OPTIMIZER_NAMES)
    _check_positive("optimizer.lr", cfg.optimizer.lr)
    _check_at_least("optimizer.weight_decay", cfg.optimizer.weight_decay, 0.0)
    if cfg.optimizer.name in ("sgd", "sgd_hd") and not 0.0 <= cfg.optimizer.momentum < 1.0:
        _fail("optimizer.momentum", cfg.optimizer.momentum, "must be in [0, 1)")
    _check_method_optimizer(cfg.optimizer)

    method_names = [n for n in SCHEDULE_NAMES if n != "optimizer"] + list(OPTIMIZER_OWNED_LR)
    _check_choice("scheduler.name", cfg.scheduler.name, method_names)
    _check_optimizer_pairing(cfg.optimizer.name, cfg.scheduler.name)
    _check_label(cfg.scheduler.label, cfg.scheduler.name)
    accepted = schedule_options(registry_schedule_name(cfg.scheduler.name))
    for key in cfg.scheduler:
        if key not in ("name", "label", *accepted):
            _fail(
                f"scheduler.{key}",
                cfg.scheduler[key],
                f"schedule {cfg.scheduler.name!r} has no such option; its options are "
                f"{', '.join(accepted)}",
            )

    trainer = cfg.trainer
    _check_at_least("trainer.epochs", trainer.epochs, 1)
    _check_at_least("trainer.batch_size", trainer.batch_size, 1)
    _check_at_least("trainer.eval_batch_size", trainer.eval_batch_size, 1)
    _check_at_least("trainer.devices", trainer.devices, 1)
    if trainer.batch_size % trainer.devices:
        _fail(
            "trainer.batch_size",
            trainer.batch_size,
            f"the global batch must be divisible by trainer.devices={trainer.devices}",
        )
    _check_at_least("trainer.num_workers", trainer.num_workers, -1)
    _check_at_least("trainer.checkpoint_every_epochs", trainer.checkpoint_every_epochs, 1)
    _check_at_least("trainer.checkpoint_every_minutes", trainer.checkpoint_every_minutes, 0.0)
    _check_at_least("trainer.gpu_slots", trainer.gpu_slots, 0)
    if trainer.gpu_slots and trainer.gpu_slots % trainer.devices:
        _fail(
            "trainer.gpu_slots",
            trainer.gpu_slots,
            f"must be a multiple of trainer.devices={trainer.devices} (each job claims that many)",
        )
    _check_choice("data.decode", cfg.data.decode, DECODERS)
    _check_at_least("trainer.cpu_threads", trainer.cpu_threads, 0)
    _check_at_least("trainer.nan_check_every", trainer.nan_check_every, 0)
    _check_at_least("trainer.stop_check_every", trainer.stop_check_every, 1)
    _check_choice("trainer.accelerator", trainer.accelerator, ACCELERATORS)
    _check_choice("trainer.precision", trainer.precision, PRECISIONS)
    _check_choice("trainer.loader", trainer.loader, LOADERS)
    _check_choice("trainer.progress", trainer.progress, PROGRESS_MODES)
    if trainer.loader == "device" and cfg.data.name == "imagenet":
        _fail("trainer.loader", trainer.loader, "imagenet needs trainer.loader=classic")

    _check_choice("logger.name", cfg.logger.name, LOGGER_NAMES)
    if cfg.logger.name == "wandb" and cfg.logger.mode is not None:
        _check_choice("logger.mode", cfg.logger.mode, WANDB_MODES)
    _check_optimizer_and_schedule_build(cfg)


# Steps per epoch of the trial build below: the real value needs the data, so take a large one
# (a check that depends on it may still refuse at the real build, also before any training).
PROBE_STEPS_PER_EPOCH = 1000


def _check_optimizer_and_schedule_build(cfg: DictConfig) -> None:
    """Build the optimizer and the schedule on a one-weight model, so a value their
    constructors reject is refused here, before any data, model or run directory exists."""
    import torch

    from experiments.components import build_optimizer, build_schedule

    optimizer_cfg = cfg.optimizer
    if optimizer_cfg.name == "adam":
        if len(optimizer_cfg.betas) != 2:
            _fail("optimizer.betas", list(optimizer_cfg.betas), "must be two numbers in [0, 1)")
        for index, beta in enumerate(optimizer_cfg.betas):
            if not 0.0 <= beta < 1.0:
                _fail(f"optimizer.betas[{index}]", beta, "must be in [0, 1)")
        _check_at_least("optimizer.eps", optimizer_cfg.eps, 0.0)
    if optimizer_cfg.name in ("sgd", "sgd_hd") and optimizer_cfg.nesterov:
        if not optimizer_cfg.momentum > 0:
            _fail(
                "optimizer.nesterov",
                True,
                f"needs optimizer.momentum > 0 (optimizer.momentum={optimizer_cfg.momentum!r})",
            )
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
