"""Typed settings: the composed config as frozen dataclasses, made once at the entry
(``RunSettings.from_config``) and passed down as they are (to spawned workers too: they
pickle). Each module reads the settings it uses: the job ``settings.trainer.epochs``, the data
pipeline ``settings.data``, ...

Every default of the runner's own sections is declared here, once: the Hydra schemas are
derived from these classes (``experiments.config``), so the YAML files under ``conf/`` set
only what differs. A component's options (schedule, model, optimizer, dataset) are its
builder's keyword parameters (``experiments.specs``), held in ``options``.

Each class checks its values on construction and raises a ConfigError naming the key, the
value and what is allowed. What needs several sections, the registries or the data is checked
by ``experiments.validation``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

from experiments.errors import ConfigError, at_least, check_relative_path, invalid

# The longest run the suite accepts (the paper's longest budget is 200 epochs): beyond it a
# mistyped budget would train for ever rather than fail.
MAX_EPOCHS = 100_000
# data.image_size unless a preset shrinks it (CIFAR's native side).
DEFAULT_IMAGE_SIZE = 32


class Accelerator(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Precision(StrEnum):
    auto = "auto"  # bf16 autocast on GPU, fp32 on CPU
    bf16 = "bf16"
    fp32 = "fp32"


class Loader(StrEnum):
    device = "device"  # data resident on the device (in-memory datasets: cifar, digits)
    classic = "classic"  # torch DataLoader with workers


class Progress(StrEnum):
    auto = "auto"  # a bar on a terminal, plain lines otherwise
    bar = "bar"
    plain = "plain"


class WandbMode(StrEnum):
    online = "online"
    offline = "offline"
    disabled = "disabled"


def _enum(key: str, value: Any, kind: type[StrEnum]) -> Any:
    if value is None or isinstance(value, kind):
        return value
    try:
        return kind(str(value))
    except ValueError:
        from experiments.errors import invalid_choice

        raise invalid_choice(key, value, [member.value for member in kind]) from None


def _coerce(settings: Any, section: str) -> None:
    """Fields typed with an enum hold its member (a plain string from the config becomes one)."""
    for item in dataclasses.fields(settings):
        kind = _field_enum(item.type)
        if kind is not None:
            value = _enum(f"{section}.{item.name}", getattr(settings, item.name), kind)
            object.__setattr__(settings, item.name, value)


def _field_enum(annotation: Any) -> type[StrEnum] | None:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return ENUMS.get(text.removesuffix(" | None"))


@dataclass(frozen=True)
class Paths:
    results_dir: str = "results"
    data_dir: str = "data"

    def __post_init__(self) -> None:
        for key in ("results_dir", "data_dir"):
            _folder(f"paths.{key}", getattr(self, key))


def _folder(key: str, value: Any) -> None:
    """A folder setting must name a place: an empty value would write into the current one."""
    if not isinstance(value, str) or not value.strip():
        raise invalid(
            key, value, "must name a folder (an empty value would write into the current directory)"
        )


@dataclass(frozen=True)
class LRSweep:
    """A sweep over the initial lr (experiment=ablation/lr_sensitivity): a preset sets
    ``optimizer.lr: ${mul:${lr_sweep.base_lr},${lr_sweep.multiplier}}`` and sweeps
    ``lr_sweep.multiplier``. Unused (and without effect) elsewhere."""

    base_lr: float | None = None
    multiplier: float = 1.0


@dataclass(frozen=True)
class Horizon:
    """The horizon study (experiment=study/horizons/<task>, ``experiments.studies``): a run at
    ``budget`` x ``standard_epochs`` epochs (the preset sets ``trainer.epochs`` so), ``budget``
    one of ``experiments.schema.HORIZON_BUDGETS``. A schedule that does not need the budget is
    trained at the largest only and read at every shorter one. Unused (null) elsewhere."""

    standard_epochs: int | None = None  # T: the task's standard budget
    budget: float | None = None  # this run's budget, a multiple of T


@dataclass(frozen=True)
class Tuning:
    """The tuning study (experiment=study/tuning/<task>, ``experiments.studies``): ``trial`` n
    sets every knob of the schedule's search space to the n-th point of its scrambled Halton
    sequence seeded with ``pool_seed``; null trains the schedule's defaults (the 'defaults, one
    shot' point). Unused elsewhere."""

    trial: int | None = None
    pool_seed: int = 0


@dataclass(frozen=True)
class Trainer:
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

    def __post_init__(self) -> None:
        _coerce(self, "trainer")
        for key in ("epochs", "batch_size", "eval_batch_size", "devices", "stop_check_every"):
            at_least(f"trainer.{key}", getattr(self, key), 1)
        if self.epochs > MAX_EPOCHS:
            raise invalid("trainer.epochs", self.epochs, f"must be <= {MAX_EPOCHS}")
        for key in ("gpu_slots", "cpu_threads", "nan_check_every"):
            at_least(f"trainer.{key}", getattr(self, key), 0)
        for key in ("checkpoint_every_epochs", "checkpoint_every_minutes"):  # None: auto
            if getattr(self, key) is not None:
                at_least(f"trainer.{key}", getattr(self, key), 0)
        at_least("trainer.num_workers", self.num_workers, -1)
        if self.batch_size % self.devices:
            raise invalid(
                "trainer.batch_size",
                self.batch_size,
                f"the global batch must be divisible by trainer.devices={self.devices}",
            )
        if self.gpu_slots and self.gpu_slots % self.devices:
            raise invalid(
                "trainer.gpu_slots",
                self.gpu_slots,
                f"must be a multiple of trainer.devices={self.devices} (each job claims that many)",
            )


