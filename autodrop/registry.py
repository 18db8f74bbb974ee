"""The schedule registry: every schedule of the benchmark behind one ``build`` call.

A registered schedule is a ``torch.optim.lr_scheduler.LRScheduler`` with the ``ScheduleHooks``
contract, stepped once after every optimizer step; its class carries its metadata (``name``,
``display_name``, ``colour``, ``paper_name``, ``tuned_setting``, ``record_stream``) and declares
the signals it reads (``reads``, checked here). The registry
name is the runner's ``scheduler.name`` (``conf/scheduler/<name>.yaml``). Adding a schedule is a
class with that metadata, its line in ``SCHEDULE_CLASSES`` and a YAML file.

``SCHEDULE_CLASSES`` is also the order results show schedules in (the columns of the tables):
the paper's baselines, the other registry schedules, then (as in the paper's Table 2) the
multistep baseline and the AutoDrop variants last.

The budget (``steps_per_epoch``, ``epochs``) is passed to the constructors that take it;
everything else comes from ``options``. ``hd`` and ``schedulefree`` are the schedules of
optimizers that set their own lr (``autodrop.hd.SGDHD``, schedule-free SGD); ``tlr`` is the
reconstructed trainable learning rate, labelled "TLR (reconstruction)" in results.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from autodrop.autodrop import AutoDrop
from autodrop.autodrop_v1 import AutoDropV1
from autodrop.base import ScheduleHooks, Signal, declared_signals
from autodrop.checks import call_with_options, check_choice, check_int
from autodrop.schedules.constant import ConstantSchedule
from autodrop.schedules.cosine import CosineSchedule
from autodrop.schedules.cyclic import CyclicSchedule
from autodrop.schedules.exponential import ExponentialSchedule
from autodrop.schedules.multistep import MultiStepSchedule
from autodrop.schedules.onecycle import OneCycleSchedule
from autodrop.schedules.optimizer_lr import HypergradientLR, ScheduleFreeLR
from autodrop.schedules.plateau import PlateauSchedule
from autodrop.tlr import TrainableLR

BUDGET_ARGUMENTS = ("steps_per_epoch", "epochs")

#: Every registered schedule, in results order.
SCHEDULE_CLASSES: tuple[type[ScheduleHooks], ...] = (
    HypergradientLR,
    TrainableLR,
    CyclicSchedule,
    OneCycleSchedule,
    ExponentialSchedule,
    CosineSchedule,
    PlateauSchedule,
    ConstantSchedule,
    ScheduleFreeLR,
    MultiStepSchedule,
    AutoDropV1,
    AutoDrop,
)

_SCHEDULES: dict[str, type[ScheduleHooks]] = {cls.name: cls for cls in SCHEDULE_CLASSES}
if len(_SCHEDULES) != len(SCHEDULE_CLASSES):  # pragma: no cover - a programming error
    raise RuntimeError("two registered schedules share a name")
for _cls in SCHEDULE_CLASSES:
    declared_signals(_cls)  # a schedule that does not say what it reads is refused at import

#: The registry names, in results order.
SCHEDULE_NAMES: tuple[str, ...] = tuple(_SCHEDULES)


def schedule_class(name: str) -> type[ScheduleHooks]:
    """The class behind ``name``."""
    return _SCHEDULES[check_choice("schedule", name, SCHEDULE_NAMES)]


def schedule_signals(name: str) -> frozenset[Signal]:
    """What schedule ``name`` reads while training (its class's ``reads``)."""
    return declared_signals(schedule_class(name))


def schedule_options(name: str) -> tuple[str, ...]:
    """The options ``build(name, ...)`` accepts (constructor arguments minus the optimizer and
    the budget)."""
    parameters = inspect.signature(schedule_class(name)).parameters.values()
    return tuple(
        p.name
        for p in parameters
        if p.name not in ("optimizer", *BUDGET_ARGUMENTS)
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    )


def build(
    name: str, optimizer: Optimizer, *, steps_per_epoch: int, epochs: int, **options: Any
) -> LRScheduler:
    """The schedule ``name`` on ``optimizer`` for a budget of ``epochs`` * ``steps_per_epoch``
    optimizer steps; ``options`` are the schedule's own keyword arguments."""
    cls = schedule_class(name)
    declared_signals(cls)
    check_int("steps_per_epoch", steps_per_epoch, low=1)
    check_int("epochs", epochs, low=1)
    budget = {"optimizer": optimizer, "steps_per_epoch": steps_per_epoch, "epochs": epochs}
    return call_with_options("schedule", name, cls, budget, options)


__all__ = [
    "BUDGET_ARGUMENTS",
    "SCHEDULE_CLASSES",
    "SCHEDULE_NAMES",
    "build",
    "schedule_class",
    "schedule_options",
    "schedule_signals",
]
