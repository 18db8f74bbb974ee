"""The schedule registry: every schedule of the benchmark behind one ``build`` call.

A registered schedule is a ``torch.optim.lr_scheduler.LRScheduler`` with the ``ScheduleHooks``
contract, stepped once after every optimizer step; its class carries its metadata (``name``,
``display_name``, ``colour``, ``paper_name``, ``tuned_setting``, ``record_stream``) and declares
the signals it reads (``reads``), whether it needs the run's length (``needs_budget``, which
must agree with its constructor: True exactly when it takes ``epochs``) and its tuning search
space (``search_space``, whose ``scheduler.*`` keys must be its options); all checked here, at
import, so a class without them is never registered. The registry
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
from collections.abc import Mapping
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from autodrop.autodrop import AutoDrop
from autodrop.autodrop_v1 import AutoDropV1
from autodrop.base import ScheduleHooks, Signal, declared_needs_budget, declared_signals
from autodrop.checks import call_with_options, check_choice, check_int
from autodrop.schedules.constant import ConstantSchedule
from autodrop.schedules.cosine import CosineSchedule
from autodrop.schedules.cyclic import CyclicSchedule
from autodrop.schedules.exponential import ExponentialSchedule
from autodrop.schedules.multistep import MultiStepSchedule
from autodrop.schedules.onecycle import OneCycleSchedule
from autodrop.schedules.optimizer_lr import HypergradientLR, ScheduleFreeLR
from autodrop.schedules.plateau import PlateauSchedule
from autodrop.search_space import Distribution, declared_search_space
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


def check_declarations(cls: type) -> None:
    """TypeError unless ``cls`` declares ``reads``, ``needs_budget`` and ``search_space``, its
    ``needs_budget`` agrees with its constructor (a schedule given ``epochs`` may use the
    budget, so it is not anytime; one without ``epochs`` cannot know it) and every
    ``scheduler.<key>`` of its search space is one of its options."""
    declared_signals(cls)
    needs = declared_needs_budget(cls)
    parameters = inspect.signature(cls).parameters
    if needs != ("epochs" in parameters):
        told = "takes `epochs`" if "epochs" in parameters else "does not take `epochs`"
        raise TypeError(
            f"needs_budget: schedule class {cls.__qualname__} declares needs_budget={needs} but "
            f"its constructor {told}: True exactly when the budget is passed to it"
        )
    options = set(parameters) - {"optimizer", *BUDGET_ARGUMENTS}
    for key in declared_search_space(cls):
        section, _, option = key.partition(".")
        if section == "scheduler" and option not in options:
            raise TypeError(
                f"search_space: schedule class {cls.__qualname__} searches {key!r}, which is not "
                f"one of its options ({', '.join(sorted(options)) or 'none'})"
            )


for _cls in SCHEDULE_CLASSES:
    check_declarations(_cls)  # an undeclared or contradicted schedule is refused at import

#: The registry names, in results order.
SCHEDULE_NAMES: tuple[str, ...] = tuple(_SCHEDULES)


def schedule_class(name: str) -> type[ScheduleHooks]:
    """The class behind ``name``."""
    return _SCHEDULES[check_choice("schedule", name, SCHEDULE_NAMES)]


def schedule_signals(name: str) -> frozenset[Signal]:
    """What schedule ``name`` reads while training (its class's ``reads``)."""
    return declared_signals(schedule_class(name))


def schedule_needs_budget(name: str) -> bool:
    """Whether schedule ``name`` must be told the run's length (its class's ``needs_budget``)."""
    return declared_needs_budget(schedule_class(name))


def schedule_search_space(name: str) -> Mapping[str, Distribution]:
    """The knobs a tuning study searches for schedule ``name`` (its class's ``search_space``)."""
    return declared_search_space(schedule_class(name))


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
    check_declarations(cls)
    check_int("steps_per_epoch", steps_per_epoch, low=1)
    check_int("epochs", epochs, low=1)
    budget = {"optimizer": optimizer, "steps_per_epoch": steps_per_epoch, "epochs": epochs}
    return call_with_options("schedule", name, cls, budget, options)


__all__ = [
    "BUDGET_ARGUMENTS",
    "SCHEDULE_CLASSES",
    "SCHEDULE_NAMES",
    "build",
    "check_declarations",
    "schedule_class",
    "schedule_needs_budget",
    "schedule_options",
    "schedule_search_space",
    "schedule_signals",
]