@dataclass(frozen=True)
class Component:
    """A chosen component (``model``, ``optimizer``): its registry name and its options, the
    keyword arguments of its builder."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Schedule(Component):
    """The chosen schedule; ``label`` names its runs (an ablation sets e.g.
    ``autodrop-window=${scheduler.window}``)."""

    label: str = "${.name}"


@dataclass(frozen=True)
class Data(Component):
    """The chosen dataset (its builder's ``options``) and what every dataset shares."""

    root: str = "${paths.data_dir}"
    # The side of in-memory images: the digits are resized to it, CIFAR's must be 32; shared
    # by every dataset so a preset that shrinks the digits composes with any (ImageNet's
    # folders are cropped by their own options).
    image_size: int = DEFAULT_IMAGE_SIZE
    augment: bool = True
    drop_last: bool = False
    # Training examples held out as the validation split (0: none, the paper's protocol);
    # protocol=honest sets HONEST_VAL_SIZES[data.name] (experiments.data.validation_split).
    val_size: int = 0

    def __post_init__(self) -> None:
        _folder("data.root", self.root)
        at_least("data.val_size", self.val_size, 0)


@dataclass(frozen=True)
class Wandb:
    name: str = "wandb"
    project: str = "autodrop-bench"
    entity: str | None = None
    mode: WandbMode | None = None  # None: WANDB_MODE from the environment, else online
    tags: list[str] = field(default_factory=list)
    init_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        _coerce(self, "logger")


@dataclass(frozen=True)
class NoLogger:
    name: str = "none"


#: The loggers (logger=<name>), each with its settings.
LOGGERS: dict[str, type] = {"wandb": Wandb, "none": NoLogger}
ENUMS: dict[str, type[StrEnum]] = {
    kind.__name__: kind for kind in (Accelerator, Precision, Loader, Progress, WandbMode)
}
#: The config sections whose settings depend on the chosen option (its ``name``): the
#: registered kinds (``experiments.specs``) and the logger.
COMPONENTS: dict[str, type] = {
    "data": Data,
    "model": Component,
    "optimizer": Component,
    "scheduler": Schedule,
}


@dataclass(frozen=True)
class RunSettings:
    """One run's settings, in the order the config shows its sections."""

    experiment_name: str = "adhoc"
    seed: int = 0
    lr_sweep: LRSweep = field(default_factory=LRSweep)
    horizon: Horizon = field(default_factory=Horizon)
    tuning: Tuning = field(default_factory=Tuning)
    paths: Paths = field(default_factory=Paths)
    data: Data = None  # type: ignore[assignment]  # chosen: conf/data/<name>.yaml
    model: Component = None  # type: ignore[assignment]
    optimizer: Component = None  # type: ignore[assignment]
    scheduler: Schedule = None  # type: ignore[assignment]
    trainer: Trainer = field(default_factory=Trainer)
    logger: Wandb | NoLogger = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        check_relative_path("experiment_name", self.experiment_name)
        at_least("seed", self.seed, 0)
        _check_finite(self.as_dict())

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> RunSettings:
        """The settings of a resolved config as plain data (the config's shape)."""
        sections: dict[str, Any] = {}
        for item in dataclasses.fields(cls):
            value = values[item.name]
            if item.name in COMPONENTS:
                sections[item.name] = _component(COMPONENTS[item.name], value)
            elif item.name == "logger":
                sections[item.name] = LOGGERS[value["name"]](**value)
            elif item.name in SECTIONS:
                sections[item.name] = SECTIONS[item.name](**value)
            else:
                sections[item.name] = value
        return cls(**sections)

    @classmethod
    def from_config(cls, cfg: Any) -> RunSettings:
        """The settings of a composed config (an OmegaConf node, ``hydra`` aside)."""
        from omegaconf import OmegaConf

        values = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        values.pop("hydra", None)
        return cls.from_values(values)

    def as_dict(self) -> dict[str, Any]:
        """The settings in the config's shape, as plain data (enums as their values): what the
        run records (its setup, .hydra/config.yaml, the wandb config)."""
        return {item.name: _plain(getattr(self, item.name)) for item in dataclasses.fields(self)}


SECTIONS: dict[str, type] = {
    "lr_sweep": LRSweep,
    "horizon": Horizon,
    "tuning": Tuning,
    "paths": Paths,
    "trainer": Trainer,
}


def _component(kind: type, values: Mapping[str, Any]) -> Any:
    own = {item.name for item in dataclasses.fields(kind)} - {"options"}
    return kind(
        **{key: value for key, value in values.items() if key in own},
        options={key: value for key, value in values.items() if key not in own},
    )


def _plain(value: Any) -> Any:
    if isinstance(value, Component):
        own = {
            item.name: _plain(getattr(value, item.name))
            for item in dataclasses.fields(value)
            if item.name != "options"
        }
        return {**own, **{key: _plain(option) for key, option in value.options.items()}}
    if dataclasses.is_dataclass(value):
        return {item.name: _plain(getattr(value, item.name)) for item in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, sub in value.items():
            flat.update(flatten(sub, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: value}


def _check_finite(values: Mapping[str, Any]) -> None:
    """Every float of the config (lists and options included) is finite: an lr of nan or inf
    passes every range check and trains until it diverges."""
    for key, value in flatten(values).items():
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            if isinstance(item, float) and not math.isfinite(item):
                where = f"{key}[{index}]" if isinstance(value, list) else key
                raise invalid(where, item, "must be a finite number")


__all__ = [
    "Accelerator",
    "Component",
    "ConfigError",
    "Data",
    "LOGGERS",
    "LRSweep",
    "Loader",
    "NoLogger",
    "Paths",
    "Precision",
    "Progress",
    "RunSettings",
    "Schedule",
    "Trainer",
    "Wandb",
    "WandbMode",
    "flatten",
]
