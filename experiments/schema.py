"""Typed schemas of the Hydra config tree: where every default of the runner is declared.

The YAML files under ``conf/`` pull these schemas in through their defaults lists and set only
what differs (a dataset's name, a preset's budget), so a misspelt key or a wrong type fails at
composition time. The scheduler schemas are derived from the schedule classes' signatures, so a
schedule's defaults live in the library alone (``autodrop.registry``).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from enum import StrEnum
from types import NoneType, UnionType
from typing import Any, ClassVar

from omegaconf import MISSING

from autodrop import registry


class Accelerator(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Precision(StrEnum):
    auto = "auto"  # bf16 autocast on GPU, fp32 on CPU
    bf16 = "bf16"
    fp32 = "fp32"


class Loader(StrEnum):
    device = "device"  # data resident on the device (cifar, digits)
    classic = "classic"  # torch DataLoader with workers


class Progress(StrEnum):
    auto = "auto"  # a bar on a terminal, plain lines otherwise
    bar = "bar"
    plain = "plain"


class Decoder(StrEnum):
    cpu = "cpu"  # PIL in the loader workers
    gpu = "gpu"  # nvjpeg


class WandbMode(StrEnum):
    online = "online"
    offline = "offline"
    disabled = "disabled"


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
    decode: Decoder = Decoder.cpu  # imagenet JPEG decoding
    # Training examples held out as the validation split (0: none, the paper's protocol);
    # protocol=honest sets HONEST_VAL_SIZES[data.name] (experiments.data.validation_split).
    val_size: int = 0


#: The honest protocol's validation split per dataset (``protocol=honest``): CIFAR 5,000 of its
#: 50,000 training images (500 per class); ImageNet 10,000 (10 per class, as balanced as its val
#: folder, which stays the test set); digits 360 of its 1,437 training digits (as many, class by
#: class, as its test split). The classes take the test split's shares (validation_split).
HONEST_VAL_SIZES: dict[str, int] = {
    "cifar10": 5_000,
    "cifar100": 5_000,
    "imagenet": 10_000,
    "digits": 360,
}


def honest_val_size(dataset: str) -> int:
    """The validation split size of ``protocol=honest`` for ``dataset`` (its resolver)."""
    if dataset not in HONEST_VAL_SIZES:
        raise ValueError(
            f"data.name={dataset!r} has no honest validation size (known: "
            f"{', '.join(HONEST_VAL_SIZES)}): set data.val_size yourself"
        )
    return HONEST_VAL_SIZES[dataset]


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
class AdamConfig:
    name: str = "adam"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass
class SGDHDConfig(SGDConfig):
    """SGD with hypergradient descent on the lr (``autodrop.hd.SGDHD``): the task's SGD
    settings, lr as the initial alpha, plus the hypergradient lr ``beta``."""

    #: The scheduler whose method this optimizer is (it sets the lr itself).
    lr_method: ClassVar[str] = "hd"
    name: str = "sgd_hd"
    beta: float = 1e-4


@dataclass
class ScheduleFreeSGDConfig(SGDConfig):
    """Schedule-free SGD: lr is the task's SGD lr, multiplied by ``lr_multiplier``; momentum is
    the interpolation between z and x (the task's SGD momentum carries over); ``nesterov`` is
    not used (schedule-free SGD has no momentum buffer) and exists so the task presets' SGD
    settings compose."""

    lr_method: ClassVar[str] = "schedulefree"
    name: str = "schedulefree_sgd"
    lr_multiplier: float = 10.0
    warmup_epochs: float = 5.0  # linear warmup (BASELINES.md section 3.6 proposal)


OPTIMIZER_SCHEMAS: dict[str, type] = {
    "sgd": SGDConfig,
    "adam": AdamConfig,
    "sgd_hd": SGDHDConfig,
    "schedulefree_sgd": ScheduleFreeSGDConfig,
}
# Methods whose optimizer sets the learning rate: scheduler name -> that optimizer's name
# (conf/scheduler/<method>.yaml selects it).
OPTIMIZER_OWNED_LR: dict[str, str] = {
    schema.lr_method: name
    for name, schema in OPTIMIZER_SCHEMAS.items()
    if hasattr(schema, "lr_method")
}


def _omegaconf_type(annotation: Any) -> Any:
    """The field type OmegaConf can hold for a constructor annotation: a plain type, an
    Optional of one, or Any (lists and other containers are checked by the constructor)."""
    if annotation in (int, float, bool, str):
        return annotation
    if isinstance(annotation, UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not NoneType]
        if len(members) == 1 and members[0] in (int, float, bool, str):
            return members[0] | None
    return Any


def scheduler_schema(name: str) -> type:
    """The config schema of schedule ``name``: ``name``, ``label`` (the run's name; an ablation
    sets e.g. ``autodrop-window=${scheduler.window}``) and the schedule's constructor options
    with the constructor's own defaults."""
    cls = registry.schedule_class(name)
    hints = typing.get_type_hints(cls.__init__)
    parameters = inspect.signature(cls).parameters
    options = []
    for option in registry.schedule_options(name):
        default = parameters[option].default
        if isinstance(default, tuple | list):
            default = field(default_factory=lambda value=default: list(value))
        elif default is inspect.Parameter.empty:
            default = MISSING
        options.append((option, _omegaconf_type(hints.get(option, Any)), default))
    return dataclasses.make_dataclass(
        f"{cls.__name__}Config",
        [("name", str, name), ("label", str, "${.name}"), *options],
    )


SCHEDULER_SCHEMAS: dict[str, type] = {
    name: scheduler_schema(name) for name in registry.SCHEDULE_NAMES
}


@dataclass
class TrainerConfig:
    epochs: int = 200
    batch_size: int = 128  # global: every rank gets batch_size / world_size
    eval_batch_size: int = 512  # global, split like batch_size
    devices: int = 1  # >1: one process per device (unless torchrun/SLURM launched us)
    accelerator: Accelerator = Accelerator.auto
    precision: Precision = Precision.auto
    channels_last: bool | None = None  # None (auto): on for CUDA, off on the CPU
    compile: bool | None = None  # None (auto): on for CUDA, off on the CPU (experiments.runtime)
    cudnn_benchmark: bool = True
    deterministic: bool = False  # opt-in: torch deterministic algorithms (slower on GPU)
    num_workers: int = -1  # classic loader / imagenet; -1: the process's CPUs minus two
    cpu_threads: int = 0  # torch intra-op threads per process; 0: torch's default / processes
    loader: Loader = Loader.device
    track_angle: bool = False  # log the epoch's angular velocity of the parameters (angle/epoch)
    progress: Progress = Progress.auto
    sync_bn: bool = True  # BatchNorm over the global batch whenever world_size > 1
    nan_check_every: int = 200  # optimizer steps between loss checks; 0 = at epoch end only
    # Checkpoints: after the last epoch and on a stop signal always, and at the end of an epoch
    # every N epochs and/or once M minutes have passed since the last one (0: that rule off).
    # None (auto): every epoch on the CPU; every 10 minutes on CUDA (experiments.runtime).
    checkpoint_every_epochs: int | None = None
    checkpoint_every_minutes: float | None = None
    gpu_slots: int = 0  # >0: share this many GPUs of the node among the jobs of a sweep
    allow_code_change: bool = False  # resume a run that other code started (recorded)
    # resume a run with other rounding values (threads, channels_last, ...; recorded)
    allow_numerics_change: bool = False
    # On SIGTERM/SIGINT/SIGUSR1/SIGUSR2 training stops between two optimizer steps with a
    # checkpoint; several processes agree on stopping every N steps (one tiny all-reduce).
    stop_check_every: int = 10


@dataclass
class WandbConfig:
    name: str = "wandb"
    project: str = "autodrop-bench"
    entity: str | None = None
    mode: WandbMode | None = None  # None: WANDB_MODE from the environment, else online
    tags: list[str] = field(default_factory=list)
    init_timeout_s: float = 30.0


@dataclass
class NoLoggerConfig:
    name: str = "none"


LOGGER_SCHEMAS: dict[str, type] = {"wandb": WandbConfig, "none": NoLoggerConfig}


@dataclass
class LRSweepConfig:
    """A sweep over the initial lr (experiment=ablation/lr_sensitivity): a preset sets
    ``optimizer.lr: ${mul:${lr_sweep.base_lr},${lr_sweep.multiplier}}`` and sweeps
    ``lr_sweep.multiplier``. Unused (and without effect) elsewhere."""

    base_lr: float | None = None
    multiplier: float = 1.0


#: The horizon study's budgets, as multiples of the task's standard epochs T.
HORIZON_BUDGETS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)


def horizon_epochs(standard_epochs: Any, budget: Any) -> int:
    """``budget`` x ``standard_epochs`` as a whole number of epochs (the ``horizon_epochs``
    resolver of the horizon study's ``trainer.epochs``); ValueError when it is not one (the
    study's checks, ``experiments.studies.check_horizon``, refuse such values first)."""
    if standard_epochs is None or budget is None:
        raise ValueError(
            "horizon.standard_epochs and horizon.budget are both needed for trainer.epochs "
            f"(got {standard_epochs!r} and {budget!r})"
        )
    epochs = float(standard_epochs) * float(budget)
    if epochs < 1 or not epochs.is_integer():
        raise ValueError(
            f"horizon.budget={budget!r} is invalid: {budget} x horizon.standard_epochs="
            f"{standard_epochs} is {epochs:g} epochs, not a whole number of epochs (>= 1)"
        )
    return int(epochs)


@dataclass
class HorizonConfig:
    """The horizon study (experiment=study/horizons/<task>, ``experiments.studies``): a run at
    ``budget`` x ``standard_epochs`` epochs (the preset sets ``trainer.epochs`` so), ``budget``
    one of HORIZON_BUDGETS. A schedule that does not need the budget is trained at the largest
    only and read at every shorter one. Unused (null) elsewhere."""

    standard_epochs: int | None = None  # T: the task's standard budget
    budget: float | None = None  # this run's budget, a multiple of T


@dataclass
class TuningConfig:
    """The tuning study (experiment=study/tuning/<task>, ``experiments.studies``): ``trial`` n
    sets every knob of the schedule's search space to the n-th point of its scrambled Halton
    sequence seeded with ``pool_seed``; null trains the schedule's defaults (the 'defaults, one
    shot' point). Unused elsewhere."""

    trial: int | None = None
    pool_seed: int = 0


def tuning_label(name: str, trial: int | None) -> str:
    """``step-trial=3``; the schedule's name for the defaults (the ``tuning_label`` resolver of
    the tuning study's ``scheduler.label``)."""
    return str(name) if trial is None else f"{name}-trial={trial}"


TOP_LEVEL_KEYS = ("experiment_name", "seed")
FIXED_SCHEMAS: dict[str, type] = {
    "paths": PathsConfig,
    "data": DataConfig,
    "model": ModelConfig,
    "trainer": TrainerConfig,
    "lr_sweep": LRSweepConfig,
    "horizon": HorizonConfig,
    "tuning": TuningConfig,
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
    horizon: HorizonConfig = field(default_factory=HorizonConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
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
